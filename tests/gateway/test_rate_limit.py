"""Rate limits: token buckets per identity, upstream, tool or global (gateway/rate_limit.py).

End to end through a real gateway, with the upstream counting what reaches it, so that
"a refused call never reaches the upstream" is asserted where the upstream is.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import aiohttp
import pytest

from mcpfast.config import RateLimitConfig
from mcpfast.gateway import rate_limit

from ..conftest import (
    ROOT,
    GatewayProcess,
    modern,
    run,
    toml_value,
    unix_client,
    wait_until,
    ws_client,
)

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]
UPSTREAMS = {"bg": {"command": BACKGROUND, "era": "legacy"},
             "other": {"command": BACKGROUND, "era": "legacy"}}
JSON_AND_SSE = "application/json, text/event-stream"


def limited_gateway(gateway_factory: Any, limits: list[dict[str, Any]]) -> GatewayProcess:
    """A gateway fronting two counting upstreams, with ``[[rate_limits]]`` tables."""
    gw: GatewayProcess = gateway_factory(UPSTREAMS, start=False)
    tables = ["[[rate_limits]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items())
              for t in limits]
    gw.config_path.write_text(gw.config_path.read_text() + "\n" + "\n".join(tables))
    return gw.start()


def text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


async def calls_seen(client: Any, upstream: str = "bg") -> dict[str, int]:
    return json.loads(text(await client.call_tool(f"{upstream}__count")))


def test_a_limited_call_is_refused_with_a_retry_hint_and_never_reaches_the_upstream(
        gateway_factory: Any) -> None:
    gw = limited_gateway(gateway_factory, [{"rate": 2.0, "burst": 2, "tool": "bg__big"}])

    async def main() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            answers = [await c.call_tool("bg__big", {"size": 1}) for _ in range(3)]
            assert [text(a) for a in answers[:2]] == ["x", "x"]
            refused = answers[2]["error"]
            assert refused["code"] == -32029
            wait = refused["data"]["retryAfterSeconds"]
            assert 0 < wait <= 0.5
            assert refused["data"]["limit"] == "identity:*:bg__big"
            # Other tools are not limited by it.
            assert (await calls_seen(c)) == {"big": 2, "count": 1}
            await asyncio.sleep(wait)
            assert text(await c.call_tool("bg__big", {"size": 1})) == "x"
            assert (await calls_seen(c))["big"] == 3
    run(main())
    assert _metric(gw, 'mcpfast_rate_limited_total{limit="identity:*:bg__big"}') == 1


def test_a_tool_limit_applies_to_modern_requests_too(gateway_factory: Any) -> None:
    """A 2026-07-28 client's tools/call names its tool the same way: a limit on that
    tool refuses it, and the refused call never reaches the upstream."""
    gw = limited_gateway(gateway_factory, [{"rate": 0.01, "burst": 1, "tool": "bg__big"}])

    async def main() -> None:
        async with unix_client(gw.unix_path) as c:
            async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
                return await c.request("tools/call", modern({"name": name,
                                                             "arguments": arguments}))
            assert text(await call("bg__big", {"size": 1})) == "x"
            refused = (await call("bg__big", {"size": 1}))["error"]
            assert refused["code"] == -32029, refused
            assert refused["data"]["limit"] == "identity:*:bg__big"
            assert json.loads(text(await call("bg__count", {}))) == {"big": 1, "count": 1}
    run(main())


def test_identities_have_buckets_of_their_own_and_a_global_limit_is_shared(
        gateway_factory: Any) -> None:
    gw = limited_gateway(gateway_factory, [
        {"rate": 0.01, "burst": 1, "upstream": "bg", "name": "each"},
        {"rate": 0.01, "burst": 3, "per": "global", "upstream": "other", "name": "all"}])

    async def main() -> None:
        async with ws_client(gw.ws_url) as tcp, unix_client(gw.unix_path) as unix:
            for c in (tcp, unix):
                await c.initialize()
            # "each": one call per identity (ip:127.0.0.1 and uid:N).
            assert text(await tcp.call_tool("bg__big", {"size": 1})) == "x"
            assert (await tcp.call_tool("bg__big", {"size": 1}))["error"]["code"] == -32029
            assert text(await unix.call_tool("bg__big", {"size": 1})) == "x"
            assert (await unix.call_tool("bg__big", {"size": 1}))["error"]["code"] == -32029
            # "all": three calls between everyone.
            assert text(await tcp.call_tool("other__big", {"size": 1})) == "x"
            assert text(await unix.call_tool("other__big", {"size": 1})) == "x"
            assert text(await tcp.call_tool("other__big", {"size": 1})) == "x"
            assert (await unix.call_tool("other__big", {"size": 1}))["error"]["code"] == \
                -32029
            connections = json.loads(gw.admin_get("/api/v1/connections")[1])["connections"]
            identities = {c["transport"]: (c["identity"], c["credentials"]) for c in connections}
            # On the unix socket the kernel vouches for the connecting process: this one.
            assert identities == {
                "websocket": ("ip:127.0.0.1", {"address": "127.0.0.1"}),
                "unix": (f"uid:{os.getuid()}", {"uid": os.getuid(), "gid": os.getgid(),
                                                "pid": os.getpid()})}
    run(main())


def test_over_http_a_limited_call_is_429_with_retry_after(gateway_factory: Any) -> None:
    gw = limited_gateway(gateway_factory, [{"rate": 0.2, "burst": 1}])
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            headers = {"Accept": JSON_AND_SSE, "Content-Type": "application/json",
                       "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                       "Mcp-Name": "bg__big"}
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "bg__big", "arguments": {"size": 1}, "_meta": meta}}
            async with http.post(gw.http_url, json=body, headers=headers) as resp:
                assert resp.status == 200
            async with http.post(gw.http_url, json=body, headers=headers) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "5"
                assert (await resp.json())["error"]["code"] == -32029
            # The legacy transport: its own session, the same identity and bucket.
            legacy = {"Accept": JSON_AND_SSE, "Content-Type": "application/json"}
            async with http.post(gw.http_url, headers=legacy, json={
                    "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                        "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": {"name": "t", "version": "0"}}}) as resp:
                legacy["Mcp-Session-Id"] = resp.headers["Mcp-Session-Id"]
            legacy["MCP-Protocol-Version"] = "2025-11-25"
            async with http.post(gw.http_url, headers=legacy, json={
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "bg__big", "arguments": {"size": 1}}}) as resp:
                assert resp.status == 429
                assert int(resp.headers["Retry-After"]) >= 4
                assert (await resp.json())["error"]["code"] == -32029
    run(main())


def test_buckets_of_identities_gone_quiet_are_dropped(gateway_factory: Any) -> None:
    """Memory follows the identities active lately: once an identity's bucket has
    refilled, the sweeper drops it within its eviction period (every 10 sweeps of
    0.5 s), as the mcpfast_rate_limit_buckets gauge shows; a dropped identity starts
    again with a full bucket."""
    gw = limited_gateway(gateway_factory, [{"rate": 0.5, "burst": 1, "upstream": "bg",
                                            "name": "each"}])
    gauge = 'mcpfast_rate_limit_buckets{limit="each"}'
    # Past the first eviction period: evictions must keep coming, not stop after it.
    wait_until(lambda: gw.status()["uptime_seconds"] >= 6.0, timeout=20)

    async def one_call_each() -> None:
        async with ws_client(gw.ws_url) as tcp, unix_client(gw.unix_path) as unix:
            for c in (tcp, unix):
                await c.initialize()
                assert text(await c.call_tool("bg__big", {"size": 1})) == "x"
            # Each bucket is empty now (2 s to refill): kept, and still refusing.
            assert _metric(gw, gauge) == 2
            assert (await tcp.call_tool("bg__big", {"size": 1}))["error"]["code"] == -32029
    run(one_call_each())
    # Refilled after 2 s, dropped at the next eviction, at most 5 s later.
    wait_until(lambda: _metric(gw, gauge) == 0, timeout=2 + 5 + 8)

    async def again() -> None:
        async with ws_client(gw.ws_url) as tcp:
            await tcp.initialize()
            assert text(await tcp.call_tool("bg__big", {"size": 1})) == "x"
    run(again())
    assert _metric(gw, gauge) == 1


def _metric(gw: GatewayProcess, line_start: str) -> float:
    code, body = gw.admin_get("/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {line_start}")


# -- the limiter itself ------------------------------------------------------------------
def limit(**config: Any) -> rate_limit.RateLimit:
    return rate_limit.RateLimit(RateLimitConfig(**config))


def test_which_requests_a_limit_applies_to() -> None:
    tools = limit(rate=1, upstream="a", tool="search_*")
    assert tools.applies("a", "tools/call", "search_web")
    assert not tools.applies("a", "tools/call", "fetch")
    assert not tools.applies("b", "tools/call", "search_web")
    assert not tools.applies("a", "prompts/get", "search_web")
    assert limit(rate=1).applies("z", "resources/read", None)


def test_refilled_buckets_are_evicted_and_busy_ones_kept() -> None:
    each = limit(rate=10.0, burst=5)
    now = time.monotonic()
    for identity in ("ip:a", "ip:b", "ip:c"):
        assert each.retry_after(identity, now) == 0.0
    for _ in range(4):
        each.retry_after("ip:c", now)
    assert each.retry_after("ip:c", now) > 0
    assert len(each) == 3
    # After 0.2 s, a and b (one token short) are full again; c (empty) is not.
    assert each.evict_full(now + 0.2) == 2
    assert len(each) == 1
    assert each.evict_full(now + 1.0) == 1
    assert len(each) == 0


def test_new_identities_past_the_bucket_cap_share_one_bucket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limit, "MAX_BUCKETS", 3)
    each = limit(rate=0.001, burst=1)
    now = 0.0
    for i in range(3):
        assert each.retry_after(f"ip:{i}", now) == 0.0
    assert each.retry_after("ip:new1", now) == 0.0  # the overflow bucket's one token
    assert each.retry_after("ip:new2", now) > 0
    assert len(each) == 4
