"""``python -m bench.faults``: faults made to every kind of upstream, while a client
calls through the gateway; what the client got, and how soon calls worked again.

For each kind (stdio, websocket, unix, Streamable HTTP in either era, the 2024-11-05
HTTP+SSE transport; all in the legacy era but ``http-modern``, so that each speaks to
its server over one connection, as the client does) one gateway fronts two upstreams of
that kind: ``solo``, one server,
and ``pair``, two servers as the endpoints of one upstream (round robin, with active
health checks). A fault is made to solo's server, or to pair's first endpoint:

  kill    SIGKILL while calls are in flight; the server is started again at once (a
          stdio server is started again by the gateway itself)
  stop    SIGSTOP while calls are in flight (a hang), SIGCONT after the calls' time-out
  close   the server closes its side of every connection while calls are in flight,
          and goes on running (stdio: its stdout; HTTP: every response stream is cut)
  refuse  the server is down (nothing listens; a stdio server exits as it starts) while
          calls are made, then it is back
  flap    killed and started again, three times in a row, while calls are made

Both upstreams are faulted at once, each with a client of its own (WebSocket, to the
gateway) that keeps three callers going, each calling ``whoami`` and ``prompts/get`` (a
safe method, which a balanced upstream retries on another endpoint) in turn (each
waits for its answer 0.3 s at most, so that a hang does not stop it); for kill,
stop and close, four calls of about a second (``progress``) are in the server's hands
when the fault is made (it has reported their first step). Every call must get exactly
one answer, a result or an error: the figures count calls, results, errors, calls
without an answer (lost) and extra answers (duplicated), and time

  failover   (pair) from the fault to the last call sent after it that it failed
             (an error, or an answer held up for over a second by a hung server):
             every call sent later was answered at once by the healthy endpoint
  reconnect  (solo) from the server being back to the first successful call: back is
             when it listens again (kill, refuse, flap), SIGCONT (stop), the cut
             itself (close: the server stays up). A stdio server is brought back by the
             gateway, so its figure starts at the fault and includes the gateway's
             restart backoff and the server's own start (``server_start``).

The servers are the official SDK's (tests/servers/sdk_server.py, carried over sockets by
tests/servers/socket_server.py), run as programs: nothing here imports the tests.

    .venv/bin/python -m bench.faults [--kinds stdio ...] [--faults kill ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import websockets
from websockets.typing import Subprotocol

from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "tests" / "servers"
SDK_SERVER = str(SERVERS / "sdk_server.py")
SOCKET_SERVER = str(SERVERS / "socket_server.py")

KINDS = ("stdio", "websocket", "unix", "http-legacy", "http-modern", "sse")
FAULTS = ("kill", "stop", "close", "refuse", "flap")
TOPOLOGIES = ("solo", "pair")

REQUEST_TIMEOUT = 2.0
RESTART_BACKOFF = 0.5
"""The default: the gateway waits this long before it reconnects or restarts."""
RESTART_BACKOFF_MAX = RESTART_BACKOFF
"""Not doubled (the default doubles it up to 30 s for a server that fails again within
30 s of starting): so every fault here starts from the same backoff, whatever the
faults before it in the same gateway."""
HEALTH_CHECK = {"interval": 0.2, "timeout": 0.5, "unhealthy_threshold": 1,
                "healthy_threshold": 1}
STEPS = 20
"""Progress steps of each call in flight at the fault: about a second."""
IN_FLIGHT = 4
CALLERS = 3
PACE = 0.05
"""Seconds between a caller's answer and its next call."""
PATIENCE = 0.3
"""Seconds a caller waits for an answer before it goes on calling (the call is still
counted): a hung server must not stop the calls that would show where they go."""
HELD_UP = 1.0
"""A call (whoami, prompts/get: milliseconds) answered later than this was caught by
the fault, even if answered well in the end."""
FLAPS = 3
DOWN = 0.5
"""Seconds of calls while nothing serves (refuse)."""
SETTLE = 15.0
"""The most a server or the gateway may take to be ready again (a busy machine)."""
ANSWER_GRACE = REQUEST_TIMEOUT + 0.5 + 3.0
"""The most a call may wait for its answer after the last call was sent: the request
time-out, the gateway's sweep, and room for a busy machine. Later, it is lost."""
INIT = {"protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "bench-faults", "version": "0"}}


# -- what the client saw -------------------------------------------------------------------
@dataclass
class Call:
    id: int
    method: str
    name: str
    sent: float
    answers: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def answer(self) -> dict[str, Any] | None:
        return self.answers[0][1] if self.answers else None

    @property
    def answered_at(self) -> float:
        return self.answers[0][0]

    @property
    def ok(self) -> bool:
        return self.answer is not None and "result" in self.answer

    @property
    def error(self) -> dict[str, Any] | None:
        answer = self.answer
        return answer.get("error") if answer is not None else None

    @property
    def by(self) -> str | None:
        """Which server answered a ``whoami``."""
        if not self.ok or not self.name.endswith("whoami"):
            return None
        assert self.answer is not None
        return str(self.answer["result"]["content"][0]["text"])


class Client:
    """One WebSocket session of the gateway; every answer is kept, with its time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.calls: dict[int, Call] = {}
        self.unknown: list[dict[str, Any]] = []
        """Answers to ids this client never sent."""
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._progressing: dict[int, asyncio.Future[None]] = {}
        """Calls with a progress token (the call's id), until their first progress."""
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Client]:
        async with websockets.connect(url, subprotocols=[Subprotocol("mcp")],
                                      max_size=None) as ws:
            client = cls(ws)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                      "params": INIT}))
            json.loads(await ws.recv())
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            client._reader = asyncio.ensure_future(client._read())
            try:
                yield client
            finally:
                client._reader.cancel()

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                message = json.loads(data)
                if "method" in message:
                    # Progress tells that a call reached its server; the rest are list
                    # changes as upstreams come and go.
                    token = message.get("params", {}).get("progressToken")
                    started = self._progressing.get(token)  # type: ignore[arg-type]
                    if started is not None and not started.done():
                        started.set_result(None)
                    continue
                call = self.calls.get(message.get("id"))  # type: ignore[arg-type]
                if call is None:
                    self.unknown.append(message)
                    continue
                call.answers.append((time.monotonic(), message))
                waiting = self._waiting.pop(call.id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)

    async def send(self, method: str, params: dict[str, Any], name: str = "",
                   progress: bool = False) -> Call:
        """Send a request and return at once; ``progress``: with a progress token."""
        call = Call(next(self._ids), method, name, time.monotonic())
        self.calls[call.id] = call
        loop = asyncio.get_running_loop()
        self._waiting[call.id] = loop.create_future()
        if progress:
            params = {**params, "_meta": {"progressToken": call.id}}
            self._progressing[call.id] = loop.create_future()
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": call.id, "method": method,
                                       "params": params}))
        return call

    async def tool(self, name: str, arguments: dict[str, Any]) -> Call:
        return await self.send("tools/call", {"name": name, "arguments": arguments}, name)

    async def in_progress(self, tool: str, steps: int) -> Call:
        """Call ``tool`` (``progress``: a step each 50 ms) and return once its server
        has reported the first step: the call is then in the server's hands."""
        call = await self.send("tools/call", {"name": tool, "arguments": {"steps": steps}},
                               tool, progress=True)
        try:
            await asyncio.wait_for(self._progressing[call.id], SETTLE)
        except TimeoutError:
            raise FaultError(f"{tool}: no progress within {SETTLE:g} s") from None
        return call

    async def answered(self, call: Call, timeout: float) -> bool:
        waiting = self._waiting.get(call.id)
        if waiting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiting), timeout)
        return bool(call.answers)

    async def settle(self, timeout: float = ANSWER_GRACE) -> None:
        """Wait for every call's answer (those without one by then are lost), and a
        moment more for answers given twice."""
        deadline = time.monotonic() + timeout
        for call in list(self.calls.values()):
            await self.answered(call, max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(0.2)


class Callers:
    """``CALLERS`` tasks calling through one client until stopped: ``whoami`` twice,
    then a safe ``prompts/get``, each caller waiting for its answer (``PATIENCE`` at
    most)."""

    def __init__(self, client: Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._caller(i)) for i in range(CALLERS)]

    async def _caller(self, index: int) -> None:
        for turn in itertools.count(index):
            if self._stop.is_set():
                return
            # Two of three calls are whoami: a period that round robin's two endpoints
            # cannot alias into one method per endpoint.
            if turn % 3 == 2:
                call = await self.client.send("prompts/get", {
                    "name": f"{self.prefix}greet", "arguments": {"name": "Ada"}},
                    f"{self.prefix}greet")
            else:
                call = await self.client.tool(f"{self.prefix}whoami", {})
            await self.client.answered(call, PATIENCE)
            await asyncio.sleep(PACE)

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Keep calling until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise FaultError(f"{what}: not within {timeout:g} s")
            await asyncio.sleep(0.01)

    def successes_after(self, moment: float) -> list[Call]:
        return [c for c in self.client.calls.values() if c.sent >= moment and c.ok]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


