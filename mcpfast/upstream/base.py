"""Upstream: a named MCP server the gateway is a client of, shared by all sessions.

This module holds what every upstream kind shares, as the gateway routes to it: the era
verdict and the handshake (``server/discover`` for a modern upstream, ``initialize`` for
a legacy one), the catalog (tools, prompts, resources), the gateway's own
``subscriptions/listen`` to a modern upstream, its state, and the supervision loop that
connects, handshakes, reads the catalog and restarts. The wire is the ``Connection``
(``connection.py``): the multiplexing of many client sessions onto one connection by
rewriting request ids and progress tokens. A subclass per transport (``stdio.py``) opens
the connection and moves its bytes; nothing else in it is transport-specific.

The upstream knows the gateway only as ``UpstreamEvents``, declared here: what it hands
up (each forwarded request's end, the server's own messages, its coming and going). A
forwarded request is the gateway's record (``CallT``); the connection keeps it by its
own request id and reads nothing of it but its start and deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any, Generic, Protocol

from msgspec import UNSET

from .. import __version__
from ..config import UpstreamConfig
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import (
    LATEST_LEGACY,
    LEGACY_CLIENT_CAPABILITIES,
    LEGACY_VERSIONS,
    MODERN_CLIENT_CAPABILITIES,
    json_type,
    list_page_items,
    server_capabilities,
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
from ..protocol.ndjson import OVERSIZED, LineFramer
from ..transport.writer import begin_batch, end_batch
from .connection import CallT, Connection, Hooks, InFlight, Requester, UpstreamError

__all__ = ["CLIENT_INFO", "CallT", "Connection", "InFlight", "Requester", "Upstream",
           "UpstreamError", "UpstreamEvents"]

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


STATES = ("stopped", "starting", "initializing", "ready", "restarting", "stopping")
"""What ``Upstream.state`` can be (shown in /status and mcpfast_upstream_state)."""


def deliver_lines(upstream: Any, framer: LineFramer, data: bytes) -> None:
    """The messages of a newline-delimited upstream's read (stdio, a unix socket) to
    ``upstream.on_message``, in one write batch: the answers they carry go out to their
    clients when the read ends (``transport.writer.begin_batch``)."""
    outer = begin_batch()
    try:
        for line in framer.feed(data):
            if line is OVERSIZED:
                upstream.connection.oversized(framer.pop_head(), framer.limit)
            else:
                upstream.on_message(line)
    finally:
        end_batch(outer)

class UpstreamEvents(Protocol[CallT]):
    """What an upstream hands up: the gateway core implements it."""

    def answered(self, upstream: Upstream[CallT], call: CallT, env: Envelope | None,
                 line: bytes) -> None:
        """The upstream answered ``call`` (``env`` is its response, id unchanged;
        ``line`` the message as the upstream wrote it, or empty when the gateway made
        ``env`` in its place). ``env`` is None for a result ``message_scan.read_result``
        read in ``line``: valid, and laid out as ``respond_as`` takes it."""
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
    """A named upstream as the gateway routes to it: its era, capabilities and catalog,
    its state, and the supervision of the connection its transport opens. The wire
    itself (ids, requests in flight, writes) is the ``Connection``; the data path's
    calls go straight to it (``forward``, ``on_message`` and the rest are the
    connection's own methods)."""

    kind = "abstract"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        self.name = name
        self.index = index
        self.config = config
        self.events = events
        self.log = log.getChild(name)
        self.state = "stopped"
        conn = self.connection = Connection(name, config.request_timeout, Hooks(
            partial(events.answered, self), partial(events.abandoned, self),
            partial(events.timed_out, self), partial(events.failed, self),
            partial(events.upstream_notification, self), partial(events.upstream_request, self),
        ), self.log)
        self.pending = conn.pending
        self.forward = conn.forward
        self.on_message = conn.on_message
        self.cancel = conn.cancel
        self.allocate_id = conn.allocate_id
        self.deadline = conn.deadline
        self.pending_for_token = conn.pending_for_token
        self.write = conn.write
        self.notify = conn.notify
        self.respond = conn.respond
        self.respond_error = conn.respond_error
        self.start_call = conn.start_call
        self.send_call = conn.send_call
        self.call = conn.call
        self.sweep = conn.sweep
        self.fail_all = conn.fail_all
        self.buffered = conn.buffered
        self.congested = conn.congested
        self.era: str | None = None
        """The verdict of the last handshake: "legacy" or "modern"."""
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.instructions: str | None = None
        self.catalog: dict[str, list[dict[str, Any]]] | None = None
        self.last_error: str | None = None
        self.starts = 0
        self.subscriptions: dict[str, int] = {}
        self.log_level: str | None = None
        self.listen_id: int | None = None
        """The id of the gateway's own subscriptions/listen on a modern upstream."""
        self.listen_acknowledged = asyncio.Event()
        self.initialized_once = asyncio.Event()
        self.unattributed = 0
        """Server-to-client requests refused and notifications dropped because the
        gateway could not tell whose they were."""
        self.dual_era = False
        """Probed modern with ``era = "auto"`` or ``"both"``: it may speak the legacy era
        too, which a legacy connection of its own (``legacy_twin``) finds out."""
        self.attempted = asyncio.Event()
        """Set once the first connection and handshake have succeeded or failed."""
        self.legacy_twin: Any = None
        """The ``LegacyTwin`` that starts and holds that connection, when the gateway
        made one for this upstream (gateway/legacy_twin.py)."""
        self.choose = False
        """Whether a request routed here needs a choice first (``pool`` or ``balancer``
        is set): one test on the data path instead of one per feature."""
        self.pool: Any = None
        """With ``mode = "per_session"``, on the upstream as routed to (the template):
        the ``SessionPool`` of the sessions' own upstreams (gateway/per_session.py)."""
        self.session_own = False
        """One session's own upstream (``mode = "per_session"``): what it says of its
        lists is that session's, not the catalog's (the template gives that)."""
        self.balancer: Any = None
        """The ``Balancer`` of the upstream's endpoints, when it has one (balancer.py):
        set on every endpoint; the first is the one routed to by name."""
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ended: asyncio.Future[Any] | None = None
        """Done when the current connection ends (``connect``)."""

    # -- the connection's state, as the gateway reads it -----------------------------
    @property
    def ready(self) -> bool:
        """Through the handshake with the connection open: requests may be forwarded."""
        return self.connection.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self.connection.ready = value

    @property
    def requests_forwarded(self) -> int:
        return self.connection.requests_forwarded

    @property
    def requests_failed(self) -> int:
        return self.connection.requests_failed

    @property
    def request_levels(self) -> dict[int, int]:
        """How many modern requests in flight asked for each log level."""
        return self.connection.request_levels

    @property
    def sole_user(self) -> Requester | None:
        """The one client session that used this upstream since its process started,
        while there is only one (``Connection.sole_user``)."""
        return self.connection.sole_user

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
        self.connection.opened()
        era = self.config.era
        if era == "modern":
            await self._discover(self.config.init_timeout, required=True)
            return
        if era in ("auto", "both") and await self._discover(min(self.config.init_timeout,
                                                      PROBE_TIMEOUT)):
            return
        try:
            await self._legacy_handshake()
        except UpstreamError as exc:
            # A probe that timed out here but reached a slow server locked its
            # connection to the modern era before our initialize came; the -32022 that
            # initialize gets says so (the Python SDK's client handles it the same way).
            if era not in ("auto", "both") or exc.code != UNSUPPORTED_PROTOCOL_VERSION:
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
        # server/discover lists only modern versions even when the server also answers
        # initialize: whether it does is learnt by a legacy twin's own handshake.
        self.dual_era = self.config.era in ("auto", "both")
        self.protocol_version = mutual[0]
        self._describes_itself(result, meta.get(META_SERVER_INFO) if isinstance(meta, dict)
                               else None)
        return True

    async def _legacy_handshake(self) -> None:
        """MCP lifecycle (basic/lifecycle): initialize, check the version, initialized."""
        result = await self.call("initialize", {
            "protocolVersion": LATEST_LEGACY,
            "capabilities": LEGACY_CLIENT_CAPABILITIES,
            "clientInfo": CLIENT_INFO,
        }, timeout=self.config.init_timeout)
        if not isinstance(result, dict):
            raise UpstreamError(jsonrpc.INTERNAL_ERROR, f"upstream answered initialize "
                                f"with {json_type(result)}, not an InitializeResult")
        version = result.get("protocolVersion")
        if version not in LEGACY_VERSIONS:
            raise UpstreamError(jsonrpc.INTERNAL_ERROR,
                                f"upstream answered initialize with unsupported protocol "
                                f"version {version!r}")
        self.era = "legacy"
        self.protocol_version = version
        self._describes_itself(result, result.get("serverInfo"))
        self.notify("notifications/initialized")
        if self.log_level is not None and "logging" in self.capabilities:
            await self.call("logging/setLevel", {"level": self.log_level})

    def _describes_itself(self, result: dict[str, Any], server_info: object) -> None:
        """What a handshake's result says of the server: capabilities, serverInfo and
        instructions, each taken only in the shape MCP gives it (a wrong one is logged
        and read as absent), since the gateway's own answers to its clients are made of
        them."""
        self.capabilities, problems = server_capabilities(result.get("capabilities"))
        if server_info is not None and not isinstance(server_info, dict):
            problems.append(f"serverInfo must be an object, not {json_type(server_info)}")
        self.server_info = server_info if isinstance(server_info, dict) else {}
        instructions = result.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            problems.append(f"instructions must be a string, not {json_type(instructions)}")
        self.instructions = instructions if isinstance(instructions, str) else None
        if problems:
            self.log.warning("the server's handshake result is not as MCP gives it, read "
                             "as far as it can be: %s", "; ".join(problems))

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
            self.connection.forget_call(old)
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
            if self.ready and self.listen_id is None:
                # The stream was cut while the upstream stays up (an HTTP proxy's idle
                # time-out, say): opened again after the restart backoff. (When the
                # upstream itself went down, its next handshake opens a new one.)
                asyncio.get_running_loop().call_later(self.config.restart_backoff,
                                                      self._listen_again)
            return
        if exc is not None:
            self.log.warning("subscriptions/listen failed: %s; list changes and resource "
                             "updates from this upstream are not relayed", exc)
        else:
            self.log.info("the upstream ended the gateway's subscriptions/listen")

    def _listen_again(self) -> None:
        if self.ready and self.listen_id is None and self.era == "modern":
            self.log.info("subscriptions/listen was cut; opening it again")
            self.listen(self.subscriptions)

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
            names: set[str] = set()
            problems: list[str] = []
            cursor: str | None = None
            cursors: set[str] = set()
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
                served, wrong = list_page_items(page, key, names)
                items.extend(served)
                problems.extend(wrong)
                cursor = page.get("nextCursor") if isinstance(page, dict) else None
                if not cursor:
                    break
                if not isinstance(cursor, str):
                    problems.append(f"nextCursor must be a string, not {json_type(cursor)}; "
                                    "the list ends there")
                    break
                if cursor in cursors:
                    # A cursor is opaque (MCP pagination), but one seen before can only
                    # lead round again.
                    problems.append(f"nextCursor {cursor!r} names an earlier page again; "
                                    "the list ends there")
                    break
                cursors.add(cursor)
            else:
                self.log.warning("%s returned more than %d pages; the rest are ignored",
                                 method, MAX_LIST_PAGES)
            if problems:
                self.log.warning("%s: %d item(s) or page(s) not served: %s", method,
                                 len(problems), "; ".join(problems[:5]) +
                                 ("; ..." if len(problems) > 5 else ""))
            catalog[kind] = items
        self.catalog = catalog

    def status(self) -> dict[str, Any]:
        """``describe``, and each endpoint's own when there are several (/status)."""
        info = self.describe()
        if self.pool is not None:
            info["per_session"] = self.pool.describe()
        if self.legacy_twin is not None and self.legacy_twin.twin is not None:
            info["legacy_twin"] = self.legacy_twin.twin.describe()
        if self.balancer is not None:
            info["endpoints"] = self.balancer.describe()
            info["balance"] = self.balancer.policy
        return info

    async def stop_all(self) -> None:
        """Stop the upstream: each of its endpoints, per-session upstreams, and its
        legacy twin."""
        members = self.pool.members if self.pool is not None \
            else self.balancer.members if self.balancer is not None and self.primary \
            else [self]
        if self.legacy_twin is not None and self.legacy_twin.twin is not None:
            members = [*members, self.legacy_twin.twin]
        await asyncio.gather(*(member.stop() for member in members))

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
            "in_flight": len(self.connection.pending),
            "requests_forwarded": self.requests_forwarded,
            "requests_failed": self.requests_failed,
            "unattributed": self.unattributed,
            "attribution": self.config.attribution,
            "starts": self.starts,
            "last_error": self.last_error,
            "log_level": self.log_level,
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

    @property
    def serving(self) -> bool:
        """Whether the upstream as routed to can take calls: it is ready, or with
        endpoints, one of them is."""
        return self.ready or (self.balancer is not None and
                              any(member.ready for member in self.balancer.members))

    @property
    def primary(self) -> bool:
        """Whether this is the upstream as routed to: alone, or the first endpoint."""
        return self.balancer is None or self.balancer.endpoints[0].upstream is self

    async def start(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"upstream:{self.name}")
        if self.balancer is not None and self.primary:
            for member in self.balancer.members[1:]:
                await member.start()
            self.balancer.start()

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
                self.attempted.set()
                await ended
                self.last_error = self.ended_because()
            except asyncio.CancelledError:
                self.ready = False
                self.attempted.set()
                await self.disconnect()
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means restart
                self.last_error = str(exc) or type(exc).__name__
            self.ready = False
            self.attempted.set()
            if self._stopping:
                await self.disconnect()
                break
            # The calls it had fail now, not once the old process has exited.
            message = f"upstream {self.name!r} is down: {self.last_error}"
            self.fail_all(message)
            self.events.upstream_down(self)
            if time.monotonic() - started >= STABLE_AFTER:
                backoff = self.config.restart_backoff
            self.state = "restarting"
            self.log.warning("%s; restarting in %.1f s", message, backoff)
            await self._end_and_wait(backoff)
            backoff = min(backoff * 2, self.config.restart_backoff_max)
        self.state = "stopped"

    async def _end_and_wait(self, backoff: float) -> None:
        """End the old connection (a process has ``stop_timeout`` to exit, then is
        signalled) while the restart backoff runs: the next starts after both, so a
        slow exit is not added to the backoff, and no two processes of one endpoint
        ever run at once. Cancelled (by ``stop``), it still lets the old one end."""
        ending = asyncio.ensure_future(self.disconnect())
        # Its failure is raised below; cancelled meanwhile, nobody reads it: retrieved.
        ending.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            await asyncio.sleep(backoff)
        finally:
            await asyncio.wait((ending,))
        ending.result()

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
        """Stop this endpoint (the gateway stops each of an upstream's endpoints;
        the first also ends their health checks)."""
        if self.balancer is not None and self.primary:
            await self.balancer.stop()
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


