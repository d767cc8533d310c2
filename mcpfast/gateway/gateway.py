"""Gateway: wires listeners, sessions, the router and the upstreams; starts and drains.

``handle`` is the data path for every client message. It answers what the gateway owns
(the handshake, ping, the aggregated lists, logging levels) and forwards the rest to the
upstream the router picks; ``upstream_notification`` and ``upstream_request`` carry
traffic the other way. Every client request gets exactly one answer (DESIGN.md).
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
from ..metrics import Counters
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import LATEST_LEGACY, LEGACY_VERSIONS, PRE_INIT_METHODS
from .router import KIND_PROMPT, KIND_TOOL, Router
from .session import LOG_LEVELS, DownstreamSession
from .stdio import StdioUpstream
from .upstream import Upstream, UpstreamError

log = logging.getLogger("mcpfast.gateway")

SWEEP_INTERVAL = 0.5
LIST_KINDS = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resourceTemplates"),
}
CLIENT_CAPABILITY_FOR = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}


class _Meta(msgspec.Struct, gc=False):
    progressToken: int | str | UnsetType = UNSET  # noqa: N815 - the wire name


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


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters()
        self.sessions: dict[str, DownstreamSession] = {}
        self.upstreams: dict[str, Upstream] = {
            name: StdioUpstream(name, index, up, self)
            for index, (name, up) in enumerate(config.upstreams.items())
        }
        self.router = Router(list(self.upstreams.values()), config.routing.prefix,
                             config.routing.separator)
        self.started_at = time.time()
        self.draining = False
        self.listening = False
        self.listeners: list[Any] = []
        self._session_ids = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Callable[[DownstreamSession, Envelope], None]] = {
            "initialize": self._initialize,
            "ping": self._ping,
            "tools/list": self._list("tools"),
            "prompts/list": self._list("prompts"),
            "resources/list": self._list("resources"),
            "resources/templates/list": self._list("resourceTemplates"),
            "tools/call": self._call_by_name(KIND_TOOL, "tool"),
            "prompts/get": self._call_by_name(KIND_PROMPT, "prompt"),
            "resources/read": self._call_by_uri,
            "resources/subscribe": self._subscribe,
            "resources/unsubscribe": self._unsubscribe,
            "completion/complete": self._complete,
            "logging/setLevel": self._set_level,
        }

    # -- state -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        ups = self.upstreams.values()
        return (self.listening and not self.draining
                and all(u.initialized_once.is_set() for u in ups) and any(u.ready for u in ups))

    def in_flight(self) -> int:
        return sum(len(u.pending) for u in self.upstreams.values())

    # -- lifecycle -------------------------------------------------------------------
    async def start_upstreams(self) -> None:
        """Start every upstream; return once each is initialized or its init_timeout ran
        out (a late one joins the catalog when it becomes ready)."""
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
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweeper")

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
            session.close(1001, "gateway shutting down")
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(u.stop() for u in self.upstreams.values()),
                             return_exceptions=True)

    async def _sweep(self) -> None:
        idle = self.config.listen.idle_timeout
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for upstream in self.upstreams.values():
                if upstream.pending:
                    upstream.sweep(now)
            for session in list(self.sessions.values()):
                if session.idle_for(now) > idle and not session.inflight:
                    log.info("closing idle session %s (%s)", session.id, session.peer)
                    session.close(1001, "idle timeout")

    # -- sessions --------------------------------------------------------------------
    def open_session(self, transport: str, peer: str, send: Callable[[bytes], None],
                     close: Callable[[int, str], None]) -> DownstreamSession:
        session_id = f"{os.getpid():x}-{next(self._session_ids)}"
        session = DownstreamSession(session_id, transport, peer, send, close)
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
        for uri in session.subscriptions:
            self._release_subscription(uri)
        session.subscriptions.clear()
        if session.log_level is not None:
            self._sync_log_levels()

    def send(self, session: DownstreamSession, data: bytes) -> None:
        session.messages_out += 1
        self.counters.messages_out += 1
        session.send(data)

    def send_error(self, session: DownstreamSession, request_id: Any, code: int,
                   message: str) -> None:
        """Answer ``request_id`` (None for a message whose id could not be read)."""
        self.counters.errors += 1
        if not session.closed:
            self.send(session, jsonrpc.error_response(request_id, code, message))

    # -- client to gateway -----------------------------------------------------------
    def handle(self, session: DownstreamSession, data: bytes) -> None:
        """One message from a client."""
        session.messages_in += 1
        self.counters.messages_in += 1
        try:
            env = jsonrpc.decode(data)
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
            if env.id not in session.inflight:
                self.send_error(session, env.id, jsonrpc.INTERNAL_ERROR, "Internal error")

    def _dispatch(self, session: DownstreamSession, method: str, env: Envelope) -> None:
        handler = self._handlers.get(method)
        if handler is None:
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"Method not found: {method}")
        elif not session.initialized and method not in PRE_INIT_METHODS:
            self.send_error(session, env.id, jsonrpc.INVALID_REQUEST,
                            f"{method} before initialize: the session is not initialized")
        elif self.draining:
            self.send_error(session, env.id, jsonrpc.GATEWAY_SHUTTING_DOWN,
                            "the gateway is shutting down")
        else:
            handler(session, env)

    def _params(self, session: DownstreamSession, env: Envelope) -> RouteParams | None:
        if env.params is UNSET:
            return RouteParams()
        try:
            return _route_params.decode(env.params)  # type: ignore[arg-type]
        except msgspec.DecodeError as exc:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}")
            return None

    def _forward(self, session: DownstreamSession, env: Envelope, upstream: Upstream,
                 head: RouteParams, rename: tuple[str, str] | None = None,
                 subscription: str | None = None) -> None:
        """Send ``env`` to ``upstream``, rewriting what must be unique per upstream
        connection (the progress token) and what the router renamed."""
        client_id = env.id
        assert isinstance(client_id, (int, str))
        if client_id in session.inflight:
            self.send_error(session, client_id, jsonrpc.INVALID_REQUEST,
                            f"request id {client_id!r} is already in flight on this session")
            return
        params: Raw | bytes | UnsetType = env.params
        upstream_id: int | None = None
        token = head.meta.progressToken if head.meta is not UNSET else UNSET
        if rename is not None or token is not UNSET:
            full = _any.decode(env.params)  # type: ignore[arg-type]
            if rename is not None:
                key, value = rename
                if key == "ref":
                    full["ref"]["name"] = value
                else:
                    full[key] = value
            upstream_id = upstream.allocate_id()
            if token is not UNSET:
                # Tokens are unique per requester (basic/utilities/progress); the upstream
                # id is unique on this upstream connection, so it serves as the token.
                full["_meta"]["progressToken"] = upstream_id
            params = jsonrpc.encode(full)
        upstream.forward(session, client_id, env.method,  # type: ignore[arg-type]
                         params, None if token is UNSET else token, upstream_id, subscription)

    def _call_by_name(self, kind: int, what: str) -> Callable[[DownstreamSession, Envelope], None]:
        def handler(session: DownstreamSession, env: Envelope) -> None:
            head = self._params(session, env)
            if head is None:
                return
            if head.name is UNSET:
                self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                                f"{env.method} requires params.name")
                return
            route = self.router.route(kind, head.name)
            if route is None:
                self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown {what}: {head.name}")
                return
            upstream, name = route
            self._forward(session, env, upstream, head,
                          None if name == head.name else ("name", name))
        return handler

    def _routed_uri(self, session: DownstreamSession, env: Envelope
                    ) -> tuple[RouteParams, Upstream] | None:
        head = self._params(session, env)
        if head is None:
            return None
        if head.uri is UNSET:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            f"{env.method} requires params.uri")
            return None
        upstream = self.router.route_uri(head.uri)
        if upstream is None:
            self.send_error(session, env.id, jsonrpc.RESOURCE_NOT_FOUND,
                            f"Resource not found: {head.uri}")
            return None
        return head, upstream

    def _call_by_uri(self, session: DownstreamSession, env: Envelope) -> None:
        routed = self._routed_uri(session, env)
        if routed is not None:
            self._forward(session, env, routed[1], routed[0])

    def _subscribe(self, session: DownstreamSession, env: Envelope) -> None:
        routed = self._routed_uri(session, env)
        if routed is None:
            return
        head, upstream = routed
        uri = head.uri
        assert isinstance(uri, str)
        if uri in session.subscriptions:
            self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]
            return
        if not (upstream.capabilities.get("resources") or {}).get("subscribe"):
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"upstream {upstream.name!r} does not support resource subscriptions")
            return
        count = upstream.subscriptions.get(uri, 0)
        session.subscriptions.add(uri)
        upstream.subscriptions[uri] = count + 1
        if count == 0:
            self._forward(session, env, upstream, head, subscription=uri)
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

    def _unsubscribe(self, session: DownstreamSession, env: Envelope) -> None:
        head = self._params(session, env)
        if head is None:
            return
        if isinstance(head.uri, str) and head.uri in session.subscriptions:
            session.subscriptions.discard(head.uri)
            self._release_subscription(head.uri)
        self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]

    def _release_subscription(self, uri: str) -> None:
        upstream = self.router.route_uri(uri)
        if upstream is None:
            return
        count = upstream.subscriptions.get(uri, 0) - 1
        if count > 0:
            upstream.subscriptions[uri] = count
            return
        upstream.subscriptions.pop(uri, None)
        if upstream.ready:
            self._background(upstream.call("resources/unsubscribe", {"uri": uri}))

    def _complete(self, session: DownstreamSession, env: Envelope) -> None:
        head = self._params(session, env)
        if head is None:
            return
        ref = head.ref
        if ref is UNSET:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            "completion/complete requires params.ref")
            return
        if ref.type == "ref/prompt" and isinstance(ref.name, str):
            route = self.router.route(KIND_PROMPT, ref.name)
            if route is None:
                self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown prompt: {ref.name}")
                return
            upstream, name = route
            self._forward(session, env, upstream, head,
                          None if name == ref.name else ("ref", name))
        elif ref.type == "ref/resource" and isinstance(ref.uri, str):
            owner = self.router.route_template(ref.uri) or self.router.route_uri(ref.uri)
            if owner is None:
                self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown resource template: {ref.uri}")
                return
            self._forward(session, env, owner, head)
        else:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            "params.ref must be a ref/prompt with a name or a ref/resource "
                            "with a uri")

    def _initialize(self, session: DownstreamSession, env: Envelope) -> None:
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
        self.send(session, jsonrpc.result_response(env.id, {  # type: ignore[arg-type]
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": {"name": "mcpfast", "title": "mcpfast MCP gateway",
                           "version": __version__},
            **({"instructions": text} if (text := self.instructions()) else {}),
        }))

    def capabilities(self) -> dict[str, Any]:
        """What the gateway offers: the union of its upstreams' capabilities. List
        changes are always announced because the gateway's own lists change whenever an
        upstream comes or goes."""
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

    def _ping(self, session: DownstreamSession, env: Envelope) -> None:
        self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]

    def _list(self, kind: str) -> Callable[[DownstreamSession, Envelope], None]:
        attribute = {"tools": "tools", "prompts": "prompts", "resources": "resources",
                     "resourceTemplates": "resource_templates"}[kind]

        def handler(session: DownstreamSession, env: Envelope) -> None:
            # The aggregated list is served whole: a cursor is opaque, and none is issued.
            items = getattr(self.router, attribute)
            self.send(session, jsonrpc.result_response(env.id, {kind: items}))  # type: ignore[arg-type]
        return handler

    def _set_level(self, session: DownstreamSession, env: Envelope) -> None:
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
            level = LOG_LEVELS[params["level"]]
        except (msgspec.DecodeError, KeyError, TypeError):
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            f"params.level must be one of {', '.join(LOG_LEVELS)}")
            return
        session.log_level = level
        self.send(session, jsonrpc.result_response(env.id, {}))  # type: ignore[arg-type]
        self._sync_log_levels()

    def _sync_log_levels(self) -> None:
        """Ask each upstream for the most verbose level any session wants; each session
        then gets only what its own level admits."""
        levels = [s.log_level for s in self.sessions.values() if s.log_level is not None]
        names = {v: k for k, v in LOG_LEVELS.items()}
        wanted = names[min(levels)] if levels else "emergency"
        for upstream in self.upstreams.values():
            if upstream.log_level != wanted and "logging" in upstream.capabilities:
                upstream.log_level = wanted
                if upstream.ready:
                    self._background(upstream.call("logging/setLevel", {"level": wanted}))

    def _client_notification(self, session: DownstreamSession, method: str,
                             env: Envelope) -> None:
        if method == "notifications/cancelled":
            try:
                params = _any.decode(env.params) if env.params is not UNSET else {}
                request_id = params.get("requestId")
            except (msgspec.DecodeError, AttributeError):
                return
            hit = session.inflight.get(request_id) if isinstance(request_id, (int, str)) \
                else None
            if hit is not None:
                upstream, upstream_id = hit
                reason = params.get("reason")
                upstream.cancel(upstream_id, reason if isinstance(reason, str)
                                else "cancelled by the client")
        elif method == "notifications/initialized":
            session.initialized = True
        elif method == "notifications/progress":
            log.debug("ignoring client progress notification")
        # Other notifications (roots/list_changed, unknown ones) need no answer.

    def _client_response(self, session: DownstreamSession, env: Envelope) -> None:
        target = session.outgoing.pop(env.id, None) if type(env.id) is int else None
        if target is None:
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
            uri = params.get("uri")
            data = jsonrpc.reencode(env)
            for session in list(self.sessions.values()):
                if uri in session.subscriptions and self.router.route_uri(uri) is upstream:
                    self.send(session, data)
        elif method in LIST_KINDS:
            self._refresh(upstream, LIST_KINDS[method])
        elif method == "notifications/cancelled":
            params = _any.decode(env.params) if env.params is not UNSET else {}
            for session in self.sessions.values():
                for out_id, (owner, request_id) in list(session.outgoing.items()):
                    if owner is upstream and request_id == params.get("requestId"):
                        del session.outgoing[out_id]
                        self.send(session, jsonrpc.notification(
                            method, {**params, "requestId": out_id}))
        else:
            target = self._single_session(upstream)
            if target is not None:
                self.send(target, jsonrpc.reencode(env))
            else:
                log.debug("dropping %s from %r: no single session to give it to",
                          method, upstream.name)

    def _single_session(self, upstream: Upstream) -> DownstreamSession | None:
        """The one session with requests in flight on ``upstream``, if there is one."""
        sessions = {p.session for p in upstream.pending.values() if not p.session.closed}
        return sessions.pop() if len(sessions) == 1 else None

    def _log_message(self, upstream: Upstream, env: Envelope) -> None:
        params = _any.decode(env.params) if env.params is not UNSET else {}
        level = LOG_LEVELS.get(str(params.get("level")), LOG_LEVELS["info"])
        data = jsonrpc.reencode(env)
        # On a shared stdio connection a log message names no request; it goes to the
        # one session working on this upstream when there is one, else to every
        # session that asked for logs at that level.
        single = self._single_session(upstream)
        targets = [single] if single is not None else list(self.sessions.values())
        for session in targets:
            if session.wants_log(level):
                self.send(session, data)

    def upstream_request(self, upstream: Upstream, env: Envelope) -> None:
        method = env.method
        request_id = env.id
        assert isinstance(method, str) and isinstance(request_id, (int, str))
        if method == "ping":
            upstream.respond(request_id, {})
            return
        session = self._single_session(upstream)
        if session is None:
            upstream.respond_error(request_id, jsonrpc.INTERNAL_ERROR,
                                   f"mcpfast cannot route {method}: no single client session "
                                   "has a request in flight on this upstream")
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
        hold on it: ask for each of them again."""
        counts: dict[str, int] = {}
        for session in self.sessions.values():
            for uri in session.subscriptions:
                if self.router.route_uri(uri) is upstream:
                    counts[uri] = counts.get(uri, 0) + 1
        upstream.subscriptions = counts
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
                data = jsonrpc.notification(f"notifications/{kind}/list_changed")
                for session in list(self.sessions.values()):
                    if session.initialized:
                        self.send(session, data)

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
