"""The Streamable HTTP upstream's HTTP client, chosen by measurement: aiohttp's
ClientSession as mcpfast/upstream/streamable.py made and called it, against a minimal raw
client (an asyncio.Protocol per keep-alive connection, httptools for the answers), and
against the client that came of it (mcpfast/upstream/http_client.py). All POST the same
``tools/call`` to the same echo server (bench/echo_server.py ``--http``).

    python -m bench.http_client [--rounds 5] [--duration 3] [--inflight 1 64]
    python -m bench.http_client --profile aiohttp --inflight 64

The figure wanted is the client process's CPU time per request while one or many
requests are in flight over a keep-alive pool, against a server in another process. A
pytest-benchmark callable times one call's wall clock, which here would be mostly the
server's time and the scheduler's; so this is a script that measures windows of seconds
with getrusage. Each client runs in a process of its own for each round, pinned to one
CPU, the echo server to another; clients are interleaved round by round and the median
round is reported.

The clients, each keeping ``--inflight`` calls outstanding (each answer sends the next):

  aiohttp   mcpfast's former use: ``http_client()`` as it was, a task per POST kept in a
            set, ``async with session.post``, the status and content type read, the body
            by ``content.iter_any()`` under the size limit
  raw       a callback per answer, no task or Future per request: what a raw client allows
  raw-task  the raw client behind a task and a Future per POST, as ``_post`` was shaped:
            how much of the difference is the client and how much the task
  mcpfast   mcpfast/upstream/http_client.py as streamable.py uses it: an ``Exchange`` per
            POST with the per-message headers it sends (MCP-Protocol-Version, Mcp-Method,
            Mcp-Name) checked and added to the precomputed head, the body collected
            under the size limit, the answer on a callback

The raw client is the least a fair prototype needs: Content-Length bodies, keep-alive
(closed when the server says so), a pool capped at ``max_connections`` with a queue
behind it. The production one (``mcpfast``) adds chunked and close-delimited bodies, SSE
streaming, TLS, time-outs, idle expiry, header checks, the stale keep-alive retry and
failing what is queued when connecting fails: the difference between ``raw`` and
``mcpfast`` is what those cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import resource
import ssl
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import httptools
import msgspec
import uvloop
from msgspec import UNSET

from mcpfast.config import UpstreamConfig
from mcpfast.upstream.http_client import Exchange, HttpClient, HttpClientError, Response

from . import procfs
from .loadgen import REQUEST_HEAD, REQUEST_TAIL
from .targets import ECHO_SERVER, read_json_line, stop_process

CLIENTS = ("aiohttp", "raw", "raw-task", "mcpfast")
PROTOCOL_VERSION = "2025-06-18"
START_TIMEOUT = 30.0
DRAIN_TIMEOUT = 10.0

Closer = Callable[[], Coroutine[Any, Any, None]]
"""What a driver returns: closes its client."""
Answered = Callable[[int, bytes, bytes], None]
"""Called with an answer's status, content type and body (status 0: the connection was
lost before the answer)."""


class _Id(msgspec.Struct, gc=False):
    id: Any = UNSET


_answer_id = msgspec.json.Decoder(_Id)


def request_body(request_id: int) -> bytes:
    return b"%b%d%b" % (REQUEST_HEAD, request_id, REQUEST_TAIL)


def modern_headers() -> dict[str, str]:
    """What ``StreamableHttpUpstream._post`` sends with a modern ``tools/call``."""
    headers = {"MCP-Protocol-Version": PROTOCOL_VERSION, "Mcp-Method": "tools/call",
               "Mcp-Name": "echo"}
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "application/json, text/event-stream"
    return headers


# -- the raw client -------------------------------------------------------------------------
class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one POST outstanding. httptools
    (llhttp) calls back per header, for the body and at the end; nothing else is parsed
    in Python."""

    __slots__ = ("answered", "body", "content_type", "limit", "parser", "pool", "transport")

    def __init__(self, pool: RawPool) -> None:
        self.pool = pool
        self.limit = pool.limit_bytes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.content_type = b""
        self.body = b""
        self.answered: Answered | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, answered: Answered) -> None:
        self.answered = answered
        self.transport.write(request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, ValueError):
            self.transport.close()  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 12 and name.lower() == b"content-type":
            self.content_type = value.partition(b";")[0].strip().lower()

    def on_body(self, body: bytes) -> None:
        body = body if not self.body else self.body + body
        if len(body) > self.limit:
            raise ValueError(f"a response over {self.limit} bytes")
        self.body = body

    def on_message_complete(self) -> None:
        answered, body, content_type = self.answered, self.body, self.content_type
        self.answered = None
        self.body = self.content_type = b""
        # Back in the pool before the callback, so a call it makes reuses this connection.
        self.pool.release(self, self.parser.should_keep_alive())
        if answered is not None:
            answered(self.parser.get_status_code(), content_type, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        answered, self.answered = self.answered, None
        if answered is not None:
            answered(0, b"", b"")


class RawPool:
    """Keep-alive connections to one server, at most ``limit``; a POST that finds none
    idle and the pool full waits in ``waiting`` for the next to be released."""

    def __init__(self, host: str, port: int, path: str, limit: int, limit_bytes: int,
                 headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "User-Agent: mcpfast\r\n"
                     + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                     ).encode("latin-1")
        """The request up to the headers that change with each message."""
        self.idle: list[RawConnection] = []
        self.open = 0
        self.waiting: deque[tuple[bytes, Answered]] = deque()
        self.connecting: set[asyncio.Task[None]] = set()

    def post(self, method: str, name: str, body: bytes, answered: Answered) -> None:
        request = b"%bMcp-Method: %b\r\nMcp-Name: %b\r\nContent-Length: %d\r\n\r\n%b" % (
            self.head, method.encode(), name.encode(), len(body), body)
        if self.idle:
            self.idle.pop().send(request, answered)
            return
        self.waiting.append((request, answered))
        if self.open < self.limit:
            self.open += 1
            task = asyncio.ensure_future(self._connect())
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: RawConnection(self),
                                                         self.host, self.port)
        except OSError:
            self.open -= 1
            if self.waiting:
                self.waiting.popleft()[1](0, b"", b"")
            return
        self.release(connection, True)

    def release(self, connection: RawConnection, keep_alive: bool) -> None:
        if not keep_alive:
            connection.transport.close()  # type: ignore[union-attr]
            return
        if self.waiting:
            request, answered = self.waiting.popleft()
            connection.send(request, answered)
        else:
            self.idle.append(connection)

    def lost(self, connection: RawConnection) -> None:
        self.open -= 1
        if connection in self.idle:
            self.idle.remove(connection)

    async def close(self) -> None:
        for connection in self.idle:
            connection.transport.close()  # type: ignore[union-attr]
        self.idle.clear()


