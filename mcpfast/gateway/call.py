"""The records of a client request forwarded to an upstream.

``Pending`` lives from the moment the request is sent until it ends: answered, timed
out, cancelled, failed with its upstream, or parked for a modern client's retry. The
upstream keeps it by its own request id (``Upstream.pending``) and hands it back to the
gateway when it ends. ``ParkedCall`` is one of the input bridge's records
(gateway/mrtr.py): a legacy upstream's call waiting for a modern client's retry."""

from __future__ import annotations

from typing import Any

import msgspec

from ..protocol.jsonrpc import Envelope
from ..upstream.base import Upstream as BaseUpstream
from .session import DownstreamSession, InputRelay

# How a forwarded request's answer is reshaped for the client (Pending.shape).
SHAPE_NONE = 0
"""Same era on both sides: the answer's bytes pass through."""
SHAPE_MODERN_FROM_LEGACY = 1
"""A modern client's request served by a legacy upstream."""
SHAPE_MODERN_FROM_MODERN = 2
"""A modern client's request served by a modern upstream (serverInfo is replaced)."""
SHAPE_LEGACY_FROM_MODERN = 3
"""A legacy client's request served by a modern upstream."""


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
    shape: int = SHAPE_NONE
    log_level: int | None = None
    """A modern request's ``_meta`` log level: it alone decides whether the request gets
    log messages, and while it runs the upstream logs at least that verbosely."""
    uri: str | None = None
    """The URI a modern client's resources/read names, for its not-found error."""
    name: str | None = None
    """The tool or prompt name (or resource URI) as the client named it: a modern
    client's ``requestState`` is bound to it (gateway/mrtr.py)."""
    client_capabilities: dict[str, Any] | None = None
    """A modern request's ``clientCapabilities``: what the upstream may ask it for."""
    params: dict[str, Any] | None = None
    """A legacy client's request to a modern upstream, as forwarded: the base of the
    retries that carry ``inputResponses``."""
    relay: InputRelay | None = None
    """The input rounds this request has been through, once the upstream asked."""
    parked: ParkedCall | None = None
    """Set while the call waits for a modern client's retry (its session is NOBODY)."""


Upstream = BaseUpstream[Pending]
"""An upstream as the gateway holds it: its in-flight requests are ``Pending``."""


class ParkedCall:
    """A legacy upstream's call waiting for a modern client's retry, with the upstream's
    unanswered server-to-client request."""

    __slots__ = ("expires", "id", "key", "method", "outcome", "pending", "request_cancelled",
                 "request_id", "result", "upstream", "upstream_id")

    def __init__(self, parked_id: str, upstream: Upstream, upstream_id: int,
                 pending: Pending, request_id: int | str, method: str, key: str,
                 result: dict[str, Any], expires: float) -> None:
        self.id = parked_id
        self.upstream = upstream
        self.upstream_id = upstream_id
        self.pending = pending
        self.request_id = request_id
        self.method = method
        self.key = key
        self.result = result
        self.expires = expires
        self.outcome: Envelope | None = None
        """The call's answer, when the upstream gave it before the retry came."""
        self.request_cancelled = False
        """The upstream withdrew its request: the retry only takes the call over."""
