"""The package's layers import one way only (DESIGN.md, package layout).

Lowest first: the foundation (``protocol/``, ``mcpfast_ext``, the config model, the
counters), then the transports and the upstream code, then the gateway core's records
(the session, the forwarded call, a batch's answers), then the rest of the gateway, then
what faces the world (listeners, admin, server, CLI). A lower layer talks upward only
through the small ``Protocol`` classes it declares (``transport/ports.py``,
``upstream/base.py``'s ``UpstreamEvents``, ``gateway/mrtr.py``'s ``Core``), never by
importing the layer above, not even under ``TYPE_CHECKING``; and no modules import each
other in a cycle.

Every import is read from the source (``ast``), wherever it is: at the top, in a
function, or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("mcpfast", "mcpfast.config", "mcpfast.counters", "mcpfast.logs",
                    "mcpfast.protocol", "mcpfast_ext")),
    ("transport and upstream", ("mcpfast.transport", "mcpfast.upstream")),
    ("core records", ("mcpfast.gateway.call", "mcpfast.gateway.session",
                      "mcpfast.gateway.batch")),
    ("gateway", ("mcpfast.gateway",)),
    ("edge", ("mcpfast.listeners", "mcpfast.admin", "mcpfast.server", "mcpfast.supervisor",
              "mcpfast.metrics", "mcpfast.cli", "mcpfast.bridge", "mcpfast.demo",
              "mcpfast.__main__")),
]

def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in ("mcpfast", "mcpfast_ext"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from package import module`` counts as
    the module; ``from module import name`` as the module)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{name} is in no layer: add it to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer_of(name)


def test_no_layer_imports_a_higher_one() -> None:
    upward = {(name, target) for name, targets in graph().items() for target in targets
              if layer_of(target) > layer_of(name)}
    described = sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} "
                       f"({LAYERS[layer_of(b)][0]})" for a, b in upward)
    assert not described, "\n".join(described)


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other in a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles() -> None:
    cycles = strongly_connected(graph())
    assert not cycles, "modules that import each other: " + "; ".join(
        " <-> ".join(sorted(group)) for group in cycles)


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """The reader finds relative, absolute, TYPE_CHECKING and in-function imports."""
    known = {"mcpfast", "mcpfast.gateway", "mcpfast.gateway.gateway", "mcpfast.protocol",
             "mcpfast.protocol.jsonrpc", "mcpfast.transport", "mcpfast.transport.tcp"}
    source = ("from typing import TYPE_CHECKING\n"
              "from ..protocol import jsonrpc\n"
              "if TYPE_CHECKING:\n    from ..gateway.gateway import Gateway\n"
              "def f():\n    import mcpfast.protocol\n")
    path = tmp_path / "tcp.py"
    path.write_text(source)
    found = imports_of("mcpfast.transport.tcp", path, known)
    assert found == {"mcpfast.protocol.jsonrpc", "mcpfast.gateway.gateway", "mcpfast.protocol"}
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
