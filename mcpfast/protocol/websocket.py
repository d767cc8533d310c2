"""Sans-I/O WebSocket (RFC 6455), server and client: the opening handshake, then frames
to events.

``accept_handshake`` turns an upgrade request into the 101 response bytes, or raises
``HandshakeError``; a client (the gateway toward a WebSocket upstream) sends
``client_request`` and checks the answer with ``check_client_response``.
``WebSocketConnection`` then follows the model of the ``websockets`` library's core:
``receive_data(bytes)`` in, ``events_received()`` and ``data_to_send()`` out,
``close_expected()`` to learn when the transport should close. It never touches a
socket or a clock: closing timeouts belong to the transport.

Failing the connection (7.1.7) takes two steps here, because every request gets exactly
one answer: on a protocol error the connection reads nothing more and reports ``Failed``;
the answers owed to the messages received before it may still be sent, and ``close()``
then sends the close frame the error calls for (5.5.1: nothing may follow it).

Frames are parsed and encoded by ``mcpfast_ext.websocket_codec`` (compiled, or its
pure-Python twin); this module holds the connection's rules.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
from collections.abc import Callable, Iterable

import msgspec

from mcpfast.protocol.http import HttpError, HttpRequest, format_response
from mcpfast_ext import websocket_codec
from mcpfast_ext.frame_error import FrameError

__all__ = [
    "CLOSED",
    "CLOSING",
    "FAILING",
    "OPEN",
    "BinaryMessage",
    "ClientHandshakeError",
    "Closed",
    "Event",
    "Failed",
    "HandshakeError",
    "State",
    "TextMessage",
    "WebSocketConnection",
    "accept_handshake",
    "check_client_response",
    "client_request",
    "new_client_key",
]

# Opcodes are fixed by RFC 6455 5.2, so binding them once is safe even when tests swap
# the codec implementation.
OP_CONT = websocket_codec.OP_CONT
OP_TEXT = websocket_codec.OP_TEXT
OP_BINARY = websocket_codec.OP_BINARY
OP_CLOSE = websocket_codec.OP_CLOSE
OP_PING = websocket_codec.OP_PING
OP_PONG = websocket_codec.OP_PONG

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
_MAX_CLOSE_REASON = 123  # 5.5: control payload <= 125 bytes, 2 of them the code


# ---------------------------------------------------------------------------
# Opening handshake (RFC 6455 4.2)


class HandshakeError(HttpError):
    """A refused opening handshake: the status, why, and headers the answer must carry
    (``Allow`` on 405, ``Upgrade`` on 426, ``Sec-WebSocket-Version`` per 4.4)."""

    def __init__(
        self, status: int, detail: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(status, detail)
        self.headers: list[tuple[str, str]] = headers or []


# RFC 9110 15.5.22: a 426 MUST carry Upgrade; 7.8: whoever sends Upgrade MUST also send
# the "upgrade" connection option.
_UPGRADE_REQUIRED = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


def _tokens(value: str | None) -> list[str]:
    if not value:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def _shown(value: str) -> str:
    # Details end up in a response body: keep a hostile header from filling it.
    return repr(value if len(value) <= 64 else value[:64] + "...")


def accept_handshake(request: HttpRequest, *, subprotocols: tuple[str, ...] = ("mcp",)) -> bytes:
    """Validate an opening handshake (4.2.1) and return the whole 101 response (4.2.2).

    The subprotocol is the first one the client lists that ``subprotocols`` contains;
    offering only unknown subprotocols is accepted without ``Sec-WebSocket-Protocol``.
    No extension is ever accepted, so ``Sec-WebSocket-Extensions`` is never answered.
    Raise ``HandshakeError`` (an ``HttpError``) when the request must be refused.
    """
    if request.method != "GET":
        raise HandshakeError(
            405, f"a WebSocket handshake must use GET, not {request.method}", [("Allow", "GET")]
        )
    try:
        version = tuple(int(part) for part in request.version.split("."))
    except ValueError:
        raise HandshakeError(400, f"unparsable HTTP version {_shown(request.version)}") from None
    if version < (1, 1):
        raise HandshakeError(
            400, f"a WebSocket handshake needs HTTP/1.1 or later, not HTTP/{request.version}"
        )

    host_count = request.header_count("Host")
    if host_count == 0:
        raise HandshakeError(400, "missing Host header")
    if host_count > 1:
        raise HandshakeError(400, "repeated Host header")  # RFC 9112 3.2

    upgrade = request.header("Upgrade")
    if upgrade is None:
        raise HandshakeError(
            426, "this endpoint requires a WebSocket upgrade", list(_UPGRADE_REQUIRED)
        )
    if not any(token.lower() == "websocket" for token in _tokens(upgrade)):
        raise HandshakeError(400, f"Upgrade header {_shown(upgrade)} lacks 'websocket'")

    connection = request.header("Connection") or ""
    if not any(token.lower() == "upgrade" for token in _tokens(connection)):
        raise HandshakeError(400, f"Connection header {_shown(connection)} lacks 'upgrade'")

    # Checked before the key so that a client speaking another draft (which may not even
    # send Sec-WebSocket-Key) learns which version to retry with (4.4).
    ws_version = request.header("Sec-WebSocket-Version")
    if ws_version is None or ws_version.strip() != "13":
        got = "missing" if ws_version is None else _shown(ws_version)
        raise HandshakeError(
            426,
            f"Sec-WebSocket-Version must be 13 ({got})",
            [("Sec-WebSocket-Version", "13"), *_UPGRADE_REQUIRED],
        )

    key_count = request.header_count("Sec-WebSocket-Key")
    if key_count == 0:
        raise HandshakeError(400, "missing Sec-WebSocket-Key header")
    if key_count > 1:
        raise HandshakeError(400, "repeated Sec-WebSocket-Key header")
    key = (request.header("Sec-WebSocket-Key") or "").strip()
    try:
        nonce = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError(
            400, f"Sec-WebSocket-Key {_shown(key)} is not base64 of a 16-byte nonce"
        )

    accept = _accept_value(key)
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept),
    ]
    for offered in _tokens(request.header("Sec-WebSocket-Protocol")):
        if offered in subprotocols:
            headers.append(("Sec-WebSocket-Protocol", offered))
            break
    return format_response(101, headers)


def _accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


class ClientHandshakeError(Exception):
    """The server did not accept the opening handshake as RFC 6455 4.1 requires."""


def new_client_key() -> str:
    """A Sec-WebSocket-Key: base64 of 16 random bytes (4.1)."""
    return base64.b64encode(os.urandom(16)).decode()


def client_request(host: str, target: str, key: str, *,
                   subprotocols: tuple[str, ...] = ("mcp",),
                   headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The client's opening handshake (4.1): a GET with the upgrade headers, and
    ``headers`` (credentials from the config, say) after them."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    for name, value in headers:
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_client_response(head: bytes, key: str, *,
                          subprotocols: tuple[str, ...] = ("mcp",)) -> str | None:
    """Check the server's answer to ``client_request`` (its head, up to the blank line)
    as 4.1 says a client must, and return the subprotocol it chose (None if none).
    Raise ``ClientHandshakeError`` naming what is wrong."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/"):
        raise ClientHandshakeError(f"not an HTTP response: {_shown(lines[0])}")
    if status[1] != "101":
        reason = status[2] if len(status) > 2 else ""
        raise ClientHandshakeError(f"the server answered {status[1]} {_shown(reason)}, not "
                                   "101 Switching Protocols")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ClientHandshakeError(f"malformed header line {_shown(line)}")
        name = name.strip().lower()
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    if not any(t.lower() == "websocket" for t in _tokens(fields.get("upgrade"))):
        raise ClientHandshakeError("the 101 response lacks Upgrade: websocket")
    if not any(t.lower() == "upgrade" for t in _tokens(fields.get("connection"))):
        raise ClientHandshakeError("the 101 response lacks Connection: Upgrade")
    if fields.get("sec-websocket-accept") != _accept_value(key):
        raise ClientHandshakeError("Sec-WebSocket-Accept does not match the key sent")
    if fields.get("sec-websocket-extensions"):
        raise ClientHandshakeError("the server chose an extension the client did not offer "
                                   f"({_shown(fields['sec-websocket-extensions'])})")
    chosen = fields.get("sec-websocket-protocol")
    if chosen is not None and chosen not in subprotocols:
        raise ClientHandshakeError(f"the server chose subprotocol {_shown(chosen)}, which "
                                   "the client did not offer")
    return chosen