class FaultError(AssertionError):
    """The gateway or a server did not do in time what the scenario waits for."""


# -- the servers --------------------------------------------------------------------------
class ServerProcess:
    """A remote kind's server, started by this harness in a process group of its own."""

    def __init__(self, kind: str, name: str, workdir: Path) -> None:
        self.kind = kind
        self.name = name
        self.port = free_port()
        self.path = str(workdir / f"{name}.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def upstream(self) -> dict[str, Any]:
        """The endpoint's table in the gateway's config."""
        return {
            "websocket": {"url": f"ws://127.0.0.1:{self.port}/mcp", "era": "legacy"},
            "unix": {"socket": self.path, "era": "legacy"},
            "http-legacy": {"url": f"http://127.0.0.1:{self.port}/mcp", "era": "legacy"},
            "http-modern": {"url": f"http://127.0.0.1:{self.port}/mcp", "era": "modern"},
            "sse": {"url": f"http://127.0.0.1:{self.port}/sse", "transport": "sse"},
        }[self.kind]

    def start(self) -> None:
        """Start it and wait until it serves (blocking)."""
        sdk = [sys.executable, SDK_SERVER, "--name", self.name]
        if self.kind in ("websocket", "unix"):
            where = ["--ws", str(self.port)] if self.kind == "websocket" else \
                ["--unix", self.path]
            self.proc = subprocess.Popen([sys.executable, SOCKET_SERVER, *where, "--persistent",
                                          "--", *sdk], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            stdout = self.proc.stdout
            assert stdout is not None
            # It prints each handshake's headers too: read past any before "ready", and
            # go on reading so that it never blocks on a full pipe.
            for line in stdout:
                if line.strip() == b"ready":
                    threading.Thread(target=stdout.read, daemon=True).start()
                    return
            raise FaultError(f"{self.name}: socket_server exited before it was ready")
        flag = "--sse" if self.kind == "sse" else "--http"
        self.proc = subprocess.Popen([*sdk, flag, str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SETTLE
        while True:
            if self.proc.poll() is not None:
                raise FaultError(f"{self.name} exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise FaultError(f"{self.name} is not listening after {SETTLE:g} s") \
                        from None
                time.sleep(0.01)

    def signal(self, sig: int, group: bool = True) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait()


class Endpoint:
    """The server behind solo, or behind one of pair's endpoints, as a fault sees it."""

    def __init__(self, rig: Rig, upstream: str, index: int) -> None:
        self.rig = rig
        self.upstream = upstream
        self.index = index

    async def status(self) -> dict[str, Any]:
        upstream = await self.rig.upstream(self.upstream)
        return upstream["endpoints"][self.index] if "endpoints" in upstream else upstream

    async def ready(self) -> bool:
        status = await self.status()
        return bool(status["ready"]) and status.get("healthy", True)

    async def restarted(self, starts: int) -> bool:
        """Ready on a connection (or process) after the ``starts``-th. A stateless
        (modern) HTTP upstream may have nothing to restart: a server back before any
        post found it gone is used on as it is, so ready is back."""
        status = await self.status()
        return bool(status["ready"]) and (status["starts"] > starts
                                          or self.rig.kind == "http-modern")

    # What a fault does to it. Each returns the moment it did it, taken just before the
    # signal (after whatever it had to look up first).
    async def send(self, sig: int) -> float:
        """Signal the server: its whole process group, but SIGUSR1 (which makes it
        close its connections) only the server itself."""
        raise NotImplementedError

    async def down(self) -> float:
        """Kill it, and let nothing serve at its address until ``restart``."""
        raise NotImplementedError

    async def restart(self) -> float | None:
        """Start it again after SIGKILL or ``down``: the moment it was back, or None
        when the gateway starts it itself (stdio)."""
        raise NotImplementedError


class StdioEndpoint(Endpoint):
    """A process the gateway starts: signalled by the pid /status shows. A flag file
    makes the next ones exit as they start (``down``)."""

    def __init__(self, rig: Rig, upstream: str, index: int, flag: Path) -> None:
        super().__init__(rig, upstream, index)
        self.flag = flag

    async def pid(self) -> int:
        pid = (await self.status())["pid"]
        if pid is None:
            raise FaultError(f"{self.upstream}[{self.index}] has no process")
        return int(pid)

    async def send(self, sig: int) -> float:
        pid = await self.pid()  # the gateway starts it in a process group of its own
        moment = time.monotonic()
        if sig == signal.SIGUSR1:
            os.kill(pid, sig)
        else:
            os.killpg(pid, sig)
        return moment

    async def down(self) -> float:
        self.flag.touch()
        return await self.send(signal.SIGKILL)

    async def restart(self) -> float | None:
        if self.flag.exists():
            self.flag.unlink()
            return time.monotonic()
        return None


class RemoteEndpoint(Endpoint):
    def __init__(self, rig: Rig, upstream: str, index: int, server: ServerProcess) -> None:
        super().__init__(rig, upstream, index)
        self.server = server

    async def send(self, sig: int) -> float:
        moment = time.monotonic()
        # socket_server closes its connections itself, the SDK's HTTP server too.
        self.server.signal(sig, group=sig != signal.SIGUSR1)
        return moment

    async def down(self) -> float:
        moment = await self.send(signal.SIGKILL)
        await asyncio.to_thread(self.server.kill)
        return moment

    async def restart(self) -> float | None:
        await asyncio.to_thread(self.server.kill)  # reaps the killed one
        await asyncio.to_thread(self.server.start)
        return time.monotonic()


# -- a gateway and its servers ------------------------------------------------------------
class Rig:
    """A gateway fronting ``solo`` and ``pair`` of one kind, and their servers."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        # Unix socket paths are limited to 108 bytes: a short folder of their own.
        self.sockets = Path(tempfile.mkdtemp(prefix="mcpfast-faults-", dir="/tmp"))
        self.port = free_port()
        self.admin_port = free_port()
        self.servers: list[ServerProcess] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "gateway.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mcp"

    def _endpoint_tables(self) -> dict[str, list[dict[str, Any]]]:
        tables: dict[str, list[dict[str, Any]]] = {}
        for upstream, names in (("solo", ["solo"]), ("pair", ["pair-a", "pair-b"])):
            tables[upstream] = []
            for index, name in enumerate(names):
                if self.kind == "stdio":
                    flag = self.sockets / f"{name}.down"
                    # The flag makes the server exit as it starts (EX_TEMPFAIL): "refuse".
                    tables[upstream].append({"era": "legacy", "command": [
                        "/bin/sh", "-c", 'test -e "$0" && exit 75; exec "$@"', str(flag),
                        sys.executable, SDK_SERVER, "--name", name]})
                    self.endpoints[name] = StdioEndpoint(self, upstream, index, flag)
                    continue
                server = ServerProcess(self.kind, name, self.sockets)
                self.servers.append(server)
                tables[upstream].append(server.upstream)
                self.endpoints[name] = RemoteEndpoint(self, upstream, index, server)
        return tables

    def config(self) -> str:
        tables = self._endpoint_tables()
        common = {"request_timeout": REQUEST_TIMEOUT, "restart_backoff": RESTART_BACKOFF,
                  "restart_backoff_max": RESTART_BACKOFF_MAX, "connect_timeout": 2.0}
        lines = ["[listen]", 'host = "127.0.0.1"', f"port = {self.port}",
                 "[admin]", 'host = "127.0.0.1"', f"port = {self.admin_port}",
                 "[logging]", 'level = "info"',
                 "[upstreams.solo]", *(f"{k} = {toml(v)}" for k, v in
                                       {**tables["solo"][0], **common}.items()),
                 "[upstreams.pair]", f"endpoints = {toml(tables['pair'])}",
                 f"health_check = {toml(HEALTH_CHECK)}",
                 *(f"{k} = {toml(v)}" for k, v in common.items())]
        return "\n".join(lines) + "\n"

    async def start(self) -> Rig:
        config = self.workdir / "mcpfast.toml"
        config.write_text(self.config())
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in self.servers))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mcpfast", "serve", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        await self.settled()
        return self

    def stop(self) -> None:
        """Stop the gateway and the servers (blocking; from any thread or loop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.signal(signal.SIGCONT)
            server.kill()
        shutil.rmtree(self.sockets, ignore_errors=True)

    async def heal(self) -> None:
        """Undo what a fault that went wrong may have left (a server stopped, down or
        refusing), and wait until every endpoint is ready."""
        for endpoint in self.endpoints.values():
            if isinstance(endpoint, StdioEndpoint):
                endpoint.flag.unlink(missing_ok=True)
                with contextlib.suppress(FaultError, ProcessLookupError):
                    await endpoint.send(signal.SIGCONT)
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.start)
            else:
                server.signal(signal.SIGCONT)
        await self.settled()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def upstream(self, name: str) -> dict[str, Any]:
        # A client of its own each time: the rig outlives an event loop (a test's).
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{self.admin_port}/status") as response:
            status = await response.json()
        return next(u for u in status["upstreams"] if u["name"] == name)  # type: ignore[no-any-return]

    async def wait(self, predicate: Callable[[], Awaitable[bool]], what: str,
                   timeout: float = SETTLE) -> float:
        """Poll ``predicate`` until it holds; when it first did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await predicate():
                    return time.monotonic()
            except (aiohttp.ClientError, OSError):
                if self.proc is not None and self.proc.poll() is not None:
                    raise FaultError(f"the gateway exited:\n{self.log()[-3000:]}") from None
            if time.monotonic() > deadline:
                raise FaultError(f"{self.kind}: {what}: not within {timeout:g} s")
            await asyncio.sleep(0.02)

    async def settled(self) -> None:
        """Every endpoint ready and healthy, its process not stopped."""
        async def all_ready() -> bool:
            return all([await e.ready() for e in self.endpoints.values()])
        await self.wait(all_ready, "every endpoint ready", 2 * SETTLE)


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


# -- the faults ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one fault did to one topology's calls."""

    kind: str
    fault: str
    topology: str
    calls: list[Call]
    unknown: list[dict[str, Any]]
    faults: list[float]
    """When each fault was made (several for flap)."""
    back: float | None = None
    """When the server was back (solo)."""
    started: list[Call] = field(default_factory=list)
    """The long calls in the server's hands when the (first) fault was made."""
    server_start: float | None = None
    """stdio: how long the restarted server took from its start to the first success."""

    @property
    def results(self) -> int:
        return sum(1 for c in self.calls if c.ok)

    @property
    def errors(self) -> int:
        return sum(1 for c in self.calls if c.answers and not c.ok)

    @property
    def lost(self) -> list[Call]:
        return [c for c in self.calls if not c.answers]

    @property
    def duplicated(self) -> list[Call]:
        return [c for c in self.calls if len(c.answers) > 1]

    @property
    def in_flight(self) -> list[Call]:
        """The long calls still unanswered when the (first) fault was made."""
        return [c for c in self.started if not c.answers or c.answered_at > self.faults[0]]

    @property
    def failover(self) -> float | None:
        """pair: the longest, over the faults, from a fault to the last call sent after
        it that it caught: answered with an error, or held up (``HELD_UP``: sent to a
        hung server, and answered once it went on), before the next fault (which
        catches the calls in flight then); 0 when it caught only calls sent before it."""
        if self.topology != "pair":
            return None
        longest = 0.0
        for start, end in zip(self.faults, [*self.faults[1:], float("inf")], strict=True):
            caught = [c.sent - start for c in self.calls if c.sent >= start and c.answers
                      and c.answered_at < end
                      and (not c.ok or c.answered_at - c.sent > HELD_UP)]
            longest = max([longest, *caught])
        return longest

    @property
    def reconnect(self) -> float | None:
        """solo: from the server back to the first result of a call sent since (one
        sent before may have been answered before the fault took hold)."""
        if self.topology != "solo" or self.back is None:
            return None
        after = [c.answered_at for c in self.calls if c.ok and c.sent >= self.back]
        return min(after) - self.back if after else None

    def row(self) -> dict[str, Any]:
        failover, reconnect = self.failover, self.reconnect
        return {"kind": self.kind, "fault": self.fault, "topology": self.topology,
                "calls": len(self.calls), "results": self.results, "errors": self.errors,
                "lost": len(self.lost), "duplicated": len(self.duplicated) + len(self.unknown),
                "failover_ms": None if failover is None else round(failover * 1000),
                "reconnect_ms": None if reconnect is None else round(reconnect * 1000),
                "server_start_ms": None if self.server_start is None else
                round(self.server_start * 1000)}


PREFIX = {"solo": "solo__", "pair": "pair__"}
TARGET = {"solo": "solo", "pair": "pair-a"}


async def run_fault(rig: Rig, fault: str, topology: str) -> Outcome:
    """Make ``fault`` to ``topology``'s (first) server while calling it; the rig is
    settled again on return."""
    endpoint = rig.endpoints[TARGET[topology]]
    prefix = PREFIX[topology]
    async with Client.connect(rig.url) as client:
        outcome = Outcome(rig.kind, fault, topology, [], client.unknown, [])
        if fault in ("kill", "stop", "close"):
            outcome.started = list(await asyncio.gather(*(
                client.in_progress(f"{prefix}progress", STEPS) for _ in range(IN_FLIGHT))))
        callers = Callers(client, prefix)
        try:
            await FAULT_SCRIPTS[fault](rig, endpoint, callers, outcome)
        finally:
            await callers.stop()
        await client.settle()
        outcome.calls = list(client.calls.values())
    await rig.settled()
    return outcome


async def _recovered(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome,
                     back: float | None) -> None:
    """Call until calls work again: solo, three successes after ``back`` (the fault's
    moment when None: the gateway brings a stdio server back itself); pair, twenty
    successes from the healthy endpoint after the (last) fault."""
    if outcome.topology == "solo":
        outcome.back = outcome.faults[-1] if back is None else back
        start = outcome.back
        await callers.until(lambda: len(callers.successes_after(start)) >= 3,
                            SETTLE, "three successful calls after the server was back")
        if rig.kind == "stdio" and outcome.fault != "stop":
            outcome.server_start = await _server_start(endpoint, callers, start)
        return
    fault = outcome.faults[-1]
    await callers.until(lambda: len(callers.successes_after(fault)) >= 20, SETTLE,
                        "twenty successful calls after the fault")


async def _server_start(endpoint: Endpoint, callers: Callers, since: float) -> float | None:
    """stdio: from the restarted process's start (/proc) to the first success."""
    assert isinstance(endpoint, StdioEndpoint)
    pid = await endpoint.pid()
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
    started_boot = ticks / os.sysconf("SC_CLK_TCK")
    # /proc counts from boot; the harness's clock is monotonic: convert through now.
    started = time.monotonic() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_boot)
    first = min(c.answered_at for c in callers.successes_after(since))
    return first - started


async def kill(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome) -> None:
    outcome.faults.append(await endpoint.send(signal.SIGKILL))
    back = await endpoint.restart()
    await _recovered(rig, endpoint, callers, outcome, back)


async def stop(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome) -> None:
    outcome.faults.append(await endpoint.send(signal.SIGSTOP))
    try:
        # The calls in flight end by the gateway's time-out.
        for call in outcome.started:
            await callers.client.answered(call, ANSWER_GRACE)
    finally:
        back = await endpoint.send(signal.SIGCONT)
    await _recovered(rig, endpoint, callers, outcome, back)


async def close(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome) -> None:
    outcome.faults.append(await endpoint.send(signal.SIGUSR1))
    await _recovered(rig, endpoint, callers, outcome, outcome.faults[-1])


async def refuse(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome) -> None:
    outcome.faults.append(await endpoint.down())
    down = time.monotonic()
    await callers.until(lambda: time.monotonic() - down > DOWN, SETTLE, "calls while down")
    back = await endpoint.restart()
    await _recovered(rig, endpoint, callers, outcome, back)


async def flap(rig: Rig, endpoint: Endpoint, callers: Callers, outcome: Outcome) -> None:
    back: float | None = None
    for turn in range(FLAPS):
        starts = (await endpoint.status())["starts"]
        outcome.faults.append(await endpoint.send(signal.SIGKILL))
        back = await endpoint.restart()
        if turn + 1 < FLAPS:
            await rig.wait(partial(endpoint.restarted, starts), "the endpoint back")
    await _recovered(rig, endpoint, callers, outcome, back)


FAULT_SCRIPTS: dict[str, Callable[[Rig, Endpoint, Callers, Outcome], Awaitable[None]]] = {
    "kill": kill, "stop": stop, "close": close, "refuse": refuse, "flap": flap}


# -- the runner ---------------------------------------------------------------------------
async def run_matrix(kinds: list[str], faults: list[str], workdir: Path,
                     report: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for kind in kinds:
        rig = Rig(kind, workdir / kind)
        (workdir / kind).mkdir(parents=True, exist_ok=True)
        try:
            await rig.start()
            for fault in faults:
                # The two upstreams are faulted at once: each is its own servers.
                for outcome in await asyncio.gather(*(run_fault(rig, fault, topology)
                                                      for topology in TOPOLOGIES)):
                    outcomes.append(outcome)
                    report(outcome)
        finally:
            rig.stop()
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """A markdown table, a row per kind and fault: one endpoint, then two."""
    lines = ["| kind | fault | 1 endpoint: calls (results + errors) | lost, duplicated | "
             "reconnect ms | 2 endpoints: calls (results + errors) | lost, duplicated | "
             "failover ms |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    rows = {(o.kind, o.fault, o.topology): o.row() for o in outcomes}
    for kind, fault in dict.fromkeys((o.kind, o.fault) for o in outcomes):
        cells = [kind, fault]
        for topology, timed in (("solo", "reconnect_ms"), ("pair", "failover_ms")):
            row = rows.get((kind, fault, topology))
            if row is None:
                cells += ["", "", ""]
                continue
            took = "" if row[timed] is None else str(row[timed])
            if row["server_start_ms"] is not None:
                took += f" ({row['server_start_ms']} the server's start)"
            cells += [f"{row['calls']} ({row['results']} + {row['errors']})",
                      f"{row['lost']}, {row['duplicated']}", took]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--json", type=Path, help="also write every row to this JSON file")
    args = parser.parse_args(argv)

    def report(outcome: Outcome) -> None:
        print(json.dumps(outcome.row()), file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mcpfast-bench-faults-"))
    try:
        outcomes = asyncio.run(run_matrix(args.kinds, args.faults, workdir, report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"`.venv/bin/python -m bench.faults` at {commit or 'an unknown commit'}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}:\n")
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([o.row() for o in outcomes], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
