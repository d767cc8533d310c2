"""The Streamable HTTP transport's sessions, one per era: a legacy session
(``HttpSession``, 2025-11-25) with its SSE streams and their replay buffers (``Stream``),
and a modern request (``ModernRequest``, 2026-07-28) that lives as long as its HTTP
response. Each is a core session on the gateway's side; its ``send`` routes every
message the gateway writes to the right stream or response here.

They reach the endpoint that owns them through ``EndpointSide``, which
``streamable.Endpoint`` implements.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from ..config import HttpConfig
from ..protocol import jsonrpc, modern, sse
from .exchange import Exchange, _accepts, _prefers_sse
from .http_checks import cancelled_id
from .ports import ClientSession, Dispatcher, Identity

log = logging.getLogger("mcpfast.http")

SESSION_HEADER = "Mcp-Session-Id"
SESSION_FIELD = SESSION_HEADER.lower()
PRIMING_SINCE = "2025-11-25"  # older clients cannot parse an event with empty data
MAX_UNDELIVERED = 1000


class EndpointSide(Protocol):
    """What a session reads of the endpoint that owns it."""

    core: Dispatcher
    config: HttpConfig
    live: set[Any]
    live_modern: set[Any]

    def arm(self) -> None: ...

    def register(self, session: HttpSession) -> str: ...

    def unregister(self, session: HttpSession) -> None: ...


class _OutParams(msgspec.Struct, gc=False):
    progressToken: int | str | UnsetType = UNSET  # noqa: N815 - the wire name


class _Out(msgspec.Struct, gc=False):
    """What routing reads of a message going to a client."""

    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: _OutParams | UnsetType = UNSET
    error: msgspec.Raw | UnsetType = UNSET


_out = msgspec.json.Decoder(_Out)
_any = msgspec.json.Decoder()


class Stream:
    """One SSE stream of a legacy session: a POST's answer or the standalone GET stream.
    It outlives its HTTP connection (for resumption) and numbers its events.

    A POST's stream gets its id and replay buffer, and joins the session's ``streams``,
    only with its first event (``numbered``): most POSTs are answered as plain JSON,
    and need neither."""

    __slots__ = ("buffer", "committed", "delivered", "detached_at", "done", "exchange", "id",
                 "request_id", "session", "token")

    def __init__(self, session: HttpSession, request_id: Any, exchange: Exchange | None,
                 token: Any = None) -> None:
        self.session = session
        self.request_id = request_id
        self.exchange = exchange
        self.token = token
        """The request's progress token (None: none), which its progress is routed by."""
        self.id: str | None = None
        self.buffer: sse.ReplayBuffer | None = None
        self.committed = False
        self.done = False
        self.delivered = 0
        self.detached_at: float | None = None
        if exchange is not None:
            exchange.watch(self.lost)

    @property
    def is_post(self) -> bool:
        return self.request_id is not None

    def numbered(self) -> sse.ReplayBuffer:
        """The replay buffer, made with the stream's id when the first event needs them."""
        buffer = self.buffer
        if buffer is None:
            buffer = self.buffer = sse.ReplayBuffer(self.session.endpoint.config.replay_events)
            self.id = self.session.number(self)
        return buffer

    def push(self, data: bytes, final: bool = False, error: bool | None = None) -> None:
        """Send ``data`` on this stream; ``final`` for the response that ends it, with
        ``error`` saying whether that is an error (None: not known)."""
        exchange = self.exchange
        if not self.committed and exchange is not None and self.is_post:
            if final and not _prefers_sse(exchange.request.fields.get("accept")):
                # Nothing preceded the response: answer with plain JSON.
                self.done = True
                self.exchange = None
                if _is_error(data, error):
                    # A rate limit's refusal is 429 with Retry-After on every transport;
                    # other errors keep the legacy transport's 200.
                    status, extra = _error_status(data, _legacy_status)
                    exchange.json(status, data, [*self.session.headers(), *extra])
                else:
                    exchange.ok(data, self.session.head())
                self.session.forget(self)
                return
            self.commit()
        seq = self.numbered().add(data)
        if self.exchange is not None:
            self.exchange.send(sse.event(data, f"{self.id}_{seq}"))
            self.delivered = seq
        if final:
            self.done = True
            if self.exchange is not None:
                self.exchange.end()
                self.exchange = None
                self.session.forget(self)
            else:
                self.detached_at = time.monotonic()

    def commit(self) -> None:
        """Answer with an event stream from now on."""
        exchange = self.exchange
        assert exchange is not None
        buffer = self.numbered()
        self.committed = True
        exchange.start_stream(self.session.headers(), self.lost)
        self.session.endpoint.live.add(self)
        if (self.session.ds.protocol_version or "") >= PRIMING_SINCE:
            exchange.send(sse.priming(f"{self.id}_{buffer.next_seq - 1}",
                                      self.session.endpoint.config.sse_retry_ms))

    def attach(self, exchange: Exchange, after: int | None) -> bool:
        """Continue this stream on a new GET, from the event after ``after`` (or from
        the first one not yet delivered). False when events in between were dropped."""
        start = self.delivered if after is None else after
        buffer = self.numbered()
        backlog = buffer.after(start)
        if backlog is None:
            if after is not None and self.is_post:
                return False
            backlog = buffer.after(buffer.next_seq - 1 - buffer.capacity) or []
            log.warning("session %s: stream %s resumed with events missing",
                        self.session.token, self.id)
        self.exchange = exchange
        self.detached_at = None
        self.committed = True
        exchange.start_stream(self.session.headers(), self.lost)
        self.session.endpoint.live.add(self)
        if after is None and (self.session.ds.protocol_version or "") >= PRIMING_SINCE:
            exchange.send(sse.priming(f"{self.id}_{start}",
                                      self.session.endpoint.config.sse_retry_ms))
        for seq, data in backlog:
            exchange.send(sse.event(data, f"{self.id}_{seq}"))
            self.delivered = seq
        if self.done:
            self.exchange = None
            exchange.end()
            self.session.forget(self)
        return True

    def withdraw(self) -> None:
        """The client cancelled the request: its stream ends without a response (the
        receiver of a cancellation does not answer the request, basic/utilities/
        cancellation), as an event stream if nothing was sent on it yet."""
        if self.done:
            return
        exchange = self.exchange
        if exchange is not None and not self.committed:
            # No priming event: there is nothing to resume.
            self.committed = True
            exchange.start_stream(self.session.headers(), self.lost)
        self.done = True
        if exchange is not None:
            self.exchange = None
            exchange.end()
            self.session.endpoint.live.discard(self)
            self.session.forget(self)
        else:
            self.detached_at = time.monotonic()  # a resumption gets what was sent, then the end

    def lost(self) -> None:
        self.exchange = None
        self.session.endpoint.live.discard(self)
        if not self.committed and self.is_post:
            # The client left before anything was sent: there is no event id to resume
            # from, so the request is abandoned.
            self.session.cancel(self.request_id, "the HTTP client disconnected")
            self.session.forget(self)
            return
        self.detached_at = time.monotonic()

    def close(self, reason: str = "") -> None:
        """The session ended (``reason``): an event stream ends; a POST whose answer has
        not begun is answered 404, as a request naming the ended session is."""
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            if exchange.streaming:
                exchange.end()
            else:
                exchange.error(404, self.request_id, jsonrpc.INVALID_REQUEST,
                               _ended_before(reason, "the request"))
        self.session.endpoint.live.discard(self)