# ---------------------------------------------------------------------------
# Established connection (RFC 6455 5 to 7)


class State(enum.IntEnum):
    OPEN = 1
    CLOSING = 2  # we sent a close frame and wait for the peer's
    CLOSED = 3
    FAILING = 4  # the peer broke the protocol: we read no more and owe only answers


OPEN = State.OPEN
CLOSING = State.CLOSING
CLOSED = State.CLOSED
FAILING = State.FAILING


class TextMessage(msgspec.Struct, frozen=True, gc=False):
    """A complete text message; ``data`` is its payload, already validated as UTF-8."""

    data: bytes


class BinaryMessage(msgspec.Struct, frozen=True, gc=False):
    data: bytes


class Failed(msgspec.Struct, frozen=True, gc=False):
    """The peer broke the protocol (7.1.7), emitted once, after the messages received
    before the error: nothing more will be read. Answer those messages, then call
    ``close()``, which sends a close frame with ``code``."""

    code: int
    reason: str


class Closed(msgspec.Struct, frozen=True, gc=False):
    """The connection is over (emitted once). ``code`` is the peer's close code (1005 when
    its close frame had none), the code we failed the connection with, or 1006 when the
    transport ended without a closing handshake."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Failed | Closed


def _masked_frames() -> Callable[[int, bytes], bytes]:
    """A client's frame encoder: each frame masked with a fresh key (5.3), drawn from
    the kernel's random bytes a page at a time rather than a system call a frame."""
    encode = websocket_codec.encode_frame
    keys = b""
    at = 0

    def encode_masked(opcode: int, payload: bytes) -> bytes:
        nonlocal keys, at
        if at >= len(keys):
            keys, at = os.urandom(4096), 0
        mask = keys[at:at + 4]
        at += 4
        return encode(opcode, payload, True, mask)
    return encode_masked


