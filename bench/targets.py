"""The things the load generator is pointed at, each started fresh for a measurement.

  direct        loadgen -> echo server (WebSocket): no proxy at all, the ceiling
  nginx         loadgen -> nginx (one worker) -> echo server (WebSocket): the proxy floor
  mcpfast-ws    loadgen -> mcpfast (WebSocket) -> echo server (stdio upstream)
  mcpfast-unix  loadgen -> mcpfast (unix socket) -> echo server (stdio upstream)
  mcpfast-ws-2w loadgen -> mcpfast with workers = 2 (a supervisor and two gateway
                processes sharing the port, each with its own echo server over stdio)
  mcpfast-ws-limited  mcpfast-ws with two rate limits that apply to every call (one per
                client identity, one per tool) and never refuse: their cost per call
  mcpfast-ws-apikey, mcpfast-ws-jwt  mcpfast-ws requiring an API key or a JWT (RS256),
                which the load generator sends with each upgrade: verified once per
                connection
  mcpfast-http-apikey, mcpfast-http-jwt  the same over Streamable HTTP, where every
                request carries it: verified once, then found in the gateway's cache
  direct-http   loadgen -> echo server (Streamable HTTP): the HTTP ceiling
  nginx-http    loadgen -> nginx (one worker, upstream keep-alive) -> echo server (HTTP)
  mcpfast-http  loadgen -> mcpfast (Streamable HTTP) -> echo server (stdio upstream)

Every target runs the same echo server (bench/echo_server.py); only its transport
differs. A target is compared with the ceiling and the floor of its own client transport
(``baselines()``): an HTTP call makes a proxy parse a request head and write a response
head where WebSocket has a few bytes of frame header, so mcpfast-http over nginx
(WebSocket) would mix the transport's cost with the gateway's. A target knows the pids to
meter: the proxy's (the nginx worker, or the gateway process alone, not its upstream; with
workers, the supervisor and every worker) and the echo server's (one per worker).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from . import procfs
from .nginx import nginx_version, render_config
from .pinning import pinned_to, proxy_cpus
from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ECHO_SERVER = Path(__file__).resolve().with_name("echo_server.py")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class TargetError(RuntimeError):
    pass


def read_json_line(stream: IO[bytes], timeout: float) -> dict[str, Any] | None:
    """The next line of ``stream`` as JSON, or None at EOF; TimeoutError past ``timeout``.

    ``stream`` must be unbuffered (``Popen(..., bufsize=0)``): the wait is on its file
    descriptor, and a buffered reader may already hold the next line, read from the
    pipe with the one before it, while the descriptor has nothing more to say; the
    wait would then outlast the line's writer (the load generator holding its sessions
    until told to release them)."""
    if isinstance(stream, io.BufferedIOBase):
        raise TypeError("read_json_line needs an unbuffered stream (bufsize=0)")
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no output within {timeout:g} s")
    line = stream.readline()
    return json.loads(line) if line else None


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal, wait, then kill the whole process group (each child gets its own)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TargetError(f"port {port} not accepting after {timeout:g} s")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Target:
    name = "abstract"
    transport = "websocket"
    proxy_label: str | None = None

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.address = ""
        self.proxy_pid: int | None = None
        """The proxy's process whose memory is reported (the one that starts the rest)."""
        self.echo_pid = 0
        self.more_proxy_pids: list[int] = []
        """The proxy's other processes, metered with it (a supervisor's workers)."""
        self.more_echo_pids: list[int] = []
        """More echo servers, metered with the first (one per worker)."""
        self.cpus = proxy_cpus()
        """Where the proxy and its upstreams run (pinning.py)."""
        self.notes: list[str] = []
        """What the report should say about how this target was measured."""
        self.info: dict[str, str] = {}
        self.loadgen_args: list[str] = []
        """More arguments for the load generator (a credential to send)."""
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self, connections: int) -> None:
        """Start and wait until it takes connections; ``connections`` is the most the
        measurement will open at once."""
        raise NotImplementedError

    def open_sessions(self) -> int | None:
        """How many client sessions the target itself counts, where it says."""
        return None

    def proxy_pids(self) -> list[int]:
        """Every process of the proxy, whose CPU time is summed."""
        return ([self.proxy_pid] if self.proxy_pid else []) + self.more_proxy_pids

    def echo_pids(self) -> list[int]:
        return ([self.echo_pid] if self.echo_pid else []) + self.more_echo_pids

    def stop(self) -> None:
        for proc in reversed(self._processes):
            stop_process(proc)
        self._processes.clear()

    def _spawn(self, argv: list[str], log_name: str,
               stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "ab")
        try:
            proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, bufsize=0,
                stdout=subprocess.PIPE if stdout_pipe else log, stderr=log,
                start_new_session=True, preexec_fn=pinned_to(self.cpus))
        finally:
            log.close()
        self._processes.append(proc)
        return proc

    def _start_echo(self, mode: str) -> int:
        """The echo server listening on a free port; ``mode`` is ``ws`` or ``http``."""
        proc = self._spawn([sys.executable, str(ECHO_SERVER), f"--{mode}", "127.0.0.1:0"],
                           "echo.log", stdout_pipe=True)
        assert proc.stdout is not None
        try:
            ready = read_json_line(proc.stdout, START_TIMEOUT)
        except TimeoutError:
            ready = None
        if not ready or ready.get("ready") != mode:
            raise TargetError(f"echo server did not start: {log_tail(self.workdir / 'echo.log')}")
        self.echo_pid = proc.pid
        return int(ready["port"])


