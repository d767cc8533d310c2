"""What the gateway records of every request's end: requests and latency per upstream
and tool (gateway/tool_stats.py), as /metrics shows them (counted by outcome, timed into
buckets, bounded in names), and the access log (gateway/access_log.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from mcpfast.config import parse
from mcpfast.gateway.call import ANSWERED, ERRORED, NO_ENVELOPE, REFUSED, Request
from mcpfast.gateway.gateway import Gateway
from mcpfast.gateway.session import DownstreamSession
from mcpfast.gateway.tool_stats import OTHER, ToolStats
from mcpfast.metrics import GatewayCollector

from ..conftest import ROOT, InProcessClient, in_gateway, toml_value

BACKGROUND = ROOT / "tests" / "servers" / "background_server.py"


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def call(method: str, name: str | None, started: float) -> Request:
    session = DownstreamSession("s", "unix", "-", lambda d: None, lambda c, r: None)
    request = Request(session, NO_ENVELOPE, 1, method, name, None)
    request.started = started
    return request


def test_outcomes_and_latency_per_upstream_and_name() -> None:
    stats = ToolStats(max_names=100)
    docs = Named("docs")
    now = time.monotonic()
    stats.record(docs, call("tools/call", "docs__search", now - 0.003), ANSWERED)  # type: ignore[arg-type]
    stats.record(docs, call("tools/call", "docs__search", now - 0.2), ERRORED)  # type: ignore[arg-type]
    stats.record(docs, call("prompts/get", "summary", now), REFUSED)  # type: ignore[arg-type]
    search = stats.by_upstream["docs"]["docs__search"]
    assert search[ANSWERED] == 1 and search[ERRORED] == 1
    assert set(stats.by_upstream["docs"]) == {"docs__search", "prompts/get"}
    assert 0.2 < search[-1] < 1.0  # the sum of latencies


def test_names_are_bounded() -> None:
    stats = ToolStats(max_names=2)
    up = Named("u")
    for name in ("a", "b", "c", "d"):
        stats.record(up, call("tools/call", name, 0.0), ANSWERED)  # type: ignore[arg-type]
    assert set(stats.by_upstream["u"]) == {"a", "b", OTHER}
    assert stats.by_upstream["u"][OTHER][ANSWERED] == 2


def test_the_collector_reads_them(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"[upstreams.bg]\ncommand = {toml_value(['python', str(BACKGROUND)])}"
                      '\nera = "legacy"\n')

    async def body(gw: Gateway, client: InProcessClient) -> None:
        for _ in range(3):
            assert "result" in await client.call("big")
        assert "error" in await client.request("tools/call", {"name": "fail", "arguments": {}})
        registry = CollectorRegistry()
        registry.register(GatewayCollector(gw))
        text = generate_latest(registry).decode()
        assert 'mcpfast_tool_requests_total{outcome="answered",tool="big",upstream="bg"} 3.0' \
            in text
        assert 'mcpfast_tool_requests_total{outcome="errored",tool="fail",upstream="bg"} 1.0' \
            in text
        assert 'mcpfast_tool_request_duration_seconds_count{tool="big",upstream="bg"} 3.0' \
            in text
        assert 'mcpfast_tool_request_duration_seconds_bucket{le="+Inf",tool="big",' \
               'upstream="bg"} 3.0' in text
    in_gateway(config, body)


def test_errors_count_by_code_and_refusals_by_policy(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        "[[rate_limits]]\nrate = 0.001\nburst = 1\ntool = \"big\"\nname = \"slow-big\"\n"
        "[authorization]\ndefault = \"allow\"\n[[authorization.rules]]\n"
        "deny_tools = [\"replies\"]\n"
        f"[upstreams.bg]\ncommand = {toml_value(['python', str(BACKGROUND)])}\n"
        'era = "legacy"\n')

    async def body(gw: Gateway, client: InProcessClient) -> None:
        assert "result" in await client.call("big")
        limited = await client.request("tools/call", {"name": "big", "arguments": {}})
        assert limited["error"]["code"] == -32029
        for _ in range(2):
            failed = await client.request("tools/call", {"name": "fail", "arguments": {}})
            assert failed["error"]["code"] == -32603
        denied = await client.request("tools/call", {"name": "replies", "arguments": {}})
        assert denied["error"]["code"] == -32602
        registry = CollectorRegistry()
        registry.register(GatewayCollector(gw))
        text = generate_latest(registry).decode()
        for line in (
                'mcpfast_upstream_errors_total{code="-32603",upstream="bg"} 2.0',
                'mcpfast_upstream_errors_total{code="-32029",upstream="bg"} 1.0',
                'mcpfast_upstream_errors_total{code="-32602",upstream="bg"} 1.0',
                'mcpfast_upstream_refused_total{policy="rate_limit",upstream="bg"} 1.0',
                'mcpfast_upstream_refused_total{policy="authorization",upstream="bg"} 1.0',
                'mcpfast_tool_errors_total{code="-32603",tool="fail",upstream="bg"} 2.0',
                'mcpfast_tool_errors_total{code="-32029",tool="big",upstream="bg"} 1.0',
                'mcpfast_tool_refused_total{policy="rate_limit",tool="big",upstream="bg"} 1.0',
                'mcpfast_tool_refused_total{policy="authorization",tool="replies",'
                'upstream="bg"} 1.0'):
            assert line in text, line
        # An answer with a result is no error, of any code.
        assert 'mcpfast_upstream_errors_total{code="0"' not in text
        assert 'tool="big",upstream="bg"} 1.0' in text
    in_gateway(config, body)


def test_error_codes_an_upstream_makes_up_are_bounded() -> None:
    from mcpfast.counters import OTHER_CODE, ErrorCounts

    errors = ErrorCounts(max_codes=3)
    for code in range(10):
        errors.count(("u",), -code - 1, "")
    assert len(errors.by_code) == 4
    assert errors.by_code[("u", OTHER_CODE)] == 7
    errors.count(("u",), -1, "")  # a code seen before keeps its own label
    assert errors.by_code[("u", "-1")] == 2


def test_tool_in_flight_is_read_at_scrape_time(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"[upstreams.bg]\ncommand = {toml_value(['python', str(BACKGROUND)])}"
                      '\nera = "legacy"\n')

    async def body(gw: Gateway, client: InProcessClient) -> None:
        import asyncio

        assert "result" in await client.call("big")  # the name is known from now on
        call = asyncio.ensure_future(client.request(  # it runs until the gateway stops
            "tools/call", {"name": "slow", "arguments": {"seconds": 60}}))
        registry = CollectorRegistry()
        registry.register(GatewayCollector(gw))
        for _ in range(3000):  # until the call is in flight; 30 s at most
            text = generate_latest(registry).decode()
            if 'mcpfast_tool_in_flight{tool="slow",upstream="bg"}' in text:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(text)
        call.cancel()
    in_gateway(config, body)


def test_per_tool_metrics_can_be_turned_off() -> None:
    gw = Gateway(parse('[metrics]\nper_tool = false\n[upstreams.a]\ncommand = ["true"]\n'))
    assert gw.tool_stats is None and gw.observers == ()
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gw))
    assert b"mcpfast_tool_requests" not in generate_latest(registry)


def test_the_access_log_writes_a_line_per_request_when_on(tmp_path: Path, caplog: Any
                                                          ) -> None:
    import logging

    def gateway_config(extra: str) -> Path:
        path = tmp_path / f"gw{len(extra)}.toml"
        path.write_text(f"{extra}[upstreams.bg]\ncommand = "
                        f"{toml_value(['python', str(BACKGROUND)])}\nera = \"legacy\"\n")
        return path

    async def calls(gw: Gateway, client: InProcessClient) -> None:
        with caplog.at_level(logging.INFO, logger="mcpfast.access"):
            assert "result" in await client.call("big")
            assert "error" in await client.request("tools/call",
                                                   {"name": "fail", "arguments": {}})

    in_gateway(gateway_config(""), calls)
    assert not [r for r in caplog.records if r.name == "mcpfast.access"]
    caplog.clear()
    in_gateway(gateway_config("[logging]\naccess_log = true\n"), calls)
    records = [r for r in caplog.records if r.name == "mcpfast.access"]
    assert [(r.identity, r.method, r.target, r.upstream, r.outcome) for r in records] == [
        ("uid:1000", "tools/call", "big", "bg", "answered"),
        ("uid:1000", "tools/call", "fail", "bg", "errored")]
    assert all(0 < r.duration_seconds < 30 for r in records)
    assert records[0].getMessage().startswith("uid:1000 tools/call big upstream=bg "
                                              "outcome=answered duration_ms=")
