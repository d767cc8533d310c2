"""Streamable HTTP on the main listener: both MCP eras on one endpoint.

The era is chosen per HTTP request (MCP 2026-07-28 basic/transports "Earlier Streamable
HTTP Revisions"): an ``MCP-Protocol-Version`` header naming a version newer than the
legacy ones makes a modern, stateless request; anything else is the legacy transport of
2025-11-25, with sessions, a GET stream and resumption.

The gateway core sees neither: a legacy session is a core session whose ``send`` routes
each message to the right SSE stream here, and a modern request is a core session of its
own that lives as long as its HTTP response. The core is reached only through
``ports.Dispatcher``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from ..config import is_loopback
from ..protocol import jsonrpc, modern, sse
from ..protocol.http import HttpRequest, format_response
from ..protocol.mcp import LEGACY_VERSIONS
from ..protocol.session_ids import SessionSigner
from .ports import ClientSession, Dispatcher

log = logging.getLogger("mcpfast.http")

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
DEFAULT_LEGACY_VERSION = "2025-03-26"  # no header and no other way to know (transports)
PRIMING_SINCE = "2025-11-25"  # older clients cannot parse an event with empty data
MAX_ENDED = 100_000
MAX_UNDELIVERED = 1000
LEGACY_ALLOW = "GET, POST, DELETE"


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


@functools.lru_cache(maxsize=256)
def _media_types(value: str | None) -> tuple[str, ...]:
    """The media types an Accept or Content-Type value lists, in order. Cached: clients
    send the same few values on every request."""
    if not value:
        return ()
    return tuple(part.split(";", 1)[0].strip().lower() for part in value.split(","))


@functools.lru_cache(maxsize=256)
def _accepts(value: str | None, wanted: str) -> bool:
    types = _media_types(value)
    major = wanted.split("/", 1)[0]
    return wanted in types or "*/*" in types or f"{major}/*" in types


@functools.lru_cache(maxsize=256)
def _prefers_sse(value: str | None) -> bool:
    """Whether the client lists text/event-stream before application/json in Accept:
    then it is answered with a stream even when nothing precedes the response."""
    types = _media_types(value)
    try:
        return types.index("text/event-stream") < types.index("application/json")
    except ValueError:
        return False


class _AllowList:
    """Glob patterns (``*`` matches anything) with the verdicts for values already seen:
    each request is checked against a dict, not a list of patterns."""

    def __init__(self, patterns: list[str]) -> None:
        # Only ``*`` is a wildcard: fnmatch would read the brackets of ``[::1]`` as a
        # character class and let ``:`` or ``1`` through.
        self._regex = re.compile("|".join(
            f"(?:{re.escape(p).replace(re.escape('*'), '.*')})\\Z" for p in patterns)
            or r"(?!)", re.S)
        self._seen: dict[str, bool] = {}

    def __contains__(self, value: str) -> bool:
        verdict = self._seen.get(value)
        if verdict is None:
            verdict = self._regex.match(value) is not None
            if len(self._seen) < 1024:
                self._seen[value] = verdict
        return verdict


def _json_error(status: int, request_id: Any, code: int, message: str, *,
                keep_alive: bool, headers: list[tuple[str, str]] | None = None,
                data: Any = UNSET) -> bytes:
    body = jsonrpc.error_response(request_id, code, message, data)
    return format_response(status, [("Content-Type", "application/json"), *(headers or ())],
                           body, keep_alive=keep_alive)


class Exchange:
    """One HTTP request and its response, on one connection. The connection hands the
    next request over only when this one is ``done``."""

    __slots__ = ("_conn", "_on_lost", "chunked", "done", "keep_alive", "request", "streaming")

    def __init__(self, conn: Any, request: HttpRequest) -> None:
        self._conn = conn
        self.request = request
        self.keep_alive = request.keep_alive
        self.chunked = request.version != "1.0"
        self.done = False
        self.streaming = False
        self._on_lost: Callable[[], None] | None = None

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call ``on_lost`` if the client goes away before the response is complete."""
        self._on_lost = on_lost

    def respond(self, data: bytes) -> None:
        """A whole response (built with ``format_response``)."""
        if self.done:
            return
        self.done = True
        self._on_lost = None
        self._conn.exchange_finished(self, data, self.keep_alive)

    def json(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
             ) -> None:
        self.respond(format_response(status, [("Content-Type", "application/json"),
                                              *(headers or ())],
                                     body, keep_alive=self.keep_alive))

    def error(self, status: int, request_id: Any, code: int, message: str,
              headers: list[tuple[str, str]] | None = None, data: Any = UNSET) -> None:
        self.respond(_json_error(status, request_id, code, message,
                                 keep_alive=self.keep_alive, headers=headers, data=data))

    def start_stream(self, headers: list[tuple[str, str]], on_lost: Callable[[], None]) -> None:
        """Send the head of a 200 ``text/event-stream`` response whose body follows."""
        lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in sse.SSE_HEADERS),
                 *(f"{k}: {v}" for k, v in headers)]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            self.keep_alive = False
            lines.append("Connection: close")
        self.streaming = True
        self._on_lost = on_lost
        self._conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        if not self.done:
            self._conn.write(sse.chunk(data) if self.chunked else data)

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        self._on_lost = None
        self._conn.exchange_finished(self, sse.LAST_CHUNK if self.chunked else b"",
                                     self.keep_alive)

    def lost(self) -> None:
        """The connection went away before the response was complete."""
        if self.done:
            return
        self.done = True
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()


