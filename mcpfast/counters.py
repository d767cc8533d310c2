"""The gateway-wide hot-path counters: plain integers incremented in place by the data
path (DESIGN.md: no prometheus-client call per message). ``metrics.GatewayCollector``
reads them when ``/metrics`` is scraped."""

from __future__ import annotations


class Counters:
    """Gateway-wide counters; each attribute is a plain int incremented in place."""

    __slots__ = (
        "authentication_refused",
        "client_overflows",
        "connections_total",
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
        self.connections_total = 0
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