class HttpSession:
    """A legacy Streamable HTTP session: one MCP session across many HTTP requests."""

    batches: set[Exchange] | None = None
    """The POSTs of JSON-RPC batches waiting for their answers (made at the first)."""

    def __init__(self, endpoint: EndpointSide, peer: str, address: str,
                 identity: Identity | None = None) -> None:
        self.endpoint = endpoint
        self.address = address
        """The client's IP address, which limits.max_sessions_per_peer counts by."""
        self.issued_at = 0
        """When the session id was issued (seconds since the epoch)."""
        self.token: str | None = None
        self.ds: ClientSession = endpoint.core.open_session(
            "http", peer, self.send, self.close,
            identity=_of_peer(identity, address), answer=self.answer)
        self.ds.era = "legacy"
        self.streams: dict[str, Stream] = {}
        self.by_request: dict[Any, Stream] = {}
        self.by_token: dict[Any, Stream] = {}
        self.standalone: Stream | None = None
        self._next_stream = 0
        self._head: bytes | None = None
        self.closed = False

    def headers(self) -> list[tuple[str, str]]:
        """The session's own response headers: its id, issued once it is initialized."""
        if self.token is None and self.ds.initialized:
            self.token = self.endpoint.register(self)
        return [(SESSION_HEADER, self.token)] if self.token else []

    def head(self) -> bytes:
        """``headers()`` as encoded header lines, made once."""
        head = self._head
        if head is None:
            head = b"".join(f"{name}: {value}\r\n".encode("latin-1")
                            for name, value in self.headers())
            if self.token is not None:
                self._head = head
        return head

    def new_stream(self, request_id: Any, exchange: Exchange | None, token: Any = None
                   ) -> Stream:
        """A POST's stream (``request_id``, with its progress ``token`` if it has one),
        or, with no request id, one numbered at once, like the standalone GET stream."""
        stream = Stream(self, request_id, exchange, token)
        if request_id is None:
            stream.numbered()
        else:
            self.by_request[request_id] = stream
            if token is not None:
                self.by_token[token] = stream
        return stream

    def number(self, stream: Stream) -> str:
        """A new stream id, unique in the session, under which ``stream`` is kept."""
        self._next_stream += 1
        stream_id = str(self._next_stream)
        self.streams[stream_id] = stream
        return stream_id

    def forget(self, stream: Stream) -> None:
        if stream.id is not None:
            # Only a numbered stream is kept by id, or can be live (it sent an event).
            self.streams.pop(stream.id, None)
            self.endpoint.live.discard(stream)
        if self.by_request.get(stream.request_id) is stream:
            del self.by_request[stream.request_id]
        if stream.token is not None and self.by_token.get(stream.token) is stream:
            del self.by_token[stream.token]

    def _every_stream(self) -> list[Stream]:
        """The numbered streams, then the POSTs that have sent nothing yet."""
        return [*self.streams.values(),
                *(stream for stream in self.by_request.values() if stream.id is None)]

    def answer(self, request_id: Any, data: bytes, error: bool | None) -> None:
        """The response to ``request_id``: it ends that request's stream."""
        stream = self.by_request.get(request_id)
        if stream is None or stream.done:
            log.debug("session %s: no stream waits for response %r", self.token, request_id)
            return
        stream.push(data, True, error)

    def send(self, data: bytes) -> None:
        """Route one message from the gateway to the stream it belongs on (responses
        come to ``answer``)."""
        try:
            out = _out.decode(data)
        except msgspec.DecodeError:
            log.warning("session %s: dropping an unreadable outgoing message", self.token)
            return
        if out.method is UNSET:
            self.answer(out.id, data, out.error is not UNSET)
            return
        target: Stream | None = None
        method = out.method
        if method == "notifications/progress" and out.params is not UNSET:
            target = self.by_token.get(out.params.progressToken)
        elif not method.endswith("list_changed") and method != "notifications/resources/updated":
            # Requests and log messages relate to work in flight (the gateway sends them
            # to the one session with a request upstream): the newest open POST stream.
            for stream in reversed(self.by_request.values()):
                if not stream.done:
                    target = stream
                    break
        if target is None:
            target = self.standalone
            if target is None:
                target = self.standalone = self.new_stream(None, None)
            if target.exchange is None and target.numbered().next_seq - target.delivered \
                    > MAX_UNDELIVERED:
                log.warning("session %s: no GET stream reads %s; dropped", self.token, method)
                return
        target.push(data)

    def cancelled_stream(self, env: jsonrpc.Envelope) -> Stream | None:
        """The open stream of the request a ``notifications/cancelled`` names, while
        that request is in flight (``Stream.withdraw`` ends it once the core has let the
        request go)."""
        return self.stream_in_flight(cancelled_id(env))

    def stream_in_flight(self, request_id: Any) -> Stream | None:
        """The open POST stream of ``request_id``, while that request is in flight."""
        if request_id is None or request_id not in self.ds.inflight:
            return None
        stream = self.by_request.get(request_id)
        return stream if stream is not None and not stream.done else None

    def cancel(self, request_id: Any, reason: str) -> None:
        if request_id in self.ds.inflight:
            self.endpoint.core.handle(self.ds, jsonrpc.notification(
                "notifications/cancelled", {"requestId": request_id, "reason": reason}))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session (DELETE, expiry, shutdown): its streams end, its work is
        cancelled, and its id is refused from now on."""
        if self.closed:
            return
        self.closed = True
        for stream in self._every_stream():
            stream.close(reason)
        for exchange in list(self.batches or ()):
            exchange.error(404, None, jsonrpc.INVALID_REQUEST,
                           _ended_before(reason, "the batch"))
        self.streams.clear()
        self.by_request.clear()
        self.by_token.clear()
        self.endpoint.unregister(self)
        self.endpoint.core.close_session(self.ds)

    def sweep(self, now: float, keepalive: bool) -> None:
        attached = False
        limit = self.endpoint.config.replay_seconds
        for stream in self._every_stream():
            if stream.exchange is not None:
                attached = True
                if keepalive:
                    if not stream.committed:
                        # A POST still waiting to answer as plain JSON has sent nothing,
                        # not even its status line: a comment now would corrupt the
                        # response. A call that outlasts the keep-alive interval is
                        # answered as an event stream instead (the client accepted
                        # text/event-stream), so that proxies see bytes flow.
                        stream.commit()
                    if stream.exchange is not None:
                        stream.exchange.send(sse.KEEPALIVE)
            elif stream.detached_at is not None and now - stream.detached_at > limit:
                if stream.is_post and not stream.done:
                    self.cancel(stream.request_id, "the SSE stream was not resumed in time")
                if stream is self.standalone:
                    continue
                self.forget(stream)
        if attached:
            # A client holding a stream open is not idle.
            self.ds.last_activity = now


# -- modern requests ----------------------------------------------------------------------
class ModernRequest:
    """One modern request: its own gateway session, answered as JSON or, once anything
    precedes the response, as a request-scoped SSE stream."""

    __slots__ = ("ds", "endpoint", "exchange", "request_id", "streaming")

    def __init__(self, endpoint: EndpointSide, exchange: Exchange, request_id: Any, peer: str,
                 address: str, identity: Identity | None = None) -> None:
        self.endpoint = endpoint
        self.exchange: Exchange | None = exchange
        self.request_id = request_id
        self.streaming = False
        self.ds = endpoint.core.open_session("http", peer, self.send, self.close,
                                             identity=_of_peer(identity, address),
                                             answer=self.answer)
        self.ds.era = "modern"
        exchange.watch(self.lost)

    def send(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        try:
            out = _out.decode(data)
        except msgspec.DecodeError:
            return
        if out.method is UNSET:
            self.answer(out.id, data, out.error is not UNSET)
            return
        if out.id is not UNSET:
            # The modern transport carries no server-to-client requests (2026-07-28).
            log.warning("dropping %s: modern HTTP responses carry no requests", out.method)
            return
        if not self.streaming:
            if not _accepts(exchange.request.fields.get("accept"), "text/event-stream"):
                # A client that takes JSON alone gets the response alone: what would
                # precede it (progress, log messages) has no stream to go on.
                return
            self.streaming = True
            exchange.start_stream([], self.lost)
            self.endpoint.live_modern.add(self)
            self.endpoint.arm()
        exchange.send(sse.event(data))

    def answer(self, request_id: Any, data: bytes, error: bool | None) -> None:
        """The response, which ends the exchange: plain JSON unless a stream began
        (or the client prefers one)."""
        exchange = self.exchange
        if exchange is None or request_id != self.request_id:
            return
        self.exchange = None
        if not self.streaming and _prefers_sse(exchange.request.fields.get("accept")):
            self.streaming = True
            exchange.start_stream([], self.lost)
        if self.streaming:
            exchange.send(sse.event(data))
            exchange.end()
        elif _is_error(data, error):
            status, headers = _error_status(data, modern.http_status_for)
            exchange.json(status, data, headers)
        else:
            exchange.ok(data)
        self._finish()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The gateway ends the exchange (shutdown, or the end of a listen stream)."""
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            if self.streaming:
                exchange.end()
            else:
                exchange.error(503, self.request_id, jsonrpc.GATEWAY_SHUTTING_DOWN, reason
                               or "the gateway ended the request")
        self._finish()

    def lost(self) -> None:
        """The client closed the response stream: that cancels the request."""
        self.exchange = None
        self._finish()

    def _finish(self) -> None:
        self.endpoint.live_modern.discard(self)
        self.endpoint.core.close_session(self.ds)


