"""Client requests: ``handle`` is the data path for every client message. A request is
read in its era (a legacy one's routing fields only; a modern one's whole params, its
``_meta`` and version checked first), dispatched through one method table for both eras,
routed by name or URI, passed through the policy chain, and forwarded in its upstream's
era: a modern client's request loses its ``io.modelcontextprotocol/*`` ``_meta`` on the
way to a legacy upstream, and a legacy client's request to a modern upstream gains the
``_meta`` its session's ``initialize`` implies. Every request gets exactly one answer
(DESIGN.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

import mcpfast_ext
from mcpfast_ext import message_scan

from ..config import Config
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import INPUT_REQUIRED_METHODS, PRE_INIT_METHODS
from ..protocol.modern import (
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    RequestError,
    check_version,
    is_modern,
    read_meta,
    strip_modern_meta,
)
from ..transport.ports import Checked
from ..upstream.balancer import RETRYABLE
from ..upstream.base import CLIENT_INFO, UpstreamError
from .batch import BATCH_VERSIONS, Batch, Batches, Deliver, outside_batches, run_batch
from .call import (
    CANCELLED,
    NO_ENVELOPE,
    NO_PARAMS,
    REFUSED,
    SHAPE_LEGACY_FROM_MODERN,
    SHAPE_MODERN_FROM_LEGACY,
    SHAPE_MODERN_FROM_MODERN,
    SHAPE_NONE,
    Request,
    RouteParams,
    Upstream,
    route_params,
)
from .catalog import Catalog
from .chain import Check
from .log_levels import LOG_LEVEL_NAMES, LogLevels
from .mrtr import NO_UPSTREAM_REQUEST, InputBridge
from .ports import Core, Handler
from .refusal import Refusal
from .router import KIND_PROMPT, KIND_TOOL
from .session import LOG_LEVELS, DownstreamSession
from .subscriptions import Subscriptions, subscribed

log = logging.getLogger("mcpfast.gateway")
_any = msgspec.json.Decoder()
Waiting = tuple[Upstream, int]
"""A request's own entry in ``session.inflight`` while it waits to be sent (``_wait``)."""
# A client's common tools/call read in one pass (the twin is slower than the parser).
_read_call = message_scan.read_call if mcpfast_ext.IMPLEMENTATION == "compiled" else None
may_repeat_a_name = message_scan.may_repeat_a_name
LEGACY = 1
"""A method of the legacy era (2025-11-25 and earlier)."""
MODERN = 2
"""A method of 2026-07-28."""
BOTH = LEGACY | MODERN
NOT_AN_OBJECT = "Invalid params: params must be an object"
"""Why a request whose params are not an object (nor null) is refused, whatever its
method (-32602)."""
# Methods whose params the legacy handlers route by (a bad params.name is their -32602).
ROUTED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read",
                            "resources/subscribe", "resources/unsubscribe",
                            "completion/complete"})


RETRY_SOON = {"retryAfterSeconds": 1}
"""The retry hint of a refusal that a moment may cure (an open circuit, an upstream
starting)."""