# -- the load: calls kept in flight -----------------------------------------------------------
class Load:
    """Keeps ``inflight`` calls outstanding through ``send``; ``answer`` takes each
    answer, checks it is the call's JSON response, and sends the next call."""

    def __init__(self, inflight: int) -> None:
        self.inflight = inflight
        self.send: Callable[[int], None] = lambda request_id: None
        self.next_id = 1
        self.answered = 0
        self.errors = 0
        self.outstanding = 0
        self.running = True
        self.drained: asyncio.Future[None] | None = None

    def start(self) -> None:
        for _ in range(self.inflight):
            self.call()

    def call(self) -> None:
        request_id = self.next_id
        self.next_id += 1
        self.outstanding += 1
        self.send(request_id)

    def answer(self, request_id: int, status: int, content_type: str | bytes,
               body: bytes) -> None:
        self.outstanding -= 1
        self.answered += 1
        try:
            answered = _answer_id.decode(body).id
        except msgspec.DecodeError:
            answered = UNSET
        if status != 200 or answered != request_id or not (
                content_type == "application/json" or content_type == b"application/json"):
            self.errors += 1
        if self.running:
            self.call()
        elif not self.outstanding and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def stop(self) -> None:
        self.running = False
        if self.outstanding:
            self.drained = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.drained, DRAIN_TIMEOUT)


def spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    """A task per POST, kept until done (``StreamableHttpUpstream.post``)."""
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def http_client(config: UpstreamConfig) -> aiohttp.ClientSession:
    """The aiohttp client mcpfast/upstream/streamable.py made before its own (kept here to
    measure against): a keep-alive pool of ``max_connections``, the config's headers."""
    tls: ssl.SSLContext | bool = True
    if config.ca_file:
        tls = ssl.create_default_context(cafile=config.ca_file)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.max_connections, ssl=tls),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout,
                                      connect=config.connect_timeout),
        headers=config.headers)


