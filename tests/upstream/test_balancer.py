"""An upstream with several endpoints (upstream/balancer.py), behind a real gateway:
the official SDK's server as each endpoint (``whoami`` tells them apart), and the
background test server where an endpoint must stall.

What a user would notice: calls spread as the policy says; a session stays on its
endpoint with ``balance = "session"``; an endpoint that dies, fails its health checks,
keeps failing requests or is drained takes no calls while the others do; past
``max_pending_requests`` a call is refused at once; /status, /metrics and the admin API
show and switch all of it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mcpfast.config import ConfigError, parse

from ..conftest import (
    ROOT,
    SDK_SERVER,
    GatewayProcess,
    McpClient,
    forked,
    run,
    wait_until,
    ws_client,
)

BACKGROUND = str(ROOT / "tests" / "servers" / "background_server.py")


def sdk(name: str, own_process: bool = False) -> dict[str, Any]:
    """An SDK server endpoint; ``own_process``: started afresh, not forked by the suite's
    zygote, for a test that stops it with SIGSTOP (which its launcher cannot pass on)."""
    return {"command": ["python", SDK_SERVER, "--name", name] if own_process
            else forked("sdk_server", "--name", name)}


def start(tmp_path: Path, **upstream: Any) -> GatewayProcess:
    gateway = GatewayProcess(tmp_path, {"pool": upstream}, {})
    gateway.start()
    wait_until(lambda: all(e["ready"] for e in gateway.upstream("pool")["endpoints"]), 30)
    return gateway


async def whoami(client: McpClient) -> str:
    answer = await client.call_tool("whoami")
    return str(answer["result"]["content"][0]["text"])


def metrics(gateway: GatewayProcess) -> str:
    code, body = gateway.admin_get("/metrics")
    assert code == 200
    return body.decode()


def test_the_gateway_is_ready_when_any_endpoint_is(tmp_path: Path) -> None:
    """The first endpoint never comes up: the second's catalog and handshake stand for
    the upstream, /readiness says ready, and every call goes to the second."""
    gateway = GatewayProcess(tmp_path, {"pool": {"endpoints": [
        {"command": ["python", "-c", "raise SystemExit(3)"]}, sdk("b")]}}, {})
    gateway.start()  # waits for /readiness to answer 200
    try:
        async def body() -> list[str]:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                return [await whoami(client) for _ in range(4)]
        assert run(body()) == ["b"] * 4
        assert gateway.admin_get("/readiness")[0] == 200
    finally:
        gateway.cleanup()


def test_round_robin_spreads_calls_and_status_shows_each_endpoint(tmp_path: Path) -> None:
    gateway = start(tmp_path, endpoints=[sdk("a"), sdk("b"), sdk("c")])
    try:
        async def body() -> Counter[str]:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                return Counter([await whoami(client) for _ in range(30)])
        assert run(body()) == {"a": 10, "b": 10, "c": 10}
        status = gateway.upstream("pool")
        assert status["balance"] == "round_robin"
        assert [(e["endpoint"], e["state"], e["healthy"]) for e in status["endpoints"]] == [
            (0, "ready", True), (1, "ready", True), (2, "ready", True)]
        text = metrics(gateway)
        for index in range(3):
            assert f'mcpfast_upstream_endpoint_requests_total{{endpoint="{index}",' \
                   f'upstream="pool"}} 10.0' in text
        assert 'mcpfast_upstream_requests_total{upstream="pool"} 30.0' in text
    finally:
        gateway.cleanup()


def test_a_session_keeps_its_endpoint_with_session_balance(tmp_path: Path) -> None:
    gateway = start(tmp_path, endpoints=[sdk("a"), sdk("b")], balance="session")
    try:
        async def one_session() -> set[str]:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                return {await whoami(client) for _ in range(5)}

        async def body() -> list[set[str]]:
            return [await one_session() for _ in range(24)]
        seen = run(body())
        assert all(len(names) == 1 for names in seen), seen
        # 24 sessions on one endpoint only would be a 1 in 8 million draw.
        assert set().union(*seen) == {"a", "b"}
    finally:
        gateway.cleanup()


def test_least_pending_sends_calls_past_a_busy_endpoint(tmp_path: Path) -> None:
    gateway = start(tmp_path, endpoints=[sdk("a"), sdk("b")], balance="least_pending")
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                await client.start_call("slow", {"seconds": 60}, "busy")
                wait = [e["in_flight"] for e in gateway.upstream("pool")["endpoints"]]
                for _ in range(300):
                    if sum(wait) == 1:
                        break
                    await asyncio.sleep(0.05)
                    wait = [e["in_flight"] for e in gateway.upstream("pool")["endpoints"]]
                free = "b" if wait == [1, 0] else "a"
                assert {await whoami(client) for _ in range(6)} == {free}
        run(body())
    finally:
        gateway.cleanup()


def test_calls_go_on_when_an_endpoint_dies(tmp_path: Path) -> None:
    gateway = start(tmp_path, endpoints=[sdk("a"), sdk("b")], restart_backoff=30.0,
                    restart_backoff_max=30.0)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                crashed = await client.call_tool("crash")
                assert crashed["error"]["code"] == -32000  # its process exited
                wait_until(lambda: sum(e["ready"] for e in
                                       gateway.upstream("pool")["endpoints"]) == 1, 30)
                (alive,) = [e["server_info"]["name"] for e in
                            gateway.upstream("pool")["endpoints"] if e["ready"]]
                assert {await whoami(client) for _ in range(6)} == {alive}
        run(body())
        assert 'mcpfast_upstream_up{upstream="pool"} 1.0' in metrics(gateway)
    finally:
        gateway.cleanup()


def test_max_pending_requests_opens_the_circuit(tmp_path: Path) -> None:
    gateway = start(tmp_path, **sdk("a"), max_pending_requests=1)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                await client.start_call("slow", {"seconds": 60}, "busy")
                wait_until(lambda: gateway.upstream("pool")["in_flight"] == 1, 30)
                refused = await client.call_tool("whoami")
                assert refused["error"]["code"] == -32000
                assert "max_pending_requests: circuit open" in refused["error"]["message"]
                assert refused["error"]["data"] == {"retryAfterSeconds": 1}
                text = metrics(gateway)
                assert 'mcpfast_upstream_circuit_open{endpoint="0",upstream="pool"} 1.0' in text
                assert 'mcpfast_upstream_refused_total{policy="circuit_breaker",' \
                       'upstream="pool"} 1.0' in text
        run(body())
    finally:
        gateway.cleanup()


def test_outlier_detection_ejects_an_endpoint_that_keeps_failing(tmp_path: Path) -> None:
    gateway = start(tmp_path, endpoints=[sdk("a"), sdk("b")], restart_backoff=0.1,
                    outlier_detection={"consecutive_errors": 1, "base_ejection_time": 60.0,
                                       "max_ejection_percent": 50})
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                assert (await client.call_tool("crash"))["error"]["code"] == -32000
                endpoints = gateway.upstream("pool")["endpoints"]
                (out,) = [e for e in endpoints if e["ejected"]]
                assert out["ejections"] == 1 and 0 < out["ejected_for"] <= 60
                # Back up within its restart backoff, it stays out for the ejection.
                wait_until(lambda: gateway.upstream("pool")["endpoints"][out["endpoint"]]
                           ["ready"], 30)
                other = {"a", "b"} - {out["server_info"]["name"]}
                assert {await whoami(client) for _ in range(6)} == other
                # A second one failing would leave none: max_ejection_percent keeps it.
                assert (await client.call_tool("crash"))["error"]["code"] == -32000
                assert sum(e["ejected"] for e in gateway.upstream("pool")["endpoints"]) == 1
        run(body())
        assert 'mcpfast_upstream_endpoint_ejected{endpoint=' in metrics(gateway)
    finally:
        gateway.cleanup()


def test_active_health_checks_take_a_stalled_endpoint_out_and_back(tmp_path: Path) -> None:
    background = {"command": ["python", BACKGROUND], "era": "legacy"}
    gateway = start(tmp_path, endpoints=[background, background],
                    health_check={"interval": 0.2, "timeout": 0.3, "unhealthy_threshold": 2,
                                  "healthy_threshold": 1})
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                stalled = await client.call_tool("stall", {"seconds": 4})
                assert stalled["result"]["content"][0]["text"] == "stalled"

                def healthy() -> list[bool]:
                    return [e["healthy"] for e in gateway.upstream("pool")["endpoints"]]
                wait_until(lambda: healthy().count(False) == 1, 10)
                # While one is unhealthy, every call goes to the other, and is answered.
                for _ in range(5):
                    assert "result" in await client.call_tool("count", timeout=3)
                wait_until(lambda: all(healthy()), 30)
        run(body())
    finally:
        gateway.cleanup()


def test_the_operator_drains_one_endpoint(tmp_path: Path) -> None:
    token = "admin-token-0123456789abcdef"
    gateway = GatewayProcess(tmp_path, {"pool": {"endpoints": [sdk("a"), sdk("b")]}},
                             {"admin": {"token": token}})
    gateway.start()
    try:
        def admin(path: str, method: str = "GET") -> dict[str, Any]:
            request = urllib.request.Request(gateway.admin_url + path, method=method,
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())  # type: ignore[no-any-return]

        def endpoints() -> list[dict[str, Any]]:
            (pool,) = admin("/status")["upstreams"]
            return pool["endpoints"]  # type: ignore[no-any-return]

        async def names() -> set[str]:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                return {await whoami(client) for _ in range(6)}
        wait_until(lambda: all(e["ready"] for e in endpoints()), 30)
        assert admin("/api/v1/upstreams/pool/endpoints/0/drain", "POST") == {
            "upstream": "pool", "endpoint": 0, "drained": True}
        assert run(names()) == {"b"}
        assert endpoints()[0]["drained"] is True
        admin("/api/v1/upstreams/pool/endpoints/0/undrain", "POST")
        assert run(names()) == {"a", "b"}
        # Only ASCII digits name an endpoint: "²" (a digit to str.isdigit, not to
        # int) and the Arabic-Indic one are none.
        for index in ("7", "%C2%B2", "%D9%A1", "1" * 5000):
            with pytest.raises(urllib.error.HTTPError) as missing:
                admin(f"/api/v1/upstreams/pool/endpoints/{index}/drain", "POST")
            assert missing.value.code == 404, index
        assert "Traceback" not in gateway.log()
    finally:
        gateway.cleanup()


def test_a_safe_request_an_endpoint_fails_is_sent_to_another(tmp_path: Path) -> None:
    """The session's endpoint stops answering (SIGSTOP): its resources/read times out
    there and is answered by the other endpoint; a tools/call is not retried."""
    gateway = start(tmp_path, endpoints=[sdk("a", True), sdk("b", True)], balance="session",
                    request_timeout=2.0)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                mine = await whoami(client)
                (endpoint,) = [e for e in gateway.upstream("pool")["endpoints"]
                               if e["server_info"]["name"] == mine]
                os.kill(endpoint["pid"], signal.SIGSTOP)
                try:
                    read = await client.request("resources/read", {"uri": "test://static"},
                                                timeout=30)
                    assert "result" in read, read
                    called = await client.call_tool("whoami", timeout=30)
                    assert called["error"]["code"] == -32001  # not safe: not retried
                finally:
                    os.kill(endpoint["pid"], signal.SIGCONT)
        run(body())
        assert "sent again to endpoint" in gateway.log()
        assert 'mcpfast_upstream_retries_total{upstream="pool"} 1.0' in metrics(gateway)
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("table,message", [
    ('endpoints = []', "upstreams.p.endpoints: expected a non-empty list"),
    ('command = ["x"]\nendpoints = [{command = ["y"]}]',
     "upstreams.p.command: set it in each of endpoints"),
    ('endpoints = [{command = ["y"], balance = "session"}]',
     "upstreams.p.endpoints[0].balance: applies to the upstream"),
    ('endpoints = [{command = ["y"]}, {url = "ftp://h"}]',
     "upstreams.p.endpoints[1].url: must be an http(s):// URL"),
    ('command = ["x"]\nbalance = "random"', "upstreams.p.balance: Invalid enum value"),
    ('command = ["x"]\nmax_pending_requests = -1',
     "upstreams.p.max_pending_requests: must be 0"),
    ('command = ["x"]\n[upstreams.p.health_check]\nunhealthy_threshold = 0',
     "upstreams.p.health_check.unhealthy_threshold: must be at least 1"),
    ('command = ["x"]\n[upstreams.p.outlier_detection]\nmax_ejection_percent = 101',
     "upstreams.p.outlier_detection.max_ejection_percent: must be between 0 and 100"),
    ('command = ["x"]\nreplicas = []', "upstreams.p.replicas: unknown key"),
])
def test_config_errors_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(f"[upstreams.p]\n{table}\n")
    assert message in str(error.value)


def test_an_endpoint_inherits_the_upstream_settings() -> None:
    config = parse('[upstreams.p]\nrequest_timeout = 7.0\nheaders = {X = "1"}\nendpoints = ['
                   '{url = "http://a/mcp"}, {url = "http://b/mcp", request_timeout = 9.0}]\n')
    first = config.upstreams["p"]
    assert (first.url, first.request_timeout, first.headers) == ("http://a/mcp", 7.0,
                                                                 {"X": "1"})
    (second,) = first.replicas
    assert (second.url, second.request_timeout, second.headers) == ("http://b/mcp", 9.0,
                                                                    {"X": "1"})
