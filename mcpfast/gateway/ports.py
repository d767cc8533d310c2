"""What the gateway's parts (catalog, subscriptions, log levels, requests, relay) need of
the gateway that wires them, declared here so that none of them imports it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from msgspec import UNSET

from .. import __version__
from ..config import Config
from ..counters import Counters
from .call import Request, Upstream
from .router import Router
from .session import DownstreamSession
from .tracing import Tracing

SERVER_INFO = {"name": "mcpfast", "title": "mcpfast MCP gateway", "version": __version__}
# The gateway's own results for modern clients: see the design note in protocol/mcp.py.
CACHE_HINTS = {"ttlMs": 0, "cacheScope": "private"}

Handler = Callable[[Request], None]
"""A method's handler (requests.py's table): the request, read in its era."""


class Core(Protocol):
    config: Config
    counters: Counters
    sessions: dict[str, DownstreamSession]
    upstreams: dict[str, Upstream]
    router: Router
    draining: bool
    overloaded: bool
    tracing: Tracing | None

    def send(self, session: DownstreamSession, data: bytes) -> None:
        """A message to the client that is not a response (notifications, requests)."""
        ...

    def answer(self, session: DownstreamSession, request_id: Any, data: bytes,
               error: bool | None) -> None:
        """The response ``data`` to the client's request ``request_id``."""
        ...

    def respond(self, session: DownstreamSession, request_id: Any, result: Any) -> None:
        """Answer ``request_id`` with the gateway's own ``result``."""
        ...

    def send_error(self, session: DownstreamSession, request_id: Any, code: int,
                   message: str, data: Any = UNSET) -> None: ...

    def ended(self, upstream: Upstream, pending: Request, outcome: int) -> None:
        """A request ended (``call.OUTCOMES``): the one place every end passes."""
        ...

    def retry(self, member: Upstream, pending: Request) -> bool:
        """Send a safe request an endpoint failed to another endpoint, if one may."""
        ...

    def id_taken(self, session: DownstreamSession, client_id: int | str) -> bool:
        """Whether ``client_id`` cannot be taken now (answered with an error if so)."""
        ...

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an upstream call of the gateway's own; a failure is logged."""
        ...
