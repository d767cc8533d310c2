"""Streamable HTTP, modern era (2026-07-28): stateless POSTs, the validation ladder, the
error statuses, request-scoped streams, cancellation by disconnect, subscriptions/listen.

Clients: the official SDK's ``mcp.Client`` in ``2026-07-28`` and ``auto`` modes, and raw
aiohttp requests for every error status.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import mcp
import pytest

from ..conftest import GatewayProcess, read_events, run, sdk_upstream

VERSION = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}}


def body(method: str, request_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method,
            "params": {**params, "_meta": {**META, **params.pop("_meta", {})}}}


def headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
         "MCP-Protocol-Version": VERSION, "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    h.update(extra)
    return h


@pytest.fixture(params=["legacy", "modern"])
def gateway(request: pytest.FixtureRequest, gateway_factory: Any) -> GatewayProcess:
    """The SDK upstream in either era: a modern client is served by both."""
    return gateway_factory({"sdk": sdk_upstream(era=request.param)})


async def post(http: aiohttp.ClientSession, url: str, payload: Any, h: dict[str, str]
               ) -> tuple[int, Any]:
    async with http.post(url, json=payload, headers=h) as resp:
        if resp.status == 202:
            return resp.status, None
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            events = await read_events(resp, 100)
            return resp.status, events[-1][1]
        return resp.status, await resp.json()


def test_sdk_client_modern_mode(gateway: GatewayProcess) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> None:
        for mode in ("2026-07-28", "auto"):
            async with mcp.Client(gateway.http_url, mode=mode) as client:
                tools = await client.list_tools()
                assert "echo" in [t.name for t in tools.tools]
                result = await client.call_tool("echo", {"text": mode})
                assert result.content[0].text == mode
                prompt = await client.get_prompt("greet", {"name": "Ada"})
                assert "Ada" in prompt.messages[0].content.text
                read = await client.read_resource("test://item/9")
                assert "9" in read.contents[0].text
        async with mcp.Client(gateway.http_url, mode="2026-07-28") as client:
            result = await client.call_tool("progress", {"steps": 3},
                                            progress_callback=on_progress)
            assert result.content[0].text == "completed 3 steps"
    run(main())
    assert progress == [1, 2, 3]


def test_validation_ladder_statuses(gateway: GatewayProcess) -> None:
    url = gateway.http_url

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            call = body("tools/call", name="echo", arguments={"text": "x"})
            status, reply = await post(http, url, call, headers("tools/call", "echo"))
            assert status == 200 and reply["result"]["content"][0]["text"] == "x"
            assert reply["result"]["resultType"] == "complete"
            # Mcp-Name with surrounding whitespace is the same name (RFC 9110 OWS).
            status, reply = await post(http, url, call, headers("tools/call", "  echo  "))
            assert status == 200, reply
            # Header and body disagree: 400 with -32020.
            status, reply = await post(http, url, call, headers("tools/call", "add"))
            assert (status, reply["error"]["code"], reply["id"]) == (400, -32020, 1)
            status, reply = await post(http, url, call, headers("tools/list"))
            assert (status, reply["error"]["code"]) == (400, -32020)
            # A modern body with no MCP-Protocol-Version header, or a legacy one, reaches
            # the legacy transport (no session id): still the header mismatch.
            lost = headers("tools/call", "echo")
            del lost["MCP-Protocol-Version"]
            for version in (None, "2025-11-25"):
                sent = lost if version is None else {**lost, "MCP-Protocol-Version": version}
                status, reply = await post(http, url, call, sent)
                assert (status, reply["error"]["code"], reply["id"]) == (400, -32020, 1), reply
                assert "MCP-Protocol-Version" in reply["error"]["message"]
            # The same in a legacy session (found served by an outside sweep): what routes
            # by the header (a legacy session) and what would run (a modern request)
            # must agree, whichever spelling the body's key has.
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}}
            async with http.post(url, json=init, headers={
                    "Accept": "application/json, text/event-stream",
                    "Content-Type": "application/json"}) as resp:
                assert resp.status == 200
                session = {**lost, "MCP-Protocol-Version": "2025-11-25",
                           "Mcp-Session-Id": resp.headers["Mcp-Session-Id"]}
            status, reply = await post(http, url, call, session)
            assert (status, reply["error"]["code"], reply["id"]) == (400, -32020, 1), reply
            escaped = json.dumps(call).replace("protocolVersion", "protocol\\u0056ersion")
            async with http.post(url, data=escaped, headers=session) as resp:
                reply = await resp.json()
                assert (resp.status, reply["error"]["code"]) == (400, -32020), (escaped, reply)
            legacy = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "legacy"}}}
            status, reply = await post(http, url, legacy, session)
            assert status == 200 and reply["result"]["content"][0]["text"] == "legacy", reply
            # _meta without its required keys: 400 with -32602.
            bare = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
            status, reply = await post(http, url, bare, headers("tools/list"))
            assert (status, reply["error"]["code"], reply["id"]) == (400, -32602, 2)
            # An unsupported version: 400 with -32022 naming what is supported.
            odd = body("tools/list", _meta={"io.modelcontextprotocol/protocolVersion": "v9"})
            status, reply = await post(http, url, odd, headers(
                "tools/list", **{"MCP-Protocol-Version": "v9"}))
            assert (status, reply["error"]["code"]) == (400, -32022)
            assert reply["error"]["data"] == {"supported": [VERSION], "requested": "v9"}
            # Methods the modern era removed, and unknown ones: 404 with -32601.
            for method in ("initialize", "ping", "logging/setLevel", "nope/nope"):
                status, reply = await post(http, url, body(method), headers(method))
                assert (status, reply["error"]["code"]) == (404, -32601), method
            # An unknown tool is invalid params: 400.
            status, reply = await post(http, url, body("tools/call", name="nope"),
                                       headers("tools/call", "nope"))
            assert (status, reply["error"]["code"]) == (400, -32602)
            # A notification is accepted with 202; a response is not a valid body.
            status, _ = await post(http, url, {"jsonrpc": "2.0", "method": "notifications/x"},
                                   headers("notifications/x"))
            assert status == 202
            status, reply = await post(http, url, {"jsonrpc": "2.0", "id": 5, "result": {}},
                                       headers("x"))
            assert (status, reply["error"]["code"]) == (400, -32600)
            # POST only.
            for verb in ("GET", "DELETE"):
                async with http.request(verb, url, headers=headers("x")) as resp:
                    assert resp.status == 405 and resp.headers["Allow"] == "POST"
            # Origin, Accept, Content-Type, body size.
            status, reply = await post(http, url, call, headers(
                "tools/call", "echo", Origin="http://evil.example"))
            assert status == 403
            async with http.post(url, json=call, headers=headers(
                    "tools/call", "echo", Accept="text/html")) as resp:
                assert resp.status == 406
            async with http.post(url, data=b"x", headers=headers(
                    "tools/call", "echo", **{"Content-Type": "text/plain"})) as resp:
                assert resp.status == 415
            async with http.post(url, data=b"{" * 5_000_000, headers=headers(
                    "tools/call", "echo")) as resp:
                assert resp.status == 413
    run(main())


def test_discover_and_lists_carry_modern_fields(gateway: GatewayProcess) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            status, reply = await post(http, gateway.http_url, body("server/discover"),
                                       headers("server/discover"))
            assert status == 200
            result = reply["result"]
            assert result["supportedVersions"] == [VERSION]
            assert result["resultType"] == "complete"
            assert "tools" in result["capabilities"]
            assert isinstance(result["ttlMs"], int) and result["cacheScope"] in (
                "public", "private")
            assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcpfast"
            status, reply = await post(http, gateway.http_url, body("tools/list"),
                                       headers("tools/list"))
            listed = reply["result"]
            assert {"resultType", "ttlMs", "cacheScope"} <= set(listed)
    run(main())


def test_closing_the_stream_cancels_the_call(gateway: GatewayProcess) -> None:
    """On the modern transport, a client that closes the response stream cancels the
    request: the gateway stops waiting at once and tells the upstream."""
    async def until(predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            call = body("tools/call", 7, name="slow", arguments={"seconds": 30})
            task = asyncio.create_task(http.post(gateway.http_url, json=call,
                                                 headers=headers("tools/call", "slow")))
            await until(lambda: gateway.status()["in_flight"] == 1)
            started = time.monotonic()
            task.cancel()  # aiohttp drops the connection
            await until(lambda: gateway.status()["in_flight"] == 0)
            assert time.monotonic() - started < 5
    run(main())


def test_listen_stream_gets_tagged_list_changes(gateway: GatewayProcess) -> None:
    url = gateway.http_url

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            listen = body("subscriptions/listen", "L1",
                          notifications={"toolsListChanged": True})
            resp = await http.post(url, json=listen, headers=headers("subscriptions/listen"))
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            (ack,) = await read_events(resp, 1)
            assert ack[1]["method"] == "notifications/subscriptions/acknowledged"
            assert ack[1]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
            status, reply = await post(http, url, body(
                "tools/call", name="grow", arguments={"tool_name": "grown"}),
                headers("tools/call", "grow"))
            assert status == 200, reply
            (changed,) = await read_events(resp, 1)
            assert changed[1]["method"] == "notifications/tools/list_changed"
            assert changed[1]["params"]["_meta"][
                "io.modelcontextprotocol/subscriptionId"] == "L1"
            resp.close()
    run(main())


def test_listen_stream_keepalive(gateway_factory: Any) -> None:
    gw = gateway_factory({"sdk": sdk_upstream(era="legacy")},
                         listen={"http": {"sse_keepalive": 0.2}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            listen = body("subscriptions/listen", 1, notifications={"toolsListChanged": True})
            async with http.post(gw.http_url, json=listen,
                                 headers=headers("subscriptions/listen")) as resp:
                assert resp.headers["X-Accel-Buffering"] == "no"
                lines: list[bytes] = []
                async with asyncio.timeout(5):
                    while b": ping\n" not in lines:
                        lines.append(await resp.content.readline())
    run(main())


def test_a_listen_stream_the_client_closes_is_let_go(gateway: GatewayProcess) -> None:
    """A subscriptions/listen stream counts among the open streams while it is read;
    when the client closes it the gateway lets it go: it is no longer counted, and the
    connection the gateway held for it is closed."""
    url = gateway.http_url

    def open_streams() -> int:
        (tcp,) = [lst for lst in gateway.status()["listeners"] if "http" in lst]
        return int(tcp["http"]["open_streams"])

    async def until(predicate: Any, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            before = gateway.status()["connections"]["open"]
            listen = body("subscriptions/listen", "L2",
                          notifications={"toolsListChanged": True})
            resp = await http.post(url, json=listen, headers=headers("subscriptions/listen"))
            assert resp.status == 200
            (ack,) = await read_events(resp, 1)
            assert ack[1]["method"] == "notifications/subscriptions/acknowledged"
            assert open_streams() == 1
            assert gateway.status()["connections"]["open"] == before + 1
            resp.close()
            await until(lambda: open_streams() == 0, "the stream to be let go")
            await until(lambda: gateway.status()["connections"]["open"] == before,
                        "its connection to close")
    run(main())


def test_an_unsupported_version_is_a_400_even_for_a_client_preferring_a_stream(
        gateway: GatewayProcess) -> None:
    """Rung 11 refuses before any stream starts: a client that lists text/event-stream
    first still gets the plain 400 with -32022, not a 200 stream carrying the error."""
    odd = body("tools/list", 4, _meta={"io.modelcontextprotocol/protocolVersion": "v9"})

    async def main() -> None:
        async with aiohttp.ClientSession() as http, http.post(
                gateway.http_url, json=odd, headers=headers(
                    "tools/list", **{"MCP-Protocol-Version": "v9",
                                     "Accept": "text/event-stream, application/json"})) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"].startswith("application/json")
            reply = await resp.json()
        assert (reply["id"], reply["error"]["code"]) == (4, -32022)
        assert reply["error"]["data"] == {"supported": [VERSION], "requested": "v9"}
    run(main())
