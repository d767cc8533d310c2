"""What the transports need from the layers above them, declared here so that they never
import those layers (DESIGN.md, package layout): the gateway core implements
``Dispatcher``, its sessions ``ClientSession``, and the listeners ``ConnectionOwner``.

A transport only moves bytes: it admits a connection, opens a session for it, hands each
complete message to ``Dispatcher.handle`` and writes what the session's ``send`` is
given. Nothing here is called per message except ``handle``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

from ..auth.authenticator import Authenticator
from ..auth.identity import Identity
from ..config import Config
from ..counters import Counters
from ..protocol.jsonrpc import Envelope
from ..protocol.modern import ModernMeta
from .admission import Admission

__all__ = ["Answer", "Checked", "ClientSession", "ConnectionOwner", "Dispatcher", "FlowControl",
           "Identity"]


class FlowControl(Protocol):
    """Reading from a client, paused and resumed for a reason bit each (writer.py)."""

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...


Answer = Callable[[Any, bytes, "bool | None"], None]
"""A response to a client's request, with the request's id and whether it is an error
(None: not known without reading it)."""

Checked = tuple[dict[str, Any], ModernMeta]
"""A modern request's ``params`` and its ``_meta`` as ``modern.read_meta`` read it."""


class ClientSession(Protocol):
    """The core's record of one client conversation, as far as a transport reads it."""

    era: str | None
    identity: Identity
    initialized: bool
    protocol_version: str | None
    client_capabilities: dict[str, Any]
    last_activity: float
    closed: bool
    """Set when the core ended the session: nothing more of the client is handled."""
    trace_headers: tuple[str | None, str | None] | None
    """Set by the Streamable HTTP transport around ``Dispatcher.handle`` while tracing
    is on: the POST's ``traceparent`` and ``tracestate`` headers."""

    @property
    def inflight(self) -> Collection[int | str]:
        """The client's request ids still unanswered."""
        ...

    @property
    def owes_answers(self) -> bool:
        """Whether any request of the client is unanswered (in flight, or in a batch
        whose answer is not complete)."""
        ...


class Dispatcher(Protocol):
    """The gateway core, as a transport sees it. ``config`` is the snapshot in force:
    read it when a connection or request starts, not once at import.

    A session is handed back exactly as ``open_session`` returned it (the core's own
    type, hence ``Any`` in the signatures that take it)."""

    config: Config
    counters: Counters
    admission: Admission
    authenticator: Authenticator
    """Who a client is (auth/): asked once per connection or HTTP request."""
    draining: bool
    overloaded: bool

    def open_session(self, transport: str, peer: str, send: Callable[[bytes], None],
                     close: Callable[[int, str], None], flow: FlowControl | None = None,
                     identity: Identity | None = None, answer: Answer | None = None
                     ) -> ClientSession:
        """``answer``, when given, takes the responses to the client's requests instead
        of ``send`` (a transport that routes by request id)."""
        ...

    def close_session(self, session: Any) -> None: ...

    def handle(self, session: Any, data: bytes, env: Envelope | None = None,
               checked: Checked | None = None) -> None:
        """One complete message from the client: JSON text, and its envelope when the
        transport already decoded it (with ``jsonrpc.decode`` and the configured depth),
        so that it is not decoded twice. ``checked``: a modern request's params and
        ``_meta``, when the transport read them for its own checks and checked them
        as the core would (``modern.read_meta`` and ``check_version``)."""
        ...

    def batch(self, session: Any, data: bytes,
              deliver: Callable[[bytes | None], None] | None = None) -> Any:
        """A JSON-RPC batch from the client (``data``, which ``jsonrpc.decode`` refused
        as one), taken where the session's protocol version has batches: its answer
        (an array, or None when nothing in it is answered) goes to ``deliver``. False,
        having done nothing, where batches are not taken; otherwise truthy: the batch,
        whose ``waiting`` holds the ids of its requests still in flight, or True when
        it was answered at once with an error."""
        ...

    def send_error(self, session: Any, request_id: Any, code: int, message: str,
                   data: Any = None) -> None: ...

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The merged tool list (the Streamable HTTP transport checks ``Mcp-Param-*``
        headers against the tools' input schemas)."""
        ...


class ConnectionOwner(Protocol):
    """A listener: it owns its connections, to close them on drain."""

    connections: set[Any]
