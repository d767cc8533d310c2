"""Streamable HTTP on the main listener: both MCP eras on one endpoint.

The era is chosen per HTTP request (MCP 2026-07-28 basic/transports "Earlier Streamable
HTTP Revisions"): an ``MCP-Protocol-Version`` header naming a version newer than the
legacy ones makes a modern, stateless request; anything else is the legacy transport of
2025-11-25, with sessions, a GET stream and resumption.

The gateway core sees neither: a legacy session is a core session whose ``send`` routes
each message to the right SSE stream, and a modern request is a core session of its own
that lives as long as its HTTP response (``http_sessions.py``). This module is the
endpoint that owns them: it checks each request's headers (against ``http_checks.py``),
finds or creates its session, and hands its body to the core, reached only through
``ports.Dispatcher``. One request and its response is an ``Exchange`` (``exchange.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from http import HTTPStatus
from typing import Any

import msgspec
from msgspec import UNSET

from ..auth.identity import Identity
from ..auth.tokens import AuthFailure
from ..config import Config
from ..protocol import jsonrpc, modern, sse
from ..protocol.http import HttpRequest, format_response
from ..protocol.mcp import LEGACY_VERSIONS
from ..protocol.session_ids import SessionSigner
from .exchange import Exchange, _accepts
from .http_batch import post_batch
from .http_checks import (
    AllowList,
    HeaderAnnotations,
    binding,
    host_allow_list,
    modern_without_header,
    origin_or_host_refused,
    progress_token,
    unacceptable,
)
from .http_sessions import SESSION_FIELD, SESSION_HEADER, HttpSession, ModernRequest, Stream
from .ports import Checked, ClientSession, Dispatcher

log = logging.getLogger("mcpfast.http")

VERSION_HEADER = "MCP-Protocol-Version"
VERSION_FIELD = VERSION_HEADER.lower()
DEFAULT_LEGACY_VERSION = "2025-03-26"  # no header and no other way to know (transports)
MAX_ENDED = 100_000
LEGACY_ALLOW = "GET, POST, DELETE"


def allowed(request: HttpRequest) -> str:
    """The methods the MCP endpoint allows the era ``request`` speaks (its version
    header): POST only for a modern request, as ``Endpoint._modern`` answers."""
    version = request.fields.get(VERSION_FIELD)
    return LEGACY_ALLOW if version is None or version.strip() in LEGACY_VERSIONS else "POST"


_any = msgspec.json.Decoder()
BATCH = jsonrpc.Envelope()  # a JSON-RPC batch as _body reads it (post_batch decides)


class Endpoint:
    """The MCP endpoint's HTTP side, shared by every connection of a listener."""

    def __init__(self, core: Dispatcher) -> None:
        self.core = core
        self.signer = SessionSigner(core.config.listen.http.session_secret)
        self.sessions: dict[str, HttpSession] = {}
        self.per_address: dict[str, int] = {}
        self.ended: OrderedDict[str, int] = OrderedDict()
        """Ids of sessions ended here, oldest first, with when each was issued."""
        self.not_before = int(time.time())
        """Ids issued earlier are not adopted (``_adoptable``)."""
        self.live: set[Stream] = set()
        self.live_modern: set[ModernRequest] = set()
        self._snapshot: Config | None = None
        self._read_config()  # config, traced, the origins and hosts allowed
        self._annotations = HeaderAnnotations()
        self._timer: asyncio.TimerHandle | None = None
        self._ticks = 0

    def _read_config(self) -> None:
        """Take the settings from the core's config snapshot when it was replaced
        (``Gateway.use``); a request is served under one snapshot, start to end."""
        config = self.core.config
        if config is self._snapshot:
            return
        self._snapshot = config
        listen = config.listen
        self.config = listen.http
        self.traced = config.tracing.enabled
        """Whether requests take their HTTP ``traceparent`` to the core (read only then)."""
        self._origins = AllowList(self.config.allowed_origins)
        self._hosts = host_allow_list(self.config.allowed_hosts, listen.host)

    # -- bookkeeping ---------------------------------------------------------------------
    def register(self, session: HttpSession) -> str:
        token = self.signer.issue(session.ds.protocol_version or DEFAULT_LEGACY_VERSION,
                                  session.ds.client_capabilities, binding(session.ds.identity))
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

    # -- checks shared with the WebSocket handshake --------------------------------------
    def refuse(self, request: HttpRequest) -> tuple[int, str] | None:
        """Origin and Host checks (DNS rebinding): the status and reason to refuse with.
        The first check of every request, so it also takes a new config snapshot."""
        if self.core.config is not self._snapshot:
            self._read_config()
        return origin_or_host_refused(request, self._origins, self._hosts)

    def identify(self, request: HttpRequest, address: str | None,
                 certified: Identity | None = None) -> Identity | AuthFailure:
        """Who sends ``request``: the identity its credential (or the connection's
        client certificate, ``certified``) proves where the listener requires one
        (``listen.auth``), else its address. A verified identity is the one its
        credential's cache holds, shared by every request that presents it: a session
        made for it takes a copy with the peer's address (``HttpSession``)."""
        authenticator = self.core.authenticator
        if not authenticator.required:
            return Identity(f"ip:{address}", address)
        return authenticator.authenticate(request.header, address, certified)

    # -- requests ------------------------------------------------------------------------
    def handle(self, conn: Any, request: HttpRequest) -> Exchange:
        exchange = Exchange(conn, request)
        try:
            self._handle(exchange, conn.peer, conn.address, conn.certified)
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            if not exchange.done and not exchange.streaming:
                exchange.error(500, None, jsonrpc.INTERNAL_ERROR, "Internal error")
        return exchange

    def _handle(self, exchange: Exchange, peer: str, address: str,
                certified: Identity | None) -> None:
        """``certified``: who the connection's client certificate names (mutual TLS)."""
        request = exchange.request
        refused = self.refuse(request)
        if refused is not None:
            exchange.error(refused[0], None, jsonrpc.INVALID_REQUEST, refused[1])
            return
        identity: Identity | None = None
        if self.core.authenticator.required:
            verified = self.identify(request, address, certified)
            if isinstance(verified, AuthFailure):
                exchange.error(verified.status, None, jsonrpc.INVALID_REQUEST,
                               f"{HTTPStatus(verified.status).phrase}: {verified.description}",
                               self.core.authenticator.challenge(verified, request.header("Host")))
                return
            identity = verified
        if request.repeated is not None and VERSION_FIELD in request.repeated:
            exchange.error(400, None, modern.HEADER_MISMATCH,
                           f"Header mismatch: repeated {VERSION_HEADER} header")
            return
        version = request.fields.get(VERSION_FIELD)
        version = version.strip() if version is not None else None
        if version is not None and version not in LEGACY_VERSIONS:
            if version not in modern.MODERN_VERSIONS and SESSION_FIELD in request.fields:
                # A legacy session's request with a version of neither era (transports
                # "Protocol Version Header": 400), not a modern request missing its _meta.
                exchange.error(400, None, jsonrpc.INVALID_REQUEST, f"Bad Request: "
                               f"unsupported {VERSION_HEADER} {version!r}")
                return
            self._modern(exchange, peer, address, version, identity)
        else:
            self._legacy(exchange, peer, address, identity)

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
        fields = request.fields
        refused = unacceptable(fields.get("accept"), fields.get("content-type"), modern_era)
        if refused is not None:
            exchange.error(refused[0], None, jsonrpc.INVALID_REQUEST, refused[1])
            return None
        try:
            return jsonrpc.decode(request.body, self._snapshot.listen.max_json_depth)  # type: ignore[union-attr]
        except jsonrpc.MessageError as exc:
            if exc.batch and not modern_era:
                return BATCH  # a legacy session's to take or refuse (post_batch)
            self.core.counters.parse_errors += 1
            exchange.error(400, exc.request_id, exc.code, exc.message)
            return None

    # -- legacy ----------------------------------------------------------------------------
    def _legacy(self, exchange: Exchange, peer: str, address: str,
                identity: Identity | None) -> None:
        """A legacy request (``identity``: the verified one, None when the listener
        requires no credential)."""
        request = exchange.request
        method = request.method
        if method not in ("POST", "GET", "DELETE"):
            exchange.error(405, None, jsonrpc.INVALID_REQUEST,
                           f"Method Not Allowed: {method}", [("Allow", LEGACY_ALLOW)])
            return
        env = None
        if method == "POST":
            if self._draining(exchange):
                return
            env = self._body(exchange, modern_era=False)
            if env is None:
                return
            if env.method == "initialize" and env.id is not UNSET:
                self._initialize(exchange, peer, address, env, identity)
                return
            body = request.body
            if (b"protocolVersion" in body or b"\\u" in body) and env is not BATCH and (
                    bad := modern_without_header(request.fields, env)) is not None:
                # A modern body whose MCP-Protocol-Version header is missing or legacy,
                # in a session or not: the header must match the body (HeaderMismatch),
                # so that what routes by the header and what runs agree.
                exchange.error(bad.http_status, env.id, bad.code, bad.message)
                return
        elif method == "GET" and not _accepts(request.fields.get("accept"), "text/event-stream"):
            exchange.error(406, None, jsonrpc.INVALID_REQUEST,
                           "Not Acceptable: the client must accept text/event-stream")
            return
        session = self._session(exchange, peer, address, identity)
        if session is None:
            return
        if method == "DELETE":
            session.close(1000, "session deleted by the client")
            exchange.respond(format_response(200, [], keep_alive=exchange.keep_alive))
        elif method == "GET":
            self._get(exchange, session)
        else:
            self._post(exchange, session, env)

    def _session(self, exchange: Exchange, peer: str, address: str, identity: Identity | None
                 ) -> HttpSession | None:
        """The session the request names. A session is bound to the identity that
        created it: presented by another, it does not exist (404)."""
        token = exchange.request.fields.get(SESSION_FIELD)
        if token is None:
            exchange.error(400, None, jsonrpc.INVALID_REQUEST,
                           f"Bad Request: the {SESSION_HEADER} header is required "
                           "(initialize first)")
            return None
        token = token.strip()
        session = self.sessions.get(token)
        if session is not None:
            if identity is None or session.ds.identity.key == identity.key:
                return session
            claims = None
        else:
            claims = None if token in self.ended else self.signer.verify(token,
                                                                         binding(identity))
        if claims is None or not self._adoptable(claims.issued_at):
            exchange.error(404, None, jsonrpc.INVALID_REQUEST,
                           "Session not found: it ended or expired; initialize again")
            return None
        if self._full(exchange, None, address):
            return None
        # Signed by a replica sharing our key: serve it as if we had issued it.
        session = HttpSession(self, peer, address, identity)
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
                    env: jsonrpc.Envelope, identity: Identity | None) -> None:
        token = exchange.request.fields.get(SESSION_FIELD)
        if token is not None and token.strip() in self.sessions:
            exchange.error(400, env.id, jsonrpc.INVALID_REQUEST,
                           "this session is already initialized")
            return
        if self._full(exchange, env.id, address):
            return
        session = HttpSession(self, peer, address, identity)
        session.new_stream(env.id, exchange)
        self.core.handle(session.ds, exchange.request.body, env)
        if session.token is None:
            # initialize failed: no session was created.
            session.close()

    def _post(self, exchange: Exchange, session: HttpSession,
              env: jsonrpc.Envelope | None) -> None:
        assert env is not None
        if env is BATCH:
            post_batch(session, exchange)
            return
        body = exchange.request.body
        if env.method is UNSET or env.id is UNSET:
            # A notification, or the client's answer to a request the gateway relayed.
            cancelled = session.cancelled_stream(env) \
                if env.method == "notifications/cancelled" else None
            self.core.handle(session.ds, body, env)
            if cancelled is not None and cancelled.request_id not in session.ds.inflight:
                cancelled.withdraw()  # the cancel took: the request's POST ends
            exchange.respond(format_response(202, session.headers(),
                                             keep_alive=exchange.keep_alive))
            return
        stream = session.by_request.get(env.id)
        if stream is not None and not stream.done:
            exchange.error(400, env.id, jsonrpc.INVALID_REQUEST,
                           f"request id {env.id!r} is already in flight on this session")
            return
        session.new_stream(env.id, exchange,
                           progress_token(env) if b"progressToken" in body else None)
        if self.traced:
            self._handle_traced(session.ds, exchange, body, env)
            return
        self.core.handle(session.ds, body, env)

    def _handle_traced(self, ds: ClientSession, exchange: Exchange, body: bytes,
                       env: jsonrpc.Envelope, checked: Checked | None = None) -> None:
        """``core.handle`` with the POST's trace context headers on the session while
        the request is dispatched (and forwarded: that is synchronous)."""
        fields = exchange.request.fields
        traceparent = fields.get("traceparent")
        ds.trace_headers = (traceparent, fields.get("tracestate")) \
            if traceparent is not None else None
        try:
            self.core.handle(ds, body, env, checked)
        finally:
            ds.trace_headers = None

    def _get(self, exchange: Exchange, session: HttpSession) -> None:
        last = exchange.request.fields.get("last-event-id")
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
    def _modern(self, exchange: Exchange, peer: str, address: str, version: str,
                identity: Identity | None) -> None:
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
        unreadable = ""
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
        except msgspec.DecodeError as exc:
            # JSON the gateway cannot hold to encode again: a number beyond a double's
            # range (1e400).
            params, unreadable = None, f"params cannot be read: {exc}"
        try:
            if not isinstance(params, dict):
                raise modern.RequestError(jsonrpc.INVALID_PARAMS,
                                          unreadable or "params must be an object")
            if request.repeated is not None:
                # Rung 8 before rung 9; without a repeated header it cannot fail.
                modern.check_unrepeated_headers(request.headers)
            meta = modern.read_meta(params)
            modern.check_routing_headers(request.fields, method, params)
            modern.check_version(meta)
            if method == "tools/call":
                annotations = self._annotations.of(self.core.tools, params.get("name"))
                if annotations:
                    modern.check_param_values(request.headers, annotations,
                                              params.get("arguments"))
        except modern.RequestError as exc:
            exchange.error(exc.http_status, env.id, exc.code, exc.message, data=exc.data)
            return
        if method == "subscriptions/listen" and not _accepts(request.fields.get("accept"),
                                                             "text/event-stream"):
            exchange.error(406, env.id, jsonrpc.INVALID_REQUEST,
                           "Not Acceptable: subscriptions/listen answers with "
                           "text/event-stream")
            return
        modern_request = ModernRequest(self, exchange, env.id, peer, address, identity)
        # Its params and _meta as read and checked here: the core reads them no more.
        if self.traced:
            self._handle_traced(modern_request.ds, exchange, request.body, env,
                                (params, meta))
            return
        self.core.handle(modern_request.ds, request.body, env, (params, meta))