class Requests:
    def __init__(self, gw: Core, catalog: Catalog, subscriptions: Subscriptions,
                 log_levels: LogLevels, mrtr: InputBridge,
                 roots_changed: Callable[[DownstreamSession], None],
                 client_progress: Callable[[DownstreamSession, Envelope], None]) -> None:
        self.gw = gw
        self.roots_changed = roots_changed
        """Tell the servers a client's roots are theirs that they changed (relay.py)."""
        self.client_progress = client_progress
        """Pass a client's progress on a server's request to that server (relay.py)."""
        self.counters = gw.counters
        self.router = gw.router
        self.send_error = gw.send_error
        self.id_taken = gw.id_taken
        self.max_json_depth = gw.config.listen.max_json_depth
        self.catalog = catalog
        self.subscriptions = subscriptions
        self.log_levels = log_levels
        self.mrtr = mrtr
        self.checks: tuple[Check, ...] = ()
        """The policy chain's checks (chain.py): empty when no policy is configured."""
        self.tracing = gw.tracing
        """Set while tracing is on: every forwarded request then carries the gateway's
        span to its upstream in ``_meta`` (tracing.py)."""
        # One table for both eras. 2026-07-28 has no initialize, ping, logging/setLevel
        # or resources/(un)subscribe (changelog), and the legacy era no server/discover
        # or subscriptions/listen: a request for a method outside its era's set is an
        # unknown method.
        self._methods: dict[str, tuple[Handler, int]] = {
            "initialize": (catalog.initialize, LEGACY),
            "ping": (self._ping, LEGACY),
            "logging/setLevel": (log_levels.set_level, LEGACY),
            "resources/subscribe": (self._subscribe, LEGACY),
            "resources/unsubscribe": (self._unsubscribe, LEGACY),
            "server/discover": (catalog.discover, MODERN),
            "subscriptions/listen": (subscriptions.listen, MODERN),
            "tools/list": (catalog.list_handler("tools"), BOTH),
            "prompts/list": (catalog.list_handler("prompts"), BOTH),
            "resources/list": (catalog.list_handler("resources"), BOTH),
            "resources/templates/list": (catalog.list_handler("resourceTemplates"), BOTH),
            "tools/call": (self._by_name(KIND_TOOL, "tool"), BOTH),
            "prompts/get": (self._by_name(KIND_PROMPT, "prompt"), BOTH),
            "resources/read": (self._read, BOTH),
            "completion/complete": (self._complete, BOTH),
        }

    def use(self, config: Config, checks: tuple[Check, ...]) -> None:
        """A new config snapshot and the policy chain compiled from it (Gateway.use)."""
        self.max_json_depth = config.listen.max_json_depth
        self.checks = checks

    def handle(self, session: DownstreamSession, data: bytes,
               env: Envelope | None = None, checked: Checked | None = None) -> None:
        """One message from a client; ``env`` is its envelope when the transport has
        decoded it already (``ports.Dispatcher.handle``)."""
        session.messages_in += 1
        session.bytes_in += len(data)
        self.counters.messages_in += 1
        if env is None:
            if _read_call is not None and session.era != "modern":
                call = _read_call(data, self.max_json_depth)
                if call is not None:
                    self.counters.requests += 1
                    self._read_tools_call(session, *call)
                    return
            try:
                env = jsonrpc.decode(data, self.max_json_depth)
            except jsonrpc.MessageError as exc:
                if exc.batch and self.batch(session, data):
                    return
                self.counters.parse_errors += 1
                if exc.response_id is not None:
                    # The client's invalid answer to a request relayed to it: the server
                    # that asked gets the error. The client's error names no id (its
                    # ``request_id`` is None): the id is that of a request of the
                    # gateway's, which an error carrying it would settle at the client.
                    self._client_response(session, jsonrpc.error_envelope(
                        exc.response_id, jsonrpc.INTERNAL_ERROR,
                        f"the client sent an invalid response: {exc.message}"))
                outside_batches(session, exc.request_id, self.send_error, session,
                                exc.request_id, exc.code, exc.message)
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
            self._dispatch(session, method, env, checked)
        except Exception as exc:  # noqa: BLE001 - answered and logged by _failed
            self._failed(session, env.id, method, exc)

    def _failed(self, session: DownstreamSession, request_id: Any, method: str,
                exc: Exception) -> None:
        """A request whose dispatch raised ``exc`` is answered with an error, unless it
        went in flight first (its end answers it). Params the gateway had to read that
        hold what msgspec cannot (a number beyond a float's range, which JSON allows)
        are refused as unreadable params are; anything else is the gateway's fault."""
        if isinstance(exc, msgspec.ValidationError):
            code, message = jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}"
        else:
            log.error("internal error handling %s from session %s", method, session.id,
                      exc_info=exc)
            code, message = jsonrpc.INTERNAL_ERROR, "Internal error"
        if request_id not in session.inflight and request_id not in session.listens:
            self.send_error(session, request_id, code, message)

    def _read_tools_call(self, session: DownstreamSession, client_id: int | str, name: str,
                         params: bytes) -> None:
        """A legacy session's ``tools/call`` that ``read_call`` read whole (its id, the
        tool's name and params' bytes): forwarded at once when ``_express`` takes it,
        otherwise dispatched with what was read, as ``_dispatch`` would have read it."""
        head = RouteParams(name=name)
        try:
            if not self._express(session, client_id, name, UNSET, params, head, None):
                self._dispatch_legacy(session, "tools/call", Envelope(
                    jsonrpc="2.0", id=client_id, method="tools/call", params=Raw(params)),
                    head)
        except Exception as exc:  # noqa: BLE001 - answered and logged by _failed
            self._failed(session, client_id, "tools/call", exc)

    def batch(self, session: DownstreamSession, data: bytes,
              deliver: Deliver | None = None) -> Batch | bool:
        """A JSON-RPC batch (``data``, which ``jsonrpc.decode`` found to be one), taken
        as its messages where the session's protocol version has batches (batch.py);
        its answer goes to ``deliver``, by default sent as one message. The batch once
        its items are dispatched; True when it was answered with an error at once;
        False, having done nothing, where the session may not send one."""
        if not session.initialized or session.protocol_version not in BATCH_VERSIONS:
            return False
        if deliver is None:
            send = session.send

            def deliver(array: bytes | None) -> None:
                if array is not None and not session.closed:
                    send(array)
        batches = session.answer
        if type(batches) is Batches and batches.current is not None:
            # An item of a batch that is an array: answered in its place in the batch.
            self.send_error(session, None, jsonrpc.INVALID_REQUEST,
                            "Invalid Request: a batch's items are messages (objects), "
                            "not arrays")
            return True
        items = jsonrpc.split_batch(data)
        limits = self.gw.config.limits
        if not items or len(items) > limits.max_batch:
            self.counters.errors += 1
            deliver(jsonrpc.error_response(None, jsonrpc.INVALID_REQUEST, (
                "Invalid Request: an empty batch" if not items else
                f"Invalid Request: a batch of {len(items)} messages is more than "
                f"limits.max_batch ({limits.max_batch}); send fewer at a time")))
            return True
        # A batch counts as the messages it carries, each as handle() takes it.
        session.messages_in -= 1
        session.bytes_in -= len(data)
        self.counters.messages_in -= 1
        return run_batch(session, items, deliver, lambda item: self.handle(session, item),
                         limits.client_buffer_bytes)

    def _express(self, session: DownstreamSession, client_id: Any, name: Any, uri: Any,
                 params: Raw | bytes, head: RouteParams, env: Envelope | None) -> bool:
        """The common ``tools/call`` (``name`` and ``uri``: the routing part of its
        params, which has no ``_meta``; ``head``, that part as decoded; ``env``, its
        envelope, None when ``read_call`` read it), forwarded in one step: a legacy
        session's call to a tool on an upstream of the same era with one connection,
        while neither tracing nor the gateway's state (drain, overload) asks for more;
        the policy chain runs as on the general path. A tool the router renamed (a
        prefixed name) reaches the upstream under its own name, its params encoded
        again as on the general path; any other call's params go on byte for byte. It
        is what the general path (``_dispatch_legacy`` to ``_forward``) would do,
        without its calls. False, having done nothing, for any other call: the general
        path then takes it, errors included."""
        if type(name) is not str or self.tracing is not None or not session.initialized:
            return False
        gw = self.gw
        if gw.draining or gw.overloaded:
            return False
        route = self.router.route(KIND_TOOL, name)
        if route is None:
            return False
        upstream, upstream_name = route
        if self.id_taken(session, client_id):
            return True  # answered, as ``_forward`` would have answered it
        if upstream.choose or upstream.era == "modern":
            return False
        req = Request(session, NO_ENVELOPE, client_id, "tools/call", name,
                      None if uri is UNSET else uri, False, head)
        checks = self.checks
        if checks and self._refused(req, upstream, env or params):
            return True
        if upstream_name != name or (checks and may_repeat_a_name(params)):
            full = _any.decode(params)
            self._rename(full, ("name", upstream_name))
            params = jsonrpc.encode(full)
        sent = upstream.forward(req, session, "tools/call", params)
        if sent is None:
            self.upstream_unavailable(upstream, req)
        else:
            session.inflight[client_id] = (upstream, sent)
        return True

    def _dispatch(self, session: DownstreamSession, method: str, env: Envelope,
                  checked: Checked | None = None) -> None:
        if session.era == "modern":
            self._dispatch_modern(session, method, env, checked)
            return
        # Routing decodes the few params it needs once, here; the same decode tells a
        # modern request (its _meta names a protocol version) from a legacy one.
        head = NO_PARAMS
        if env.params is not UNSET:
            try:
                head = route_params.decode(env.params)  # type: ignore[arg-type]
            except msgspec.DecodeError as exc:
                params = _any.decode(env.params)  # type: ignore[arg-type]
                if is_modern(params):
                    self._dispatch_modern(session, method, env)
                elif params is not None and not isinstance(params, dict):
                    # MCP's params are an object, for every method (a null is taken
                    # for none, as JSON-RPC clients write it).
                    self._dispatch_legacy(session, method, env, NOT_AN_OBJECT)
                else:
                    self._dispatch_legacy(session, method, env, f"Invalid params: {exc}")
                return
            meta = head.meta
            if meta is not UNSET:
                if meta.protocolVersion is not UNSET:
                    self._dispatch_modern(session, method, env)
                    return
            elif method == "tools/call" and self._express(
                    session, env.id, head.name, head.uri, env.params, head, env):  # type: ignore[arg-type]
                return
        self._dispatch_legacy(session, method, env, head)

    def _dispatch_legacy(self, session: DownstreamSession, method: str, env: Envelope,
                         head: RouteParams | str) -> None:
        """``head`` is the routing part of params, or why it could not be read."""
        entry = self._methods.get(method)
        if entry is not None and not entry[1] & LEGACY and not isinstance(head, str):
            # A 2026-07-28 method (server/discover) whose _meta names no version: the
            # modern rungs say what it lacks (-32602), as over Streamable HTTP.
            self._dispatch_modern(session, method, env)
        elif self._reused(session, env.id):
            pass  # an id in flight is answered under once (basic/index), whatever else
        elif entry is None or not entry[1] & LEGACY:
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"Method not found: {method}")
        elif not session.initialized and method not in PRE_INIT_METHODS:
            self.send_error(session, env.id, jsonrpc.INVALID_REQUEST,
                            f"{method} before initialize: the session is not initialized")
        elif self.gw.draining:
            self.send_error(session, env.id, jsonrpc.GATEWAY_SHUTTING_DOWN,
                            "the gateway is shutting down")
        elif self.gw.overloaded and method not in PRE_INIT_METHODS:
            self._refuse_overloaded(session, env.id)
        elif not isinstance(head, str):
            name, uri = head.name, head.uri
            entry[0](Request(session, env, env.id, method,  # type: ignore[arg-type]
                             None if name is UNSET else name,  # type: ignore[arg-type]
                             None if uri is UNSET else uri, False, head))  # type: ignore[arg-type]
        elif method in ROUTED_METHODS or head is NOT_AN_OBJECT:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS, head)
        else:
            entry[0](Request(session, env, env.id, method, None, None, False,  # type: ignore[arg-type]
                             NO_PARAMS))

    def _dispatch_modern(self, session: DownstreamSession, method: str, env: Envelope,
                         checked: Checked | None = None) -> None:
        """A 2026-07-28 request: ``_meta`` (-32602) and version (-32022) rungs, then the
        method (basic/index "Per-request protocol fields"; notes §2.3). ``checked``: its
        params and ``_meta``, when its transport has read and checked them already."""
        if checked is not None:
            params, meta = checked
        else:
            params = _any.decode(env.params) if env.params is not UNSET else {}  # type: ignore[arg-type]
            try:
                meta = read_meta(params)
                check_version(meta)
            except RequestError as exc:
                self.send_error(session, env.id, exc.code, exc.message, exc.data)
                return
        entry = self._methods.get(method)
        if self._reused(session, env.id):
            pass
        elif entry is None or not entry[1] & MODERN:
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"Method not found: {method}")
        elif self.gw.draining:
            self.send_error(session, env.id, jsonrpc.GATEWAY_SHUTTING_DOWN,
                            "the gateway is shutting down")
        elif self.gw.overloaded:
            self._refuse_overloaded(session, env.id)
        else:
            entry[0](Request.of_modern(session, env, method, params, meta))

    def _reused(self, session: DownstreamSession, client_id: Any) -> bool:
        """Whether ``client_id`` is in flight on the session (answered, by ``id_taken``,
        if so): answered by the gateway or forwarded, a reused id would get a second
        answer under it (basic/index: an id is not reused in a session)."""
        return (client_id in session.inflight or client_id in session.listens) and \
            self.id_taken(session, client_id)

    def _refused(self, req: Request, upstream: Upstream,
                 express: Envelope | Raw | bytes | None = None) -> bool:
        """Run the policy chain (chain.py); the first refusal answers the request, which
        goes no further. ``express``: an express call's envelope, or its params when
        ``read_call`` read it, for the record of a refusal (which keeps the envelope,
        as on the general path): made only when a policy refuses."""
        now = time.monotonic()
        for check in self.checks:
            refusal = check(req, upstream.name, now)
            if refusal is not None:
                if isinstance(express, Envelope):
                    req.env = express
                elif express is not None:
                    req.env = Envelope(jsonrpc="2.0", id=req.id, method=req.method,
                                       params=Raw(express))
                self._refuse(req, upstream, refusal, now)
                return True
        return False

    def _refuse(self, req: Request, upstream: Upstream, refusal: Refusal,
                now: float | None = None) -> None:
        """Answer ``req`` with ``refusal`` instead of forwarding it: a policy of the
        chain, an open circuit, no endpoint, or a session's upstream that cannot start.
        It ends there, counted under the refusing policy (and traced)."""
        self.send_error(req.session, req.id, refusal.code, refusal.message, refusal.data)
        req.started = time.monotonic() if now is None else now
        req.error_code = refusal.code
        req.refused_by = refusal.policy
        if self.tracing is not None:
            self.tracing.refused(req, self._client_meta(req), refusal.code, refusal.message)
        self.gw.ended(upstream, req, REFUSED)

    @staticmethod
    def _client_meta(req: Request) -> Any:
        """The client's ``_meta`` of a request not forwarded yet (tracing reads it)."""
        if req.params is not None:
            return req.params.get("_meta")
        if req.env.params is UNSET:
            return None
        try:
            params = _any.decode(req.env.params)  # type: ignore[arg-type]
        except msgspec.DecodeError:
            return None
        return params.get("_meta") if isinstance(params, dict) else None

    def retry(self, member: Upstream, req: Request) -> bool:
        """Send a safe request that ``member`` failed (its connection lost, or no
        answer in time) to another endpoint, once, within the retry budget; whether it
        was sent (if not, the client gets the error)."""
        balancer = member.balancer
        if balancer is None or req.replay is None or self.gw.draining or \
                req.session.closed or not balancer.may_retry():
            return False
        other = balancer.pick(req.session.id, exclude=member)
        if other is None:
            return False
        replay, req.replay = req.replay, None
        req.session.inflight.pop(req.id, None)
        req.retried = True
        req.progress_token, req.shape, req.trace = None, SHAPE_NONE, None
        balancer.retrying += 1
        balancer.retries += 1
        log.info("upstream %r: %s sent again to endpoint %d after endpoint %d failed it",
                 member.name, req.method, balancer.endpoint_of(other).index,
                 balancer.endpoint_of(member).index)
        if len(replay) == 3:
            req.env, rename, uri = replay
            self._forward(req, other, rename, None, uri, checked=True, twin=False,
                          picked=True)
        else:
            req.env, rename, uri, req.params, req.meta = replay
            self._forward_modern(req, other, rename, uri, checked=True, picked=True)
        return True

    async def _through_twin(self, req: Request, upstream: Upstream,
                            rename: tuple[str, str] | None, uri: str | None,
                            mark: Waiting) -> None:
        """A legacy client's call to a dual-era upstream whose legacy twin is not ready:
        start it and send the call there, or through the modern connection if it does
        not come up (gateway/legacy_twin.py)."""
        twin = await upstream.legacy_twin.starting()
        if self._still_waiting(req, upstream, mark):
            self._forward(req, twin or upstream, rename, None, uri, checked=True,
                          twin=False)

    def _wait(self, req: Request, upstream: Upstream,
              start: Callable[[Waiting], Coroutine[Any, Any, None]]) -> None:
        """Run ``start(mark)`` (a coroutine that sends ``req`` once what it needs of
        ``upstream`` has started) in the background; meanwhile ``req``'s id is in
        flight on its session under ``mark``, so that a request reusing it is refused
        and a cancel takes ``req`` back (``_still_waiting``)."""
        mark: Waiting = (upstream, NO_UPSTREAM_REQUEST)
        req.session.inflight[req.id] = mark
        self.gw.background(start(mark))

    def _still_waiting(self, req: Request, upstream: Upstream, mark: Waiting) -> bool:
        """After ``_wait``: whether ``req`` is still to be sent (its id is then off the
        session's in-flight table, for the forward to put it back). One the client
        cancelled meanwhile, or whose session ended, ends here, cancelled. ``mark`` is
        this request's own: a later one that reused the id after a cancel has another."""
        session = req.session
        if session.inflight.get(req.id) is mark:
            del session.inflight[req.id]
            if not session.closed:
                return True
        req.started = time.monotonic()
        self.gw.ended(upstream, req, CANCELLED)
        return False

    async def _own_upstream(self, req: Request, template: Upstream,
                            then: Callable[[Upstream], None], mark: Waiting) -> None:
        """Start the upstream of ``req``'s session (per_session), then send ``req`` to
        it with ``then``; if it cannot start, the client is told so."""
        pool = template.pool
        try:
            own = await pool.starting(req.session)
        except (LookupError, TimeoutError, UpstreamError) as exc:
            if self._still_waiting(req, template, mark):
                message = str(exc) if isinstance(exc, LookupError) else (
                    f"upstream {template.name!r}: the session's own upstream did not "
                    f"start ({exc or 'init_timeout'})")
                self._refuse(req, template, Refusal(jsonrpc.UPSTREAM_UNAVAILABLE, message,
                                                    RETRY_SOON, "per_session"))
            return
        if self._still_waiting(req, template, mark):
            then(own)

    def _choose(self, req: Request, upstream: Upstream, then: Callable[[Upstream], None]
                ) -> Upstream | None:
        """Which of ``upstream``'s processes or connections takes ``req``: the
        session's own (per_session; if it must be started first, ``then`` sends the
        request once it is, and None is returned), or an endpoint (balancer.py; None
        when none can, and the client has been told)."""
        pool = upstream.pool
        if pool is not None and not pool.sessionless(req.session):
            own: Upstream | None = pool.ready_for(req.session)
            if own is None:
                self._wait(req, upstream,
                           lambda mark: self._own_upstream(req, upstream, then, mark))
            return own
        return upstream if upstream.balancer is None else self._endpoint(req, upstream)

    def _endpoint(self, req: Request, upstream: Upstream) -> Upstream | None:
        """The endpoint of ``upstream`` that takes ``req`` (upstream/balancer.py); None
        when none can, and the client has been told so."""
        balancer = upstream.balancer
        picked: Upstream | None = balancer.pick(req.session.id)
        if picked is None:
            policy, message = balancer.refusal()
            self._refuse(req, upstream, Refusal(jsonrpc.UPSTREAM_UNAVAILABLE, message,
                                                RETRY_SOON, policy))
        return picked

    def _refuse_overloaded(self, session: DownstreamSession, request_id: Any) -> None:
        self.counters.refused_overloaded += 1
        self.send_error(session, request_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                        "the gateway is overloaded (too much data waits to be sent); "
                        "retry shortly", {"retryAfterSeconds": 1})

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
                 uri: str | None = None, checked: bool = False, twin: bool = True,
                 picked: bool = False) -> None:
        """Send ``req`` to ``upstream``, in the upstream's era, with what the router
        renamed (``rename``: the member and the upstream's own name). A legacy client's
        request is rewritten only where it must be unique per upstream connection (the
        progress token) and where the router renamed. ``checked``: the policy chain ran
        already. ``twin``: a dual-era upstream's legacy twin may serve it. ``picked``:
        ``upstream`` is the endpoint already chosen (a retry)."""
        if req.modern:
            self._forward_modern(req, upstream, rename, uri)
            return
        session, env, client_id = req.session, req.env, req.id
        if self.id_taken(session, client_id):
            return
        if self.checks and not checked and self._refused(req, upstream):
            return
        if upstream.choose and not picked:
            chosen = self._choose(req, upstream, lambda up: self._forward(
                req, up, rename, subscription, uri, checked=True, picked=True))
            if chosen is None:
                return
            upstream = chosen
            if upstream.balancer is not None and req.method in RETRYABLE and \
                    not req.retried:
                req.replay = (env, rename, uri)
        if upstream.era == "modern":
            legacy = upstream.legacy_twin
            if twin and legacy is not None and subscription is None and legacy.wanted():
                ready = legacy.ready()
                if ready is None:
                    self._wait(req, upstream, lambda mark: self._through_twin(
                        req, upstream, rename, uri, mark))
                    return
                upstream = ready
            else:
                self._forward_legacy_to_modern(req, upstream, rename)
                return
        params: Raw | bytes | UnsetType = env.params
        upstream_id: int | None = None
        head = req.head or NO_PARAMS
        token = head.meta.progressToken if head.meta is not UNSET else UNSET
        tracing = self.tracing
        if rename is not None or token is not UNSET or tracing is not None or (
                self.checks and may_repeat_a_name(params)):
            # Otherwise the client's params go on as they came, byte for byte.
            full = _any.decode(env.params) if env.params is not UNSET else {}  # type: ignore[arg-type]
            self._rename(full, rename)
            upstream_id = upstream.allocate_id()
            if token is not UNSET:
                # Tokens are unique per requester (basic/utilities/progress); the upstream
                # id is unique on this upstream connection, so it serves as the token.
                full["_meta"]["progressToken"] = upstream_id
            if tracing is not None:
                meta = full.get("_meta")
                if not isinstance(meta, dict):
                    meta = full["_meta"] = {}
                tracing.carry(req, meta)
            params = jsonrpc.encode(full)
        if token is not UNSET:
            req.progress_token = token
        if subscription is not None:
            req.subscription = subscription
        req.env = NO_ENVELOPE
        sent = upstream.forward(req, session, req.method, params, upstream_id)
        if sent is None:
            self.upstream_unavailable(upstream, req)
            return
        session.inflight[client_id] = (upstream, sent)

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
        head = req.head or NO_PARAMS
        token = head.meta.progressToken if head.meta is not UNSET else UNSET
        upstream_id = upstream.allocate_id()
        if token is not UNSET:
            meta["progressToken"] = upstream_id
        if self.tracing is not None:
            self.tracing.carry(req, meta)
        params["_meta"] = meta
        method = req.method
        if token is not UNSET:
            req.progress_token = token
        req.shape = SHAPE_LEGACY_FROM_MODERN
        req.forwarded = params if method in INPUT_REQUIRED_METHODS else None
        req.env = NO_ENVELOPE
        self.forward(upstream, req, jsonrpc.encode(params), upstream_id)

    def _by_name(self, kind: int, what: str) -> Handler:
        """tools/call and prompts/get: routed by ``params.name``."""
        def handler(req: Request) -> None:
            name = req.name
            if name is None:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                _missing(req, "name"))
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
        unknown = [u.name for u in self.gw.upstreams.values() if u.catalog is None]
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
        uri = req.uri
        if uri is None:
            self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                            _missing(req, "uri"))
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

    def _subscribe(self, req: Request) -> None:
        routed = self._routed_uri(req)
        if routed is None:
            return
        uri, upstream = routed
        session, env = req.session, req.env
        # The policies first, before any state: a subscription answered here (held
        # already, or by the gateway for a modern upstream) is checked all the same.
        if self.checks and self._refused(req, upstream):
            return
        if uri in session.subscriptions:
            self.gw.respond(session, env.id, {})  # type: ignore[arg-type]
            return
        limit = self.gw.config.limits.max_subscriptions
        if subscribed(session) >= limit:
            self.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                            f"the session holds {limit} resource subscriptions, "
                            "limits.max_subscriptions: unsubscribe first")
            return
        if not self.subscriptions.can_subscribe(upstream):
            self.send_error(session, env.id, jsonrpc.METHOD_NOT_FOUND,
                            f"upstream {upstream.name!r} does not support resource "
                            "subscriptions")
            return
        if upstream.era == "modern":
            # A modern upstream has no resources/subscribe: the URI joins the gateway's
            # listen stream to it.
            session.table("subscriptions")[uri] = None
            self.subscriptions.hold(upstream, uri)
            self.gw.respond(session, env.id, {})  # type: ignore[arg-type]
            return
        count = upstream.subscriptions.get(uri, 0)
        session.table("subscriptions")[uri] = None
        upstream.subscriptions[uri] = count + 1
        if count == 0:
            self._forward(req, upstream, subscription=uri, checked=True)
        else:
            self.gw.respond(session, env.id, {})  # type: ignore[arg-type]

    def _unsubscribe(self, req: Request) -> None:
        uri = req.uri
        if uri is not None and uri in req.session.subscriptions:
            del req.session.subscriptions[uri]
            self.subscriptions.release(uri)
        self.gw.respond(req.session, req.id, {})

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
            req.name = name  # what the policy chain checks
            self._forward(req, upstream, None if upstream_name == name else ("ref", upstream_name))
        elif ref_type == "ref/resource" and uri is not None:
            owner = self.router.route_template(uri) or self.router.route_uri(uri)
            if owner is None:
                self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                f"Unknown resource template: {uri}")
                return
            req.uri = uri  # what the policy chain checks
            self._forward(req, owner)
        else:
            self.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                            "params.ref must be a ref/prompt with a name or a ref/resource "
                            "with a uri")

    def _ping(self, req: Request) -> None:
        self.gw.respond(req.session, req.id, {})

    def _forward_modern(self, req: Request, upstream: Upstream,
                        rename: tuple[str, str] | None, uri: str | None,
                        checked: bool = False, picked: bool = False) -> None:
        """Send a modern client's request on. A modern upstream gets the client's own
        ``_meta`` and MRTR members (inputResponses, requestState) as they are; a legacy
        one gets neither (notes §3)."""
        session, env, client_id = req.session, req.env, req.id
        params, meta = req.params, req.meta
        assert params is not None and meta is not None
        if self.id_taken(session, client_id):
            return
        if self.checks and not checked and self._refused(req, upstream):
            return
        if upstream.era != "modern" and "requestState" in params:
            self.mrtr.resume(session, env, params, meta, upstream)
            return
        if upstream.choose and not picked:
            chosen = self._choose(req, upstream, lambda up: self._forward_modern(
                req, up, rename, uri, checked=True, picked=True))
            if chosen is None:
                return
            upstream = chosen
            if upstream.balancer is not None and req.method in RETRYABLE and \
                    not req.retried:
                req.replay = (env, rename, uri, params, meta)
        name = uri if uri is not None else req.name
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
        if self.tracing is not None:
            # Either branch made ``_meta`` (when there is one) a copy of its own, with
            # the client's traceparent still in it.
            sent = params.get("_meta")
            if not isinstance(sent, dict):
                sent = params["_meta"] = {}
            self.tracing.carry(req, sent)
        if level is not None and upstream.ready:
            self.log_levels.hold(upstream, level)
        req.progress_token = token
        req.shape = shape
        req.log_level = level if upstream.ready else None
        req.uri = uri
        req.name = name
        req.client_capabilities = meta.client_capabilities
        if upstream.era != "modern":
            req.arguments = params.get("arguments")
        req.env, req.params, req.meta = NO_ENVELOPE, None, None
        self.forward(upstream, req, jsonrpc.encode(params), upstream_id)

    def forward(self, upstream: Upstream, pending: Request, params: Raw | bytes | UnsetType,
                upstream_id: int | None = None) -> None:
        """Send a client's request on. Every end of it comes back through one of
        ``answered``, ``abandoned`` (then perhaps ``timed_out``) or ``failed``."""
        session = pending.session
        sent = upstream.forward(pending, session, pending.method, params, upstream_id)
        if sent is None:
            self.upstream_unavailable(upstream, pending)
            return
        session.inflight[pending.id] = (upstream, sent)

    def upstream_unavailable(self, upstream: Upstream, pending: Request) -> None:
        self.send_error(pending.session, pending.id, jsonrpc.UPSTREAM_UNAVAILABLE,
                        f"upstream {upstream.name!r} is not available ({upstream.state})")

    def _client_notification(self, session: DownstreamSession, method: str,
                             env: Envelope) -> None:
        if method == "notifications/cancelled":
            try:
                params = _any.decode(env.params) if env.params is not UNSET else {}
                request_id = params.get("requestId")
            except (msgspec.DecodeError, AttributeError):
                return
            if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
                return  # true is no id (nor is it 1)
            hit = session.inflight.get(request_id)
            if hit is not None:
                upstream, upstream_id = hit
                reason = params.get("reason")
                upstream.cancel(upstream_id, reason if isinstance(reason, str)
                                else "cancelled by the client")
                self.mrtr.client_cancelled(session, request_id)
                if upstream_id == NO_UPSTREAM_REQUEST:
                    # Not sent yet: waiting for the client's answers (mrtr), or for
                    # its upstream to start (``_wait``), which then sends nothing.
                    session.inflight.pop(request_id, None)
                if type(session.answer) is Batches:
                    session.answer.forget(request_id)
            elif request_id in session.listens:
                # basic/patterns/subscriptions "Cancellation" on stream transports.
                self.subscriptions.end_listen(session.listens.pop(request_id))
        elif method == "notifications/initialized":
            # Nothing to do: ``initialize`` made the session ready (requests may follow
            # its answer at once). Sent before it, the notification initializes nothing.
            if not session.initialized:
                log.debug("session %s: notifications/initialized before initialize",
                          session.id)
        elif method == "notifications/progress":
            self.client_progress(session, env)
        elif method == "notifications/roots/list_changed":
            self.roots_changed(session)
        # Other notifications (unknown ones) need no answer.

    def _client_response(self, session: DownstreamSession, env: Envelope) -> None:
        target = session.outgoing.pop(env.id, None) if type(env.id) is int else None
        if target is None:
            if self.mrtr.client_answer(session, env):
                return
            log.debug("session %s answered unknown request %r", session.id, env.id)
            return
        upstream, upstream_request_id, _ = target
        if upstream.ready:
            upstream.write(jsonrpc.reencode(Envelope(
                jsonrpc="2.0", id=upstream_request_id, result=env.result, error=env.error)))


def _missing(req: Request, member: str) -> str:
    """Why ``params.<member>`` routes nowhere: absent, or (a modern request's params are
    read whole; a legacy one's fail to decode earlier) present but not a string."""
    if req.params is not None and req.params.get(member) is not None:
        return f"params.{member} must be a string"
    return f"{req.method} requires params.{member}"
