"""The routing table (both implementations) and the router's prefixing rules."""

from __future__ import annotations

import importlib
import os
import random
from types import ModuleType
from typing import Any

import pytest

import mcpfast_ext
from mcpfast.gateway.router import Router, template_regex

from ..conftest import compiled, twin


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


def test_every_kind_counts_and_refuses_duplicates(rt: ModuleType) -> None:
    table = rt.RoutingTable()
    for kind in (rt.KIND_TOOL, rt.KIND_PROMPT, rt.KIND_RESOURCE):
        assert table.add(kind, "x", 0, "x") is True
        assert table.add(kind, "x", 1, "other") is False
        assert table.lookup(kind, "x") == (0, "x")
        assert table.count(kind) == 1 and table.names(kind) == ["x"]
    assert len(table) == 3


@pytest.mark.parametrize("call", ["names", "count"])
@pytest.mark.parametrize("kind", [99, -1, 3])
def test_an_unknown_kind_is_a_value_error(rt: ModuleType, call: str, kind: int) -> None:
    table = rt.RoutingTable()
    table.add(rt.KIND_RESOURCE, "r", 0, "r")
    with pytest.raises(ValueError, match=f"^unknown route kind {kind}$"):
        getattr(table, call)(kind)
    with pytest.raises(ValueError, match=f"^unknown route kind {kind}$"):
        table.add(kind, "x", 0, "x")
    assert table.lookup(kind, "r") is None


KINDS: list[Any] = [0, 1, 2, 0, 1, 2, 3, -1, 99, 2**70, True, "0", 1.0, None]
NAMES: list[Any] = ["a", "b", "a__x", "", "é", "a", "b", 1, None, b"a"]
UPSTREAMS: list[Any] = [0, 1, 7, -1, 2**70, "0", 1.5]


def _random_op(rng: random.Random) -> tuple[str, tuple[Any, ...]]:
    op = rng.choice(["add", "add", "lookup", "lookup", "names", "count", "len"])
    if op == "add":
        name = rng.choice(NAMES)
        return op, (rng.choice(KINDS), name, rng.choice(UPSTREAMS),
                    rng.choice([name, "upstream-side", 3]))
    if op == "lookup":
        return op, (rng.choice(KINDS), rng.choice(NAMES))
    if op in ("names", "count"):
        return op, (rng.choice(KINDS),)
    return op, ()


def _outcome(table: Any, op: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        result = len(table) if op == "len" else getattr(table, op)(*args)
    except Exception as exc:  # noqa: BLE001 - the error is what is compared
        return "raised", (type(exc), str(exc))
    return "returned", (type(result), result)


@pytest.mark.parametrize("seed", range(20))
def test_compiled_and_pure_tables_agree(seed: int) -> None:
    """The same random operations, valid and not, on both twins: equal results (type
    and value) and equal errors (type and message), step by step."""
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        pytest.skip("MCPFAST_NO_EXTENSIONS=1")
    pure = importlib.import_module("mcpfast_ext.routing_table_py").RoutingTable()
    fast = compiled("routing_table").RoutingTable()
    rng = random.Random(seed)
    for step in range(300):
        op, args = _random_op(rng)
        expected = _outcome(pure, op, args)
        assert _outcome(fast, op, args) == expected, (seed, step, op, args)
    for kind in range(3):
        assert fast.names(kind) == pure.names(kind)


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
        self.legacy_twin = None


def catalog(*tools: str, prompts: tuple[str, ...] = (), uris: tuple[str, ...] = (),
            templates: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"tools": [{"name": t, "inputSchema": {"type": "object"}} for t in tools],
            "prompts": [{"name": p} for p in prompts],
            "resources": [{"uri": u, "name": u} for u in uris],
            "resourceTemplates": [{"uriTemplate": t, "name": t} for t in templates]}


def build(prefix: str, *ups: FakeUpstream, separator: str = "__") -> Router:
    router = Router(ups, prefix, separator)  # type: ignore[arg-type]
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


@pytest.mark.parametrize("separator", [".", "-x-", "__"])
def test_the_separator_joins_upstream_and_name(separator: str) -> None:
    a = FakeUpstream("a", 0, catalog("echo", "x", prompts=("p",)))
    b = FakeUpstream("b", 1, catalog("echo"))
    router = build("always", a, b, separator=separator)
    assert [t["name"] for t in router.tools] == [f"a{separator}echo", f"a{separator}x",
                                                 f"b{separator}echo"]
    assert [p["name"] for p in router.prompts] == [f"a{separator}p"]
    assert router.route(0, f"b{separator}echo") == (b, "echo")
    assert router.route(1, f"a{separator}p") == (a, "p")
    if separator != "__":
        assert router.route(0, "b__echo") is None
    cond = build("conditional", a, b, separator=separator)
    assert sorted(t["name"] for t in cond.tools) == [f"a{separator}echo", f"b{separator}echo",
                                                      "x"]


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
    ("users://{id}/profile", "users:///profile", False),
    ("a://{/path}", "a:///x/y", True),
    ("a://x{#frag}", "a://x#top", True),
    ("x://file{.ext}", "x://file.txt", True),
    ("x://file{.ext}", "x://file", True),
    ("x://file{.ext}", "x://file.d/x", False),
    ("m://map{;x,y}", "m://map;x=1;y=2", True),
    ("m://map{;x,y}", "m://map", True),
    ("q://s{?a,b}", "q://s", True),
    ("q://s{?a,b}", "q://s?a=1&b=2", True),
    ("q://s{?a,b}", "q://sx", False),
])
def test_template_regex(template: str, uri: str, ok: bool) -> None:
    assert bool(template_regex(template).match(uri)) is ok


