"""DownstreamSession: one client's MCP conversation over one connection, or one modern
(2026-07-28) HTTP request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..transport.ports import Answer, FlowControl, Identity
from .batch import Batches

if TYPE_CHECKING:
    from ..upstream.base import Upstream as BaseUpstream

RequestId = int | str


# RFC 5424 severities, the order MCP's logging/setLevel uses.
LOG_LEVELS = {"debug": 0, "info": 1, "notice": 2, "warning": 3, "error": 4, "critical": 5,
              "alert": 6, "emergency": 7}


class _NothingYet(dict):  # type: ignore[type-arg]
    """An empty table shared by every session that has put nothing in it yet."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError("a session's shared empty table: write to session.table(name)")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        raise TypeError("a session's shared empty table: write to session.table(name)")

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a session's shared empty table: write to session.table(name)")


NOTHING_YET: dict[Any, Any] = _NothingYet()
"""What a session's rarely used tables (``outgoing``, ``relays``, ``relayed``,
``subscriptions``, ``listens``) are until something goes in: most sessions never use
them, and an empty dict of its own is 64 bytes a session, five times over. Reads see an
empty dict; a write goes through ``DownstreamSession.table``, and one that does not is
refused, never shared."""


class DownstreamSession:
    """What the gateway knows of one connected client.

    ``inflight`` maps the client's request id to the upstream and the upstream-side id
    so a cancellation or a disconnect reaches the right upstream request. ``outgoing``
    maps the ids the gateway gave to server-to-client requests it forwarded here back
    to the upstream that asked; ``relayed`` does the same for the requests it made of
    a modern upstream's ``input_required`` result, and ``relays`` holds those results'
    requests by client request id while the client answers them (gateway/mrtr.py).

    ``era`` is None until the session says: ``"legacy"`` after ``initialize``, or
    ``"modern"`` when the transport knows every request on it is modern (the Streamable
    HTTP transport's one-request sessions). Each request is still classified on its own
    (a request whose ``_meta`` carries a protocol version is modern), so a unix or
    WebSocket connection may carry both. ``listens`` holds the session's open
    ``subscriptions/listen`` requests by request id.
    """

    __slots__ = (
        "_messages_seen",
        "_next_out_id",
        "answer",
        "bytes_in",
        "bytes_out",
        "client_capabilities",
        "client_info",
        "close",
        "closed",
        "created",
        "era",
        "flow",
        "grants",
        "id",
        "identity",
        "inflight",
        "initialized",
        "last_activity",
        "listens",
        "log_level",
        "messages_in",
        "messages_out",
        "outgoing",
        "peer",
        "protocol_version",
        "relayed",
        "relays",
        "send",
        "subscriptions",
        "trace_headers",
        "transport",
    )

    def __init__(self, session_id: str, transport: str, peer: str,
                 send: Callable[[bytes], None], close: Callable[[int, str], None],
                 flow: FlowControl | None = None, identity: Identity | None = None,
                 answer: Answer | None = None) -> None:
        self.id = session_id
        self.identity = identity if identity is not None else Identity(f"peer:{peer}")
        """Who the client is, set at admission: what the transport knows (``ip:ADDRESS``,
        or ``uid:UID`` on the unix socket), or who authenticated. Rate limits count by it."""
        self.grants: Any = None
        """What authorization worked out for this identity (gateway/authz.py)."""
        self.flow = flow
        """Pauses reading from the client while an upstream it feeds is congested
        (None for sessions whose transport bounds what they send by itself)."""
        self.transport = transport
        self.peer = peer
        self.send = send
        self.answer = answer
        """How a transport that routes answers by request (Streamable HTTP) takes a
        response with its id, so that it does not read the response again; None: the
        response goes to ``send`` like every other message."""
        self.close = close
        self.initialized = False
        self.era: str | None = None
        self.protocol_version: str | None = None
        self.client_info: dict[str, Any] = {}
        self.client_capabilities: dict[str, Any] = {}
        self.log_level: int | None = None
        self.inflight: dict[RequestId, tuple[BaseUpstream[Any], int]] = {}
        self.outgoing: dict[int, tuple[BaseUpstream[Any], int | str, Any]] = NOTHING_YET
        """By the id the client sees: the server that asked, its own id, and the progress
        token its request carried (None: none)."""
        self.relays: dict[RequestId, InputRelay] = NOTHING_YET
        self.relayed: dict[int, InputRelay] = NOTHING_YET
        self.subscriptions: dict[str, None] = NOTHING_YET
        """The resource URIs subscribed to (a dict as a set)."""
        self.listens: dict[RequestId, Listen] = NOTHING_YET
        self.created = time.time()
        self.last_activity = time.monotonic()
        self.messages_in = 0
        self._messages_seen = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        """JSON-RPC message bytes, without the transport's framing."""
        self._next_out_id = 0
        self.closed = False
        self.trace_headers: tuple[str | None, str | None] | None = None
        """The ``traceparent`` and ``tracestate`` headers of the Streamable HTTP POST
        being dispatched, while tracing is on (gateway/tracing.py)."""

    def table(self, name: str) -> dict[Any, Any]:
        """The session's own ``name`` table, to write to: made at the first write
        (until then the shared ``NOTHING_YET``)."""
        table = getattr(self, name)
        if table is NOTHING_YET:
            table = {}
            setattr(self, name, table)
        return table  # type: ignore[no-any-return]

    @property
    def owes_answers(self) -> bool:
        """Whether requests of the client are unanswered: in flight, or in a JSON-RPC
        batch whose array is not complete yet (what a closing transport waits for)."""
        return bool(self.inflight) or type(self.answer) is Batches

    def next_out_id(self) -> int:
        self._next_out_id += 1
        return self._next_out_id

    def idle_for(self, now: float) -> float:
        """Seconds since a message last arrived, to the sweeper's resolution. The data
        path only counts messages; the sweeper turns the count into a time, so that no
        clock is read per message."""
        if self.messages_in != self._messages_seen:
            self._messages_seen = self.messages_in
            self.last_activity = now
        return now - self.last_activity

    def wants_log(self, level: int) -> bool:
        return self.log_level is not None and level >= self.log_level

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "peer": self.peer,
            "identity": self.identity.key,
            "credentials": self.identity.describe(),
            "initialized": self.initialized,
            "era": self.era,
            "protocol_version": self.protocol_version,
            "client": self.client_info,
            "in_flight": len(self.inflight),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "connected_at": self.created,
            "idle_seconds": round(time.monotonic() - self.last_activity, 3),
        }


