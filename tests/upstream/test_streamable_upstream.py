"""A Streamable HTTP upstream: the official Python SDK's server over HTTP (uvicorn),
behind the gateway, used by the official SDK's client.

What a user would notice: the server's tools, progress, log messages and server-to-client
sampling reach the client that made the call, in both eras and with both answer forms
(SSE streams and JSON bodies); the upstream's session survives as long as the server's
does, and a restarted server (whose old session is gone: 404) is joined again by itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    LoggingMessageNotificationParams,
)
from msgspec import UNSET

from mcpfast.config import UpstreamConfig
from mcpfast.protocol import jsonrpc
from mcpfast.upstream.streamable import ANSWERED_STREAM_GRACE, StreamableHttpUpstream

from ..conftest import (
    ROOT,
    SDK_SERVER,
    GatewayProcess,
    answer_sampling,
    free_port,
    run,
    wait_until,
)
from ..conftest import sdk_text as text_of

# logging/setLevel is deprecated in 2026-07-28, and still the legacy era's way to ask.
pytestmark = pytest.mark.filterwarnings("ignore:The logging capability is deprecated")


class HttpServer:
    """tests/servers/sdk_server.py over Streamable HTTP (or with ``sse`` the HTTP+SSE
    transport of 2024-11-05), listening once started."""

    def __init__(self, port: int, *flags: str, sse: bool = False) -> None:
        self.port = port
        self.flags = flags
        self.sse = sse
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.sse else 'mcp'}"

    def start(self) -> HttpServer:
        self.proc = subprocess.Popen(
            [sys.executable, SDK_SERVER, "--sse" if self.sse else "--http", str(self.port),
             *self.flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, "the SDK server exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # uvicorn's graceful stop waits for the streams a gateway holds open.
            self.proc.terminate()
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)


@pytest.fixture
def servers() -> Iterator[list[HttpServer]]:
    started: list[HttpServer] = []
    yield started
    for server in started:
        server.stop()


async def use_through(gateway: GatewayProcess, mode: str, streams: bool = True) -> None:
    """Calls through the gateway. ``streams``: the server answers with SSE streams; with
    JSON bodies it has no channel for progress or requests during a call (the same
    client talking to it directly gets neither), so those are not asked for."""
    progress: list[float] = []
    logged: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logged.append(params.data)

    async with Client(streamable_http_client(gateway.http_url), mode=mode,
                      sampling_callback=answer_sampling, logging_callback=on_log) as client:
        assert "echo" in {tool.name for tool in (await client.list_tools()).tools}
        assert text_of(await client.call_tool("echo", {"text": "over HTTP"})) == "over HTTP"
        failed = await client.call_tool("fail", {})
        assert failed.is_error
        if not streams:
            return
        steps = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert text_of(steps) == "completed 3 steps"
        assert progress == [1, 2, 3]
        if mode == "legacy":
            # The server asks the client on the call's own stream: it is the caller's.
            sampled = await client.call_tool("sample", {"prompt": "ping?"})
            assert text_of(sampled) == "echo of ping?"
            await client.set_logging_level("info")
            await client.call_tool("log", {"message": "from upstream"})
            assert "from upstream" in logged


@pytest.mark.parametrize("answers", ["sse", "json"])
@pytest.mark.parametrize("era,mode", [("legacy", "legacy"), ("auto", "2026-07-28"),
                                      ("auto", "legacy")])
def test_the_sdk_server_over_streamable_http(tmp_path: Path, servers: list[HttpServer],
                                             answers: str, era: str, mode: str) -> None:
    server = HttpServer(free_port(), *(["--json-response"] if answers == "json" else []))
    servers.append(server.start())
    gateway = GatewayProcess(tmp_path, {"remote": {"url": server.url, "era": era}}, {})
    try:
        gateway.start()
        upstream = gateway.upstream("remote")
        assert upstream["kind"] == "streamable_http"
        assert upstream["address"] == server.url
        assert upstream["era"] == ("legacy" if era == "legacy" else "modern")
        assert upstream["session_id"] is (era == "legacy")
        run(use_through(gateway, mode, streams=answers == "sse"))
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_sdk_server_over_the_2024_11_05_sse_transport(
        tmp_path: Path, servers: list[HttpServer], mode: str) -> None:
    server = HttpServer(free_port(), sse=True)
    servers.append(server.start())
    gateway = GatewayProcess(tmp_path, {"remote": {"url": server.url, "transport": "sse"}},
                             {})
    try:
        gateway.start()
        upstream = gateway.upstream("remote")
        assert (upstream["kind"], upstream["era"]) == ("sse", "legacy")
        run(use_through(gateway, mode))
        # The server goes away: its stream ends, and the upstream is down until it is
        # back (a new stream, a new endpoint).
        server.stop()
        wait_until(lambda: not gateway.upstream("remote")["ready"], 30)
        servers.append(HttpServer(server.port, sse=True).start())
        wait_until(lambda: gateway.upstream("remote")["ready"], 60)
        run(use_through(gateway, mode))
    finally:
        gateway.cleanup()


def test_a_restarted_server_is_joined_again(tmp_path: Path, servers: list[HttpServer]
                                             ) -> None:
    port = free_port()
    first = HttpServer(port)
    servers.append(first.start())
    gateway = GatewayProcess(tmp_path, {"remote": {
        "url": first.url, "era": "legacy", "restart_backoff": 0.2,
        "restart_backoff_max": 0.5}}, {})
    try:
        gateway.start()
        run(use_through(gateway, "legacy"))
        starts = gateway.upstream("remote")["starts"]
        first.stop()
        # Back on the same port: the gateway's session is unknown there (404), so it
        # initializes again, and calls go on.
        servers.append(HttpServer(port).start())
        wait_until(lambda: gateway.upstream("remote")["starts"] > starts
                   and gateway.upstream("remote")["ready"], 60)
        run(use_through(gateway, "legacy"))
    finally:
        gateway.cleanup()


def test_nothing_listening_fails_calls_at_once(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, {"remote": {
        "url": f"http://127.0.0.1:{free_port()}/mcp", "era": "legacy"}}, {})
    try:
        gateway.start(wait_ready=False)

        def down() -> bool:
            code, body = gateway.admin_get("/status", starting=True)
            return code == 200 and b"cannot connect to http://127.0.0.1" in body
        wait_until(down, 30)
    finally:
        gateway.cleanup()


NODE = ROOT / ".tools" / "node22" / "node_modules" / ".bin" / "node"
TS_SERVER = ROOT / "tests" / "servers" / "ts_server.mjs"


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_typescript_sdk_server_over_streamable_http(tmp_path: Path, mode: str) -> None:
    assert (ROOT / ".tools" / "ts-sdk").exists() and NODE.exists(), \
        "the TypeScript SDK or Node 22 is missing: run scripts/node-tools.sh (make test does)"
    port = free_port()
    server = subprocess.Popen([str(NODE), str(TS_SERVER), "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    gateway = GatewayProcess(tmp_path, {"ts": {"url": f"http://127.0.0.1:{port}/mcp"}}, {})
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def body() -> None:
        async with Client(streamable_http_client(gateway.http_url), mode=mode,
                          sampling_callback=answer_sampling) as client:
            assert {t.name for t in (await client.list_tools()).tools} == {
                "echo", "add", "progress", "sample"}
            assert text_of(await client.call_tool("echo", {"text": "from TS"})) == "from TS"
            assert text_of(await client.call_tool("add", {"a": 2, "b": 3})) == "5"
            steps = await client.call_tool("progress", {"steps": 3},
                                           progress_callback=on_progress)
            assert text_of(steps) == "completed 3 steps" and progress == [1, 2, 3]
            sampled = await client.call_tool("sample", {"prompt": "ts?"})
            assert text_of(sampled) == "echo of ts?"
    try:
        gateway.start()
        upstream = gateway.upstream("ts")
        assert (upstream["era"], upstream["server_info"]["name"]) == ("legacy", "ts-sdk")
        run(body())
    finally:
        gateway.cleanup()
        server.terminate()
        server.wait(20)


class Events:
    """The gateway's side of an upstream, as far as these tests need it: answers kept."""

    def __init__(self) -> None:
        self.answers: dict[int, Any] = {}
        self.ready = asyncio.Event()

    def answered(self, upstream: Any, call: Any, env: Any, line: bytes) -> None:
        if env is None:  # a result message_scan.read_result read (UpstreamEvents)
            env = jsonrpc.decode(line, None)
        self.answers[call.number] = msgspec.json.decode(
            env.result if env.error is UNSET else env.error)

    def abandoned(self, upstream: Any, call: Any) -> None:
        pass

    def timed_out(self, upstream: Any, call: Any) -> None:
        pass

    def failed(self, upstream: Any, call: Any, message: str) -> None:
        self.answers[call.number] = {"failed": message}

    def upstream_notification(self, upstream: Any, env: Any) -> None:
        pass

    def upstream_request(self, upstream: Any, env: Any) -> None:
        pass

    def upstream_ready(self, upstream: Any) -> None:
        self.ready.set()

    def upstream_down(self, upstream: Any) -> None:
        pass