def test_an_unlisted_uri_goes_to_the_only_upstream() -> None:
    """A server may serve URIs it does not list; with one upstream there is no doubt,
    with two nobody serves it."""
    a = FakeUpstream("a", 0, catalog(uris=("r://a",)))
    b = FakeUpstream("b", 1, catalog(uris=("r://b",)))
    assert build("always", a).route_uri("unlisted://x") is a
    assert build("always", a, b).route_uri("unlisted://x") is None
    two = build("always", a, b)
    assert two.route_uri("r://b") is b and two.route_uri("r://a") is a


def test_a_template_belongs_to_the_upstream_that_lists_it() -> None:
    a = FakeUpstream("a", 0, catalog(templates=("t://{x}",)))
    b = FakeUpstream("b", 1, catalog(templates=("t://{x}", "u://{y}")))
    two = build("always", a, b)
    assert two.route_template("t://{x}") is a  # listed by both: the first wins
    assert two.route_template("u://{y}") is b
    assert two.route_template("v://{z}") is None
    assert [t["uriTemplate"] for t in two.resource_templates] == ["t://{x}", "u://{y}"]
    one = build("always", b)
    assert one.route_template("v://{z}") is b
    assert one.route_template("u://{y}") is b


def test_a_resource_listed_twice_is_the_first_upstream_s() -> None:
    a = FakeUpstream("a", 0, catalog(uris=("r://same", "r://a")))
    b = FakeUpstream("b", 1, catalog(uris=("r://same",)))
    router = build("always", a, b)
    assert [r["uri"] for r in router.resources] == ["r://same", "r://a"]
    assert router.route_uri("r://same") is a
    assert router.collisions == ["resource 'r://same' of upstream 'b'"]


def test_catalog_items_without_a_usable_name_are_left_out() -> None:
    """An upstream's catalog is not trusted: items whose name, URI or template is not a
    string are skipped, never a crash of the whole rebuild."""
    odd = FakeUpstream("odd", 0, {
        "tools": [{"name": 5}, {"name": None}, {"name": "ok", "inputSchema": {}}],
        "prompts": [{"name": ["p"]}, {"name": "p"}],
        "resources": [{"uri": 5}, {"name": "no uri"}, {"uri": "r://ok"}],
        "resourceTemplates": [{"uriTemplate": None}, {"uriTemplate": "t://{x}"}]})
    for upstreams, prefix in (((odd,), ""),
                              ((odd, FakeUpstream("b", 1, catalog("other"))), "odd__")):
        router = build("always", *upstreams)
        assert [t["name"] for t in router.tools][:1] == [f"{prefix}ok"]
        assert [p["name"] for p in router.prompts] == [f"{prefix}p"]
        assert [r["uri"] for r in router.resources] == ["r://ok"]
        assert [t["uriTemplate"] for t in router.resource_templates] == ["t://{x}"]
        assert router.collisions == []


def test_names_that_need_no_prefix_keep_their_item() -> None:
    a = FakeUpstream("a", 0, catalog("echo"))
    router = build("always", a)
    assert router.tools[0] is a.catalog["tools"][0]
