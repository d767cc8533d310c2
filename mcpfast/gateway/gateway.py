"""Gateway: wires listeners, sessions, the router and the upstreams; starts and drains.

``handle`` is the data path for every client message. It answers what the gateway owns
(the handshake, ping, the aggregated lists, logging levels, ``server/discover``,
``subscriptions/listen``) and forwards the rest to the upstream the router picks;
``upstream_notification`` and ``upstream_request`` carry traffic the other way. Every
client request gets exactly one answer (DESIGN.md); an open ``subscriptions/listen`` gets
its answer when the gateway ends it, and none when the client does.

Each request is legacy or modern (protocol/mcp.py), and so is each upstream. When the
two differ the gateway converts: a modern client's request loses its
``io.modelcontextprotocol/*`` ``_meta`` on the way to a legacy upstream and its answer
gains ``resultType`` (``reshape_response``); a legacy client's request to a modern
upstream gains the ``_meta`` its session's ``initialize`` implies. Client input crosses
eras in ``mrtr.py``: a modern upstream's ``input_required`` becomes server-to-client
requests to a legacy client, and a legacy upstream's server-to-client request becomes an
``input_required`` result for a modern client, whose retry resumes the call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .. import __version__
from ..config import Config
from ..counters import Counters
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import (
    CLIENT_CAPABILITY_FOR,
    INPUT_REQUIRED_METHODS,
    LATEST_LEGACY,
    LEGACY_VERSIONS,
    LISTEN_FLAGS,
    PRE_INIT_METHODS,
    SUBSCRIPTIONS_ACKNOWLEDGED,
)
from ..protocol.modern import (
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    META_SUBSCRIPTION_ID,
    MODERN_VERSIONS,
    ModernMeta,
    RequestError,
    check_version,
    complete_result,
    is_modern,
    legacy_result,
    read_meta,
    strip_modern_meta,
)
from ..transport.admission import Admission
from ..transport.ports import FlowControl
from ..upstream.base import CLIENT_INFO, UpstreamError
from ..upstream.stdio import StdioUpstream
from .call import (
    SHAPE_LEGACY_FROM_MODERN,
    SHAPE_MODERN_FROM_LEGACY,
    SHAPE_MODERN_FROM_MODERN,
    SHAPE_NONE,
    Pending,
    Upstream,
)
from .chain import compile_checks
from .mrtr import InputBridge
from .rate_limit import build as build_rate_limits
from .router import KIND_PROMPT, KIND_TOOL, Router
from .session import LOG_LEVELS, DownstreamSession, Listen

log = logging.getLogger("mcpfast.gateway")

SWEEP_INTERVAL = 0.5
EVICT_EVERY = 10
"""Sweeps between evictions of rate-limit buckets that have refilled (5 s)."""
LIST_KINDS = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resourceTemplates"),
}
SERVER_INFO = {"name": "mcpfast", "title": "mcpfast MCP gateway", "version": __version__}
# The gateway's own results for modern clients: see the design note in protocol/mcp.py.
CACHE_HINTS = {"ttlMs": 0, "cacheScope": "private"}
LOG_LEVEL_NAMES = {number: name for name, number in LOG_LEVELS.items()}
# Methods whose params the legacy handlers route by (a bad params.name is their -32602).
ROUTED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read",
                            "resources/subscribe", "resources/unsubscribe",
                            "completion/complete"})
MODERN_SHAPES = (SHAPE_MODERN_FROM_LEGACY, SHAPE_MODERN_FROM_MODERN)

Handler = Callable[["Request"], None]
LEGACY = 1
"""A method of the legacy era (2025-11-25 and earlier)."""
MODERN = 2
"""A method of 2026-07-28."""
BOTH = LEGACY | MODERN


class _Meta(msgspec.Struct, gc=False):
    progressToken: int | str | UnsetType = UNSET  # noqa: N815 - the wire name
    protocolVersion: Any = msgspec.field(  # noqa: N815
        default=UNSET, name=META_PROTOCOL_VERSION)
    """Present on a modern request, whatever its value (``is_modern``)."""


class _Ref(msgspec.Struct, gc=False):
    type: str = ""
    name: str | UnsetType = UNSET
    uri: str | UnsetType = UNSET


class RouteParams(msgspec.Struct, gc=False):
    """The only parts of ``params`` routing reads; the rest stays undecoded."""

    name: str | UnsetType = UNSET
    uri: str | UnsetType = UNSET
    ref: _Ref | UnsetType = UNSET
    meta: _Meta | UnsetType = msgspec.field(default=UNSET, name="_meta")


_route_params = msgspec.json.Decoder(RouteParams)
_any = msgspec.json.Decoder()
_NO_PARAMS = RouteParams()


class Request(msgspec.Struct, gc=False):
    """A client request while the gateway dispatches and routes it. Its era decided how
    it was read and checked (a legacy request's routing fields only, ``head``; a modern
    one's whole ``params`` and its ``meta``), and decides how the gateway's own answers
    are shaped; the handlers, one table for both eras, read it the same way."""

    session: DownstreamSession
    env: Envelope
    id: int | str
    method: str
    modern: bool = False
    head: RouteParams | None = None
    params: dict[str, Any] | None = None
    meta: ModernMeta | None = None

    def name(self) -> str | None:
        """``params.name``, when it is a string."""
        if self.params is not None:
            name = self.params.get("name")
            return name if isinstance(name, str) else None
        head = self.head
        return head.name if head is not None and isinstance(head.name, str) else None

    def uri(self) -> str | None:
        """``params.uri``, when it is a string."""
        if self.params is not None:
            uri = self.params.get("uri")
            return uri if isinstance(uri, str) else None
        head = self.head
        return head.uri if head is not None and isinstance(head.uri, str) else None

    def ref(self) -> tuple[str, str | None, str | None] | None:
        """``params.ref`` as (type, name, uri); None when a legacy request has none (a
        modern one's missing or malformed ref reads as an empty one)."""
        if self.params is not None:
            ref = self.params.get("ref")
            ref = ref if isinstance(ref, dict) else {}
            name, uri = ref.get("name"), ref.get("uri")
            return (str(ref.get("type")), name if isinstance(name, str) else None,
                    uri if isinstance(uri, str) else None)
        head = self.head
        if head is None or isinstance(head.ref, UnsetType):
            return None
        ref_ = head.ref
        return (ref_.type, ref_.name if isinstance(ref_.name, str) else None,
                ref_.uri if isinstance(ref_.uri, str) else None)


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters()
        self.sessions: dict[str, DownstreamSession] = {}
        self.upstreams: dict[str, Upstream] = {
            name: StdioUpstream(name, index, up, self, config.interpolated)
            for index, (name, up) in enumerate(config.upstreams.items())
        }
        self.router = Router(list(self.upstreams.values()), config.routing.prefix,
                             config.routing.separator)
        limits = config.limits
        self.admission = Admission(limits.max_connections, limits.max_connections_per_peer,
                                   limits.reserved_descriptors)
        self.max_in_flight = limits.max_in_flight
        self.rate_limits = build_rate_limits(config.rate_limits)
        self.checks = compile_checks(self.rate_limits)
        """The policy chain (chain.py): empty when no policy is configured."""
        self.buffered = 0
        """Bytes waiting to be sent to clients and upstreams, at the last sweep."""
        self.overloaded = False
        """Set while ``buffered`` is over limits.process_buffer_bytes (until it falls
        below half): new requests are refused, the work in flight goes on."""
        self.started_at = time.time()
        self.draining = False
        self.listening = False
        self.listeners: list[Any] = []
        self._session_ids = itertools.count(1)
        self._sweeps = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session_levels: dict[int, int] = {}
        """How many sessions asked (logging/setLevel) for each log level."""
        self._unattributed_logged: set[tuple[str, str]] = set()
        secret = config.listen.http.session_secret
        self.mrtr = InputBridge(self, secret.encode() if secret else os.urandom(32),
                                SERVER_INFO)
        # One table for both eras. 2026-07-28 has no initialize, ping, logging/setLevel
        # or resources/(un)subscribe (changelog), and the legacy era no server/discover
        # or subscriptions/listen: a request for a method outside its era's set is an
        # unknown method.
        self._methods: dict[str, tuple[Handler, int]] = {
            "initialize": (self._initialize, LEGACY),
            "ping": (self._ping, LEGACY),
            "logging/setLevel": (self._set_level, LEGACY),
            "resources/subscribe": (self._subscribe, LEGACY),
            "resources/unsubscribe": (self._unsubscribe, LEGACY),
            "server/discover": (self._discover, MODERN),
            "subscriptions/listen": (self._listen, MODERN),
            "tools/list": (self._list("tools"), BOTH),
            "prompts/list": (self._list("prompts"), BOTH),
            "resources/list": (self._list("resources"), BOTH),
            "resources/templates/list": (self._list("resourceTemplates"), BOTH),
            "tools/call": (self._by_name(KIND_TOOL, "tool"), BOTH),
            "prompts/get": (self._by_name(KIND_PROMPT, "prompt"), BOTH),
            "resources/read": (self._read, BOTH),
            "completion/complete": (self._complete, BOTH),
        }

    # -- state -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        ups = self.upstreams.values()
        return (self.listening and not self.draining
                and all(u.initialized_once.is_set() for u in ups) and any(u.ready for u in ups))

    def in_flight(self) -> int:
        """Requests an upstream is working on for a client; not the parked ones, which
        wait for a client that may never come back."""
        count = sum(len(u.pending) for u in self.upstreams.values())
        if self.mrtr.parked:
            count -= sum(self.mrtr.parked_on(u) for u in self.upstreams.values())
        return count

    # -- lifecycle -------------------------------------------------------------------
    async def start_upstreams(self) -> None:
        """Start every upstream; return once each is initialized or its init_timeout ran
        out (a late one joins the catalog when it becomes ready). Clients may already be
        connected (the listeners open first), so time-outs and limits run from now."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(),
                                                                   name="sweeper")
        for upstream in self.upstreams.values():
            await upstream.start()
        waits = [asyncio.wait_for(u.initialized_once.wait(), u.config.init_timeout + 1)
                 for u in self.upstreams.values()]
        for upstream, outcome in zip(self.upstreams.values(),
                                     await asyncio.gather(*waits, return_exceptions=True),
                                     strict=True):
            if isinstance(outcome, BaseException):
                log.error("upstream %r is not ready yet: %s", upstream.name,
                          upstream.last_error or "initialization timed out")
        self.router.rebuild()

    async def drain(self) -> None:
        """Stop taking new work and wait (up to the deadline) for requests in flight."""
        self.draining = True
        deadline = time.monotonic() + self.config.shutdown.drain_timeout
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = self.in_flight()
        if left:
            log.warning("drain deadline passed with %d requests in flight; failing them", left)
        for upstream in self.upstreams.values():
            upstream.fail_all("the gateway is shutting down")

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            # subscriptions/listen "Graceful Closure": the answer tells the client the
            # stream ended on purpose.
            listens, session.listens = session.listens, {}
            for listen_id in listens:
                self.send(session, self._listen_result(listen_id))
            session.close(1001, "gateway shutting down")
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(u.stop() for u in self.upstreams.values()),
                             return_exceptions=True)

    def _measure_buffers(self) -> None:
        """Envoy's overload manager, sampled: the bytes queued everywhere decide
        whether new work is taken. Off the data path, once per sweep."""
        total = sum(u.buffered() for u in self.upstreams.values())
        for listener in self.listeners:
            for connection in listener.connections:
                total += connection.buffered()
        self.buffered = total
        limit = self.config.limits.process_buffer_bytes
        if not self.overloaded and total > limit:
            self.overloaded = True
            log.warning("%d bytes are buffered (limits.process_buffer_bytes is %d): "
                        "refusing new requests until they drain", total, limit)
        elif self.overloaded and total < limit // 2:
            self.overloaded = False
            log.warning("buffers drained to %d bytes: taking new requests again", total)

    async def _sweep(self) -> None:
        idle = self.config.listen.idle_timeout
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self._measure_buffers()
            now = time.monotonic()
            for upstream in self.upstreams.values():
                if upstream.pending:
                    upstream.sweep(now)
            self.mrtr.sweep(now)
            self._sweeps += 1
            if self.rate_limits and self._sweeps % EVICT_EVERY == 0:
                for limit in self.rate_limits:
                    limit.evict_full(now)
            for session in list(self.sessions.values()):
                if session.idle_for(now) > idle and not session.inflight and \
                        not session.listens:
                    log.info("closing idle session %s (%s)", session.id, session.peer)
                    session.close(1001, "idle timeout")

    # -- sessions --------------------------------------------------------------------
    def open_session(self, transport: str, peer: str, send: Callable[[bytes], None],
                     close: Callable[[int, str], None], flow: FlowControl | None = None,
                     identity: str = "") -> DownstreamSession:
        session_id = f"{os.getpid():x}-{next(self._session_ids)}"
        session = DownstreamSession(session_id, transport, peer, send, close, flow,
                                    identity)
        self.sessions[session_id] = session
        self.counters.connections_total += 1
        return session

    def close_session(self, session: DownstreamSession) -> None:
        """The client is gone: cancel its work upstream and forget it."""
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        for upstream, upstream_id in list(session.inflight.values()):
            upstream.cancel(upstream_id, "client disconnected")
        session.inflight.clear()
        for upstream, request_id in session.outgoing.values():
            if upstream.ready:
                upstream.respond_error(request_id, jsonrpc.INTERNAL_ERROR,
                                       "the client disconnected")
        session.outgoing.clear()
        self.mrtr.session_closed(session)
        for uri in session.subscriptions:
            self._release_subscription(uri)
        session.subscriptions.clear()
        listens, session.listens = session.listens, {}
        for listen in listens.values():
            self._end_listen(listen)
        if session.log_level is not None:
            self._count_session_level(session.log_level, -1)
            self._sync_log_levels()

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.router.tools

    def send(self, session: DownstreamSession, data: bytes) -> None:
        session.messages_out += 1
        self.counters.messages_out += 1
        session.send(data)

    def send_error(self, session: DownstreamSession, request_id: Any, code: int,
                   message: str, data: Any = UNSET) -> None:
        """Answer ``request_id`` (None for a message whose id could not be read)."""
        self.counters.errors += 1
        if not session.closed:
            self.send(session, jsonrpc.error_response(request_id, code, message, data))

    # -- client to gateway -----------------------------------------------------------
    def handle(self, session: DownstreamSession, data: bytes) -> None:
        """One message from a client."""
        session.messages_in += 1
        self.counters.messages_in += 1
        try:
            env = jsonrpc.decode(data, self.config.listen.max_json_depth)
        except jsonrpc.MessageError as exc:
            self.counters.parse_errors += 1
            self.send_error(session, exc.request_id, exc.code, exc.message)
            return
        method = env.method
        if method is UNSET:
            self._client_response(session, env)
            return
        if env.id is UNSET:
            try:
                self._client_notification(session, method, env)
            except Exception:
                log.exception("internal error handling %s from session %s", method, session.id)
            return
        self.counters.requests += 1
        try:
            self._dispatch(session, method, env)
        except Exception:
            log.exception("internal error handling %s from session %s", method, session.id)
            if env.id not in session.inflight and env.id not in session.listens:
                self.send_error(session, env.id, jsonrpc.INTERNAL_ERROR, "Internal error")

    def _dispatch(self, session: DownstreamSession, method: str, env: Envelope) -> None:
        if session.era == "modern":
            self._dispatch_modern(session, method, env)
            return
        # Routing decodes the few params it needs once, here; the same decode tells a
        # modern request (its _meta names a protocol version) from a legacy one.
        head = _NO_PARAMS
        if env.params is not UNSET:
            try:
                head = _route_params.decode(env.params)  # type: ignore[arg-type]
            except msgspec.DecodeError as exc:
                if is_modern(_any.decode(env.params)):  # type: ignore[arg-type]
                    self._dispatch_modern(session, method, env)
                else:
                    self._dispatch_legacy(session, method, env, f"Invalid params: {exc}")
                return
            if head.meta is not UNSET and head.meta.protocolVersion is not UNSET:
                self._dispatch_modern(session, method, env)
                return
        self._dispatch_legacy(session, method, env, head)

    def _dispatch_legacy(self, session: DownstreamSession, method: str, env: Envelope,
                         head: RouteParams | str) -> None:
        """``head`` is the routing part of params, or why it could not be read."""
        entry = self._methods.get(method)
        if entry is None or not entry[1] & LEGACY:
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"Method not found: {method}")
        elif not session.initialized and method not in PRE_INIT_METHODS:
            self.send_error(session, env.id, jsonrpc.INVALID_REQUEST,
                            f"{method} before initialize: the session is not initialized")
        elif self.draining:
            self.send_error(session, env.id, jsonrpc.GATEWAY_SHUTTING_DOWN,
                            "the gateway is shutting down")
        elif self.overloaded and method not in PRE_INIT_METHODS:
            self._refuse_overloaded(session, env.id)
        elif not isinstance(head, str):
            entry[0](Request(session, env, env.id, method, head=head))  # type: ignore[arg-type]
        elif method in ROUTED_METHODS:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS, head)
        else:
            entry[0](Request(session, env, env.id, method, head=_NO_PARAMS))  # type: ignore[arg-type]

    def _dispatch_modern(self, session: DownstreamSession, method: str, env: Envelope) -> None:
        """A 2026-07-28 request: ``_meta`` (-32602) and version (-32022) rungs, then the
        method (basic/index "Per-request protocol fields"; notes §2.3)."""
        params = _any.decode(env.params) if env.params is not UNSET else {}  # type: ignore[arg-type]
        try:
            meta = read_meta(params)
            check_version(meta)
        except RequestError as exc:
            self.send_error(session, env.id, exc.code, exc.message, exc.data)
            return
        entry = self._methods.get(method)
        if entry is None or not entry[1] & MODERN:
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"Method not found: {method}")
        elif self.draining:
            self.send_error(session, env.id, jsonrpc.GATEWAY_SHUTTING_DOWN,
                            "the gateway is shutting down")
        elif self.overloaded:
            self._refuse_overloaded(session, env.id)
        else:
            entry[0](Request(session, env, env.id, method, True,  # type: ignore[arg-type]
                             params=params, meta=meta))

    def _refused(self, session: DownstreamSession, client_id: int | str,
                 upstream: Upstream, method: str, name: str | None) -> bool:
        """Run the policy chain (chain.py); the first refusal answers the request, which
        goes no further."""
        now = time.monotonic()
        for check in self.checks:
            refusal = check(session, upstream.name, method, name, now)
            if refusal is not None:
                self.send_error(session, client_id, refusal.code, refusal.message,
                                refusal.data)
                return True
        return False

    def _refuse_overloaded(self, session: DownstreamSession, request_id: Any) -> None:
        self.counters.refused_overloaded += 1
        self.send_error(session, request_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                        "the gateway is overloaded (too much data waits to be sent); "
                        "retry shortly", {"retryAfterSeconds": 1})

    def _id_taken(self, session: DownstreamSession, client_id: int | str) -> bool:
        """Whether ``client_id`` cannot be taken now (answered with an error if so)."""
        if client_id in session.inflight or client_id in session.listens:
            self.send_error(session, client_id, jsonrpc.INVALID_REQUEST,
                            f"request id {client_id!r} is already in flight on this session")
            return True
        if len(session.inflight) >= self.max_in_flight:
            self.counters.refused_in_flight += 1
            self.send_error(session, client_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                            f"too many requests in flight on this session (limits."
                            f"max_in_flight is {self.max_in_flight}); wait for answers first")
            return True
        return False

    @staticmethod
    def _rename(params: dict[str, Any], rename: tuple[str, str] | None) -> None:
        if rename is not None:
            key, value = rename
            if key == "ref":
                params["ref"] = {**params["ref"], "name": value}
            else:
                params[key] = value

    def _forward(self, req: Request, upstream: Upstream,
                 rename: tuple[str, str] | None = None, subscription: str | None = None,
                 uri: str | None = None) -> None:
        """Send ``req`` to ``upstream``, in the upstream's era, with what the router
        renamed (``rename``: the member and the upstream's own name)."""
        if req.modern:
            self._forward_modern(req, upstream, rename, uri)
        else:
            self._forward_legacy(req, upstream, rename, subscription)

    def _forward_legacy(self, req: Request, upstream: Upstream,
                        rename: tuple[str, str] | None, subscription: str | None) -> None:
        """A legacy client's request: rewritten only where it must be unique per upstream
        connection (the progress token) and where the router renamed."""
        session, env, client_id = req.session, req.env, req.id
        if self._id_taken(session, client_id):
            return
        if self.checks and self._refused(session, client_id, upstream, req.method,
                                         req.name()):
            return
        if upstream.era == "modern":
            self._forward_legacy_to_modern(req, upstream, rename)
            return
        params: Raw | bytes | UnsetType = env.params
        upstream_id: int | None = None
        head = req.head or _NO_PARAMS
        token = head.meta.progressToken if head.meta is not UNSET else UNSET
        if rename is not None or token is not UNSET:
            full = _any.decode(env.params)  # type: ignore[arg-type]
            self._rename(full, rename)
            upstream_id = upstream.allocate_id()
            if token is not UNSET:
                # Tokens are unique per requester (basic/utilities/progress); the upstream
                # id is unique on this upstream connection, so it serves as the token.
                full["_meta"]["progressToken"] = upstream_id
            params = jsonrpc.encode(full)
        self.forward(upstream, Pending(
            session, client_id, upstream.deadline(), None if token is UNSET else token,
            req.method, subscription), params, upstream_id)

    def _forward_legacy_to_modern(self, req: Request, upstream: Upstream,
                                  rename: tuple[str, str] | None) -> None:
        """A legacy client's request to a modern upstream carries what the session's
        ``initialize`` and ``logging/setLevel`` said, in ``_meta`` (notes §3)."""
        session, env = req.session, req.env
        params = _any.decode(env.params) if env.params is not UNSET else {}  # type: ignore[arg-type]
        self._rename(params, rename)
        meta = dict(params.get("_meta") or {})
        meta[META_PROTOCOL_VERSION] = upstream.protocol_version
        meta[META_CLIENT_CAPABILITIES] = session.client_capabilities
        meta[META_CLIENT_INFO] = session.client_info or CLIENT_INFO
        if session.log_level is not None:
            meta[META_LOG_LEVEL] = LOG_LEVEL_NAMES[session.log_level]
        head = req.head or _NO_PARAMS
        token = head.meta.progressToken if head.meta is not UNSET else UNSET
        upstream_id = upstream.allocate_id()
        if token is not UNSET:
            meta["progressToken"] = upstream_id
        params["_meta"] = meta
        method = req.method
        self.forward(upstream, Pending(
            session, req.id, upstream.deadline(), None if token is UNSET else token, method,
            shape=SHAPE_LEGACY_FROM_MODERN,
            params=params if method in INPUT_REQUIRED_METHODS else None),
            jsonrpc.encode(params), upstream_id)

    def _by_name(self, kind: int, what: str) -> Handler:
        """tools/call and prompts/get: routed by ``params.name``."""
        def handler(req: Request) -> None:
            name = req.name()
            if name is None:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                f"{req.method} requires params.name")
                return
            route = self.router.route(kind, name)
            if route is None:
                self._unknown_name(req.session, req.id, what, name)
                return
            upstream, upstream_name = route
            self._forward(req, upstream, None if upstream_name == name else ("name", upstream_name))
        return handler

    def _unknown_name(self, session: DownstreamSession, request_id: Any, what: str,
                      name: str) -> None:
        """No route for ``name``. While an upstream has never listed its catalog, the
        name may well be one of its: say that it is not ready rather than unknown."""
        unknown = [u.name for u in self.upstreams.values() if u.catalog is None]
        if unknown:
            self.send_error(session, request_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                            f"Unknown {what}: {name}, or one of upstream(s) "
                            f"{', '.join(map(repr, unknown))}, which are not ready yet")
        else:
            self.send_error(session, request_id, jsonrpc.INVALID_PARAMS,
                            f"Unknown {what}: {name}")

    def _routed_uri(self, req: Request) -> tuple[str, Upstream] | None:
        """``params.uri`` and the upstream that serves it; None when there is none (the
        request is answered: not found is -32002 in the legacy era, and -32602 with
        ``data.uri`` in 2026-07-28, server/resources "Error Handling")."""
        uri = req.uri()
        if uri is None:
            self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                            f"{req.method} requires params.uri")
            return None
        upstream = self.router.route_uri(uri)
        if upstream is None:
            if req.modern:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                f"Resource not found: {uri}", {"uri": uri})
            else:
                self.send_error(req.session, req.id, jsonrpc.RESOURCE_NOT_FOUND,
                                f"Resource not found: {uri}")
            return None
        return uri, upstream

    def _read(self, req: Request) -> None:
        routed = self._routed_uri(req)
        if routed is not None:
            self._forward(req, routed[1], uri=routed[0])

    @staticmethod
    def _can_subscribe(upstream: Upstream) -> bool:
        return bool((upstream.capabilities.get("resources") or {}).get("subscribe"))

    def _subscribe(self, req: Request) -> None:
        routed = self._routed_uri(req)
        if routed is None:
            return
        uri, upstream = routed
        session, env = req.session, req.env
        if uri in session.subscriptions:
            self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]
            return
        if not self._can_subscribe(upstream):
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"upstream {upstream.name!r} does not support resource subscriptions")
            return
        if upstream.era == "modern":
            # A modern upstream has no resources/subscribe: the URI joins the gateway's
            # listen stream to it.
            session.subscriptions.add(uri)
            self._hold_subscription(upstream, uri)
            self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]
            return
        count = upstream.subscriptions.get(uri, 0)
        session.subscriptions.add(uri)
        upstream.subscriptions[uri] = count + 1
        if count == 0:
            self._forward(req, upstream, subscription=uri)
        else:
            self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]

    def subscription_refused(self, session: DownstreamSession, upstream: Upstream,
                             uri: str) -> None:
        """The upstream answered a forwarded subscribe with an error: undo the
        bookkeeping, so that the next subscriber asks the upstream again."""
        session.subscriptions.discard(uri)
        count = upstream.subscriptions.get(uri, 0) - 1
        if count > 0:
            upstream.subscriptions[uri] = count
        else:
            upstream.subscriptions.pop(uri, None)

    def _unsubscribe(self, req: Request) -> None:
        uri = req.uri()
        if uri is not None and uri in req.session.subscriptions:
            req.session.subscriptions.discard(uri)
            self._release_subscription(uri)
        self.send(req.session, jsonrpc.result_response(req.id, {}))

    def _release_subscription(self, uri: str) -> None:
        upstream = self.router.route_uri(uri)
        if upstream is None:
            return
        count = upstream.subscriptions.get(uri, 0) - 1
        if count > 0:
            upstream.subscriptions[uri] = count
            return
        upstream.subscriptions.pop(uri, None)
        if not upstream.ready:
            return
        if upstream.era == "modern":
            upstream.listen(upstream.subscriptions)
        else:
            self._background(upstream.call("resources/unsubscribe", {"uri": uri}))

    def _hold_subscription(self, upstream: Upstream, uri: str) -> None:
        """Count one more holder of ``uri``; the first asks the upstream for updates."""
        count = upstream.subscriptions.get(uri, 0)
        upstream.subscriptions[uri] = count + 1
        if count or not upstream.ready:
            return
        if upstream.era == "modern":
            upstream.listen(upstream.subscriptions)
        else:
            self._background(upstream.call("resources/subscribe", {"uri": uri}))

    def _complete(self, req: Request) -> None:
        """completion/complete: routed by the prompt or the resource template named."""
        ref = req.ref()
        if ref is None:
            self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                            "completion/complete requires params.ref")
            return
        ref_type, name, uri = ref
        if ref_type == "ref/prompt" and name is not None:
            route = self.router.route(KIND_PROMPT, name)
            if route is None:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown prompt: {name}")
                return
            upstream, upstream_name = route
            self._forward(req, upstream, None if upstream_name == name else ("ref", upstream_name))
        elif ref_type == "ref/resource" and uri is not None:
            owner = self.router.route_template(uri) or self.router.route_uri(uri)
            if owner is None:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown resource template: {uri}")
                return
            self._forward(req, owner)
        else:
            self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                            "params.ref must be a ref/prompt with a name or a ref/resource "
                            "with a uri")

    def _initialize(self, req: Request) -> None:
        session, env = req.session, req.env
        if session.initialized:
            self.send_error(session, env.id, jsonrpc.INVALID_REQUEST,
                            "the session is already initialized")
            return
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
        except msgspec.DecodeError as exc:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}")
            return
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            "initialize requires params.protocolVersion")
            return
        requested = params["protocolVersion"]
        # basic/lifecycle "Version Negotiation": answer the client's version when we
        # support it, otherwise the latest we do; the client decides whether to go on.
        version = requested if requested in LEGACY_VERSIONS else LATEST_LEGACY
        session.protocol_version = version
        caps = params.get("capabilities")
        session.client_capabilities = caps if isinstance(caps, dict) else {}
        info = params.get("clientInfo")
        session.client_info = info if isinstance(info, dict) else {}
        session.initialized = True
        session.era = "legacy"
        self.send(session, jsonrpc.result_response(env.id, {  # type: ignore[arg-type]
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
            **({"instructions": text} if (text := self.instructions()) else {}),
        }))

    def capabilities(self) -> dict[str, Any]:
        """What the gateway offers, in either era: the union of its upstreams'
        capabilities. List changes are always announced (and delivered on listen streams)
        because the gateway's own lists change whenever an upstream comes or goes."""
        caps: dict[str, Any] = {}
        for upstream in self.upstreams.values():
            theirs = upstream.capabilities
            if "tools" in theirs:
                caps["tools"] = {"listChanged": True}
            if "prompts" in theirs:
                caps["prompts"] = {"listChanged": True}
            if "resources" in theirs:
                res = caps.setdefault("resources", {"listChanged": True})
                if (theirs["resources"] or {}).get("subscribe"):
                    res["subscribe"] = True
            if "logging" in theirs:
                caps["logging"] = {}
            if "completions" in theirs:
                caps["completions"] = {}
        return caps

    def instructions(self) -> str | None:
        ups = [u for u in self.upstreams.values() if u.instructions]
        if len(self.upstreams) == 1:
            return ups[0].instructions if ups else None
        return "\n\n".join(f"## {u.name}\n{u.instructions}" for u in ups) or None

    def _ping(self, req: Request) -> None:
        self.send(req.session, jsonrpc.result_response(req.id, {}))

    def _list(self, kind: str) -> Handler:
        attribute = {"tools": "tools", "prompts": "prompts", "resources": "resources",
                     "resourceTemplates": "resource_templates"}[kind]
        capability = "resources" if kind == "resourceTemplates" else kind

        def handler(req: Request) -> None:
            # The aggregated list is served whole: a cursor is opaque, and none is issued.
            items = getattr(self.router, attribute)
            if not req.modern:
                self.send(req.session, jsonrpc.result_response(req.id, {kind: items}))
                return
            # server/discover declares only what some upstream serves, and a family it
            # does not declare must not answer (the conformance suite checks both ways).
            if capability not in self.capabilities():
                self.send_error(req.session, req.id, jsonrpc.METHOD_NOT_FOUND,
                                f"Method not found: {req.method} (no upstream offers "
                                f"{capability})")
                return
            self.send(req.session, jsonrpc.result_response(req.id, complete_result(
                {kind: items}, cacheable=True, server_info=SERVER_INFO)))
        return handler

    # -- modern (2026-07-28) clients -------------------------------------------------
    def _discover(self, req: Request) -> None:
        """server/discover: answered by the gateway itself, for all its upstreams."""
        result: dict[str, Any] = {
            "resultType": "complete",
            # The same list -32022 names as supported (notes §6.3).
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self.capabilities(),
        }
        if text := self.instructions():
            result["instructions"] = text
        result["_meta"] = {META_SERVER_INFO: SERVER_INFO}
        result.update(CACHE_HINTS)
        self.send(req.session, jsonrpc.result_response(req.id, result))

    def _forward_modern(self, req: Request, upstream: Upstream,
                        rename: tuple[str, str] | None, uri: str | None) -> None:
        """Send a modern client's request on. A modern upstream gets the client's own
        ``_meta`` and MRTR members (inputResponses, requestState) as they are; a legacy
        one gets neither (notes §3)."""
        session, env, client_id = req.session, req.env, req.id
        params, meta = req.params, req.meta
        assert params is not None and meta is not None
        if self._id_taken(session, client_id):
            return
        if self.checks:
            called = params.get("name")
            if self._refused(session, client_id, upstream, env.method,  # type: ignore[arg-type]
                                  called if isinstance(called, str) else None):
                return
        if upstream.era != "modern" and "requestState" in params:
            self.mrtr.resume(session, env, params, meta, upstream)
            return
        name = uri if uri is not None else params.get("name")
        params = dict(params)
        self._rename(params, rename)
        token = meta.progress_token
        level = LOG_LEVELS[meta.log_level] if meta.log_level is not None else None
        upstream_id = upstream.allocate_id()
        if upstream.era == "modern":
            shape = SHAPE_MODERN_FROM_MODERN
            sent_meta = dict(params["_meta"])
            sent_meta[META_PROTOCOL_VERSION] = upstream.protocol_version
            if token is not None:
                sent_meta["progressToken"] = upstream_id
            params["_meta"] = sent_meta
        else:
            shape = SHAPE_MODERN_FROM_LEGACY
            params = strip_modern_meta(params)
            if token is not None:
                params["_meta"]["progressToken"] = upstream_id
        if level is not None and upstream.ready:
            self.hold_log_level(upstream, level)
        method: str = env.method  # type: ignore[assignment]
        self.forward(upstream, Pending(
            session, client_id, upstream.deadline(), token,
            method, shape=shape, log_level=level if upstream.ready else None, uri=uri,
            name=name if isinstance(name, str) else None,
            client_capabilities=meta.client_capabilities), jsonrpc.encode(params), upstream_id)

    def forward(self, upstream: Upstream, pending: Pending, params: Raw | bytes | UnsetType,
                upstream_id: int | None = None) -> None:
        """Send a client's request on. Every end of it comes back through one of
        ``answered``, ``abandoned`` (then perhaps ``timed_out``) or ``failed``."""
        session = pending.session
        sent = upstream.forward(pending, session, pending.method, params, upstream_id)
        if sent is None:
            self.send_error(session, pending.client_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                            f"upstream {upstream.name!r} is not available ({upstream.state})")
            return
        session.inflight[pending.client_id] = (upstream, sent)

    # -- the ends of a forwarded request (UpstreamEvents) --------------------------------
    def answered(self, upstream: Upstream, pending: Pending, env: Envelope) -> None:
        if pending.parked is not None:
            self.mrtr.settled_while_parked(pending.parked, env)
            return
        session = pending.session
        session.inflight.pop(pending.client_id, None)
        if pending.log_level is not None:
            self.release_log_level(upstream, pending.log_level)
        if pending.subscription is not None and env.error is not UNSET:
            self.subscription_refused(session, upstream, pending.subscription)
        if session.closed:
            return
        if pending.shape != SHAPE_NONE:
            reshaped = self.reshape_response(upstream, pending, env)
            if reshaped is None:
                return  # the gateway asks the client for input first
            self.send(session, reshaped)
        else:
            self.send(session, jsonrpc.reencode(Envelope(
                jsonrpc="2.0", id=pending.client_id, result=env.result, error=env.error)))

    def abandoned(self, upstream: Upstream, pending: Pending) -> None:
        pending.session.inflight.pop(pending.client_id, None)
        if pending.log_level is not None:
            self.release_log_level(upstream, pending.log_level)

    def timed_out(self, upstream: Upstream, pending: Pending) -> None:
        self.send_error(pending.session, pending.client_id, jsonrpc.REQUEST_TIMEOUT,
                        f"upstream {upstream.name!r} did not answer {pending.method} "
                        f"within {upstream.config.request_timeout:g} s")

    def failed(self, upstream: Upstream, pending: Pending, message: str) -> None:
        pending.session.inflight.pop(pending.client_id, None)
        self.send_error(pending.session, pending.client_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                        message)

    def reshape_response(self, upstream: Upstream, pending: Pending, env: Envelope
                         ) -> bytes | None:
        """The answer to a request that crossed eras, or a modern client's answer, in
        the shape its client expects; None when it is an ``input_required`` that the
        gateway puts to a legacy client first (gateway/mrtr.py)."""
        client_id = pending.client_id
        shape = pending.shape
        if env.error is not UNSET:
            if shape == SHAPE_MODERN_FROM_LEGACY:
                error = _any.decode(env.error)  # type: ignore[arg-type]
                if isinstance(error, dict) and error.get("code") == jsonrpc.RESOURCE_NOT_FOUND:
                    # Modern servers MUST NOT answer -32002 (basic/index "Error Codes").
                    data = error.get("data")
                    data = dict(data) if isinstance(data, dict) else {}
                    if pending.uri is not None:
                        data.setdefault("uri", pending.uri)
                    return jsonrpc.error_response(client_id, jsonrpc.INVALID_PARAMS,
                                                  str(error.get("message") or
                                                      "Resource not found"), data)
            return jsonrpc.reencode(Envelope(jsonrpc="2.0", id=client_id, error=env.error))
        result = _any.decode(env.result)  # type: ignore[arg-type]
        if not isinstance(result, dict):
            return jsonrpc.reencode(Envelope(jsonrpc="2.0", id=client_id, result=env.result))
        if shape == SHAPE_LEGACY_FROM_MODERN:
            if result.get("resultType") == "input_required":
                return self.mrtr.input_required(upstream, pending, result)
            return jsonrpc.result_response(client_id, legacy_result(result))
        return jsonrpc.result_response(client_id, complete_result(
            result, cacheable=pending.method == "resources/read", server_info=SERVER_INFO))

    # -- subscriptions/listen ------------------------------------------------------------
    def _listen(self, req: Request) -> None:
        """basic/patterns/subscriptions: acknowledge the honoured subset first; the
        stream then gets the changes it asked for until the client goes or cancels, or
        the gateway stops (``_listen_result``)."""
        session, listen_id, params = req.session, req.id, req.params or {}
        if self._id_taken(session, listen_id):
            return
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions", []) if isinstance(wanted, dict) else None
        if not isinstance(wanted, dict) or not isinstance(uris, list) or \
                not all(isinstance(uri, str) for uri in uris):
            self.send_error(session, listen_id, jsonrpc.INVALID_PARAMS,
                            "subscriptions/listen requires params.notifications, an object "
                            "whose resourceSubscriptions (if any) is a list of URIs")
            return
        served = self.capabilities()
        honoured: dict[str, Any] = {flag: True for flag, kind in LISTEN_FLAGS.items()
                                    if wanted.get(flag) is True and kind in served}
        held = [(uri, upstream) for uri in dict.fromkeys(uris)
                if (upstream := self.router.route_uri(uri)) is not None
                and self._can_subscribe(upstream)]
        if held:
            honoured["resourceSubscriptions"] = [uri for uri, _ in held]
        session.listens[listen_id] = Listen(
            listen_id, "toolsListChanged" in honoured, "promptsListChanged" in honoured,
            "resourcesListChanged" in honoured, tuple(uri for uri, _ in held))
        self.send(session, jsonrpc.notification(SUBSCRIPTIONS_ACKNOWLEDGED, {
            "_meta": {META_SUBSCRIPTION_ID: listen_id}, "notifications": honoured}))
        for uri, upstream in held:
            self._hold_subscription(upstream, uri)

    def _end_listen(self, listen: Listen) -> None:
        for uri in listen.uris:
            self._release_subscription(uri)

    @staticmethod
    def _listen_result(listen_id: int | str) -> bytes:
        return jsonrpc.result_response(listen_id, {
            "resultType": "complete", "_meta": {META_SUBSCRIPTION_ID: listen_id}})

    @staticmethod
    def _tagged(method: str, params: dict[str, Any], listen_id: int | str) -> bytes:
        meta = params.get("_meta")
        meta = {**meta, META_SUBSCRIPTION_ID: listen_id} if isinstance(meta, dict) else \
            {META_SUBSCRIPTION_ID: listen_id}
        return jsonrpc.notification(method, {**params, "_meta": meta})

    def _set_level(self, req: Request) -> None:
        session, env = req.session, req.env
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
            level = LOG_LEVELS[params["level"]]
        except (msgspec.DecodeError, KeyError, TypeError):
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            f"params.level must be one of {', '.join(LOG_LEVELS)}")
            return
        if session.log_level is not None:
            self._count_session_level(session.log_level, -1)
        session.log_level = level
        self._count_session_level(level, 1)
        self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]
        self._sync_log_levels()

    def _count_session_level(self, level: int, delta: int) -> None:
        count = self._session_levels.get(level, 0) + delta
        if count > 0:
            self._session_levels[level] = count
        else:
            self._session_levels.pop(level, None)

    def _sync_log_levels(self, only: Upstream | None = None) -> None:
        """Ask each legacy upstream for the most verbose level any session, or any
        modern request in flight on it, wants; each then gets only what its own level
        admits. The request is written at once, so it reaches the upstream before a
        request forwarded after it."""
        session_levels = list(self._session_levels)
        for upstream in (only,) if only is not None else self.upstreams.values():
            if upstream.era == "modern" or "logging" not in upstream.capabilities:
                continue
            levels = session_levels + list(upstream.request_levels)
            wanted = LOG_LEVEL_NAMES[min(levels)] if levels else "emergency"
            if upstream.log_level != wanted:
                upstream.log_level = wanted
                if upstream.ready:
                    upstream.send_call("logging/setLevel", {"level": wanted})

    def hold_log_level(self, upstream: Upstream, level: int) -> None:
        counts = upstream.request_levels
        counts[level] = counts.get(level, 0) + 1
        if counts[level] == 1 and upstream.era == "legacy":
            self._sync_log_levels(upstream)

    def release_log_level(self, upstream: Upstream, level: int) -> None:
        """A modern request that asked for logs is over."""
        counts = upstream.request_levels
        count = counts.get(level, 0) - 1
        if count > 0:
            counts[level] = count
            return
        counts.pop(level, None)
        if upstream.era == "legacy":
            self._sync_log_levels(upstream)

    def _client_notification(self, session: DownstreamSession, method: str,
                             env: Envelope) -> None:
        if method == "notifications/cancelled":
            try:
                params = _any.decode(env.params) if env.params is not UNSET else {}
                request_id = params.get("requestId")
            except (msgspec.DecodeError, AttributeError):
                return
            if not isinstance(request_id, (int, str)):
                return
            hit = session.inflight.get(request_id)
            if hit is not None:
                upstream, upstream_id = hit
                reason = params.get("reason")
                upstream.cancel(upstream_id, reason if isinstance(reason, str)
                                else "cancelled by the client")
                self.mrtr.client_cancelled(session, request_id)
            elif request_id in session.listens:
                # basic/patterns/subscriptions "Cancellation" on stream transports.
                self._end_listen(session.listens.pop(request_id))
        elif method == "notifications/initialized":
            session.initialized = True
        elif method == "notifications/progress":
            log.debug("ignoring client progress notification")
        # Other notifications (roots/list_changed, unknown ones) need no answer.

    def _client_response(self, session: DownstreamSession, env: Envelope) -> None:
        target = session.outgoing.pop(env.id, None) if type(env.id) is int else None
        if target is None:
            if self.mrtr.client_answer(session, env):
                return
            log.debug("session %s answered unknown request %r", session.id, env.id)
            return
        upstream, upstream_request_id = target
        if upstream.ready:
            upstream.write(jsonrpc.reencode(Envelope(
                jsonrpc="2.0", id=upstream_request_id, result=env.result, error=env.error)))

    # -- upstream to gateway ---------------------------------------------------------
    def upstream_notification(self, upstream: Upstream, env: Envelope) -> None:
        method = env.method
        if method == "notifications/progress":
            params = _any.decode(env.params) if env.params is not UNSET else {}
            pending = upstream.pending_for_token(params.get("progressToken"))
            if pending is None or pending.progress_token is None:
                return
            params["progressToken"] = pending.progress_token
            self.send(pending.session, jsonrpc.notification(method, params))
        elif method == "notifications/message":
            self._log_message(upstream, env)
        elif method == "notifications/resources/updated":
            params = _any.decode(env.params) if env.params is not UNSET else {}
            if self._from_listen(upstream, params):
                self._resource_updated(upstream, params)
        elif method in LIST_KINDS:
            self._refresh(upstream, LIST_KINDS[method])
        elif method == SUBSCRIPTIONS_ACKNOWLEDGED:
            params = _any.decode(env.params) if env.params is not UNSET else {}
            meta = params.get("_meta")
            if isinstance(meta, dict) and upstream.listen_id is not None and \
                    meta.get(META_SUBSCRIPTION_ID) == upstream.listen_id:
                upstream.listen_acknowledged.set()
        elif method == "notifications/cancelled":
            params = _any.decode(env.params) if env.params is not UNSET else {}
            self.mrtr.upstream_cancelled(upstream, params.get("requestId"))
            for session in self.sessions.values():
                for out_id, (owner, request_id) in list(session.outgoing.items()):
                    if owner is upstream and request_id == params.get("requestId"):
                        del session.outgoing[out_id]
                        self.send(session, jsonrpc.notification(
                            method, {**params, "requestId": out_id}))
        else:
            target = self.owner_of(upstream)
            if target is not None and not self._modern_pending(upstream, target):
                self.send(target, jsonrpc.reencode(env))
            else:
                self._unattributed(upstream, str(method))

    @staticmethod
    def _from_listen(upstream: Upstream, params: dict[str, Any]) -> bool:
        """Strip a modern upstream's subscription id; False for a stream the gateway
        has already replaced (its URIs may be ones nobody holds any more)."""
        meta = params.get("_meta")
        if not isinstance(meta, dict) or META_SUBSCRIPTION_ID not in meta:
            return True
        subscription = meta.pop(META_SUBSCRIPTION_ID)
        if not meta:
            del params["_meta"]
        return subscription == upstream.listen_id

    def _resource_updated(self, upstream: Upstream, params: dict[str, Any]) -> None:
        uri = params.get("uri")
        if not isinstance(uri, str) or self.router.route_uri(uri) is not upstream:
            return
        method = "notifications/resources/updated"
        plain = jsonrpc.notification(method, params)
        for session in list(self.sessions.values()):
            if uri in session.subscriptions:
                self.send(session, plain)
            for listen in list(session.listens.values()):
                if uri in listen.uris:
                    self.send(session, self._tagged(method, params, listen.request_id))

    def owner_of(self, upstream: Upstream) -> DownstreamSession | None:
        """The session that a message naming no client request (a server-to-client
        request, a log message) certainly belongs to, or None when the gateway cannot
        know: nothing that may be one client's ever reaches another (PROTOCOL.md,
        "Whose message is it?")."""
        if upstream.config.attribution == "in_flight":
            sessions = {p.session for p in upstream.pending.values()}
            session = sessions.pop() if len(sessions) == 1 else None
        else:
            sole = upstream.sole_user
            session = sole if isinstance(sole, DownstreamSession) else None
        return session if session is not None and not session.closed else None

    def _unattributed(self, upstream: Upstream, method: str) -> None:
        upstream.unattributed += 1
        key = (upstream.name, method)
        if key not in self._unattributed_logged:
            self._unattributed_logged.add(key)
            log.warning("upstream %r sent %s naming no client request while several "
                        "clients use it: not delivered (logged once; counted in "
                        "mcpfast_upstream_unattributed_total; see upstreams.%s.attribution)",
                        upstream.name, method, upstream.name)

    @staticmethod
    def _modern_pending(upstream: Upstream, session: DownstreamSession
                        ) -> list[tuple[int, Pending]]:
        """``session``'s modern requests in flight on ``upstream``."""
        return [(uid, p) for uid, p in upstream.pending.items()
                if p.session is session and p.shape in MODERN_SHAPES]

    def _log_message(self, upstream: Upstream, env: Envelope) -> None:
        params = _any.decode(env.params) if env.params is not UNSET else {}
        level = LOG_LEVELS.get(str(params.get("level")), LOG_LEVELS["info"])
        data = jsonrpc.reencode(env)
        # On a shared stdio connection a log message names no request: it goes only to
        # the session it certainly belongs to (owner_of), never to everyone who asked
        # for logs. A modern request gets it only when its _meta asked for the level
        # (logging.mdx: never for a request without a level, never on a listen stream).
        owner = self.owner_of(upstream)
        if owner is None:
            self._unattributed(upstream, "notifications/message")
            return
        mine = [p for p in upstream.pending.values() if p.session is owner]
        if any(p.log_level is not None and level >= p.log_level for p in mine) or \
                (owner.wants_log(level) and
                 (not mine or any(p.shape not in MODERN_SHAPES for p in mine))):
            self.send(owner, data)

    def upstream_request(self, upstream: Upstream, env: Envelope) -> None:
        method = env.method
        request_id = env.id
        assert isinstance(method, str) and isinstance(request_id, (int, str))
        if method == "ping":
            upstream.respond(request_id, {})
            return
        session = self.owner_of(upstream)
        if session is None:
            self._unattributed(upstream, method)
            upstream.respond_error(request_id, jsonrpc.INTERNAL_ERROR,
                                   f"mcpfast cannot route {method}: several clients share "
                                   "this server, and the request names none of them")
            return
        if self._modern_pending(upstream, session):
            # A 2026-07-28 client takes no server-to-client requests: it is asked with
            # an input_required result instead.
            self.mrtr.ask_modern_client(upstream, session, method, request_id, env.params)
            return
        capability = CLIENT_CAPABILITY_FOR.get(method)
        if capability is not None and capability not in session.client_capabilities:
            upstream.respond_error(request_id, jsonrpc.METHOD_NOT_FOUND,
                                   f"the client does not support {method}")
            return
        out_id = session.next_out_id()
        session.outgoing[out_id] = (upstream, request_id)
        self.send(session, jsonrpc.reencode(Envelope(jsonrpc="2.0", id=out_id, method=method,
                                                     params=env.params)))

    def upstream_ready(self, upstream: Upstream) -> None:
        before = self._lists()
        self.router.rebuild()
        self._announce_changes(before)
        if upstream.log_level is not None:
            self._sync_log_levels()
        self._resubscribe(upstream)

    def _resubscribe(self, upstream: Upstream) -> None:
        """A restarted upstream knows none of the subscriptions that sessions still
        hold on it: ask for each of them again (a modern upstream: in one listen)."""
        counts: dict[str, int] = {}
        for session in self.sessions.values():
            held = list(session.subscriptions)
            for listen in session.listens.values():
                held.extend(listen.uris)
            for uri in held:
                if self.router.route_uri(uri) is upstream:
                    counts[uri] = counts.get(uri, 0) + 1
        upstream.subscriptions = counts
        if upstream.era == "modern":
            if counts:
                upstream.listen(counts)
            return
        for uri in counts:
            self._background(upstream.call("resources/subscribe", {"uri": uri}))

    def upstream_down(self, upstream: Upstream) -> None:
        """An upstream died. Its catalog stays routed so that calls fail at once with a
        clear error while it restarts, instead of 'unknown tool'."""
        upstream.subscriptions.clear()

    def _refresh(self, upstream: Upstream, kinds: tuple[str, ...]) -> None:
        async def refresh() -> None:
            try:
                await upstream.fetch_catalog(kinds)
            except UpstreamError as exc:
                log.warning("could not refresh %s of %r: %s", "/".join(kinds), upstream.name,
                            exc.message)
                return
            before = self._lists()
            self.router.rebuild()
            self._announce_changes(before)
        self._background(refresh())

    def _lists(self) -> dict[str, list[dict[str, Any]]]:
        r = self.router
        return {"tools": r.tools, "prompts": r.prompts,
                "resources": r.resources + r.resource_templates}

    def _announce_changes(self, before: dict[str, list[dict[str, Any]]]) -> None:
        after = self._lists()
        for kind in ("tools", "prompts", "resources"):
            if before[kind] != after[kind]:
                method = f"notifications/{kind}/list_changed"
                data = jsonrpc.notification(method)
                for session in list(self.sessions.values()):
                    if session.initialized:
                        self.send(session, data)
                    for listen in list(session.listens.values()):
                        if listen.wants(kind):
                            self.send(session, self._tagged(method, {}, listen.request_id))

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background upstream call failed: %s", exc)

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "ready": self.ready,
            "draining": self.draining,
            "listeners": [listener.describe() for listener in self.listeners],
            "connections": {"open": len(self.sessions),
                            "total": self.counters.connections_total},
            "in_flight": self.in_flight(),
            "upstreams": [u.describe() for u in self.upstreams.values()],
            "routes": {"tools": len(self.router.tools), "prompts": len(self.router.prompts),
                       "resources": len(self.router.resources),
                       "resource_templates": len(self.router.resource_templates),
                       "collisions": self.router.collisions},
        }