class EveryAnswer(Events):
    """Every end of a call, in order: (its number, the result) or (its number, why it
    failed)."""

    def __init__(self) -> None:
        super().__init__()
        self.every: list[tuple[int, Any]] = []

    def answered(self, upstream: Any, call: Any, env: Any, line: bytes) -> None:
        if env is None:
            env = jsonrpc.decode(line, None)
        self.every.append((call.number, msgspec.json.decode(env.result)))

    def failed(self, upstream: Any, call: Any, message: str) -> None:
        self.every.append((call.number, message))


async def serve_here(post: Any, get: Any = None) -> tuple[web.AppRunner, int]:
    """An aiohttp.web server written in a test, on a free loopback port: POST (and GET)
    /mcp; its runner (to clean up) and its port."""
    app = web.Application()
    app.router.add_post("/mcp", post)
    if get is not None:
        app.router.add_get("/mcp", get)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def ready_upstream(port: int, era: str, events: Events
                         ) -> StreamableHttpUpstream[Any]:
    """A StreamableHttpUpstream of the server written here on ``port``, through its
    handshake (``events.ready``)."""
    upstream: StreamableHttpUpstream[Any] = StreamableHttpUpstream(
        "here", 0, UpstreamConfig(url=f"http://127.0.0.1:{port}/mcp", era=era), events)
    await upstream.start()
    try:
        await asyncio.wait_for(events.ready.wait(), 10)
    except BaseException:
        await upstream.stop()
        raise
    return upstream


