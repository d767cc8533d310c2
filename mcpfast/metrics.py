"""Hot-path counters and the Prometheus collector that reads them at scrape time.

The data path only increments plain integers (DESIGN.md: no prometheus-client call per
message); ``GatewayCollector`` turns them, and the gateway's live state, into metric
families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .gateway.call import OUTCOMES
from .gateway.tool_stats import BOUNDS, FIRST_BUCKET, OTHER, SUM, ToolStats
from .upstream.base import STATES as UPSTREAM_STATES
from .upstream.base import Upstream

if TYPE_CHECKING:
    from .gateway.gateway import Gateway


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self._gateway
        c = gw.counters
        yield _labelled("mcpfast_connections", "Downstream sessions opened, by transport "
                        "(websocket, unix, http).", "transport", c.connections)
        received, sent = dict(c.bytes_in), dict(c.bytes_out)
        for session in gw.sessions.values():
            kind = session.transport
            received[kind] = received.get(kind, 0) + session.bytes_in
            sent[kind] = sent.get(kind, 0) + session.bytes_out
        yield _labelled("mcpfast_received_bytes", "JSON-RPC message bytes received from "
                        "clients, without transport framing, by transport.", "transport",
                        received)
        yield _labelled("mcpfast_sent_bytes", "JSON-RPC message bytes sent to clients, "
                        "without transport framing, by transport.", "transport", sent)
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
        yield _keyed("mcpfast_upstream_errors", "Requests routed to the upstream that "
                     "ended with a JSON-RPC error for the client (the upstream's own, a "
                     "time-out, a failure or a policy's refusal), by code.",
                     ["upstream", "code"], gw.upstream_errors.by_code)
        yield _keyed("mcpfast_upstream_refused", "Requests routed to the upstream that a "
                     "policy refused (rate_limit, authorization, operator).",
                     ["upstream", "policy"], gw.upstream_errors.refused)
        if gw.tool_stats is not None:
            yield from _tool_families(gw.tool_stats, gw.upstreams.values())
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
        state = GaugeMetricFamily("mcpfast_upstream_state", "1 for the state the upstream "
                                  "is in, 0 for the others.", labels=["upstream", "state"])
        unattributed = CounterMetricFamily(
            "mcpfast_upstream_unattributed",
            "Server-to-client requests refused and notifications dropped because they "
            "named no client request while several clients used the upstream.",
            labels=["upstream"])
        for name, upstream in gw.upstreams.items():
            members = _members(upstream)
            # Of all its endpoints: up while any is; its state is the first's.
            up.add_metric([name], 1 if any(m.ready for m in members) else 0)
            inflight.add_metric([name], sum(len(m.pending) for m in members))
            reqs.add_metric([name], sum(m.requests_forwarded for m in members))
            errs.add_metric([name], sum(m.requests_failed for m in members))
            restarts.add_metric([name], sum(m.starts for m in members))
            for each in UPSTREAM_STATES:
                state.add_metric([name, each], 1 if upstream.state == each else 0)
            unattributed.add_metric([name], sum(m.unattributed for m in members))
        yield from (up, inflight, reqs, errs, restarts, state, unattributed)
        sessions = GaugeMetricFamily(
            "mcpfast_upstream_session_upstreams", "With mode per_session: the upstreams "
            "started for client sessions, and the spares.", labels=["upstream", "role"])
        for upstream in gw.upstreams.values():
            if upstream.pool is not None:
                sessions.add_metric([upstream.name, "session"], len(upstream.pool.assigned))
                sessions.add_metric([upstream.name, "spare"], len(upstream.pool.spares))
        yield sessions
        yield from _endpoint_families(gw.upstreams.values())
        yield GaugeMetricFamily("mcpfast_ready", "1 when the gateway is ready for traffic.",
                                value=1 if gw.ready else 0)


def _members(upstream: Upstream[Any]) -> list[Upstream[Any]]:
    """Every upstream process or connection behind one upstream's name: its endpoints,
    or its template and per-session upstreams."""
    if upstream.balancer is not None:
        return upstream.balancer.members  # type: ignore[no-any-return]
    if upstream.pool is not None:
        return upstream.pool.members  # type: ignore[no-any-return]
    return [upstream]


def _endpoint_families(upstreams: Iterable[Upstream[Any]]) -> Iterator[Metric]:
    """Each endpoint of the upstreams that have a balancer (upstream/balancer.py)."""
    labels = ["upstream", "endpoint"]
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        "up": GaugeMetricFamily("mcpfast_upstream_endpoint_up", "1 when the endpoint "
                                "is through its handshake.", labels=labels),
        "healthy": GaugeMetricFamily("mcpfast_upstream_endpoint_healthy", "1 unless the "
                                     "active health checks found the endpoint unhealthy.",
                                     labels=labels),
        "ejected": GaugeMetricFamily("mcpfast_upstream_endpoint_ejected", "1 while "
                                     "outlier detection has the endpoint ejected.",
                                     labels=labels),
        "in_flight": GaugeMetricFamily("mcpfast_upstream_endpoint_in_flight", "Requests "
                                       "in flight to the endpoint.", labels=labels),
        "circuit_open": GaugeMetricFamily("mcpfast_upstream_circuit_open", "1 while the "
                                          "endpoint has max_pending_requests in flight.",
                                          labels=labels),
        "ejections": CounterMetricFamily("mcpfast_upstream_endpoint_ejections", "Times "
                                         "outlier detection ejected the endpoint.",
                                         labels=labels),
        "requests": CounterMetricFamily("mcpfast_upstream_endpoint_requests", "Requests "
                                        "forwarded to the endpoint.", labels=labels),
    }
    retries = CounterMetricFamily("mcpfast_upstream_retries", "Safe requests sent again "
                                  "to another endpoint after theirs failed them.",
                                  labels=["upstream"])
    for upstream in upstreams:
        balancer = upstream.balancer
        if balancer is None:
            continue
        retries.add_metric([upstream.name], balancer.retries)
        for info in balancer.describe():
            key = [upstream.name, str(info["endpoint"])]
            families["up"].add_metric(key, 1 if info["ready"] else 0)
            families["healthy"].add_metric(key, 1 if info["healthy"] else 0)
            families["ejected"].add_metric(key, 1 if info["ejected"] else 0)
            families["in_flight"].add_metric(key, info["in_flight"])
            families["circuit_open"].add_metric(key, 1 if info["circuit_open"] else 0)
            families["ejections"].add_metric(key, info["ejections"])
            families["requests"].add_metric(key, info["requests_forwarded"])
    yield from families.values()
    yield retries


def _tool_families(stats: ToolStats, upstreams: Iterable[Upstream[Any]]
                   ) -> Iterator[Metric]:
    """Requests by outcome, errors, refusals, in flight and latency, per upstream and
    tool."""
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
    yield _keyed("mcpfast_tool_errors", "Requests that ended with a JSON-RPC error for "
                 "the client, per upstream, tool (or method) and code.",
                 ["upstream", "tool", "code"], stats.errors.by_code)
    yield _keyed("mcpfast_tool_refused", "Requests a policy refused, per upstream, tool "
                 "(or method) and policy.", ["upstream", "tool", "policy"],
                 stats.errors.refused)
    in_flight = GaugeMetricFamily("mcpfast_tool_in_flight", "Requests in flight, per "
                                  "upstream and tool (or method).", labels=["upstream", "tool"])
    for each in upstreams:
        known = stats.by_upstream.get(each.name, {})
        running: dict[str, int] = {}
        for request in (r for m in _members(each) for r in m.pending.values()):
            tool = (request.name if request.method == "tools/call" else request.method
                    ) or "(unnamed)"
            # A name not seen to end yet is labelled as it will be when it ends.
            label = tool if tool in known or stats.names < stats.max_names else OTHER
            running[label] = running.get(label, 0) + 1
        for label, count in sorted(running.items()):
            in_flight.add_metric([each.name, label], count)
    yield in_flight


def _labelled(name: str, doc: str, label: str, counts: dict[str, int]
              ) -> CounterMetricFamily:
    """A counter with one label, a sample per key of ``counts``."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _keyed(name: str, doc: str, labels: list[str], counts: dict[tuple[str, ...], int]
           ) -> CounterMetricFamily:
    """A counter with several labels, a sample per key of ``counts``."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, count in sorted(counts.items()):
        family.add_metric(list(key), count)
    return family


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
