"""End to end over the unix-socket listener (newline-delimited JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import Any

from .conftest import GatewayProcess, run, unix_client


def test_unix_socket_file_mode(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"unix_socket_mode": "0600"})
    mode = os.stat(gw.unix_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_unix_initialize_and_call(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(gateway.unix_path) as c:
            init = await c.initialize()
            assert init["result"]["serverInfo"]["name"] == "mcpfast"
            tools = (await c.request("tools/list"))["result"]["tools"]
            assert "echo" in {t["name"] for t in tools}
            response = await c.call_tool("echo", {"text": "über unix"})
            assert response["result"]["content"][0]["text"] == "über unix"
    run(body())


def test_unix_bad_lines_get_errors_and_the_stream_goes_on(gateway_factory: Any) -> None:
    gw = gateway_factory(listen={"max_message_bytes": 2048})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.send_raw("this is not json")
            assert (await c.receive())["error"]["code"] == -32700
            await c.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                         "params": {"name": "echo",
                                                    "arguments": {"text": "x" * 5000}}}))
            err = await c.receive()
            assert err["id"] is None and err["error"]["code"] == -32600
            assert "limit" in err["error"]["message"]
            await c.send_raw("[]")
            assert (await c.receive())["error"]["code"] == -32600
            # Several messages in one write, and one split across writes.
            c.writer.write(b'{"jsonrpc":"2.0","id":"a","method":"ping"}\n'
                           b'{"jsonrpc":"2.0","id":"b","method":"ping"}\n{"jsonrpc":"2.0",')
            await c.writer.drain()
            await asyncio.sleep(0.05)
            c.writer.write(b'"id":"c","method":"ping"}\n')
            await c.writer.drain()
            for rid in ("a", "b", "c"):
                assert (await c.wait_for(rid))["result"] == {}
            await c.initialize()
            echo = await c.call_tool("echo", {"text": "fine"})
            assert echo["result"]["content"][0]["text"] == "fine"
    run(body())


def test_unix_and_websocket_clients_side_by_side(gateway: GatewayProcess) -> None:
    from .conftest import ws_client

    async def over_unix() -> None:
        async with unix_client(gateway.unix_path) as c:
            await c.initialize()
            for i in range(30):
                r = await c.call_tool("echo", {"text": f"u{i}"}, request_id=i)
                assert r["result"]["content"][0]["text"] == f"u{i}"

    async def over_ws() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize()
            for i in range(30):
                r = await c.call_tool("echo", {"text": f"w{i}"}, request_id=i)
                assert r["result"]["content"][0]["text"] == f"w{i}"

    async def body() -> None:
        await asyncio.gather(over_unix(), over_ws())
    run(body())
