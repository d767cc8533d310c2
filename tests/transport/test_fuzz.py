"""Malformed input on every transport: the rules, the defects they fixed, and a fuzzer.

The rules (README, "Errors the gateway answers with"):

- A client message that is not JSON, not UTF-8, or nested deeper than
  ``listen.max_json_depth`` is answered -32700 and never forwarded. Its id is null, except
  for the last two when the members around the nested part name it. Valid JSON that is
  not a JSON-RPC 2.0 request is -32600.
- On WebSocket, a frame that breaks RFC 6455, a text message that is not UTF-8 or a binary
  message fails the connection: nothing after it is read, every request before it gets its
  answer, and then the close frame (1002, 1007, 1009, 1003) ends it.
- An upstream line that cannot be read is logged without a traceback and dropped, the
  lines after it are read as usual, and a response among the unreadable ones settles its
  request with an error instead of a time-out.

The fuzz tests are seeded (``MCPFAST_FUZZ_SEED`` replays a run) and bounded: batches of
mixed valid and malformed messages in one write, each followed by a sentinel request,
over raw sockets for speed. A failure names the seed and the batch.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mcpfast import config
from mcpfast.config import ConfigError
from mcpfast.protocol import jsonrpc
from mcpfast_ext import websocket_codec_py as codec

from ..conftest import ROOT, GatewayProcess

GARBLING_SERVER = str(ROOT / "tests" / "servers" / "garbling_server.py")
SEED = int(os.environ.get("MCPFAST_FUZZ_SEED", "8"))
MAX_DEPTH = 64
MAX_MESSAGE = 65536
INIT = {"protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "fuzz", "version": "0"}}
MODERN_VERSION = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "fuzz", "version": "0"}}
DEMO = {"command": ["python", "-m", "mcpfast.demo"]}
# Fewer log lines to write, and tracebacks (logged at ERROR) are what is looked for.
QUIET = {"logging": {"level": "info"}}


def fuzz_gateway(factory: Any, **listen: Any) -> GatewayProcess:
    gw: GatewayProcess = factory({"demo": DEMO}, listen={"max_message_bytes": MAX_MESSAGE,
                                                         **listen}, **QUIET)
    return gw


def assert_no_traceback(gw: GatewayProcess) -> None:
    log = gw.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


# ---------------------------------------------------------------------------------------
# The decoder's rules, in process


def deep_request(levels: int, request_id: Any = 7, open_: bytes = b"[") -> bytes:
    """A tools/call whose whole message nests ``levels`` deep (the envelope, params and
    arguments are the first three levels)."""
    inner = levels - 3
    if inner <= 0:
        value = b"1"
    elif open_ == b"[":
        value = b"[" * inner + b"]" * inner
    else:
        value = b'{"k":' * (inner - 1) + b"{}" + b"}" * (inner - 1)
    return (b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode()
            + b',"method":"tools/call","params":{"name":"echo","arguments":{"x":' + value
            + b"}}}")


def decode_error(data: bytes, max_depth: int | None = MAX_DEPTH) -> jsonrpc.MessageError:
    with pytest.raises(jsonrpc.MessageError) as caught:
        jsonrpc.decode(data, max_depth)
    return caught.value


@pytest.mark.parametrize("open_", [b"[", b"{"])
def test_nesting_up_to_the_limit_is_read_and_beyond_it_is_a_parse_error(open_: bytes) -> None:
    env = jsonrpc.decode(deep_request(MAX_DEPTH, open_=open_), MAX_DEPTH)
    assert env.id == 7
    for levels in (MAX_DEPTH + 1, 1000, 200_000):
        error = decode_error(deep_request(levels, open_=open_))
        assert error.code == jsonrpc.PARSE_ERROR
        assert f"deeper than {MAX_DEPTH}" in error.message
        assert (error.request_id, error.response_id) == (7, None)


def test_brackets_in_strings_do_not_count_as_nesting() -> None:
    text = json.dumps('[{"\\' * 200 + "\u00e9]")
    data = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo",'
            b'"arguments":{"text":' + text.encode() + b',"list":[' + b"[1]," * 300
            + b"2]}}}")
    assert jsonrpc.decode(data, 5).id == 1
    assert decode_error(data, 4).code == jsonrpc.PARSE_ERROR


def test_unclosed_brackets_count_as_levels() -> None:
    error = decode_error(b'{"jsonrpc":"2.0","id":"u","method":"x","params":' + b"[" * 80)
    assert error.code == jsonrpc.PARSE_ERROR and "deeper" in error.message
    # Shallow and truncated is an ordinary parse error.
    assert "truncated" in decode_error(b'{"jsonrpc":"2.0","id":1,"params":[[1,').message


def test_the_recursion_guard_when_depth_is_unlimited() -> None:
    # Before the fix: RecursionError escaped decode (and aborted the connection).
    error = decode_error(deep_request(5000), None)
    assert error.code == jsonrpc.PARSE_ERROR and error.request_id == 7
    error = decode_error(b"[" * 100_000, None)
    assert error.code == jsonrpc.PARSE_ERROR and error.request_id is None


def test_the_id_of_an_unread_message() -> None:
    deep = b"[" * 100 + b"]" * 100
    # jsonrpc and id last, as the TypeScript SDK writes them.
    ts = b'{"method":"ping","params":{"x":' + deep + b'},"jsonrpc":"2.0","id":"ts-1"}'
    assert decode_error(ts).request_id == "ts-1"
    response = b'{"jsonrpc":"2.0","id":12,"result":{"x":' + deep + b"}}"
    error = decode_error(response)
    assert (error.request_id, error.response_id) == (None, 12)
    # An id after the nested part of an unfinished message, or inside a string, is not
    # believed.
    assert decode_error(b'{"params":' + deep + b',"id":5').request_id is None
    assert decode_error(b'{"params":' + deep + b',"x":"\\",\\"id\\":5}"}').request_id is None
    assert decode_error(b'{"jsonrpc":"2.0","id":"a\xff","method":"x"}').request_id is None


@pytest.mark.parametrize("where", ["params", "key", "method", "after"])
def test_invalid_utf8_is_a_parse_error(where: str) -> None:
    data = {
        "params": b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"t":"\xc3\x28"}}',
        "key": b'{"jsonrpc":"2.0","id":3,"method":"ping","\xff":1}',
        "method": b'{"jsonrpc":"2.0","id":3,"method":"ping\xed\xa0\x80"}',
        "after": b'{"jsonrpc":"2.0","id":3,"method":"ping"} \xf8',
    }[where]
    # Before the fix, "params" and "key" decoded, and the bytes went on upstream.
    error = decode_error(data)
    assert error.code == jsonrpc.PARSE_ERROR
    assert "invalid UTF-8" in error.message
    assert error.request_id == 3


@pytest.mark.parametrize(("text", "at"), [
    (rb"a\ud800b", 1),              # msgspec called this "Input data was truncated"
    (rb"\uDBFF", 0),                # at the string's end, upper case
    (rb"a\udc00", 1),               # a low half alone
    (rb"\ud800\ud800\udc00", 0),    # a high half, then a whole pair
    (rb"\ud83d\ude00\ud83d", 12),   # a whole pair, then a high half
    (rb"\ud800\n\udc00", 0),        # an escape between the halves
    (rb"\\\ud800", 2),              # an escaped backslash, then the escape
])
def test_a_lone_surrogate_is_a_parse_error_that_names_it(text: bytes, at: int) -> None:
    head = b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"t":"'
    error = decode_error(head + text + b'"}}')
    assert error.code == jsonrpc.PARSE_ERROR
    lone = text[at:at + 6].decode()
    assert error.message == (f"Parse error: a lone UTF-16 surrogate ({lone}) at byte "
                             f"{len(head) + at}: a JSON string must be valid Unicode "
                             "(RFC 8259 8.2)")
    assert error.request_id == 4
    # In a member of the wrong type's message too (msgspec stops at the type first).
    error = decode_error(b'{"jsonrpc":"2.0","id":5,"method":1,"params":{"t":"' + text + b'"}}')
    assert error.code == jsonrpc.PARSE_ERROR and "lone UTF-16 surrogate" in error.message


@pytest.mark.parametrize("text", [rb"\ud800\udc00", rb"\uD83D\uDE00", rb"\\ud800",
                                  rb"\\\\ud800 \u00e9"])
def test_whole_pairs_and_escaped_backslashes_are_not_lone_surrogates(text: bytes) -> None:
    data = b'{"jsonrpc":"2.0","id":4,"method":"x","params":{"t":"' + text + b'"}}'
    assert jsonrpc.lone_surrogate(data) is None
    assert jsonrpc.decode(data).id == 4


@pytest.mark.parametrize("data", [
    b"[1,2", b'["a",', b"123abc", b'"unterminated', b'{"jsonrpc":"2.0","id":1.5,',
    b'{"jsonrpc":"2.0","id":1,"method":3', b'{"jsonrpc":"2.0","id":true}x',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"}', b"1 2",
])
def test_malformed_json_is_a_parse_error_even_when_its_start_has_the_wrong_shape(
        data: bytes) -> None:
    # Before the fix: msgspec stopped at the first value of the wrong type, and these
    # got -32600 (Invalid Request) although they are not JSON.
    assert decode_error(data).code == jsonrpc.PARSE_ERROR


@pytest.mark.parametrize("data", [
    b"[]", b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', b"123", b'"text"', b"null",
    b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', b'{"jsonrpc":"2.0","id":1,"method":3}',
])
def test_valid_json_of_the_wrong_shape_is_an_invalid_request(data: bytes) -> None:
    assert decode_error(data).code == jsonrpc.INVALID_REQUEST


@pytest.mark.parametrize("value", [2, 513, -1])
def test_max_json_depth_is_checked_at_load(value: int) -> None:
    with pytest.raises(ConfigError, match=r"^listen\.max_json_depth: must be between 3"):
        config.parse(f"[listen]\nmax_json_depth = {value}\n[upstreams.a]\ncommand = ['x']\n")


# ---------------------------------------------------------------------------------------
# Raw clients: bytes exactly as a fuzzer wants them, and everything the gateway sends


def request(request_id: Any, method: str, params: Any = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


def notification(method: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method}).encode()


class RawUnix:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(20)
        self.buf = b""

    def send_lines(self, lines: list[bytes]) -> None:
        self.sock.sendall(b"".join(line + b"\n" for line in lines))

    def receive(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def initialize(self) -> None:
        self.send_lines([request(0, "initialize", INIT)])
        answer = self.receive()
        assert answer is not None and "result" in answer, answer
        self.send_lines([notification("notifications/initialized")])

    def close(self) -> None:
        self.sock.close()


class RawWebSocket:
    """A client that masks its frames (5.3) and reads the server's, including the close."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        # Small writes in a row, the last one unanswered: without this, Nagle's algorithm
        # and delayed ACKs cost 40 ms a connection.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mcp\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            assert chunk, "the gateway closed during the WebSocket handshake"
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.parser = codec.FrameParser(expect_masked=False, max_payload=1 << 30)
        self.frames: list[tuple[bool, int, bytes]] = self.parser.feed(rest)
        self.eof = False

    @staticmethod
    def frame(payload: bytes, opcode: int = codec.OP_TEXT, fin: bool = True) -> bytes:
        return codec.encode_frame(opcode, payload, fin, b"\x1f\x8b\x00\xa5")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_texts(self, payloads: list[bytes]) -> None:
        self.sock.sendall(b"".join(self.frame(p) for p in payloads))

    def next_frame(self, timeout: float = 20.0) -> tuple[bool, int, bytes] | None:
        """The next frame, or None at EOF."""
        self.sock.settimeout(timeout)
        while not self.frames:
            if self.eof:
                return None
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                return None
            self.frames = self.parser.feed(chunk)
        return self.frames.pop(0)

    def receive(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next message, or None once the connection is over (close frame or EOF)."""
        frame = self.next_frame(timeout)
        while frame is not None and frame[1] == codec.OP_PONG:
            frame = self.next_frame(timeout)
        if frame is None:
            return None
        fin, opcode, payload = frame
        if opcode == codec.OP_CLOSE:
            self.frames.insert(0, frame)  # left for close_code()
            return None
        assert (fin, opcode) == (True, codec.OP_TEXT), frame
        # RFC 6455 5.6: a text frame is UTF-8; a gateway that forwards an upstream's bad
        # bytes breaks every client (defect 6).
        return json.loads(payload.decode("utf-8"))

    def close_code(self, timeout: float = 20.0) -> int | None:
        """Read to the end: the close frame's code (None if none came), asserting that
        nothing follows it but the end of the connection."""
        frame = self.next_frame(timeout)
        if frame is None:
            return None
        _, opcode, payload = frame
        assert opcode == codec.OP_CLOSE, f"expected the close frame, got {frame!r:.300}"
        code = int.from_bytes(payload[:2], "big")
        payload[2:].decode("utf-8")
        try:
            self.send(self.frame(payload[:2], codec.OP_CLOSE))  # 5.5.1: the echo
        except OSError:
            pass  # a failed connection (7.1.7) may be closed already
        # 5.5.1: nothing after the server's close frame; 7.1.1: then it closes TCP.
        assert self.next_frame(timeout) is None
        return code

    def initialize(self) -> None:
        self.send_texts([request(0, "initialize", INIT)])
        answer = self.receive()
        assert answer is not None and "result" in answer, answer
        self.send_texts([notification("notifications/initialized")])

    def close(self) -> None:
        self.sock.close()


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    messages: list[dict[str, Any]]


class RawHttp:
    """HTTP/1.1 on one kept-alive connection, requests pipelined; JSON and SSE bodies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        lines = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                 "Accept: application/json, text/event-stream",
                 "Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the gateway closed the HTTP connection")
        self.buf += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        data, self.buf = self.buf.split(marker, 1)
        return data

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, timeout: float = 20.0) -> HttpResponse:
        self.sock.settimeout(timeout)
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, v in (line.split(":", 1) for line in head[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                body += self._read_exactly(size)
                self._read_exactly(2)
                if size == 0:
                    break
        else:
            body = self._read_exactly(int(headers.get("content-length", "0")))
        content_type = headers.get("content-type", "")
        messages = []
        if content_type.startswith("text/event-stream"):
            for event in body.decode("utf-8").split("\n\n"):
                data = "\n".join(line[5:].lstrip() for line in event.split("\n")
                                 if line.startswith("data:"))
                if data:
                    messages.append(json.loads(data))
        elif content_type.startswith("application/json") and body:
            messages.append(json.loads(body.decode("utf-8")))
        return HttpResponse(status, headers, messages)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------------------------
# Defect 5 (deep JSON), 6 (invalid UTF-8) and 10 (answers dropped before a close), and the
# lower items, against a gateway process


def test_deep_json_over_websocket_and_unix_is_answered_and_the_connection_goes_on(
        gateway_factory: Any) -> None:
    gw = fuzz_gateway(gateway_factory)
    ws = RawWebSocket(gw.port)
    unix = RawUnix(gw.unix_path)
    try:
        ws.initialize()
        unix.initialize()
        batch = [request("before", "ping"), deep_request(1000, "deep"),
                 deep_request(MAX_DEPTH + 1, "just-too-deep"), request("after", "ping")]
        for client, send in ((ws, ws.send_texts), (unix, unix.send_lines)):
            # Before the fix: RecursionError aborted the connection with no close frame,
            # and "before" was never answered.
            send(batch)
            answers = {}
            for _ in range(4):
                message = client.receive()
                assert message is not None, f"the connection ended; answers: {answers}"
                answers[message["id"]] = message
            assert answers["before"]["result"] == {} and answers["after"]["result"] == {}
            for request_id in ("deep", "just-too-deep"):
                assert answers[request_id]["error"]["code"] == jsonrpc.PARSE_ERROR
                assert f"deeper than {MAX_DEPTH}" in answers[request_id]["error"]["message"]
    finally:
        ws.close()
        unix.close()
    assert_no_traceback(gw)


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_deep_json_and_invalid_utf8_over_http_are_400_parse_errors(
        gateway_factory: Any, era: str) -> None:
    gw = fuzz_gateway(gateway_factory)
    http = RawHttp(gw.port)
    try:
        headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": "ping"} \
            if era == "modern" else {}
        bodies = [deep_request(1000, "deep"),
                  b'{"jsonrpc":"2.0","id":"utf","method":"ping","params":{"x":"\xc0\xaf"}}']
        http.send(b"".join(http.post(body, headers) for body in bodies))
        for request_id in ("deep", "utf"):
            # Before the fix: 500 with a traceback (deep), and -32603 or a body forwarded
            # raw (invalid UTF-8).
            response = http.response()
            assert response.status == 400, response
            [message] = response.messages
            assert message["error"]["code"] == jsonrpc.PARSE_ERROR, message
            assert message["id"] == request_id
    finally:
        http.close()
    assert_no_traceback(gw)


def test_invalid_utf8_from_a_unix_client_is_a_parse_error_and_not_forwarded(
        gateway_factory: Any) -> None:
    gw = fuzz_gateway(gateway_factory)
    unix = RawUnix(gw.unix_path)
    try:
        unix.initialize()
        tools = _tool_names(unix)
        echo = next(name for name in tools if name.endswith("echo"))
        unix.send_lines([
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' + echo.encode()
            + b'","arguments":{"text":"\xff\xfe"}}}',
            request(2, "tools/call", {"name": echo, "arguments": {"text": "\u00e9 ok"}}),
        ])
        answers = {m["id"]: m for m in (unix.receive(), unix.receive()) if m is not None}
        assert answers[1]["error"]["code"] == jsonrpc.PARSE_ERROR
        assert "invalid UTF-8" in answers[1]["error"]["message"]
        assert answers[2]["result"]["content"][0]["text"] == "\u00e9 ok"
    finally:
        unix.close()
    assert_no_traceback(gw)


def test_the_configured_depth_limit_is_the_one_applied(gateway_factory: Any) -> None:
    gw = fuzz_gateway(gateway_factory, max_json_depth=16)
    unix = RawUnix(gw.unix_path)
    try:
        unix.initialize()
        unix.send_lines([deep_request(16, "16"), deep_request(17, "17")])
        answers = {m["id"]: m for m in (unix.receive(), unix.receive()) if m is not None}
        # Within the limit, read and routed (the demo then finds no text to echo).
        assert answers["16"].get("error", {}).get("code") != jsonrpc.PARSE_ERROR, answers
        assert answers["17"]["error"]["code"] == jsonrpc.PARSE_ERROR
        assert "deeper than 16 levels" in answers["17"]["error"]["message"]
    finally:
        unix.close()


def test_a_pretty_printed_request_reaches_a_stdio_upstream_in_one_line(
        gateway_factory: Any) -> None:
    """Found by the fuzzer: newlines between JSON tokens went on inside params, and the
    stdio upstream read two broken lines; the call waited for request_timeout."""
    gw = fuzz_gateway(gateway_factory)
    ws = RawWebSocket(gw.port)
    try:
        ws.initialize()
        echo = next(n for n in _tool_names(ws) if n.endswith("echo"))
        ws.send_texts([json.dumps(
            {"jsonrpc": "2.0", "id": "pretty", "method": "tools/call",
             "params": {"name": echo, "arguments": {"text": "line 1\nline 2"}}},
            indent=2).encode()])
        answer = ws.receive(timeout=5)
        assert answer is not None
        assert answer["result"]["content"][0]["text"] == "line 1\nline 2"
    finally:
        ws.close()


def _tool_names(client: RawUnix | RawWebSocket) -> list[str]:
    if isinstance(client, RawUnix):
        client.send_lines([request("list", "tools/list")])
    else:
        client.send_texts([request("list", "tools/list")])
    answer = client.receive()
    assert answer is not None and answer["id"] == "list", answer
    return [tool["name"] for tool in answer["result"]["tools"]]


def test_unreadable_upstream_lines_do_not_hide_the_good_ones(gateway_factory: Any) -> None:
    """One write from the upstream: a response nested 1,000 deep, one with invalid UTF-8,
    a notification with invalid UTF-8, a hopelessly deep line, then good responses."""
    gw = gateway_factory({"garbling": {"command": ["python", GARBLING_SERVER],
                                       "era": "legacy", "request_timeout": 30.0}}, **QUIET)
    ws = RawWebSocket(gw.port)
    try:
        ws.initialize()
        names = _tool_names(ws)
        hold = next(n for n in names if n.endswith("hold"))
        release = next(n for n in names if n.endswith("release"))
        # The server reads its lines in order: the four are held when release comes.
        ws.send_texts([request(f"held-{i}", "tools/call", {"name": hold, "arguments": {}})
                       for i in range(4)]
                      + [request("release", "tools/call", {"name": release, "arguments": {}})])
        started = time.monotonic()
        answers = {}
        while len(answers) < 5:
            message = ws.receive(timeout=15)
            # Before the fix: the invalid UTF-8 went out in a text frame (receive()
            # fails to decode it), or, with the deep line first, nothing came at all.
            assert message is not None, f"the connection ended; answers so far: {answers}"
            answers[message["id"]] = message
        # Well within request_timeout: no answer waited for a time-out.
        assert time.monotonic() - started < 10
        assert answers["release"]["result"]["content"][0]["text"] == "released 4"
        for i in (2, 3):
            assert answers[f"held-{i}"]["result"]["content"][0]["text"].endswith("released")
        for i in (0, 1):
            error = answers[f"held-{i}"]["error"]
            assert error["code"] == jsonrpc.INTERNAL_ERROR
            assert "garbling" in error["message"] and "invalid response" in error["message"]
        # The connection is still good.
        ws.send_texts([request("still", "ping")])
        assert ws.receive() == {"jsonrpc": "2.0", "id": "still", "result": {}}
    finally:
        ws.close()
    log = gw.log()
    assert "Traceback" not in log
    assert log.count("dropped an invalid message from the upstream") == 4, log


def _answers_then_close(ws: RawWebSocket) -> tuple[dict[Any, Any], int | None]:
    answers: dict[Any, Any] = {}
    while True:
        message = ws.receive()
        if message is None:
            break
        assert message.get("id") not in answers, f"answered twice: {message}"
        answers[message.get("id")] = message
    return answers, ws.close_code()


BAD_FRAMES: dict[str, tuple[Callable[[], bytes], int]] = {
    "invalid-utf8-text": (lambda: RawWebSocket.frame(b'{"jsonrpc":"2.0","id":"x","method":'
                                                     b'"ping","p":"\xff"}'), 1007),
    "invalid-utf8-fragments": (lambda: RawWebSocket.frame(b'{"a":"\xe2\x82', fin=False)
                               + RawWebSocket.frame(b'("}', codec.OP_CONT), 1007),
    "binary": (lambda: RawWebSocket.frame(request("x", "ping"), codec.OP_BINARY), 1003),
    "reserved-bits": (lambda: bytes([0xC1]) + RawWebSocket.frame(b"{}")[1:], 1002),
    "reserved-opcode": (lambda: bytes([0x83]) + RawWebSocket.frame(b"{}")[1:], 1002),
    "unmasked": (lambda: codec.encode_frame(codec.OP_TEXT, b"{}"), 1002),
    "orphan-continuation": (lambda: RawWebSocket.frame(b"{}", codec.OP_CONT), 1002),
    "fragmented-ping": (lambda: bytes([0x09]) + RawWebSocket.frame(b"hi", codec.OP_PING)[1:],
                        1002),
    "too-big": (lambda: bytes([0x81, 0xFF]) + (MAX_MESSAGE + 1).to_bytes(8, "big"), 1009),
    "bad-close-code": (lambda: RawWebSocket.frame(b"\x03\xed", codec.OP_CLOSE), 1002),
}


@pytest.mark.parametrize("bad", BAD_FRAMES)
def test_requests_before_a_websocket_protocol_error_are_answered_before_the_close(
        gateway_factory: Any, bad: str) -> None:
    gw = fuzz_gateway(gateway_factory)
    ws = RawWebSocket(gw.port)
    try:
        ws.initialize()
        echo = next(n for n in _tool_names(ws) if n.endswith("echo"))
        make, code = BAD_FRAMES[bad]
        good = [request("call", "tools/call", {"name": echo, "arguments": {"text": "hi"}}),
                request("ping", "ping"), b"{not json"]
        # One write: the forwarded call, a ping, a parse error, the bad frame, and a
        # request after it that must not be read.
        ws.send(b"".join(RawWebSocket.frame(p) for p in good) + make()
                + RawWebSocket.frame(request("after", "ping")))
        answers, close_code = _answers_then_close(ws)
        # Before the fix: the close frame came at once, and "call" (forwarded all the
        # same) was never answered; after a framing error, none of them was.
        assert answers["call"]["result"]["content"][0]["text"] == "hi"
        assert answers["ping"]["result"] == {}
        assert answers[None]["error"]["code"] == jsonrpc.PARSE_ERROR
        assert set(answers) == {"call", "ping", None}
        assert close_code == code
    finally:
        ws.close()
    assert_no_traceback(gw)


def test_a_request_still_running_after_a_protocol_error_is_answered_in_time(
        gateway_factory: Any) -> None:
    """The close waits for the answers owed, but not for ever: the demo's countdown takes
    longer than the gateway waits after a protocol error."""
    gw = fuzz_gateway(gateway_factory)
    ws = RawWebSocket(gw.port)
    try:
        ws.initialize()
        countdown = next(n for n in _tool_names(ws) if n.endswith("countdown"))
        ws.send(RawWebSocket.frame(request("slow", "tools/call", {
            "name": countdown, "arguments": {"n": 30}})) + BAD_FRAMES["binary"][0]())
        started = time.monotonic()
        answers, close_code = _answers_then_close(ws)
        assert 8 < time.monotonic() - started < 20
        assert answers["slow"]["error"]["code"] == jsonrpc.REQUEST_TIMEOUT
        assert close_code == 1003
    finally:
        ws.close()
    assert_no_traceback(gw)


def test_a_websocket_client_that_only_pings_is_not_idle(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": DEMO}, listen={"idle_timeout": 1.0}, **QUIET)
    pinging = RawWebSocket(gw.port)
    silent = RawWebSocket(gw.port)
    try:
        pinging.initialize()
        silent.initialize()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            pinging.send(RawWebSocket.frame(b"hb", codec.OP_PING))
            assert pinging.next_frame() == (True, codec.OP_PONG, b"hb")
            time.sleep(0.2)
        # Before the fix, the pinging client was closed as idle (1001) like the other.
        assert silent.close_code() == 1001
        pinging.send_texts([request("alive", "ping")])
        assert pinging.receive() == {"jsonrpc": "2.0", "id": "alive", "result": {}}
    finally:
        pinging.close()
        silent.close()


# ---------------------------------------------------------------------------------------
# The fuzzer: what each input must get, by an independent reading of it

PARSE, SHAPE, ANY, REQUEST, VALID, OVERSIZED = (
    "parse", "shape", "any", "request", "valid", "oversized")
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
            b"\xe2\x82", b"\xc0\xaf", b"\x80", b"\xf4\x90\x80\x80")
TEXT_ALPHABET = "abc xyz 019 [] {} \" \\ / \u00e9 \u2713 \U0001f600 \t : ,"
_CLAIMED_ID = re.compile(rb'"id"\s*:\s*(-?[0-9]{1,18}|"[^"\\]{0,80}")')


def key(request_id: Any) -> tuple[str, Any]:
    return type(request_id).__name__, request_id


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth_and_surrogates(value: Any) -> tuple[int, bool]:
    """How deep ``value`` nests, and whether a string in it holds a lone surrogate (JSON
    can escape one; msgspec, like many parsers, refuses it)."""
    deepest, surrogates, stack = 0, False, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            surrogates = surrogates or any(_SURROGATE.search(k) for k in item)
            item = list(item.values())
        elif isinstance(item, str):
            surrogates = surrogates or bool(_SURROGATE.search(item))
            continue
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack += [(child, level + 1) for child in item]
    return deepest, surrogates


def _claimed_ids(data: bytes) -> list[Any]:
    """Every id an unread message could be answered with: the gateway reads it from the
    members around the nested part; the fuzzer allows any ``"id":`` in the bytes."""
    ids = []
    for token in _CLAIMED_ID.findall(data):
        try:
            ids.append(json.loads(token))
        except ValueError:
            pass
    return ids


def classify(data: bytes) -> tuple[str, list[Any]]:
    """PARSE (-32700), SHAPE (-32600), REQUEST (a JSON-RPC 2.0 request: one answer, any
    answer) or ANY (another object: no crash), and the ids a response may carry, as the
    standard library reads ``data``."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return PARSE, _claimed_ids(data)
    depth, surrogates = _depth_and_surrogates(value)
    if depth > MAX_DEPTH or surrogates:
        return PARSE, _claimed_ids(data)
    if not isinstance(value, dict):
        return SHAPE, []
    request_id = value.get("id")
    if isinstance(request_id, str) or (
            isinstance(request_id, int) and not isinstance(request_id, bool)
            and -(2**63) <= request_id < 2**63):
        if value.get("jsonrpc") == "2.0" and isinstance(value.get("method"), str):
            return REQUEST, [request_id]
        return ANY, [request_id]
    return ANY, []


@dataclass
class Case:
    data: bytes
    kind: str
    ids: list[Any] = field(default_factory=list)
    check: Callable[[dict[str, Any]], bool] | None = None
    """For VALID: whether a response is the correct one."""


def _ok(result: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("result") == result


def _echoed(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("result", {}).get("content", [{}])[0].get("text") == text


def _listed(m: dict[str, Any]) -> bool:
    return isinstance(m.get("result", {}).get("tools"), list)


class Cases:
    """Seeded inputs for one connection; no two of them can be answered with one id."""

    def __init__(self, rng: random.Random, echo: str, *, utf8_only: bool = False,
                 newlines: bool = True, oversized: bool = False, modern: bool = False) -> None:
        self.rng = rng
        self.echo = echo
        self.utf8_only = utf8_only
        self.newlines = newlines
        self.oversized = oversized
        self.modern = modern
        self.counter = itertools.count()
        self.used: set[tuple[str, Any]] = set()

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "_meta": MODERN_META} if self.modern else params

    def _fresh(self, prefix: str) -> str:
        """An id nothing sent so far could be answered with (a mutation may have made
        "bad-12" out of "bad-13")."""
        while True:
            request_id = f"{prefix}-{next(self.counter)}"
            if key(request_id) not in self.used:
                return request_id

    def valid(self, request_id: Any | None = None) -> tuple[Case, str, str | None]:
        """A valid request, and the method and name its HTTP headers must carry."""
        rng = self.rng
        request_id = request_id if request_id is not None else self._fresh("ok")
        roll = rng.random()
        if roll < 0.45:
            text = "".join(rng.choice(TEXT_ALPHABET) for _ in range(rng.randint(0, 24)))
            params = self._params({"name": self.echo, "arguments": {"text": text}})
            data = request(request_id, "tools/call", params)
            if self.newlines and rng.random() < 0.2:  # pretty-printed: newlines between tokens
                data = json.dumps(json.loads(data), indent=rng.randint(0, 2)).encode()
            case, method, name = Case(data, VALID, [request_id], _echoed(text)), \
                "tools/call", self.echo
        elif roll < 0.5:
            case, method, name = Case(request(request_id, "tools/list", self._params({})),
                                      VALID, [request_id], _listed), "tools/list", None
        elif roll < 0.6:
            # Nested up to the limit exactly, brackets in its strings: read all the same.
            levels = MAX_DEPTH - 3
            nest = '{"k":' * (levels - 1) + '"[[{{\\"]"' + "}" * (levels - 1)
            method = "tools/list" if self.modern else "ping"
            data = (b'{"jsonrpc":"2.0","id":' + json.dumps(request_id).encode()
                    + b',"method":"' + method.encode() + b'","params":{"deep":'
                    + nest.encode() + b',"_meta":'
                    + json.dumps(MODERN_META if self.modern else {}).encode() + b"}}")
            case, name = Case(data, VALID, [request_id],
                              _listed if self.modern else _ok({})), None
        elif self.modern:  # ping is no more in 2026-07-28
            case, method, name = Case(request(request_id, "tools/list", self._params({})),
                                      VALID, [request_id], _listed), "tools/list", None
        else:
            case, method, name = Case(request(request_id, "ping"), VALID, [request_id],
                                      _ok({})), "ping", None
        self.used.add(key(request_id))
        return case, method, name

    def invalid(self) -> Case:
        """A malformed input, kept only if no earlier input could be answered with an id
        it could be answered with."""
        while True:
            data = self._malformed()
            if not self.newlines:
                data = data.replace(b"\n", b" ").rstrip(b"\r")
                if not data.strip(b" \t\r"):
                    continue  # a line of JSON whitespace only is no message there
            if self.utf8_only:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    continue
            if self.oversized and len(data) > MAX_MESSAGE:
                return Case(data, OVERSIZED)
            kind, ids = classify(data)
            keys = {key(i) for i in ids}
            if keys & self.used:
                continue
            self.used |= keys
            return Case(data, kind, ids)

    def _malformed(self) -> bytes:
        rng = self.rng
        base_id = self._fresh("bad")
        base = self.valid(base_id)[0].data
        self.used.discard(key(base_id))  # claimed by what is made of it, if anything
        roll = rng.random()
        if roll < 0.10:
            return rng.randbytes(rng.randint(1, 80))
        if roll < 0.15:
            return bytes(rng.choice(b'{}[]":,0123456789.eE+-truefalsn \\u') for _ in
                         range(rng.randint(1, 60)))
        if roll < 0.50:
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                pos = rng.randrange(len(data)) if data else 0
                if op < 0.4 and data:
                    data[pos] ^= 1 << rng.randrange(8)
                elif op < 0.6:
                    data[pos:pos] = rng.randbytes(rng.randint(1, 4))
                elif op < 0.8 and data:
                    del data[pos:pos + rng.randint(1, 6)]
                elif data:
                    data[pos] = rng.choice(b'{}[]",:\\')
            return bytes(data)
        if roll < 0.60:
            return base[:rng.randrange(1, len(base))]
        if roll < 0.67:
            return base + rng.choice([b"x", b",", b"}", b"{}", base, b"\x00", b" ]"])
        if roll < 0.77:
            pos = rng.randrange(len(base))
            return base[:pos] + rng.choice(BAD_UTF8) + base[pos:]
        if roll < 0.87:
            levels = rng.choice([MAX_DEPTH - 2, MAX_DEPTH + 1, MAX_DEPTH + 2,
                                 rng.randint(100, 3000)])
            opens = [rng.choice((b"[", b'{"k":')) for _ in range(levels)]
            closes = [b"]" if o == b"[" else b"}" for o in reversed(opens)]
            if rng.random() < 0.2:
                closes = closes[:rng.randrange(len(closes))]  # and unfinished
            return (b'{"jsonrpc":"2.0","id":"' + self._fresh("bad").encode()
                    + b'","method":"ping","params":{"x":' + b"".join(opens) + b"0"
                    + b"".join(closes) + b"}}")
        if roll < 0.97 or not self.oversized:
            return rng.choice([b"[]", b"[" + base + b"]", b"17", b'"ping"', b"null", b"true",
                               b'{"jsonrpc":"1.0","id":"x","method":"ping"}',
                               b'{"id":1,"method":"ping"}', b"{}", b"[1,2]",
                               b'{"jsonrpc":"2.0","id":null,"method":"ping"}',
                               b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}',
                               b'{"jsonrpc":"2.0","id":2e999,"method":"ping"}'])
        return base[:-2] + b',"pad":"' + b"x" * MAX_MESSAGE + b'"}}'


def check_answers(cases: list[Case], messages: list[dict[str, Any]],
                  answered: Counter[tuple[str, Any]], context: str) -> None:
    """Match what the gateway sent to what it was sent. ``answered`` counts the answers by
    id over the whole connection (late answers to an earlier batch included)."""
    by_id = {key(i): case for case in cases for i in case.ids}
    null_codes: Counter[int] = Counter()
    nulls = []
    for message in messages:
        assert message.get("jsonrpc") == "2.0" and "method" not in message, \
            f"{context}: unexpected message {message}"
        request_id = message.get("id")
        if request_id is None:
            null_codes[message["error"]["code"]] += 1
            nulls.append(message["error"]["message"][:120])
            continue
        answered[key(request_id)] += 1
        assert answered[key(request_id)] == 1, f"{context}: answered twice: {message}"
        case = by_id.get(key(request_id))
        if case is None:
            continue  # a late answer to an earlier batch's input, counted above
        if case.kind == VALID:
            assert case.check is not None and case.check(message), \
                f"{context}: wrong answer to {case.data!r:.300}: {message}"
        elif case.kind == PARSE:
            assert message.get("error", {}).get("code") == jsonrpc.PARSE_ERROR, \
                f"{context}: {case.data!r:.300} got {message}"
        elif case.kind == SHAPE:
            assert message.get("error", {}).get("code") == jsonrpc.INVALID_REQUEST, \
                f"{context}: {case.data!r:.300} got {message}"
    for case in cases:
        if case.kind in (VALID, REQUEST):
            assert answered[key(case.ids[0])] == 1, \
                f"{context}: no answer to the request {case.data!r:.300}"
    unanswered = Counter(case.kind for case in cases
                         if not any(answered[key(i)] for i in case.ids))
    described = ", ".join(f"{n} x {code}" for code, n in null_codes.items())
    unread = [repr(case.data[:120]) for case in cases
              if case.kind == PARSE and not any(answered[key(i)] for i in case.ids)]
    problem = (f"{context}: errors with a null id: {described}; inputs without an answer "
               f"by id: {dict(unanswered)}\nnull-id errors:\n  " + "\n  ".join(nulls)
               + "\nunread inputs not answered by id:\n  " + "\n  ".join(unread))
    assert null_codes[jsonrpc.PARSE_ERROR] == unanswered[PARSE], problem
    assert unanswered[SHAPE] + unanswered[OVERSIZED] <= null_codes[jsonrpc.INVALID_REQUEST] \
        <= unanswered[SHAPE] + unanswered[OVERSIZED] + unanswered[ANY], problem
    assert set(null_codes) <= {jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST}, problem


def _seeded(name: str) -> random.Random:
    return random.Random(f"{SEED}-{name}")


def _replay(name: str, batch: int) -> str:
    return f"seed {SEED} ({name}, batch {batch}): replay with MCPFAST_FUZZ_SEED={SEED}"


def _echo_name(client: RawUnix | RawWebSocket) -> str:
    return next(n for n in _tool_names(client) if n.endswith("echo"))


def _receive(client: RawUnix | RawWebSocket, timeout: float, waiting: set[Any],
             context: str) -> dict[str, Any] | None:
    try:
        return client.receive(timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"{context}: no answer to {sorted(waiting)[:10]} within "
                             f"{timeout:g} s") from None


def _stream_batches(client: RawUnix | RawWebSocket, send: Callable[[list[bytes]], None],
                    cases_for: Cases, name: str, batches: int, size: int) -> int:
    """Send ``batches`` writes of ``size`` inputs and a sentinel each; check every answer."""
    answered: Counter[tuple[str, Any]] = Counter()
    total = 0
    for batch in range(batches):
        context = _replay(name, batch)
        cases = [cases_for.valid()[0] if cases_for.rng.random() < 0.25 else cases_for.invalid()
                 for _ in range(size)]
        sentinel, _, _ = cases_for.valid(f"sentinel-{batch}")
        send([case.data for case in cases] + [sentinel.data])
        total += len(cases)
        waiting = {key(c.ids[0]) for c in [*cases, sentinel] if c.kind in (VALID, REQUEST)}
        messages = []
        deadline = time.monotonic() + 20
        while waiting:
            message = _receive(client, max(0.1, deadline - time.monotonic()), waiting, context)
            assert message is not None, f"{context}: the connection ended"
            messages.append(message)
            waiting.discard(key(message.get("id")))
        check_answers([*cases, sentinel], messages, answered, context)
    return total


def test_fuzz_unix(gateway_factory: Any) -> None:
    gw = fuzz_gateway(gateway_factory)
    unix = RawUnix(gw.unix_path)
    started = time.monotonic()
    try:
        unix.initialize()
        cases = Cases(_seeded("unix"), _echo_name(unix), newlines=False, oversized=True)
        total = _stream_batches(unix, unix.send_lines, cases, "unix", batches=300, size=100)
    finally:
        unix.close()
    assert gw.proc is not None and gw.proc.poll() is None
    assert_no_traceback(gw)
    print(f"unix: {total} inputs in {time.monotonic() - started:.1f} s", file=sys.stderr)


def test_fuzz_websocket_messages(gateway_factory: Any) -> None:
    gw = fuzz_gateway(gateway_factory)
    ws = RawWebSocket(gw.port)
    started = time.monotonic()
    try:
        ws.initialize()
        cases = Cases(_seeded("websocket"), _echo_name(ws), utf8_only=True)
        total = _stream_batches(ws, ws.send_texts, cases, "websocket", batches=300, size=100)
    finally:
        ws.close()
    assert gw.proc is not None and gw.proc.poll() is None
    assert_no_traceback(gw)
    print(f"websocket messages: {total} inputs in {time.monotonic() - started:.1f} s",
          file=sys.stderr)


def _http_check(case: Case, response: HttpResponse, context: str) -> None:
    shown = f"{context}: {case.data!r:.300} got {response.status} {response.messages}"
    assert response.status < 500, shown
    allowed = {key(i) for i in case.ids}
    for message in response.messages:
        if "method" in message:
            continue  # a notification on the request's stream
        request_id = message.get("id")
        assert request_id is None or key(request_id) in allowed, shown
        if case.kind in (ANY, REQUEST) and request_id is None:
            assert message["error"]["code"] in (jsonrpc.INVALID_REQUEST,
                                                 modern_header_mismatch()), shown
    answers = [m for m in response.messages if "method" not in m]
    if case.kind == VALID:
        assert response.status == 200 and len(answers) == 1, shown
        assert case.check is not None and case.check(answers[0]), shown
    elif case.kind in (PARSE, SHAPE):
        code = jsonrpc.PARSE_ERROR if case.kind == PARSE else jsonrpc.INVALID_REQUEST
        assert response.status == 400 and len(answers) == 1, shown
        assert answers[0]["error"]["code"] == code, shown
    elif case.kind == REQUEST:
        assert len(answers) == 1 and answers[0].get("id") == case.ids[0], shown
    else:
        assert len(answers) <= 1, shown


def modern_header_mismatch() -> int:
    from mcpfast.protocol import modern
    return modern.HEADER_MISMATCH


def _http_batches(http: RawHttp, cases_for: Cases, headers_for: Callable[[str, str | None],
                  dict[str, str]], name: str, batches: int, size: int) -> int:
    total = 0
    for batch in range(batches):
        context = _replay(name, batch)
        posts = []
        cases = []
        for _ in range(size):
            if cases_for.rng.random() < 0.25:
                case, method, tool = cases_for.valid()
            else:
                # The headers of the request it was made from: a modern body that no longer
                # agrees with them is a -32020, one that is not JSON still a -32700.
                _, method, tool = cases_for.valid(cases_for._fresh("hdr"))
                case = cases_for.invalid()
            cases.append(case)
            posts.append(http.post(case.data, headers_for(method, tool)))
        sentinel, method, tool = cases_for.valid(f"sentinel-{batch}")
        cases.append(sentinel)
        posts.append(http.post(sentinel.data, headers_for(method, tool)))
        http.send(b"".join(posts))
        for case in cases:
            _http_check(case, http.response(), context)
        total += size
    return total


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_fuzz_http(gateway_factory: Any, era: str) -> None:
    gw = fuzz_gateway(gateway_factory)
    http = RawHttp(gw.port)
    started = time.monotonic()
    try:
        if era == "legacy":
            http.send(http.post(request(0, "initialize", INIT), {}))
            session = http.response().headers["mcp-session-id"]
            http.send(http.post(notification("notifications/initialized"),
                                {"Mcp-Session-Id": session}))
            assert http.response().status == 202

            def headers_for(method: str, tool: str | None) -> dict[str, str]:
                return {"Mcp-Session-Id": session}
        else:
            def headers_for(method: str, tool: str | None) -> dict[str, str]:
                headers = {"MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
                if tool is not None:
                    headers["Mcp-Name"] = tool
                return headers
        # A legacy session's request is legacy: a modern body there needs the modern
        # version header (the header must match the body), which a session's requests
        # do not carry.
        http.send(http.post(request("list", "tools/list",
                                    {"_meta": MODERN_META} if era == "modern" else {}),
                            headers_for("tools/list", None)))
        [listed] = http.response().messages
        echo = next(t["name"] for t in listed["result"]["tools"] if t["name"].endswith("echo"))
        cases = Cases(_seeded(f"http-{era}"), echo, modern=era == "modern")
        total = _http_batches(http, cases, headers_for, f"http-{era}", batches=200, size=50)
    finally:
        http.close()
    assert gw.proc is not None and gw.proc.poll() is None
    assert_no_traceback(gw)
    print(f"http {era}: {total} inputs in {time.monotonic() - started:.1f} s", file=sys.stderr)


def _frames_for(rng: random.Random, payload: bytes) -> list[bytes]:
    """One text message, as one frame or as fragments with control frames between them."""
    if len(payload) < 2 or rng.random() < 0.7:
        return [RawWebSocket.frame(payload)]
    cuts = sorted(rng.sample(range(1, len(payload)), min(len(payload) - 1, rng.randint(1, 3))))
    pieces = [payload[a:b] for a, b in itertools.pairwise([0, *cuts, len(payload)])]
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(RawWebSocket.frame(piece, codec.OP_CONT if i else codec.OP_TEXT,
                                         fin=i == len(pieces) - 1))
        if rng.random() < 0.3:
            frames.append(RawWebSocket.frame(b"p", rng.choice((codec.OP_PING, codec.OP_PONG))))
    return frames


def _disruption(rng: random.Random, cases: Cases) -> bytes:
    roll = rng.random()
    if roll < 0.35:
        frame = bytearray(RawWebSocket.frame(cases.valid()[0].data))
        for _ in range(rng.randint(1, 2)):
            bit = rng.randrange(8 * min(len(frame), 10))
            frame[bit // 8] ^= 1 << (bit % 8)
        return bytes(frame)
    if roll < 0.75:
        return rng.choice(list(BAD_FRAMES.values()))[0]()
    if roll < 0.9:
        base = cases.valid()[0].data
        pos = rng.randrange(len(base))
        return b"".join(_frames_for(rng, base[:pos] + rng.choice(BAD_UTF8) + base[pos:]))
    return b""


CONNECTIONS = 3000


def test_fuzz_websocket_frames(gateway_factory: Any) -> None:
    """Valid and malformed messages, some fragmented, then a frame that may break RFC 6455
    and more messages, in one write. What the gateway must read of it is what the
    connection's own sans-I/O rules read (protocol/websocket.py, tested on its own against
    the websockets library); this checks that the gateway answers every request read before
    the failure, exactly once, and then sends the right close frame and nothing else."""
    from mcpfast.protocol.websocket import (
        OPEN,
        BinaryMessage,
        Closed,
        Failed,
        TextMessage,
        WebSocketConnection,
    )

    gw = fuzz_gateway(gateway_factory)
    rng = _seeded("websocket-frames")
    first = RawWebSocket(gw.port)
    first.initialize()
    cases_for = Cases(rng, _echo_name(first))
    first.close()
    started = time.monotonic()
    answered: Counter[tuple[str, Any]] = Counter()
    total = codes = 0
    for connection in range(CONNECTIONS):
        context = _replay("websocket-frames", connection)
        ws = RawWebSocket(gw.port)
        ws.initialize()
        sent = [cases_for.valid()[0] if rng.random() < 0.5 else cases_for.invalid()
                for _ in range(rng.randint(0, 12))]
        after = [cases_for.valid()[0] for _ in range(rng.randint(0, 3))]
        sentinel = cases_for.valid(f"sentinel-{connection}")[0]
        wire = b"".join(f for case in sent for f in _frames_for(rng, case.data)) \
            + _disruption(rng, cases_for) \
            + b"".join(f for case in [*after, sentinel] for f in _frames_for(rng, case.data))
        model = WebSocketConnection(max_message_bytes=MAX_MESSAGE)
        model.receive_data(wire)
        events = model.events_received()
        if model.state is OPEN and not any(e == TextMessage(sentinel.data) for e in events):
            # A length made longer left a frame unfinished: zeros finish it whatever its
            # length, then fail as unmasked frames, so that every connection ends in a
            # known way rather than a wait.
            wire += bytes(MAX_MESSAGE + 64)
            model = WebSocketConnection(max_message_bytes=MAX_MESSAGE)
            model.receive_data(wire)
            events = model.events_received()
        known = {case.data: case for case in [*sent, *after, sentinel]}
        delivered: list[Case] = []
        close_code = None
        peer_closed = False
        for event in events:
            if isinstance(event, TextMessage):
                case = known.get(event.data)
                if case is None:  # a frame boundary moved: what it is now, unowned ids
                    kind, ids = classify(event.data)
                    ids = [i for i in ids if key(i) not in cases_for.used]
                    case = Case(event.data, ANY if kind == REQUEST and not ids else kind, ids)
                delivered.append(case)
            elif isinstance(event, BinaryMessage):
                close_code = 1003
                break
            elif isinstance(event, Failed):
                close_code = event.code
                break
            elif isinstance(event, Closed):
                close_code, peer_closed = event.code, True
                break
        if peer_closed:
            # The peer closed first: what it asked before may be cancelled unanswered.
            delivered = [Case(c.data, ANY, c.ids) if c.kind == REQUEST else c
                         for c in delivered if c.kind != VALID]
        ws.send(wire)
        waiting = {key(c.ids[0]) for c in delivered if c.kind in (VALID, REQUEST)}
        assert close_code is not None or sentinel in delivered, context
        messages = []
        while close_code is not None or waiting:
            message = _receive(ws, 20, waiting, context)
            if message is None:
                break
            messages.append(message)
            waiting.discard(key(message.get("id")))
        check_answers(delivered, messages, answered, context)
        if close_code is not None:
            got = ws.close_code()
            expected = None if close_code == 1005 else close_code
            if close_code == 1005:
                got = None if got == 0 else got
            assert got == expected, f"{context}: closed with {got}, not {close_code}"
            codes += 1
        ws.close()
        total += len(sent) + len(after) + 1
    assert gw.proc is not None and gw.proc.poll() is None
    assert_no_traceback(gw)
    print(f"websocket frames: {total} messages, {codes} closes, {CONNECTIONS} connections in "
          f"{time.monotonic() - started:.1f} s", file=sys.stderr)