def _echo_mode(transport: str) -> str:
    return "http" if transport == "http" else "ws"


def _url(transport: str, port: int) -> str:
    return f"{'http' if transport == 'http' else 'ws'}://127.0.0.1:{port}/mcp"


class DirectTarget(Target):
    def __init__(self, workdir: Path, transport: str = "websocket") -> None:
        super().__init__(workdir)
        self.transport = transport
        self.name = "direct-http" if transport == "http" else "direct"

    def start(self, connections: int) -> None:
        port = self._start_echo(_echo_mode(self.transport))
        self.address = _url(self.transport, port)


class NginxTarget(Target):
    proxy_label = "nginx worker"

    def __init__(self, workdir: Path, nginx: str, nofile: int,
                 transport: str = "websocket") -> None:
        super().__init__(workdir)
        self.nginx = nginx
        self.nofile = nofile
        self.transport = transport
        self.name = "nginx-http" if transport == "http" else "nginx"
        self.info = {"nginx": nginx_version(nginx)}

    def start(self, connections: int) -> None:
        echo_port = self._start_echo(_echo_mode(self.transport))
        port = free_port()
        prefix = self.workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(render_config(self.nginx, prefix, port, echo_port, connections,
                                      self.nofile, self.transport))
        master = self._spawn([self.nginx, "-p", str(prefix), "-c", str(conf),
                              "-g", "daemon off;"], "nginx.log")
        try:
            wait_for_port(port, master, START_TIMEOUT)
        except TargetError as exc:
            raise TargetError(f"nginx: {exc}: {log_tail(self.workdir / 'nginx.log')}"
                              f"{log_tail(prefix / 'error.log')}") from exc
        deadline = time.monotonic() + START_TIMEOUT
        while not (workers := procfs.children(master.pid)):
            if time.monotonic() > deadline:
                raise TargetError("nginx started no worker process")
            time.sleep(0.05)
        self.proxy_pid = workers[0]
        self.address = _url(self.transport, port)