# -- legacy sessions ----------------------------------------------------------------------
class Stream:
    """One SSE stream of a legacy session: a POST's answer or the standalone GET stream.
    It outlives its HTTP connection (for resumption) and numbers its events."""

    __slots__ = ("buffer", "committed", "delivered", "detached_at", "done", "exchange", "id",
                 "request_id", "session")

    def __init__(self, session: HttpSession, stream_id: str, request_id: Any,
                 exchange: Exchange | None, capacity: int) -> None:
        self.session = session
        self.id = stream_id
        self.request_id = request_id
        self.exchange = exchange
        self.buffer = sse.ReplayBuffer(capacity)
        self.committed = False
        self.done = False
        self.delivered = 0
        self.detached_at: float | None = None
        if exchange is not None:
            exchange.watch(self.lost)

    @property
    def is_post(self) -> bool:
        return self.request_id is not None

    def push(self, data: bytes, final: bool = False) -> None:
        exchange = self.exchange
        if not self.committed and exchange is not None and self.is_post:
            if final and not _prefers_sse(exchange.request.header("Accept")):
                # Nothing preceded the response: answer with plain JSON.
                self.done = True
                self.exchange = None
                status, headers = 200, self.session.headers()
                if b'"error"' in data:
                    # A rate limit's refusal is 429 with Retry-After on every transport;
                    # other errors keep the legacy transport's 200.
                    status, extra = _error_status(data, _legacy_status)
                    headers = [*headers, *extra]
                exchange.json(status, data, headers)
                self.session.forget(self)
                return
            self.commit()
        seq = self.buffer.add(data)
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
        self.committed = True
        exchange.start_stream(self.session.headers(), self.lost)
        self.session.endpoint.live.add(self)
        if (self.session.ds.protocol_version or "") >= PRIMING_SINCE:
            exchange.send(sse.priming(f"{self.id}_{self.buffer.next_seq - 1}",
                                      self.session.endpoint.config.sse_retry_ms))

    def attach(self, exchange: Exchange, after: int | None) -> bool:
        """Continue this stream on a new GET, from the event after ``after`` (or from
        the first one not yet delivered). False when events in between were dropped."""
        start = self.delivered if after is None else after
        backlog = self.buffer.after(start)
        if backlog is None:
            if after is not None and self.is_post:
                return False
            backlog = self.buffer.after(self.buffer.next_seq - 1 - self.buffer.capacity) or []
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

    def close(self) -> None:
        if self.exchange is not None:
            exchange, self.exchange = self.exchange, None
            exchange.end()
        self.session.endpoint.live.discard(self)


