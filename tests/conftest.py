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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import websockets

from bench.faults import toml
from bench.micro.fakes import RecordingTransport
from bench.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SDK_SERVER = str(ROOT / "tests" / "servers" / "sdk_server.py")
ZYGOTE = os.path.join(tempfile.gettempdir(), f"mcpfast-zygote-{os.getpid()}.sock")
"""Where this pass's zygote listens (``_zygote``): the SDK servers and gateways
``forked`` names are forked by it rather than started afresh, a few milliseconds of CPU
instead of 1.6 s (an SDK server) or 0.9 s (a gateway)."""
RECORDING_SERVER = str(ROOT / "tests" / "servers" / "recording_server.py")
EVENTS_SERVER = str(ROOT / "tests" / "servers" / "events_server.py")
CONFORMANCE_SERVER = str(ROOT / "tests" / "servers" / "conformance_server.py")
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


# ``free_port`` (bench.ports): below the kernel's ephemeral range, and none that this
# process handed out lately. Two processes (the passes of make test, and their workers)
# can still pick the same one: a gateway that loses its port that way is started again
# on others (``GatewayProcess.start``).


def forked(server: str, *args: str, pid_file: Path | None = None) -> list[str]:
    """The command that runs the SDK test server ``server`` (``sdk_server`` or
    ``events_server``) or a gateway (``mcpfast``) forked by this pass's zygote
    (``servers/launch.py``), which writes the pid of what it forked to ``pid_file``."""
    where = [] if pid_file is None else ["--pid-file", str(pid_file)]
    return ["python", "-S", str(ROOT / "tests" / "servers" / "launch.py"), *where, ZYGOTE,
            server, *args]


def sdk_upstream(name: str = "sdk", prefix: str = "", **extra: Any) -> dict[str, Any]:
    """Config for an upstream running the official SDK test server (forked by this
    pass's zygote: ``forked``)."""
    table: dict[str, Any] = {"command": forked("sdk_server", "--name", name), **extra}
    if prefix:
        table["env"] = {"SDK_SERVER_TOOL_PREFIX": prefix}
    return table


def recording_upstream(record: Path, name: str = "rec", *flags: str,
                       **extra: Any) -> dict[str, Any]:
    """Config for an upstream running ``servers/recording_server.py``, which appends
    what happens to it to ``record`` (read it with ``Record``). ``flags`` are the
    server's options, e.g. ``"--ignore-eof"``."""
    return {"command": ["python", RECORDING_SERVER, "--record", str(record), "--name", name,
                        *flags], "era": "legacy", **extra}


