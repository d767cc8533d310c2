"""Upstreams the gateway connects to rather than starts: a unix socket speaking
newline-delimited JSON, and a WebSocket server (ws:// and wss://). Behind each, the
official SDK's server (tests/servers/sdk_server.py), carried over the socket by
tests/servers/socket_server.py, whose WebSocket side is the ``websockets`` library's.

What a user would notice: calls, lists and server notifications pass as with a stdio
upstream; the config's headers reach the server's handshake; a refused handshake, an
untrusted certificate and a server that goes away show in /status and recover by
themselves once the server is back."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpfast.config import ConfigError, parse

from ..conftest import (
    ROOT,
    SDK_SERVER,
    GatewayProcess,
    Pki,
    free_port,
    run,
    wait_until,
    ws_client,
)

SOCKET_SERVER = str(ROOT / "tests" / "servers" / "socket_server.py")


class SocketServer:
    """tests/servers/socket_server.py in a subprocess, listening once ``start`` returns."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self) -> SocketServer:
        self.proc = subprocess.Popen(
            [sys.executable, SOCKET_SERVER, *self.args, "--", sys.executable, SDK_SERVER],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line
        return self

    def handshakes(self) -> list[dict[str, str]]:
        """The headers of each WebSocket handshake so far (read up to the process's
        end: call after ``stop``)."""
        assert self.proc is not None and self.proc.stdout is not None
        return [{k.lower(): v for k, v in json.loads(line)["headers"].items()}
                for line in self.proc.stdout.read().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.fixture
def servers() -> Iterator[list[SocketServer]]:
    started: list[SocketServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a path short enough for unix sockets (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mcpfast-up-", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def last_error(gateway: GatewayProcess) -> str:
    """The upstream's last error in /status ("" while the admin port is not bound yet,
    for a gateway started without waiting for it to be ready)."""
    code, body = gateway.admin_get("/status", starting=True)
    if code != 200:
        return ""
    (upstream,) = json.loads(body)["upstreams"]
    return upstream["last_error"] or ""


def gateway_to(workdir: Path, upstream: dict[str, Any]) -> GatewayProcess:
    return GatewayProcess(workdir, {"remote": upstream}, {})


async def echo_through(gateway: GatewayProcess) -> None:
    async with ws_client(gateway.ws_url) as client:
        await client.initialize()
        tools = await client.request("tools/list")
        assert "echo" in {tool["name"] for tool in tools["result"]["tools"]}
        answer = await client.call_tool("echo", {"text": "over the socket"})
        assert "over the socket" in json.dumps(answer["result"])
        # A server notification tied to the call reaches the client that made it.
        progress = await client.request("tools/call", {
            "name": "progress", "arguments": {"steps": 3},
            "_meta": {"progressToken": "p1"}})
        assert "result" in progress
        assert [n["params"]["progress"] for n in client.notifications
                if n["method"] == "notifications/progress"] == [1, 2, 3]


def test_a_unix_socket_upstream(tmp_path: Path, short_dir: Path,
                                servers: list[SocketServer]) -> None:
    path = str(short_dir / "up.sock")
    servers.append(SocketServer("--unix", path).start())
    gateway = gateway_to(tmp_path, {"socket": path})
    try:
        gateway.start()
        upstream = gateway.upstream("remote")
        assert (upstream["kind"], upstream["address"]) == ("unix", f"unix:{path}")
        assert upstream["server_info"]["name"] == "sdk"
        run(echo_through(gateway))
    finally:
        gateway.cleanup()


def test_a_websocket_upstream_with_headers_from_the_config(
        tmp_path: Path, servers: list[SocketServer]) -> None:
    port = free_port()
    server = SocketServer("--ws", str(port), "--require", "Authorization=Bearer s3cret")
    servers.append(server.start())
    gateway = GatewayProcess(tmp_path, {"remote": {
        "url": f"ws://127.0.0.1:{port}/mcp?tenant=a",
        "headers": {"Authorization": "Bearer ${UPSTREAM_TOKEN}"}}}, {},
        env={"UPSTREAM_TOKEN": "s3cret"})
    try:
        gateway.start()
        upstream = gateway.upstream("remote")
        assert upstream["kind"] == "websocket"
        # The query may hold a credential: /status leaves it out.
        assert upstream["address"] == f"ws://127.0.0.1:{port}/mcp"
        run(echo_through(gateway))
    finally:
        gateway.cleanup()
    server.stop()
    (handshake, *_) = server.handshakes()
    assert handshake["authorization"] == "Bearer s3cret"
    assert handshake["sec-websocket-protocol"] == "mcp"
    assert handshake["host"] == f"127.0.0.1:{port}"


def test_a_refused_handshake_shows_and_a_server_that_comes_back_is_used(
        tmp_path: Path, servers: list[SocketServer]) -> None:
    port = free_port()
    refusing = SocketServer("--ws", str(port), "--require", "Authorization=Bearer right")
    servers.append(refusing.start())
    gateway = GatewayProcess(tmp_path, {"remote": {
        "url": f"ws://127.0.0.1:{port}/", "headers": {"Authorization": "Bearer wrong"},
        "restart_backoff": 0.2, "restart_backoff_max": 0.5}}, {})
    try:
        gateway.start(wait_ready=False)
        wait_until(lambda: "401" in last_error(gateway), 30)
        assert "WebSocket handshake refused: the server answered 401" in last_error(gateway)
        refusing.stop()
        # The server comes back on the same port, accepting this gateway's header.
        accepting = SocketServer("--ws", str(port), "--require",
                                 "Authorization=Bearer wrong")
        servers.append(accepting.start())
        gateway.wait_ready(30)
        run(echo_through(gateway))
        # It goes away while connected: the upstream is down, then back with it.
        accepting.stop()
        wait_until(lambda: not gateway.upstream("remote")["ready"], 30)
        servers.append(SocketServer("--ws", str(port), "--require",
                                    "Authorization=Bearer wrong").start())
        wait_until(lambda: gateway.upstream("remote")["ready"], 30)
        run(echo_through(gateway))
        assert gateway.upstream("remote")["starts"] >= 2
    finally:
        gateway.cleanup()


def test_wss_verifies_the_server_against_the_configured_ca(
        tmp_path: Path, servers: list[SocketServer]) -> None:
    pki = Pki(tmp_path / "pki")
    cert, key, _ = pki.issue("upstream", server=True)
    port = free_port()
    servers.append(SocketServer("--ws", str(port), "--cert", cert, "--key", key).start())
    trusting = GatewayProcess(tmp_path / "trusting", {"remote": {
        "url": f"wss://127.0.0.1:{port}/mcp", "ca_file": pki.ca_file}}, {})
    untrusting = GatewayProcess(tmp_path / "untrusting", {"remote": {
        "url": f"wss://127.0.0.1:{port}/mcp"}}, {})
    try:
        trusting.start()
        run(echo_through(trusting))
        untrusting.start(wait_ready=False)
        wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in last_error(untrusting), 30)
        assert not untrusting.upstream("remote")["ready"]
    finally:
        trusting.cleanup()
        untrusting.cleanup()


def test_a_server_choosing_another_subprotocol_is_refused(
        tmp_path: Path, servers: list[SocketServer]) -> None:
    port = free_port()
    servers.append(SocketServer("--ws", str(port), "--subprotocol", "chat").start())
    gateway = GatewayProcess(tmp_path, {"remote": {"url": f"ws://127.0.0.1:{port}/"}}, {})
    try:
        gateway.start(wait_ready=False)
        wait_until(lambda: "subprotocol" in last_error(gateway), 30)
        assert "the server chose subprotocol 'chat'" in last_error(gateway)
    finally:
        gateway.cleanup()


def test_nothing_listening_is_a_clear_error(tmp_path: Path, short_dir: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"remote": {"socket": str(short_dir / "none.sock")}},
                             {})
    try:
        gateway.start(wait_ready=False)
        wait_until(lambda: "cannot connect to unix:" in last_error(gateway), 30)
        assert "No such file or directory" in last_error(gateway)
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("table,message", [
    ('url = "ws://h/"\ncommand = ["x"]', "upstreams.a.url: set one of command, url and "
                                         "socket, not command and url"),
    ('url = "ftp://h/mcp"', "upstreams.a.url: must be an http(s):// URL (Streamable HTTP) "
                           "or a ws(s):// URL"),
    ('transport = "websocket"\nurl = "http://h/"', "upstreams.a.url: must be a ws:// or"),
    ('url = "ws:///mcp"', "upstreams.a.url: names no host"),
    ('url = "ws://h:99999/"', "upstreams.a.url: has an invalid port"),
    ('url = "ws://h/"\nca_file = "ca.pem"', "upstreams.a.ca_file: applies only to an https://"),
    ('url = "ws://h/"\nheaders = {"X Y" = "1"}', 'upstreams.a.headers.X Y: is not a valid'),
    ('url = "ws://h/"\nheaders = {X = "a\\r\\nB: c"}', "upstreams.a.headers.X: must not "
                                                      "contain a line break"),
    ('transport = "unix"', "upstreams.a.socket: must be the path of the unix socket"),
    ('transport = "sse"\nurl = "ws://h/sse"', "upstreams.a.url: must be the http(s):// URL"),
    ('transport = "sse"\nurl = "http://h/sse"\nera = "modern"',
     "upstreams.a.era: the sse transport (2024-11-05) is legacy only"),
    ('socket = "/s"\nconnect_timeout = 0', "upstreams.a.connect_timeout: must be positive"),
    ('url = "http://h/mcp"\nmax_connections = 1',
     "upstreams.a.max_connections: must be at least 2 for an HTTP upstream"),
])
def test_config_errors_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(f"[upstreams.a]\n{table}\n")
    assert message in str(error.value)


def test_the_kind_follows_from_the_key_given() -> None:
    config = parse('[upstreams.w]\nurl = "wss://h/mcp"\n[upstreams.u]\nsocket = "/s"\n'
                   '[upstreams.p]\ncommand = ["srv"]\n[upstreams.h]\nurl = "https://h/mcp"\n')
    assert {name: up.transport for name, up in config.upstreams.items()} == {
        "w": "websocket", "u": "unix", "p": "stdio", "h": "streamable_http"}
