"""The admin side app: health, readiness, liveness, status, connections, metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from ..conftest import (
    ROOT,
    GatewayProcess,
    collect,
    free_port,
    run,
    sdk_upstream,
    wait_until,
    ws_client,
)


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
    assert metrics['mcpfast_connections_total{transport="websocket"}'] >= 1
    # The session is closed by now: its bytes moved to the closed sessions' totals.
    assert metrics['mcpfast_received_bytes_total{transport="websocket"}'] > 3 * len(
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}')
    assert metrics['mcpfast_sent_bytes_total{transport="websocket"}'] > 0
    assert metrics['mcpfast_upstream_state{state="ready",upstream="sdk"}'] == 1
    assert metrics['mcpfast_upstream_state{state="stopped",upstream="sdk"}'] == 0
    assert metrics["mcpfast_requests_total"] >= 4
    assert metrics['mcpfast_upstream_requests_total{upstream="sdk"}'] >= 3
    assert metrics['mcpfast_upstream_up{upstream="sdk"}'] == 1
    assert metrics["mcpfast_ready"] == 1
    assert "process_resident_memory_bytes" in metrics


TOKEN = "admin-token-0123456789abcdef"


def admin_request(gw: GatewayProcess, path: str, authorization: str | None = None,
                  host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(gw.admin_url + path)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_admin_token_guards_everything_but_the_probes(gateway_factory: Any,
                                                      monkeypatch: Any) -> None:
    monkeypatch.setenv("ADMIN_TEST_TOKEN", TOKEN)
    gw: GatewayProcess = gateway_factory(start=False)
    gw.config_path.write_text(gw.config_path.read_text().replace(
        "[admin]\n", '[admin]\ntoken = "${ADMIN_TEST_TOKEN}"\n'))
    gw.start()  # wait_ready polls /readiness without a token
    for path in ("/health", "/liveness", "/readiness"):
        assert admin_request(gw, path)[0] == 200, path
    for path in ("/status", "/metrics", "/api/v1/connections", "/nonexistent"):
        for authorization in (None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}",
                              "Bearer", f"Bearer {TOKEN}x"):
            code, headers, body = admin_request(gw, path, authorization)
            assert code == 401, (path, authorization)
            assert headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN.encode() not in body
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        code, _, body = admin_request(gw, "/status", authorization)
        assert code == 200 and json.loads(body)["ready"] is True
    assert admin_request(gw, "/metrics", f"Bearer {TOKEN}")[0] == 200
    gw.terminate()
    assert TOKEN not in gw.log()


def test_the_admin_port_serves_only_its_own_host_names(gateway_factory: Any) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 must not read /status,
    the connections (peers, identities) or the dashboard through a browser. Bound to
    loopback, the admin port serves only loopback names (421 otherwise), the health
    probes excepted; ``admin.allowed_hosts`` names others."""
    gw: GatewayProcess = gateway_factory()
    port = gw.admin_url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
        for path in ("/status", "/api/v1/connections", "/metrics", "/dashboard"):
            code, _, body = admin_request(gw, path, host=host)
            assert code == 421, (host, path, code)
            assert b"not served here" in body
        assert admin_request(gw, "/health", host=host)[0] == 200
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert admin_request(gw, "/status", host=host)[0] == 200, host
    # An absolute-form target names the host asked for, whatever the Host header says
    # (RFC 9112 3.2.2); and HTTP/1 is all the port speaks.
    address = gw.admin_url.removeprefix("http://")
    for request_line, status in (("GET http://evil.example/status HTTP/1.1", 421),
                                 (f"GET http://{address}/status HTTP/1.1", 200),
                                 ("GET /status HTTP/2.0", 505)):
        with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
            raw.sendall(f"{request_line}\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                        .encode())
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
        # (aiohttp writes the request's version back on the status line)
        assert reply.split(b" ", 2)[1] == str(status).encode(), (request_line, reply[:200])

    named: GatewayProcess = gateway_factory(
        admin={"allowed_hosts": ["admin.internal", "admin.internal:*"]})
    named_port = named.admin_url.rsplit(":", 1)[1]
    assert admin_request(named, "/status", host=f"admin.internal:{named_port}")[0] == 200
    assert admin_request(named, "/status", host=f"127.0.0.1:{named_port}")[0] == 421


def test_a_malformed_request_to_the_admin_port_is_logged_in_one_line(
        gateway: GatewayProcess) -> None:
    """A client's bad request is its fault, not the gateway's: one INFO line, not an
    error with aiohttp's traceback that a client could repeat to fill the log."""
    import socket

    port = int(gateway.admin_url.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n")
            assert sock.recv(100).split(b" ")[1] == b"400"
    wait_until(lambda: gateway.log().count("Error handling request") == 3, timeout=20)
    lines = [line for line in gateway.log().splitlines() if "Error handling request" in line]
    assert all(" INFO " in line and "BadHttpMessage" in line for line in lines), lines
    assert "Traceback" not in gateway.log()


def test_hashed_admin_and_scraper_tokens(gateway_factory: Any) -> None:
    """Tokens kept as hashes in the config: an admin's admits to everything, a
    scraper's to /metrics only."""
    from mcpfast.auth.api_keys import hash_key

    scraper = "scraper-token-0123456789abcdef"
    gw: GatewayProcess = gateway_factory(start=False)
    gw.config_path.write_text(gw.config_path.read_text().replace(
        "[admin]\n", f'[admin]\ntoken_hashes = ["{hash_key(TOKEN)}"]\n'
                     f'metrics_token_hashes = ["{hash_key(scraper)}"]\n'))
    gw.start()
    assert admin_request(gw, "/readiness")[0] == 200
    for path in ("/status", "/api/v1/connections", "/metrics"):
        assert admin_request(gw, path)[0] == 401, path
        assert admin_request(gw, path, f"Bearer {TOKEN}")[0] == 200, path
        assert admin_request(gw, path, f"Bearer {hash_key(TOKEN)}")[0] == 401, path
    assert admin_request(gw, "/metrics", f"Bearer {scraper}")[0] == 200
    assert admin_request(gw, "/status", f"Bearer {scraper}")[0] == 401
    # A write needs an admin token: the scraper's is refused before it is considered.
    request = urllib.request.Request(gw.admin_url + "/api/v1/reload", method="POST",
                                     headers={"Authorization": f"Bearer {scraper}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401


def test_public_metrics_with_a_guarded_admin_api(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(admin={"host": "127.0.0.1", "token": TOKEN,
                                                "public_metrics": True})
    assert admin_request(gw, "/metrics")[0] == 200
    assert admin_request(gw, "/status")[0] == 401


def test_admin_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    path = tmp_path / "open.toml"
    path.write_text('[admin]\nhost = "0.0.0.0"\n'
                    '[upstreams.demo]\ncommand = ["python", "-m", "mcpfast.demo"]\n')
    for args in (["check-config", str(path)], ["serve", "--config", str(path)]):
        out = subprocess.run([sys.executable, "-m", "mcpfast", *args], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 2, out
        assert "admin.token: is required when admin.host ('0.0.0.0') is not a loopback" \
            in out.stderr


def test_container_config_binds_admin_beyond_loopback_only_with_a_token(
        tmp_path: Path) -> None:
    """examples/container.toml as the image runs it: without MCPFAST_ADMIN_TOKEN it does
    not start; with it, the HEALTHCHECK's /liveness answers bare and /status does not."""
    text = (ROOT / "examples" / "container.toml").read_text()
    port, admin_port = free_port(), free_port()
    text = text.replace("port = 8080", f"port = {port}").replace("port = 9090",
                                                                 f"port = {admin_port}")
    config = tmp_path / "container.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MCPFAST_ADMIN_TOKEN"}
    refused = subprocess.run([sys.executable, "-m", "mcpfast", "serve", "--config",
                              str(config)], capture_output=True, text=True, timeout=30,
                             env=env, cwd=ROOT)
    assert refused.returncode == 2
    assert "admin.token: environment variable MCPFAST_ADMIN_TOKEN is not set" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "mcpfast", "serve", "--config",
                             str(config)], env={**env, "MCPFAST_ADMIN_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{admin_port}"

        def alive() -> bool:
            try:
                # The Dockerfile's HEALTHCHECK, verbatim but for the port.
                return urllib.request.urlopen(base + "/liveness", timeout=2).status == 200
            except OSError:
                return False
        wait_until(alive, 20)
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(base + "/status", timeout=5)
        assert denied.value.code == 401
        request = urllib.request.Request(base + "/status",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert urllib.request.urlopen(request, timeout=5).status == 200
    finally:
        proc.terminate()
        proc.wait(20)


def admin_post(gw: GatewayProcess, path: str, authorization: str | None = None
               ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(gw.admin_url + path, data=b"", method="POST")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]


def test_reload_over_the_admin_api_takes_the_token(gateway_factory: Any,
                                                   monkeypatch: Any) -> None:
    """POST /api/v1/reload does what SIGHUP does, and is a write: refused without a
    token configured, and guarded by it when there is one."""
    monkeypatch.setenv("ADMIN_TEST_TOKEN", TOKEN)
    bare: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND}})
    code, body = admin_post(bare, "/api/v1/reload")
    assert code == 403 and "admin.token" in body["error"]
    bare.terminate()

    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND}}, start=False)
    gw.config_path.write_text(gw.config_path.read_text().replace(
        "[admin]\n", '[admin]\ntoken = "${ADMIN_TEST_TOKEN}"\n'))
    gw.start()
    base = gw.config_path.read_text()
    assert admin_post(gw, "/api/v1/reload")[0] == 401
    gw.config_path.write_text(base + '\n[limits]\nmax_in_flight = "many"\n')
    code, body = admin_post(gw, "/api/v1/reload", f"Bearer {TOKEN}")
    assert code == 400
    assert "limits.max_in_flight: expected int, got str" in body["error"]
    gw.config_path.write_text(base + '\n[[rate_limits]]\nrate = 0.001\nburst = 1\n'
                              'tool = "big"\n')
    code, body = admin_post(gw, "/api/v1/reload", f"Bearer {TOKEN}")
    assert (code, body) == (200, {"reloaded": str(gw.config_path), "held": []})

    async def main() -> None:
        async with ws_client(gw.ws_url) as client:
            await client.initialize()
            assert "result" in await client.call_tool("big", {"size": 1})
            refused = await client.call_tool("big", {"size": 1})
            assert refused["error"]["code"] == -32029
    run(main())


