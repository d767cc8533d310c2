"""The admin side app: health, readiness, liveness, status, connections, metrics."""

from __future__ import annotations

import json
import os
from typing import Any

from .conftest import GatewayProcess, run, ws_client


def get_json(gw: GatewayProcess, path: str) -> tuple[int, Any]:
    code, body = gw.admin_get(path)
    return code, json.loads(body)


def test_health_liveness_readiness(gateway: GatewayProcess) -> None:
    assert get_json(gateway, "/liveness") == (200, {"status": "alive"})
    assert get_json(gateway, "/readiness") == (200, {"ready": True})
    code, health = get_json(gateway, "/health")
    assert code == 200 and health["status"] == "ok" and health["upstreams"] == {"sdk": "ready"}


def test_status_reports_implementation_listeners_and_upstreams(gateway: GatewayProcess) -> None:
    status = gateway.status()
    expected = "pure" if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1" else "compiled"
    assert status["implementation"] == expected
    assert status["version"] and status["uptime_seconds"] >= 0
    kinds = {listener["kind"]: listener for listener in status["listeners"]}
    assert kinds["websocket"]["address"] == f"127.0.0.1:{gateway.port}"
    assert kinds["unix"]["address"] == gateway.unix_path
    upstream = status["upstreams"][0]
    assert upstream["name"] == "sdk" and upstream["state"] == "ready"
    assert upstream["tools"] >= 5 and upstream["protocol_version"]


def test_connections_and_metrics_count_traffic(gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gateway.ws_url) as c:
            await c.initialize(clientInfo={"name": "metrics-test", "version": "1"})
            for _ in range(3):
                await c.call_tool("echo", {"text": "x"})
            code, listing = get_json(gateway, "/api/v1/connections")
            assert code == 200
            (conn,) = listing["connections"]
            assert conn["transport"] == "websocket" and conn["client"]["name"] == "metrics-test"
            assert conn["messages_in"] >= 5 and conn["initialized"] is True
    run(body())
    code, body = gateway.admin_get("/metrics")
    text = body.decode()
    assert code == 200
    metrics = {line.split(" ")[0]: float(line.split(" ")[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert metrics["mcpfast_connections_total"] >= 1
    assert metrics["mcpfast_requests_total"] >= 4
    assert metrics['mcpfast_upstream_requests_total{upstream="sdk"}'] >= 3
    assert metrics['mcpfast_upstream_up{upstream="sdk"}'] == 1
    assert metrics["mcpfast_ready"] == 1
    assert "process_resident_memory_bytes" in metrics
