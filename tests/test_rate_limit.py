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

from .conftest import ROOT, GatewayProcess, run, toml_value, unix_client, ws_client

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
            identities = {c["transport"]: c["identity"] for c in
                          json.loads(gw.admin_get("/api/v1/connections")[1])["connections"]}
            assert identities == {"websocket": "ip:127.0.0.1", "unix": f"uid:{os.getuid()}"}
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
