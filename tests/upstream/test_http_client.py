"""The HTTP upstreams' client (upstream/http_client.py), against real servers on loopback:
aiohttp.web servers written here, raw asyncio servers that write exactly the bytes an
edge case needs, and the benchmarks' echo server.

What a user would notice: every body framing is read; an SSE stream reaches the caller
event by event as it is written; connections are kept alive and reused, capped, and
queued for; a server that cannot be reached, or answers too much, or redirects, fails
the request at once with a message naming why; a header that would inject another is
never sent; TLS is verified. Each test runs on uvloop (the gateway's loop) and on
stock asyncio."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from mcpfast.protocol.sse import SseParser
from mcpfast.upstream.http_client import (
    ConnectError,
    Exchange,
    HeaderError,
    HttpClient,
    HttpClientError,
    Response,
)

from ..conftest import ROOT, Pki

ECHO_SERVER = str(ROOT / "bench" / "echo_server.py")
JSON = "application/json"


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        main = asyncio.wait_for(coro, 30)
        return uvloop.run(main) if request.param == "uvloop" else asyncio.run(main)
    return runner


class Recorder(Exchange):
    """A callback exchange that keeps what it is told; ``ended`` is done at its end."""

    def __init__(self, stream: bool = False) -> None:
        super().__init__()
        self.stream = stream
        self.response: Response | None = None
        self.chunks: list[bytes] = []
        self.body = b""
        self.error: HttpClientError | None = None
        self.on_chunk: Callable[[bytes], None] | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def response_received(self, response: Response) -> bool:
        self.response = response
        return self.stream

    def body_received(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.on_chunk is not None:
            self.on_chunk(data)

    def response_complete(self, body: bytes) -> None:
        assert not self.ended.done(), "ended twice"
        self.body = body
        self.ended.set_result(None)

    def request_failed(self, error: HttpClientError) -> None:
        assert not self.ended.done(), "ended twice"
        self.error = error
        self.ended.set_result(None)


async def exchange(client: HttpClient, method: str = "POST", body: bytes | None = b"{}",
                   headers: list[tuple[str, str]] | None = None,
                   stream: bool = False, replayable: bool = False) -> Recorder:
    recorder = Recorder(stream)
    recorder.replayable = replayable
    client.send(recorder, client.head(method, accept=JSON, content_type=JSON), headers, body)
    await recorder.ended
    return recorder


# -- peers ---------------------------------------------------------------------------------
class Peers:
    """What an aiohttp.web server saw: the client port of each request, in order."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def saw(self, request: web.Request) -> None:
        assert request.transport is not None
        self.ports.append(request.transport.get_extra_info("peername")[1])


