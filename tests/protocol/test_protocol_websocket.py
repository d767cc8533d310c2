"""The WebSocket handshake and connection rules, against both frame codecs.

Client frames are built with the codec under test (masked, as a browser would send
them); what the server sends is read back with an unmasked parser. The interop tests
drive the ``websockets`` library's own sans-I/O client against ours, in memory.
"""

from __future__ import annotations

import base64
from types import ModuleType

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State as PeerState
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from mcpfast.protocol import websocket
from mcpfast.protocol.http import (
    HttpError,
    HttpRequest,
    HttpRequestReader,
    error_response,
)
from mcpfast.protocol.websocket import (
    CLOSED,
    CLOSING,
    FAILING,
    OPEN,
    BinaryMessage,
    Closed,
    Failed,
    HandshakeError,
    TextMessage,
    WebSocketConnection,
    accept_handshake,
)

from ..conftest import twin

OP_CONT, OP_TEXT, OP_BINARY = 0, 1, 2
OP_CLOSE, OP_PING, OP_PONG = 8, 9, 10

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MAX = 1024


@pytest.fixture(params=["py", "c"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = twin(request, "websocket_codec")
    monkeypatch.setattr(websocket, "websocket_codec", module)
    return module


class Client:
    """The client end of a connection under test: masks what it sends, parses what the
    server sent."""

    def __init__(self, codec: ModuleType, max_message_bytes: int = MAX) -> None:
        self.codec = codec
        self.conn = WebSocketConnection(max_message_bytes=max_message_bytes)

    def frame(self, opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
        return self.codec.encode_frame(opcode, payload, fin, b"abcd")

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.conn.receive_data(self.frame(opcode, payload, fin))

    def received(self) -> list[tuple[bool, int, bytes]]:
        parser = self.codec.FrameParser(expect_masked=False, max_payload=1 << 24)
        frames = parser.feed(b"".join(self.conn.data_to_send()))
        assert parser.buffered == 0, "the server sent a partial frame"
        return frames

    def events(self) -> list[websocket.Event]:
        return self.conn.events_received()

    def assert_failed(self, code: int) -> None:
        """7.1.7 in two steps: Failed(code) reported and nothing sent yet (answers owed
        may go first); then close() sends a close frame with ``code``, Closed(code) is
        reported, and the transport is to close without waiting for the peer."""
        [failed] = self.events()
        assert isinstance(failed, Failed) and failed.code == code
        assert self.conn.state is FAILING
        assert not self.conn.close_expected()
        assert self.received() == []
        assert self.conn.close(1000, "ignored: the failure's code is sent")
        [(fin, opcode, payload)] = self.received()
        assert (fin, opcode) == (True, OP_CLOSE)
        assert int.from_bytes(payload[:2], "big") == code
        reason = payload[2:].decode()
        assert 0 < len(payload) - 2 <= 123
        assert reason == failed.reason
        assert self.events() == [Closed(code, reason)]
        assert self.conn.state is CLOSED
        assert self.conn.close_expected()


@pytest.fixture
def client(codec: ModuleType) -> Client:
    return Client(codec)


def close_body(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


# ---------------------------------------------------------------------------
# Messages


def test_text_message_is_delivered_as_its_payload_bytes(client: Client) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    client.send(OP_TEXT, body)
    [event] = client.events()
    assert event == TextMessage(body)
    assert type(event.data) is bytes
    assert client.received() == []
    assert client.conn.state is OPEN
    assert not client.conn.close_expected()


def test_text_frame_keeps_queued_frames_first_and_stops_after_close(client: Client) -> None:
    assert client.conn.text_frame(b'{"a":1}') == client.codec.encode_frame(OP_TEXT, b'{"a":1}')
    client.send(OP_PING, b"hb")  # queues a pong
    data = client.conn.text_frame(b'{"b":2}')
    assert data is not None
    parser = client.codec.FrameParser(expect_masked=False, max_payload=1 << 20)
    assert parser.feed(data) == [(True, OP_PONG, b"hb"), (True, OP_TEXT, b'{"b":2}')]
    assert client.received() == []
    client.conn.close(1000)
    assert client.conn.text_frame(b"{}") is None


def test_non_ascii_text_and_binary_messages(client: Client) -> None:
    text = "h\u00e9llo \u2713 \U0001f600".encode()
    client.send(OP_TEXT, text)
    client.send(OP_BINARY, b"\x00\xff\xfe")
    client.send(OP_TEXT, b"")
    assert client.events() == [TextMessage(text), BinaryMessage(b"\x00\xff\xfe"), TextMessage(b"")]


def test_frames_split_and_joined_across_reads(client: Client) -> None:
    wire = b"".join(client.frame(OP_TEXT, f'{{"id":{i}}}'.encode()) for i in range(3))
    client.conn.receive_data(wire)
    assert client.events() == [TextMessage(f'{{"id":{i}}}'.encode()) for i in range(3)]

    one = client.frame(OP_TEXT, b"x" * 200)  # 16-bit length form
    for i in range(len(one) - 1):
        client.conn.receive_data(one[i : i + 1])
        assert client.events() == []
    client.conn.receive_data(one[-1:])
    assert client.events() == [TextMessage(b"x" * 200)]


def test_large_message_with_64_bit_length(codec: ModuleType) -> None:
    client = Client(codec, max_message_bytes=1 << 20)
    body = b"[" + b"1," * 40000 + b"1]"
    client.send(OP_TEXT, body)
    assert client.events() == [TextMessage(body)]


def test_fragmented_text_is_reassembled_with_control_frames_between(client: Client) -> None:
    client.send(OP_TEXT, b'{"a":', fin=False)
    client.send(OP_PING, b"mid")
    # 5.4: the control frame is answered at once, not after the message.
    assert client.received() == [(True, OP_PONG, b"mid")]
    client.send(OP_CONT, b"", fin=False)
    client.send(OP_PONG, b"unsolicited")
    client.send(OP_CONT, b'"b"', fin=False)
    assert client.events() == []
    client.send(OP_CONT, b"}", fin=True)
    assert client.events() == [TextMessage(b'{"a":"b"}')]
    assert client.received() == []
    # Complete: nothing is begun any more (found by an outside sweep: the fragments'
    # size stayed counted, and the connection was closed body_timeout later as if a
    # message were unfinished).
    assert client.conn.buffered == 0

    client.send(OP_TEXT, b"next")
    assert client.events() == [TextMessage(b"next")]


def test_empty_continuations_are_not_kept(client: Client) -> None:
    """They add nothing to the message, so nothing of them is held: a stream of them
    cannot grow memory past what max_message_bytes bounds."""
    client.send(OP_TEXT, b"[1", fin=False)
    for _ in range(1000):
        client.send(OP_CONT, b"", fin=False)
    assert client.conn._fragments == [b"[1"]
    client.send(OP_CONT, b"]", fin=True)
    assert client.events() == [TextMessage(b"[1]")]
    assert client.conn.buffered == 0


def test_fragmented_binary_message(client: Client) -> None:
    client.send(OP_BINARY, b"\xff\x00", fin=False)
    client.send(OP_CONT, b"\xfe", fin=True)
    assert client.events() == [BinaryMessage(b"\xff\x00\xfe")]


def test_codepoint_split_across_fragments_is_valid(client: Client) -> None:
    text = "caf\u00e9 \U0001f600".encode()
    client.send(OP_TEXT, text[:4], fin=False)  # cuts \u00e9 in two
    client.send(OP_CONT, text[4:7], fin=False)  # cuts the emoji
    client.send(OP_CONT, text[7:], fin=True)
    assert client.events() == [TextMessage(text)]


@pytest.mark.parametrize(
    "fragments",
    [
        [b"\xff"],
        [b"ok \xc3\x28"],
        [b"ends mid-codepoint \xe2\x82"],
        [b"\xed\xa0\x80"],  # an encoded surrogate
        [b"ok", b"\xc3"],
        [b"\xc3", b"(", b"ok"],
    ],
    ids=["invalid-byte", "bad-continuation", "truncated", "surrogate", "frag-end", "frag-mid"],
)
def test_invalid_utf8_text_fails_1007(client: Client, fragments: list[bytes]) -> None:
    for i, fragment in enumerate(fragments):
        client.send(OP_TEXT if i == 0 else OP_CONT, fragment, fin=i == len(fragments) - 1)
    client.assert_failed(1007)


def test_invalid_utf8_in_binary_is_fine(client: Client) -> None:
    client.send(OP_BINARY, b"\xff\xc3")
    assert client.events() == [BinaryMessage(b"\xff\xc3")]


def test_continuation_without_a_message_fails_1002(client: Client) -> None:
    client.send(OP_CONT, b"orphan", fin=True)
    client.assert_failed(1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_message_inside_a_fragmented_one_fails_1002(client: Client, second: int) -> None:
    client.send(OP_TEXT, b"first", fin=False)
    client.send(second, b"second", fin=True)
    client.assert_failed(1002)


def test_message_at_the_limit_is_accepted(client: Client) -> None:
    client.send(OP_TEXT, b"a" * MAX)
    client.send(OP_BINARY, b"b" * (MAX - 1), fin=False)
    client.send(OP_CONT, b"b", fin=True)
    assert client.events() == [TextMessage(b"a" * MAX), BinaryMessage(b"b" * MAX)]


def test_single_frame_over_the_limit_fails_1009(client: Client) -> None:
    client.send(OP_TEXT, b"a" * (MAX + 1))
    client.assert_failed(1009)


def test_declared_length_over_the_limit_fails_before_the_payload(client: Client) -> None:
    # Only the header of a 1 GiB frame arrives: refused without waiting for the rest.
    header = bytes([0x81, 0x80 | 127]) + (1 << 30).to_bytes(8, "big")
    client.conn.receive_data(header)
    client.assert_failed(1009)


def test_fragments_over_the_limit_fail_1009(client: Client) -> None:
    client.send(OP_TEXT, b"a" * (MAX // 2), fin=False)
    client.send(OP_CONT, b"a" * (MAX // 2), fin=False)
    assert client.events() == []
    client.send(OP_CONT, b"a", fin=False)
    client.assert_failed(1009)


def test_unmasked_client_frame_fails_1002(client: Client) -> None:
    client.conn.receive_data(client.codec.encode_frame(OP_TEXT, b"hi"))
    client.assert_failed(1002)


def test_reserved_bits_fail_1002(client: Client) -> None:
    wire = bytearray(client.frame(OP_TEXT, b"hi"))
    wire[0] |= 0x40  # RSV1 without a negotiated extension
    client.conn.receive_data(bytes(wire))
    client.assert_failed(1002)


@pytest.mark.parametrize("opcode", [3, 7, 11, 15])
def test_reserved_opcode_fails_1002(client: Client, opcode: int) -> None:
    wire = bytearray(client.frame(OP_BINARY, b"hi"))
    wire[0] = 0x80 | opcode
    client.conn.receive_data(bytes(wire))
    client.assert_failed(1002)


def test_fragmented_ping_fails_1002(client: Client) -> None:
    wire = bytearray(client.frame(OP_PING, b"hi"))
    wire[0] &= 0x7F
    client.conn.receive_data(bytes(wire))
    client.assert_failed(1002)


def test_input_after_failing_is_ignored(client: Client) -> None:
    client.send(OP_CONT, b"orphan")
    client.assert_failed(1002)
    client.send(OP_TEXT, b"late")
    client.send(OP_PING, b"late")
    client.conn.receive_eof()
    assert client.events() == []
    assert client.received() == []


# ---------------------------------------------------------------------------
# Failing the connection with answers still owed (7.1.7; issue 8, defect 10)


@pytest.mark.parametrize("bad", ["reserved-bits", "invalid-utf8", "too-big", "orphan"])
def test_messages_before_a_protocol_error_are_delivered_and_then_nothing(
        client: Client, bad: str) -> None:
    bad_frame, code = {
        "reserved-bits": (bytes([0xC1]) + client.frame(OP_TEXT, b"{}")[1:], 1002),
        "invalid-utf8": (client.frame(OP_TEXT, b"\xff"), 1007),
        "too-big": (client.frame(OP_TEXT, b"x" * (MAX + 1)), 1009),
        "orphan": (client.frame(OP_CONT, b"x"), 1002),
    }[bad]
    wire = (client.frame(OP_TEXT, b"first") + client.frame(OP_PING, b"p")
            + client.frame(OP_TEXT, b"sec", fin=False) + client.frame(OP_CONT, b"ond")
            + bad_frame + client.frame(OP_TEXT, b"after"))
    client.conn.receive_data(wire)
    [first, second, failed] = client.events()
    assert (first, second) == (TextMessage(b"first"), TextMessage(b"second"))
    assert isinstance(failed, Failed) and failed.code == code
    assert client.received() == [(True, OP_PONG, b"p")]
    # Nothing more is read, pings included, but the answers owed may still be sent.
    client.send(OP_TEXT, b"later")
    client.send(OP_PING, b"later")
    client.conn.receive_data(b"\x81")
    assert client.events() == [] and client.received() == []
    assert client.conn.text_frame(b"answer") is None  # the hot path is for OPEN only
    assert client.conn.send_text(b"answer 1") and client.conn.send_text("answer 2")
    assert not client.conn.send_ping()
    assert not client.conn.close_expected()
    assert client.conn.close()
    assert client.received() == [(True, OP_TEXT, b"answer 1"), (True, OP_TEXT, b"answer 2"),
                                 (True, OP_CLOSE, close_body(code, failed.reason))]
    assert client.events() == [Closed(code, failed.reason)]
    assert client.conn.close_expected()
    assert not client.conn.send_text(b"too late") and not client.conn.close()


def test_fail_is_for_rules_above_the_protocol(client: Client) -> None:
    """MCP refuses binary messages: the transport fails the connection itself."""
    client.send(OP_TEXT, b"request")
    client.send(OP_BINARY, b"\x00")
    assert client.events() == [TextMessage(b"request"), BinaryMessage(b"\x00")]
    client.conn.fail(1003, "binary frames are not accepted")
    assert client.conn.state is FAILING
    assert client.events() == []  # the caller knows
    client.send(OP_TEXT, b"ignored")
    assert client.events() == []
    with pytest.raises(ValueError):
        client.conn.fail(1006, "may not be sent")
    client.conn.send_text(b"answer")
    client.conn.close(1000)
    assert client.received() == [(True, OP_TEXT, b"answer"), (
        True, OP_CLOSE, close_body(1003, "binary frames are not accepted"))]
    assert client.events() == [Closed(1003, "binary frames are not accepted")]


def test_eof_while_failing_reports_1006(client: Client) -> None:
    client.send(OP_CONT, b"orphan")
    [failed] = client.events()
    assert isinstance(failed, Failed)
    client.conn.receive_eof()
    assert client.events() == [Closed(1006, "")]
    assert client.conn.close_expected()
    assert client.received() == []


def test_pings_received_are_counted(client: Client) -> None:
    assert client.conn.pings_received == 0
    client.conn.receive_data(client.frame(OP_PING) + client.frame(OP_PONG)
                             + client.frame(OP_PING, b"x"))
    assert client.conn.pings_received == 2
    assert client.events() == []


# ---------------------------------------------------------------------------
# Control frames


def test_ping_is_answered_with_the_same_payload(client: Client) -> None:
    client.send(OP_PING, b"")
    client.send(OP_PING, b"\x00p" * 62)
    assert client.received() == [(True, OP_PONG, b""), (True, OP_PONG, b"\x00p" * 62)]
    assert client.events() == []


def test_unsolicited_pong_is_ignored(client: Client) -> None:
    client.send(OP_PONG, b"hello")
    assert client.received() == []
    assert client.events() == []
    assert client.conn.state is OPEN


def test_send_ping(client: Client) -> None:
    assert client.conn.send_ping(b"keepalive")
    assert client.conn.send_ping()
    assert client.received() == [(True, OP_PING, b"keepalive"), (True, OP_PING, b"")]
    with pytest.raises(ValueError):
        client.conn.send_ping(b"x" * 126)


# ---------------------------------------------------------------------------
# Sending


def test_send_text_is_one_unmasked_final_frame(client: Client) -> None:
    body = b'{"jsonrpc":"2.0","id":7,"result":{}}'
    assert client.conn.send_text(body)
    assert client.conn.send_text("\u00e9t\u00e9")
    big = b"x" * 70000
    assert client.conn.send_text(big)
    assert client.received() == [
        (True, OP_TEXT, body),
        (True, OP_TEXT, "\u00e9t\u00e9".encode()),
        (True, OP_TEXT, big),
    ]
    assert client.conn.data_to_send() == []


def test_data_to_send_is_a_list_of_frames_in_order(client: Client) -> None:
    client.conn.send_text(b"1")
    client.send(OP_PING, b"p")
    client.conn.send_text(b"2")
    chunks = client.conn.data_to_send()
    assert isinstance(chunks, list)
    assert all(type(chunk) is bytes for chunk in chunks)
    parser = client.codec.FrameParser(expect_masked=False, max_payload=MAX)
    frames = parser.feed(b"".join(chunks))
    assert frames == [(True, OP_TEXT, b"1"), (True, OP_PONG, b"p"), (True, OP_TEXT, b"2")]


# ---------------------------------------------------------------------------
# Closing handshake started by the peer


def test_peer_close_is_echoed_and_ends_the_connection(client: Client) -> None:
    client.send(OP_CLOSE, close_body(1000, "bye \u2713"))
    assert client.received() == [(True, OP_CLOSE, close_body(1000))]
    assert client.events() == [Closed(1000, "bye \u2713")]
    assert client.conn.state is CLOSED
    assert client.conn.close_expected()

    client.send(OP_TEXT, b"late")
    client.send(OP_CLOSE, close_body(1000))
    client.conn.receive_eof()
    assert client.events() == []
    assert client.received() == []
    assert client.conn.send_text(b"late") is False
    assert client.conn.send_ping() is False
    assert client.conn.close() is False
    assert client.received() == []


def test_empty_close_is_echoed_empty_and_reported_as_1005(client: Client) -> None:
    client.send(OP_CLOSE, b"")
    assert client.received() == [(True, OP_CLOSE, b"")]
    assert client.events() == [Closed(1005, "")]
    assert client.conn.close_expected()


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
)
def test_valid_close_codes_are_echoed(client: Client, code: int) -> None:
    client.send(OP_CLOSE, close_body(code, "r"))
    assert client.received() == [(True, OP_CLOSE, close_body(code))]
    assert client.events() == [Closed(code, "r")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_1002(client: Client, code: int) -> None:
    client.send(OP_CLOSE, close_body(code))
    client.assert_failed(1002)


def test_close_payload_of_one_byte_fails_1002(client: Client) -> None:
    client.send(OP_CLOSE, b"\x03")
    client.assert_failed(1002)


def test_close_reason_that_is_not_utf8_fails_1007(client: Client) -> None:
    client.send(OP_CLOSE, close_body(1000) + b"\xff")
    client.assert_failed(1007)


def test_close_inside_a_fragmented_message_discards_it(client: Client) -> None:
    client.send(OP_TEXT, b"never finished", fin=False)
    client.send(OP_CLOSE, close_body(1001))
    assert client.events() == [Closed(1001, "")]
    assert client.received() == [(True, OP_CLOSE, close_body(1001))]


def test_messages_before_a_close_in_the_same_read_are_delivered(client: Client) -> None:
    wire = client.frame(OP_TEXT, b"last words") + client.frame(OP_CLOSE, close_body(1000))
    client.conn.receive_data(wire + client.frame(OP_TEXT, b"after close"))
    assert client.events() == [TextMessage(b"last words"), Closed(1000, "")]


# ---------------------------------------------------------------------------
# Closing handshake started by the server


def test_server_close_waits_for_the_peer_close(client: Client) -> None:
    assert client.conn.close(1001, "going away")
    assert client.received() == [(True, OP_CLOSE, close_body(1001, "going away"))]
    assert client.conn.state is CLOSING
    assert not client.conn.close_expected()
    assert client.events() == []
    assert client.conn.send_text(b"no") is False
    assert client.conn.close() is False
    assert client.received() == []

    # 5.5.1: data after our close frame is discarded, fragments included; pings are
    # still answered (5.5.2).
    client.send(OP_TEXT, b"discarded")
    client.send(OP_TEXT, b"part", fin=False)
    client.send(OP_CONT, b"orphan")
    client.send(OP_PING, b"still there?")
    assert client.events() == []
    assert client.received() == [(True, OP_PONG, b"still there?")]
    assert not client.conn.close_expected()

    client.send(OP_CLOSE, close_body(1001, "ok"))
    assert client.events() == [Closed(1001, "ok")]
    assert client.received() == []  # no second close frame
    assert client.conn.state is CLOSED
    assert client.conn.close_expected()


def test_default_close_is_1000_without_reason(client: Client) -> None:
    assert client.conn.close()
    assert client.received() == [(True, OP_CLOSE, close_body(1000))]
    client.send(OP_CLOSE, b"")
    assert client.events() == [Closed(1005, "")]


def test_failing_while_closing_sends_no_second_close(client: Client) -> None:
    client.conn.close(1000)
    client.received()
    client.send(OP_CLOSE, b"\x03")
    assert client.received() == []
    [event] = client.events()
    assert isinstance(event, Closed) and event.code == 1002
    assert client.conn.close_expected()


def test_close_reason_is_cut_to_123_bytes_on_a_codepoint(client: Client) -> None:
    client.conn.close(1000, "\u00e9" * 100)  # 200 bytes of UTF-8
    [(_, _, payload)] = client.received()
    assert len(payload) == 2 + 122
    assert payload[2:].decode() == "\u00e9" * 61


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_close_refuses_codes_that_may_not_be_sent(client: Client, code: int) -> None:
    with pytest.raises(ValueError):
        client.conn.close(code)
    assert client.conn.state is OPEN
    assert client.received() == []


def test_transport_eof_reports_1006_once(client: Client) -> None:
    client.send(OP_TEXT, b"half", fin=False)
    client.conn.receive_eof()
    client.conn.receive_eof()
    assert client.events() == [Closed(1006, "")]
    assert client.conn.state is CLOSED
    assert client.received() == []


# ---------------------------------------------------------------------------
# Opening handshake


def make_request(
    *,
    method: str = "GET",
    version: str = "1.1",
    remove: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
    add: tuple[tuple[str, str], ...] = (),
) -> HttpRequest:
    base = {
        "Host": "gateway.example:8080",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Sec-WebSocket-Version": "13",
    }
    base.update(replace or {})
    headers = [(name, value) for name, value in base.items() if name not in remove]
    headers.extend(add)
    return HttpRequest(method=method, target="/mcp", path="/mcp", version=version, headers=headers)


def parse_response(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    assert raw.endswith(b"\r\n\r\n")
    status, *lines = raw[:-4].decode("latin-1").split("\r\n")
    return status, [(name, value) for name, value in (line.split(": ", 1) for line in lines)]


def test_handshake_answers_the_rfc_example() -> None:
    status, headers = parse_response(accept_handshake(make_request()))
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers[0][0] == "Date"
    assert headers[1:] == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", RFC_ACCEPT),
    ]


def test_handshake_header_matching_is_case_insensitive() -> None:
    request = HttpRequest(
        method="GET",
        target="/",
        path="/",
        version="1.1",
        headers=[
            ("host", "h"),
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
            ("sec-websocket-key", RFC_KEY),
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "mcp"),
        ],
    )
    _, headers = parse_response(accept_handshake(request))
    assert ("Sec-WebSocket-Accept", RFC_ACCEPT) in headers
    assert ("Sec-WebSocket-Protocol", "mcp") in headers


def test_handshake_from_raw_bytes_through_the_http_reader() -> None:
    reader = HttpRequestReader()
    [request] = reader.feed(
        b"GET /mcp HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + RFC_KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mcp\r\n\r\n\x81\x80abcd"
    )
    status, headers = parse_response(accept_handshake(request))
    assert status.startswith("HTTP/1.1 101 ")
    assert ("Sec-WebSocket-Protocol", "mcp") in headers
    assert reader.upgraded_data == b"\x81\x80abcd"


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        ((), ("mcp",), None),
        (("mcp",), ("mcp",), "mcp"),
        (("chat, mcp",), ("mcp",), "mcp"),
        (("chat", "mcp"), ("mcp",), "mcp"),  # two header lines
        (("chat",), ("mcp",), None),  # accepted, but without the header
        (("b, a",), ("a", "b"), "b"),  # the client's preference wins
        (("mcp",), (), None),
    ],
)
def test_handshake_subprotocol_choice(
    offered: tuple[str, ...], supported: tuple[str, ...], chosen: str | None
) -> None:
    request = make_request(add=tuple(("Sec-WebSocket-Protocol", value) for value in offered))
    status, headers = parse_response(accept_handshake(request, subprotocols=supported))
    assert status.startswith("HTTP/1.1 101 ")
    protocols = [value for name, value in headers if name == "Sec-WebSocket-Protocol"]
    assert protocols == ([chosen] if chosen else [])


def test_handshake_declines_extensions() -> None:
    request = make_request(add=(("Sec-WebSocket-Extensions", "permessage-deflate"),))
    _, headers = parse_response(accept_handshake(request))
    assert all(name != "Sec-WebSocket-Extensions" for name, _ in headers)


UPGRADE_REQUIRED = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


@pytest.mark.parametrize(
    ("request_", "status", "detail", "headers"),
    [
        (make_request(method="POST"), 405, "GET", [("Allow", "GET")]),
        (make_request(method="HEAD"), 405, "HEAD", [("Allow", "GET")]),
        (make_request(version="1.0"), 400, "HTTP/1.1", []),
        (make_request(version="x"), 400, "HTTP version", []),
        (make_request(remove=("Host",)), 400, "Host", []),
        (make_request(add=(("Host", "other"),)), 400, "Host", []),
        (make_request(remove=("Upgrade",)), 426, "WebSocket upgrade", UPGRADE_REQUIRED),
        (make_request(replace={"Upgrade": "h2c"}), 400, "Upgrade", []),
        (make_request(replace={"Upgrade": "websocketx"}), 400, "Upgrade", []),
        (make_request(remove=("Connection",)), 400, "Connection", []),
        (make_request(replace={"Connection": "keep-alive"}), 400, "Connection", []),
        (make_request(remove=("Sec-WebSocket-Key",)), 400, "missing Sec-WebSocket-Key", []),
        (
            make_request(add=(("Sec-WebSocket-Key", RFC_KEY),)),
            400,
            "repeated Sec-WebSocket-Key",
            [],
        ),
        (make_request(replace={"Sec-WebSocket-Key": "not base64!"}), 400, "16-byte", []),
        (make_request(replace={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}), 400, "16-byte", []),
        (
            make_request(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}),
            400,
            "16-byte",
            [],
        ),
        (
            make_request(replace={"Sec-WebSocket-Key": base64.b64encode(b"x" * 17).decode()}),
            400,
            "16-byte",
            [],
        ),
        (make_request(replace={"Sec-WebSocket-Key": ""}), 400, "16-byte", []),
        (
            make_request(replace={"Sec-WebSocket-Version": "8"}),
            426,
            "Sec-WebSocket-Version",
            [("Sec-WebSocket-Version", "13"), *UPGRADE_REQUIRED],
        ),
        (
            make_request(remove=("Sec-WebSocket-Version",)),
            426,
            "Sec-WebSocket-Version",
            [("Sec-WebSocket-Version", "13"), *UPGRADE_REQUIRED],
        ),
    ],
    ids=[
        "post",
        "head",
        "http-1.0",
        "bad-version",
        "no-host",
        "two-hosts",
        "no-upgrade",
        "upgrade-h2c",
        "upgrade-not-a-token",
        "no-connection",
        "connection-without-upgrade",
        "no-key",
        "two-keys",
        "key-not-base64",
        "key-unpadded",
        "key-15-bytes",
        "key-17-bytes",
        "key-empty",
        "ws-version-8",
        "no-ws-version",
    ],
)
def test_handshake_refusals(
    request_: HttpRequest, status: int, detail: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(HandshakeError) as caught:
        accept_handshake(request_)
    assert isinstance(caught.value, HttpError)
    assert caught.value.status == status
    assert detail in caught.value.detail
    assert caught.value.headers == headers


def test_refusal_renders_as_an_http_response() -> None:
    with pytest.raises(HandshakeError) as caught:
        accept_handshake(make_request(replace={"Sec-WebSocket-Version": "8"}))
    error = caught.value
    raw = error_response(error.status, error.detail, headers=error.headers)
    assert raw.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in raw


def test_refusal_detail_does_not_echo_a_huge_header() -> None:
    with pytest.raises(HandshakeError) as caught:
        accept_handshake(make_request(replace={"Sec-WebSocket-Key": "A" * 10000}))
    assert len(caught.value.detail) < 200


# ---------------------------------------------------------------------------
# Interoperability with the websockets library's sans-I/O client


def open_with_websockets(**client_options: object) -> tuple[ClientProtocol, WebSocketConnection]:
    peer = ClientProtocol(parse_uri("ws://gateway.example/mcp"), **client_options)  # type: ignore[arg-type]
    peer.send_request(peer.connect())
    reader = HttpRequestReader()
    [request] = reader.feed(b"".join(peer.data_to_send()))
    peer.receive_data(accept_handshake(request))
    [response] = peer.events_received()
    assert isinstance(response, Response)
    assert peer.handshake_exc is None
    assert peer.state is PeerState.OPEN
    return peer, WebSocketConnection(max_message_bytes=1 << 20)


def to_server(peer: ClientProtocol, conn: WebSocketConnection) -> None:
    for data in peer.data_to_send():
        if data:
            conn.receive_data(data)
        else:
            conn.receive_eof()


def to_peer(conn: WebSocketConnection, peer: ClientProtocol) -> None:
    peer.receive_data(b"".join(conn.data_to_send()))
    if conn.close_expected():
        peer.receive_eof()  # the transport closes the socket


def test_websockets_client_handshake_and_messages(codec: ModuleType) -> None:
    peer, conn = open_with_websockets(
        subprotocols=[Subprotocol("chat"), Subprotocol("mcp")],
        extensions=[ClientPerMessageDeflateFactory()],
    )
    assert peer.subprotocol == "mcp"
    assert peer.extensions == []  # compression was offered and declined

    big = b'{"blob":"' + b"z" * 100000 + b'"}'
    peer.send_text(b'{"id":1}')
    peer.send_binary(b"\x00\x01")
    peer.send_text("\u00e9".encode()[:1], fin=False)
    peer.send_ping(b"ping-1")
    peer.send_continuation("\u00e9".encode()[1:], fin=True)
    peer.send_text(big)
    to_server(peer, conn)
    assert conn.events_received() == [
        TextMessage(b'{"id":1}'),
        BinaryMessage(b"\x00\x01"),
        TextMessage("\u00e9".encode()),
        TextMessage(big),
    ]

    conn.send_text(b'{"id":1,"result":{}}')
    conn.send_text(big)
    conn.send_ping(b"ping-2")
    to_peer(conn, peer)
    assert peer.events_received() == [
        Frame(Opcode.PONG, b"ping-1"),
        Frame(Opcode.TEXT, b'{"id":1,"result":{}}'),
        Frame(Opcode.TEXT, big),
        Frame(Opcode.PING, b"ping-2"),
    ]
    to_server(peer, conn)  # the automatic pong is ignored
    assert conn.events_received() == []
    assert conn.state is OPEN


def test_websockets_client_closes(codec: ModuleType) -> None:
    peer, conn = open_with_websockets()
    peer.send_close(1000, "done")
    to_server(peer, conn)
    assert conn.events_received() == [Closed(1000, "done")]
    assert conn.close_expected()
    to_peer(conn, peer)
    assert peer.state is PeerState.CLOSED
    assert peer.close_code == 1000
    assert peer.close_reason == ""  # 5.5.1: the echo carries the code only


def test_gateway_closes_a_websockets_client(codec: ModuleType) -> None:
    peer, conn = open_with_websockets()
    conn.close(1001, "shutting down")
    to_peer(conn, peer)
    assert peer.state is PeerState.CLOSING
    assert peer.close_rcvd is not None and peer.close_rcvd.code == 1001
    to_server(peer, conn)  # websockets echoes code and reason
    assert conn.events_received() == [Closed(1001, "shutting down")]
    assert conn.close_expected()
    to_peer(conn, peer)
    assert peer.state is PeerState.CLOSED
    assert peer.close_code == 1001


def test_websockets_client_sees_protocol_errors(codec: ModuleType) -> None:
    peer, conn = open_with_websockets()
    conn.receive_data(bytes([0x81, 0x02]) + b"hi")  # unmasked, as a server would send
    assert conn.events_received() == [Failed(1002, "expected a masked frame")]
    conn.close()
    assert conn.events_received() == [Closed(1002, "expected a masked frame")]
    to_peer(conn, peer)
    assert peer.close_code == 1002


# -- the client's side (the gateway toward a WebSocket upstream) --------------------------
def test_the_client_handshake_and_frames_interoperate_with_the_websockets_server(
        codec: ModuleType) -> None:
    from websockets.server import ServerProtocol

    from mcpfast.protocol.websocket import check_client_response, client_request, new_client_key

    server = ServerProtocol(subprotocols=[Subprotocol("mcp")])
    key = new_client_key()
    server.receive_data(client_request("up.example:8443", "/mcp?x=1", key,
                                       headers=[("Authorization", "Bearer t")]))
    (request,) = server.events_received()
    assert request.path == "/mcp?x=1" and request.headers["Host"] == "up.example:8443"
    assert request.headers["Authorization"] == "Bearer t"
    server.send_response(server.accept(request))
    response = b"".join(server.data_to_send())
    head, _, rest = response.partition(b"\r\n\r\n")
    assert rest == b""
    assert check_client_response(head, key) == "mcp"

    client = WebSocketConnection(max_message_bytes=MAX, client=True)
    frame = client.text_frame(b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert frame is not None and frame[1] & 0x80  # masked (5.3)
    server.receive_data(frame)
    (message,) = server.events_received()
    assert (message.opcode, message.data) == (Opcode.TEXT,
                                              b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    # The server's frames are unmasked; a ping is answered with a masked pong.
    server.send_text(b'{"jsonrpc":"2.0","id":1,"result":{}}')
    server.send_ping(b"hi")
    client.receive_data(b"".join(server.data_to_send()))
    assert client.events_received() == [TextMessage(b'{"jsonrpc":"2.0","id":1,"result":{}}')]
    server.receive_data(b"".join(client.data_to_send()))
    (pong,) = server.events_received()
    assert pong.opcode == Opcode.PONG and pong.data == b"hi"
    # Two frames never share a mask.
    masks = {bytes(client.text_frame(b"x")[2:6]) for _ in range(200)}  # type: ignore[index]
    assert len(masks) == 200


def test_a_masked_frame_from_the_server_fails_the_client_1002(codec: ModuleType) -> None:
    client = WebSocketConnection(max_message_bytes=MAX, client=True)
    client.receive_data(codec.encode_frame(OP_TEXT, b"{}", True, b"abcd"))
    (failed,) = client.events_received()
    assert type(failed) is Failed and failed.code == 1002
    assert client.state is FAILING


@pytest.mark.parametrize("head,problem", [
    (b"HTTP/1.1 401 Unauthorized\r\n", "the server answered 401 'Unauthorized'"),
    (b"SSH-2.0-OpenSSH\r\n", "not an HTTP response"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: AAAA", "Sec-WebSocket-Accept does not match"),
    (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode(), "lacks Upgrade: websocket"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
     b"Sec-WebSocket-Extensions: permessage-deflate", "an extension the client did not"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
     b"Sec-WebSocket-Protocol: chat", "subprotocol 'chat', which the client did not offer"),
])
def test_a_client_refuses_a_response_4_1_forbids(head: bytes, problem: str) -> None:
    from mcpfast.protocol.websocket import ClientHandshakeError, check_client_response

    with pytest.raises(ClientHandshakeError, match=problem.replace("(", r"\(")):
        check_client_response(head, RFC_KEY)


def test_a_server_that_chooses_no_subprotocol_is_accepted() -> None:
    from mcpfast.protocol.websocket import check_client_response

    head = (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n"
            b"connection: keep-alive, Upgrade\r\nsec-websocket-accept: " + RFC_ACCEPT.encode())
    assert check_client_response(head, RFC_KEY) is None


def test_a_header_with_a_line_break_is_never_sent() -> None:
    from mcpfast.protocol.websocket import client_request

    with pytest.raises(ValueError, match="line break"):
        client_request("h", "/", RFC_KEY, headers=[("X", "a\r\nEvil: 1")])
