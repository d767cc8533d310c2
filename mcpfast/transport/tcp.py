"""The TCP listener's connections: HTTP/1.1 until the WebSocket upgrade, then frames.

Only moves bytes: HTTP framing lives in protocol/http.py, WebSocket rules in
protocol/websocket.py, MCP in the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from ..protocol.http import HttpError, HttpRequest, HttpRequestReader, error_response
from ..protocol.websocket import (
    BinaryMessage,
    Closed,
    HandshakeError,
    TextMessage,
    WebSocketConnection,
    accept_handshake,
)
from .streamable import Endpoint, Exchange
from .writer import ClientProtocol, CoalescingWriter

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway
    from ..gateway.listener import TcpListener
    from ..gateway.session import DownstreamSession

log = logging.getLogger("mcpfast.transport")

HANDSHAKE_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 60.0
"""How long an HTTP/1.1 connection may sit between requests."""
MAX_PIPELINED = 16
CLOSE_TIMEOUT = 5.0
"""How long to wait for the peer's close frame after ours (RFC 6455 7.1.1 leaves the
TCP close to the server, but a peer that never answers must not hold the socket)."""


class TcpConnection(ClientProtocol):
    # Slots, and the HTTP parser dropped after the upgrade: an idle WebSocket session
    # should cost the gateway as little memory as possible.
    __slots__ = ("_idle_since", "_timer", "config", "endpoint", "exchange", "gateway",
                 "listener", "peer", "queue", "reader", "session", "transport", "writer", "ws")

    def __init__(self, gateway: Gateway, listener: TcpListener) -> None:
        self.gateway = gateway
        self.listener = listener
        self.endpoint: Endpoint = listener.endpoint
        self.config = gateway.config.listen
        self.transport: asyncio.Transport | None = None
        self.writer: CoalescingWriter | None = None
        self.reader: HttpRequestReader | None = HttpRequestReader(
            max_body_bytes=self.config.max_message_bytes)
        self.ws: WebSocketConnection | None = None
        self.session: DownstreamSession | None = None
        self.exchange: Exchange | None = None
        self.queue: deque[HttpRequest] | None = None
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.writer = CoalescingWriter(transport, loop)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.listener.connections.add(self)
        # The first request must come within HANDSHAKE_TIMEOUT; later ones within
        # KEEP_ALIVE_TIMEOUT of the previous response.
        self._idle_since = loop.time() - KEEP_ALIVE_TIMEOUT + HANDSHAKE_TIMEOUT
        self._timer = loop.call_later(HANDSHAKE_TIMEOUT, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.ws is not None:
            self.ws.receive_eof()
        if self.session is not None:
            self.gateway.close_session(self.session)
        exchange, self.exchange = self.exchange, None
        self.queue = None
        if exchange is not None:
            exchange.lost()

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._websocket_data(data)
            return
        assert self.reader is not None
        try:
            requests = self.reader.feed(data)
        except HttpError as exc:
            self._reply_and_close(error_response(exc.status, exc.detail))
            return
        for request in requests:
            if self.exchange is not None or self.queue:
                # HTTP/1.1 pipelining: answer in order, one at a time.
                if self.queue is None:
                    self.queue = deque()
                self.queue.append(request)
                if len(self.queue) > MAX_PIPELINED and self.transport is not None:
                    self.transport.pause_reading()
                continue
            self._http_request(request)
            if self.ws is not None or self.transport is None or self.transport.is_closing():
                break
        self._wait_for_request()

    def _wait_for_request(self) -> None:
        """Between HTTP requests, an idle connection is closed after a while. One timer
        per connection, re-armed only when it fires: none is made per request."""
        if self.exchange is None and self.ws is None and self.transport is not None \
                and not self.transport.is_closing():
            loop = asyncio.get_running_loop()
            self._idle_since = loop.time()
            if self._timer is None:
                self._timer = loop.call_later(KEEP_ALIVE_TIMEOUT, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.exchange is not None or self.ws is not None:
            return  # busy: re-armed when the response is complete
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._idle_since
        if idle >= KEEP_ALIVE_TIMEOUT - 0.001:
            self._abort("no request on an idle connection")
        else:
            self._timer = loop.call_later(KEEP_ALIVE_TIMEOUT - idle, self._check_idle)

    # -- HTTP --------------------------------------------------------------------------
    def _http_request(self, request: HttpRequest) -> None:
        assert self.transport is not None and self.writer is not None
        if request.path != self.config.path:
            self._http_error(request, 404, f"no MCP endpoint at {request.path}; "
                             f"MCP clients use {self.config.path}")
            return
        if request.header("Upgrade") is None:
            self.exchange = self.endpoint.handle(self, request)
            if self.exchange.done:
                self.exchange = None
            return
        if self.gateway.draining:
            self._http_error(request, 503, "the gateway is shutting down", [("Retry-After", "1")])
            return
        refused = self.endpoint.refuse(request)
        if refused is not None:
            self._http_error(request, *refused)
            return
        try:
            response = accept_handshake(request)
        except HandshakeError as exc:
            self._http_error(request, exc.status, exc.detail, exc.headers)
            return
        self.writer.write(response)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.ws = WebSocketConnection(max_message_bytes=self.config.max_message_bytes)
        self.session = self.gateway.open_session("websocket", self.peer, self.send,
                                                 self.close)
        assert self.reader is not None
        leftover = self.reader.upgraded_data
        self.reader = None
        self.queue = None
        if leftover:
            self._websocket_data(leftover)

    def write(self, data: bytes) -> None:
        """Part of the HTTP response in progress (the exchange's writer)."""
        if self.writer is not None:
            self.writer.write(data)

    def exchange_finished(self, exchange: Exchange, data: bytes, keep_alive: bool) -> None:
        """The response to the current request is complete: write its last bytes and
        go on with the next request."""
        if data:
            self.write(data)
        if self.exchange is exchange:
            self.exchange = None
        if self.transport is None or self.transport.is_closing():
            return
        if not keep_alive:
            self._close_transport()
            return
        queue = self.queue
        while queue and self.exchange is None and self.ws is None:
            if not self.transport.is_closing():
                self._http_request(queue.popleft())
            if not queue and self.transport is not None:
                self.transport.resume_reading()
        self._wait_for_request()

    def _http_error(self, request: HttpRequest, status: int, detail: str,
                    headers: list[tuple[str, str]] | None = None) -> None:
        assert self.writer is not None
        self.writer.write(error_response(status, detail, keep_alive=request.keep_alive,
                                         headers=headers))
        if not request.keep_alive:
            self._close_transport()

    def _reply_and_close(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        self._close_transport()

    # -- WebSocket ---------------------------------------------------------------------
    def _websocket_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        ws.receive_data(data)
        session = self.session
        handle = self.gateway.handle
        for event in ws.events_received():
            if type(event) is TextMessage:
                handle(session, event.data)  # type: ignore[arg-type]
            elif type(event) is BinaryMessage:
                ws.close(1003, "MCP messages are JSON text; binary frames are not accepted")
            elif type(event) is Closed and session is not None:
                self.gateway.close_session(session)
        self._flush_frames()

    def _flush_frames(self) -> None:
        ws = self.ws
        writer = self.writer
        assert ws is not None and writer is not None
        for frame in ws.data_to_send():
            writer.write(frame)
        if ws.close_expected():
            self._close_transport()

    def send(self, data: bytes) -> None:
        """Send one JSON-RPC message to this client (the session's send)."""
        ws = self.ws
        if ws is not None:
            frame = ws.text_frame(data)
            if frame is not None:
                self.writer.write(frame)  # type: ignore[union-attr]

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (the session's close)."""
        if self.ws is None:
            self._close_transport()
            return
        if self.ws.close(code, reason):
            self._flush_frames()
            if self._timer is None and self.transport is not None:
                self._timer = asyncio.get_running_loop().call_later(
                    CLOSE_TIMEOUT, self._abort, "no close frame from the peer")

    def _close_transport(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _abort(self, why: str) -> None:
        log.debug("closing %s: %s", self.peer, why)
        self._timer = None
        if self.transport is not None:
            self.transport.abort()