@asynccontextmanager
async def web_server(routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
                     tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
                     ) -> AsyncIterator[str]:
    """An aiohttp.web server with ``routes`` (path -> handler, any method); its URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"{'https' if tls else 'http'}://{shown}:{port}"
    finally:
        await runner.cleanup()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server running ``script(reader, writer, connection_number)`` per
    connection; its URL and the numbers of the connections accepted so far."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        try:
            await script(reader, writer, accepted[-1])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp", accepted
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by Content-Length); b"" when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" \
        % (len(body), body)


# -- framing ---------------------------------------------------------------------------------
def test_a_content_length_body_and_its_head(run: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b'{"answer":42}', content_type=JSON, reason="Fine",
                            headers={"mcp-SESSION-id": "s-1"})

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp")
            response, body = await client.fetch(client.head("POST"), None, b"{}")
            assert (response.status, response.reason, body) == (200, "OK", b'{"answer":42}')
            assert response.content_type == JSON  # "application/json; charset=utf-8"
            assert response.header("Mcp-Session-Id") == "s-1"
            assert response.content_length == len(body)
            client.close()
    run(main())


def test_a_chunked_body(run: Any) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"parts":', b"[1,2,", b"3]}"):
            await response.write(part)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp")
            answer = await exchange(client)
            assert answer.error is None and answer.body == b'{"parts":[1,2,3]}'
            client.close()
    run(main())


def test_a_body_delimited_by_the_close(run: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b'"the close"}')
        await writer.drain()

    async def main() -> None:
        async with raw_server(script) as (url, accepted):
            client = HttpClient(url)
            first = await exchange(client)
            assert first.error is None and first.body == b'{"until":"the close"}'
            second = await exchange(client)  # on a new connection: the first one ended
            assert second.body == first.body and len(accepted) == 2
            client.close()
    run(main())


def test_an_sse_stream_arrives_event_by_event(run: Any) -> None:
    """The second event is written only once the client has seen the first: the first
    must reach the caller while the response is still open."""
    seen_first = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: message\ndata: {"n":1}\n\n')
        await asyncio.wait_for(seen_first.wait(), 10)
        await response.write(b'event: message\ndata: {"n":2}\n\n')
        await response.write_eof()
        return response

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp")
            parser = SseParser(1 << 20)
            events: list[bytes] = []
            recorder = Recorder(stream=True)

            def on_chunk(data: bytes) -> None:
                events.extend(event.data for event in parser.feed(data))
                if events:
                    seen_first.set()
            recorder.on_chunk = on_chunk
            client.send(recorder, client.head("POST", accept="text/event-stream"), None, b"{}")
            await recorder.ended
            assert recorder.error is None and recorder.body == b""
            assert events == [b'{"n":1}', b'{"n":2}']
            assert len(recorder.chunks) >= 2
            client.close()
    run(main())


def test_an_unparsable_response_fails(run: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        await read_request(reader)
        writer.write(b"HELLO THERE\r\n\r\n")
        await reader.read()

    async def main() -> None:
        async with raw_server(script) as (url, _):
            client = HttpClient(url)
            answer = await exchange(client)
            assert "cannot be parsed" in str(answer.error)
            client.close()
    run(main())


# -- the pool ----------------------------------------------------------------------------------
def test_sequential_requests_share_one_connection(run: Any) -> None:
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        peers.saw(request)
        return web.json_response({"n": len(peers.ports)})

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp")
            for n in range(1, 6):
                assert json.loads((await exchange(client)).body) == {"n": n}
            assert len(set(peers.ports)) == 1
            client.close()
    run(main())


def test_the_pool_is_capped_and_the_rest_wait_in_order(run: Any) -> None:
    """Eight requests over three connections: three reach the server at once, the other
    five wait, in the order they were sent, and every one is answered."""
    peers = Peers()
    order: list[int] = []
    in_flight = 0
    most = 0
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        peers.saw(request)
        order.append(int(request.headers["X-N"]))
        in_flight += 1
        most = max(most, in_flight)
        if len(order) == 3:
            release.set()
        await release.wait()
        in_flight -= 1
        return web.json_response({"n": int(request.headers["X-N"])})

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp", max_connections=3)
            answers = await asyncio.gather(*(exchange(client, headers=[("X-N", str(n))])
                                             for n in range(8)))
            assert [json.loads(a.body)["n"] for a in answers] == list(range(8))
            assert most == 3 and len(set(peers.ports)) == 3
            assert order[3:] == [3, 4, 5, 6, 7]
            client.close()
    run(main())


def test_many_calls_to_the_echo_server(run: Any) -> None:
    """The benchmarks' echo server (Streamable HTTP, JSON answers): 300 calls, 50 at a
    time over 4 connections, each answered with its own id."""
    proc = subprocess.Popen([sys.executable, ECHO_SERVER, "--http", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["port"]

        async def call(client: HttpClient, n: int) -> None:
            body = json.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                               "params": {"name": "echo", "arguments": {"n": n}}}).encode()
            answer = await exchange(client, body=body, headers=[("Mcp-Method", "tools/call"),
                                                               ("Mcp-Name", "echo")])
            assert answer.response is not None and answer.response.status == 200
            assert json.loads(answer.body)["id"] == n

        async def main() -> None:
            client = HttpClient(f"http://127.0.0.1:{port}/mcp", max_connections=4)
            for start in range(0, 300, 50):
                await asyncio.gather(*(call(client, n) for n in range(start, start + 50)))
            assert client.describe()["connections"] == 4
            client.close()
        run(main())
    finally:
        proc.terminate()
        proc.wait(10)


def test_idle_connections_expire(run: Any) -> None:
    peers = Peers()

    async def handler(request: web.Request) -> web.Response:
        peers.saw(request)
        return web.json_response({})

    async def main() -> None:
        async with web_server({"/mcp": handler}) as url:
            client = HttpClient(url + "/mcp", idle_timeout=0.2)
            await exchange(client)
            assert client.describe()["idle"] == 1
            await asyncio.sleep(0.5)
            assert client.describe()["connections"] == 0
            await exchange(client)
            assert len(set(peers.ports)) == 2
            client.close()
    run(main())


def test_the_server_keep_alive_timeout_is_followed(run: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=0.2\r\n"
                         b"Content-Length: 2\r\n\r\n{}")

    async def main() -> None:
        async with raw_server(script) as (url, _):
            client = HttpClient(url)  # 30 s by default
            await exchange(client)
            await asyncio.sleep(0.5)
            assert client.describe()["connections"] == 0
            client.close()
    run(main())


# -- failures ------------------------------------------------------------------------------------
def test_nothing_listening_fails_the_request_and_those_queued_at_once(run: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        client = HttpClient(f"http://127.0.0.1:{port}/mcp", max_connections=1)
        started = time.monotonic()
        answers = await asyncio.gather(*(exchange(client) for _ in range(3)))
        assert time.monotonic() - started < 2
        for answer in answers:
            assert isinstance(answer.error, ConnectError)
            assert str(answer.error).startswith(f"cannot connect to http://127.0.0.1:{port}: ")
            assert "Connection refused" in str(answer.error)
        client.close()
    run(main())


def test_a_connection_not_made_in_time_fails(run: Any) -> None:
    """A listener whose backlog is full: the kernel drops the SYN, the connect hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filling = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            filling.append(filler)

        async def main() -> None:
            client = HttpClient(f"http://127.0.0.1:{port}/mcp", connect_timeout=0.3)
            started = time.monotonic()
            answer = await exchange(client)
            assert 0.25 < time.monotonic() - started < 3
            assert str(answer.error) == (f"cannot connect to http://127.0.0.1:{port}: "
                                         "no connection within 0.3 s")
            client.close()
        run(main())
    finally:
        for filler in filling:
            filler.close()
        listener.close()