class McpfastTarget(Target):
    proxy_label = "gateway"

    def __init__(self, workdir: Path, transport: str, limited: bool = False,
                 auth: str | None = None, upstream: str = "stdio", workers: int = 1) -> None:
        super().__init__(workdir)
        self.transport = transport
        self.name = {"websocket": "mcpfast-ws", "unix": "mcpfast-unix",
                     "http": "mcpfast-http"}[transport] + ("-limited" if limited else "") \
            + (f"-{auth}" if auth else "") + UPSTREAM_SUFFIXES[upstream] \
            + (f"-{workers}w" if workers > 1 else "")
        self.limited = limited
        self.auth = auth
        self.upstream = upstream
        self.workers = workers
        self.admin = ""
        if workers > 1:
            # Each worker and its echo server are busy: two processes per worker.
            self.cpus = proxy_cpus(2 * workers)
            if self.cpus is None:
                self.notes.append(
                    f"not pinned: {workers} workers and their echo servers share every CPU "
                    "with the load generator (the proxy half of the CPUs has too few)")

    def start(self, connections: int) -> None:
        port, admin_port = free_port(), free_port()
        unix_path = self.workdir / "mcpfast.sock"
        config = self.workdir / "mcpfast.toml"
        config.write_text(f"""\
workers = {self.workers}

[listen]
host = "127.0.0.1"
port = {port}
path = "/mcp"
unix_socket = {json.dumps(str(unix_path))}
backlog = 4096
idle_timeout = 3600.0
{self._listen_auth()}

[limits]
# Every session comes from 127.0.0.1: the default cap per address (half of the total)
# would refuse the last of the idle scenario's 10,000.
max_connections_per_peer = 1000000

[listen.http]
# Likewise for the idle scenario's legacy HTTP sessions.
max_sessions = 1000000
max_sessions_per_peer = 1000000

[admin]
host = "127.0.0.1"
port = {admin_port}

[logging]
level = "warning"

{self._upstream_section()}
{ACTIVE_LIMITS if self.limited else ""}
{self._auth_section()}""")
        gateway = self._spawn([sys.executable, "-m", "mcpfast", "serve", "--config",
                               str(config)], "gateway.log")
        admin = f"http://127.0.0.1:{admin_port}"
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready(admin):
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise TargetError(f"mcpfast did not become ready: "
                                  f"{log_tail(self.workdir / 'gateway.log')}")
            time.sleep(0.1)
        with urllib.request.urlopen(f"{admin}/status", timeout=5) as response:
            status = json.load(response)
        self.proxy_pid = gateway.pid
        if self.workers > 1:
            # The supervisor, then each worker and the echo server it started.
            workers = [worker["status"] for worker in status["workers"]]
            self.more_proxy_pids = [int(worker["pid"]) for worker in status["workers"]]
            status = workers[0]
            if self.upstream == "stdio":
                self.more_echo_pids = [int(worker["upstreams"][0]["pid"])
                                       for worker in workers[1:]]
        if self.upstream == "stdio":
            self.echo_pid = int(status["upstreams"][0]["pid"])
        self.info = {"mcpfast": str(status.get("version")),
                     "implementation": str(status.get("implementation"))}
        self.address = (f"unix:{unix_path}" if self.transport == "unix"
                        else _url(self.transport, port))
        self.admin = admin

    def _upstream_section(self) -> str:
        """The echo server as the gateway's upstream: a subprocess it starts (stdio), or
        one this target starts and the gateway connects to (WebSocket, Streamable HTTP)."""
        if self.upstream == "stdio":
            return (f'[upstreams.echo]\ncommand = ["python", '
                    f'{json.dumps(str(ECHO_SERVER))}, "--stdio"]\n')
        mode = {"websocket": "ws", "streamable_http": "http"}[self.upstream]
        url = _url("http" if mode == "http" else "websocket", self._start_echo(mode))
        return (f'[upstreams.echo]\ntransport = "{self.upstream}"\nurl = "{url}"\n'
                f'era = "legacy"\n')

    def _listen_auth(self) -> str:
        return {None: "", "apikey": 'auth = ["api_key"]', "jwt": 'auth = ["jwt"]'}[self.auth]

    def _auth_section(self) -> str:
        """The ``[auth]`` the target requires, and the credential the load generator
        sends for it."""
        if self.auth is None:
            return ""
        if self.auth == "apikey":
            key = "mcpf_bench-" + os.urandom(16).hex()
            self.loadgen_args = ["--header", f"Authorization: Bearer {key}"]
            digest = hashlib.sha256(key.encode()).hexdigest()
            return f'[[auth.api_keys]]\nname = "bench"\nhash = "sha256:{digest}"\n'
        import jwt
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        now = int(time.time())
        token = jwt.encode({"iss": "https://issuer.bench", "aud": "https://gateway.bench/mcp",
                            "sub": "bench", "iat": now, "exp": now + 86400},
                           private, algorithm="RS256", headers={"kid": "bench"})
        self.loadgen_args = ["--header", f"Authorization: Bearer {token}"]
        return (f'[auth]\nresource = "https://gateway.bench/mcp"\n[auth.jwt]\n'
                f'issuer = "https://issuer.bench"\nkeys = {json.dumps([public.decode()])}\n')

    def open_sessions(self) -> int | None:
        with urllib.request.urlopen(f"{self.admin}/status", timeout=10) as response:
            return int(json.load(response)["connections"]["open"])

    @staticmethod
    def _ready(admin: str) -> bool:
        try:
            with urllib.request.urlopen(f"{admin}/readiness", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


ACTIVE_LIMITS = """
[[rate_limits]]
rate = 1e9
per = "identity"

[[rate_limits]]
rate = 1e9
tool = "ec*"
"""
"""Two limits that every call of the load generator passes through (a bucket per client
identity, and a per-tool bucket matched by pattern), too generous ever to refuse."""

TARGET_TRANSPORTS = {
    "direct": "websocket", "nginx": "websocket", "mcpfast-ws": "websocket",
    "mcpfast-ws-2w": "websocket", "mcpfast-ws-limited": "websocket", "mcpfast-unix": "unix",
    "mcpfast-ws-apikey": "websocket", "mcpfast-ws-jwt": "websocket",
    "mcpfast-ws-to-ws": "websocket", "mcpfast-ws-to-http": "websocket",
    "direct-http": "http", "nginx-http": "http", "mcpfast-http": "http",
    "mcpfast-http-apikey": "http", "mcpfast-http-jwt": "http",
}
TARGET_NAMES = tuple(TARGET_TRANSPORTS)
NGINX_TARGETS = ("nginx", "nginx-http")


UPSTREAM_SUFFIXES = {"stdio": "", "websocket": "-to-ws", "streamable_http": "-to-http"}
"""The mcpfast targets whose upstream is not the stdio echo server are named by the
kind of upstream the gateway reaches it over: ``mcpfast-ws-to-http`` takes WebSocket
clients and calls the echo server over Streamable HTTP."""


def baselines(target: str) -> tuple[str, str]:
    """The (proxy floor, ceiling) that ``target``'s ratios are computed against. The unix
    socket has no nginx of its own; WebSocket's pair is its nearest yardstick."""
    if TARGET_TRANSPORTS.get(target) == "http":
        return "nginx-http", "direct-http"
    return "nginx", "direct"


def make_target(name: str, workdir: Path, nginx: str | None, nofile: int) -> Target:
    transport = TARGET_TRANSPORTS.get(name)
    if transport is None:
        raise ValueError(f"unknown target {name!r}")
    if name.startswith("direct"):
        return DirectTarget(workdir, transport)
    if name in NGINX_TARGETS:
        assert nginx is not None
        return NginxTarget(workdir, nginx, nofile, transport)
    auth = name.rpartition("-")[2] if name.endswith(("-apikey", "-jwt")) else None
    upstream = next((kind for kind, suffix in UPSTREAM_SUFFIXES.items()
                     if suffix and name.endswith(suffix)), "stdio")
    several = re.search(r"-(\d+)w$", name)
    workers = int(several[1]) if several else 1
    return McpfastTarget(workdir, transport, limited=name.endswith("-limited"), auth=auth,
                         upstream=upstream, workers=workers)
