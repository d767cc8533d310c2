"""What upstreams say, relayed to clients: the ends of forwarded requests (the
``UpstreamEvents`` an upstream reports: answered, abandoned, timed out, failed), reshaped
for the client's era; progress, log messages, resource updates and list changes; and the
server-to-client requests, delivered only to the session they certainly belong to
(PROTOCOL.md, "Whose message is it?")."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec import UNSET

import mcpfast_ext
from mcpfast_ext import message_scan

from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import (
    CLIENT_CAPABILITY_FOR,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    required_capability,
)
from ..protocol.modern import (
    META_SUBSCRIPTION_ID,
    complete_result,
    legacy_result,
)
from .call import (
    ANSWERED,
    CANCELLED,
    ERRORED,
    FAILED,
    SHAPE_LEGACY_FROM_MODERN,
    SHAPE_MODERN_FROM_LEGACY,
    SHAPE_MODERN_FROM_MODERN,
    SHAPE_NONE,
    TIMED_OUT,
    Request,
    Upstream,
)
from .catalog import Catalog
from .log_levels import LogLevels
from .mrtr import InputBridge
from .ports import SERVER_INFO, Core
from .session import LOG_LEVELS, DownstreamSession
from .subscriptions import Subscriptions

log = logging.getLogger("mcpfast.gateway")
_any = msgspec.json.Decoder()
_splice = message_scan.splice_response if mcpfast_ext.IMPLEMENTATION == "compiled" else None
_respond_as = message_scan.respond_as if mcpfast_ext.IMPLEMENTATION == "compiled" else None
"""Compiled, splicing a client's id into a response costs a tenth of re-encoding it; the
pure twin costs more than re-encoding, so without the extension responses are encoded."""


class _ErrorCode(msgspec.Struct, gc=False):
    code: int = 0


_error_code = msgspec.json.Decoder(_ErrorCode)
LIST_KINDS = {
    "notifications/tools/list_changed": ("tools",),
    "notifications/prompts/list_changed": ("prompts",),
    "notifications/resources/list_changed": ("resources", "resourceTemplates"),
}
MODERN_SHAPES = (SHAPE_MODERN_FROM_LEGACY, SHAPE_MODERN_FROM_MODERN)


class Relay:
    """The gateway's side of every upstream (``upstream.base.UpstreamEvents``)."""

    def __init__(self, gw: Core, catalog: Catalog, subscriptions: Subscriptions,
                 log_levels: LogLevels, mrtr: InputBridge) -> None:
        self.gw = gw
        self.send = gw.send
        self.answer = gw.answer
        self.ended = gw.ended
        self.catalog = catalog
        self.subscriptions = subscriptions
        self.log_levels = log_levels
        self.mrtr = mrtr
        self._unattributed_logged: set[tuple[str, str]] = set()

    def answered(self, upstream: Upstream, pending: Request, env: Envelope | None,
                 line: bytes) -> None:
        data = None
        if env is None:
            # A result read_result read: the client's id written in the upstream's place
            # when nothing reshapes it; parsed as any other answer otherwise.
            if pending.parked is None and pending.shape == SHAPE_NONE:
                data = _respond_as(line, pending.id)  # type: ignore[misc]
            if data is None:
                env = jsonrpc.decode(line, None)
        if pending.parked is not None:
            self.mrtr.settled_while_parked(pending.parked, env)  # type: ignore[arg-type]
            return
        session = pending.session
        session.inflight.pop(pending.id, None)
        error = UNSET if env is None else env.error
        if pending.log_level is not None:
            self.log_levels.release(upstream, pending.log_level)
        if error is not UNSET:
            if pending.subscription is not None:
                self.subscriptions.refused(session, upstream, pending.subscription)
            if pending.trace is not None:
                pending.trace.error = error
        if not session.closed:
            if data is not None:
                self.answer(session, pending.id, data, False)
            elif pending.shape != SHAPE_NONE:
                reshaped = self.reshape_response(upstream, pending, env)  # type: ignore[arg-type]
                if reshaped is None:
                    return  # the gateway asks the client for input first: not ended
                self.answer(session, pending.id, reshaped, None)
            else:
                # The client's id spliced into the upstream's bytes when they are laid
                # out as most servers write them; re-encoded otherwise.
                assert env is not None  # data is None: it was parsed
                if line and _splice is not None:
                    value = env.result if error is UNSET else error
                    data = _splice(line, env.id, pending.id, error is not UNSET,
                                   len(value))  # type: ignore[arg-type]
                if data is None:
                    data = jsonrpc.reencode(Envelope(
                        jsonrpc="2.0", id=pending.id, result=env.result, error=error))
                self.answer(session, pending.id, data, error is not UNSET)
        if error is UNSET:
            self.ended(upstream, pending, ANSWERED)
            return
        try:
            pending.error_code = _error_code.decode(error).code
        except msgspec.DecodeError:  # a malformed error is passed on as it came
            pending.error_code = jsonrpc.INTERNAL_ERROR
        self.ended(upstream, pending, ERRORED)

    def abandoned(self, upstream: Upstream, pending: Request) -> None:
        self._release(upstream, pending)
        self.ended(upstream, pending, CANCELLED)

    def timed_out(self, upstream: Upstream, pending: Request) -> None:
        self._release(upstream, pending)
        if pending.replay is not None and self.gw.retry(upstream, pending):
            return
        self.gw.send_error(pending.session, pending.id, jsonrpc.REQUEST_TIMEOUT,
                           f"upstream {upstream.name!r} did not answer {pending.method} "
                           f"within {upstream.config.request_timeout:g} s")
        pending.error_code = jsonrpc.REQUEST_TIMEOUT
        self.ended(upstream, pending, TIMED_OUT)

    def failed(self, upstream: Upstream, pending: Request, message: str) -> None:
        # One request can fail while its upstream stays up (an HTTP upstream's POST):
        # it releases what it holds, as if the upstream had refused it.
        self._release(upstream, pending)
        if pending.subscription is not None:
            self.subscriptions.refused(pending.session, upstream, pending.subscription)
        if pending.replay is not None and self.gw.retry(upstream, pending):
            return
        self.gw.send_error(pending.session, pending.id, jsonrpc.UPSTREAM_UNAVAILABLE,
                           message)
        pending.error_code = jsonrpc.UPSTREAM_UNAVAILABLE
        self.ended(upstream, pending, FAILED)

    def _release(self, upstream: Upstream, pending: Request) -> None:
        pending.session.inflight.pop(pending.id, None)
        if pending.log_level is not None:
            self.log_levels.release(upstream, pending.log_level)

    def reshape_response(self, upstream: Upstream, pending: Request, env: Envelope
                         ) -> bytes | None:
        """The answer to a request that crossed eras, or a modern client's answer, in
        the shape its client expects; None when it is an ``input_required`` that the
        gateway puts to a legacy client first (gateway/mrtr.py)."""
        client_id = pending.id
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

    def upstream_notification(self, upstream: Upstream, env: Envelope) -> None:
        method = env.method
        params: dict[str, Any] = {}
        if method in _READ_PARAMS:
            read = _params_object(env)
            if read is None:
                upstream.log.warning("dropped %s: its params are not an object", method)
                return
            params = read
        if method == "notifications/progress":
            pending = upstream.pending_for_token(params.get("progressToken"))
            if pending is None or pending.progress_token is None:
                return
            params["progressToken"] = pending.progress_token
            self.send(pending.session, jsonrpc.notification(method, params))
        elif method == "notifications/message":
            self._log_message(upstream, env)
        elif method == "notifications/resources/updated":
            if self.subscriptions.from_listen(upstream, params):
                self.subscriptions.resource_updated(upstream, params)
        elif method in LIST_KINDS and not upstream.session_own:
            self.catalog.refresh(upstream, LIST_KINDS[method])
        elif method == SUBSCRIPTIONS_ACKNOWLEDGED:
            meta = params.get("_meta")
            if isinstance(meta, dict) and upstream.listen_id is not None and \
                    meta.get(META_SUBSCRIPTION_ID) == upstream.listen_id:
                upstream.listen_acknowledged.set()
        elif method == "notifications/cancelled":
            self.mrtr.upstream_cancelled(upstream, params.get("requestId"))
            for session in self.gw.sessions.values():
                for out_id, (owner, request_id, _) in list(session.outgoing.items()):
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
                                   f"mcpfast cannot route {method}: {_why_no_owner(upstream)}")
            return
        if self._modern_pending(upstream, session):
            # A 2026-07-28 client takes no server-to-client requests: it is asked with
            # an input_required result instead.
            self.mrtr.ask_modern_client(upstream, session, method, request_id, env.params)
            return
        if method in CLIENT_CAPABILITY_FOR:
            try:
                params = _any.decode(env.params) if env.params is not UNSET else {}
            except msgspec.DecodeError:
                params = None
            missing = required_capability(method, params, session.client_capabilities)
            if missing is not None:
                # The gateway declares every part to its servers (LEGACY_CLIENT_
                # CAPABILITIES); the client it would go to lacks this one.
                capability, part = next(iter(missing.items()))
                if part:
                    upstream.respond_error(
                        request_id, jsonrpc.INVALID_PARAMS,
                        f"the client does not support {method} with "
                        f"{capability}.{next(iter(part))} (its capabilities do not declare it)")
                else:
                    upstream.respond_error(request_id, jsonrpc.METHOD_NOT_FOUND,
                                           f"the client does not support {method}")
                return
        out_id = session.next_out_id()
        session.table("outgoing")[out_id] = (upstream, request_id, _progress_token(env))
        self.send(session, jsonrpc.reencode(Envelope(jsonrpc="2.0", id=out_id, method=method,
                                                     params=env.params)))

    def upstream_ready(self, upstream: Upstream) -> None:
        if upstream.balancer is not None and not upstream.primary:
            self._adopt(upstream)
        template = upstream if upstream.balancer is None \
            else upstream.balancer.endpoints[0].upstream
        if template.pool is not None:
            template.pool.replenish()  # the template is up: its spares may start
        self.catalog.rebuild()
        if upstream.log_level is not None or self.log_levels.asked():
            # Restarted, or new (a legacy twin started for a legacy client's call):
            # asked for the level the sessions want.
            self.log_levels.sync()
        self.subscriptions.resubscribe(upstream)

    @staticmethod
    def _adopt(replica: Upstream, first_failed: bool = False) -> None:
        """A replica is ready while the upstream's first endpoint has never been: the
        upstream is routed by the replica's catalog and handshake until it is."""
        first = replica.balancer.endpoints[0].upstream
        # Not while its own handshake runs (what it learns there is the upstream's),
        # unless that handshake has just failed.
        if first.catalog is None and (first_failed or first.state != "initializing"):
            for key in ("catalog", "era", "protocol_version", "capabilities", "server_info",
                        "instructions"):
                setattr(first, key, getattr(replica, key))
            first.initialized_once.set()

    def upstream_down(self, upstream: Upstream) -> None:
        """An upstream died. Its catalog stays routed so that calls fail at once with a
        clear error while it restarts, instead of 'unknown tool'."""
        upstream.subscriptions.clear()
        self._forget_questions(upstream)
        balancer = upstream.balancer
        if balancer is not None and upstream.primary and upstream.catalog is None:
            # The first endpoint failed its first handshake: a replica that came up
            # meanwhile (and was not adopted while that handshake ran) stands for it.
            for member in balancer.members[1:]:
                if member.ready:
                    self._adopt(member, first_failed=True)
                    self.catalog.rebuild()
                    break

    def _forget_questions(self, upstream: Upstream) -> None:
        """The requests a dead server sent its clients (sampling, elicitation, roots)
        are over: each client is told (``notifications/cancelled``), and an answer it
        sends later is not taken for the restarted server's own request of that id."""
        for session in self.gw.sessions.values():
            if not session.outgoing:
                continue
            for out_id, (owner, _, _) in list(session.outgoing.items()):
                if owner is upstream:
                    del session.outgoing[out_id]
                    self.send(session, jsonrpc.notification("notifications/cancelled", {
                        "requestId": out_id,
                        "reason": f"upstream {upstream.name!r}, which asked, went down"}))

    def client_progress(self, session: DownstreamSession, env: Envelope) -> None:
        """The client's progress on a request a server sent it (basic/utilities/progress:
        either side may send progress): to the server that asked, under the token its
        request carried (the gateway forwards the token as it came)."""
        params = _params_object(env)
        token = params.get("progressToken") if params else None
        for upstream, _, asked in session.outgoing.values():
            if asked is not None and type(asked) is type(token) and asked == token:
                if upstream.ready:
                    upstream.write(jsonrpc.reencode(env))
                return
        log.debug("session %s: progress for no request of a server: %.100r", session.id,
                  token)

    def roots_changed(self, session: DownstreamSession) -> None:
        """The client's roots changed (client/roots ``notifications/roots/list_changed``):
        told to each legacy server whose ``roots/list`` would reach this client
        (``owner_of``), so that it asks again. The gateway declares
        ``roots.listChanged`` to every legacy server, and so owes them the notification;
        a server whose requests belong to no one client is not told (it could not ask
        whose roots changed)."""
        for upstream in self._connections():
            if upstream.ready and upstream.era == "legacy" and \
                    self.owner_of(upstream) is session:
                upstream.notify("notifications/roots/list_changed")

    def _connections(self) -> list[Upstream]:
        """Every upstream the gateway speaks to: each routed one, its endpoints (a
        balancer's), its sessions' own (a pool's), and its legacy twin."""
        found: list[Upstream] = []
        for upstream in self.gw.upstreams.values():
            if upstream.pool is not None:
                found.extend(upstream.pool.members)
            elif upstream.balancer is not None:
                found.extend(upstream.balancer.members)
            else:
                found.append(upstream)
            holder = upstream.legacy_twin
            if holder is not None and holder.twin is not None:
                found.append(holder.twin)
        return found

    def owner_of(self, upstream: Upstream) -> DownstreamSession | None:
        """The session that a message naming no client request (a server-to-client
        request, a log message) certainly belongs to, or None when the gateway cannot
        know: nothing that may be one client's ever reaches another (PROTOCOL.md,
        "Whose message is it?")."""
        related = upstream.connection.stream_of
        if related is not None:
            pending = upstream.pending.get(related)
            session = pending.session if pending is not None else None
        elif upstream.config.attribution == "in_flight":
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
            log.warning("upstream %r sent %s naming no client request, and %s: not "
                        "delivered (logged once; counted in "
                        "mcpfast_upstream_unattributed_total; see upstreams.%s.attribution)",
                        upstream.name, method, _why_no_owner(upstream), upstream.name)

    @staticmethod
    def _modern_pending(upstream: Upstream, session: DownstreamSession
                        ) -> list[tuple[int, Request]]:
        """``session``'s modern requests in flight on ``upstream``."""
        return [(uid, p) for uid, p in upstream.pending.items()
                if p.session is session and p.shape in MODERN_SHAPES]

    def _log_message(self, upstream: Upstream, env: Envelope) -> None:
        params = _params_object(env)
        if params is None:
            upstream.log.warning("dropped notifications/message: its params are not an object")
            return
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


