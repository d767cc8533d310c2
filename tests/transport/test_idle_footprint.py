"""What an idle WebSocket session holds, in process: issue 12 bounds an idle session at
4 KiB, and the bench's idle scenario measures it (docs/benchmarks.md). These tests keep
the parts that once pushed it over the bound from coming back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.gateway.session import NOTHING_YET
from mcpfast.transport.tcp import TcpConnection
from mcpfast_ext import websocket_codec_py as websocket_codec

from ..conftest import InProcessListener, Socket

UPGRADE = (b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")


def test_an_upgraded_connection_keeps_no_timer_and_a_session_no_set(tmp_path: Path) -> None:
    """The request head's deadline timer ends with the upgrade (it would otherwise stay
    in the event loop until the header time-out, some 600 bytes a connection), and a
    session's rarely used tables hold nothing of their own (64 bytes each, five of
    them, where the session is about 2.5 KB)."""
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
        # The tables most sessions never use are one shared empty table until they do.
        for name in ("outgoing", "relays", "relayed", "subscriptions", "listens"):
            assert getattr(session, name) is NOTHING_YET, name
        connection.connection_lost(None)
    asyncio.run(main())


def test_a_session_table_is_its_own_once_written_and_the_shared_one_refuses_writes() -> None:
    from mcpfast.gateway.session import DownstreamSession

    first = DownstreamSession("a", "websocket", "p", print, lambda code, reason: None)
    second = DownstreamSession("b", "websocket", "p", print, lambda code, reason: None)
    first.table("relays")["x"] = 1
    assert first.relays == {"x": 1} and first.table("relays") is first.relays
    assert second.relays is NOTHING_YET and not NOTHING_YET
    for write in (lambda: NOTHING_YET.__setitem__("k", 1),
                  lambda: NOTHING_YET.setdefault("k", 1), lambda: NOTHING_YET.update(k=1)):
        try:
            write()
        except TypeError:
            pass
        else:
            raise AssertionError("the shared empty table took a write")
    assert not NOTHING_YET and NOTHING_YET.pop("k", None) is None
