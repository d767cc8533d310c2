"""Shared fixtures: a real gateway process on loopback, and small real clients."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import importlib.machinery
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import websockets

ROOT = Path(__file__).resolve().parent.parent
SDK_SERVER = str(ROOT / "tests" / "servers" / "sdk_server.py")
INIT_PARAMS = {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "mcpfast-tests", "version": "0"}}


def twin(request: pytest.FixtureRequest, name: str) -> ModuleType:
    """The implementation of ``mcpfast_ext.<name>`` a ``params=["py", "c"]`` fixture asks
    for. "c" is skipped only under MCPFAST_NO_EXTENSIONS=1; a compiled module that is
    missing fails the test, so a broken build cannot pass as a green run."""
    if request.param == "py":
        return importlib.import_module(f"mcpfast_ext.{name}_py")
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        pytest.skip("MCPFAST_NO_EXTENSIONS=1")
    return compiled(name)


def compiled(name: str) -> ModuleType:
    """The compiled ``mcpfast_ext.<name>``; the test fails when it was not built."""
    try:
        module = importlib.import_module(f"mcpfast_ext.{name}")
    except ImportError as exc:
        pytest.fail(f"compiled mcpfast_ext.{name} is missing ({exc}); run `make ext`")
    # A stray .py file must not shadow the extension.
    assert module.__file__ is not None
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return module


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@contextlib.contextmanager
def source_tree_lock() -> Iterator[None]:
    """Held while a test builds in the source tree (cythonize writes there, pip writes
    build/ and the egg-info): make test runs its two passes side by side."""
    with open(ROOT / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_upstream(name: str = "sdk", prefix: str = "", **extra: Any) -> dict[str, Any]:
    """Config for an upstream running the official SDK test server."""
    table: dict[str, Any] = {"command": ["python", SDK_SERVER, "--name", name], **extra}
    if prefix:
        table["env"] = {"SDK_SERVER_TOOL_PREFIX": prefix}
    return table


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


class GatewayProcess:
    """``mcpfast serve`` in a subprocess, with the addresses it listens on."""

    def __init__(self, workdir: Path, upstreams: dict[str, dict[str, Any]],
                 sections: dict[str, dict[str, Any]]) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.unix_path = str(Path(tempfile.mkdtemp(prefix="mcpfast-", dir="/tmp")) / "gw.sock")
        listen = {"host": "127.0.0.1", "port": self.port, "unix_socket": self.unix_path,
                  **sections.pop("listen", {})}
        config = {"listen": listen, "admin": {"host": "127.0.0.1", "port": self.admin_port},
                  "logging": {"level": "debug"}, **sections}
        lines: list[str] = []
        for section, table in config.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        for name, table in upstreams.items():
            lines.append(f"[upstreams.{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        self.config_path = workdir / "mcpfast.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mcp"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 20.0, wait_ready: bool = True) -> GatewayProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcpfast", "serve", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            status, _ = self.admin_get("/readiness")
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready after {timeout} s:\n{self.log()}")

    def admin_get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def status(self) -> dict[str, Any]:
        code, body = self.admin_get("/status")
        assert code == 200, body
        return json.loads(body)

    def upstream(self, name: str) -> dict[str, Any]:
        return next(u for u in self.status()["upstreams"] if u["name"] == name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"gateway did not stop on {sig}:\n{self.log()}") from None
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def make(upstreams: dict[str, dict[str, Any]] | None = None, start: bool = True,
             **sections: dict[str, Any]) -> GatewayProcess:
        gw = GatewayProcess(tmp_path, upstreams or {"sdk": sdk_upstream()}, sections)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.terminate(signal.SIGKILL)


@pytest.fixture
def gateway(gateway_factory: Any) -> GatewayProcess:
    """A gateway fronting one official-SDK upstream."""
    return gateway_factory()


class McpClient:
    """A minimal MCP client over any message pipe: ids, responses, notifications and
    server-to-client requests kept apart so tests can assert on each."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.responses: dict[Any, dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []

    async def send_raw(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def receive_raw(self) -> str | bytes:
        raise NotImplementedError

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.receive_raw(), timeout)
        return json.loads(data)

    async def wait_for(self, request_id: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.responses:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            if "method" in message and "id" in message:
                self.requests.append(message)
            elif "method" in message:
                self.notifications.append(message)
            elif message.get("id") is None:
                self.errors.append(message)
            else:
                self.responses[message["id"]] = message
        return self.responses.pop(request_id)

    async def request(self, method: str, params: Any = None, *, request_id: Any = None,
                      timeout: float = 10.0) -> dict[str, Any]:
        rid = next(self._ids) if request_id is None else request_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.wait_for(rid, timeout)

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)

    async def initialize(self, **params: Any) -> dict[str, Any]:
        response = await self.request("initialize", {**INIT_PARAMS, **params})
        await self.notify("notifications/initialized")
        return response

    async def start_call(self, name: str, arguments: dict[str, Any], request_id: Any) -> None:
        """Send a tools/call and return without waiting for its answer."""
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}})

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        **kw: Any) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}},
                                  **kw)


class WsClient(McpClient):
    def __init__(self, ws: Any) -> None:
        super().__init__()
        self.ws = ws

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def receive_raw(self) -> str | bytes:
        return await self.ws.recv()


class UnixClient(McpClient):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer

    async def send_raw(self, data: str | bytes) -> None:
        self.writer.write((data.encode() if isinstance(data, str) else data) + b"\n")
        await self.writer.drain()

    async def receive_raw(self) -> str | bytes:
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("the gateway closed the unix connection")
        return line


class ws_client:  # noqa: N801 - used as a context manager like websockets.connect
    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.kwargs = {"subprotocols": ["mcp"], "max_size": None, **kwargs}

    async def __aenter__(self) -> WsClient:
        self._cm = websockets.connect(self.url, **self.kwargs)
        return WsClient(await self._cm.__aenter__())

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)


class unix_client:  # noqa: N801
    def __init__(self, path: str) -> None:
        self.path = path

    async def __aenter__(self) -> UnixClient:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=2**24)
        self._writer = writer
        return UnixClient(reader, writer)

    async def __aexit__(self, *exc: Any) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="session", autouse=True)
def _implementation_check() -> None:
    """`make test` runs the suite once compiled and once pure: refuse a compiled run
    that silently fell back to pure Python."""
    import mcpfast_ext

    if os.environ.get("MCPFAST_REQUIRE_EXTENSION") == "1":
        assert mcpfast_ext.IMPLEMENTATION == "compiled", "the compiled extension is not in use"
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        assert mcpfast_ext.IMPLEMENTATION == "pure"