class Call:
    def __init__(self, number: int) -> None:
        self.number = number
        self.started = self.deadline = 0.0


class Session:
    flow = None


def test_a_modern_upstream_posts_without_tasks_and_a_cancel_closes_the_stream() -> None:
    """Against a modern server written here (aiohttp.web): calls answered as JSON go
    through the upstream with no asyncio task made per call; a call answered with an SSE
    stream is cancelled by closing that stream, which the server sees."""
    stream_closed = asyncio.Event()

    async def mcp(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        method, params = message["method"], message.get("params") or {}
        assert request.headers["MCP-Protocol-Version"] == "2026-07-28"
        assert request.headers["Mcp-Method"] == method
        if method == "server/discover":
            result: Any = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                           "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "here"}}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}}
                                for n in ("echo", "slow")]}
        elif params["name"] == "echo":
            assert request.headers["Mcp-Name"] == "echo"
            result = {"content": [{"type": "text", "text": params["arguments"]["text"]}]}
        else:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                while True:
                    await response.write(b": still working\n\n")
                    await asyncio.sleep(0.05)
            except (ConnectionError, RuntimeError):
                stream_closed.set()
                return response
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})

    async def main() -> None:
        runner, port = await serve_here(mcp)
        events = Events()
        upstream = await ready_upstream(port, "modern", events)
        try:
            meta = {"_meta": upstream.modern_meta()}
            loop = asyncio.get_running_loop()
            made: list[str] = []

            def counting(loop: Any, coro: Any, **kw: Any) -> asyncio.Task[Any]:
                if "/mcpfast/" in coro.cr_code.co_filename:  # not the server's own
                    made.append(coro.__qualname__)
                return asyncio.Task(coro, loop=loop, **kw)

            for batch in range(2):  # the first opens the connections, the second reuses them
                loop.set_task_factory(counting if batch else None)
                for number in range(batch * 20, batch * 20 + 20):
                    upstream.forward(Call(number), Session(), "tools/call", json.dumps(
                        {"name": "echo", "arguments": {"text": f"#{number}"}, **meta}
                    ).encode())
                while len(events.answers) < batch * 20 + 20:
                    await asyncio.sleep(0.01)
            loop.set_task_factory(None)
            assert made == []
            assert [events.answers[n]["content"][0]["text"] for n in range(40)] == \
                [f"#{n}" for n in range(40)]
            slow = upstream.forward(Call(99), Session(), "tools/call", json.dumps(
                {"name": "slow", "arguments": {}, **meta}).encode())
            assert slow is not None
            await asyncio.sleep(0.2)
            upstream.cancel(slow, "the client cancelled")
            await asyncio.wait_for(stream_closed.wait(), 10)
        finally:
            await upstream.stop()
            await runner.cleanup()
    run(main())



