"""The record of a client request, from its decode to its end (``Request``), the
outcomes it can end with, and ``ParkedCall``, one of the input bridge's records
(gateway/mrtr.py): a legacy upstream's call waiting for a modern client's retry."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from ..protocol.jsonrpc import Envelope
from ..protocol.modern import META_PROTOCOL_VERSION, ModernMeta
from ..upstream.base import Upstream as BaseUpstream
from .session import DownstreamSession, InputRelay

# How a forwarded request's answer is reshaped for the client (Request.shape).
SHAPE_NONE = 0
"""Same era on both sides: the answer's bytes pass through."""
SHAPE_MODERN_FROM_LEGACY = 1
"""A modern client's request served by a legacy upstream."""
SHAPE_MODERN_FROM_MODERN = 2
"""A modern client's request served by a modern upstream (serverInfo is replaced)."""
SHAPE_LEGACY_FROM_MODERN = 3
"""A legacy client's request served by a modern upstream."""


# How a request ended: ``Gateway.ended``, the one place every end passes through, counts
# it and tells the observers there (metrics per tool, the access log, tracing).
ANSWERED = 0
"""The upstream answered with a result."""
ERRORED = 1
"""The upstream answered with an error."""
TIMED_OUT = 2
"""No answer within the upstream's request_timeout; the client got -32001."""
CANCELLED = 3
"""Withdrawn: the client cancelled it or went away."""
FAILED = 4
"""The upstream went away (or the gateway shut down) before answering."""
REFUSED = 5
"""A policy of the chain refused it; it never reached the upstream."""
OUTCOMES = ("answered", "errored", "timed_out", "cancelled", "failed", "refused")


Upstream = BaseUpstream["Request"]
"""An upstream as the gateway holds it: its in-flight requests are ``Request``."""


class ParkedCall:
    """A legacy upstream's call waiting for a modern client's retry, with the upstream's
    unanswered server-to-client request."""

    __slots__ = ("expires", "id", "key", "method", "outcome", "owner", "pending",
                 "request_cancelled", "request_id", "result", "upstream", "upstream_id")

    def __init__(self, parked_id: str, upstream: Upstream, upstream_id: int,
                 pending: Request, request_id: int | str, method: str, key: str,
                 result: dict[str, Any], expires: float, owner: str) -> None:
        self.id = parked_id
        self.owner = owner
        """The key of the authenticated identity whose call it is, which alone may retry
        it ("" when the client was not authenticated: the state's secrecy is its
        guard, as for a session id)."""
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


# -- a request while it is dispatched and routed --------------------------------------
class _Meta(msgspec.Struct, gc=False):
    progressToken: int | str | UnsetType = UNSET  # noqa: N815 - the wire name
    protocolVersion: Any = msgspec.field(  # noqa: N815
        default=UNSET, name=META_PROTOCOL_VERSION)
    """Present on a modern request, whatever its value (``is_modern``)."""


class _Ref(msgspec.Struct, gc=False):
    type: str = ""
    name: str | UnsetType = UNSET
    uri: str | UnsetType = UNSET


class RouteParams(msgspec.Struct, gc=False):
    """The only parts of ``params`` routing reads; the rest stays undecoded."""

    name: str | UnsetType = UNSET
    uri: str | UnsetType = UNSET
    ref: _Ref | UnsetType = UNSET
    cursor: Any = UNSET
    meta: _Meta | UnsetType = msgspec.field(default=UNSET, name="_meta")


route_params = msgspec.json.Decoder(RouteParams)
NO_PARAMS = RouteParams()


NO_ENVELOPE = Envelope()
"""The envelope of a request the gateway makes itself (an input round's retry), and of
one already forwarded: what was sent no longer needs the client's bytes."""


