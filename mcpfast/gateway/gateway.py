"""Gateway: wires the listeners' sessions, the router, the upstreams and the parts that
serve them; starts, sweeps (``sweeper.py``), drains and stops.

The parts, one file each: ``requests.py`` (the data path from clients: dispatch in
either era, routing, the policy chain, forwarding), ``relay.py`` (what upstreams say,
back to the right client in its era), ``catalog.py`` (capabilities, the handshakes, the
aggregated lists and their changes), ``subscriptions.py`` (resource subscriptions and
listen streams), ``log_levels.py`` and ``mrtr.py`` (client input across the eras). They
reach the gateway through ``ports.Core``; transports reach it through
``transport.ports.Dispatcher`` and upstreams through ``upstream.base.UpstreamEvents``
(the relay).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .. import __version__
from ..auth.authenticator import Authenticator
from ..config import Config, Interpolated, RateLimitConfig, UpstreamConfig
from ..counters import Counters, ErrorCounts
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.modern import listen_result
from ..transport.admission import Admission
from ..transport.ports import Answer, FlowControl, Identity
from ..upstream.balancer import FAILING_CODES
from ..upstream.kinds import new_upstream
from .access_log import AccessLog
from .authz import Authorization
from .batch import outside_batches
from .call import CANCELLED, ERRORED, FAILED, REFUSED, TIMED_OUT, Request, Upstream
from .catalog import LISTS, Catalog
from .chain import Chain, compile_chain
from .fleet import Fleet
from .legacy_twin import LegacyTwin
from .log_levels import LogLevels
from .mrtr import InputBridge
from .operator import OperatorControls
from .per_session import SessionPool
from .ports import SERVER_INFO
from .rate_limit import RateLimit
from .rate_limit import build as build_rate_limits
from .relay import Relay
from .requests import Requests
from .router import Router
from .session import NOTHING_YET, DownstreamSession
from .subscriptions import Subscriptions
from .sweeper import sweep_forever
from .tool_stats import ToolStats
from .tracing import Tracing

log = logging.getLogger("mcpfast.gateway")

class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters = Counters()
        self.sessions: dict[str, DownstreamSession] = {}
        limits = config.limits
        self.admission = Admission(limits.max_connections, limits.max_connections_per_peer,
                                   limits.reserved_descriptors)
        self.max_in_flight = limits.max_in_flight
        self.rate_limits = build_rate_limits(config.rate_limits)
        self.authenticator = Authenticator(config, self.counters.authentication_refused)
        """Who a client is, asked by the transports at admission (auth/)."""
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
        self._session_prefix = f"{os.getpid():x}-"  # each worker builds its own gateway
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        secret = config.listen.http.session_secret
        self.mrtr = InputBridge(self, secret.encode() if secret else os.urandom(32),
                                SERVER_INFO)
        self.log_levels = LogLevels(self)
        self.catalog = Catalog(self)
        self.subscriptions = Subscriptions(self, self.catalog)
        self.relay = Relay(self, self.catalog, self.subscriptions, self.log_levels, self.mrtr)
        self.upstreams: dict[str, Upstream] = {
            name: self.make_upstream(name, index, up, config.interpolated)
            for index, (name, up) in enumerate(config.upstreams.items())
        }
        self.tracing = Tracing(config.tracing) if config.tracing.enabled else None
        """Spans of the requests that end, and the trace context carried upstream
        (tracing.py); None while tracing is off."""
        self.fleet = Fleet(self)
        """Upstreams a reload adds, removes or replaces (fleet.py)."""
        self.router = Router(list(self.upstreams.values()), config.routing.prefix,
                             config.routing.separator)
        self.requests = Requests(self, self.catalog, self.subscriptions, self.log_levels,
                                 self.mrtr, self.relay.roots_changed,
                                 self.relay.client_progress)
        self.operator = OperatorControls()
        """What the admin API switched at run time (operator.py)."""
        self.chain = self._compile(config)
        self.handle = self.requests.handle
        self.batch = self.requests.batch
        """One message from a client (``transport.ports.Dispatcher``): the data path."""
        self.tool_stats = ToolStats(config.metrics.max_tools) \
            if config.metrics.per_tool else None
        """Requests and latency per upstream and tool (tool_stats.py), for /metrics."""
        access = AccessLog(config.logging.access_sample) if config.logging.access_log \
            else None
        self.observers: tuple[Callable[[Upstream, Request, int], None], ...] = tuple(
            observer.record for observer in (self.tool_stats, access, self.tracing)
            if observer is not None)
        """Told of every request's end (``ended``): per-tool metrics, the access log,
        tracing."""
        self.upstream_errors = ErrorCounts()
        """Requests ended with an error, per upstream, by code and refusing policy."""

    def make_upstream(self, name: str, index: int, config: UpstreamConfig,
                      interpolated: Interpolated) -> Upstream:
        """The upstream ``config`` describes, with its pool of per-session upstreams
        when ``mode = "per_session"``, and the means to a legacy twin (gateway/
        legacy_twin.py) for ``era = "both"``, and for a remote ``era = "auto"`` one."""
        upstream: Upstream = new_upstream(name, index, config, self.relay, interpolated)
        if config.mode == "per_session":
            # The template (balanced over the endpoints when there are several) gives
            # the catalog and serves sessionless requests; each session's own upstream
            # is on one endpoint.
            endpoints = [msgspec.structs.replace(endpoint, replicas=[])
                         for endpoint in (config, *config.replicas)]
            def session_own(endpoint: int) -> Upstream:
                own: Upstream = new_upstream(name, index, endpoints[endpoint], self.relay,
                                             interpolated)
                own.session_own = True
                return own
            upstream.pool = SessionPool(upstream, config, session_own)
            upstream.choose = True
            return upstream
        if upstream.balancer is None and (config.era == "both" or (
                config.era == "auto" and config.transport != "stdio")):
            # A remote server's twin is another session of the same server; a stdio
            # server's is a second process, with state of its own: only when asked.
            legacy = msgspec.structs.replace(config, era="legacy")
            upstream.legacy_twin = LegacyTwin(upstream, lambda: new_upstream(
                name, index, legacy, self.relay, interpolated))
        return upstream

    def pools(self) -> list[SessionPool]:
        return [u.pool for u in self.upstreams.values() if u.pool is not None]

    # -- the config snapshot ---------------------------------------------------------
    def use(self, config: Config) -> list[str]:
        """Put ``config`` in force as a whole, in one step: the seam that hot reload
        builds on. Everything read per connection (the listener's limits), per request
        (the Streamable HTTP settings, JSON depth, in-flight cap) or per call (the policy
        chain and its rate limits) switches at once; a limit whose table did not change
        keeps its buckets; authentication and authorization switch too. Upstreams are
        added, drained and replaced to match (fleet.py). What the running process was
        built from (the worker count, listener and admin addresses, TLS, routing,
        logging, metrics, tracing, the session secret) keeps its old value, and its key
        paths are returned: the listener addresses are for the server to bind anew
        (``listening_on`` then records them), the rest wait for a restart."""
        old = self.config
        listen, http = config.listen, config.listen.http
        held = [path for path, before, after in (
            ("workers", old.workers, config.workers),
            ("admin", old.admin, config.admin),
            ("routing", old.routing, config.routing),
            ("logging", old.logging, config.logging),
            ("metrics", old.metrics, config.metrics),
            # Held rather than switched: the exporter's thread, its queue and the
            # Streamable HTTP endpoints' reading of trace headers are set up once.
            ("tracing", old.tracing, config.tracing),
            ("listen.host", old.listen.host, listen.host),
            ("listen.port", old.listen.port, listen.port),
            ("listen.path", old.listen.path, listen.path),
            ("listen.unix_socket", old.listen.unix_socket, listen.unix_socket),
            ("listen.tls", old.listen.tls, listen.tls),
            ("listen.http.session_secret", old.listen.http.session_secret,
             http.session_secret),
        ) if before != after]
        snapshot = msgspec.structs.replace(
            config, workers=old.workers, admin=old.admin, routing=old.routing, metrics=old.metrics,
            tracing=old.tracing, logging=old.logging, listen=msgspec.structs.replace(
                listen, host=old.listen.host, port=old.listen.port, path=old.listen.path,
                unix_socket=old.listen.unix_socket, tls=old.listen.tls,
                http=msgspec.structs.replace(http,
                                             session_secret=old.listen.http.session_secret)))
        # Before anything switches: a key that does not load refuses the whole config.
        authenticator = Authenticator(snapshot, self.counters.authentication_refused)
        self.config = snapshot
        limits = config.limits
        self.admission.configure(limits.max_connections, limits.max_connections_per_peer,
                                 limits.reserved_descriptors)
        self.max_in_flight = limits.max_in_flight
        kept = list(self.rate_limits)
        self.rate_limits = tuple(_reuse(kept, c) for c in config.rate_limits)
        if old.authorization != snapshot.authorization:
            # What each identity is shown may change: those whose lists do are told.
            self.catalog.refilter(LISTS, self._recompile)
        else:
            self._recompile()
        self._use_authenticator(authenticator)
        changes = self.fleet.reconcile(old.upstreams, self.config)
        if changes:
            log.info("config: upstreams %s", ", ".join(changes))
        return held

    def listening_on(self, **moved: Any) -> None:
        """A listener was bound anew (a reload moved it): the snapshot says where."""
        self.config = msgspec.structs.replace(
            self.config, listen=msgspec.structs.replace(self.config.listen, **moved))

    def _use_authenticator(self, new: Authenticator) -> None:
        """Switch authentication: keys fetched from an unchanged JWKS are kept, a new
        source starts fetching (its tokens pass once it has the keys)."""
        old, self.authenticator = self.authenticator, new
        if new.same_sources(old):
            new.adopt_keys(old)
            return
        loop = asyncio.get_running_loop()
        for coroutine in (old.stop(), new.start()):
            task = loop.create_task(coroutine)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _compile(self, config: Config) -> Chain:
        """The policy chain of ``config``, put where it runs: its checks before each
        forward, its views over each list."""
        self.authorization = Authorization(config.authorization, self.counters.denied) \
            if config.authorization.active else None
        chain = compile_chain(self.rate_limits, self.authorization)
        if self.operator:
            # After authorization (a caller denied a tool learns nothing more), before
            # the rate limits (a refused call takes no token).
            first = 1 if self.authorization is not None else 0
            chain = Chain((*chain.checks[:first], self.operator.check(),
                           *chain.checks[first:]), (*chain.views, self.operator.view()))
        self.requests.use(config, chain.checks)
        self.catalog.views = chain.views
        return chain

    # -- the operator's switches (admin API writes) -------------------------------------
    def _recompile(self) -> None:
        self.chain = self._compile(self.config)

    def set_drained(self, upstream: str, drained: bool) -> None:
        """Send no new request to ``upstream`` (those in flight finish), or again."""
        (self.operator.drained.add if drained else self.operator.drained.discard)(upstream)
        self._recompile()
        log.warning("upstream %r %s by the operator", upstream,
                    "drained" if drained else "undrained")

    def set_tool_disabled(self, tool: str, disabled: bool) -> None:
        """Hide and refuse ``tool``, or bring it back; sessions whose tool list this
        changes are told."""
        def switch() -> None:
            controls = self.operator.disabled_tools
            (controls.add if disabled else controls.discard)(tool)
            self._recompile()
        self.catalog.refilter(("tools",), switch)
        log.warning("tool %r %s by the operator", tool, "disabled" if disabled else "enabled")

    # -- state -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        ups = self.upstreams.values()
        return (self.listening and not self.draining
                and all(u.initialized_once.is_set() for u in ups) and any(u.serving for u in ups))

    def in_flight(self) -> int:
        """Requests an upstream is working on for a client; not the parked ones, which
        wait for a client that may never come back."""
        upstreams = self.fleet.all()
        count = sum(len(u.pending) for u in upstreams)
        if self.mrtr.parked:
            count -= sum(self.mrtr.parked_on(u) for u in upstreams)
        return count

    # -- lifecycle -------------------------------------------------------------------
    async def start_upstreams(self) -> None:
        """Start every upstream; return once each is initialized or its init_timeout ran
        out (a late one joins the catalog when it becomes ready). Clients may already be
        connected (the listeners open first), so time-outs and limits run from now."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(sweep_forever(self),
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
        for upstream in self.fleet.all():
            upstream.fail_all("the gateway is shutting down")

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            # subscriptions/listen "Graceful Closure": the answer tells the client the
            # stream ended on purpose.
            listens, session.listens = session.listens, NOTHING_YET
            for listen_id in listens:
                self.answer(session, listen_id, listen_result(listen_id), False)
            session.close(1001, "gateway shutting down")
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.authenticator.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(u.stop() for u in self.fleet.all()), return_exceptions=True)
        if self.tracing is not None:
            # After the drain: the requests it failed have their spans too.
            await asyncio.to_thread(self.tracing.shutdown)

    # -- sessions --------------------------------------------------------------------
    def open_session(self, transport: str, peer: str, send: Callable[[bytes], None],
                     close: Callable[[int, str], None], flow: FlowControl | None = None,
                     identity: Identity | None = None, answer: Answer | None = None
                     ) -> DownstreamSession:
        session_id = self._session_prefix + str(next(self._session_ids))
        session = DownstreamSession(session_id, transport, peer, send, close, flow,
                                    identity, answer)
        self.sessions[session_id] = session
        self.counters.opened(transport)
        return session

    def close_session(self, session: DownstreamSession) -> None:
        """The client is gone: cancel its work upstream and forget it."""
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        self.counters.closed(session.transport, session.bytes_in, session.bytes_out)
        if session.inflight:
            for upstream, upstream_id in list(session.inflight.values()):
                upstream.cancel(upstream_id, "client disconnected")
            session.inflight.clear()
        for upstream, request_id, _ in session.outgoing.values():
            if upstream.ready:
                upstream.respond_error(request_id, jsonrpc.INTERNAL_ERROR,
                                       "the client disconnected")
        session.outgoing.clear()
        for pool in self.pools():
            pool.release(session)
        self.mrtr.session_closed(session)
        self.subscriptions.session_closed(session)
        self.log_levels.session_closed(session)

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.router.tools

    def send(self, session: DownstreamSession, data: bytes) -> None:
        session.messages_out += 1
        session.bytes_out += len(data)
        self.counters.messages_out += 1
        session.send(data)

    def answer(self, session: DownstreamSession, request_id: Any, data: bytes,
               error: bool | None) -> None:
        """The response ``data`` to the client's request ``request_id``; ``error`` says
        whether it is an error (None: not known without reading it)."""
        session.messages_out += 1
        session.bytes_out += len(data)
        self.counters.messages_out += 1
        answer = session.answer
        if answer is None:
            session.send(data)
        else:
            answer(request_id, data, error)

    def respond(self, session: DownstreamSession, request_id: Any, result: Any) -> None:
        """Answer ``request_id`` with the gateway's own ``result``."""
        self.answer(session, request_id, jsonrpc.result_response(request_id, result), False)

    def send_error(self, session: DownstreamSession, request_id: Any, code: int,
                   message: str, data: Any = UNSET) -> None:
        """Answer ``request_id`` (None for a message whose id could not be read)."""
        self.counters.errors += 1
        if not session.closed:
            self.answer(session, request_id,
                        jsonrpc.error_response(request_id, code, message, data), True)

    def ended(self, upstream: Upstream, pending: Request, outcome: int) -> None:
        """A request ended: answered, errored, timed out, cancelled, failed with its
        upstream or at shutdown, or refused by a policy (``call.OUTCOMES``). Every end
        passes here once, with the request's record (session, client id, method, name,
        progress token, start time, trace context): it is counted, and ``observers``
        are told (metrics per tool, the access log and tracing hook in here)."""
        self.counters.ended[outcome] += 1
        if upstream.balancer is not None:
            self._balanced_end(upstream, pending, outcome)
        if pending.error_code:
            self.upstream_errors.count((upstream.name,), pending.error_code,
                                      pending.refused_by)
        for observer in self.observers:
            observer(upstream, pending, outcome)

    def id_taken(self, session: DownstreamSession, client_id: int | str) -> bool:
        """Whether ``client_id`` cannot be taken now (answered with an error if so)."""
        if client_id in session.inflight or client_id in session.listens:
            outside_batches(session, client_id, self.send_error, session, client_id,
                            jsonrpc.INVALID_REQUEST,
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
    def _balanced_end(member: Upstream, pending: Request, outcome: int) -> None:
        """What the balancer of ``member``'s upstream learns from a request's end:
        a retry is over, and whether the endpoint failed it (outlier detection)."""
        balancer = member.balancer
        if pending.retried:
            balancer.retrying -= 1
        if outcome not in (REFUSED, CANCELLED):
            balancer.record(member, outcome in (TIMED_OUT, FAILED) or (
                outcome == ERRORED and pending.error_code in FAILING_CODES))

    def retry(self, member: Upstream, pending: Request) -> bool:
        """Send a safe request ``member`` failed to another of its upstream's endpoints
        (requests.py); whether it was."""
        return self.requests.retry(member, pending)

    # -- for the input bridge (mrtr.Core) --------------------------------------------
    def forward(self, upstream: Upstream, pending: Request, params: Raw | bytes | UnsetType,
                upstream_id: int | None = None) -> None:
        self.requests.forward(upstream, pending, params, upstream_id)

    def reshape_response(self, upstream: Upstream, pending: Request, env: Envelope
                         ) -> bytes | None:
        return self.relay.reshape_response(upstream, pending, env)

    def hold_log_level(self, upstream: Upstream, level: int) -> None:
        self.log_levels.hold(upstream, level)

    def release_log_level(self, upstream: Upstream, level: int) -> None:
        self.log_levels.release(upstream, level)

    # -- background work -------------------------------------------------------------
    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("background upstream call failed: %s", exc)

    def _current_listeners(self) -> list[Any]:
        """The listeners, less those a reload moved away from that no connection holds
        any more (dropped here, or a gateway moved often would list them for ever).
        While draining, every listener stops accepting: all are shown."""
        if self.draining:
            return self.listeners
        self.listeners[:] = [
            listener for listener in self.listeners
            if listener.connections or listener.server is None or
            listener.server.is_serving()]
        return self.listeners

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "ready": self.ready,
            "draining": self.draining,
            "listeners": [listener.describe() for listener in self._current_listeners()],
            "connections": {"open": len(self.sessions),
                            "total": sum(self.counters.connections.values())},
            "in_flight": self.in_flight(),
            "operator": self.operator.describe(),
            "upstreams": [u.status() for u in self.upstreams.values()],
            "routes": {"tools": len(self.router.tools), "prompts": len(self.router.prompts),
                       "resources": len(self.router.resources),
                       "resource_templates": len(self.router.resource_templates),
                       "collisions": self.router.collisions},
        }


def _reuse(limits: list[RateLimit], config: RateLimitConfig) -> RateLimit:
    """The limit built from the same table (taken out of ``limits``), or a new one."""
    for index, limit in enumerate(limits):
        if limit.config == config:
            return limits.pop(index)
    return RateLimit(config)
