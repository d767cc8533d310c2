"""One client's read is handled ``MESSAGES_PER_TURN`` messages per turn of the event
loop, reading paused until the rest are: a read of tens of thousands of small messages
(an outside sweep's flood of malformed frames) otherwise kept every other client, and
the admin port, waiting for seconds (transport/writer.py)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.transport.tcp import TcpConnection
from mcpfast.transport.unix import UnixConnection
from mcpfast.transport.writer import MESSAGES_PER_TURN
from mcpfast_ext import websocket_codec_py as websocket_codec

from ..conftest import GatewayProcess, InProcessListener, Socket, run

UPGRADE = (b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n")


class PausingSocket(Socket):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def frame(message: dict[str, Any]) -> bytes:
    return websocket_codec.encode_frame(websocket_codec.OP_TEXT, json.dumps(message).encode(),
                                        mask=b"abcd")


def websocket_session(tmp_path: Path) -> tuple[Gateway, TcpConnection, PausingSocket]:
    config = tmp_path / "gw.toml"
    config.write_text('[upstreams.none]\ncommand = ["python", "-c", "pass"]\n')
    gw = Gateway(load(str(config)))
    connection = TcpConnection(gw, InProcessListener(gw))  # type: ignore[arg-type]
    sock = PausingSocket()
    connection.connection_made(sock)  # type: ignore[arg-type]
    connection.data_received(UPGRADE)
    connection.data_received(frame({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                    "params": {"protocolVersion": "2025-11-25",
                                               "capabilities": {},
                                               "clientInfo": {"name": "t", "version": "0"}}}))
    return gw, connection, sock


def test_a_websocket_read_of_many_messages_is_handled_over_several_turns(
        tmp_path: Path) -> None:
    count = 3 * MESSAGES_PER_TURN + 10

    async def main() -> None:
        _, connection, sock = websocket_session(tmp_path)
        session = connection.session
        assert session is not None
        before = session.messages_in
        connection.data_received(b"".join(frame({"jsonrpc": "2.0", "id": i, "method": "ping"})
                                          for i in range(1, count + 1)))
        # One turn's worth now, reading paused; the rest on the next turns.
        assert session.messages_in - before == MESSAGES_PER_TURN
        assert not sock.reading
        turns = 0
        while session.messages_in - before < count:
            turns += 1
            assert turns < 10
            await asyncio.sleep(0)
        assert turns == 3 and sock.reading
        await asyncio.sleep(0)  # the last turn's writes
        written = b"".join(sock.written)
        assert written.startswith(b"HTTP/1.1 101 ")
        frames = websocket_codec.FrameParser(expect_masked=False, max_payload=1 << 20).feed(
            written[written.index(b"\r\n\r\n") + 4:])
        ids = [json.loads(payload)["id"] for _, _, payload in frames]
        assert ids == list(range(count + 1))  # the initialize, then every ping, in order
        connection.connection_lost(None)
    asyncio.run(main())


def test_a_unix_read_of_many_lines_is_handled_over_several_turns(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[upstreams.none]\ncommand = ["python", "-c", "pass"]\n')
    count = 3 * MESSAGES_PER_TURN + 10

    async def main() -> None:
        gw = Gateway(load(str(config)))
        connection = UnixConnection(gw, InProcessListener(gw))  # type: ignore[arg-type]
        sock = PausingSocket()
        connection.connection_made(sock)  # type: ignore[arg-type]
        session = connection.session
        assert session is not None
        connection.data_received(b"".join(
            json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"}).encode() + b"\n"
            for i in range(count)))
        # One turn's worth now, reading paused; the rest on the next turns.
        assert session.messages_in == MESSAGES_PER_TURN and not sock.reading
        turns = 0
        while session.messages_in < count:
            turns += 1
            assert turns < 10
            await asyncio.sleep(0)
        assert turns == 3 and sock.reading
        connection.connection_lost(None)
    asyncio.run(main())


def test_a_unix_read_of_many_lines_is_answered_in_order_and_closed_after(
        gateway_factory: Any) -> None:
    """Over the unix socket, lines beyond a turn wait their turn; the client's end of
    input comes after them: every line is answered, in order, then the close."""
    gw: GatewayProcess = gateway_factory()
    count = 5 * MESSAGES_PER_TURN

    async def main() -> None:
        reader, writer = await asyncio.open_unix_connection(gw.unix_path)
        lines = [json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}})]
        lines += [json.dumps({"jsonrpc": "2.0", "id": i, "method": "ping"})
                  for i in range(1, count + 1)]
        writer.write(("\n".join(lines) + "\n").encode())
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)
        received = await asyncio.wait_for(reader.read(-1), 30)
        writer.close()
        ids = [json.loads(line)["id"] for line in received.splitlines()]
        assert ids == list(range(count + 1))
    run(main())


def test_what_waits_for_its_turn_is_dropped_when_the_connection_goes(tmp_path: Path) -> None:
    """Found by review: a backlog went on being handled for a session already closed
    (its calls forwarded, its subscriptions held upstream for good)."""
    async def main() -> None:
        _, connection, _ = websocket_session(tmp_path)
        session = connection.session
        assert session is not None
        connection.data_received(b"".join(frame({"jsonrpc": "2.0", "id": i, "method": "ping"})
                                          for i in range(1, 3 * MESSAGES_PER_TURN)))
        handled = session.messages_in
        connection.connection_lost(None)
        for _ in range(5):
            await asyncio.sleep(0)
        assert session.messages_in == handled and session.closed
    asyncio.run(main())


def test_a_protocol_error_after_a_long_read_closes_once_every_message_is_answered(
        tmp_path: Path) -> None:
    """Found by review: the close frame went out after the first turn, and the messages
    received before the error but handled on later turns lost their answers."""
    async def main() -> None:
        _, connection, sock = websocket_session(tmp_path)
        count = MESSAGES_PER_TURN + 44
        bad = websocket_codec.encode_frame(websocket_codec.OP_TEXT, b"\xff", mask=b"abcd")
        connection.data_received(b"".join(frame({"jsonrpc": "2.0", "id": i, "method": "ping"})
                                          for i in range(1, count + 1)) + bad)
        for _ in range(5):
            await asyncio.sleep(0)
        written = b"".join(sock.written)
        frames = websocket_codec.FrameParser(expect_masked=False, max_payload=1 << 20).feed(
            written[written.index(b"\r\n\r\n") + 4:])
        texts = [json.loads(payload)["id"] for _, opcode, payload in frames if opcode == 1]
        assert texts == list(range(count + 1))
        assert frames[-1][1] == websocket_codec.OP_CLOSE
        assert frames[-1][2][:2] == (1007).to_bytes(2, "big")
    asyncio.run(main())