class Record:
    """The events a recording server wrote (see ``servers/recording_server.py``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # The last line may still be being written.
        lines = [line for line in text.split("\n")[:-1] if line]
        found = [json.loads(line) for line in lines]
        return [e for e in found if event is None or e["event"] == event]

    def received(self, method: str | None = None) -> list[dict[str, Any]]:
        """The messages the upstream received (``method``'s only), in order."""
        return [e["message"] for e in self.events("recv")
                if method is None or e["message"].get("method") == method]

    def call(self, tool: str, **arguments: Any) -> dict[str, Any] | None:
        """The last tools/call of ``tool`` whose arguments include ``arguments``."""
        calls = [m for m in self.received("tools/call") if m["params"].get("name") == tool
                 and all(m["params"].get("arguments", {}).get(k) == v
                         for k, v in arguments.items())]
        return calls[-1] if calls else None

    def wait(self, predicate: Any, timeout: float = 15.0, what: str = "event") -> Any:
        """Poll until ``predicate(self)`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                tail = "\n".join(json.dumps({k: v for k, v in e.items() if k != "env"})[:300]
                                 for e in self.events()[-10:])
                raise AssertionError(f"the upstream did not record the {what} within "
                                     f"{timeout:g} s; its last events:\n{tail}")
            time.sleep(0.02)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (the same writer bench.faults uses for its configs)."""
    return toml(value)


BIND_ATTEMPTS = 3


class GatewayProcess:
    """``mcpfast serve`` in a subprocess, with the addresses it listens on."""

    def __init__(self, workdir: Path, upstreams: dict[str, dict[str, Any]],
                 sections: dict[str, dict[str, Any]], env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        # ``command`` runs an installed mcpfast instead of the source tree's (the
        # packaging tests); it starts in ``workdir``, where nothing shadows the install.
        # The source tree's is forked by this pass's zygote, which has it imported; its
        # launcher writes the gateway's pid to ``pid_file``.
        self.pid_file: Path | None = None
        if command is None:
            self.pid_file = workdir / "gateway.pid"
            command = [sys.executable, *forked("mcpfast", pid_file=self.pid_file)[1:]]
        self.command = command
        self.cwd = ROOT if self.pid_file is not None else workdir
        self.port = free_port()
        self.admin_port = free_port()
        # A short path of its own (unix socket paths are limited to 108 bytes, and
        # pytest's tmp_path can be longer); ``cleanup`` removes it.
        self.unix_dir = Path(tempfile.mkdtemp(prefix="mcpfast-", dir="/tmp"))
        self.unix_path = str(self.unix_dir / "gw.sock")
        self.env = env or {}
        listen = {"host": "127.0.0.1", "port": self.port, "unix_socket": self.unix_path,
                  **sections.pop("listen", {})}
        admin = {"host": "127.0.0.1", "port": self.admin_port, **sections.pop("admin", {})}
        config = {"listen": listen, "admin": admin, "logging": {"level": "debug"}, **sections}
        lines: list[str] = []
        for section, table in config.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        for name, table in upstreams.items():
            lines.append(f"[upstreams.{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "mcpfast.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The gateway's own pid (``proc`` is its launcher when the zygote forked it)."""
        assert self.proc is not None
        if self.pid_file is None:
            return self.proc.pid
        deadline = time.monotonic() + 20
        while not self.pid_file.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                f"the gateway's launcher wrote no pid:\n{self.log()}"
            time.sleep(0.01)
        return int(self.pid_file.read_text())

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
        for attempt in range(BIND_ATTEMPTS):
            if self.pid_file is not None:
                self.pid_file.unlink(missing_ok=True)
            self._log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [*self.command, "serve", "--config", str(self.config_path)],
                stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd,
                env={**os.environ, **self.env})
            if not wait_ready:
                return self
            try:
                self.wait_ready(timeout)
                return self
            except AssertionError:
                if attempt + 1 == BIND_ATTEMPTS or not self._lost_its_port():
                    raise
                self._log.close()
                self._move_to_new_ports()
        return self

    def _lost_its_port(self) -> bool:
        """Whether the gateway exited because another process took a port chosen for it
        (between ``free_port`` and its bind)."""
        return self.proc is not None and self.proc.poll() is not None and \
            "address already in use" in self.log().lower()

    def _move_to_new_ports(self) -> None:
        text = self.config_path.read_text()
        for attribute in ("port", "admin_port"):
            old, new = getattr(self, attribute), free_port()
            assert text.count(f"port = {old}\n") == 1, (attribute, old)
            text = text.replace(f"port = {old}\n", f"port = {new}\n")
            # A URL naming the gateway (``auth.resource``) follows it to its new port.
            text = text.replace(f"//127.0.0.1:{old}/", f"//127.0.0.1:{new}/")
            setattr(self, attribute, new)
        self.config_path.write_text(text)

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            status, _ = self.admin_get("/readiness", starting=True)
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready after {timeout} s:\n{self.log()}")

    def admin_get(self, path: str, *, starting: bool = False) -> tuple[int, bytes]:
        """The status and body of an admin API request. A connection error is raised,
        except while ``starting`` (the admin port is not bound yet): then it is (0, b"")."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            if starting:
                return 0, b""
            raise

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

    def cleanup(self) -> None:
        """Kill the gateway if it still runs and remove what it left in /tmp."""
        if self.proc is not None and self.proc.poll() is None:
            self.terminate(signal.SIGKILL)
        if self.proc is not None and not self._log.closed:
            self._log.close()
        shutil.rmtree(self.unix_dir, ignore_errors=True)


@contextlib.contextmanager
def running_gateway(workdir: Path, upstreams: dict[str, dict[str, Any]],
                    env: dict[str, str] | None = None, **sections: dict[str, Any]
                    ) -> Iterator[GatewayProcess]:
    """A started gateway for a fixture wider than one test (``gateway_factory`` is per
    test); killed and cleaned up on exit."""
    gw = GatewayProcess(workdir, upstreams, sections, env)
    try:
        yield gw.start()
    finally:
        gw.cleanup()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def make(upstreams: dict[str, dict[str, Any]] | None = None, start: bool = True,
             env: dict[str, str] | None = None, **sections: dict[str, Any]) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(started)}", upstreams or {"sdk": sdk_upstream()},
                            sections, env)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.cleanup()


@pytest.fixture
def gateway(gateway_factory: Any) -> GatewayProcess:
    """A gateway fronting one official-SDK upstream."""
    return gateway_factory()


def id_key(request_id: Any) -> tuple[str, Any]:
    """What a response is matched by: the id's JSON type as well as its value, since
    ``7``, ``7.0``, ``"7"`` and ``true`` compare (and hash) alike in Python but are
    different JSON-RPC ids."""
    return type(request_id).__name__, request_id


def _loosely_equal(a: Any, b: Any) -> bool:
    """Whether two ids would be mistaken for each other by a careless gateway."""
    if a == b or str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError, OverflowError):
        return False


def _show(message: dict[str, Any], limit: int = 300) -> str:
    text = json.dumps(message)
    return text if len(text) <= limit else text[:limit] + "..."


class McpClient:
    """A minimal MCP client over any message pipe: ids, responses, notifications and
    server-to-client requests kept apart so tests can assert on each.

    ``wait_for`` says what went wrong: a response whose id looks like the awaited one
    but has another JSON type fails at once, and a time-out lists everything that came
    instead (responses to other ids, errors with a null id, requests, notifications)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.responses: dict[tuple[str, Any], dict[str, Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.sent_ids: set[tuple[str, Any]] = set()

    async def send_raw(self, data: str | bytes) -> None:
        raise NotImplementedError

    async def receive_raw(self) -> str | bytes:
        raise NotImplementedError

    async def send(self, message: dict[str, Any]) -> None:
        if "method" in message and "id" in message:
            self.sent_ids.add(id_key(message["id"]))
        await self.send_raw(json.dumps(message))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        data = await asyncio.wait_for(self.receive_raw(), timeout)
        return json.loads(data)

    def keep(self, message: dict[str, Any]) -> None:
        """File a message that arrived under what it is."""
        if "method" in message and "id" in message:
            self.requests.append(message)
        elif "method" in message:
            self.notifications.append(message)
        elif message.get("id") is None:
            self.errors.append(message)
        else:
            self.responses[id_key(message["id"])] = message

    def responded(self, request_id: Any) -> bool:
        """Whether a response to ``request_id`` (this exact type) arrived and is kept."""
        return id_key(request_id) in self.responses

    def report(self, problem: str) -> str:
        lines = [problem]
        if self.responses:
            lines.append("responses that came instead, by id (type):")
            lines += [f"  {m['id']!r} ({type(m['id']).__name__})"
                      f"{'' if key in self.sent_ids else ' NEVER SENT'}: {_show(m)}"
                      for key, m in self.responses.items()]
        if self.errors:
            lines.append("error responses with a null id:")
            lines += [f"  {_show(m)}" for m in self.errors]
        if self.requests:
            lines.append("server-to-client requests:")
            lines += [f"  {_show(m)}" for m in self.requests]
        if self.notifications:
            lines.append(f"notifications ({len(self.notifications)}), the last ones:")
            lines += [f"  {_show(m)}" for m in self.notifications[-5:]]
        return "\n".join(lines)

    async def wait_for(self, request_id: Any, timeout: float = 10.0) -> dict[str, Any]:
        key = id_key(request_id)
        deadline = time.monotonic() + timeout
        while key not in self.responses:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                message = await self.receive(left)
            except TimeoutError:
                raise AssertionError(self.report(
                    f"no response to id {request_id!r} ({type(request_id).__name__}) "
                    f"within {timeout:g} s")) from None
            except (ConnectionError, websockets.ConnectionClosed) as exc:
                raise AssertionError(self.report(
                    f"the connection ended while waiting for id {request_id!r}: {exc!r}")
                ) from exc
            self.keep(message)
            got = message.get("id")
            if "method" not in message and got is not None and id_key(got) != key \
                    and id_key(got) not in self.sent_ids and _loosely_equal(got, request_id):
                raise AssertionError(self.report(
                    f"the response to id {request_id!r} ({type(request_id).__name__}) came "
                    f"back with id {got!r} ({type(got).__name__})"))
        return self.responses.pop(key)

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


# -- Streamable HTTP --------------------------------------------------------------------------
async def read_events(resp: Any, count: int, timeout: float = 10.0
                      ) -> list[tuple[str | None, Any]]:
    """The next ``count`` events with data (priming events included, with data None)
    of an aiohttp response; fewer when the stream ends first."""
    events: list[tuple[str | None, Any]] = []
    event_id: str | None = None
    data: list[str] = []
    async with asyncio.timeout(timeout):
        while len(events) < count:
            raw = await resp.content.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            if line == "":
                if data or event_id is not None:
                    text = "\n".join(data)
                    events.append((event_id, json.loads(text) if text.strip() else None))
                event_id, data = None, []
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
    return events


JSON_AND_SSE = "application/json, text/event-stream"


def http_headers(session_id: str | None = None, **extra: str) -> dict[str, str]:
    """Headers of a legacy Streamable HTTP POST (of a session, when ``session_id``)."""
    h = {"Accept": JSON_AND_SSE, "Content-Type": "application/json"}
    if session_id is not None:
        h["Mcp-Session-Id"] = session_id
        h["MCP-Protocol-Version"] = "2025-11-25"
    h.update(extra)
    return h


async def http_initialize(http: Any, url: str, **extra: str) -> str:
    """Open a legacy Streamable HTTP session with an aiohttp client; its id."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
    async with http.post(url, json=init, headers=http_headers(**extra)) as resp:
        assert resp.status == 200, await resp.text()
        session_id: str = resp.headers["Mcp-Session-Id"]
    async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers=http_headers(session_id, **extra)) as resp:
        assert resp.status == 202, await resp.text()
    return session_id


def modern_headers(method: str, name: str | None = None, **extra: str) -> dict[str, str]:
    """Headers of a modern (2026-07-28) Streamable HTTP POST."""
    h = {"Accept": JSON_AND_SSE, "Content-Type": "application/json",
         "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    h.update(extra)
    return h


# -- the modern era (2026-07-28) ---------------------------------------------------------------
PV = "io.modelcontextprotocol/protocolVersion"
CAPS = "io.modelcontextprotocol/clientCapabilities"
INFO = "io.modelcontextprotocol/clientInfo"
LEVEL = "io.modelcontextprotocol/logLevel"
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
SUB_ID = "io.modelcontextprotocol/subscriptionId"
META = {PV: "2026-07-28", CAPS: {}, INFO: {"name": "modern-tests", "version": "0"}}


def events_upstream(era: str = "legacy", name: str = "events") -> dict[str, Any]:
    return {"command": forked("events_server", "--name", name), "era": era}


def modern(params: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """Request params with the modern ``_meta`` envelope."""
    params = dict(params or {})
    params["_meta"] = {**META, **params.get("_meta", {}), **meta}
    return params


async def start_era(c: McpClient, era: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Open a session of ``era`` ("legacy" initializes, "modern" needs nothing) and
    return what shapes its requests' params: the modern ``_meta``, or nothing."""
    if era == "legacy":
        await c.initialize()
        return lambda params: params
    return modern


async def modern_request(c: McpClient, method: str, params: dict[str, Any] | None = None,
                         **kw: Any) -> dict[str, Any]:
    return await c.request(method, modern(params), **kw)


async def collect(c: McpClient, seconds: float) -> list[dict[str, Any]]:
    """Whatever arrives in the next ``seconds``."""
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(await c.receive(seconds))
    except TimeoutError:
        return seen


def bridged(gw: GatewayProcess, **kwargs: Any) -> Any:
    """The official SDK client (``mcp.Client``) through ``mcpfast connect``."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "mcpfast", "connect", "--unix", gw.unix_path])
    return Client(params, **kwargs)


def sdk_text(result: Any) -> str:
    """The text of an SDK ``CallToolResult``'s first content block."""
    from mcp.types import TextContent

    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


async def answer_sampling(context: Any, params: Any) -> Any:
    """An SDK client's sampling callback: the model's answer is "echo of <prompt>"."""
    from mcp.types import CreateMessageResult, TextContent

    asked = params.messages[0].content
    assert isinstance(asked, TextContent)
    return CreateMessageResult(role="assistant", model="test-model",
                               content=TextContent(type="text", text=f"echo of {asked.text}"))


def run(coro: Any, timeout: float = 60.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="session", autouse=True)
def _zygote() -> Iterator[None]:
    """The SDK test servers and mcpfast, imported once for the whole pass, fork the
    servers and gateways that ``forked`` commands ask for (``servers/zygote.py``). It
    ends with the pass (its input closed); a launcher that finds none starts the server
    itself."""
    zygote = subprocess.Popen([sys.executable, str(ROOT / "tests" / "servers" / "zygote.py"),
                               ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert zygote.stdout is not None and zygote.stdout.readline() == b"ready\n"
    yield
    assert zygote.stdin is not None
    zygote.stdin.close()
    try:
        zygote.wait(10)
    except subprocess.TimeoutExpired:
        zygote.kill()
        zygote.wait()


@pytest.fixture(scope="session", autouse=True)
def _implementation_check() -> None:
    """`make test` runs the suite once compiled and once pure: refuse a compiled run
    that silently fell back to pure Python."""
    import mcpfast_ext

    if os.environ.get("MCPFAST_REQUIRE_EXTENSION") == "1":
        assert mcpfast_ext.IMPLEMENTATION == "compiled", "the compiled extension is not in use"
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        assert mcpfast_ext.IMPLEMENTATION == "pure"


# -- a gateway in this process ----------------------------------------------------------
class InProcessClient:
    """A session of the in-process gateway whose messages land in a list."""

    def __init__(self, gw: Any) -> None:
        from mcpfast.transport.ports import Identity

        self.gw = gw
        self.received: list[dict[str, Any]] = []
        self.session = gw.open_session("unix", "test", self._take, lambda code, why: None,
                                       identity=Identity("uid:1000", uid=1000))
        self.next_id = 0

    def _take(self, data: bytes) -> None:
        self.received.append(json.loads(data))

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        request_id = self.next_id
        self.gw.handle(self.session, json.dumps({"jsonrpc": "2.0", "id": request_id,
                                                 "method": method,
                                                 "params": params}).encode())
        for _ in range(3000):  # 30 s: wide, for a busy machine
            for message in self.received:
                if message.get("id") == request_id:
                    return message
            await asyncio.sleep(0.01)
        raise AssertionError(f"no answer to {method} #{request_id}")

    async def call(self, name: str) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": {"size": 1}})


def in_gateway(config: Path, body: Callable[[Any, InProcessClient], Awaitable[None]]) -> None:
    """Run ``body`` with a gateway built in this process from ``config`` (its upstreams
    started for real) and an initialized session of it."""
    from mcpfast.config import load
    from mcpfast.gateway.gateway import Gateway

    async def main() -> None:
        gw = Gateway(load(str(config)))
        await gw.start_upstreams()
        try:
            client = InProcessClient(gw)
            await client.request("initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}})
            await body(gw, client)
        finally:
            await gw.stop()
    run(main())


Socket = RecordingTransport
"""A TCP connection's transport, for a connection of an in-process gateway: what it
writes is kept."""


class InProcessListener:
    """The TCP listener, as a connection of an in-process gateway reads it."""

    def __init__(self, gw: Any) -> None:
        from mcpfast.transport.streamable import Endpoint

        self.endpoint = Endpoint(gw)
        self.connections: set[Any] = set()


def http_post(message: dict[str, Any], session_id: str = "", **headers: str) -> bytes:
    """A legacy Streamable HTTP POST of ``message``, as bytes on the wire."""
    body = json.dumps(message).encode()
    return ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: application/json, text/event-stream\r\n"
            "Content-Type: application/json\r\n"
            + (f"Mcp-Session-Id: {session_id}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
               if session_id else "")
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def next_response(socket: Socket) -> tuple[str, bytes]:
    """The next response written: its head and body (30 s at most, for a busy machine)."""
    for _ in range(3000):
        if socket.written:
            data = b"".join(socket.written)
            socket.written.clear()
            head, _, body = data.partition(b"\r\n\r\n")
            return head.decode(), body
        await asyncio.sleep(0.01)
    raise AssertionError("no response")


# -- a token issuer ---------------------------------------------------------------------
class Issuer:
    """An OAuth issuer as a test needs one: its own signing keys (RSA, EC P-256 and
    Ed25519), tokens signed with them, and its JWKS served over real HTTP on loopback
    (``serve``), counting the fetches. Keys are added (``rotate``) to test rotation."""

    ISSUER = "https://issuer.test"
    AUDIENCE = "https://gateway.test/mcp"

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        self.private = {
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "ed": ed25519.Ed25519PrivateKey.generate(),
        }
        self.algorithm = {"rsa": "RS256", "ec": "ES256", "ed": "EdDSA"}
        self.published = ["rsa", "ec", "ed"]
        self.fetches = 0
        self._server: Any = None

    def rotate(self, kid: str) -> None:
        """A new RSA key, published under ``kid``."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.private[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.algorithm[kid] = "RS256"
        self.published.append(kid)

    def public_pem(self, kid: str) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.private[kid].public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwks(self) -> dict[str, Any]:
        import jwt

        keys = []
        for kid in self.published:
            public = self.private[kid].public_key()
            algorithm = jwt.get_algorithm_by_name(self.algorithm[kid])
            jwk = json.loads(algorithm.to_jwk(public))
            jwk["kid"] = kid
            keys.append(jwk)
        return {"keys": keys}

    def token(self, sub: str = "alice", kid: str = "rsa", *, lifetime: float = 300.0,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        import jwt

        now = int(time.time())
        payload = {"iss": self.ISSUER, "aud": self.AUDIENCE, "sub": sub, "iat": now,
                   "exp": now + int(lifetime), **claims}
        return jwt.encode({k: v for k, v in payload.items() if v is not None},
                          self.private[kid], algorithm=self.algorithm[kid],
                          headers={"kid": kid, **(headers or {})})

    def serve(self) -> str:
        """Serve the JWKS on loopback (until ``close``); its URL."""
        import http.server
        import threading

        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    made = Issuer()
    yield made
    made.close()


# -- certificates -----------------------------------------------------------------------
class Pki:
    """A CA of its own, and certificates it signs written as PEM files under ``root``:
    ``server(name)`` for 127.0.0.1, ``client(name)`` with that common name."""

    def __init__(self, root: Path) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = self._certificate("mcpfast test CA", self.ca_key.public_key(),
                                         ca=True)
        self.ca_file = self._write("ca.pem", self.ca_cert)

    def _certificate(self, common_name: str, public_key: Any, ca: bool = False,
                     server: bool = False) -> Any:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        issuer = subject if ca else self.ca_cert.subject
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                  critical=True))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    def _write(self, name: str, cert: Any, key: Any = None) -> str:
        from cryptography.hazmat.primitives import serialization

        path = self.root / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (self.root / (name + ".key")).write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        return str(path)

    def issue(self, common_name: str, server: bool) -> tuple[str, str, int]:
        """A new certificate: its file, its key's file and its serial number."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(common_name, key.public_key(), server=server)
        path = self._write(f"{common_name}.pem", cert, key)
        return path, path + ".key", cert.serial_number

    def client_context(self, client: str | None = None) -> Any:
        """An SSL context trusting this CA, with ``client``'s certificate if given."""
        import ssl

        context = ssl.create_default_context(cafile=self.ca_file)
        if client is not None:
            cert, key, _ = self.issue(client, server=False)
            context.load_cert_chain(cert, key)
        return context