# -- error statuses ----------------------------------------------------------------------


class _ErrorData(msgspec.Struct, gc=False):
    retryAfterSeconds: float | None = None  # noqa: N815 - the wire name


class _ErrorHead(msgspec.Struct, gc=False):
    code: int = 0
    data: _ErrorData | None = None


class _ResponseError(msgspec.Struct, gc=False):
    error: _ErrorHead | None = None


_response_error = msgspec.json.Decoder(_ResponseError)


def _is_error(response: bytes, error: bool | None) -> bool:
    """Whether a response is an error: as the core said, or, when it could not say
    without reading it, as its bytes suggest (``_error_status`` then reads it)."""
    return error if error is not None else b'"error"' in response


def _of_peer(identity: Identity | None, address: str) -> Identity:
    """A session's identity: the verified one as seen from ``address``, or the
    address alone."""
    if identity is None:
        return Identity(f"ip:{address}", address)
    return identity.with_peer(address)


def _legacy_status(code: int) -> int:
    return 429 if code == jsonrpc.RATE_LIMITED else 200


def _error_status(response: bytes, status_for: Callable[[int], int]
                  ) -> tuple[int, list[tuple[str, str]]]:
    """The HTTP status of a JSON-RPC response (200 unless it is an error that maps to
    another), with ``Retry-After`` for a 429."""
    try:
        head = _response_error.decode(response).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 200, []
    if head is None:
        return 200, []
    status = status_for(head.code)
    if status != 429:
        return status, []
    wait = head.data.retryAfterSeconds if head.data is not None else None
    return status, [("Retry-After", str(max(1, math.ceil(wait or 1))))]


def _ended_before(reason: str, what: str) -> str:
    """The 404 of a POST whose session ended (``reason``) before ``what`` was answered."""
    return f"Session not found: it ended ({reason or 'closed'}) before {what} was answered"
