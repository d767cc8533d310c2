"""The policy chain (gateway/chain.py): checks compiled at config load, run in order,
the first refusal wins, and a check that does not apply allocates nothing."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

from mcpfast.config import RateLimitConfig
from mcpfast.gateway import chain, rate_limit
from mcpfast.gateway.call import NO_ENVELOPE, Request
from mcpfast.gateway.chain import Refusal, compile_chain, compile_checks
from mcpfast.gateway.rate_limit import RATE_LIMITED, build
from mcpfast.gateway.session import DownstreamSession
from mcpfast.transport.ports import Identity

from ..conftest import ROOT, InProcessClient, in_gateway, toml_value

BACKGROUND = ROOT / "tests" / "servers" / "background_server.py"


def session(identity: str) -> DownstreamSession:
    return DownstreamSession("s", "unix", "-", lambda data: None, lambda code, reason: None,
                             identity=Identity(identity))


def call(session: DownstreamSession, method: str, name: str | None) -> Request:
    return Request(session, NO_ENVELOPE, 1, method, name, None)


def test_no_policy_is_an_empty_tuple() -> None:
    assert compile_checks(build([])) == ()
    assert compile_chain(build([])) == ((), ())


def test_a_rate_limit_hides_nothing_from_lists() -> None:
    """A tool refused for now is the caller's to call once its bucket refills."""
    checks, views = compile_chain(build([RateLimitConfig(rate=1.0, tool="search_*")]))
    assert len(checks) == 1 and views == ()


def test_a_view_filters_every_list_a_session_is_served(tmp_path: Path) -> None:
    """Lists go through the chain: each listed item is shown only if every view shows
    it to that session, asked with the upstream it comes from and its public name."""
    config = tmp_path / "gw.toml"
    config.write_text("[upstreams.bg]\ncommand = "
                      f"{toml_value(['python', str(BACKGROUND)])}\nera = \"legacy\"\n")
    asked: list[tuple[str, str, str, str]] = []

    def no_big(s: DownstreamSession, upstream: str, kind: str, name: str) -> bool:
        asked.append((s.identity.key, upstream, kind, name))
        return name != "big"

    async def body(gw: Any, client: InProcessClient) -> None:
        async def listed() -> set[str]:
            answer = await client.request("tools/list", {})
            return {tool["name"] for tool in answer["result"]["tools"]}

        everything = await listed()
        assert {"big", "count"} <= everything
        gw.catalog.views = (no_big,)
        shown = await listed()
        assert shown == everything - {"big"}
        assert ("uid:1000", "bg", "tools", "count") in asked
    in_gateway(config, body)


def test_a_limit_refuses_with_its_retry_hint_once_its_bucket_is_empty() -> None:
    (check,) = compile_checks(build([RateLimitConfig(rate=1.0, burst=2.0, name="slow")]))
    alice = session("ip:10.0.0.1")
    assert check(call(alice, "tools/call", "echo"), "demo", 100.0) is None
    assert check(call(alice, "tools/call", "echo"), "demo", 100.0) is None
    refusal = check(call(alice, "tools/call", "echo"), "demo", 100.0)
    assert refusal == Refusal(RATE_LIMITED, "Rate limited (slow): retry in 1 s",
                              {"retryAfterSeconds": 1.0, "limit": "slow"}, "rate_limit")
    # Another identity has a bucket of its own; time refills the first one.
    assert check(call(session("ip:10.0.0.2"), "tools/call", "echo"), "demo", 100.0) is None
    assert check(call(alice, "tools/call", "echo"), "demo", 101.0) is None


def test_the_first_refusal_in_config_order_wins() -> None:
    checks = compile_checks(build([RateLimitConfig(rate=1.0, burst=1.0, name="first"),
                                   RateLimitConfig(rate=1.0, burst=1.0, name="second")]))
    alice = session("uid:1000")
    assert [c(call(alice, "tools/call", "x"), "demo", 5.0) for c in checks] == [None, None]
    refusals = [c(call(alice, "tools/call", "x"), "demo", 5.0) for c in checks]
    assert [r.data["limit"] for r in refusals if r is not None] == ["first", "second"]


def test_a_scoped_limit_lets_everything_else_through_without_allocating() -> None:
    (by_tool, by_upstream) = compile_checks(build([
        RateLimitConfig(rate=1.0, burst=1.0, tool="search_*"),
        RateLimitConfig(rate=1.0, burst=1.0, upstream="files")]))
    alice = session("ip:10.0.0.1")
    for _ in range(3):  # warm: any first-call allocation happens here
        assert by_tool(call(alice, "tools/call", "echo"), "demo", 1.0) is None
        assert by_tool(call(alice, "prompts/get", "search_web"), "demo", 1.0) is None
        assert by_upstream(call(alice, "tools/call", "search_web"), "demo", 1.0) is None
    echo = call(alice, "tools/call", "echo")
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(1000):
            by_tool(echo, "demo", 1.0)
            by_upstream(echo, "demo", 1.0)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    policy_code = {chain.__file__, rate_limit.__file__}
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                if stat.traceback[0].filename in policy_code)
    assert grown <= 0, grown
    # What they do apply to, they limit.
    assert by_tool(call(alice, "tools/call", "search_web"), "demo", 1.0) is None
    assert by_tool(call(alice, "tools/call", "search_web"), "demo", 1.0) is not None
    assert by_upstream(call(alice, "resources/read", None), "files", 1.0) is None
    assert by_upstream(call(alice, "resources/read", None), "files", 1.0) is not None


def test_a_tool_pattern_remembers_its_verdicts_within_a_bound(monkeypatch: Any) -> None:
    monkeypatch.setattr(rate_limit, "MAX_MATCHES", 4)
    (limit,) = build([RateLimitConfig(rate=1.0, tool="search_*")])
    names = [f"search_{i}" for i in range(10)] + [f"other_{i}" for i in range(10)]
    for _ in range(2):
        assert [limit.applies("u", "tools/call", n) for n in names] == [True] * 10 + [False] * 10
        assert len(limit._matches) <= 4
    assert not limit.applies("u", "prompts/get", "search_1")
