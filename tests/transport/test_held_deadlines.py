"""While the gateway itself holds a client's reading (its HTTP pipeline is full, an
upstream the client feeds is congested, or other clients have their turn), what the
client sends waits unread in the kernel: the deadline of the request or message it has
begun does not run then, and starts again, whole, once reading resumes. A deadline left
running answered 408 to a body sent in time (a CI run of
test_hardening.py::test_a_pipelined_request_the_gateway_does_not_read_yet_is_not_timed_out)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.transport.tcp import PAUSED_BY_PIPELINE, TcpConnection
from mcpfast.transport.unix import UnixConnection
from mcpfast.transport.writer import PAUSED_BY_UPSTREAM, PAUSED_FOR_OTHERS
from mcpfast_ext import websocket_codec_py as websocket_codec

from ..conftest import InProcessListener, Socket, run

UPGRADE = (b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")
HOLDS = {"pipeline": PAUSED_BY_PIPELINE, "upstream": PAUSED_BY_UPSTREAM,
         "turn": PAUSED_FOR_OTHERS}


class ClosingSocket(Socket):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close


def gateway(tmp_path: Path, timeout: float) -> Gateway:
    config = tmp_path / "gw.toml"
    config.write_text('[upstreams.none]\ncommand = ["python", "-c", "pass"]\n'
                      f'[limits]\nheader_timeout = {timeout}\nbody_timeout = {timeout}\n')
    return Gateway(load(str(config)))


def connect(tmp_path: Path, kind: str, timeout: float) -> tuple[Any, ClosingSocket]:
    """A connection of ``kind`` (http, websocket, unix) with a message begun."""
    gw = gateway(tmp_path, timeout)
    listener = InProcessListener(gw)
    connection = (UnixConnection if kind == "unix" else TcpConnection)(
        gw, listener)  # type: ignore[arg-type]
    sock = ClosingSocket()
    connection.connection_made(sock)
    if kind == "http":
        connection.data_received(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Content-Length: 10\r\n\r\n{")
    elif kind == "websocket":
        connection.data_received(UPGRADE)
        frame = websocket_codec.encode_frame(websocket_codec.OP_TEXT, json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode(), mask=b"abcd")
        connection.data_received(frame[:-5])
    else:
        connection.data_received(b'{"jsonrpc": "2.0", "id": 1, "me')
    return connection, sock


def deadline(connection: Any) -> float:
    if isinstance(connection, UnixConnection):
        assert connection._timer is not None
        return connection._timer.when()
    assert connection._deadline is not None
    return connection._deadline


@pytest.mark.parametrize("hold", ["pipeline", "upstream"])
@pytest.mark.parametrize("phase", ["head", "body"])
def test_an_http_request_held_gets_its_whole_time_once_released(
        tmp_path: Path, hold: str, phase: str) -> None:
    async def main() -> None:
        gw = gateway(tmp_path, 5.0)
        connection = TcpConnection(gw, InProcessListener(gw))  # type: ignore[arg-type]
        connection.connection_made(Socket())  # type: ignore[arg-type]
        connection.data_received(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 + (b"Content-Length: 10\r\n\r\n{" if phase == "body"
                                    else b"Accept: */*"))
        connection.pause(HOLDS[hold])
        await asyncio.sleep(0.2)  # held: the client's bytes would wait in the kernel
        connection.resume(HOLDS[hold])
        now = asyncio.get_running_loop().time()
        assert deadline(connection) >= now + 5.0 - 0.05, (deadline(connection), now)
        connection.connection_lost(None)
    run(main())


@pytest.mark.parametrize("hold", ["upstream", "turn"])
@pytest.mark.parametrize("kind", ["websocket", "unix"])
def test_a_message_begun_while_reading_is_held_gets_its_whole_time_once_released(
        tmp_path: Path, kind: str, hold: str) -> None:
    async def main() -> None:
        connection, _ = connect(tmp_path, kind, 5.0)
        connection.pause(HOLDS[hold])
        await asyncio.sleep(0.2)
        connection.resume(HOLDS[hold])
        now = asyncio.get_running_loop().time()
        assert deadline(connection) >= now + 5.0 - 0.05, (deadline(connection), now)
        connection.connection_lost(None)
    run(main())


def timed_out(kind: str, sock: ClosingSocket) -> bool:
    """The deadline's verdict: 408, a close frame saying 1008, or the socket aborted."""
    if kind == "http":
        return b"".join(sock.written).startswith(b"HTTP/1.1 408 ")
    if kind == "websocket":
        return sock.written[-1][:1] == b"\x88" and sock.written[-1][2:4] == b"\x03\xf0"  # 1008
    return sock.closed


@pytest.mark.parametrize("kind", ["http", "websocket", "unix"])
def test_a_message_begun_is_not_timed_out_while_held_and_is_after(
        tmp_path: Path, kind: str) -> None:
    """Held for several deadlines' length: still open; released: timed out after its
    whole time, since the client sends no more."""
    async def main() -> None:
        connection, sock = connect(tmp_path, kind, 0.2)
        connection.pause(PAUSED_BY_UPSTREAM)
        await asyncio.sleep(0.7)
        assert not sock.closed and not sock.written[1 if kind == "websocket" else 0:]
        connection.resume(PAUSED_BY_UPSTREAM)
        for _ in range(1000):  # 10 s at most, for a busy machine
            if timed_out(kind, sock):
                break
            await asyncio.sleep(0.01)
        assert timed_out(kind, sock), sock.written
        connection.connection_lost(None)
    run(main())