class Request(msgspec.Struct, gc=False):
    """One client request, from its decode to its end: the one record of it.

    While the gateway dispatches and routes it, its era decided how it was read and
    checked (a legacy request's routing fields only, ``head``; a modern one's whole
    ``params`` and its ``meta``) and decides how the gateway's own answers are shaped;
    the handlers, one table for both eras, read it the same way. Forwarded, the same
    record is what the upstream's connection keeps by its own request id until the
    request ends (answered, timed out, cancelled, failed with its upstream, or parked
    for a modern client's retry) and hands back to the gateway; ``Gateway.ended`` sees
    it once, whatever the end. Without GC tracking: nothing it holds refers back to it
    once it has ended (the input bridge unlinks a parked call when it lets it go).
    """

    session: DownstreamSession
    env: Envelope
    """The client's message; ``NO_ENVELOPE`` once forwarded (its bytes are let go)."""
    id: int | str
    """The client's request id."""
    method: str
    name: str | None
    """``params.name``, when it is a string; forwarded, the tool or prompt name (or
    resource URI) as the client named it: a modern client's ``requestState`` is bound
    to it (gateway/mrtr.py)."""
    uri: str | None
    """``params.uri``, when it is a string (a modern resources/read's not-found error
    names it)."""
    modern: bool = False
    head: RouteParams | None = None
    params: dict[str, Any] | None = None
    """A modern request's whole ``params``, as read at dispatch."""
    meta: ModernMeta | None = None
    # -- set when it is forwarded -------------------------------------------------------
    progress_token: Any = None
    """The client's progress token (the upstream sees its own)."""
    subscription: str | None = None
    """The URI of a resources/subscribe being forwarded, undone if the upstream refuses."""
    shape: int = SHAPE_NONE
    log_level: int | None = None
    """A modern request's ``_meta`` log level: it alone decides whether the request gets
    log messages, and while it runs the upstream logs at least that verbosely."""
    client_capabilities: dict[str, Any] | None = None
    """A modern request's ``clientCapabilities``: what the upstream may ask it for."""
    arguments: Any = None
    """A modern request's ``arguments`` sent to a legacy upstream: the ``requestState``
    of a question the upstream asks is bound to them (mrtr.py)."""
    forwarded: dict[str, Any] | None = None
    """A legacy client's request to a modern upstream, as forwarded: the base of the
    retries that carry ``inputResponses``."""
    relay: InputRelay | None = None
    """The input rounds this request has been through, once the upstream asked."""
    parked: ParkedCall | None = None
    """Set while the call waits for a modern client's retry (its session is NOBODY)."""
    deadline: float = 0.0
    """When it times out: stamped by the upstream as it sends it (``Connection.forward``)."""
    started: float = 0.0
    """When it was sent (monotonic seconds), stamped with ``deadline``."""
    trace: Any = None
    """Its place in a trace (``tracing.TraceContext``) while tracing is on, set as it
    is forwarded or refused; None otherwise."""
    error_code: int = 0
    """The JSON-RPC error code the client was answered with, set by every end but an
    answer with a result or a cancel (0: none), for the error counts by code."""
    refused_by: str = ""
    """The policy that refused it (``Refusal.policy``), when its outcome is REFUSED."""
    replay: Any = None
    """A safe request to an upstream with several endpoints: what sending it again to
    another endpoint takes, if its endpoint fails it (requests.py, ``retry``)."""
    retried: bool = False

    @classmethod
    def of_modern(cls, session: DownstreamSession, env: Envelope, method: str,
                  params: dict[str, Any], meta: ModernMeta) -> Request:
        name, uri = params.get("name"), params.get("uri")
        return cls(session, env, env.id, method,  # type: ignore[arg-type]
                   name if isinstance(name, str) else None,
                   uri if isinstance(uri, str) else None, True, None, params, meta)

    def ref(self) -> tuple[str, str | None, str | None] | None:
        """``params.ref`` as (type, name, uri); None when a legacy request has none (a
        modern one's missing or malformed ref reads as an empty one)."""
        if self.params is not None:
            ref = self.params.get("ref")
            ref = ref if isinstance(ref, dict) else {}
            name, uri = ref.get("name"), ref.get("uri")
            return (str(ref.get("type")), name if isinstance(name, str) else None,
                    uri if isinstance(uri, str) else None)
        head = self.head
        if head is None or isinstance(head.ref, UnsetType):
            return None
        ref_ = head.ref
        return (ref_.type, ref_.name if isinstance(ref_.name, str) else None,
                ref_.uri if isinstance(ref_.uri, str) else None)
