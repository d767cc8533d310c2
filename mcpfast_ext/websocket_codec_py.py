"""WebSocket frame codec, RFC 6455 section 5: bytes in, frames out, and back.

Pure-Python twin of ``websocket_codec.pyx``; both must behave identically, down to
the reason strings of their errors (``tests/test_websocket_codec.py`` cross-checks
them on random input). This layer validates one frame at a time. Reassembling
fragmented messages, checking UTF-8 in text and the close code in close payloads
belong to the layer above it, which receives fragments exactly as they were framed.
"""

from __future__ import annotations

import struct
from typing import NoReturn

from .frame_error import FrameError

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))

_HEAD_7 = struct.Struct("!BB")
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")

Frame = tuple[bool, int, bytes]


class FrameParser:
    """Split a byte stream into ``(fin, opcode, payload)`` frames, unmasking payloads.

    ``expect_masked`` is True on the server, which reads client frames, and False on
    the client (5.1). A declared payload over ``max_payload`` bytes fails with 1009.

    After ``feed`` raises FrameError the parser is finished: the buffer is dropped, and
    every later call raises the same error again (7.1.7: the connection must be failed).
    The frames completed earlier in that same call come with the error, as its
    ``frames``: the connection answers them before it closes.
    """

    __slots__ = ("_buf", "_error", "_mask_bit", "_max_payload")

    def __init__(self, *, expect_masked: bool, max_payload: int) -> None:
        if max_payload < 0:
            raise ValueError("max_payload must not be negative")
        self._buf = bytearray()
        self._mask_bit = 0x80 if expect_masked else 0
        self._max_payload = max_payload
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held until the rest of their frame arrives."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Take the next bytes of the stream; return the frames they complete, in order.

        Payloads come back unmasked, as bytes. Raises FrameError on the first frame that
        breaks section 5, as soon as its header shows it.
        """
        if self._error is not None:
            raise FrameError(self._error.code, self._error.reason)
        buf = self._buf
        # Nothing pending, the usual case: parse the caller's bytes in place. Slices of
        # bytes are already the bytes to return, saving a bytes() call (measured at a
        # third of the cost of parsing a small unmasked frame).
        src: bytes | bytearray
        if not buf and type(data) is bytes:
            src = data
        else:
            buf += data
            src = buf
        end = len(src)
        frames: list[Frame] = []
        try:
            pos = self._parse(src, end, frames)
        except FrameError as exc:
            raise FrameError(exc.code, exc.reason, frames) from None
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += memoryview(src)[pos:]
        return frames

    def _parse(self, src: bytes | bytearray, end: int, frames: list[Frame]) -> int:
        """Append the complete frames in ``src[:end]`` to ``frames``; return how many
        bytes they took."""
        mask_bit = self._mask_bit
        max_payload = self._max_payload
        buf = self._buf
        pos = 0
        # A partial frame is parsed again from its first byte on the next call: headers
        # are at most 14 bytes, cheaper to re-read than to keep a resumable state.
        while end - pos >= 2:
            b0 = src[pos]
            b1 = src[pos + 1]
            if b0 & 0x70:
                # 5.2: RSV1-3 must be 0 unless an extension defines them; none is negotiated.
                self._fail(1002, "reserved bits set")
            opcode = b0 & 0x0F
            if opcode > OP_BINARY:
                if opcode not in _OPCODES:
                    self._fail(1002, f"reserved opcode {opcode}")
                # 5.5: control frames are never fragmented and carry at most 125 bytes,
                # which also rules out the 16- and 64-bit length forms.
                if not b0 & 0x80:
                    self._fail(1002, "fragmented control frame")
                if (b1 & 0x7F) > 125:
                    self._fail(1002, "control frame payload longer than 125 bytes")
            if (b1 & 0x80) != mask_bit:
                # 5.1: a client masks every frame, a server never does.
                self._fail(
                    1002, "expected a masked frame" if mask_bit else "unexpected masked frame"
                )
            length = b1 & 0x7F
            if length == 126:
                if end - pos < 4:
                    break
                length = (src[pos + 2] << 8) | src[pos + 3]
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(src[pos + 2 : pos + 10], "big")
                if length >> 63:
                    # 5.2: the 64-bit length's most significant bit must be 0.
                    self._fail(1002, "payload length has its most significant bit set")
                start = pos + 10
            else:
                start = pos + 2
            # Checked before the payload (even the mask key) arrives, so a huge declared
            # length is refused without buffering any of it.
            if length > max_payload:
                self._fail(1009, f"payload of {length} bytes exceeds the limit of {max_payload}")
            if mask_bit:
                start += 4
            stop = start + length
            if stop > end:
                break
            if mask_bit:
                # 5.3: XOR as one big integer with the key repeated to the payload's length;
                # CPython does that in C, far faster than a per-byte loop.
                payload = (
                    int.from_bytes(src[start:stop], "big")
                    ^ int.from_bytes((src[start - 4 : start] * ((length >> 2) + 1))[:length], "big")
                ).to_bytes(length, "big")
            elif src is buf:
                payload = bytes(buf[start:stop])
            else:
                payload = src[start:stop]  # type: ignore[assignment]  # src is data, bytes
            frames.append(((b0 & 0x80) != 0, opcode, payload))
            pos = stop
        return pos

    def _fail(self, code: int, reason: str) -> NoReturn:
        self._error = FrameError(code, reason)
        self._buf.clear()
        raise self._error


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    fin: bool = True,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame, masked with ``mask`` (client side) or unmasked (server side).

    The length uses the shortest of the three forms, as 5.2 requires. Frames no
    conforming peer would accept (reserved opcodes, control frames over 125 bytes or
    fragmented) raise ValueError: they are bugs in the caller, not peer errors.
    """
    if opcode not in _OPCODES:
        raise ValueError(f"reserved opcode {opcode}")
    if type(payload) is memoryview:
        payload = payload.cast("B")
    length = len(payload)
    if opcode > OP_BINARY and (not fin or length > 125):
        raise ValueError("control frames must be final and carry at most 125 bytes")
    b0 = 0x80 | opcode if fin else opcode
    b1 = 0 if mask is None else 0x80
    if length < 126:
        header = _HEAD_7.pack(b0, b1 | length)
    elif length < 0x10000:
        header = _HEAD_16.pack(b0, b1 | 126, length)
    else:
        header = _HEAD_64.pack(b0, b1 | 127, length)
    if mask is None:
        return header + payload
    if type(mask) is not bytes:
        mask = bytes(memoryview(mask))
    return b"".join((header, mask, apply_mask(payload, mask)))


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (5.3); applying it twice gives ``data`` back."""
    if type(mask) is not bytes:
        mask = bytes(memoryview(mask))
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    if type(data) is memoryview:
        data = data.cast("B")
    length = len(data)
    return (
        int.from_bytes(data, "big") ^ int.from_bytes((mask * ((length >> 2) + 1))[:length], "big")
    ).to_bytes(length, "big")
