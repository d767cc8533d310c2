"""One connection to an upstream: the wire between the gateway and one server process or
endpoint, shared by the client sessions that use it.

A connection multiplexes: it numbers the requests it sends (``allocate_id``), keeps the
gateway's record of each request in flight by that number (``pending``; the record is
the gateway's own type, ``CallT``, of which the connection reads only the start and the
deadline), settles the gateway's own calls (the handshake, the lists), writes through
the transport's writer and holds back the client sessions that feed it while the
server does not keep up. It knows who owns it only through ``Hooks``: how each
request in flight ends, and the server's own messages.

The upstream (``base.Upstream``) is the other half: the named server as the gateway
routes to it, with its era, catalog and state, supervising the connection its
transport opens (``stdio.py``). Today each upstream has one connection; per-session
connections and replicas (a later issue) give it several.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import msgspec
from msgspec import UNSET, Raw, UnsetType

import mcpfast_ext
from mcpfast_ext import message_scan

from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..transport.ports import FlowControl
from ..transport.writer import PAUSED_BY_UPSTREAM, UPSTREAM_LOW_WATER

_request_line = jsonrpc.request_line if mcpfast_ext.IMPLEMENTATION == "compiled" else None
# An upstream's common result read in one pass (the twin is slower than the parser).
_read_result = message_scan.read_result if mcpfast_ext.IMPLEMENTATION == "compiled" else None
_ANSWER_HEAD = re.compile(
    rb'\{[ \t\r\n]*(?:"jsonrpc"[ \t\r\n]*:[ \t\r\n]*"2\.0"[ \t\r\n]*,[ \t\r\n]*)?'
    rb'"id"[ \t\r\n]*:[ \t\r\n]*(0|[1-9][0-9]{0,17})[ \t\r\n]*,[ \t\r\n]*'
    rb'"(?:result|error)"[ \t\r\n]*:')
"""The beginning of a response to one of the gateway's requests (whose ids are integers),
with ``jsonrpc`` and ``id`` first, as encoders write them: its id is group 1."""


class UpstreamError(Exception):
    def __init__(self, code: int, message: str, data: Any = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Writer(Protocol):
    """What the connection writes through: a socket's ``CoalescingWriter``, or an HTTP
    upstream's writer that posts each message."""

    congested: bool

    def write(self, data: bytes) -> None: ...
    def drained(self, low_water: int) -> bool: ...
    def buffered(self) -> int: ...


class Requester(Protocol):
    """A client session, as an upstream sees it: while the upstream is congested, the
    sessions that feed it are not read from."""

    flow: FlowControl | None


class InFlight(Protocol):
    """A forwarded request, as an upstream sees it: when it was sent and when it
    expires (the upstream sets both as it sends the request)."""

    started: float
    deadline: float


CallT = TypeVar("CallT", bound=InFlight)


class Hooks(NamedTuple, Generic[CallT]):
    """How a connection reports to its owner (each bound to the upstream that owns it)."""

    answered: Callable[[CallT, Envelope | None, bytes], None]
    abandoned: Callable[[CallT], None]
    timed_out: Callable[[CallT], None]
    failed: Callable[[CallT, str], None]
    notification: Callable[[Envelope], None]
    request: Callable[[Envelope], None]


