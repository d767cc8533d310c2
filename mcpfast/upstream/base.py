"""Upstream: a named MCP server the gateway is a client of, shared by all sessions.

This module holds what every upstream kind shares: the era verdict and the handshake
(``server/discover`` for a modern upstream, ``initialize`` for a legacy one), the catalog
(tools, prompts, resources), the gateway's own ``subscriptions/listen`` to a modern
upstream, and the multiplexing of many client sessions onto one connection by
rewriting request ids and progress tokens. A subclass per transport (``stdio.py``)
moves the bytes and supervises the connection.

The upstream knows the gateway only as ``UpstreamEvents``, declared here: what it hands
up (each forwarded request's end, the server's own messages, its coming and going). A
forwarded request is the gateway's record (``CallT``); the upstream keeps it by its own
request id and reads nothing of it but the deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .. import __version__
from ..config import UpstreamConfig
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import (
    LATEST_LEGACY,
    LEGACY_CLIENT_CAPABILITIES,
    LEGACY_VERSIONS,
    MODERN_CLIENT_CAPABILITIES,
)
from ..protocol.modern import (
    LATEST_MODERN,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    MODERN_VERSIONS,
    UNSUPPORTED_PROTOCOL_VERSION,
)
from ..transport.ports import FlowControl
from ..transport.writer import PAUSED_BY_UPSTREAM, UPSTREAM_LOW_WATER, CoalescingWriter

log = logging.getLogger("mcpfast.upstream")

LIST_METHODS = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "resourceTemplates": ("resources/templates/list", "resourceTemplates"),
}
MAX_LIST_PAGES = 1000
STABLE_AFTER = 30.0
"""A connection that lasted this long before it ended restarts with the initial backoff
again."""
PROBE_TIMEOUT = 2.0
"""The most an ``auto`` upstream's ``server/discover`` probe waits before the gateway
falls back to ``initialize`` (init_timeout when that is shorter)."""
CLIENT_INFO = {"name": "mcpfast", "version": __version__}

class UpstreamError(Exception):
    def __init__(self, code: int, message: str, data: Any = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


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


class UpstreamEvents(Protocol[CallT]):
    """What an upstream hands up: the gateway core implements it."""

    def answered(self, upstream: Upstream[CallT], call: CallT, env: Envelope) -> None:
        """The upstream answered ``call`` (``env`` is its response, id unchanged)."""
        ...

    def abandoned(self, upstream: Upstream[CallT], call: CallT) -> None:
        """``call`` was withdrawn (cancelled, or timed out): release what it holds."""
        ...

    def timed_out(self, upstream: Upstream[CallT], call: CallT) -> None:
        """``call`` outlived its deadline and was withdrawn: release what it holds and
        answer its client."""
        ...

    def failed(self, upstream: Upstream[CallT], call: CallT, message: str) -> None:
        """The upstream went away with ``call`` unanswered."""
        ...

    def upstream_notification(self, upstream: Upstream[CallT], env: Envelope) -> None: ...

    def upstream_request(self, upstream: Upstream[CallT], env: Envelope) -> None: ...

    def upstream_ready(self, upstream: Upstream[CallT]) -> None: ...

    def upstream_down(self, upstream: Upstream[CallT]) -> None: ...


class Upstream(Generic[CallT]):
    kind = "abstract"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        self.name = name
        self.index = index
        self.config = config
        self.events = events
        self._answered = events.answered
        self.log = log.getChild(name)
        self.state = "stopped"
        self.ready = False
        self.pending: dict[int, CallT] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self.era: str | None = None
        """The verdict of the last handshake: "legacy" or "modern"."""
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.catalog: dict[str, list[dict[str, Any]]] | None = None
        self.last_error: str | None = None
        self._timeout = config.request_timeout
        self.starts = 0
        self.requests_forwarded = 0
        self.requests_failed = 0
        self.subscriptions: dict[str, int] = {}
        self.log_level: str | None = None
        self.request_levels: dict[int, int] = {}
        """How many modern requests in flight here asked for each log level."""
        self.listen_id: int | None = None
        """The id of the gateway's own subscriptions/listen on a modern upstream."""
        self.listen_acknowledged = asyncio.Event()
        self.initialized_once = asyncio.Event()
        self.sole_user: Requester | None = None
        """The one client session that has sent requests to this process since it
        started, while there is only one: everything the process says that names no
        request is then that session's (``Relay.owner_of``)."""
        self.shared = False
        """Whether a second session has used this process since it started."""
        self.unattributed = 0
        self._writer: CoalescingWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ended: asyncio.Future[Any] | None = None
        """Done when the current connection ends (``connect``)."""
        self.held: set[Requester] = set()
        """Sessions not read from while this upstream is congested."""
        """Server-to-client requests refused and notifications dropped because the
        gateway could not tell whose they were."""

    # -- transport hooks -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send one JSON-RPC message; the transport adds its framing."""
        raise NotImplementedError

    def on_message(self, line: bytes) -> None:
        """One message from the upstream. One that cannot be read is logged and dropped,
        and the messages after it are read as usual; if it was recognisably a response,
        the request it answers gets an error now rather than a time-out later."""
        try:
            # Nested as deep as the server likes, within the parser's recursion guard:
            # results are forwarded unread.
            env = jsonrpc.decode(line, None)
        except jsonrpc.MessageError as exc:
            self.log.warning("dropped an invalid message from the upstream: %s", exc.message)
            if exc.response_id is None:
                return
            env = Envelope(jsonrpc="2.0", id=exc.response_id, error=Raw(jsonrpc.encode(
                jsonrpc.ErrorObject(jsonrpc.INTERNAL_ERROR,
                                    f"upstream {self.name!r} sent an invalid response: "
                                    f"{exc.message}"))))
        try:
            if env.method is UNSET:
                self._on_response(env)
            elif env.id is UNSET:
                self.events.upstream_notification(self, env)
            else:
                self.events.upstream_request(self, env)
        except Exception:
            self.log.exception("could not handle a message from the upstream: %.200r", line)

    def _on_response(self, env: Envelope) -> None:
        upstream_id = env.id
        pending = self.pending.pop(upstream_id, None) if type(upstream_id) is int else None
        if pending is not None:
            self._answered(self, pending, env)
            return
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
            upstream_id = self.allocate_id()
        if self.sole_user is not session:
            self._note_user(session)
        call.started = now = time.monotonic()
        call.deadline = now + self._timeout
        self.pending[upstream_id] = call
        self.requests_forwarded += 1
        raw = params if not isinstance(params, bytes) else Raw(params)
        self.write(jsonrpc.reencode(Envelope(jsonrpc="2.0", id=upstream_id, method=method,
                                             params=raw)))
        writer = self._writer
        if writer is not None and writer.congested and session.flow is not None \
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
        writer = self._writer
        if writer is not None and not writer.drained(UPSTREAM_LOW_WATER):
            asyncio.get_running_loop().call_later(0.005, self._poll_drained)
            return
        held, self.held = self.held, set()
        for session in held:
            if session.flow is not None:
                session.flow.resume(PAUSED_BY_UPSTREAM)

    def buffered(self) -> int:
        writer = self._writer
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
            self.events.abandoned(self, pending)
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
            self.events.timed_out(self, pending)

    def fail_all(self, message: str) -> None:
        """Answer every request in flight with an error, now."""
        pending, self.pending = self.pending, {}
        self.request_levels.clear()
        for p in pending.values():
            self.requests_failed += 1
            self.events.failed(self, p, message)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(UpstreamError(jsonrpc.UPSTREAM_UNAVAILABLE, message))

    # -- the gateway's own requests --------------------------------------------------
    def start_call(self, method: str, params: Any = UNSET) -> tuple[int, asyncio.Future[Any]]:
        """Write one of the gateway's own requests now, so that it reaches the upstream
        before anything written after it; its answer settles the future."""
        upstream_id = self.allocate_id()
        self.write(jsonrpc.request(upstream_id, method, params))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[upstream_id] = future
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
            return await asyncio.wait_for(future, timeout or self.config.request_timeout)
        except TimeoutError:
            raise UpstreamError(jsonrpc.REQUEST_TIMEOUT,
                                f"{method} timed out after "
                                f"{timeout or self.config.request_timeout:g} s") from None
        finally:
            self._calls.pop(upstream_id, None)

    def notify(self, method: str, params: Any = UNSET) -> None:
        self.write(jsonrpc.notification(method, params))

    def respond(self, upstream_id: int | str, result: Any) -> None:
        self.write(jsonrpc.result_response(upstream_id, result))

    def respond_error(self, upstream_id: int | str, code: int, message: str) -> None:
        self.write(jsonrpc.error_response(upstream_id, code, message))

    def modern_meta(self) -> dict[str, Any]:
        """The ``_meta`` of the gateway's own requests to a modern upstream."""
        return {META_PROTOCOL_VERSION: self.protocol_version or LATEST_MODERN,
                META_CLIENT_CAPABILITIES: MODERN_CLIENT_CAPABILITIES,
                META_CLIENT_INFO: CLIENT_INFO}

    async def handshake(self) -> None:
        """Decide the era and open the conversation. ``auto`` follows the stdio transport's
        "Backward Compatibility": probe with ``server/discover``; a result listing a
        modern version means modern, any other answer or silence means legacy."""
        self.era = None
        self.listen_id = None
        self.listen_acknowledged.clear()
        # A new process: no client's background work can be running in it yet.
        self.sole_user = None
        self.shared = False
        era = self.config.era
        if era == "modern":
            await self._discover(self.config.init_timeout, required=True)
            return
        if era == "auto" and await self._discover(min(self.config.init_timeout,
                                                      PROBE_TIMEOUT)):
            return
        try:
            await self._legacy_handshake()
        except UpstreamError as exc:
            # A probe that timed out here but reached a slow server locked its
            # connection to the modern era before our initialize came; the -32022 that
            # initialize gets says so (the Python SDK's client handles it the same way).
            if era != "auto" or exc.code != UNSUPPORTED_PROTOCOL_VERSION:
                raise
            self.log.info("initialize refused with -32022 after the probe; probing again")
            await self._discover(self.config.init_timeout, required=True)

    async def _discover(self, timeout: float, required: bool = False) -> bool:
        """``server/discover`` (server/discover). True when the upstream is modern."""
        try:
            result = await self.call("server/discover", {"_meta": self.modern_meta()},
                                     timeout=timeout)
        except UpstreamError as exc:
            if required:
                raise UpstreamError(exc.code, f"server/discover failed: {exc.message}",
                                    exc.data) from None
            supported = exc.data.get("supported") if isinstance(exc.data, dict) else None
            if (exc.code == UNSUPPORTED_PROTOCOL_VERSION and isinstance(supported, list)
                    and not any(v in LEGACY_VERSIONS for v in supported)):
                # Modern only, and no version in common: initialize cannot help.
                raise UpstreamError(exc.code, f"upstream supports only {supported}, none "
                                    f"of which mcpfast speaks") from None
            self.log.debug("server/discover answered %d (%s): legacy", exc.code, exc.message)
            return False
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        mutual = [v for v in MODERN_VERSIONS if isinstance(versions, list) and v in versions]
        if not mutual:
            if required:
                raise UpstreamError(jsonrpc.INTERNAL_ERROR,
                                    f"server/discover lists no version mcpfast speaks: "
                                    f"{versions!r}")
            return False
        meta = result.get("_meta")
        self.era = "modern"
        self.protocol_version = mutual[0]
        self.capabilities = result.get("capabilities") or {}
        self.server_info = (meta.get(META_SERVER_INFO) if isinstance(meta, dict) else
                            None) or {}
        self.instructions = result.get("instructions")
        return True

    async def _legacy_handshake(self) -> None:
        """MCP lifecycle (basic/lifecycle): initialize, check the version, initialized."""
        result = await self.call("initialize", {
            "protocolVersion": LATEST_LEGACY,
            "capabilities": LEGACY_CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO,
        }, timeout=self.config.init_timeout)
        version = result.get("protocolVersion")
        if version not in LEGACY_VERSIONS:
            raise UpstreamError(jsonrpc.INTERNAL_ERROR,
                                f"upstream answered initialize with unsupported protocol "
                                f"version {version!r}")
        self.era = "legacy"
        self.protocol_version = version
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        self.instructions = result.get("instructions")
        self.notify("notifications/initialized")
        if self.log_level is not None and "logging" in self.capabilities:
            await self.call("logging/setLevel", {"level": self.log_level})

    # -- the gateway's own listen stream (modern upstreams) --------------------------
    def listen(self, uris: Any = ()) -> bool:
        """(Re)open the gateway's ``subscriptions/listen`` on a modern upstream, asking
        for every change its capabilities offer and for ``uris``. The old stream is
        cancelled after the new one is asked for, so no change falls between them.
        Returns whether a stream is open."""
        caps = self.capabilities
        wanted: dict[str, Any] = {}
        for flag, kind in (("toolsListChanged", "tools"), ("promptsListChanged", "prompts"),
                           ("resourcesListChanged", "resources")):
            if (caps.get(kind) or {}).get("listChanged"):
                wanted[flag] = True
        if uris and (caps.get("resources") or {}).get("subscribe"):
            wanted["resourceSubscriptions"] = sorted(uris)
        old = self.listen_id
        self.listen_id = None
        self.listen_acknowledged.clear()
        if wanted:
            listen_id, future = self.start_call(
                "subscriptions/listen", {"_meta": self.modern_meta(), "notifications": wanted})
            future.add_done_callback(lambda f: self._listen_ended(listen_id, f))
            self.listen_id = listen_id
        if old is not None:
            stale = self._calls.pop(old, None)
            if stale is not None:
                stale.cancel()
            self.notify("notifications/cancelled",
                        {"requestId": old, "reason": "subscriptions changed"})
        return self.listen_id is not None

    def _listen_ended(self, listen_id: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if self.listen_id == listen_id:
            self.listen_id = None
            self.listen_acknowledged.set()  # settled: nobody waits for an ack that won't come
        exc = future.exception()
        if isinstance(exc, UpstreamError) and exc.code == jsonrpc.UPSTREAM_UNAVAILABLE:
            return
        if exc is not None:
            self.log.warning("subscriptions/listen failed: %s; list changes and resource "
                             "updates from this upstream are not relayed", exc)
        else:
            self.log.info("the upstream ended the gateway's subscriptions/listen")

    async def fetch_catalog(self, kinds: tuple[str, ...] = tuple(LIST_METHODS)) -> None:
        """Read the upstream's lists, every page, into ``catalog``."""
        catalog = dict(self.catalog or {})
        for kind in kinds:
            capability = "resources" if kind == "resourceTemplates" else kind
            if capability not in self.capabilities:
                catalog[kind] = []
                continue
            method, key = LIST_METHODS[kind]
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                params: dict[str, Any] = {"cursor": cursor} if cursor else {}
                if self.era == "modern":
                    params["_meta"] = self.modern_meta()
                try:
                    page = await self.call(method, params or UNSET)
                except UpstreamError as exc:
                    if exc.code == jsonrpc.METHOD_NOT_FOUND:
                        break
                    raise
                items.extend(page.get(key) or [])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            else:
                self.log.warning("%s returned more than %d pages; the rest are ignored",
                                 method, MAX_LIST_PAGES)
            catalog[kind] = items
        self.catalog = catalog

    def describe(self) -> dict[str, Any]:
        catalog = self.catalog or {}
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "ready": self.ready,
            "era": self.era,
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "tools": len(catalog.get("tools", [])),
            "prompts": len(catalog.get("prompts", [])),
            "resources": len(catalog.get("resources", [])),
            "resource_templates": len(catalog.get("resourceTemplates", [])),
            "in_flight": len(self.pending),
            "requests_forwarded": self.requests_forwarded,
            "requests_failed": self.requests_failed,
            "unattributed": self.unattributed,
            "attribution": self.config.attribution,
            "starts": self.starts,
            "last_error": self.last_error,
        }

    # -- supervision: the same for every kind -----------------------------------------
    async def connect(self) -> asyncio.Future[Any]:
        """Start the process or open the connection (each kind its own); the future is
        done when it ends. Raises UpstreamError when it cannot."""
        raise NotImplementedError

    def ended_because(self) -> str:
        """Why the last connection ended, for ``last_error`` and the log."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        """End the connection or stop the process, if it is still there; a second call
        is a no-op."""
        raise NotImplementedError

    async def start(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"upstream:{self.name}")

    async def _supervise(self) -> None:
        """Connect, handshake, read the catalog, serve until the connection ends, and
        start again after a backoff that doubles up to ``restart_backoff_max`` (reset
        after a connection that lasted ``STABLE_AFTER``)."""
        backoff = self.config.restart_backoff
        while not self._stopping:
            started = time.monotonic()
            try:
                self.state = "starting"
                ended = self._ended = await self.connect()
                self.state = "initializing"
                await self._initialize(ended)
                self.state = "ready"
                self.ready = True
                self.last_error = None
                self.events.upstream_ready(self)
                self.initialized_once.set()
                await ended
                self.last_error = self.ended_because()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means restart
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self.ready = False
                await self.disconnect()
            if self._stopping:
                break
            message = f"upstream {self.name!r} is down: {self.last_error}"
            self.fail_all(message)
            self.events.upstream_down(self)
            if time.monotonic() - started >= STABLE_AFTER:
                backoff = self.config.restart_backoff
            self.state = "restarting"
            self.log.warning("%s; restarting in %.1f s", message, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.restart_backoff_max)
        self.state = "stopped"

    async def _initialize(self, ended: asyncio.Future[Any]) -> None:
        work: asyncio.Future[Any] = asyncio.ensure_future(self._handshake_and_catalog())
        done, _ = await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done:
            work.cancel()
            # fail_all() may already have failed it; either way nobody awaits it now.
            work.add_done_callback(lambda task: task.cancelled() or task.exception())
            raise UpstreamError(-32000, f"{self.ended_because()} during initialization")
        work.result()

    async def _handshake_and_catalog(self) -> None:
        await self.handshake()
        await self.fetch_catalog()
        if self.era == "modern" and self.listen():
            # Ready only once the upstream listens, so that no change made by a call the
            # gateway forwards from now on goes unannounced.
            try:
                await asyncio.wait_for(self.listen_acknowledged.wait(),
                                       self.config.init_timeout)
            except TimeoutError:
                self.log.warning("subscriptions/listen was not acknowledged within %g s",
                                 self.config.init_timeout)

    async def stop(self) -> None:
        self._stopping = True
        self.state = "stopping"
        task = self._supervisor
        if task is None:
            return
        if self._ended is not None and not self._ended.done():
            # Ends the supervisor's wait on the connection; disconnect does the rest.
            await self.disconnect()
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        self.ready = False
        self.fail_all(f"upstream {self.name!r} stopped")
        self.state = "stopped"


