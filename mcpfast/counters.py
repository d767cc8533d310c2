"""The gateway-wide hot-path counters: plain integers incremented in place by the data
path (DESIGN.md: no prometheus-client call per message). ``metrics.GatewayCollector``
reads them when ``/metrics`` is scraped."""

from __future__ import annotations


class Counters:
    """Gateway-wide counters; each attribute is a plain int incremented in place."""

    __slots__ = (
        "authentication_refused",
        "bytes_in",
        "bytes_out",
        "client_overflows",
        "connections",
        "denied",
        "ended",
        "errors",
        "messages_in",
        "messages_out",
        "oversized",
        "parse_errors",
        "refused_in_flight",
        "refused_overloaded",
        "refused_sessions",
        "refused_sessions_per_peer",
        "requests",
        "timeouts",
    )

    def __init__(self) -> None:
        self.connections: dict[str, int] = {}
        """Downstream sessions opened, by transport."""
        self.bytes_in: dict[str, int] = {}
        self.bytes_out: dict[str, int] = {}
        """JSON-RPC message bytes of the sessions closed so far, by transport (an open
        session counts its own: ``DownstreamSession.bytes_in``)."""
        self.ended = [0] * 6
        """Requests ended, by outcome (``gateway.call.OUTCOMES``)."""
        self.messages_in = 0
        self.messages_out = 0
        self.requests = 0
        self.errors = 0
        self.parse_errors = 0
        self.oversized = 0
        self.client_overflows = 0
        self.timeouts = 0
        self.refused_overloaded = 0
        self.refused_in_flight = 0
        self.refused_sessions = 0
        self.refused_sessions_per_peer = 0
        self.authentication_refused: dict[str, int] = {}
        """Clients refused at admission, by reason (auth/authenticator.py)."""
        self.denied: dict[str, int] = {}
        """Calls refused by authorization, by kind (gateway/authz.py)."""

    def opened(self, transport: str) -> None:
        self.connections[transport] = self.connections.get(transport, 0) + 1

    def closed(self, transport: str, bytes_in: int, bytes_out: int) -> None:
        self.bytes_in[transport] = self.bytes_in.get(transport, 0) + bytes_in
        self.bytes_out[transport] = self.bytes_out.get(transport, 0) + bytes_out


OTHER_CODE = "other"
"""The label of error codes past ``ErrorCounts.max_codes``."""


class ErrorCounts:
    """Requests that ended with an error for the client, by where (an upstream, or an
    upstream and a tool) and JSON-RPC code, and, for those a policy refused, by where
    and policy. Touched only when a request ends with an error. An upstream picks its
    own codes: past ``max_codes`` distinct keys, new codes count under ``OTHER_CODE``,
    so that the label set stays bounded."""

    __slots__ = ("by_code", "max_codes", "refused")

    def __init__(self, max_codes: int = 200) -> None:
        self.by_code: dict[tuple[str, ...], int] = {}
        """Keyed by ``where + (str(code),)``."""
        self.refused: dict[tuple[str, ...], int] = {}
        """Keyed by ``where + (policy,)``."""
        self.max_codes = max_codes

    def count(self, where: tuple[str, ...], code: int, policy: str) -> None:
        key = (*where, str(code))
        by_code = self.by_code
        if key not in by_code and len(by_code) >= self.max_codes:
            key = (*where, OTHER_CODE)
        by_code[key] = by_code.get(key, 0) + 1
        if policy:
            refused = (*where, policy)
            self.refused[refused] = self.refused.get(refused, 0) + 1
