"""The TCP listener's connections: HTTP/1.1 until the WebSocket upgrade, then frames.

Only moves bytes: HTTP framing lives in protocol/http.py, WebSocket rules in
protocol/websocket.py, MCP in the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from http import HTTPStatus
from typing import Protocol

import msgspec

from ..protocol.http import (
    BODY,
    HEAD,
    IDLE,
    HttpError,
    HttpRequest,
    HttpRequestReader,
    asks_websocket,
    error_response,
    format_response,
)
from ..protocol.jsonrpc import REQUEST_TIMEOUT
from ..protocol.websocket import (
    FAILING,
    OPEN,
    BinaryMessage,
    Closed,
    Event,
    HandshakeError,
    TextMessage,
    WebSocketConnection,
    accept_handshake,
)
from .exchange import Exchange
from .ports import ClientSession, ConnectionOwner, Dispatcher, Identity
from .streamable import Endpoint, allowed
from .tls import certified_identity
from .writer import HELD_BY_GATEWAY, ClientProtocol, CoalescingWriter

LINGER_TIMEOUT = 2.0
"""How long input is read and dropped after an error answer before the close."""
PAUSED_BY_PIPELINE = 4
"""Too many pipelined HTTP requests wait for their turn."""
PAUSED_BY_FAILURE = 8
"""A WebSocket protocol error: nothing more is read, the answers owed go out first."""

log = logging.getLogger("mcpfast.transport")

MAX_PIPELINED = 16
CLOSE_TIMEOUT = 5.0
"""How long to wait for the peer's close frame after ours (RFC 6455 7.1.1 leaves the
TCP close to the server, but a peer that never answers must not hold the socket)."""
ANSWER_TIMEOUT = 10.0
"""After a WebSocket protocol error, how long the requests received before it have to
be answered before the close frame goes anyway (they are then answered -32001)."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
METADATA_HEADERS = [("Cache-Control", "max-age=300"), ("Access-Control-Allow-Origin", "*")]
"""The protected-resource metadata is public, and browser-based clients read it."""


class TcpOwner(ConnectionOwner, Protocol):
    """The TCP listener: its connections, and the MCP endpoint they share."""

    endpoint: Endpoint


