"""One benchmark per hot-path step of a ``tools/call`` (DESIGN.md), on ~300-byte messages.

Each group is one step; ``bench.micro.report`` puts a group's pure and compiled means
side by side. A timed round is a batch of ``CALLS`` calls driven by ``map()``, so no
Python loop and none of pytest-benchmark's own per-call overhead (measured at about
100 ns here, more than a compiled token bucket's whole ``take``) is counted. The
tables pytest-benchmark prints are therefore per batch; the report divides by the
``calls`` recorded in each benchmark's extra_info. Every benchmark checks its result,
so a broken fast path cannot post a fast time.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import pytest

import mcpfast_ext
from mcpfast.protocol import jsonrpc
from mcpfast.protocol.ndjson import LineFramer

from .fakes import RecordingTransport, gateway_in_process, initialized_session

CALLS = 1000
MESSAGE_SIZE = 300
# RFC 6455 5.7's example key.
MASK = bytes.fromhex("37fa213d")


def run_batch(function: Callable[..., Any], arguments: tuple[Iterable[Any], ...]) -> None:
    deque(map(function, *arguments), 0)


def benchmark_calls(benchmark: Any, function: Callable[..., Any], *arguments: Any) -> None:
    """Time ``CALLS`` calls of ``function`` with the same ``arguments`` each time."""
    benchmark.extra_info["calls"] = CALLS
    benchmark(run_batch, function, tuple([argument] * CALLS for argument in arguments))


def padded(message: dict[str, Any], pad: list[str | int], size: int) -> bytes:
    """``message`` as compact JSON, grown to ``size`` bytes by filling the string that
    ``pad`` (a path of keys and indexes) points to."""
    target: Any = message
    for key in pad[:-1]:
        target = target[key]
    target[pad[-1]] = ""
    short = len(json.dumps(message, separators=(",", ":")))
    target[pad[-1]] = "x" * (size - short)
    data = json.dumps(message, separators=(",", ":")).encode()
    assert len(data) == size
    return data


def tools_call(request_id: int = 42, size: int = MESSAGE_SIZE) -> bytes:
    return padded(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {
                "name": "docs__search",
                "arguments": {"query": "", "limit": 10, "fuzzy": True},
                "_meta": {"progressToken": "tok-7f3a"},
            },
        },
        ["params", "arguments", "query"],
        size,
    )


def express_call() -> bytes:
    """``tools_call`` as most clients send it: no ``_meta``, a name the gateway does not
    rename (with ``routing.prefix = "conditional"``)."""
    message = json.loads(tools_call())
    message["params"]["name"] = "search"
    del message["params"]["_meta"]
    return json.dumps(message, separators=(",", ":")).encode()


def tools_result(request_id: int = 42) -> bytes:
    return padded(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": ""}], "isError": False},
        },
        ["result", "content", 0, "text"],
        MESSAGE_SIZE,
    )


@pytest.mark.benchmark(group="WebSocket parse + unmask, 300 B masked text frame")
def test_websocket_parse(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    codec = hot_path["websocket_codec"]
    payload = tools_call()
    frame = codec.encode_frame(codec.OP_TEXT, payload, mask=MASK)
    parser = codec.FrameParser(expect_masked=True, max_payload=1 << 20)
    # Each call holds one whole frame, so the parser's buffer is empty between calls.
    benchmark_calls(benchmark, parser.feed, frame)
    assert parser.feed(frame) == [(True, codec.OP_TEXT, payload)]
    assert parser.buffered == 0


@pytest.mark.benchmark(group="WebSocket serialize, 300 B unmasked server text frame")
def test_websocket_encode(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    codec = hot_path["websocket_codec"]
    payload = tools_result()
    benchmark_calls(benchmark, codec.encode_frame, codec.OP_TEXT, payload)
    frame = codec.encode_frame(codec.OP_TEXT, payload)
    assert frame == b"\x81\x7e" + len(payload).to_bytes(2, "big") + payload


@pytest.mark.benchmark(group="HTTP request read, a Streamable HTTP POST with 6 headers and "
                             "a 300 B body")
def test_http_read(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    body = tools_call()
    request = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
               b"Accept: application/json, text/event-stream\r\n"
               b"Content-Type: application/json\r\nMcp-Session-Id: " + b"s" * 52 +
               b"\r\nMCP-Protocol-Version: 2025-11-25\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    reader = hot_path["http_reader"].HttpRequestReader()
    benchmark_calls(benchmark, reader.feed, request)
    (read,) = reader.feed(request)
    assert read.body == body and read.header("mcp-protocol-version") == "2025-11-25"
    assert reader.buffered == 0


def rewrite_id(data: bytes) -> bytes:
    env = jsonrpc.decode(data)
    return jsonrpc.reencode(jsonrpc.Envelope(jsonrpc="2.0", id=1_000_001, method=env.method,
                                             params=env.params))


@pytest.mark.benchmark(group="JSON-RPC decode + id rewrite + encode, 300 B tools/call")
@pytest.mark.parametrize("implementation", ["msgspec"])
def test_jsonrpc_rewrite(benchmark: Any, implementation: str) -> None:
    data = tools_call()
    benchmark_calls(benchmark, rewrite_id, data)
    assert json.loads(rewrite_id(data)) == {**json.loads(data), "id": 1_000_001}


@pytest.mark.benchmark(group="Message survey (newline, high bytes, brackets), 300 B tools/call")
def test_message_survey(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    ms = hot_path["message_scan"]
    data = tools_call()
    benchmark_calls(benchmark, ms.survey, data)
    assert ms.survey(data) == (data.count(b"{") + data.count(b"[")) << ms.BRACKETS_SHIFT


@pytest.mark.benchmark(group="Response id splice, 300 B tools/call result")
def test_response_splice(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    """The client's id into an upstream's response, in place of decoding it (which the
    relay does anyway, to correlate) and encoding it again (which this replaces)."""
    ms = hot_path["message_scan"]
    line = tools_result(request_id=1_000_001)
    size = len(jsonrpc.decode(line, None).result)  # type: ignore[arg-type]
    benchmark_calls(benchmark, ms.splice_response, line, 1_000_001, 42, False, size)
    assert json.loads(ms.splice_response(line, 1_000_001, 42, False, size)) == \
        {**json.loads(line), "id": 42}


@pytest.mark.benchmark(group="Upstream request line, 300 B tools/call")
def test_request_line(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    """A client's request written for a stdio upstream under the gateway's id, its
    params as they came (``Connection.forward``; the gateway uses the compiled one and,
    pure, the encoder as ``test_jsonrpc_rewrite`` measures it)."""
    ms = hot_path["message_scan"]
    params = jsonrpc.decode(tools_call()).params
    benchmark_calls(benchmark, ms.request_line, 1_000_001, "tools/call", params, b"\n")
    line = ms.request_line(1_000_001, "tools/call", params, b"\n")
    assert json.loads(line) == {**json.loads(tools_call()), "id": 1_000_001}


@pytest.mark.benchmark(group="Client tools/call read in one pass (read_call), 300 B")
def test_read_call(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    """What replaces, on a legacy session's common call, the envelope's decode and the
    routing decode of params (``test_jsonrpc_rewrite`` and the route decode)."""
    ms = hot_path["message_scan"]
    data = express_call()
    benchmark_calls(benchmark, ms.read_call, data, 64)
    request_id, name, params = ms.read_call(data, 64)
    assert (request_id, name, json.loads(params)) == (
        json.loads(data)["id"], "search", json.loads(data)["params"])


@pytest.mark.benchmark(group="Repeated routing names in a call's params "
                             "(may_repeat_a_name), 300 B")
def test_may_repeat_a_name(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    """What every forwarded call pays while a policy is configured: whether its params
    may name a tool twice (then they are encoded again before they go on)."""
    ms = hot_path["message_scan"]
    params = ms.read_call(express_call(), 64)[2]
    benchmark_calls(benchmark, ms.may_repeat_a_name, params)
    assert ms.may_repeat_a_name(params) is False
    assert ms.may_repeat_a_name(params[:-1] + b',"name":"x"}') is True


@pytest.mark.benchmark(group="Upstream result read in one pass (read_result), 300 B")
def test_read_result(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    """What replaces the decode of an upstream's common result (``Connection.on_message``);
    ``respond_as`` then writes the client's id in (``test_response_splice``'s work)."""
    ms = hot_path["message_scan"]
    line = tools_result(request_id=1_000_001)
    benchmark_calls(benchmark, ms.read_result, line)
    assert ms.read_result(line) == 1_000_001
    assert json.loads(ms.respond_as(line, 42)) == {**json.loads(line), "id": 42}


@pytest.mark.benchmark(group="Routing lookup, tool in a 200-tool table")
def test_routing_lookup(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    rt = hot_path["routing_table"]
    table = rt.RoutingTable()
    names = [f"upstream{i % 8}__tool_{i}" for i in range(200)]
    for i, name in enumerate(names):
        assert table.add(rt.KIND_TOOL, name, i % 8, f"tool_{i}")
    # Every tool in turn rather than one hot name, as a mixed workload would.
    requested = [names[(i * 7) % 200] for i in range(CALLS)]
    benchmark.extra_info["calls"] = CALLS
    benchmark(run_batch, table.lookup, ([rt.KIND_TOOL] * CALLS, requested))
    assert table.lookup(rt.KIND_TOOL, "upstream5__tool_117") == (5, "tool_117")


@pytest.mark.benchmark(group="Token bucket take(), allowed, clock advancing")
def test_token_bucket_take(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    # Each call sees a later clock, as each request would, so every take() refills.
    # A fresh bucket per round keeps the clock from running backwards between rounds;
    # its burst is one that no round can drain, so every take() is allowed.
    token_bucket = hot_path["token_bucket"]
    clock = [i * 1e-5 for i in range(1, CALLS + 1)]

    def fresh_bucket() -> tuple[tuple[Any, ...], dict[str, Any]]:
        bucket = token_bucket.TokenBucket(rate=1000.0, burst=1e15, now=0.0)
        return (bucket.take, (clock,)), {}

    benchmark.extra_info["calls"] = CALLS
    benchmark.pedantic(run_batch, setup=fresh_bucket, rounds=2000, warmup_rounds=50)
    bucket = token_bucket.TokenBucket(rate=1000.0, burst=1e15, now=0.0)
    assert all(map(bucket.take, clock))


@pytest.mark.benchmark(group="NDJSON framing, one chunk of 16 lines of 300 B")
@pytest.mark.parametrize("implementation", ["pure"])
def test_ndjson_feed(benchmark: Any, implementation: str) -> None:
    lines = [tools_call(request_id, MESSAGE_SIZE - 1) for request_id in range(100, 116)]
    chunk = b"".join(line + b"\n" for line in lines)
    framer = LineFramer(4 * 1024 * 1024)
    benchmark_calls(benchmark, framer.feed, chunk)
    assert framer.feed(chunk) == lines


def _credential(auth: str) -> tuple[str, str]:
    """The config that requires ``auth`` (api_key or jwt), and a credential for it."""
    import hashlib
    import time

    if auth == "api_key":
        key = "mcpf_micro-bench-key-0123456789"
        digest = hashlib.sha256(key.encode()).hexdigest()
        return (f'[listen]\nauth = ["api_key"]\n[[auth.api_keys]]\nname = "bench"\n'
                f'hash = "sha256:{digest}"\n', key)
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    token = jwt.encode({"iss": "https://issuer.bench", "aud": "https://gw.bench/mcp",
                        "sub": "bench", "exp": int(time.time()) + 3600}, private,
                       algorithm="RS256")
    return (f'[listen]\nauth = ["jwt"]\n[auth]\nresource = "https://gw.bench/mcp"\n'
            f'[auth.jwt]\nissuer = "https://issuer.bench"\nkeys = {json.dumps([public])}\n',
            token)


@pytest.mark.benchmark(group="Gateway round trip, 300 B tools/call with a progress token, "
                             "routed by prefix")
@pytest.mark.parametrize("implementation", [mcpfast_ext.IMPLEMENTATION])
def test_gateway_round_trip(benchmark: Any, tmp_path: Any, implementation: str) -> None:
    """The gateway's own path for one ``tools/call``, in process: the client's request
    decoded, dispatched, routed, checked and written to the upstream; the upstream's
    answer correlated and written back to the client. Sockets and framing are left out
    (the upstream's write and the client's send append to lists), so this is the cost
    that the core adds, with whichever mcpfast_ext implementation is active."""
    _core_round_trip(benchmark, *gateway_in_process(tmp_path), tools_call())


@pytest.mark.benchmark(group="Gateway round trip, 300 B tools/call routed as named "
                             "(the express path)")
@pytest.mark.parametrize("implementation", [mcpfast_ext.IMPLEMENTATION])
def test_gateway_round_trip_express(benchmark: Any, tmp_path: Any, implementation: str) -> None:
    """As ``test_gateway_round_trip``, for the call most clients make: no ``_meta``, and
    a tool name the gateway does not rename (``routing.prefix = "conditional"``), which
    takes ``Requests._express``."""
    _core_round_trip(benchmark,
                     *gateway_in_process(tmp_path, '[routing]\nprefix = "conditional"\n'),
                     express_call())


def _core_round_trip(benchmark: Any, gateway: Any, upstream: Any, request: bytes) -> None:
    """``request`` (id 42) through ``gateway`` to ``upstream`` and its answer back, in
    process, once per call measured."""
    import asyncio

    to_client: list[bytes] = []
    session = initialized_session(gateway, to_client)
    answer = tools_result(request_id=999_999_999)
    head, tail = answer.split(b"999999999", 1)

    def round_trip(_: object) -> None:
        gateway.handle(session, request)
        upstream.on_message(head + str(upstream.connection._next_id).encode() + tail)

    benchmark.extra_info["calls"] = CALLS
    asyncio.run(_in_loop(benchmark, round_trip))
    assert to_client[-1].startswith(b'{"jsonrpc":"2.0","id":42,"result":'), to_client[-1][:80]
    assert not session.inflight and not upstream.pending


@pytest.mark.benchmark(group="Gateway round trip over Streamable HTTP, 300 B tools/call "
                             "with a progress token, legacy session")
@pytest.mark.parametrize("implementation", [mcpfast_ext.IMPLEMENTATION])
@pytest.mark.parametrize("auth", ["none", "api_key", "jwt"])
def test_http_round_trip(benchmark: Any, tmp_path: Any, implementation: str,
                         auth: str) -> None:
    """As ``test_gateway_round_trip``, from the HTTP request's bytes to the HTTP
    response's: the connection's parsing, the endpoint's checks and its session's
    stream, the core, and the response's head. Only the sockets are left out. With
    ``auth``, the gateway requires an API key or a JWT (RS256) and every request
    carries it: the cost of authenticating each request (from the cache after the
    first)."""
    import asyncio

    from mcpfast.transport.streamable import Endpoint
    from mcpfast.transport.tcp import TcpConnection

    settings, credential = _credential(auth) if auth != "none" else ("", "")
    authorization = f"Authorization: Bearer {credential}\r\n" if credential else ""
    gateway, upstream = gateway_in_process(tmp_path, settings)
    answer = tools_result(request_id=999_999_999)
    head, tail = answer.split(b"999999999", 1)

    def post(body: bytes, session_id: str = "") -> bytes:
        return ("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                "Accept: application/json, text/event-stream\r\n"
                "Content-Type: application/json\r\n" + authorization
                + (f"Mcp-Session-Id: {session_id}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
                   if session_id else "")
                + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def run() -> None:
        class Listener:
            def __init__(self) -> None:
                self.endpoint = Endpoint(gateway)
                self.connections: set[Any] = set()

        connection = TcpConnection(gateway, Listener())  # type: ignore[arg-type]
        transport = RecordingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connection.data_received(post(json.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"}}}).encode()))
        response_head = transport.written[-1].split(b"\r\n\r\n", 1)[0].decode()
        session_id = next(line.split(":", 1)[1].strip() for line in response_head.split("\r\n")
                          if line.lower().startswith("mcp-session-id:"))
        request = post(tools_call(), session_id)

        def round_trip(_: object) -> None:
            connection.data_received(request)
            upstream.on_message(head + str(upstream.connection._next_id).encode() + tail)

        benchmark.extra_info["calls"] = CALLS
        benchmark(run_batch, round_trip, (range(CALLS),))
        response = transport.written[-1]
        assert response.startswith(b"HTTP/1.1 200 OK\r\n"), response[:80]
        assert response.split(b"\r\n\r\n", 1)[1].startswith(
            b'{"jsonrpc":"2.0","id":42,"result":'), response[-120:]
        assert connection.exchange is None and not upstream.pending

    asyncio.run(run())


async def _in_loop(benchmark: Any, round_trip: Callable[[object], None]) -> None:
    """The upstream's writer and time-outs expect a running event loop."""
    benchmark(run_batch, round_trip, (range(CALLS),))