class HttpSession:
    """A legacy Streamable HTTP session: one MCP session across many HTTP requests."""

    def __init__(self, endpoint: Endpoint, peer: str, address: str) -> None:
        self.endpoint = endpoint
        self.address = address
        """The client's IP address, which limits.max_sessions_per_peer counts by."""
        self.issued_at = 0
        """When the session id was issued (seconds since the epoch)."""
        self.token: str | None = None
        self.ds: ClientSession = endpoint.core.open_session(
            "http", peer, self.send, self.close, identity=f"ip:{address}")
        _set_era(self.ds, "legacy")
        self.streams: dict[str, Stream] = {}
        self.by_request: dict[Any, Stream] = {}
        self.by_token: dict[Any, Stream] = {}
        self.standalone: Stream | None = None
        self._next_stream = 0
        self.closed = False

    def headers(self) -> list[tuple[str, str]]:
        if self.token is None and self.ds.initialized:
            self.token = self.endpoint.register(self)
        return [(SESSION_HEADER, self.token)] if self.token else []

    def new_stream(self, request_id: Any, exchange: Exchange | None) -> Stream:
        self._next_stream += 1
        stream = Stream(self, str(self._next_stream), request_id, exchange,
                        self.endpoint.config.replay_events)
        self.streams[stream.id] = stream
        if request_id is not None:
            self.by_request[request_id] = stream
        return stream

    def forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        if self.by_request.get(stream.request_id) is stream:
            del self.by_request[stream.request_id]
        if self.by_token:
            for token in [t for t, s in self.by_token.items() if s is stream]:
                del self.by_token[token]
        self.endpoint.live.discard(stream)

    def send(self, data: bytes) -> None:
        """Route one message from the gateway to the stream it belongs on."""
        try:
            out = _out.decode(data)
        except msgspec.DecodeError:
            log.warning("session %s: dropping an unreadable outgoing message", self.token)
            return
        if out.method is UNSET:
            stream = self.by_request.get(out.id)
            if stream is None or stream.done:
                log.debug("session %s: no stream waits for response %r", self.token, out.id)
                return
            stream.push(data, final=True)
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
            if target.exchange is None and target.buffer.next_seq - target.delivered \
                    > MAX_UNDELIVERED:
                log.warning("session %s: no GET stream reads %s; dropped", self.token, method)
                return
        target.push(data)

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
        for stream in list(self.streams.values()):
            stream.close()
        self.streams.clear()
        self.by_request.clear()
        self.by_token.clear()
        self.endpoint.unregister(self)
        self.endpoint.core.close_session(self.ds)

    def sweep(self, now: float, keepalive: bool) -> None:
        attached = False
        limit = self.endpoint.config.replay_seconds
        for stream in list(self.streams.values()):
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

    def __init__(self, endpoint: Endpoint, exchange: Exchange, request_id: Any, peer: str,
                 address: str) -> None:
        self.endpoint = endpoint
        self.exchange: Exchange | None = exchange
        self.request_id = request_id
        self.streaming = False
        self.ds = endpoint.core.open_session("http", peer, self.send, self.close,
                                                identity=f"ip:{address}")
        _set_era(self.ds, "modern")
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
            if out.id != self.request_id:
                return
            self.exchange = None
            if not self.streaming and _prefers_sse(exchange.request.header("Accept")):
                self.streaming = True
                exchange.start_stream([], self.lost)
            if self.streaming:
                exchange.send(sse.event(data))
                exchange.end()
            else:
                status, headers = 200, None
                if out.error is not UNSET:
                    status, headers = _error_status(out.error, modern.http_status_for)
                exchange.json(status, data, headers)
            self._finish()
            return
        if out.id is not UNSET:
            # The modern transport carries no server-to-client requests (2026-07-28).
            log.warning("dropping %s: modern HTTP responses carry no requests", out.method)
            return
        if not self.streaming:
            self.streaming = True
            exchange.start_stream([], self.lost)
            self.endpoint.live_modern.add(self)
            self.endpoint.arm()
        exchange.send(sse.event(data))

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


