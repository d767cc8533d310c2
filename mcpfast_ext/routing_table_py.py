"""Routing table: public name -> (upstream index, upstream-side name), per kind.

Pure-Python twin of ``routing_table.pyx``; both must behave identically.
"""

from __future__ import annotations

KIND_TOOL = 0
KIND_PROMPT = 1
KIND_RESOURCE = 2
_KINDS = 3


class RoutingTable:
    """An immutable-after-build map used once per routed request.

    Names are kept per kind because a tool, a prompt and a resource may share a name.
    ``add`` refuses a duplicate so that a collision is decided by the caller (prefixing
    or a config error), never silently by insertion order.
    """

    __slots__ = ("_maps",)

    def __init__(self) -> None:
        self._maps: list[dict[str, tuple[int, str]]] = [{} for _ in range(_KINDS)]

    def add(self, kind: int, name: str, upstream: int, upstream_name: str) -> bool:
        """Add a route; False (and no change) when ``name`` is already routed."""
        if kind < 0 or kind >= _KINDS:
            raise ValueError(f"unknown route kind {kind}")
        table = self._maps[kind]
        if name in table:
            return False
        table[name] = (upstream, upstream_name)
        return True

    def lookup(self, kind: int, name: str) -> tuple[int, str] | None:
        if kind < 0 or kind >= _KINDS:
            return None
        return self._maps[kind].get(name)

    def names(self, kind: int) -> list[str]:
        return list(self._maps[kind])

    def count(self, kind: int) -> int:
        return len(self._maps[kind])

    def __len__(self) -> int:
        return sum(len(table) for table in self._maps)