class Connection(Generic[CallT]):
    """One open wire to an upstream, multiplexed over the client sessions using it."""

    def __init__(self, name: str, timeout: float, hooks: Hooks[CallT],
                 log: logging.Logger) -> None:
        self.name = name
        self.hooks = hooks
        self._answered = hooks.answered
        self.log = log
        self._timeout = timeout
        self.ready = False
        """Open and through the handshake: requests may be forwarded."""
        self.writer: Writer | None = None
        """The transport's writer while the connection is open."""
        self.stream_of: int | None = None
        """While the messages of one request's own response stream are read (an HTTP
        upstream's POST stream), that request's id: what the server says there is the
        requester's (PROTOCOL.md, "Whose message is it?")."""
        self.delimiter = b""
        """What ends each message on the wire (a newline on stdio)."""
        self.pending: dict[int, CallT] = {}
        """The requests in flight, by upstream-side id. Never rebound: the upstream
        shows the same dict."""
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self.requests_forwarded = 0
        self.requests_failed = 0
        self.request_levels: dict[int, int] = {}
        """How many modern requests in flight here asked for each log level."""
        self.sole_user: Requester | None = None
        """The one client session that has sent requests on this connection since it
        opened, while there is only one: everything the server says that names no
        request is then that session's (``Relay.owner_of``)."""
        self.shared = False
        """Whether a second session has used this connection since it opened."""
        self.held: set[Requester] = set()
        """Sessions not read from while this connection is congested."""

    def opened(self) -> None:
        """A new process or connection behind this one: no client's background work can
        be running in it yet."""
        self.sole_user = None
        self.shared = False

    # -- the wire ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send one JSON-RPC message, followed by the transport's ``delimiter``."""
        writer = self.writer
        if writer is None:
            raise UpstreamError(-32000, f"upstream {self.name!r} is not running")
        writer.write(data)
        if self.delimiter:
            # A chunk of its own rather than data + delimiter: the flush joins them
            # anyway, so this saves a copy of every message.
            writer.write(self.delimiter)

    def oversized(self, head: bytes, limit: int) -> None:
        """A message over ``limit`` bytes was dropped unread; ``head`` is its beginning.
        If that says it answers a request in flight, the request fails now, not at its
        time-out."""
        self.log.warning("dropped a message from the upstream over %d bytes", limit)
        answered = _ANSWER_HEAD.match(head)
        upstream_id = int(answered[1]) if answered else None
        pending = self.pending.pop(upstream_id, None) if upstream_id is not None else None
        if pending is None:
            return
        env = jsonrpc.error_envelope(upstream_id, jsonrpc.INTERNAL_ERROR,
                                     f"upstream {self.name!r} answered with a message over "
                                     f"{limit} bytes (max_message_bytes), which was dropped")
        try:
            self._answered(pending, env, b"")
        except Exception:
            self.log.exception("could not fail a request answered by an oversized message")

    def on_message(self, line: bytes) -> None:
        """One message from the upstream. One that cannot be read is logged and dropped,
        and the messages after it are read as usual; if it was recognisably a response,
        the request it answers gets an error now rather than a time-out later."""
        env: Envelope | None = None
        """None for a result ``read_result`` read, which the relay takes as it came."""
        pending = None
        if _read_result is not None:
            result_id = _read_result(line)
            if result_id is not None:
                pending = self.pending.pop(result_id, None)
        wire = line
        """The message as written, for a response spliced rather than re-encoded."""
        try:
            # Nested as deep as the server likes, within the parser's recursion guard:
            # results are forwarded unread.
            if pending is None:  # (read_result reads no raw line break)
                env = jsonrpc.decode(line, None)
                if not self.delimiter and (b"\n" in line or b"\r" in line):
                    # Read whole, JSON holds a raw line break only between tokens, where
                    # a space does as well. Forwarded as it came, it would split the
                    # message for a client that reads a message a line (the unix socket,
                    # stdio, an SSE event). A stdio server's message has none.
                    wire = line.replace(b"\n", b" ").replace(b"\r", b" ")
                    env = jsonrpc.decode(wire, None)
        except jsonrpc.MessageError as exc:
            if exc.batch:
                self._batch(wire)
                return
            self.log.warning("dropped an invalid message from the upstream: %s", exc.message)
            if exc.response_id is None:
                return
            wire = b""
            env = jsonrpc.error_envelope(exc.response_id, jsonrpc.INTERNAL_ERROR,
                                         f"upstream {self.name!r} sent an invalid "
                                         f"response: {exc.message}")
        try:
            if env is None:
                self._answered(pending, None, line)  # type: ignore[arg-type]
            elif env.method is UNSET:
                upstream_id = env.id
                pending = self.pending.pop(upstream_id, None) \
                    if type(upstream_id) is int else None
                if pending is not None:
                    self._answered(pending, env, wire)
                else:
                    self._on_response(env)
            elif env.id is UNSET:
                self.hooks.notification(env)
            else:
                self.hooks.request(env)
        except Exception:
            self.log.exception("could not handle a message from the upstream: %.200r", line)

    def _batch(self, line: bytes) -> None:
        """A JSON-RPC batch: a 2025-03-26 server may send one (and its client MUST take
        it), of responses, requests and notifications, each read as if it came alone."""
        arrays = 0
        for item in jsonrpc.split_batch(line):
            if item.lstrip().startswith(b"["):
                arrays += 1
            else:
                self.on_message(item)
        if arrays:
            self.log.warning("dropped %d item(s) of a batch from the upstream: arrays, "
                             "where messages (objects) belong", arrays)

    def _on_response(self, env: Envelope) -> None:
        """A response to none of the clients' requests in flight: the gateway's own."""
        upstream_id = env.id
        future = self._calls.pop(upstream_id, None) if type(upstream_id) is int else None
        if future is not None:
            if future.done():
                return
            if env.error is not UNSET:
                err = msgspec.json.decode(env.error)  # type: ignore[arg-type]
                future.set_exception(UpstreamError(
                    err.get("code", jsonrpc.INTERNAL_ERROR), err.get("message", "error"),
                    err.get("data", UNSET)))
            else:
                future.set_result(msgspec.json.decode(env.result))  # type: ignore[arg-type]
            return
        self.log.debug("dropping a response to unknown or cancelled request %r", upstream_id)

    # -- requests from clients -------------------------------------------------------
    def deadline(self) -> float:
        """When a request taken up again now times out (``request_timeout``)."""
        return time.monotonic() + self._timeout

    def allocate_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def forward(self, call: CallT, session: Requester, method: str,
                params: Raw | bytes | UnsetType, upstream_id: int | None = None
                ) -> int | None:
        """Send a client's request on under ``upstream_id`` (one from ``allocate_id``
        when the caller already wrote it into ``params``, as the progress token); its
        end reaches the gateway through ``events``. Returns the upstream-side id, or None
        when the upstream is not ready (the caller answers the client)."""
        if not self.ready:
            self.requests_failed += 1
            return None
        if upstream_id is None:
            self._next_id = upstream_id = self._next_id + 1
        if self.sole_user is not session and not self.shared:
            self._note_user(session)
        call.started = now = time.monotonic()
        call.deadline = now + self._timeout
        self.pending[upstream_id] = call
        self.requests_forwarded += 1
        writer = self.writer
        if writer is None:
            raise UpstreamError(-32000, f"upstream {self.name!r} is not running")
        # This is every forwarded request's path: compiled, the message and its
        # delimiter are written in one piece (the twin is slower than the encoder).
        line = _request_line(upstream_id, method, params, self.delimiter) \
            if _request_line is not None else None
        if line is not None:
            writer.write(line)
        else:
            writer.write(jsonrpc.reencode(Envelope(
                jsonrpc="2.0", id=upstream_id, method=method,
                params=Raw(params) if isinstance(params, bytes) else params)))
            if self.delimiter:
                writer.write(self.delimiter)
        if writer.congested and session.flow is not None \
                and session not in self.held:
            self.held.add(session)
            session.flow.pause(PAUSED_BY_UPSTREAM)
        return upstream_id

    def congested(self) -> None:
        """The server reads its requests slower than clients send them: the clients
        that feed it are not read from until it catches up, so that requests queue in
        the clients' sockets instead of the gateway's memory."""
        self.log.debug("congested: pausing the clients that feed it")
        asyncio.get_running_loop().call_later(0.005, self._poll_drained)

    def _poll_drained(self) -> None:
        writer = self.writer
        if writer is not None and not writer.drained(UPSTREAM_LOW_WATER):
            asyncio.get_running_loop().call_later(0.005, self._poll_drained)
            return
        held, self.held = self.held, set()
        for session in held:
            if session.flow is not None:
                session.flow.resume(PAUSED_BY_UPSTREAM)

    def buffered(self) -> int:
        writer = self.writer
        return writer.buffered() if writer is not None else 0

    def _note_user(self, session: Requester) -> None:
        if self.sole_user is None and not self.shared:
            self.sole_user = session
        else:
            self.sole_user = None
            self.shared = True

    def cancel(self, upstream_id: int, reason: str) -> None:
        """Forget a forwarded request and tell the upstream to stop working on it."""
        pending = self.pending.pop(upstream_id, None)
        if pending is not None:
            self.hooks.abandoned(pending)
            if self.ready:
                self.notify("notifications/cancelled",
                            {"requestId": upstream_id, "reason": reason})

    def pending_for_token(self, token: Any) -> CallT | None:
        return self.pending.get(token) if type(token) is int else None

    def sweep(self, now: float) -> None:
        """Fail the requests whose deadline has passed."""
        expired = [uid for uid, p in self.pending.items() if p.deadline <= now]
        for uid in expired:
            pending = self.pending.pop(uid)
            if self.ready:
                self.notify("notifications/cancelled",
                            {"requestId": uid, "reason": "request timed out at the gateway"})
            self.requests_failed += 1
            self.hooks.timed_out(pending)

    def fail(self, upstream_id: int, message: str) -> None:
        """Fail one request in flight now, as ``fail_all`` fails them all: its own
        exchange with the server failed (an HTTP upstream's POST), and the server's
        answer will not come."""
        pending = self.pending.pop(upstream_id, None)
        if pending is not None:
            self.requests_failed += 1
            self.hooks.failed(pending, message)
            return
        future = self._calls.pop(upstream_id, None)
        if future is not None and not future.done():
            future.set_exception(UpstreamError(jsonrpc.UPSTREAM_UNAVAILABLE, message))

    def fail_all(self, message: str) -> None:
        """Answer every request in flight with an error, now."""
        pending = dict(self.pending)
        self.pending.clear()
        self.request_levels.clear()
        for p in pending.values():
            self.requests_failed += 1
            self.hooks.failed(p, message)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(UpstreamError(jsonrpc.UPSTREAM_UNAVAILABLE, message))

    # -- the gateway's own requests --------------------------------------------------
    def start_call(self, method: str, params: Any = UNSET) -> tuple[int, asyncio.Future[Any]]:
        """Write one of the gateway's own requests now, so that it reaches the upstream
        before anything written after it; its answer settles the future."""
        upstream_id = self.allocate_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Registered before the write: a writer that fails it at once (an HTTP header
        # that cannot be sent) settles it, instead of leaving it to wait.
        self._calls[upstream_id] = future
        try:
            self.write(jsonrpc.request(upstream_id, method, params))
        except BaseException:
            # Not written (the upstream is not running): the caller gets the error, and
            # the future no one will await is dropped rather than failed later.
            self._calls.pop(upstream_id, None)
            future.cancel()
            raise
        return upstream_id, future

    def send_call(self, method: str, params: Any = UNSET) -> None:
        """``start_call`` whose answer only matters when it is an error (logged)."""
        _, future = self.start_call(method, params)

        def done(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and (exc := future.exception()) is not None:
                self.log.warning("%s failed: %s", method, exc)
        future.add_done_callback(done)

    async def call(self, method: str, params: Any = UNSET, timeout: float | None = None) -> Any:
        upstream_id, future = self.start_call(method, params)
        try:
            return await asyncio.wait_for(future, timeout or self._timeout)
        except TimeoutError:
            raise UpstreamError(jsonrpc.REQUEST_TIMEOUT,
                                f"{method} timed out after "
                                f"{timeout or self._timeout:g} s") from None
        finally:
            self._calls.pop(upstream_id, None)

    def forget_call(self, upstream_id: int) -> None:
        """Stop waiting for the answer to one of the gateway's own calls."""
        stale = self._calls.pop(upstream_id, None)
        if stale is not None:
            stale.cancel()

    def notify(self, method: str, params: Any = UNSET) -> None:
        self.write(jsonrpc.notification(method, params))

    def respond(self, upstream_id: int | str, result: Any) -> None:
        self.write(jsonrpc.result_response(upstream_id, result))

    def respond_error(self, upstream_id: int | str, code: int, message: str) -> None:
        self.write(jsonrpc.error_response(upstream_id, code, message))
