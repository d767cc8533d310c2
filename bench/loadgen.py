"""The load generator: MCP sessions that keep ``tools/call`` requests in flight.

It runs in its own process (``python bench/loadgen.py ...``) and reports on stdout, one
JSON object a line:

  {"event": "connected", ...}      every session is open and initialized
  {"event": "measure_start"}       warm-up over: the measured window starts now
  {"event": "measure_end"}         the window is over (the orchestrator samples /proc
                                   for the proxy's CPU time at these two events)
  {"event": "holding", ...}        with --hold: the sessions are open and idle; a line on
                                   stdin (or EOF, or --hold-timeout) releases them
  {"event": "result", ...}         the figures; always the last line

Each session sends ``initialize`` and ``notifications/initialized``, then keeps
``--inflight`` calls outstanding: every reply immediately sends the next call. The
request bytes are encoded once; only the id is spliced in. There is no Future per call:
replies arrive in a protocol callback that records ``perf_counter_ns() - sent`` and sends
again. WebSocket goes through picows (compiled, client frames masked as the RFC
requires); the unix socket is a plain asyncio protocol with newline-delimited JSON.

Streamable HTTP (``http://``) has no pipelining, so a session there is one MCP session
id shared by ``--inflight`` keep-alive connections, each with one POST outstanding: the
first connection initializes (and reads ``Mcp-Session-Id`` when the server issues one),
then the rest open. Requests are pre-encoded heads plus the spliced body; httptools
frames the responses.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import resource
import sys
import time
import urllib.parse
from array import array
from collections.abc import Callable
from functools import cache, partial
from typing import Any

import httptools
import msgspec
import uvloop
from msgspec import UNSET, Raw, UnsetType

ARGUMENT_TEXT = "mcpfast benchmark payload " * 8
REQUEST_HEAD = b'{"jsonrpc":"2.0","id":'
REQUEST_TAIL = msgspec.json.encode({
    "method": "tools/call",
    "params": {"name": "echo", "arguments": {"text": ARGUMENT_TEXT}},
}).replace(b"{", b",", 1)
INITIALIZE = msgspec.json.encode({
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "mcpfast-bench-loadgen", "version": "1"}},
})
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


class Reply(msgspec.Struct, gc=False):
    id: int | str | None = None
    error: Raw | UnsetType = UNSET


_reply = msgspec.json.Decoder(Reply)


class Recorder:
    """What every session of the run shares: the phase flags and the figures."""

    __slots__ = (
        "closing",
        "disconnects",
        "errors",
        "first_error",
        "latencies",
        "lost",
        "recording",
        "stopping",
    )

    def __init__(self) -> None:
        self.recording = False
        self.stopping = False
        self.closing = False
        self.latencies = array("q")
        self.errors = 0
        self.first_error = ""
        self.disconnects = 0
        self.lost = 0

    def error(self, message: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = message[:300]


class CallLoop:
    """One session's calls, whatever carries them; ``send`` writes one whole message.

    Ids are ``first_id + id_step``, ``first_id + 2 * id_step``, ...: the HTTP connections
    of one session each run a loop of their own, and interleaved ids keep them unique
    within the session without sharing a counter. Id 0 is ``initialize``'s."""

    __slots__ = ("id_step", "initialized", "next_id", "recorder", "send", "sent", "tail",
                 "terminator")

    def __init__(self, recorder: Recorder, send: Callable[[bytes], Any],
                 terminator: bytes, first_id: int = 0, id_step: int = 1) -> None:
        self.recorder = recorder
        self.send = send
        self.terminator = terminator
        self.tail = REQUEST_TAIL + terminator
        self.sent: dict[int, int] = {}
        self.next_id = first_id
        self.id_step = id_step
        self.initialized: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def initialize(self) -> asyncio.Future[None]:
        self.send(INITIALIZE + self.terminator)
        return self.initialized

    def initialized_notification(self) -> None:
        self.send(INITIALIZED + self.terminator)

    def start(self, inflight: int) -> None:
        for _ in range(inflight):
            self.call()

    def call(self) -> None:
        self.next_id = request_id = self.next_id + self.id_step
        self.sent[request_id] = time.perf_counter_ns()
        self.send(b"%b%d%b" % (REQUEST_HEAD, request_id, self.tail))

    def on_message(self, data: bytes | memoryview) -> None:
        try:
            reply = _reply.decode(data)
        except msgspec.DecodeError:
            self.recorder.error(f"undecodable message: {bytes(data)[:200]!r}")
            return
        sent = self.sent.pop(reply.id, None)  # type: ignore[arg-type]
        if sent is None:
            if reply.id == 0 and not self.initialized.done():
                if reply.error is not UNSET:
                    self.initialized.set_exception(RuntimeError(
                        f"initialize failed: {bytes(reply.error).decode()}"))
                else:
                    self.initialized.set_result(None)
            return  # a notification, or a server request the benchmark does not make
        recorder = self.recorder
        if recorder.recording:
            recorder.latencies.append(time.perf_counter_ns() - sent)
        if reply.error is not UNSET:
            recorder.error(bytes(reply.error).decode("utf-8", "replace"))
        if not recorder.stopping:
            self.call()

    def on_closed(self) -> None:
        recorder = self.recorder
        if not recorder.closing:
            recorder.disconnects += 1
            recorder.lost += len(self.sent)
        self.sent.clear()
        if not self.initialized.done():
            self.initialized.set_exception(ConnectionError("closed before initialize"))