def _receivable_code(code: int) -> bool:
    # 7.4.1 and the IANA registry: 1004 is reserved; 1005, 1006 and 1015 must never be
    # sent; 1016-2999 are reserved for future RFCs; 3000-4999 belong to applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _close_payload(code: int, reason: str) -> tuple[bytes, str]:
    encoded = reason.encode()
    if len(encoded) > _MAX_CLOSE_REASON:
        # Cut on a byte budget, then drop a codepoint the cut may have split.
        reason = encoded[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")
        encoded = reason.encode()
    return code.to_bytes(2, "big") + encoded, reason


class WebSocketConnection:
    """An established WebSocket connection, without I/O: the server's side, or with
    ``client=True`` the client's (its frames masked, the server's expected unmasked).

    ``data_to_send()`` returns a list of byte strings to write in order (for
    ``transport.writelines``); an empty list when there is nothing to send. Once
    ``close_expected()`` is True, write what is pending and close the transport.
    ``pings_received`` counts the peer's pings, which show it is there although they
    carry no message.
    """

    __slots__ = (
        "_encode_frame",
        "_events",
        "_failure",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "_max_message",
        "_output",
        "_parser",
        "pings_received",
        "state",
    )

    def __init__(self, *, max_message_bytes: int, client: bool = False) -> None:
        self.state = OPEN
        self._parser = websocket_codec.FrameParser(
            expect_masked=not client, max_payload=max_message_bytes
        )
        self._encode_frame = _masked_frames() if client else websocket_codec.encode_frame
        self._max_message = max_message_bytes
        self._events: list[Event] = []
        self._output: list[bytes] = []
        # The open fragmented message (5.4), None between messages.
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = OP_TEXT
        self._fragment_size = 0
        self._failure = (1000, "")
        self.pings_received = 0

    # -- the sans-I/O contract

    def receive_data(self, data: bytes) -> None:
        state = self.state
        if state is CLOSED or state is FAILING:
            return
        error: FrameError | None = None
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            # The frames before the bad one are the peer's messages all the same.
            frames = exc.frames
            error = exc
        events = self._events
        for fin, opcode, payload in frames:
            # The common case: a whole text message in one frame.
            if opcode == OP_TEXT and fin and self._fragments is None and self.state is OPEN:
                # JSON is usually ASCII, and isascii() is far cheaper than decoding.
                if not payload.isascii():
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in text message")
                        return
                events.append(TextMessage(payload))
            else:
                self._receive_frame(fin, opcode, payload)
                if self.state is CLOSED or self.state is FAILING:
                    return
        if error is not None:
            self._fail(error.code, error.reason)

    def receive_eof(self) -> None:
        """The transport ended; report 1006 (7.1.5) unless the connection was over."""
        if self.state is not CLOSED:
            self.state = CLOSED
            self._fragments = None
            self._events.append(Closed(1006, ""))

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        output, self._output = self._output, []
        return output

    @property
    def buffered(self) -> int:
        """Bytes of a message begun and not complete: a partial frame, and the
        fragments received so far."""
        return self._parser.buffered + self._fragment_size

    def close_expected(self) -> bool:
        # 7.1.1: the server closes the TCP connection first, as soon as it has both sent
        # and received a close frame (or failed the connection).
        return self.state is CLOSED

    # -- sending

    def send_text(self, data: bytes | str) -> bool:
        """Queue one text message (``data`` must be valid UTF-8 when bytes); False when
        the closing handshake has started (5.5.1: no data after our close frame). While
        failing it still queues: an answer owed goes before the close frame."""
        if self.state is not OPEN and self.state is not FAILING:
            return False
        if isinstance(data, str):
            data = data.encode()
        self._output.append(self._encode_frame(OP_TEXT, data))
        return True

    def text_frame(self, data: bytes) -> bytes | None:
        """``send_text`` then ``data_to_send`` in one call, for the hot path: the bytes to
        write now (frames queued earlier, such as a pong, then this message's frame), or
        None when the connection is not OPEN (then ``send_text`` says whether a message
        may still be queued)."""
        if self.state is not OPEN:
            return None
        frame = self._encode_frame(OP_TEXT, data)
        if self._output:
            self._output.append(frame)
            frame = b"".join(self._output)
            self._output = []
        return frame

    def send_ping(self, payload: bytes = b"") -> bool:
        if self.state is not OPEN:
            return False
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")  # 5.5
        self._output.append(self._encode_frame(OP_PING, payload))
        return True

    def close(self, code: int = 1000, reason: str = "") -> bool:
        """Start the closing handshake (7.1.2); the peer's close frame completes it. The
        reason is cut to 123 UTF-8 bytes. False when the handshake had already started.

        While failing, the close frame carries the failure's code and reason instead, and
        the connection is CLOSED at once: 7.1.7 does not wait for the peer's."""
        if not _receivable_code(code):
            raise ValueError(f"{code} is not a close code that may be sent")
        if self.state is FAILING:
            code, reason = self._failure
            payload, reason = _close_payload(code, reason)
            self._output.append(self._encode_frame(OP_CLOSE, payload))
            self.state = CLOSED
            self._events.append(Closed(code, reason))
            return True
        if self.state is not OPEN:
            return False
        payload, _ = _close_payload(code, reason)
        self._output.append(self._encode_frame(OP_CLOSE, payload))
        self.state = CLOSING
        self._fragments = None
        return True

    # -- receiving, beyond the common case

    def _receive_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == OP_CLOSE:
            self._receive_close(payload)
            return
        if opcode == OP_PING:
            # 5.5.2: answer every ping until we have received a close frame; after ours
            # (CLOSING) a pong is still a control frame, which 5.5.1 allows.
            self._output.append(self._encode_frame(OP_PONG, payload))
            self.pings_received += 1
            return
        if opcode == OP_PONG:
            return  # 5.5.3: an unsolicited pong needs no answer
        if self.state is CLOSING:
            return  # 5.5.1: after sending a close frame, data is discarded

        fragments = self._fragments
        if opcode == OP_CONT:
            if fragments is None:
                self._fail(1002, "continuation frame without a message to continue")
                return
            if payload:
                # An empty continuation adds nothing: not kept, or a stream of them
                # would hold memory that max_message_bytes does not count.
                fragments.append(payload)
                self._fragment_size += len(payload)
                if self._fragment_size > self._max_message:
                    self._fail(1009, f"message exceeds {self._max_message} bytes")
                    return
            if fin:
                self._fragments = None
                self._fragment_size = 0  # nothing begun: ``buffered`` is what is not
                self._deliver(self._fragment_opcode, b"".join(fragments))
            return

        # OP_TEXT or OP_BINARY: the codec has already refused reserved opcodes.
        if fragments is not None:
            self._fail(1002, "new data frame while a fragmented message is open")
            return
        if fin:
            self._deliver(opcode, payload)
        else:
            self._fragments = [payload]
            self._fragment_opcode = opcode
            self._fragment_size = len(payload)

    def _deliver(self, opcode: int, data: bytes) -> None:
        if opcode == OP_TEXT:
            if not data.isascii():
                try:
                    data.decode()
                except UnicodeDecodeError:
                    self._fail(1007, "invalid UTF-8 in text message")
                    return
            self._events.append(TextMessage(data))
        else:
            self._events.append(BinaryMessage(data))

    def _receive_close(self, payload: bytes) -> None:
        # 5.5.1 and 7.1.5: an empty body means "no status code", reported as 1005.
        if not payload:
            code, reason = 1005, ""
        elif len(payload) == 1:
            self._fail(1002, "close frame with a 1-byte payload")
            return
        else:
            code = int.from_bytes(payload[:2], "big")
            if not _receivable_code(code):
                self._fail(1002, f"invalid close code {code}")
                return
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in close reason")  # 8.1
                return
        if self.state is OPEN:
            # 5.5.1: echo the status code; an empty close is echoed empty.
            self._output.append(self._encode_frame(OP_CLOSE, payload[:2]))
        self.state = CLOSED
        self._fragments = None
        self._events.append(Closed(code, reason))

    def fail(self, code: int, reason: str) -> None:
        """7.1.7 Fail the WebSocket Connection, for a rule above this layer (MCP does not
        use binary messages): read nothing more, and once the answers owed are sent,
        ``close()`` sends a close frame with ``code``. Unlike a protocol error found
        here, it emits no ``Failed``: the caller knows."""
        if not _receivable_code(code):
            raise ValueError(f"{code} is not a close code that may be sent")
        if self.state is OPEN:
            self.state = FAILING
            self._failure = (code, _close_payload(code, reason)[1])
            self._fragments = None
            self._fragment_size = 0

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error: ``fail``, and tell the transport. After our close frame
        (CLOSING) nothing is owed: the connection is CLOSED at once."""
        state = self.state
        if state is OPEN:
            self.fail(code, reason)
            self._events.append(Failed(*self._failure))
        elif state is CLOSING:
            self.state = CLOSED
            self._fragments = None
            self._events.append(Closed(code, _close_payload(code, reason)[1]))
