"""What an idle WebSocket session holds, in process: issue 12 bounds an idle session at
4 KiB, and the bench's idle scenario measures it (docs/benchmarks.md). These tests keep
the parts that once pushed it over the bound from coming back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.transport.tcp import TcpConnection
from mcpfast_ext import websocket_codec_py as websocket_codec

from ..conftest import InProcessListener, Socket

UPGRADE = (b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")


def test_an_upgraded_connection_keeps_no_timer_and_a_session_no_set(tmp_path: Path) -> None:
    """The request head's deadline timer ends with the upgrade (it would otherwise stay
    in the event loop until the header time-out, some 600 bytes a connection), and a
    session's subscriptions start as an empty dict (64 bytes, where a set is 216)."""
    config = tmp_path / "gw.toml"
    config.write_text('[upstreams.none]\ncommand = ["python", "-c", "pass"]\n')

    async def main() -> None:
        gw = Gateway(load(str(config)))
        connection = TcpConnection(gw, InProcessListener(gw))  # type: ignore[arg-type]
        socket = Socket()
        connection.connection_made(socket)  # type: ignore[arg-type]
        assert connection._timer is not None  # the head's deadline
        connection.data_received(UPGRADE)
        await asyncio.sleep(0)
        assert socket.written[0].startswith(b"HTTP/1.1 101 ")
        assert connection._timer is None and connection._deadline is None
        connection.data_received(websocket_codec.encode_frame(
            websocket_codec.OP_TEXT, json.dumps({
                "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "idle", "version": "0"}}}).encode(),
            mask=b"abcd"))
        await asyncio.sleep(0)
        session = connection.session
        assert session is not None and session.initialized
        assert connection._timer is None
        assert type(session.subscriptions) is dict and not session.subscriptions
        connection.connection_lost(None)
    asyncio.run(main())
