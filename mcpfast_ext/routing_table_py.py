"""Routing table: public name -> (upstream index, upstream-side name), per kind.

Pure-Python twin of ``routing_table.pyx``; both must behave identically, errors included
(tests/test_routing.py compares them on random operation sequences): a kind is an int,
and one outside the three kinds is "not routed" for ``lookup`` and a ValueError
elsewhere; a name is a str; anything else is a TypeError with the same message in both.
"""

from __future__ import annotations

KIND_TOOL = 0
KIND_PROMPT = 1
KIND_RESOURCE = 2


def _check_int(what: str, value: object) -> None:
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")


class RoutingTable:
    """An immutable-after-build map used once per routed request.

    Names are kept per kind because a tool, a prompt and a resource may share a name.
    ``add`` refuses a duplicate so that a collision is decided by the caller (prefixing
    or a config error), never silently by insertion order.
    """

    __slots__ = ("_prompts", "_resources", "_tools")

    def __init__(self) -> None:
        self._tools: dict[str, tuple[int, str]] = {}
        self._prompts: dict[str, tuple[int, str]] = {}
        self._resources: dict[str, tuple[int, str]] = {}

    def _map(self, kind: object) -> dict[str, tuple[int, str]] | None:
        _check_int("route kind", kind)
        if kind == KIND_TOOL:
            return self._tools
        if kind == KIND_PROMPT:
            return self._prompts
        if kind == KIND_RESOURCE:
            return self._resources
        return None

    def _known(self, kind: object) -> dict[str, tuple[int, str]]:
        table = self._map(kind)
        if table is None:
            raise ValueError(f"unknown route kind {kind}")
        return table

    def add(self, kind: int, name: str, upstream: int, upstream_name: str) -> bool:
        """Add a route; False (and no change) when ``name`` is already routed."""
        table = self._known(kind)
        _check_str("route name", name)
        _check_int("upstream index", upstream)
        _check_str("upstream-side name", upstream_name)
        if name in table:
            return False
        table[name] = (upstream, upstream_name)
        return True

    def lookup(self, kind: int, name: str) -> tuple[int, str] | None:
        table = self._map(kind)
        _check_str("route name", name)
        if table is None:
            return None
        return table.get(name)

    def names(self, kind: int) -> list[str]:
        return list(self._known(kind))

    def count(self, kind: int) -> int:
        return len(self._known(kind))

    def __len__(self) -> int:
        return len(self._tools) + len(self._prompts) + len(self._resources)