class Listen:
    """One open ``subscriptions/listen`` (basic/patterns/subscriptions): the kinds of
    change it asked for and the gateway honours, and the resource URIs it watches. Every
    notification it gets carries its request id as the subscription id."""

    __slots__ = ("prompts", "request_id", "resources", "tools", "uris")

    def __init__(self, request_id: RequestId, tools: bool = False, prompts: bool = False,
                 resources: bool = False, uris: tuple[str, ...] = ()) -> None:
        self.request_id = request_id
        self.tools = tools
        self.prompts = prompts
        self.resources = resources
        self.uris = uris

    def wants(self, kind: str) -> bool:
        """Whether ``notifications/<kind>/list_changed`` goes on this stream."""
        return bool(getattr(self, kind))


class InputRelay:
    """A legacy client's request to a modern upstream that asked for input: what the
    retries need, and the requests the client still has to answer (by relayed id)."""

    __slots__ = ("answers", "client_id", "deadline", "method", "params", "progress_token",
                 "rounds", "state", "trace", "upstream", "waiting")

    def __init__(self, upstream: BaseUpstream[Any], client_id: int | str, method: str,
                 params: dict[str, Any], progress_token: Any, trace: Any = None) -> None:
        self.upstream = upstream
        self.client_id = client_id
        self.method = method
        self.params = params
        self.progress_token = progress_token
        self.trace = trace
        """The request's trace context (``Request.trace``): each retry ends as the same
        span, the one whose id the upstream got in ``params``."""
        self.rounds = 0
        self.state: str | None = None
        self.answers: dict[str, Any] = {}
        self.waiting: dict[int, str] = {}
        self.deadline = 0.0