class TcpConnection(ClientProtocol):
    """One client's TCP connection.

    Timing (``[limits]``): one deadline at a time, set when the state changes and never
    moved by mere activity. A request's head must be complete within header_timeout of
    its first byte, its body within body_timeout of its head, and the next request must
    begin within keepalive_timeout of the last response; a WebSocket message must be
    complete within body_timeout of its first byte. One timer per connection, re-armed
    only when it fires early, so that no timer is made per request.
    """

    # Slots, and the HTTP parser dropped after the upgrade: an idle WebSocket session
    # should cost the gateway as little memory as possible.
    __slots__ = (
        "_deadline",
        "_loop",
        "_phase",
        "_timer",
        "address",
        "certified",
        "config",
        "core",
        "endpoint",
        "exchange",
        "limits",
        "listener",
        "peer",
        "queue",
        "reader",
        "session",
        "transport",
        "writer",
        "ws",
    )
    held_by_gateway = HELD_BY_GATEWAY | PAUSED_BY_PIPELINE

    def __init__(self, core: Dispatcher, listener: TcpOwner) -> None:
        self.core = core
        self.listener = listener
        self.endpoint: Endpoint = listener.endpoint
        self.config = core.config.listen
        self.limits = core.config.limits
        self.paused = 0
        self.address: str | None = None
        """The peer's IP address once admitted (released when the connection ends)."""
        self.certified: Identity | None = None
        """Who the client's certificate names, where the listener takes mutual TLS."""
        self.transport: asyncio.Transport | None = None
        self.writer: CoalescingWriter | None = None
        self.reader: HttpRequestReader | None = HttpRequestReader(
            max_body_bytes=self.config.max_message_bytes)
        self.ws: WebSocketConnection | None = None
        self.session: ClientSession | None = None
        self.exchange: Exchange | None = None
        self.queue: deque[HttpRequest | HttpError] | None = None
        """Pipelined requests waiting for the one answered now (and last, what the
        reader failed on after them)."""
        self.peer = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._phase = IDLE
        self._backlog: list[Event] | None = None
        """Messages of a read beyond ``MESSAGES_PER_TURN``, handled on the next turns."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        # Kept: on Python 3.11 asyncio.get_running_loop() makes a getpid system call,
        # which every request's deadline would pay.
        loop = self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        address = str(peer[0]) if isinstance(peer, tuple) else self.peer
        refused = self.core.admission.admit(address)
        if refused is not None:
            log.warning("refused a connection from %s: %s", self.peer, refused)
            transport.write(error_response(503, f"Service Unavailable: {refused}",  # type: ignore[attr-defined]
                                           headers=[("Retry-After", "1")]))
            transport.close()
            self.reader = None
            return
        self.address = address
        if self.core.authenticator.mtls:
            self.certified = certified_identity(transport, address)
        self.writer = CoalescingWriter(transport, loop,  # type: ignore[arg-type]
                                       self.limits.client_buffer_bytes, self._overflow)
        self.listener.connections.add(self)
        # The first request's head is due within header_timeout of the connection.
        self._set_deadline(loop.time() + self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.address is None:
            return  # refused at admission
        self.core.admission.release(self.address)
        self.address = None
        self.listener.connections.discard(self)
        self._backlog = None  # what waited for its turn is the closed session's
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.ws is not None:
            self.ws.receive_eof()
        if self.session is not None:
            self.core.close_session(self.session)
        exchange, self.exchange = self.exchange, None
        self.queue = None
        if exchange is not None:
            exchange.lost()

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._websocket_data(data)
            return
        reader = self.reader
        if reader is None:
            return  # refused at admission, or closing
        try:
            requests: list[HttpRequest | HttpError] = reader.feed(data)  # type: ignore[assignment]
        except HttpError as exc:
            self._reply_and_close(error_response(exc.status, exc.detail))
            return
        if reader.phase != self._phase or (requests and reader.phase != IDLE):
            # A new phase, or a new request begun in the read that ended another: its
            # own deadline, never one inherited from the request before it.
            self._phase = reader.phase
            self._reader_phase_changed()
        failed = reader.failed
        if failed is not None:
            # Malformed bytes after whole requests: those are answered first, in order,
            # then this error, and the connection closes; nothing more is read.
            reader.failed = None
            requests.append(failed)
            self.pause(PAUSED_BY_PIPELINE)
        for request in requests:
            if self.exchange is not None or self.queue:
                # HTTP/1.1 pipelining: answer in order, one at a time.
                if self.queue is None:
                    self.queue = deque()
                self.queue.append(request)
                if len(self.queue) > MAX_PIPELINED:
                    self.pause(PAUSED_BY_PIPELINE)
                continue
            self._http_request(request)
            if self.ws is not None or self.transport is None or self.transport.is_closing():
                break
        if requests and self.exchange is None and self.ws is None and self._phase == IDLE:
            # Every request of this read was answered at once: wait for the next one.
            self._set_deadline(self._loop.time()
                               + self.limits.keepalive_timeout)
        if self._phase == BODY and reader.continue_expected:
            self._continue_if_due()

    def _continue_if_due(self) -> None:
        """A client that asked for ``100 Continue`` sends its body only after it (RFC
        9110 10.1.1): sent once every earlier request is answered, as an interim
        response belongs to the request answered next. A body that came anyway needs
        none."""
        reader = self.reader
        if reader is None or not reader.continue_expected:
            return
        if reader.phase != BODY:
            reader.continue_expected = False
        elif self.exchange is None and not self.queue and self.writer is not None:
            reader.continue_expected = False
            self.writer.write_now(CONTINUE)
            # The client sends its body now: its time starts now.
            self._set_deadline(self._loop.time() + self.limits.body_timeout)

    def buffered(self) -> int:
        """Bytes held for this client: to send, and of a message not yet complete."""
        total = self.writer.buffered() if self.writer is not None else 0
        if self.reader is not None:
            total += self.reader.buffered
        if self.ws is not None:
            total += self.ws.buffered
        return total

    # -- deadlines -----------------------------------------------------------------------
    def _reader_phase_changed(self) -> None:
        now = self._loop.time()
        if self._phase == HEAD:
            self._set_deadline(now + self.limits.header_timeout)
        elif self._phase == BODY:
            self._set_deadline(now + self.limits.body_timeout)
        elif self.exchange is None:
            self._set_deadline(now + self.limits.keepalive_timeout)
        else:
            self._set_deadline(None)  # a response is in progress: no deadline for it

    def _set_deadline(self, deadline: float | None) -> None:
        self._deadline = deadline
        if deadline is None:
            return  # a pending timer finds no deadline and lapses
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.transport is None:
            return
        if self._loop.time() < deadline - 0.001:
            self._timer = self._loop.call_at(deadline, self._on_deadline)
            return
        self._deadline = None
        if (self.ws is not None or self._phase != IDLE) and self._held_by_us():
            # The gateway is not reading this request or message (its pipeline is
            # full, an upstream it feeds is congested, or other clients have their
            # turn), or has not yet let the client send its body (100 Continue waits
            # for the requests before it): its time does not run, and starts again
            # from now (RFC 9110 10.1.1, RFC 9112 9.3.2).
            self._start_again()
            return
        if self.ws is not None:
            self._websocket_deadline()
        elif self._phase == HEAD:
            self.core.counters.timeouts += 1
            self._timeout_response(f"request head not complete within "
                                   f"{self.limits.header_timeout:g} s")
        elif self._phase == BODY:
            self.core.counters.timeouts += 1
            self._timeout_response(f"request body not complete within "
                                   f"{self.limits.body_timeout:g} s")
        elif self.exchange is None:
            self._abort("no request on an idle connection")

    def released(self) -> None:
        if self.ws is not None:
            begun = self._deadline is not None  # a message's deadline, the only one
        else:
            begun = self._phase != IDLE and not self._held_by_us()
        if begun:
            self._start_again()

    def _start_again(self) -> None:
        """The request or WebSocket message being read gets its whole time, from now."""
        if self.ws is not None:
            self._set_deadline(self._loop.time() + self.limits.body_timeout)
        else:
            self._reader_phase_changed()

    def _held_by_us(self) -> bool:
        """Whether the request being read waits on the gateway rather than the client."""
        if self.paused & self.held_by_gateway:
            return True
        reader = self.reader
        return self._phase == BODY and reader is not None and reader.continue_expected

    def _timeout_response(self, why: str) -> None:
        log.info("closing %s: %s", self.peer, why)
        if self.exchange is None and self.writer is not None:
            self._reply_and_close(error_response(408, f"Request Timeout: {why}"))
        else:
            self._abort(why)

    def _websocket_deadline(self) -> None:
        """A WebSocket message begun longer than body_timeout ago is still not complete."""
        self.core.counters.timeouts += 1
        log.info("closing %s: WebSocket message not complete within %g s", self.peer,
                 self.limits.body_timeout)
        self.close(1008, "message not complete in time")

    def watch_partial(self, buffered: int, completed: bool) -> None:
        """After each read of a WebSocket connection: time a message that has begun and
        not ended, from its first byte (``completed``: a message ended in this read, so
        what is buffered began in it)."""
        if self.ws is not None and self.ws.state is not OPEN:
            return  # closing: the close timer rules now
        if buffered:
            if self._deadline is None or completed:
                self._set_deadline(self._loop.time()
                                   + self.limits.body_timeout)
        elif self._deadline is not None:
            self._deadline = None

    def _overflow(self, pending: int) -> None:
        """The client let ``pending`` bytes pile up: it is not reading. Close it, which
        cancels its calls upstream; the close frame is queued behind what it has not
        read, and the connection is aborted if it never reads it."""
        self.core.counters.client_overflows += 1
        log.warning("closing %s: %d bytes wait to be sent (limits.client_buffer_bytes "
                    "is %d): the client is not reading", self.peer, pending,
                    self.limits.client_buffer_bytes)
        if self.session is not None:
            self.core.close_session(self.session)
        ws = self.ws
        if ws is not None and self.transport is not None and ws.close(1008, "not reading"):
            for frame in ws.data_to_send():
                self.transport.write(frame)
            self._abort_later()
        else:
            self._abort("not reading its answers")

    # -- HTTP --------------------------------------------------------------------------
    def _http_request(self, request: HttpRequest | HttpError) -> None:
        assert self.transport is not None and self.writer is not None
        if isinstance(request, HttpError):  # what the reader failed on (reader.failed)
            self._reply_and_close(error_response(request.status, request.detail))
            # The lingering close reads (and drops) what the client still sends.
            self.resume(PAUSED_BY_PIPELINE)
            return
        reader = self.reader
        if reader is not None and reader.upgraded_data is not None and \
                asks_websocket(request.fields.get("upgrade")):
            # The reader takes what follows this request for WebSocket frames: if the
            # gateway declines the upgrade, the connection cannot go on as HTTP, and the
            # refusal closes it (RFC 9112 9.6) rather than leave a request unanswered.
            request.keep_alive = False
        if request.version != "1.1" and request.version != "1.0":
            self._reply_and_close(error_response(
                505, f"HTTP Version Not Supported: HTTP/{request.version}; speak HTTP/1.1"))
            return
        if request.method == "HEAD":
            self._head(request)
            return
        if request.path != self.config.path:
            self.writer.write(self._elsewhere(request))
            if not request.keep_alive:
                self._close_transport()
            return
        upgrade = request.fields.get("upgrade")
        if upgrade is None or not asks_websocket(upgrade):
            # Streamable HTTP; an upgrade to anything but WebSocket is declined by
            # answering over HTTP/1.1 (``asks_websocket``).
            exchange = self.endpoint.handle(self, request)
            if not exchange.done:
                self.exchange = exchange
                if self._phase == IDLE:
                    self._set_deadline(None)  # answering: no deadline for the client
            return
        if self.core.draining:
            self._http_error(request, 503, "the gateway is shutting down", [("Retry-After", "1")])
            return
        refused = self.endpoint.refuse(request)
        if refused is not None:
            self._http_error(request, *refused)
            return
        identity = self.endpoint.identify(request, self.address, self.certified)
        if not isinstance(identity, Identity):
            failure = identity
            self._http_error(request, failure.status, f"{HTTPStatus(failure.status).phrase}: "
                             f"{failure.description}",
                             self.core.authenticator.challenge(failure, request.header("Host")))
            return
        try:
            response = accept_handshake(request)
        except HandshakeError as exc:
            self._http_error(request, exc.status, exc.detail, exc.headers)
            return
        self.writer.write(response)
        self._set_deadline(None)
        if self._timer is not None:
            # The head's deadline is over for good: its timer (some 600 bytes with the
            # event loop's handle) goes now rather than when it would lapse, so that an
            # idle session holds none.
            self._timer.cancel()
            self._timer = None
        self.ws = WebSocketConnection(max_message_bytes=self.config.max_message_bytes)
        self.session = self.core.open_session("websocket", self.peer, self.send, self.close,
                                              self, identity.with_peer(self.address))
        assert self.reader is not None
        leftover = self.reader.upgraded_data
        self.reader = None
        self.queue = None
        if leftover:
            self._websocket_data(leftover)

    def _elsewhere(self, request: HttpRequest) -> bytes:
        """The response to a request for a path other than the MCP endpoint's: the
        authorization server metadata the authenticator serves (GET), else 404."""
        authenticator = self.core.authenticator
        if request.method in ("GET", "HEAD") and authenticator.serves_metadata(request.path):
            return format_response(
                200, [("Content-Type", "application/json"), *METADATA_HEADERS],
                msgspec.json.encode(authenticator.metadata(request.header("Host"))),
                keep_alive=request.keep_alive)
        return error_response(404, f"no MCP endpoint at {request.path}; MCP clients use "
                              f"{self.config.path}", keep_alive=request.keep_alive)

    def _head(self, request: HttpRequest) -> None:
        """HEAD: the head of what GET would answer, without its content (RFC 9110
        9.3.2; a client reads none after it). The MCP endpoint's GET opens an event
        stream, which a HEAD must not: 405 there (for a modern request, as its GET is)."""
        assert self.writer is not None
        if request.path != self.config.path:
            response = self._elsewhere(request)
        else:
            methods = allowed(request)
            response = error_response(405, f"Method Not Allowed: HEAD; MCP clients use "
                                      f"{methods}", keep_alive=request.keep_alive,
                                      headers=[("Allow", methods)])
        self.writer.write(response[:response.index(b"\r\n\r\n") + 4])
        if not request.keep_alive:
            self._close_transport()

    def write(self, data: bytes) -> None:
        """Part of the HTTP response in progress (the exchange's writer)."""
        if self.writer is not None:
            self.writer.write(data)

    def exchange_finished(self, exchange: Exchange, data: bytes, keep_alive: bool) -> None:
        """The response to the current request is complete: write its last bytes and
        go on with the next request."""
        if data and self.writer is not None:
            self.writer.write_now(data)
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
                self.resume(PAUSED_BY_PIPELINE)
        if self.exchange is None and self.ws is None and self._phase == IDLE:
            self._set_deadline(self._loop.time()
                               + self.limits.keepalive_timeout)
        if self._phase == BODY:
            self._continue_if_due()  # asked for while this exchange was answered

    def _http_error(self, request: HttpRequest, status: int, detail: str,
                    headers: list[tuple[str, str]] | None = None) -> None:
        assert self.writer is not None
        self.writer.write(error_response(status, detail, keep_alive=request.keep_alive,
                                         headers=headers))
        if not request.keep_alive:
            self._close_transport()

    def _reply_and_close(self, data: bytes) -> None:
        """Answer an error and close with a lingering close (nginx's lingering_close):
        the write side is shut and what the client still sends is read and dropped for
        a moment, because closing a socket with unread input sends an RST that can
        destroy the answer before the client reads it (RFC 9112 9.6)."""
        assert self.writer is not None
        self.writer.write(data)
        self.writer.flush()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.reader = None  # data_received drops what follows
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(
            LINGER_TIMEOUT, self._close_transport)
        if transport.can_write_eof():
            transport.write_eof()
        else:
            self._close_transport()

    # -- WebSocket ---------------------------------------------------------------------
    def _websocket_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        pings = ws.pings_received
        ws.receive_data(data)
        session = self.session
        events = self.this_turn(ws.events_received())
        self._handle_events(events)
        if ws.pings_received != pings and session is not None:
            # A client that only pings is there all the same: not idle.
            session.last_activity = time.monotonic()
        if ws.buffered or self._deadline is not None:
            self.watch_partial(ws.buffered, bool(events))
        self._flush_frames()

    def _next_turn(self) -> None:
        session = self.session
        events = self.next_share(self.ws is not None and self.transport is not None and
                                 not self.transport.is_closing() and
                                 (session is None or not session.closed))
        if events is not None:
            self._handle_events(events)
            self._flush_frames()

    def _handle_events(self, events: list[Event]) -> None:
        ws = self.ws
        assert ws is not None
        session = self.session
        handle = self.core.handle
        for event in events:
            if type(event) is TextMessage:
                handle(session, event.data)  # type: ignore[arg-type]
            elif type(event) is Closed:
                if session is not None:
                    self.core.close_session(session)
            else:
                # A protocol error (Failed), or a binary message, which MCP does not use:
                # read nothing more, answer what came before it, then close (RFC 6455
                # 7.1.7; _flush_frames sends the close frame once nothing is in flight).
                if type(event) is BinaryMessage:
                    ws.fail(1003, "MCP messages are JSON text; binary frames are not accepted")
                elif event.code == 1009:  # type: ignore[union-attr]
                    self.core.counters.oversized += 1  # over listen.max_message_bytes
                if session is not None and session.owes_answers:
                    self.pause(PAUSED_BY_FAILURE)
                    self._loop.call_later(ANSWER_TIMEOUT,
                                                          self._answers_overdue)
                self._backlog = None  # nothing after the failure is read
                break

    def _flush_frames(self) -> None:
        ws = self.ws
        writer = self.writer
        assert ws is not None and writer is not None
        if ws.state is FAILING and self._backlog is None and \
                (self.session is None or not self.session.owes_answers):
            # Every message before the failure is handled (none waits for its turn)
            # and every answer owed is written: now the close frame.
            ws.close()
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
            elif ws.state is FAILING and ws.send_text(data):
                # An answer owed from before a protocol error. Whether it was the last
                # one is known once every message of the read that failed is handled.
                self._loop.call_soon(self._flush_frames)

    def _answers_overdue(self) -> None:
        """The requests received before a protocol error were not all answered in time:
        answer the rest with an error, then send the close frame."""
        ws = self.ws
        if ws is None or ws.state is not FAILING:
            return
        session = self.session
        if session is not None:
            for client_id in list(session.inflight):
                self.core.send_error(
                    session, client_id, REQUEST_TIMEOUT,
                    f"not answered within {ANSWER_TIMEOUT:g} s of a WebSocket protocol "
                    "error, after which the connection closes")
            self.core.close_session(session)
        ws.close()
        self._flush_frames()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (the session's close)."""
        if self.ws is None:
            self._close_transport()
            return
        if self.ws.close(code, reason):
            self._flush_frames()
            if self.transport is not None and not self.transport.is_closing():
                self._abort_later()

    def _abort_later(self) -> None:
        """After our close frame: the peer's must come within CLOSE_TIMEOUT."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(
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
