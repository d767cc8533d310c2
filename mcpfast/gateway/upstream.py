"""Upstream: a named MCP server the gateway is a client of, shared by all sessions.

This module holds what every upstream kind shares: the MCP handshake, the catalog
(tools, prompts, resources), and the multiplexing of many client sessions onto one
connection by rewriting request ids and progress tokens. A subclass per transport
(``stdio.py``) moves the bytes and supervises the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from .. import __version__
from ..config import UpstreamConfig
from ..protocol import jsonrpc
from ..protocol.jsonrpc import Envelope
from ..protocol.mcp import LATEST_LEGACY, LEGACY_VERSIONS

if TYPE_CHECKING:
    from .gateway import Gateway
    from .session import DownstreamSession

log = logging.getLogger("mcpfast.upstream")

LIST_METHODS = {
    "tools": ("tools/list", "tools"),
    "prompts": ("prompts/list", "prompts"),
    "resources": ("resources/list", "resources"),
    "resourceTemplates": ("resources/templates/list", "resourceTemplates"),
}
MAX_LIST_PAGES = 1000


class UpstreamError(Exception):
    def __init__(self, code: int, message: str, data: Any = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Pending(msgspec.Struct):
    """A client request in flight on this upstream, keyed by the upstream-side id.
    A Struct because its constructor runs in C, and one is made per forwarded request."""

    session: DownstreamSession
    client_id: int | str
    deadline: float
    progress_token: Any
    method: str
    subscription: str | None = None
    """The URI of a resources/subscribe being forwarded, undone if the upstream refuses."""


class Upstream:
    kind = "abstract"

    def __init__(self, name: str, index: int, config: UpstreamConfig, gateway: Gateway) -> None:
        self.name = name
        self.index = index
        self.config = config
        self.gateway = gateway
        self.log = log.getChild(name)
        self.state = "stopped"
        self.ready = False
        self.pending: dict[int, Pending] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
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
        self.initialized_once = asyncio.Event()

    # -- transport hooks -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send one JSON-RPC message; the transport adds its framing."""
        raise NotImplementedError

    def on_message(self, line: bytes) -> None:
        """One message from the upstream."""
        try:
            env = jsonrpc.decode(line)
        except jsonrpc.MessageError as exc:
            self.log.warning("ignoring an invalid message from the upstream: %s", exc.message)
            return
        try:
            if env.method is UNSET:
                self._on_response(env)
            elif env.id is UNSET:
                self.gateway.upstream_notification(self, env)
            else:
                self.gateway.upstream_request(self, env)
        except Exception:
            self.log.exception("could not handle a message from the upstream: %.200r", line)

    def _on_response(self, env: Envelope) -> None:
        upstream_id = env.id
        pending = self.pending.pop(upstream_id, None) if type(upstream_id) is int else None
        if pending is not None:
            session = pending.session
            session.inflight.pop(pending.client_id, None)
            if pending.subscription is not None and env.error is not UNSET:
                self.gateway.subscription_refused(session, self, pending.subscription)
            if not session.closed:
                self.gateway.send(session, jsonrpc.reencode(Envelope(
                    jsonrpc="2.0", id=pending.client_id, result=env.result, error=env.error)))
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
    def allocate_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def forward(self, session: DownstreamSession, client_id: int | str, method: str,
                params: Raw | bytes | UnsetType, progress_token: Any = None,
                upstream_id: int | None = None, subscription: str | None = None
                ) -> int | None:
        """Send a client's request on; its answer reaches the session by ``_on_response``.
        ``upstream_id`` is one from ``allocate_id`` when the caller already wrote it into
        ``params`` (as the progress token). Returns the upstream-side id, or None when the
        request was failed at once."""
        if not self.ready:
            self.requests_failed += 1
            self.gateway.send_error(session, client_id, jsonrpc.UPSTREAM_UNAVAILABLE,
                                    f"upstream {self.name!r} is not available ({self.state})")
            return None
        if upstream_id is None:
            upstream_id = self.allocate_id()
        self.pending[upstream_id] = Pending(session, client_id,
                                            time.monotonic() + self._timeout,
                                            progress_token, method, subscription)
        session.inflight[client_id] = (self, upstream_id)
        self.requests_forwarded += 1
        raw = params if not isinstance(params, bytes) else Raw(params)
        self.write(jsonrpc.reencode(Envelope(jsonrpc="2.0", id=upstream_id, method=method,
                                             params=raw)))
        return upstream_id

    def cancel(self, upstream_id: int, reason: str) -> None:
        """Forget a forwarded request and tell the upstream to stop working on it."""
        pending = self.pending.pop(upstream_id, None)
        if pending is not None:
            pending.session.inflight.pop(pending.client_id, None)
            if self.ready:
                self.notify("notifications/cancelled",
                            {"requestId": upstream_id, "reason": reason})

    def pending_for_token(self, token: Any) -> Pending | None:
        return self.pending.get(token) if type(token) is int else None

    def sweep(self, now: float) -> None:
        """Fail the requests whose deadline has passed."""
        expired = [uid for uid, p in self.pending.items() if p.deadline <= now]
        for uid in expired:
            pending = self.pending[uid]
            self.cancel(uid, "request timed out at the gateway")
            self.requests_failed += 1
            self.gateway.send_error(
                pending.session, pending.client_id, jsonrpc.REQUEST_TIMEOUT,
                f"upstream {self.name!r} did not answer {pending.method} within "
                f"{self.config.request_timeout:g} s")

    def fail_all(self, message: str) -> None:
        """Answer every request in flight with an error, now."""
        pending, self.pending = self.pending, {}
        for p in pending.values():
            p.session.inflight.pop(p.client_id, None)
            self.requests_failed += 1
            self.gateway.send_error(p.session, p.client_id, jsonrpc.UPSTREAM_UNAVAILABLE, message)
        calls, self._calls = self._calls, {}
        for future in calls.values():
            if not future.done():
                future.set_exception(UpstreamError(jsonrpc.UPSTREAM_UNAVAILABLE, message))

    # -- the gateway's own requests --------------------------------------------------
    async def call(self, method: str, params: Any = UNSET, timeout: float | None = None) -> Any:
        upstream_id = self.allocate_id()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[upstream_id] = future
        self.write(jsonrpc.request(upstream_id, method, params))
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

    async def handshake(self) -> None:
        """MCP lifecycle (basic/lifecycle): initialize, check the version, initialized."""
        result = await self.call("initialize", {
            "protocolVersion": LATEST_LEGACY,
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}},
            "clientInfo": {"name": "mcpfast", "version": __version__},
        }, timeout=self.config.init_timeout)
        version = result.get("protocolVersion")
        if version not in LEGACY_VERSIONS:
            raise UpstreamError(jsonrpc.INTERNAL_ERROR,
                                f"upstream answered initialize with unsupported protocol "
                                f"version {version!r}")
        self.protocol_version = version
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        self.instructions = result.get("instructions")
        self.notify("notifications/initialized")
        if self.log_level is not None and "logging" in self.capabilities:
            await self.call("logging/setLevel", {"level": self.log_level})

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
                try:
                    page = await self.call(method, {"cursor": cursor} if cursor else UNSET)
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
            "protocol_version": self.protocol_version,
            "server_info": self.server_info,
            "tools": len(catalog.get("tools", [])),
            "prompts": len(catalog.get("prompts", [])),
            "resources": len(catalog.get("resources", [])),
            "resource_templates": len(catalog.get("resourceTemplates", [])),
            "in_flight": len(self.pending),
            "requests_forwarded": self.requests_forwarded,
            "requests_failed": self.requests_failed,
            "starts": self.starts,
            "last_error": self.last_error,
        }

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