class UnixSession(asyncio.Protocol):
    """Newline-delimited JSON over a unix socket."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.calls: CallLoop | None = None
        self.transport: asyncio.Transport | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.calls = CallLoop(self.recorder, transport.write, b"\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        lines = data.split(b"\n")
        self.tail = lines.pop()
        on_message = self.calls.on_message  # type: ignore[union-attr]
        for line in lines:
            on_message(line)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.calls is not None:
            self.calls.on_closed()

    def start(self, inflight: int) -> None:
        self.calls.start(inflight)  # type: ignore[union-attr]

    def unanswered(self) -> int:
        return len(self.calls.sent)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one POST outstanding.

    ``head`` is the request up to the Content-Length value; a call writes it, the length
    and the body in one write. httptools (llhttp, compiled) frames the responses: measured
    here it costs less per response than slicing heads in Python, and chunked bodies
    come for free. The hot parser calls back twice per response (body, complete) and
    never per header; the handshake's parser also collects headers (``HeaderCapture``)."""

    def __init__(self, recorder: Recorder, head: bytes, first_id: int, id_step: int) -> None:
        self.recorder = recorder
        self.head = head
        self.calls = CallLoop(recorder, self.post, b"", first_id, id_step)
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body = b""
        self.accepted: asyncio.Future[None] | None = None

    def capture_headers(self) -> HeaderCapture:
        capture = HeaderCapture(self)
        self.parser = httptools.HttpResponseParser(capture)
        return capture

    def stop_capturing(self) -> None:
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def post(self, body: bytes) -> None:
        self.transport.write(b"%b%d\r\n\r\n%b" % (self.head, len(body), body))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.recorder.error(f"unparsable HTTP response: {exc}: {data[:200]!r}")
            self.transport.close()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.body = body if not self.body else self.body + body

    def on_message_complete(self) -> None:
        body = self.body
        self.body = b""
        status = self.parser.get_status_code()
        if status == 200:
            self.calls.on_message(body)
        elif status == 202:
            if self.accepted is not None and not self.accepted.done():
                self.accepted.set_result(None)
        else:
            # The call stays outstanding, so it also shows as unanswered after the drain.
            failure = f"HTTP {status}: {body[:300].decode('utf-8', 'replace')}"
            calls = self.calls
            waiting = self.accepted if calls.initialized.done() else calls.initialized
            if waiting is not None and not waiting.done():
                waiting.set_exception(RuntimeError(failure))
            else:
                self.recorder.error(failure)

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.on_closed()
        if self.accepted is not None and not self.accepted.done():
            self.accepted.set_exception(ConnectionError("closed before the 202"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HeaderCapture:
    """Response callbacks for the handshake: the connection's, plus the last response's
    headers and body."""

    def __init__(self, connection: HttpConnection) -> None:
        self.connection = connection
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    def on_message_begin(self) -> None:
        self.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.connection.on_body(body)

    def on_message_complete(self) -> None:
        self.body = self.connection.body
        self.connection.on_message_complete()


class HttpSession:
    """One MCP session over Streamable HTTP: its keep-alive connections, one call each."""

    def __init__(self, connections: list[HttpConnection]) -> None:
        self.connections = connections

    def start(self, inflight: int) -> None:
        for connection in self.connections:
            connection.calls.start(1)

    def unanswered(self) -> int:
        return sum(len(c.calls.sent) for c in self.connections)

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


class InitializeResult(msgspec.Struct):
    protocolVersion: str = "2025-06-18"  # noqa: N815 - the wire name


class InitializeReply(msgspec.Struct):
    result: InitializeResult = msgspec.field(default_factory=InitializeResult)


async def open_http_session(target: str, recorder: Recorder, timeout: float,
                            inflight: int, headers: dict[str, str]) -> HttpSession:
    """Initialize on one connection, then open the session's other ``inflight - 1``."""
    loop = asyncio.get_running_loop()
    url = urllib.parse.urlsplit(target)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    common = (f"POST {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\n"
              "Accept: application/json, text/event-stream\r\n"
              "Content-Type: application/json\r\n"
              + "".join(f"{name}: {value}\r\n" for name, value in headers.items()))
    connections: list[HttpConnection] = []

    async def connect(index: int, head: bytes) -> HttpConnection:
        _, connection = await asyncio.wait_for(loop.create_connection(
            lambda: HttpConnection(recorder, head, index, inflight), host, port), timeout)
        connections.append(connection)
        if index:  # the session is already initialized, on the first connection
            connection.calls.initialized.set_result(None)
        return connection

    try:
        first = await connect(0, f"{common}Content-Length: ".encode())
        capture = first.capture_headers()
        await asyncio.wait_for(first.calls.initialize(), timeout)
        version = msgspec.json.decode(capture.body,
                                      type=InitializeReply).result.protocolVersion
        session_id = capture.headers.get(b"mcp-session-id", b"").strip().decode("latin-1")
        session_header = f"Mcp-Session-Id: {session_id}\r\n" if session_id else ""
        first.head = (f"{common}{session_header}MCP-Protocol-Version: {version}\r\n"
                      "Content-Length: ").encode()
        first.accepted = loop.create_future()
        first.calls.initialized_notification()
        await asyncio.wait_for(first.accepted, timeout)
        first.stop_capturing()
        await asyncio.gather(*(connect(index, first.head) for index in range(1, inflight)))
    except BaseException:
        for connection in connections:
            connection.close()
        raise
    return HttpSession(connections)


@cache
def _websocket_session_class() -> type:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport

    text = WSMsgType.TEXT
    close = WSMsgType.CLOSE

    class WebSocketSession(WSListener):  # type: ignore[misc]
        """One picows connection; frames are handed over as views, valid in the callback
        only, which is all ``CallLoop.on_message`` needs."""

        def __init__(self, recorder: Recorder) -> None:
            self.recorder = recorder
            self.calls: CallLoop | None = None
            self.transport: WSTransport | None = None

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            self.calls = CallLoop(self.recorder, partial(transport.send, text), b"")

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind is text:
                self.calls.on_message(frame.get_payload_as_memoryview())  # type: ignore[union-attr]
            elif kind is close:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            if self.calls is not None:
                self.calls.on_closed()

        def start(self, inflight: int) -> None:
            self.calls.start(inflight)  # type: ignore[union-attr]

        def unanswered(self) -> int:
            return len(self.calls.sent)  # type: ignore[union-attr]

        def close(self) -> None:
            if self.transport is not None:
                self.transport.disconnect(graceful=True)

    return WebSocketSession


async def open_session(target: str, recorder: Recorder, timeout: float,
                       inflight: int, headers: dict[str, str]) -> Any:
    """Connect and initialize one session; returns its transport-side object.
    ``headers`` go with each HTTP request and the WebSocket upgrade (credentials)."""
    loop = asyncio.get_running_loop()
    session: Any
    if target.startswith("http://"):
        return await open_http_session(target, recorder, timeout, inflight, headers)
    if target.startswith("unix:"):
        _, session = await asyncio.wait_for(loop.create_unix_connection(
            lambda: UnixSession(recorder), target[5:]), timeout)
    else:
        from picows import ws_connect
        session_class = _websocket_session_class()
        _, session = await ws_connect(
            lambda: session_class(recorder), target,
            extra_headers={"Sec-WebSocket-Protocol": "mcp", **headers},
            websocket_handshake_timeout=timeout, read_buffer_init_size=4096)
        if session is None:  # picows drops the listener of a connection already closed
            raise ConnectionError("the connection closed right after the WebSocket handshake")
    try:
        await asyncio.wait_for(session.calls.initialize(), timeout)
    except BaseException:
        session.close()
        raise
    session.calls.initialized_notification()
    return session


async def open_sessions(target: str, count: int, concurrency: int, timeout: float,
                        recorder: Recorder, inflight: int, headers: dict[str, str]
                        ) -> tuple[list[Any], int, str]:
    """Open ``count`` sessions, at most ``concurrency`` handshakes at a time."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one() -> Any:
        async with gate:
            try:
                return await open_session(target, recorder, timeout, inflight, headers)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(f"{type(exc).__name__}: {exc}")
                return None

    results = await asyncio.gather(*(one() for _ in range(count)))
    return [s for s in results if s is not None], len(failures), failures[0] if failures else ""


def raise_nofile_limit(wanted: int) -> tuple[int, str]:
    """Lift the soft open-files limit toward ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            return soft, f"could not raise RLIMIT_NOFILE to {target}: {exc}"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    note = "" if soft >= wanted else f"RLIMIT_NOFILE is {soft} (hard limit), below {wanted}"
    return soft, note


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(latencies_ns: array) -> dict[str, float]:
    if not latencies_ns:
        return {}
    ordered = sorted(latencies_ns)
    n = len(ordered)
    # Nearest rank: the smallest value with at least q of all values at or below it.
    figures = {name: ordered[max(0, math.ceil(round(q * n, 6)) - 1)] / 1000
               for name, q in PERCENTILES}
    figures["max"] = ordered[-1] / 1000
    figures["mean"] = sum(ordered) / n / 1000
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sockets = args.connections * (args.inflight if args.target.startswith("http://") else 1)
    nofile, nofile_note = raise_nofile_limit(sockets + 256)
    recorder = Recorder()
    started = time.perf_counter()
    sessions, connect_errors, connect_error = await open_sessions(
        args.target, args.connections, args.connect_concurrency, args.connect_timeout,
        recorder, args.inflight, _headers(args.header))
    connect_seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "event": "result", "target": args.target, "connections": args.connections,
        "connected": len(sessions), "inflight": args.inflight,
        "connect_errors": connect_errors, "connect_error": connect_error,
        "connect_seconds": round(connect_seconds, 3), "nofile_limit": nofile,
        "nofile_note": nofile_note,
    }
    emit({"event": "connected", "sessions": len(sessions), "connect_errors": connect_errors,
          "connect_seconds": round(connect_seconds, 3)})
    gc.collect()
    gc.disable()  # no collector pauses inside the measured window

    if args.hold:
        if args.drop_connections:
            # Streamable HTTP: the sessions stay, their connections go, as an idle
            # client's pooled connections would.
            recorder.closing = True
            for session in sessions:
                session.close()
            await asyncio.sleep(0.5)
            recorder.closing = False
        emit({"event": "holding", "sessions": len(sessions), "connect_errors": connect_errors})
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline),
                                   args.hold_timeout)
        except TimeoutError:
            result["hold_timed_out"] = True
        result["disconnects_while_held"] = recorder.disconnects
    elif sessions:
        for session in sessions:
            session.start(args.inflight)
        await asyncio.sleep(args.warmup)
        emit({"event": "measure_start"})
        cpu_before = cpu_seconds()
        window_start = time.perf_counter()
        recorder.recording = True
        await asyncio.sleep(args.duration)
        recorder.recording = False
        recorder.stopping = True
        window = time.perf_counter() - window_start
        cpu_used = cpu_seconds() - cpu_before
        emit({"event": "measure_end"})
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and any(s.unanswered() for s in sessions):
            await asyncio.sleep(0.01)
        unanswered = sum(s.unanswered() for s in sessions)
        calls = len(recorder.latencies)
        result.update({
            "window_seconds": round(window, 4),
            "calls": calls,
            "throughput": calls / window if window > 0 else 0.0,
            "latency_us": percentiles(recorder.latencies),
            "loadgen_cpu_us_per_call": cpu_used / calls * 1e6 if calls else None,
            "loadgen_cpu_utilization": cpu_used / window if window > 0 else None,
            "unanswered_after_drain": unanswered,
        })
    result.update({"errors": recorder.errors, "first_error": recorder.first_error,
                   "disconnects": recorder.disconnects, "lost_in_flight": recorder.lost})
    recorder.closing = True
    for session in sessions:
        session.close()
    await asyncio.sleep(0.2 if len(sessions) < 1000 else 1.0)
    gc.enable()
    return result


def _headers(given: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header in given:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"--header {header!r} is not 'NAME: VALUE'")
        headers[name.strip()] = value.strip()
    return headers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MCP tools/call load generator")
    parser.add_argument("target", help="ws://HOST:PORT/PATH, http://HOST:PORT/PATH or "
                        "unix:/path/to/socket")
    parser.add_argument("--connections", "-c", type=int, default=1,
                        help="sessions (over HTTP each holds --inflight connections)")
    parser.add_argument("--inflight", "-w", type=int, default=1,
                        help="requests each session keeps outstanding")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds, not recorded")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--connect-concurrency", type=int, default=100,
                        help="handshakes in progress at once while connecting")
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=5.0)
    parser.add_argument("--hold", action="store_true",
                        help="open and initialize the sessions, then hold them idle")
    parser.add_argument("--hold-timeout", type=float, default=120.0)
    parser.add_argument("--drop-connections", action="store_true",
                        help="with --hold over HTTP: close each session's connections once "
                             "it is initialized, and hold the sessions alone")
    parser.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header for every HTTP request and WebSocket upgrade "
                             "(a credential); repeatable")
    args = parser.parse_args(argv)
    try:
        _headers(args.header)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("connections", "inflight", "connect_concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    emit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