def not_a_call(message: dict[str, Any]) -> web.Response:
    """The test servers' answer to a request other than tools/call: initialize gets a
    session, anything else an empty result."""
    if message["method"] == "initialize":
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "here"}}}, headers={"Mcp-Session-Id": "s"})
    return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": {}})

def test_a_stream_cut_inside_the_response_is_resumed_from_the_last_whole_event() -> None:
    """Against a legacy server written here (aiohttp.web) whose POST stream drops in the
    middle of the response's event, after its ``id`` line: the upstream resumes with the
    id of the last event it received whole, and the call gets the replayed response,
    once."""
    replayed: dict[str, list[tuple[str, bytes]]] = {}
    resumed_from: list[str] = []

    def sse(event_id: str, data: bytes) -> bytes:
        return b"id: %b\ndata: %b\n\n" % (event_id.encode(), data)

    async def post(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] != "tools/call":
            return not_a_call(message)
        stream = f"r{message['id']}"
        answer = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {
            "content": [{"type": "text", "text": "x" * 5000}]}}).encode()
        replayed[stream] = [(f"{stream}_1", b""), (f"{stream}_2", answer)]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"retry: 50\n" + sse(f"{stream}_1", b"")
                             + sse(f"{stream}_2", answer)[:2000])
        await asyncio.sleep(0.1)
        assert request.transport is not None
        request.transport.close()  # dropped inside the response's event
        return response

    async def get(request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        if last is None:
            return web.Response(status=405)  # no session stream
        resumed_from.append(last)
        stream = last.rpartition("_")[0]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        ids = [event_id for event_id, _ in replayed[stream]]
        for event_id, data in replayed[stream][ids.index(last) + 1:]:
            await response.write(sse(event_id, data))
        return response

    async def main() -> None:
        runner, port = await serve_here(post, get)
        events = EveryAnswer()
        answers = events.every
        upstream = await ready_upstream(port, "legacy", events)
        try:
            upstream.forward(Call(1), Session(), "tools/call", json.dumps(
                {"name": "big", "arguments": {}}).encode())
            for _ in range(200):
                if answers:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # and nothing more comes
            assert answers == [(1, {"content": [{"type": "text", "text": "x" * 5000}]})]
            assert resumed_from[0].endswith("_1")
        finally:
            await upstream.stop()
            await runner.cleanup()
    run(main())


def test_a_cut_listen_stream_is_opened_again(tmp_path: Path, servers: list[HttpServer]
                                             ) -> None:
    """A modern upstream that stays up while its side of every connection is cut (a
    proxy's idle time-out, say): the gateway opens its subscriptions/listen again, so a
    tool the server adds afterwards is still announced and listed."""
    server = HttpServer(free_port())
    servers.append(server.start())
    gateway = GatewayProcess(tmp_path, {"remote": {"url": server.url, "era": "modern",
                                                   "restart_backoff": 0.2}}, {})
    try:
        gateway.start()
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGUSR1)
        wait_until(lambda: "subscriptions/listen was cut; opening it again" in gateway.log(),
                   30)

        async def body() -> set[str]:
            async with Client(streamable_http_client(gateway.http_url),
                              mode="legacy") as client:
                await client.call_tool("grow", {"tool_name": "grown"})
                for _ in range(200):  # 10 s at most for the announcement and refetch
                    names = {tool.name for tool in (await client.list_tools()).tools}
                    if "grown" in names:
                        return names
                    await asyncio.sleep(0.05)
                return names
        assert "grown" in run(body())
    finally:
        gateway.cleanup()



