"""The routing table (both implementations) and the router's prefixing rules."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import pytest

import mcpfast_ext
from mcpfast.gateway.router import Router, template_regex

from .conftest import twin


@pytest.fixture(params=["py", "c"])
def rt(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "routing_table")


def test_routing_table(rt: ModuleType) -> None:
    table = rt.RoutingTable()
    assert table.add(rt.KIND_TOOL, "a__echo", 0, "echo") is True
    assert table.add(rt.KIND_TOOL, "a__echo", 1, "other") is False
    assert table.add(rt.KIND_PROMPT, "a__echo", 1, "echo") is True  # kinds are separate
    assert table.lookup(rt.KIND_TOOL, "a__echo") == (0, "echo")
    assert table.lookup(rt.KIND_PROMPT, "a__echo") == (1, "echo")
    assert table.lookup(rt.KIND_RESOURCE, "a__echo") is None
    assert table.lookup(rt.KIND_TOOL, "missing") is None
    assert table.lookup(99, "a__echo") is None
    assert table.names(rt.KIND_TOOL) == ["a__echo"]
    assert table.count(rt.KIND_PROMPT) == 1 and len(table) == 2
    with pytest.raises(ValueError):
        table.add(7, "x", 0, "x")


def test_selector_reports_the_active_implementation() -> None:
    forced = os.environ.get("MCPFAST_NO_EXTENSIONS") == "1"
    assert mcpfast_ext.NO_EXTENSIONS is forced
    if forced:
        assert mcpfast_ext.IMPLEMENTATION == "pure"
        assert mcpfast_ext.websocket_codec.__name__ == "mcpfast_ext.websocket_codec_py"
    elif mcpfast_ext.compiled_modules() is not None:
        assert mcpfast_ext.IMPLEMENTATION == "compiled"


class FakeUpstream:
    def __init__(self, name: str, index: int, catalog: dict[str, Any]) -> None:
        self.name = name
        self.index = index
        self.catalog = catalog


def catalog(*tools: str, prompts: tuple[str, ...] = (), uris: tuple[str, ...] = (),
            templates: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in tools],
            "prompts": [{"name": p} for p in prompts],
            "resources": [{"uri": u, "name": u} for u in uris],
            "resourceTemplates": [{"uriTemplate": t, "name": t} for t in templates]}


def build(prefix: str, *ups: FakeUpstream) -> Router:
    router = Router(ups, prefix, "__")  # type: ignore[arg-type]
    router.rebuild()
    return router


def test_single_upstream_passes_names_through() -> None:
    a = FakeUpstream("a", 0, catalog("echo", prompts=("p",)))
    router = build("always", a)
    assert [t["name"] for t in router.tools] == ["echo"]
    assert router.route(0, "echo") == (a, "echo")


def test_always_prefix() -> None:
    a = FakeUpstream("a", 0, catalog("echo", "x"))
    b = FakeUpstream("b", 1, catalog("echo"))
    router = build("always", a, b)
    assert [t["name"] for t in router.tools] == ["a__echo", "a__x", "b__echo"]
    assert router.route(0, "b__echo") == (b, "echo")
    assert router.route(0, "echo") is None
    assert a.catalog["tools"][0]["name"] == "echo"  # the upstream's catalog is not mutated


def test_conditional_and_never_prefix() -> None:
    a = FakeUpstream("a", 0, catalog("echo", "only_a"))
    b = FakeUpstream("b", 1, catalog("echo", "only_b"))
    cond = build("conditional", a, b)
    assert sorted(t["name"] for t in cond.tools) == ["a__echo", "b__echo", "only_a", "only_b"]
    never = build("never", a, b)
    assert [t["name"] for t in never.tools] == ["echo", "only_a", "only_b"]
    assert never.route(0, "echo") == (a, "echo") and never.collisions


def test_overlong_names_are_hidden() -> None:
    a = FakeUpstream("a", 0, catalog("t" * 127))
    b = FakeUpstream("b", 1, catalog("short"))
    assert [t["name"] for t in build("always", a, b).tools] == ["b__short"]


def test_resources_route_by_uri_and_template() -> None:
    a = FakeUpstream("a", 0, catalog(uris=("file:///a.txt",), templates=("docs://{+path}",)))
    b = FakeUpstream("b", 1, catalog(uris=("mem://x",), templates=("item://{id}{?q}",)))
    router = build("always", a, b)
    assert router.route_uri("file:///a.txt") is a
    assert router.route_uri("mem://x") is b
    assert router.route_uri("docs://deep/path/here") is a
    assert router.route_uri("item://42") is b and router.route_uri("item://42?q=1") is b
    assert router.route_uri("item://4/2") is None
    assert router.route_uri("nope://") is None
    assert router.route_template("item://{id}{?q}") is b


@pytest.mark.parametrize("template,uri,ok", [
    ("users://{id}/profile", "users://7/profile", True),
    ("users://{id}/profile", "users://7/8/profile", False),
    ("a://{/path}", "a:///x/y", True),
    ("a://x{#frag}", "a://x#top", True),
])
def test_template_regex(template: str, uri: str, ok: bool) -> None:
    assert bool(template_regex(template).match(uri)) is ok
