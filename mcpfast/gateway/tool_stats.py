"""Requests and their latency per upstream and per tool, for /metrics.

Told of every request's end (``Gateway.ended``), it only increments numbers in a flat
list per (upstream, tool): a count per outcome, a count per latency bucket, and the sum
of latencies; the collector (metrics.py) turns them into Prometheus counters and a
histogram when /metrics is scraped. A request that ends with an error also counts
under its (upstream, name) by JSON-RPC code, and by policy when one refused it
(``errors``, an ``ErrorCounts``). Requests other than ``tools/call`` count under their
method (``prompts/get``, ``resources/read``, ...). Label values are bounded: past
``max_names`` distinct names in all, new ones count under ``(other)``.
"""

from __future__ import annotations

from bisect import bisect_right
from time import monotonic

from ..counters import ErrorCounts
from .call import OUTCOMES, Request, Upstream

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
          10.0, 30.0, 60.0)
"""Latency bucket bounds, seconds (the last bucket, +Inf, is implied)."""
OTHER = "(other)"
FIRST_BUCKET = len(OUTCOMES)
SUM = FIRST_BUCKET + len(BOUNDS) + 1
"""Where, in a name's list, the bucket counts start and the sum of latencies is."""


class ToolStats:
    __slots__ = ("by_upstream", "errors", "max_names", "names")

    def __init__(self, max_names: int) -> None:
        self.by_upstream: dict[str, dict[str, list[float]]] = {}
        self.max_names = max_names
        self.names = 0
        self.errors = ErrorCounts(max_codes=4 * max_names)
        """Keyed by (upstream, name)."""

    def record(self, upstream: Upstream, request: Request, outcome: int) -> None:
        name = request.name if request.method == "tools/call" else request.method
        try:
            stats = self.by_upstream[upstream.name][name]  # type: ignore[index]
        except KeyError:
            stats = self._new(upstream.name, name)
        stats[outcome] += 1
        started = request.started
        if started:
            elapsed = monotonic() - started
            stats[FIRST_BUCKET + bisect_right(BOUNDS, elapsed)] += 1
            stats[SUM] += elapsed
        if request.error_code:
            self._error(upstream.name, name, request)

    def _error(self, upstream: str, name: str | None, request: Request) -> None:
        label = name or "(unnamed)"
        if label not in self.by_upstream[upstream]:
            label = OTHER
        self.errors.count((upstream, label), request.error_code, request.refused_by)

    def _new(self, upstream: str, name: str | None) -> list[float]:
        by_name = self.by_upstream.get(upstream)
        if by_name is None:
            by_name = self.by_upstream[upstream] = {}
        name = name or "(unnamed)"
        stats = by_name.get(name)
        if stats is not None:
            return stats
        if self.names >= self.max_names:
            name = OTHER
            stats = by_name.get(OTHER)
            if stats is not None:
                return stats
        else:
            self.names += 1
        stats = by_name[name] = [0] * SUM + [0.0]
        return stats