async def drive_aiohttp(load: Load, url: str, config: UpstreamConfig) -> Closer:
    http = http_client(config)
    limit = config.max_message_bytes
    tasks: set[asyncio.Task[None]] = set()

    async def post(request_id: int) -> None:
        headers = modern_headers()
        async with http.post(url, data=request_body(request_id), headers=headers) as response:
            status = response.status
            kind = response.content_type
            if (response.content_length or 0) > limit:
                raise ValueError(f"a response over {limit} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise ValueError(f"a response over {limit} bytes")
                chunks.append(chunk)
        load.answer(request_id, status, kind, b"".join(chunks))

    load.send = lambda request_id: spawn(tasks, post(request_id))
    return http.close


def _raw_pool(url: str, config: UpstreamConfig) -> RawPool:
    host, _, rest = url.removeprefix("http://").partition(":")
    port, _, path = rest.partition("/")
    return RawPool(host, int(port), "/" + path, config.max_connections,
                   config.max_message_bytes,
                   {"MCP-Protocol-Version": PROTOCOL_VERSION,
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream"})


async def drive_raw(load: Load, url: str, config: UpstreamConfig) -> Closer:
    pool = _raw_pool(url, config)

    def send(request_id: int) -> None:
        pool.post("tools/call", "echo", request_body(request_id),
                  lambda status, kind, body: load.answer(request_id, status, kind, body))

    load.send = send
    return pool.close


async def drive_raw_task(load: Load, url: str, config: UpstreamConfig) -> Closer:
    pool = _raw_pool(url, config)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def post(request_id: int) -> None:
        answer: asyncio.Future[tuple[int, bytes, bytes]] = loop.create_future()
        pool.post("tools/call", "echo", request_body(request_id),
                  lambda *answered: answer.set_result(answered))
        status, kind, body = await answer
        load.answer(request_id, status, kind, body)

    load.send = lambda request_id: spawn(tasks, post(request_id))
    return pool.close


class _Answer(Exchange):
    """One POST of the ``mcpfast`` client, as streamable.py's ``_Post`` reads it."""

    __slots__ = ("kind", "load", "request_id", "status")

    def __init__(self, load: Load, request_id: int) -> None:
        super().__init__()
        self.load = load
        self.request_id = request_id
        self.status = 0
        self.kind = ""

    def response_received(self, response: Response) -> bool:
        self.status = response.status
        self.kind = response.content_type
        return False

    def response_complete(self, body: bytes) -> None:
        self.load.answer(self.request_id, self.status, self.kind, body)

    def request_failed(self, error: HttpClientError) -> None:
        self.load.answer(self.request_id, 0, b"", b"")


async def drive_mcpfast(load: Load, url: str, config: UpstreamConfig) -> Closer:
    client = HttpClient(url, headers=config.headers, max_connections=config.max_connections,
                        connect_timeout=config.connect_timeout,
                        max_body_bytes=config.max_message_bytes)
    head = client.head("POST", accept="application/json, text/event-stream",
                       content_type="application/json")

    def send(request_id: int) -> None:
        client.send(_Answer(load, request_id), head,
                    [("MCP-Protocol-Version", PROTOCOL_VERSION), ("Mcp-Method", "tools/call"),
                     ("Mcp-Name", "echo")], request_body(request_id))

    async def close() -> None:
        client.close()

    load.send = send
    return close


DRIVERS = {"aiohttp": drive_aiohttp, "raw": drive_raw, "raw-task": drive_raw_task,
           "mcpfast": drive_mcpfast}


# -- one measurement, in a process of its own -------------------------------------------------
def _snapshot(load: Load, server_pid: int) -> tuple[float, float, float, int, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (time.perf_counter(), usage.ru_utime, usage.ru_stime, load.answered,
            procfs.cpu_seconds(server_pid))


def _sockets_open() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


async def measure(client: str, inflight: int, port: int, server_pid: int, warmup: float,
                  duration: float, profile: cProfile.Profile | None) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/mcp"
    config = UpstreamConfig(url=url)
    load = Load(inflight)
    close = await DRIVERS[client](load, url, config)
    load.start()
    await asyncio.sleep(warmup)
    if profile is not None:
        profile.enable()
    start = _snapshot(load, server_pid)
    await asyncio.sleep(duration)
    end = _snapshot(load, server_pid)
    if profile is not None:
        profile.disable()
    sockets = _sockets_open()
    await load.stop()
    await close()
    wall, user, system, requests, server = (b - a for a, b in zip(start, end, strict=True))
    requests = int(requests)
    return {
        "client": client, "inflight": inflight, "requests": requests,
        "errors": load.errors, "sockets": sockets,
        "rps": requests / wall,
        "cpu_us": (user + system) / requests * 1e6,
        "user_us": user / requests * 1e6,
        "sys_us": system / requests * 1e6,
        "client_cpu": (user + system) / wall,
        "server_cpu": server / wall,
    }


def run_child(client: str, inflight: int, port: int, server_pid: int, warmup: float,
              duration: float, cpu: int | None, profile: bool) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    profiler = cProfile.Profile() if profile else None
    result = uvloop.run(measure(client, inflight, port, server_pid, warmup, duration,
                                profiler))
    if profiler is not None:
        result["profile"] = profile_summary(profiler, result["requests"])
    sys.stdout.write(json.dumps(result) + "\n")


# -- the profile ------------------------------------------------------------------------------
def _part(filename: str, name: str) -> str:
    if filename == "~":
        for part in ("uvloop", "msgspec", "httptools", "multidict", "yarl", "aiohttp",
                     "propcache"):
            if part in name:
                return part
        return "builtins"
    for part in ("aiohttp", "yarl", "multidict", "propcache", "aiohappyeyeballs"):
        if f"/{part}/" in filename:
            return part
    if "/asyncio/" in filename:
        return "asyncio"
    if filename.endswith("mcpfast/upstream/http_client.py"):
        return "mcpfast's client"
    if filename.endswith("http_client.py"):
        return "this driver"
    return "other"


AIOHTTP_PHASES: dict[str, list[tuple[str, str, int]]] = {
    "build the request": [("aiohttp/client_reqrep.py", "__init__", 1041),
                          ("aiohttp/client.py", "_prepare_headers", 0),
                          ("aiohttp/client.py", "post", 0),
                          ("aiohttp/cookiejar.py", "filter_cookies", 0)],
    "take a pooled connection": [("aiohttp/connector.py", "connect", 0)],
    "write it (ClientRequest.send)": [("aiohttp/client_reqrep.py", "send", 0)],
    "parse the answer (data_received)": [("aiohttp/client_proto.py", "data_received", 0)],
    "wait for the head (ClientResponse.start)": [("aiohttp/client_reqrep.py", "start", 0)],
    "read the body (iter_any)": [("aiohttp/streams.py", "__anext__", 0)],
    "release (__aexit__)": [("aiohttp/client.py", "__aexit__", 0)],
}
"""Steps of one aiohttp POST, each the cumulative time of functions that do not call
one another (a coroutine's time counts only while it runs, not while it waits); a line
of 0 matches the name at any line."""


def profile_summary(profiler: cProfile.Profile, requests: int) -> dict[str, Any]:
    """Where the time went: each package's own time, aiohttp's steps, and the 15
    costliest functions, in microseconds a request (inflated by cProfile's cost per
    call, more for Python code than for compiled)."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    phases: dict[str, float] = {}
    functions = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.items():
        part = _part(filename, name)
        parts[part] = parts.get(part, 0.0) + own
        for phase, members in AIOHTTP_PHASES.items():
            if any(filename.endswith(path) and name == function and at in (0, line)
                   for path, function, at in members):
                phases[phase] = phases.get(phase, 0.0) + cumulative
        where = f"{filename.rpartition('site-packages/')[2]}:{line}" if filename != "~" else ""
        functions.append((own, cumulative, calls, f"{name} {where}".strip(), part))
    total = sum(parts.values())
    functions.sort(reverse=True)
    return {
        "total_us": total / requests * 1e6,
        "parts": {part: own / requests * 1e6 for part, own in
                  sorted(parts.items(), key=lambda item: -item[1])},
        "phases": {phase: phases.get(phase, 0.0) / requests * 1e6
                   for phase in AIOHTTP_PHASES},
        "top": [{"function": name, "own_us": own / requests * 1e6,
                 "cumulative_us": cumulative / requests * 1e6, "calls": calls / requests}
                for own, cumulative, calls, name, _ in functions[:15]],
    }


# -- the comparison ---------------------------------------------------------------------------
def cpus() -> tuple[int, int] | None:
    """The client's CPU and the server's: the first and the last this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[-1]) if len(allowed) > 1 else None


def start_server(cpu: int | None) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ECHO_SERVER), "--http", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
        preexec_fn=None if cpu is None else lambda: os.sched_setaffinity(0, {cpu}))
    assert proc.stdout is not None
    ready = read_json_line(proc.stdout, START_TIMEOUT)
    if not ready or ready.get("ready") != "http":
        stop_process(proc)
        raise RuntimeError(f"the echo server did not start: {ready}")
    return proc, int(ready["port"])


def one_round(client: str, inflight: int, port: int, server_pid: int, args: Any,
              cpu: int | None, profile: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.http_client", "--child", client, str(inflight),
            str(port), str(server_pid), "--warmup", str(args.warmup),
            "--duration", str(args.duration)]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    if profile:
        argv.append("--profiled")
    done = subprocess.run(argv, stdout=subprocess.PIPE, check=True,
                          timeout=args.warmup + args.duration + 60)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def table(results: dict[tuple[str, int], list[dict[str, Any]]]) -> list[str]:
    lines = ["| client | in flight | CPU µs/request (user + sys) | min to max | requests/s "
             "| client CPU | server CPU | sockets | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (client, inflight), rounds in results.items():
        cpu = [r["cpu_us"] for r in rounds]
        middle = sorted(rounds, key=lambda r: r["cpu_us"])[len(rounds) // 2]
        lines.append(
            f"| {client} | {inflight} | {statistics.median(cpu):.1f} "
            f"({middle['user_us']:.1f} + {middle['sys_us']:.1f}) "
            f"| {min(cpu):.1f} to {max(cpu):.1f} "
            f"| {statistics.median(r['rps'] for r in rounds):,.0f} "
            f"| {statistics.median(r['client_cpu'] for r in rounds):.0%} "
            f"| {statistics.median(r['server_cpu'] for r in rounds):.0%} "
            f"| {middle['sockets']} | {sum(r['errors'] for r in rounds)} |")
    return lines


def print_profile(result: dict[str, Any]) -> None:
    summary = result["profile"]
    print(f"\n{result['client']}, {result['inflight']} in flight, under cProfile: "
          f"{summary['total_us']:.1f} µs a request profiled "
          f"({result['cpu_us']:.1f} µs CPU)")
    print("own time by package (µs/request): " + ", ".join(
        f"{part} {us:.1f}" for part, us in summary["parts"].items()))
    if any(summary["phases"].values()):
        print("aiohttp's steps (cumulative µs/request): " + ", ".join(
            f"{phase} {us:.1f}" for phase, us in summary["phases"].items()))
    print("| function | own µs | cumulative µs | calls/request |\n|---|---:|---:|---:|")
    for row in summary["top"]:
        print(f"| {row['function']} | {row['own_us']:.2f} | {row['cumulative_us']:.2f} "
              f"| {row['calls']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_client",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--inflight", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--profile", choices=CLIENTS,
                        help="instead: one round of this client under cProfile")
    parser.add_argument("--child", nargs=4, metavar=("CLIENT", "INFLIGHT", "PORT", "PID"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        client, inflight, port, pid = args.child
        run_child(client, int(inflight), int(port), int(pid), args.warmup, args.duration,
                  args.cpu, args.profiled)
        return

    pinned = cpus()
    client_cpu, server_cpu = pinned if pinned else (None, None)
    server, port = start_server(server_cpu)
    try:
        print(f"client on CPU {client_cpu}, echo server on CPU {server_cpu}; "
              f"{args.warmup:g} s warm-up, {args.duration:g} s measured", file=sys.stderr)
        if args.profile:
            for inflight in args.inflight:
                print_profile(one_round(args.profile, inflight, port, server.pid, args,
                                        client_cpu, profile=True))
            return
        results: dict[tuple[str, int], list[dict[str, Any]]] = {
            (client, inflight): [] for inflight in args.inflight for client in args.clients}
        for number in range(args.rounds):
            for inflight in args.inflight:
                for client in args.clients:
                    result = one_round(client, inflight, port, server.pid, args, client_cpu)
                    results[client, inflight].append(result)
                    print(f"round {number + 1}: {client} x{inflight}: "
                          f"{result['cpu_us']:.1f} µs, {result['rps']:,.0f}/s",
                          file=sys.stderr)
        print("\n".join(table(results)))
    finally:
        stop_process(server)


if __name__ == "__main__":
    main()