def test_a_cancelled_legacy_call_gives_its_connection_back() -> None:
    """Against a legacy server written here that ignores cancels and keeps a call's SSE
    stream open: once the gateway gives the call up (a time-out or the client's cancel,
    both a notifications/cancelled), the call's stream is closed, not left holding a
    pool connection for as long as the server keeps it open."""
    closed = asyncio.Event()
    cancels: list[Any] = []

    async def post(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message:
            if message.get("method") == "notifications/cancelled":
                cancels.append(message["params"]["requestId"])
            return web.Response(status=202)
        if message["method"] != "tools/call":
            return not_a_call(message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while True:  # works on for ever, cancelled or not
                await response.write(b": still working\n\n")
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            closed.set()
            raise

    async def get(request: web.Request) -> web.Response:
        return web.Response(status=405)  # no session stream

    async def main() -> None:
        runner, port = await serve_here(post, get)
        events = Events()
        upstream = await ready_upstream(port, "legacy", events)
        try:
            upstream.forward(Call(1), Session(), "tools/call", json.dumps(
                {"name": "slow", "arguments": {}}).encode())
            (upstream_id,) = upstream.pending
            await asyncio.sleep(0.3)  # the stream is open and flowing
            upstream.connection.cancel(upstream_id, "timed out")
            await asyncio.wait_for(closed.wait(), 5)
            assert cancels == [upstream_id]  # and the server was told
        finally:
            await upstream.stop()
            await runner.cleanup()
    run(main())


@pytest.mark.parametrize("form", ["json", "sse"])
def test_answers_in_a_batch_are_taken(form: str) -> None:
    """Against a 2025-03-26 server written here that sends each answer in a JSON-RPC
    batch (its client MUST take one), after a log message, a request of its own that
    happens to carry the call's id, an item that is no message and a response whose id
    is the call's as a float: as a JSON body, or as SSE events. Each call gets its
    answer, once, and none of the others is taken for it."""
    async def post(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message or "method" not in message:
            return web.Response(status=202)
        if message["method"] != "tools/call":
            return not_a_call(message)
        text = message["params"]["arguments"]["text"]
        before = [{"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": "batched"}},
                  {"jsonrpc": "2.0", "id": message["id"], "method": "roots/list"},
                  7,  # no message: dropped, the rest read
                  {"jsonrpc": "2.0", "id": float(message["id"]), "result": {}}]  # no id of ours
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": {
            "content": [{"type": "text", "text": text}]}}
        if form == "json":
            return web.Response(body=json.dumps([*before, answer]).encode(),
                                content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + json.dumps(before).encode() + b"\n\n")
        # Longer than the gateway keeps a stream open once it has its answer: had it
        # taken the server's request for one, the answer would never come.
        await asyncio.sleep(ANSWERED_STREAM_GRACE + 0.3)
        await response.write(b"data: " + json.dumps([answer]).encode() + b"\n\n")
        await asyncio.sleep(30)  # the stream stays open: the answer in it ends the call
        return response

    async def get(request: web.Request) -> web.Response:
        return web.Response(status=405)

    async def main() -> None:
        runner, port = await serve_here(post, get)
        events = EveryAnswer()
        answers = events.every
        upstream = await ready_upstream(port, "legacy", events)
        try:
            for number in range(3):
                upstream.forward(Call(number), Session(), "tools/call", json.dumps(
                    {"name": "echo", "arguments": {"text": f"#{number}"}}).encode())
            for _ in range(400):
                if len(answers) == 3:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # and nothing more comes
            assert sorted(answers) == [(n, {"content": [{"type": "text", "text": f"#{n}"}]})
                                       for n in range(3)]
        finally:
            await upstream.stop()
            await runner.cleanup()
    run(main())
