"""Balancer: an upstream's endpoints as one, with Envoy's semantics and names.

Each endpoint is an ``Upstream`` of its own kind, with its own connection, handshake
and supervision; the first is the one the gateway routes to by name (its catalog is the
upstream's; replicas are assumed to serve the same one), and each request is then sent
to the endpoint ``pick`` chooses:

- only endpoints that are ready, not ejected by outlier detection, healthy by the active
  checks and not drained by the operator; if none is healthy but some are ready, those
  (Envoy's panic routing: a failing health check must not take everything down);
- past ``max_pending_requests`` in flight an endpoint is skipped; all of them past it is
  an open circuit: the request is refused at once;
- then round robin, the fewest in flight, or a rendezvous hash of the client session
  (each session keeps its endpoint while that endpoint is up; when it goes, only its
  sessions move).

An upstream without replicas gets a balancer too when it asks for circuit breaking,
health checks or outlier detection.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from ..config import HealthCheckConfig, OutlierDetectionConfig, UpstreamConfig
from ..protocol import jsonrpc
from .connection import UpstreamError

log = logging.getLogger("mcpfast.upstream")

RETRY_BUDGET = 0.2
RETRY_MIN_CONCURRENCY = 3
RETRYABLE = frozenset({"resources/read", "prompts/get", "completion/complete"})
"""Requests the gateway forwards that only read: sent again to another endpoint when
theirs fails them (lists, ping and discover the gateway answers itself)."""
FAILING_CODES = frozenset({jsonrpc.INTERNAL_ERROR, jsonrpc.UPSTREAM_UNAVAILABLE})
"""Error codes from an endpoint that count against it, as a 5xx would."""


class Endpoint:
    """What the balancer knows of one endpoint beyond its connection."""

    __slots__ = ("consecutive_errors", "drained", "ejected_until", "ejections", "failures",
                 "healthy", "index", "successes", "upstream")

    def __init__(self, index: int, upstream: Any) -> None:
        self.index = index
        self.upstream = upstream
        self.healthy = True
        """By the active checks (always, when there are none)."""
        self.successes = 0
        self.failures = 0
        """Health checks in a row, passed and failed."""
        self.consecutive_errors = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.drained = False

    def describe(self, now: float, max_pending: int) -> dict[str, Any]:
        info = self.upstream.describe()
        info.update({
            "endpoint": self.index, "healthy": self.healthy, "drained": self.drained,
            "ejected": self.ejected_until > now,
            "ejected_for": round(max(0.0, self.ejected_until - now), 3),
            "ejections": self.ejections, "consecutive_errors": self.consecutive_errors,
            "circuit_open": bool(max_pending) and
            len(self.upstream.pending) >= max_pending})
        return info


class Balancer:
    def __init__(self, members: list[Any], config: UpstreamConfig) -> None:
        self.endpoints = [Endpoint(i, m) for i, m in enumerate(members)]
        self.name = members[0].name
        self.policy = config.balance
        self.max_pending = config.max_pending_requests
        self.health: HealthCheckConfig | None = config.health_check
        self.outlier: OutlierDetectionConfig | None = config.outlier_detection
        self._turn = 0
        self._checks: list[asyncio.Task[None]] = []
        self.refused = 0
        """Requests refused because no endpoint could take them."""
        self.retrying = 0
        """Retries in flight (Envoy's retry budget bounds them)."""
        self.retries = 0

    @property
    def members(self) -> list[Any]:
        return [e.upstream for e in self.endpoints]

    def endpoint_of(self, member: Any) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.upstream is member:
                return endpoint
        raise LookupError(member)

    # -- choosing -------------------------------------------------------------------------
    def pick(self, session_id: str, exclude: Any = None) -> Any:
        """The endpoint to send a request to (other than ``exclude``), or None
        (``refusal`` says why)."""
        now = time.monotonic()
        ready = [e for e in self.endpoints
                 if e.upstream.ready and not e.drained and e.ejected_until <= now
                 and e.upstream is not exclude]
        usable = [e for e in ready if e.healthy] or ready
        if self.max_pending:
            usable = [e for e in usable if len(e.upstream.pending) < self.max_pending]
        if not usable:
            self.refused += 1
            return None
        if len(usable) == 1:
            return usable[0].upstream
        if self.policy == "least_pending":
            self._turn += 1
            start = self._turn % len(usable)
            turned = usable[start:] + usable[:start]  # ties go round
            return min(turned, key=lambda e: len(e.upstream.pending)).upstream
        if self.policy == "session":
            return max(usable, key=lambda e: _weight(session_id, e.index)).upstream
        self._turn += 1
        return usable[self._turn % len(usable)].upstream

    def may_retry(self) -> bool:
        """Envoy's retry budget: retries in flight at most 20 % of the requests in
        flight, and at least 3 may always be, so that a failing endpoint does not double
        the load on the others."""
        in_flight = sum(len(e.upstream.pending) for e in self.endpoints)
        return self.retrying < max(RETRY_MIN_CONCURRENCY, in_flight * RETRY_BUDGET)

    def refusal(self) -> tuple[str, str]:
        """Why ``pick`` found no endpoint: the policy to count it under
        (``circuit_breaker`` or ``no_endpoint``) and the client's -32000 message."""
        now = time.monotonic()
        ready = [e for e in self.endpoints
                 if e.upstream.ready and not e.drained and e.ejected_until <= now]
        if ready and self.max_pending:
            return "circuit_breaker", (
                f"upstream {self.name!r}: every endpoint has {self.max_pending} requests "
                "in flight (max_pending_requests: circuit open); retry shortly")
        states = ", ".join(f"{e.index}: {_state(e, now)}" for e in self.endpoints)
        return "no_endpoint", (f"upstream {self.name!r} has no endpoint that can take "
                               f"requests ({states})")

    # -- passive outlier detection ------------------------------------------------------
    def record(self, member: Any, failed: bool) -> None:
        """A request sent to ``member`` ended answered (``failed`` False) or failed as
        a 5xx would: its connection lost, a time-out, -32603 or -32000 from it
        (``Gateway.ended`` decides)."""
        outlier = self.outlier
        if outlier is None:
            return
        endpoint = self.endpoint_of(member)
        if not failed:
            endpoint.consecutive_errors = 0
            return
        endpoint.consecutive_errors += 1
        if endpoint.consecutive_errors >= outlier.consecutive_errors:
            self._eject(endpoint, outlier)

    def _eject(self, endpoint: Endpoint, outlier: OutlierDetectionConfig) -> None:
        now = time.monotonic()
        if endpoint.ejected_until > now:
            return
        out = sum(1 for e in self.endpoints if e.ejected_until > now)
        if (out + 1) * 100 > outlier.max_ejection_percent * len(self.endpoints):
            return  # ejecting it too would leave too few (max_ejection_percent)
        endpoint.ejections += 1
        endpoint.consecutive_errors = 0
        seconds = min(outlier.base_ejection_time * endpoint.ejections,
                      outlier.max_ejection_time)
        endpoint.ejected_until = now + seconds
        log.warning("upstream %r: endpoint %d ejected for %g s after %d failed requests "
                    "in a row", self.name, endpoint.index, seconds,
                    outlier.consecutive_errors)

    # -- active health checks -----------------------------------------------------------
    def start(self) -> None:
        if self.health is not None:
            self._checks = [asyncio.ensure_future(self._check(e)) for e in self.endpoints]

    async def stop(self) -> None:
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        self._checks = []

    async def _check(self, endpoint: Endpoint) -> None:
        health = self.health
        assert health is not None
        upstream = endpoint.upstream
        while True:
            await asyncio.sleep(health.interval)
            if not upstream.ready:
                continue  # the supervisor reconnects; its state says down already
            try:
                if upstream.era == "modern":
                    await upstream.call("server/discover", {"_meta": upstream.modern_meta()},
                                        timeout=health.timeout)
                else:
                    await upstream.call("ping", timeout=health.timeout)
            except UpstreamError as exc:
                endpoint.successes = 0
                endpoint.failures += 1
                if endpoint.healthy and endpoint.failures >= health.unhealthy_threshold:
                    endpoint.healthy = False
                    log.warning("upstream %r: endpoint %d unhealthy (%d checks failed: %s)",
                                self.name, endpoint.index, endpoint.failures, exc.message)
                continue
            endpoint.failures = 0
            endpoint.successes += 1
            if not endpoint.healthy and endpoint.successes >= health.healthy_threshold:
                endpoint.healthy = True
                log.info("upstream %r: endpoint %d healthy again", self.name, endpoint.index)

    def describe(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [e.describe(now, self.max_pending) for e in self.endpoints]


def _state(endpoint: Endpoint, now: float) -> str:
    if endpoint.drained:
        return "drained"
    if endpoint.ejected_until > now:
        return "ejected"
    return str(endpoint.upstream.state)


def rendezvous_order(session_id: str, count: int) -> list[int]:
    """Endpoint indexes ``0..count-1`` by ``session_id``'s preference, first the one it
    is bound to; removing an endpoint moves only the sessions that preferred it."""
    return sorted(range(count), key=lambda index: _weight(session_id, index), reverse=True)


def _weight(session_id: str, index: int) -> int:
    """Rendezvous hashing: the endpoint with the highest weight for a session wins."""
    digest = hashlib.blake2b(f"{session_id}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