def admin_call(gw: GatewayProcess, method: str, path: str, token: str | None = TOKEN
               ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(gw.admin_url + path, data=b"", method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_operator_drains_upstreams_disables_tools_and_closes_sessions(
        gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(
        {"a": sdk_upstream("a"), "b": sdk_upstream("b")}, routing={"prefix": "always"},
        admin={"token": TOKEN})
    # Writes are guarded by the admin token; names that do not exist are 404.
    assert admin_call(gw, "POST", "/api/v1/upstreams/a/drain", None)[0] == 401
    assert admin_call(gw, "POST", "/api/v1/upstreams/zz/drain")[0] == 404
    assert admin_call(gw, "POST", "/api/v1/tools/zz__nope/disable")[0] == 404
    assert admin_call(gw, "DELETE", "/api/v1/sessions/nope")[0] == 404

    async def main() -> None:
        async with ws_client(gw.ws_url) as watcher, ws_client(gw.ws_url) as client:
            await watcher.initialize()
            await client.initialize()
            # Drained: no new request goes to a; b is untouched; undrained, a answers.
            assert admin_call(gw, "POST", "/api/v1/upstreams/a/drain") == (
                200, {"upstream": "a", "drained": True})
            refused = await client.call_tool("a__echo", {"text": "x"})
            assert refused["error"]["code"] == -32000
            assert "drained by the operator" in refused["error"]["message"]
            assert "result" in await client.call_tool("b__echo", {"text": "x"})
            status = json.loads(admin_request(gw, "/status", f"Bearer {TOKEN}")[2])
            assert status["operator"]["drained_upstreams"] == ["a"]
            assert admin_call(gw, "POST", "/api/v1/upstreams/a/undrain")[0] == 200
            assert "result" in await client.call_tool("a__echo", {"text": "x"})
            # Disabled: hidden, unknown, and the sessions are told; enabled: back.
            assert admin_call(gw, "POST", "/api/v1/tools/b__add/disable") == (
                200, {"tool": "b__add", "disabled": True})
            changed = [m for m in await collect(watcher, 1.0)
                       if m.get("method") == "notifications/tools/list_changed"]
            assert len(changed) == 1
            listed = await client.request("tools/list", {})
            names = {t["name"] for t in listed["result"]["tools"]}
            assert "b__add" not in names and "a__add" in names
            unknown = await client.call_tool("b__add", {"a": 1, "b": 2})
            assert unknown["error"] == {"code": -32602, "message": "Unknown tool: b__add"}
            assert admin_call(gw, "POST", "/api/v1/tools/b__add/enable")[0] == 200
            added = await client.call_tool("b__add", {"a": 1, "b": 2})
            assert added["result"]["content"][0]["text"] == "3"
            # Closed: the watcher's connection ends; the other goes on.
            sessions = json.loads(admin_request(gw, "/api/v1/connections",
                                                f"Bearer {TOKEN}")[2])["connections"]
            assert len(sessions) == 2
            first = min(sessions, key=lambda s: s["id"])["id"]
            assert admin_call(gw, "DELETE", f"/api/v1/sessions/{first}") == (
                200, {"closed": first})
            with pytest.raises(websockets.ConnectionClosed) as closed:
                for _ in range(100):
                    await watcher.receive(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert "result" in await client.call_tool("a__echo", {"text": "still here"})
    run(main())
    assert "upstream 'a' drained by the operator" in gw.log()


def test_the_openapi_document_describes_every_route(gateway_factory: Any) -> None:
    from mcpfast.admin.app import create_app
    from mcpfast.admin.openapi import OPENAPI

    gw: GatewayProcess = gateway_factory(admin={"token": TOKEN})
    code, _, body = admin_request(gw, "/api/v1/openapi.json", f"Bearer {TOKEN}")
    assert code == 200 and json.loads(body) == json.loads(json.dumps(OPENAPI))
    assert OPENAPI["openapi"] == "3.1.0"

    from mcpfast.config import parse
    from mcpfast.gateway.gateway import Gateway

    app = create_app(Gateway(parse(f'[admin]\ntoken = "{TOKEN}"\n'
                                   '[upstreams.a]\ncommand = ["true"]\n')))
    routes = {(route.method.lower(), route.resource.canonical)  # type: ignore[union-attr]
              for route in app.router.routes() if route.method != "HEAD"}
    documented = {(method, path) for path, item in OPENAPI["paths"].items()
                  for method in item}
    assert routes == documented
