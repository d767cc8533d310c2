"""Sans-I/O pieces: JSON-RPC envelopes, newline framing, HTTP request framing."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import msgspec
import pytest

from mcpfast.protocol import jsonrpc
from mcpfast.protocol.http import HttpError, HttpRequestReader, format_response, refresh_date
from mcpfast.protocol.ndjson import HEAD_BYTES, MAX_HEADS, OVERSIZED, LineFramer


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
    # JSON's blanks around a line go; a line of blanks only is none (both paths).
    assert f.feed(b" \t{}\r\n \t \r\n\t\n") == [b"{}"]
    assert f.feed(b" \t") == [] and f.feed(b"\r\n {} \n") == [b"{}"]
    assert f.feed(b"\x0c{}\n") == [b"\x0c{}"]  # not JSON whitespace: left to the parser
    # What follows the last newline, at the end of the input.
    assert f.feed(b"{}\n {\"a\":1} ") == [b"{}"] and f.rest() == b'{"a":1}'
    assert f.rest() == b"" and f.buffered == 0
    assert f.feed(b"x" * 11) == [OVERSIZED] and f.rest() == b""
    assert f.feed(b"ok\n") == [b"ok"]


def test_line_framer_keeps_the_beginning_of_each_oversized_line() -> None:
    """What an oversized line says of itself (the id of the request it answers) is kept,
    in order, whether the line came whole or in pieces; a reader that never asks holds
    no more than MAX_HEADS."""
    f = LineFramer(10)
    assert f.feed(b' {"id":1,"x":"long"}\n{"id":2,') == [OVERSIZED]
    assert f.feed(b'"more"}\nok\n') == [OVERSIZED, b"ok"]
    assert (f.pop_head(), f.pop_head(), f.pop_head()) == (b'{"id":1,"x":"long"}',
                                                          b'{"id":2,"more"}', b"")
    for _ in range(MAX_HEADS + 5):
        f.feed(b"z" * (HEAD_BYTES + 50) + b"\n")
    heads = [f.pop_head() for _ in range(MAX_HEADS + 1)]
    assert heads[:MAX_HEADS] == [b"z" * HEAD_BYTES] * MAX_HEADS and heads[-1] == b""


def test_line_framer_reads_a_stream_alike_however_it_is_cut() -> None:
    """Random streams fed in random pieces: the lines come out as the stream's lines
    read whole would, each oversized one (the last, unfinished, included) once."""
    rng = random.Random(23)
    for _ in range(500):
        limit = rng.choice([4, 10, 64])
        stream = b"".join(rng.choice([b"\n", b" ", b"\t", b"\r", b"{}", b"ab", b"x" * 9,
                                      b"y" * 70]) for _ in range(rng.randrange(40)))
        *complete, unfinished = stream.split(b"\n")
        expected: list[bytes | None] = [
            OVERSIZED if len(line) > limit else line.strip(b" \t\r") for line in complete]
        expected = [line for line in expected if line is OVERSIZED or line]
        if len(unfinished) > limit:
            expected.append(OVERSIZED)
        framer = LineFramer(limit)
        got: list[bytes | None] = []
        at = 0
        while at < len(stream):
            size = rng.choice([1, 2, 5, 13, 100, 1000])
            got += framer.feed(stream[at:at + size])
            at += size
        assert got == expected, (limit, stream)
        assert framer.rest() == (b"" if len(unfinished) > limit
                                 else unfinished.strip(b" \t\r"))


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
    refresh_date()  # (a listener does each second)
    response = format_response(404, [("X", "y")], b"nope", keep_alive=False)
    status, date, rest = response.split(b"\r\n", 2)
    assert status == b"HTTP/1.1 404 Not Found"
    # RFC 9110 6.6.1, in IMF-fixdate.
    sent = parsedate_to_datetime(date.removeprefix(b"Date: ").decode())
    assert date.endswith(b" GMT") and abs(sent.timestamp() - time.time()) < 5
    assert rest == b"X: y\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
    # An option for Connection joins the close in one field (426's Upgrade).
    closing = format_response(426, [("Connection", "Upgrade")], keep_alive=False)
    assert b"\r\nConnection: Upgrade, close\r\n" in closing and closing.count(b"Connection") == 1


# -- jsonrpc.decode: what a client is told, and with which id ----------------------------

DEEP = b"[" * 100 + b"]" * 100


def decode_error(data: bytes, max_depth: int | None = jsonrpc.DEFAULT_MAX_DEPTH,
                 ) -> jsonrpc.MessageError:
    with pytest.raises(jsonrpc.MessageError) as caught:
        jsonrpc.decode(data, max_depth)
    return caught.value


@pytest.mark.parametrize("data", [
    b'{"jsonrpc":"2.0","id":1,"result":{"ok":true}}',
    b'{"jsonrpc":"2.0","id":"r","error":{"code":-32601,"message":"nope"}}',
])
def test_decode_reads_responses(data: bytes) -> None:
    # A client's answer to a sampling or elicitation request, an upstream's result.
    env = jsonrpc.decode(data)
    assert env.method is msgspec.UNSET and env.id in (1, "r")
    assert (env.result is msgspec.UNSET) != (env.error is msgspec.UNSET)


@pytest.mark.parametrize("data,request_id", [
    # Not a request, a notification or a response, though it has an id.
    (b'{"jsonrpc":"2.0","id":4}', 4),
    (b'{"jsonrpc":"1.0","id":"old","method":"ping"}', "old"),
    (b'{"id":9,"method":"ping"}', 9),
    # A result without an id answers nothing.
    (b'{"jsonrpc":"2.0","result":{}}', None),
    (b'{"jsonrpc":"2.0","error":{"code":1,"message":"m"}}', None),
    (b'{"jsonrpc":"1.0","id":[1],"method":"ping"}', None),
    # A member of the wrong type: the id is read all the same (found by an outside
    # sweep: answered with a null id).
    (b'{"jsonrpc":"2.0","id":1,"method":7}', 1),
    (b'{"jsonrpc":"2.0","method":["x"],"id":"x"}', "x"),
    (b'{"jsonrpc":"2.0","id":true,"method":7}', None),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', None),
])
def test_an_invalid_request_is_answered_with_its_id(data: bytes, request_id: object) -> None:
    error = decode_error(data)
    assert error.code == jsonrpc.INVALID_REQUEST
    assert error.request_id == request_id and error.response_id is None
    assert error.message.startswith("Invalid Request: ")
    assert str(error) == error.message  # what a traceback or a log line shows


def test_the_invalid_request_message_names_the_problem() -> None:
    batch = decode_error(b'  [{"jsonrpc":"2.0","id":1,"method":"ping"}]')
    assert batch.message == jsonrpc.BATCH_REFUSED and batch.batch
    shape = decode_error(b'{"jsonrpc":"2.0","id":1,"method":7}')
    assert shape.message.startswith("Invalid Request: ") and "batch" not in shape.message
    assert "str" in shape.message  # msgspec's account of the wrong type


@pytest.mark.parametrize("data", [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{\n"name":"echo",\n'
    b'"arguments":{"text":"a"}\n}\n}',
    # A newline as the very first byte, and one inside params.
    b'\n{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{\n"name":"echo"}}',
])
def test_a_clients_newlines_never_reach_the_forwarded_params(data: bytes) -> None:
    # Params go on unread to stdio upstreams, where a newline ends a message.
    env = jsonrpc.decode(data)
    assert b"\n" not in bytes(env.params)
    assert msgspec.json.decode(bytes(env.params))["name"] == "echo"
    # An upstream's message (no depth limit) is kept as it came.
    assert b"\n" in bytes(jsonrpc.decode(data, None).params)


def test_an_escaped_backslash_does_not_end_a_string_for_the_depth_count() -> None:
    # "x\\" is a string ending in a backslash; the brackets after it are in a string.
    data = (b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":"x\\\\","b":"'
            + b"[" * 10 + b'"}}')
    assert jsonrpc.decode(data, 5).id == 1
    # The envelope and params are two levels; the same brackets outside the string count.
    assert jsonrpc.decode(data.replace(b'"' + b"[" * 10 + b'"', b"[" * 3 + b"]" * 3), 5).id == 1
    assert decode_error(data.replace(b'"' + b"[" * 10 + b'"', b"[" * 4 + b"]" * 4),
                        5).code == jsonrpc.PARSE_ERROR


@pytest.mark.parametrize("data,request_id,response_id", [
    # An id inside params is not the message's.
    (b'{"jsonrpc":"2.0","method":"m","params":{"id":99,"x":' + DEEP + b'},"id":5}', 5, None),
    (b'{"jsonrpc":"2.0","id":6,"method":"m","params":{"id":99,"x":' + DEEP + b"}}", 6, None),
    # A request whose method comes after a nested member is still answered with its id.
    (b'{"jsonrpc":"2.0","id":7,"params":{"x":' + DEEP + b'},"method":"m","more":{}}',
     7, None),
    # Responses, by their result or their error, are not answered.
    (b'{"jsonrpc":"2.0","id":12,"error":{"code":1,"message":"m","data":' + DEEP + b"}}",
     None, 12),
    (b'{"jsonrpc":"2.0","id":13,"result":{"x":' + DEEP + b"}}", None, 13),
])
def test_the_id_of_a_message_too_deep_to_read(data: bytes, request_id: object,
                                              response_id: object) -> None:
    error = decode_error(data)
    assert error.code == jsonrpc.PARSE_ERROR and "deeper than" in error.message
    assert (error.request_id, error.response_id) == (request_id, response_id)


@pytest.mark.parametrize("data", [
    b'{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":-1,"message":"x"}}',
    b'{"jsonrpc":"2.1","id":1,"result":{}}',
    b'{"jsonrpc":"1.0","id":1,"error":{"code":-1,"message":"x"}}',
    b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}',
])
def test_an_invalid_response_is_not_answered_with_its_id(data: bytes) -> None:
    """Its id is one of the receiver's own requests: an error carrying it would settle
    that request at the sender (JSON-RPC 2.0 section 5: responses are never answered)."""
    error = decode_error(data)
    assert error.code == jsonrpc.INVALID_REQUEST
    assert (error.request_id, error.response_id) == (None, 1)
    # A request with the wrong version is still answered with its id.
    error = decode_error(b'{"jsonrpc":"2.1","id":1,"method":"ping"}')
    assert (error.request_id, error.response_id) == (1, None)


def test_the_id_of_an_unread_message_is_looked_for_in_bounded_places() -> None:
    """Among the first HEAD_MEMBERS outer members, and after the last nested value; not
    past the first ones when they run out before a nested value."""
    assert jsonrpc.HEAD_MEMBERS == 16

    def plain(count: int) -> bytes:
        return b"".join(b'"k%d":%d,' % (i, i) for i in range(count))
    found = decode_error(b"{" + plain(15) + b'"id":16,"x":' + DEEP + b"}")
    assert found.request_id == 16
    beyond = decode_error(b"{" + plain(16) + b'"id":17,"x":' + DEEP + b"}")
    assert beyond.request_id is None
    after = decode_error(b"{" + plain(20) + b'"x":' + DEEP + b',"id":5,"jsonrpc":"2.0"}')
    assert after.request_id == 5


def test_message_builders() -> None:
    def read(data: bytes) -> object:
        return msgspec.json.decode(data)
    assert read(jsonrpc.result_response(3, {"a": 1})) == {"jsonrpc": "2.0", "id": 3,
                                                           "result": {"a": 1}}
    assert read(jsonrpc.request("r", "ping")) == {"jsonrpc": "2.0", "id": "r", "method": "ping"}
    assert read(jsonrpc.request(2, "tools/list", {"cursor": "c"})) == {
        "jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": "c"}}
    assert read(jsonrpc.notification("notifications/initialized")) == {
        "jsonrpc": "2.0", "method": "notifications/initialized"}
    assert read(jsonrpc.notification("notifications/cancelled", {"requestId": 1})) == {
        "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}


def test_sse_parser_whole_and_byte_by_byte() -> None:
    from mcpfast.protocol.sse import SseEvent, SseParser

    stream = (b": keep-alive\r\nid: s_1\r\ndata: {\"a\":1}\r\n\r\n"
              b"event: other\ndata: line 1\ndata:line 2\n\n"
              b"retry: 250\rid: s_2\rdata: z\r\r"
              b"id: bad\0id\ndata\n\n")
    expected = [SseEvent(b'{"a":1}', "message", "s_1"),
                SseEvent(b"line 1\nline 2", "other", "s_1"),
                SseEvent(b"z", "message", "s_2"), SseEvent(b"", "message", "s_2")]
    whole = SseParser(1000)
    # A bare "data" line makes an event with empty data, which is dispatched (HTML 9.2.6).
    assert whole.feed(stream) == expected
    assert whole.retry_ms == 250 and whole.last_id == "s_2"  # an id with NUL is ignored
    one_by_one = SseParser(1000)
    events = [e for i in range(len(stream)) for e in one_by_one.feed(stream[i:i + 1])]
    assert events == expected


def test_sse_parser_bounds_an_event() -> None:
    from mcpfast.protocol.sse import SseParser

    parser = SseParser(16)
    with pytest.raises(ValueError, match="over 16 bytes"):
        parser.feed(b"data: " + b"x" * 20)


def test_sse_parser_last_id_is_the_last_dispatched_event() -> None:
    """A stream cut after an event's ``id`` line, before its blank line: resuming from
    that id would skip the event that never came (HTML 9.2.6, "last event ID string")."""
    from mcpfast.protocol.sse import SseEvent, SseParser

    parser = SseParser(1000)
    assert parser.feed(b"id: s_1\ndata: 1\n\nid: s_2\ndata: {\"id\":2,\"res") == [
        SseEvent(b"1", "message", "s_1")]
    assert parser.last_id == "s_1"
    assert parser.feed(b"ult\":{}}\n\n") == [
        SseEvent(b'{"id":2,"result":{}}', "message", "s_2")]
    assert parser.last_id == "s_2"
    parser.feed(b"id\ndata: 3\n\n")  # an empty id: no Last-Event-ID any more
    assert parser.last_id is None


def test_sse_parser_reset_drops_the_partial_event() -> None:
    """A resumed stream's first event is not glued onto the dropped stream's tail."""
    from mcpfast.protocol.sse import SseEvent, SseParser

    parser = SseParser(1000)
    parser.feed(b"retry: 250\nid: s_1\ndata: {\"id\":1}\n\nid: s_2\nevent: other\n"
                b"data: {\"id\":2,\"res\r")
    parser.reset()
    assert (parser.last_id, parser.retry_ms) == ("s_1", 250)
    assert parser.feed(b"\ndata: {\"id\":2}\n\n") == [SseEvent(b'{"id":2}', "message", "s_1")]
    assert parser.last_id == "s_1"


def test_sse_parser_recovers_from_an_event_over_the_limit() -> None:
    """The event over the limit is dropped with its stream; the parser read from the
    next connection is not still over the limit."""
    from mcpfast.protocol.sse import SseEvent, SseParser

    parser = SseParser(16)
    with pytest.raises(ValueError, match="over 16 bytes"):
        parser.feed(b"id: s_1\ndata: " + b"x" * 20)
    assert parser.feed(b"id: s_2\ndata: ok\n\n") == [SseEvent(b"ok", "message", "s_2")]
