"""Newline-delimited JSON framing (the stdio transport's, reused for unix sockets).

Sans-I/O: ``feed`` bytes, get back whole lines. A line longer than the limit is not
buffered: it is reported once as ``OVERSIZED`` and its remaining bytes are skipped up to
the next newline, so a misbehaving peer cannot make the gateway hold unbounded memory and
the messages after it still get through.
"""

from __future__ import annotations

from typing import Final

OVERSIZED: Final = None
"""Stands in the returned list where an oversized line was dropped."""


HEAD_BYTES: Final = 128
"""How much of an oversized line is kept (``pop_head``): enough for its envelope's
``jsonrpc`` and ``id``."""
MAX_HEADS: Final = 16


class LineFramer:
    __slots__ = ("_buf", "_heads", "_max", "_skipping")

    def __init__(self, max_line_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_line_bytes
        self._skipping = False
        self._heads: list[bytes] | None = None  # made by the first oversized line

    def feed(self, data: bytes) -> list[bytes | None]:
        """Return the complete lines in ``data`` (without the newline and the blanks
        around it; a line of blanks only is dropped), with ``OVERSIZED`` where a line
        exceeded the limit."""
        # One split in C for the whole read: its last part is what follows the last
        # newline (empty when the read ends with one), the start of the next line.
        lines = data.split(b"\n")
        tail = lines.pop()
        buf = self._buf
        out: list[bytes | None]
        if lines:
            if self._skipping:  # the rest of an oversized line
                self._skipping = False
                lines[0] = b""
            elif buf:
                buf += lines[0]
                lines[0] = bytes(buf)
                buf.clear()
            if len(data) + len(lines[0]) <= self._max:  # no line can be oversized
                out = _strip(lines)
            else:
                out = [self._dropped(line) if len(line) > self._max else line.strip(BLANK)
                       for line in lines]
                out = [line for line in out if line is OVERSIZED or line]
        else:
            out = []
        if tail and not self._skipping:
            buf += tail
            if len(buf) > self._max:
                out.append(self._dropped(buf))
                buf.clear()
                self._skipping = True
        return out

    def _dropped(self, line: bytes | bytearray) -> bytes | None:
        """``OVERSIZED``, its line's beginning kept for ``pop_head`` (the last
        ``MAX_HEADS``: a reader that never asks holds no more)."""
        heads = self._heads
        if heads is None:
            heads = self._heads = []
        heads.append(bytes(line[:HEAD_BYTES]).lstrip(BLANK))
        if len(heads) > MAX_HEADS:
            del heads[0]
        return OVERSIZED

    def pop_head(self) -> bytes:
        """The beginning of the oldest oversized line not yet asked for (empty when
        none is kept): what it may say of itself, as the id of the request it answers."""
        return self._heads.pop(0) if self._heads else b""

    def rest(self) -> bytes:
        """What was read after the last newline, taken: at the end of the input, a last
        message its writer did not end with one (empty when there is none, or it was
        oversized)."""
        rest = b"" if self._skipping else bytes(self._buf).strip(BLANK)
        self._buf.clear()
        self._skipping = False
        return rest

    @property
    def limit(self) -> int:
        return self._max

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _strip(lines: list[bytes]) -> list[bytes | None]:
    return [stripped for line in lines if (stripped := line.strip(BLANK))]


BLANK = b" \t\r"
"""What is stripped from both ends of a line: JSON's whitespace (a line that is only
that holds no message, as an empty one does)."""
