"""Hot-path counters and the Prometheus collector that reads them at scrape time.

The data path only increments plain integers (DESIGN.md: no prometheus-client call per
message); ``GatewayCollector`` turns them, and the gateway's live state, into metric
families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .gateway.call import OUTCOMES
from .gateway.tool_stats import BOUNDS, FIRST_BUCKET, SUM, ToolStats

if TYPE_CHECKING:
    from .gateway.gateway import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self._gateway
        c = gw.counters
        yield _counter("mcpfast_connections", "Downstream connections accepted.",
                       c.connections_total)
        yield _counter("mcpfast_messages_received", "JSON-RPC messages received from clients.",
                       c.messages_in)
        yield _counter("mcpfast_messages_sent", "JSON-RPC messages sent to clients.",
                       c.messages_out)
        yield _counter("mcpfast_requests", "Client requests handled.", c.requests)
        ended = CounterMetricFamily(
            "mcpfast_requests_ended", "Requests forwarded (or refused by a policy on their "
            "way to an upstream), by how they ended.", labels=["outcome"])
        for outcome, value in zip(OUTCOMES, c.ended, strict=True):
            ended.add_metric([outcome], value)
        yield ended
        yield _counter("mcpfast_request_errors",
                       "Client requests answered with a JSON-RPC error by the gateway.",
                       c.errors)
        yield _counter("mcpfast_parse_errors", "Client messages that were not valid JSON-RPC.",
                       c.parse_errors)
        yield _counter("mcpfast_oversized_messages", "Client messages over the size limit.",
                       c.oversized)
        limited = CounterMetricFamily(
            "mcpfast_limit_enforced", "Times a [limits] bound was enforced, by limit.",
            labels=["limit"])
        for limit, value in (("client_buffer_bytes", c.client_overflows),
                             ("process_buffer_bytes", c.refused_overloaded),
                             ("max_in_flight", c.refused_in_flight),
                             ("header_or_body_timeout", c.timeouts),
                             ("max_connections", gw.admission.refused),
                             ("max_sessions", c.refused_sessions),
                             ("max_sessions_per_peer", c.refused_sessions_per_peer)):
            limited.add_metric([limit], value)
        yield limited
        rate_limited = CounterMetricFamily(
            "mcpfast_rate_limited", "Requests refused by a rate limit (-32029), by limit.",
            labels=["limit"])
        buckets = GaugeMetricFamily(
            "mcpfast_rate_limit_buckets", "Token buckets a rate limit holds (one per "
            "identity active lately, or one for a global limit).", labels=["limit"])
        for rate_limit in gw.rate_limits:
            rate_limited.add_metric([rate_limit.name], rate_limit.refused)
            buckets.add_metric([rate_limit.name], len(rate_limit))
        yield rate_limited
        yield buckets
        if gw.tool_stats is not None:
            yield from _tool_families(gw.tool_stats)
        yield _labelled("mcpfast_authentication_refused", "Clients refused at admission, by "
                        "reason (missing, invalid_token, insufficient_scope, unix_peer).",
                        "reason", c.authentication_refused)
        yield _labelled("mcpfast_authorization_denied", "Calls refused by authorization "
                        "(answered as unknown), by kind (tools, prompts, resources).", "kind",
                        c.denied)
        yield GaugeMetricFamily("mcpfast_open_client_connections",
                                "Client connections open (all transports), counted at "
                                "admission against limits.max_connections.",
                                value=gw.admission.open)
        yield GaugeMetricFamily("mcpfast_buffered_bytes",
                                "Bytes waiting to be sent to clients and upstreams (sampled).",
                                value=gw.buffered)
        yield GaugeMetricFamily("mcpfast_overloaded",
                                "1 while new requests are refused for process_buffer_bytes.",
                                value=1 if gw.overloaded else 0)

        open_ = GaugeMetricFamily("mcpfast_open_connections", "Open downstream connections.",
                                  labels=["transport"])
        by_kind: dict[str, int] = {"websocket": 0, "unix": 0, "http": 0}
        for session in gw.sessions.values():
            by_kind[session.transport] = by_kind.get(session.transport, 0) + 1
        for kind, n in sorted(by_kind.items()):
            open_.add_metric([kind], n)
        yield open_

        up = GaugeMetricFamily("mcpfast_upstream_up", "1 when the upstream is ready.",
                               labels=["upstream"])
        inflight = GaugeMetricFamily("mcpfast_upstream_in_flight",
                                     "Requests in flight to the upstream.", labels=["upstream"])
        reqs = CounterMetricFamily("mcpfast_upstream_requests",
                                   "Requests forwarded to the upstream.", labels=["upstream"])
        errs = CounterMetricFamily("mcpfast_upstream_failures",
                                   "Requests failed by the gateway (upstream down or timed out).",
                                   labels=["upstream"])
        restarts = CounterMetricFamily("mcpfast_upstream_restarts",
                                       "Times the upstream was (re)started.", labels=["upstream"])
        unattributed = CounterMetricFamily(
            "mcpfast_upstream_unattributed",
            "Server-to-client requests refused and notifications dropped because they "
            "named no client request while several clients used the upstream.",
            labels=["upstream"])
        for name, upstream in gw.upstreams.items():
            up.add_metric([name], 1 if upstream.ready else 0)
            inflight.add_metric([name], len(upstream.pending))
            reqs.add_metric([name], upstream.requests_forwarded)
            errs.add_metric([name], upstream.requests_failed)
            restarts.add_metric([name], upstream.starts)
            unattributed.add_metric([name], upstream.unattributed)
        yield from (up, inflight, reqs, errs, restarts, unattributed)
        yield GaugeMetricFamily("mcpfast_ready", "1 when the gateway is ready for traffic.",
                                value=1 if gw.ready else 0)


def _tool_families(stats: ToolStats) -> Iterator[Metric]:
    """Requests by outcome and their latency, per upstream and tool."""
    requests = CounterMetricFamily(
        "mcpfast_tool_requests", "Requests ended, per upstream, tool (or method, for "
        "requests other than tools/call) and outcome.", labels=["upstream", "tool", "outcome"])
    latency = HistogramMetricFamily(
        "mcpfast_tool_request_duration_seconds", "From forwarding a request to its end, "
        "per upstream and tool (or method).", labels=["upstream", "tool"])
    bounds = [*(f"{b:g}" for b in BOUNDS), "+Inf"]
    for upstream, by_name in sorted(stats.by_upstream.items()):
        for name, counts in sorted(by_name.items()):
            for outcome, label in enumerate(OUTCOMES):
                if counts[outcome]:
                    requests.add_metric([upstream, name, label], counts[outcome])
            cumulative = list(accumulate(counts[FIRST_BUCKET:SUM]))
            latency.add_metric([upstream, name], list(zip(bounds, cumulative, strict=True)),
                               counts[SUM])
    yield requests
    yield latency


def _labelled(name: str, doc: str, label: str, counts: dict[str, int]
              ) -> CounterMetricFamily:
    """A counter with one label, a sample per key of ``counts``."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