_READ_PARAMS = frozenset({"notifications/progress", "notifications/resources/updated",
                          SUBSCRIPTIONS_ACKNOWLEDGED, "notifications/cancelled"})
"""The server's notifications whose params the gateway reads."""


def _params_object(env: Envelope) -> dict[str, Any] | None:
    """A message's params (none: empty) when they are an object, as MCP's always are;
    else None."""
    if env.params is UNSET:
        return {}
    try:
        params = _any.decode(env.params)
    except msgspec.DecodeError:
        return None
    return params if isinstance(params, dict) else None


def _progress_token(env: Envelope) -> Any:
    """The ``_meta.progressToken`` of a server's request (None: none, or not an id)."""
    params = _params_object(env)
    meta = params.get("_meta") if params else None
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    return token if isinstance(token, int | str) and not isinstance(token, bool) else None


def _why_no_owner(upstream: Upstream) -> str:
    """Why a server's request names no client the gateway could send it to."""
    connection = upstream.connection
    if connection.stream_of is not None or upstream.config.attribution == "in_flight":
        return "not exactly one client has a request in flight on this server"
    if connection.shared:
        return "several clients share this server, and the request names none of them"
    sole = connection.sole_user
    if sole is None:
        return "no client has called this server since it started"
    return "the client that called this server has gone"