# -- the endpoint -------------------------------------------------------------------------
class Endpoint:
    """The MCP endpoint's HTTP side, shared by every connection of a listener."""

    def __init__(self, core: Dispatcher) -> None:
        self.core = core
        listen = core.config.listen
        self.config = listen.http
        self.signer = SessionSigner(self.config.session_secret)
        self.sessions: dict[str, HttpSession] = {}
        self.per_address: dict[str, int] = {}
        self.ended: OrderedDict[str, int] = OrderedDict()
        """Ids of sessions ended here, oldest first, with when each was issued."""
        self.not_before = int(time.time())
        """Ids issued earlier are not adopted (``_adoptable``)."""
        self.live: set[Stream] = set()
        self.live_modern: set[ModernRequest] = set()
        self._origins = _AllowList(self.config.allowed_origins)
        hosts = self.config.allowed_hosts
        if hosts is None and is_loopback(listen.host):
            bound = f"[{listen.host}]" if ":" in listen.host else listen.host
            hosts = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]",
                     "[::1]:*", bound, f"{bound}:*"]
        self._hosts = _AllowList([h.lower() for h in hosts]) if hosts is not None else None
        self._schemas: tuple[object, dict[Any, Any]] = (None, {})
        self._timer: asyncio.TimerHandle | None = None
        self._ticks = 0

    # -- bookkeeping ---------------------------------------------------------------------
    def register(self, session: HttpSession) -> str:
        token = self.signer.issue(session.ds.protocol_version or DEFAULT_LEGACY_VERSION,
                                  session.ds.client_capabilities)
        session.token = token
        session.issued_at = int(time.time())
        self._add(session)
        return token

    def _add(self, session: HttpSession) -> None:
        assert session.token is not None
        self.sessions[session.token] = session
        self.per_address[session.address] = self.per_address.get(session.address, 0) + 1
        self.arm()

    def unregister(self, session: HttpSession) -> None:
        if session.token is not None and self.sessions.pop(session.token, None) is session:
            count = self.per_address.get(session.address, 0) - 1
            if count > 0:
                self.per_address[session.address] = count
            else:
                self.per_address.pop(session.address, None)
            self.ended[session.token] = session.issued_at
            while len(self.ended) > MAX_ENDED:
                # Forgetting a revocation must not revive its id: ids issued up to the
                # forgotten one's time are refused from now on.
                _, issued_at = self.ended.popitem(last=False)
                self.not_before = max(self.not_before, issued_at + 1)

    def arm(self) -> None:
        if self._timer is None:
            interval = min(1.0, self.config.sse_keepalive)
            self._timer = asyncio.get_running_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        interval = min(1.0, self.config.sse_keepalive)
        self._ticks += 1
        keepalive = self._ticks * interval >= self.config.sse_keepalive
        if keepalive:
            self._ticks = 0
            for request in list(self.live_modern):
                if request.exchange is not None and request.streaming:
                    request.exchange.send(sse.KEEPALIVE)
        now = time.monotonic()
        oldest = time.time() - self.config.session_max_age
        for session in list(self.sessions.values()):
            if session.issued_at <= oldest:
                log.info("ending HTTP session from %s: older than session_max_age",
                         session.address)
                session.close(1000, "session_max_age")
                continue
            session.sweep(now, keepalive)
        ended = self.ended
        while ended and next(iter(ended.values())) <= oldest:
            ended.popitem(last=False)  # refused by its age from now on
        if self.sessions or self.live_modern:
            self.arm()

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.close(1001, "gateway shutting down")
        for request in list(self.live_modern):
            request.close(1001, "the gateway is shutting down")

    # -- checks shared with the WebSocket handshake --------------------------------------
    def refuse(self, request: HttpRequest) -> tuple[int, str] | None:
        """Origin and Host checks (DNS rebinding): the status and reason to refuse with."""
        origin = request.header("Origin")
        if origin is not None and origin.strip() not in self._origins:
            return 403, f"Origin {origin.strip()!r} is not allowed"
        if self._hosts is not None:
            host = (request.header("Host") or "").strip().lower()
            if host not in self._hosts:
                return 421, f"Host {host!r} is not served here"
        return None

    # -- requests ------------------------------------------------------------------------
    def handle(self, conn: Any, request: HttpRequest) -> Exchange:
        exchange = Exchange(conn, request)
        try:
            self._handle(exchange, conn.peer, conn.address)
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            if not exchange.done and not exchange.streaming:
                exchange.error(500, None, jsonrpc.INTERNAL_ERROR, "Internal error")
        return exchange

    def _handle(self, exchange: Exchange, peer: str, address: str) -> None:
        request = exchange.request
        refused = self.refuse(request)
        if refused is not None:
            exchange.error(refused[0], None, jsonrpc.INVALID_REQUEST, refused[1])
            return
        if request.header_count(VERSION_HEADER) > 1:
            exchange.error(400, None, modern.HEADER_MISMATCH,
                           f"Header mismatch: repeated {VERSION_HEADER} header")
            return
        version = request.header(VERSION_HEADER)
        version = version.strip() if version is not None else None
        if version is not None and version not in LEGACY_VERSIONS:
            self._modern(exchange, peer, address, version)
        else:
            self._legacy(exchange, peer, address)

    def _draining(self, exchange: Exchange) -> bool:
        """Refuse new work while the gateway drains or is overloaded (503)."""
        if self.core.draining:
            exchange.error(503, None, jsonrpc.GATEWAY_SHUTTING_DOWN,
                           "the gateway is shutting down", [("Retry-After", "1")])
            return True
        if self.core.overloaded:
            self.core.counters.refused_overloaded += 1
            exchange.error(503, None, jsonrpc.UPSTREAM_UNAVAILABLE,
                           "the gateway is overloaded (too much data waits to be sent); "
                           "retry shortly", [("Retry-After", "1")])
            return True
        return False

    def _body(self, exchange: Exchange, *, modern_era: bool) -> jsonrpc.Envelope | None:
        """Content negotiation and parsing common to both eras' POST."""
        request = exchange.request
        accept = request.header("Accept")
        if not _accepts(accept, "application/json") or (
                not modern_era and not _accepts(accept, "text/event-stream")):
            wanted = ("application/json" if modern_era
                      else "both application/json and text/event-stream")
            exchange.error(406, None, jsonrpc.INVALID_REQUEST,
                           f"Not Acceptable: the client must accept {wanted}")
            return None
        if "application/json" not in _media_types(request.header("Content-Type")):
            exchange.error(415, None, jsonrpc.INVALID_REQUEST,
                           "Unsupported Media Type: the body must be application/json")
            return None
        try:
            return jsonrpc.decode(request.body, self.core.config.listen.max_json_depth)
        except jsonrpc.MessageError as exc:
            self.core.counters.parse_errors += 1
            exchange.error(400, exc.request_id, exc.code, exc.message)
            return None

    # -- legacy ----------------------------------------------------------------------------
    def _legacy(self, exchange: Exchange, peer: str, address: str) -> None:
        request = exchange.request
        method = request.method
        if method not in ("POST", "GET", "DELETE"):
            exchange.error(405, None, jsonrpc.INVALID_REQUEST,
                           f"Method Not Allowed: {method}", [("Allow", LEGACY_ALLOW)])
            return
        if method == "POST":
            if self._draining(exchange):
                return
            env = self._body(exchange, modern_era=False)
            if env is None:
                return
            if env.method == "initialize" and env.id is not UNSET:
                self._initialize(exchange, peer, address, env)
                return
        elif method == "GET" and not _accepts(request.header("Accept"), "text/event-stream"):
            exchange.error(406, None, jsonrpc.INVALID_REQUEST,
                           "Not Acceptable: the client must accept text/event-stream")
            return
        session = self._session(exchange, peer, address)
        if session is None:
            return
        if method == "DELETE":
            session.close(1000, "session deleted by the client")
            exchange.respond(format_response(200, [], keep_alive=exchange.keep_alive))
        elif method == "GET":
            self._get(exchange, session)
        else:
            self._post(exchange, session, env)

    def _session(self, exchange: Exchange, peer: str, address: str) -> HttpSession | None:
        token = exchange.request.header(SESSION_HEADER)
        if token is None:
            exchange.error(400, None, jsonrpc.INVALID_REQUEST,
                           f"Bad Request: the {SESSION_HEADER} header is required "
                           "(initialize first)")
            return None
        token = token.strip()
        session = self.sessions.get(token)
        if session is not None:
            return session
        claims = None if token in self.ended else self.signer.verify(token)
        if claims is None or not self._adoptable(claims.issued_at):
            exchange.error(404, None, jsonrpc.INVALID_REQUEST,
                           "Session not found: it ended or expired; initialize again")
            return None
        if self._full(exchange, None, address):
            return None
        # Signed by a replica sharing our key: serve it as if we had issued it.
        session = HttpSession(self, peer, address)
        session.ds.initialized = True
        session.ds.protocol_version = claims.protocol_version
        session.ds.client_capabilities = dict(claims.capabilities)
        session.token = token
        session.issued_at = claims.issued_at
        self._add(session)
        log.debug("adopted an HTTP session signed by another replica (%s)",
                  claims.protocol_version)
        return session

    def _adoptable(self, issued_at: int) -> bool:
        """Whether an id this process did not issue (or no longer holds) may be served:
        issued since this process started, since no revocation it had to forget is
        older, and within session_max_age. Ended ids are remembered only here, so an
        id from before a restart is refused: its client initializes again (a 404 tells
        it to), which is safer than reviving a deleted session."""
        return issued_at >= self.not_before and \
            time.time() - issued_at < self.config.session_max_age

    def _full(self, exchange: Exchange, request_id: Any, address: str) -> bool:
        """Refuse a new session when the gateway, or this client's address, has too
        many: one client cannot lock every other out."""
        if len(self.sessions) >= self.config.max_sessions:
            self.core.counters.refused_sessions += 1
            exchange.error(503, request_id, jsonrpc.INVALID_REQUEST, "too many sessions",
                           [("Retry-After", "1")])
            return True
        per_peer = self.config.max_sessions_per_peer or max(1, self.config.max_sessions // 2)
        if self.per_address.get(address, 0) >= per_peer:
            self.core.counters.refused_sessions_per_peer += 1
            exchange.error(429, request_id, jsonrpc.INVALID_REQUEST,
                           f"Too Many Requests: {address} has {per_peer} sessions open; "
                           "end one (DELETE) first", [("Retry-After", "5")])
            return True
        return False

    def _initialize(self, exchange: Exchange, peer: str, address: str,
                    env: jsonrpc.Envelope) -> None:
        token = exchange.request.header(SESSION_HEADER)
        if token is not None and token.strip() in self.sessions:
            exchange.error(400, env.id, jsonrpc.INVALID_REQUEST,
                           "this session is already initialized")
            return
        if self._full(exchange, env.id, address):
            return
        session = HttpSession(self, peer, address)
        session.new_stream(env.id, exchange)
        self.core.handle(session.ds, exchange.request.body)
        if session.token is None:
            # initialize failed: no session was created.
            session.close()

    def _post(self, exchange: Exchange, session: HttpSession,
              env: jsonrpc.Envelope | None) -> None:
        assert env is not None
        body = exchange.request.body
        if env.method is UNSET or env.id is UNSET:
            # A notification, or the client's answer to a request the gateway relayed.
            self.core.handle(session.ds, body)
            exchange.respond(format_response(202, session.headers(),
                                             keep_alive=exchange.keep_alive))
            return
        stream = session.by_request.get(env.id)
        if stream is not None and not stream.done:
            exchange.error(400, env.id, jsonrpc.INVALID_REQUEST,
                           f"request id {env.id!r} is already in flight on this session")
            return
        stream = session.new_stream(env.id, exchange)
        token = _progress_token(env)
        if token is not None:
            session.by_token[token] = stream
        self.core.handle(session.ds, body)

    def _get(self, exchange: Exchange, session: HttpSession) -> None:
        last = exchange.request.header("Last-Event-ID")
        if last is not None and last.strip():
            parsed = sse.split_event_id(last)
            stream = session.streams.get(parsed[0]) if parsed else None
            if stream is None or parsed is None:
                exchange.error(400, None, jsonrpc.INVALID_REQUEST,
                               f"cannot resume: no stream has event {last.strip()!r}")
                return
            if stream.exchange is not None:
                exchange.error(409, None, jsonrpc.INVALID_REQUEST,
                               "Conflict: that stream is already being read")
                return
            if not stream.attach(exchange, parsed[1]):
                exchange.error(400, None, jsonrpc.INVALID_REQUEST,
                               f"cannot resume after {last.strip()!r}: events were dropped")
            return
        stream = session.standalone
        if stream is None:
            stream = session.standalone = session.new_stream(None, None)
        if stream.exchange is not None:
            exchange.error(409, None, jsonrpc.INVALID_REQUEST,
                           "Conflict: this session's GET stream is already open")
            return
        stream.attach(exchange, None)

    # -- modern ----------------------------------------------------------------------------
    def _modern(self, exchange: Exchange, peer: str, address: str, version: str) -> None:
        request = exchange.request
        if request.method != "POST":
            exchange.error(405, None, jsonrpc.INVALID_REQUEST,
                           f"Method Not Allowed: {request.method} (the {version} "
                           "transport is POST only)", [("Allow", "POST")])
            return
        if self._draining(exchange):
            return
        env = self._body(exchange, modern_era=True)
        if env is None:
            return
        if env.method is UNSET:
            exchange.error(400, env.id, jsonrpc.INVALID_REQUEST,
                           "Body must be a single JSON-RPC request or notification")
            return
        if env.id is UNSET:
            if version not in modern.MODERN_VERSIONS:
                exchange.error(400, None, modern.UNSUPPORTED_PROTOCOL_VERSION,
                               "Unsupported protocol version",
                               data={"supported": list(modern.MODERN_VERSIONS),
                                     "requested": version})
                return
            # Client notifications mean nothing on this transport (cancelling is closing
            # the stream); accepted and dropped.
            exchange.respond(format_response(202, [], keep_alive=exchange.keep_alive))
            return
        method = env.method
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
        except msgspec.DecodeError:
            params = None
        try:
            if not isinstance(params, dict):
                raise modern.RequestError(jsonrpc.INVALID_PARAMS, "params must be an object")
            modern.check_unrepeated_headers(request.headers)
            meta = modern.read_meta(params)
            modern.check_headers(request.headers, method, params)
            modern.check_version(meta)
            if method == "tools/call":
                modern.check_param_headers(request.headers, self._schema(params.get("name")),
                                           params.get("arguments"))
        except modern.RequestError as exc:
            exchange.error(exc.http_status, env.id, exc.code, exc.message, data=exc.data)
            return
        if method == "subscriptions/listen" and not _accepts(request.header("Accept"),
                                                             "text/event-stream"):
            exchange.error(406, env.id, jsonrpc.INVALID_REQUEST,
                           "Not Acceptable: subscriptions/listen answers with "
                           "text/event-stream")
            return
        modern_request = ModernRequest(self, exchange, env.id, peer, address)
        self.core.handle(modern_request.ds, request.body)

    def _schema(self, name: object) -> Any:
        tools = self.core.tools
        if self._schemas[0] is not tools:
            self._schemas = (tools, {t.get("name"): t.get("inputSchema") for t in tools})
        return self._schemas[1].get(name)


class _TokenMeta(msgspec.Struct, gc=False):
    progressToken: Any = None  # noqa: N815 - the wire name


class _TokenParams(msgspec.Struct, gc=False):
    meta: _TokenMeta | None = msgspec.field(default=None, name="_meta")


_token_params = msgspec.json.Decoder(_TokenParams)


class _ErrorData(msgspec.Struct, gc=False):
    retryAfterSeconds: float | None = None  # noqa: N815 - the wire name


class _ErrorHead(msgspec.Struct, gc=False):
    code: int = 0
    data: _ErrorData | None = None


class _ResponseError(msgspec.Struct, gc=False):
    error: _ErrorHead | None = None


_error_head = msgspec.json.Decoder(_ErrorHead)
_response_error = msgspec.json.Decoder(_ResponseError)


def _legacy_status(code: int) -> int:
    return 429 if code == jsonrpc.RATE_LIMITED else 200


def _error_status(error: msgspec.Raw | bytes, status_for: Callable[[int], int]
                  ) -> tuple[int, list[tuple[str, str]]]:
    """The HTTP status of a JSON error answer (``error`` is the error object, or a whole
    response), with ``Retry-After`` for a 429."""
    try:
        head = _error_head.decode(error) if isinstance(error, msgspec.Raw) else \
            _response_error.decode(error).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 200, []
    if head is None:
        return 200, []
    status = status_for(head.code)
    if status != 429:
        return status, []
    wait = head.data.retryAfterSeconds if head.data is not None else None
    return status, [("Retry-After", str(max(1, math.ceil(wait or 1))))]


def _progress_token(env: jsonrpc.Envelope) -> Any:
    """The request's progress token, reading nothing else of its params."""
    if env.params is UNSET:
        return None
    try:
        meta = _token_params.decode(env.params).meta  # type: ignore[arg-type]
    except msgspec.DecodeError:
        return None
    token = meta.progressToken if meta is not None else None
    return token if isinstance(token, (int, str)) and not isinstance(token, bool) else None


def _set_era(ds: ClientSession, era: str) -> None:
    try:
        ds.era = era
    except AttributeError:
        pass