def stale_after_first(always: bool) -> Script:
    """A server that answers the first request of each connection and closes the
    connection, unanswered, when a second comes on it (as a server that closed it idle
    just then); with ``always``, every request but the very first is closed on."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        request = await read_request(reader)
        if not request or (always and number > 0):
            return
        writer.write(ok(b'{"connection":%d}' % number))
        await writer.drain()
        await read_request(reader)
    return script


def test_a_stale_keep_alive_connection_is_retried_once_on_a_fresh_one(run: Any) -> None:
    async def main() -> None:
        async with raw_server(stale_after_first(always=False)) as (url, accepted):
            client = HttpClient(url)
            assert (await exchange(client)).body == b'{"connection":0}'
            answer = await exchange(client, replayable=True)
            assert answer.error is None and answer.body == b'{"connection":1}'
            assert accepted == [0, 1]
            client.close()
    run(main())


def test_a_request_not_safe_to_repeat_is_not_sent_again(run: Any) -> None:
    """A POST that may have been acted on (a tools/call) is failed, not sent twice, when
    its reused connection closes unanswered (RFC 9112 9.3.1.1)."""
    async def main() -> None:
        async with raw_server(stale_after_first(always=False)) as (url, accepted):
            client = HttpClient(url)
            await exchange(client)
            answer = await exchange(client)
            assert str(answer.error) == "the server closed the connection before answering"
            assert accepted == [0]
            client.close()
    run(main())


def test_a_second_close_after_the_retry_is_reported(run: Any) -> None:
    async def main() -> None:
        async with raw_server(stale_after_first(always=True)) as (url, accepted):
            client = HttpClient(url)
            await exchange(client)
            answer = await exchange(client, replayable=True)
            assert str(answer.error) == "the server closed the connection before answering"
            assert len(accepted) == 2  # the retry, once
            client.close()
    run(main())


def test_an_oversized_body_fails_and_closes_the_connection(run: Any) -> None:
    peers = Peers()

    async def declared(request: web.Request) -> web.Response:
        peers.saw(request)
        return web.Response(body=b"x" * 5000, content_type=JSON)

    async def chunked(request: web.Request) -> web.StreamResponse:
        peers.saw(request)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(5):
            await response.write(b"x" * 1000)
        await response.write_eof()
        return response

    async def small(request: web.Request) -> web.Response:
        peers.saw(request)
        return web.json_response({})

    async def main() -> None:
        async with web_server({"/declared": declared, "/chunked": chunked,
                               "/small": small}) as url:
            client = HttpClient(url + "/small", max_body_bytes=4000)
            for path in ("/declared", "/chunked", "/small"):
                recorder = Recorder()
                client.send(recorder, client.head("GET", path))
                await recorder.ended
                if path != "/small":
                    assert str(recorder.error) == "a response over 4000 bytes"
            assert recorder.error is None and recorder.body == b"{}"
            assert len(set(peers.ports)) == 3  # each oversized answer closed its connection
            client.close()
    run(main())


def test_a_header_with_a_line_break_is_never_sent(run: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        while await read_request(reader):
            writer.write(ok(b"{}"))

    async def main() -> None:
        async with raw_server(script) as (url, accepted):
            client = HttpClient(url)
            head = client.head("POST")
            for value in ("a\r\nInjected: 1", "a\nInjected: 1", "a\rb", "a\0b"):
                with pytest.raises(HeaderError, match="'X-Evil' holds a line break"):
                    client.send(Recorder(), head, [("X-Ok", "fine"), ("X-Evil", value)], b"")
            with pytest.raises(HeaderError):
                HttpClient(url, headers={"Authorization": "Bearer x\r\nInjected: 1"})
            with pytest.raises(HeaderError):
                client.head("POST", "/mcp HTTP/1.1\r\nInjected: 1\r\n")
            await asyncio.sleep(0.1)
            assert accepted == []  # nothing reached the server
            client.close()
    run(main())


def test_abort_closes_the_connection_and_ends_the_callbacks(run: Any) -> None:
    closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        writer.write(b"10\r\ndata: {\"n\":1}\n\n\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client closed
        closed.set()

    async def main() -> None:
        async with raw_server(script) as (url, _):
            client = HttpClient(url)
            recorder = Recorder(stream=True)
            recorder.on_chunk = lambda data: recorder.abort()
            client.send(recorder, client.head("POST"), None, b"{}")
            await asyncio.wait_for(closed.wait(), 10)
            await asyncio.sleep(0.05)
            assert not recorder.ended.done()  # aborted: no completion, no failure
            assert len(recorder.chunks) == 1
            assert client.describe()["connections"] == 0
            client.close()
    run(main())


def test_a_fetch_streams_until_its_consumer_ends_it(run: Any) -> None:
    """The awaitable form (the rare paths): a stream read until the caller has what it
    wants, then closed; and a consumer that refuses an event fails the fetch."""
    closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        request = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        events = [b"id: %d\ndata: {}\n\n" % n for n in range(3)]
        if b"big" in request:
            events = [b"data: " + b"x" * 500]  # and more to come
        for event in events:
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
        await writer.drain()
        assert await reader.read() == b""
        closed.set()

    async def main() -> None:
        async with raw_server(script) as (url, _):
            client = HttpClient(url)
            parser = SseParser(100)
            seen: list[str | None] = []

            def feed(chunk: bytes) -> None:
                for event in parser.feed(chunk):
                    seen.append(event.id)
                    if event.id == "1":
                        fetch.end()
                        return
            fetch = client.fetch(client.head("GET"), stream=lambda response: feed)
            response, body = await fetch
            assert (response.status, body, seen) == (200, b"", ["0", "1"])
            await asyncio.wait_for(closed.wait(), 10)
            big = client.fetch(client.head("GET"), [("X-Size", "big")],
                               stream=lambda response: parser.feed)
            with pytest.raises(HttpClientError, match="an event over 100 bytes"):
                await big
            client.close()
    run(main())


def test_closing_the_client_fails_what_is_in_flight_and_queued(run: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     number: int) -> None:
        await read_request(reader)
        await reader.read()

    async def main() -> None:
        async with raw_server(script) as (url, accepted):
            client = HttpClient(url, max_connections=1)
            recorders = [Recorder(), Recorder()]
            for recorder in recorders:
                client.send(recorder, client.head("POST"), None, b"{}")
            while not accepted:
                await asyncio.sleep(0.01)
            client.close()
            for recorder in recorders:
                await recorder.ended
                assert str(recorder.error) == "the HTTP client was closed"
            with pytest.raises(HttpClientError, match="closed"):
                client.send(Recorder(), client.head("POST"), None, b"{}")
    run(main())


def test_a_redirect_is_not_followed(run: Any) -> None:
    peers = Peers()

    async def moved(request: web.Request) -> web.Response:
        peers.saw(request)
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def main() -> None:
        async with web_server({"/mcp": moved, "/elsewhere": moved}) as url:
            client = HttpClient(url + "/mcp")
            answer = await exchange(client)
            assert str(answer.error) == (
                f"{url} redirects (HTTP 307) to /elsewhere; redirects are not "
                "followed: configure the URL it points to")
            assert len(peers.ports) == 1
            client.close()
    run(main())


# -- TLS and addresses -----------------------------------------------------------------------------
def test_tls_verified_against_the_configured_ca(run: Any, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    cert, key, _ = pki.issue("upstream", server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"secure": request.secure})

    async def main() -> None:
        async with web_server({"/mcp": handler}, tls=tls) as url:
            assert url.startswith("https://")
            trusting = HttpClient(url + "/mcp", ca_file=pki.ca_file)
            assert (await exchange(trusting)).body == b'{"secure": true}'
            trusting.close()
            untrusting = HttpClient(url + "/mcp")
            refused = await exchange(untrusting)
            assert isinstance(refused.error, ConnectError)
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.error)
            untrusting.close()
    run(main())


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_literal_host(run: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"host": request.headers["Host"]})

    async def main() -> None:
        async with web_server({"/mcp": handler}, host="::1") as url:
            client = HttpClient(url + "/mcp")
            answer = await exchange(client)
            assert json.loads(answer.body) == {"host": url.removeprefix("http://")}
            client.close()
    run(main())


def test_only_messages_safe_to_repeat_are_replayable() -> None:
    from msgspec import UNSET

    from mcpfast.upstream.streamable import repeatable
    assert not repeatable("tools/call") and not repeatable("initialize")
    assert not repeatable("resources/subscribe")
    assert repeatable("resources/read") and repeatable("tools/list") and repeatable("ping")
    assert repeatable("notifications/cancelled") and repeatable(UNSET)  # a response


def test_one_failed_connect_leaves_the_queue_to_the_open_connection(run: Any) -> None:
    """A connect refused while a connection is open and busy (a burst, a full backlog)
    is not the server gone: the requests queued wait for the open one, and are served."""
    async def main() -> None:
        release, busy = asyncio.Event(), asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await read_request(reader):
                if b"slow" in request:
                    busy.set()
                    await release.wait()
                writer.write(ok(b'{"ok":1}'))
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = HttpClient(f"http://127.0.0.1:{port}/mcp", max_connections=2)
        head = client.head("POST", accept=JSON, content_type=JSON)
        slow = Recorder()
        client.send(slow, head, None, b'"slow"')
        await busy.wait()
        server.close()  # no new connections; the open one stays
        queued = [Recorder(), Recorder()]
        for recorder in queued:
            client.send(recorder, head, None, b"{}")
        while client._connecting:  # until the refused connect has come back
            await asyncio.sleep(0.01)
        release.set()
        for recorder in (slow, *queued):
            await asyncio.wait_for(recorder.ended, 10)
            assert recorder.error is None and recorder.body == b'{"ok":1}'
        client.close()
    run(main())
