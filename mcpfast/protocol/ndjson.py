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


class LineFramer:
    __slots__ = ("_buf", "_max", "_skipping")

    def __init__(self, max_line_bytes: int) -> None:
        self._buf = bytearray()
        self._max = max_line_bytes
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | None]:
        """Return the complete lines in ``data`` (without the newline and the blanks
        around it; a line of blanks only is dropped), with ``OVERSIZED`` where a line
        exceeded the limit."""
        buf = self._buf
        if not buf and not self._skipping and data.endswith(b"\n") and len(data) <= self._max:
            # Fast path: the common case of whole lines arriving in one read.
            return _strip(data.split(b"\n"))
        out: list[bytes | None] = []
        start = 0
        end = len(data)
        while start < end:
            nl = data.find(b"\n", start)
            if nl < 0:
                if not self._skipping:
                    buf += data[start:]
                    if len(buf) > self._max:
                        buf.clear()
                        self._skipping = True
                        out.append(OVERSIZED)
                break
            if self._skipping:
                self._skipping = False
            else:
                if buf:
                    buf += data[start:nl]
                    line = bytes(buf)
                    buf.clear()
                else:
                    line = data[start:nl]
                if len(line) > self._max:
                    out.append(OVERSIZED)
                else:
                    line = line.strip(BLANK)
                    if line:
                        out.append(line)
            start = nl + 1
        return out

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
