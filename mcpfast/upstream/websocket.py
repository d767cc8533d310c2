"""WebSocketUpstream: an MCP server at a ``ws://`` or ``wss://`` URL, one JSON-RPC
message per text message, subprotocol ``mcp`` offered (the transport the gateway's own
WebSocket listener serves).

The opening handshake and the frames are the same sans-I/O code as the listener's
(protocol/websocket.py), on the client's side: frames masked, the server's unmasked.
The config's ``headers`` go with the handshake; ``wss://`` verifies the server's
certificate and name, against ``ca_file`` when set.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlsplit

from ..config import UpstreamConfig
from ..protocol.websocket import (
    BinaryMessage,
    ClientHandshakeError,
    Closed,
    Failed,
    TextMessage,
    WebSocketConnection,
    check_client_response,
    client_request,
    new_client_key,
)
from ..transport.writer import UPSTREAM_HIGH_WATER, CoalescingWriter, begin_batch, end_batch
from .base import CallT, UpstreamError, UpstreamEvents
from .remote import RemoteUpstream, StreamProtocol

MAX_RESPONSE_HEAD = 16 * 1024
"""The most the server's handshake response may take, up to its blank line."""


class _FrameWriter(CoalescingWriter):
    """Each message written becomes a masked text frame (with the control frames the
    connection owes before it, such as a pong)."""

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocketConnection, transport: asyncio.Transport,
                 loop: asyncio.AbstractEventLoop, on_congested: Any) -> None:
        super().__init__(transport, loop, high_water=UPSTREAM_HIGH_WATER,
                         on_congested=on_congested)
        self._ws = ws

    def write(self, data: bytes) -> None:
        frame = self._ws.text_frame(data)
        if frame is None:
            raise UpstreamError(-32000, "the upstream's WebSocket is closing")
        super().write(frame)


class _WebSocketProtocol(StreamProtocol):
    def __init__(self, upstream: WebSocketUpstream[Any]) -> None:
        super().__init__(upstream)
        self.ws = WebSocketConnection(max_message_bytes=upstream.config.max_message_bytes,
                                      client=True)
        self.key = new_client_key()
        self.head = bytearray()
        self.handshaking = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        upstream: WebSocketUpstream[Any] = self.upstream  # type: ignore[assignment]
        try:
            request = client_request(upstream.host_header, upstream.target, self.key,
                                     headers=upstream.config.headers.items())
        except ValueError as exc:
            self.end(str(exc))
            return
        transport.write(request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_RESPONSE_HEAD:
                    self.end(f"the handshake response is over {MAX_RESPONSE_HEAD} bytes")
                return
            try:
                check_client_response(bytes(self.head[:end]), self.key)
            except ClientHandshakeError as exc:
                self.end(f"WebSocket handshake refused: {exc}")
                return
            self.handshaking = False
            data = bytes(self.head[end + 4:])
            self.head = bytearray()
            self.opened.set_result(None)
            if not data:
                return
        ws = self.ws
        ws.receive_data(data)
        outer = begin_batch()
        try:
            self._deliver(ws)
        finally:
            end_batch(outer)

    def _deliver(self, ws: WebSocketConnection) -> None:
        upstream = self.upstream
        for event in ws.events_received():
            if type(event) is TextMessage:
                upstream.on_message(event.data)
            elif type(event) is BinaryMessage:
                ws.fail(1003, "MCP messages are text")
                ws.close()
                self.flush()
                self.end("the server sent a binary message (MCP messages are text)")
                return
            elif type(event) is Closed or type(event) is Failed:
                self.flush()
                self.end(f"the WebSocket closed ({event.code} {event.reason})".rstrip())
                return
        self.flush()

    def flush(self) -> None:
        """Write the control frames the connection owes (pongs, a close)."""
        output = self.ws.data_to_send()
        if output and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(output)


class WebSocketUpstream(RemoteUpstream[CallT]):
    kind = "websocket"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        url = urlsplit(config.url)
        self.secure = url.scheme == "wss"
        self.hostname = url.hostname or ""
        self.port = url.port or (443 if self.secure else 80)
        default_port = url.port is None or url.port == (443 if self.secure else 80)
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._tls: ssl.SSLContext | None = None

    @property
    def address(self) -> str:
        # The URL without its query, which may hold a credential.
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.target.split('?')[0]}"

    def tls(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.config.ca_file or None)
        return self._tls

    async def open(self) -> tuple[asyncio.BaseTransport, StreamProtocol]:
        return await asyncio.get_running_loop().create_connection(
            lambda: _WebSocketProtocol(self), self.hostname, self.port,
            ssl=self.tls() if self.secure else None,
            server_hostname=self.hostname if self.secure else None)

    def writer_for(self, transport: asyncio.Transport, protocol: StreamProtocol
                   ) -> CoalescingWriter:
        assert isinstance(protocol, _WebSocketProtocol)
        return _FrameWriter(protocol.ws, transport, asyncio.get_running_loop(),
                            self.congested)

    async def disconnect(self) -> None:
        protocol = self._protocol
        # 7.1.2: a close frame first, so that the server knows it was on purpose.
        if isinstance(protocol, _WebSocketProtocol) and not protocol.closed.done() \
                and protocol.ws.close(1001, "the gateway is going away"):
            protocol.flush()
        await super().disconnect()
