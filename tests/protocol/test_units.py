"""Sans-I/O pieces: JSON-RPC envelopes, newline framing, HTTP request framing."""

from __future__ import annotations

import msgspec
import pytest

from mcpfast.protocol import jsonrpc
from mcpfast.protocol.http import HttpError, HttpRequestReader, format_response
from mcpfast.protocol.ndjson import OVERSIZED, LineFramer


@pytest.mark.parametrize("data,code", [
    (b"{oops", jsonrpc.PARSE_ERROR),
    (b"", jsonrpc.PARSE_ERROR),
    (b"[]", jsonrpc.INVALID_REQUEST),
    (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', jsonrpc.INVALID_REQUEST),
    (b'"just a string"', jsonrpc.INVALID_REQUEST),
    (b'{"id":1,"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":7}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"result":{},"error":{}}', jsonrpc.INVALID_REQUEST),
])
def test_decode_errors(data: bytes, code: int) -> None:
    with pytest.raises(jsonrpc.MessageError) as error:
        jsonrpc.decode(data)
    assert error.value.code == code


def test_decode_keeps_raw_params_and_id_types() -> None:
    env = jsonrpc.decode(b'{"jsonrpc":"2.0","id":"x","method":"m","params":{"a":[1, 2]}}')
    assert env.id == "x" and env.method == "m"
    assert bytes(env.params) == b'{"a":[1, 2]}'  # untouched bytes, spacing and all
    note = jsonrpc.decode(b'{"jsonrpc":"2.0","method":"n"}')
    assert note.id is msgspec.UNSET
    rewritten = jsonrpc.reencode(jsonrpc.Envelope(jsonrpc="2.0", id=7, method="m",
                                                  params=env.params))
    assert rewritten == b'{"jsonrpc":"2.0","id":7,"method":"m","params":{"a":[1, 2]}}'


def test_error_response_shape() -> None:
    data = msgspec.json.decode(jsonrpc.error_response(None, -32700, "bad"))
    assert data == {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "bad"}}


def test_line_framer() -> None:
    f = LineFramer(10)
    assert f.feed(b"a\nbb\r\n") == [b"a", b"bb"]
    assert f.feed(b"cc") == [] and f.buffered == 2
    assert f.feed(b"c\n\n") == [b"ccc"]
    assert f.feed(b"x" * 11) == [OVERSIZED]
    assert f.feed(b"still the long line\nok\n") == [b"ok"]
    assert f.feed(b"0123456789AB\nq\n") == [OVERSIZED, b"q"]
    assert f.buffered == 0


def test_http_reader_pipelined_and_upgrade() -> None:
    reader = HttpRequestReader()
    requests = reader.feed(b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
                           b"POST /b?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert [r.path for r in requests] == ["/a", "/b"]
    assert requests[0].header("x-a") == "1, 2" and requests[0].header_count("X-A") == 2
    assert requests[1].body == b"hi" and requests[1].target == "/b?q=1"
    upgrading = HttpRequestReader()
    (request,) = upgrading.feed(b"GET /mcp HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\n\r\n\x81\x80")
    assert request.upgrade and upgrading.upgraded_data == b"\x81\x80"


@pytest.mark.parametrize("data,status", [
    (b"BREW / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", 413),
])
def test_http_reader_errors(data: bytes, status: int) -> None:
    with pytest.raises(HttpError) as error:
        HttpRequestReader(max_body_bytes=5).feed(data)
    assert error.value.status == status


def test_format_response() -> None:
    assert format_response(404, [("X", "y")], b"nope", keep_alive=False) == (
        b"HTTP/1.1 404 Not Found\r\nX: y\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
