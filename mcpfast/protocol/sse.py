"""Server-sent events over HTTP/1.1 chunked bodies, the replay buffer for resumption,
and the client's parser (``SseParser``, for Streamable HTTP upstreams).

Sans-I/O: functions return bytes to write; the parser takes bytes read. Each event
carries one JSON-RPC message (MCP basic/transports "Streamable HTTP"); an event id
names its stream and position, ``<stream>_<seq>``, so that ``Last-Event-ID`` identifies
the stream to resume ("Resumability and Redelivery": ids are unique across the session's
streams).
"""

from __future__ import annotations

from collections import deque

import msgspec

KEEPALIVE = b": ping\n\n"
LAST_CHUNK = b"0\r\n\r\n"

SSE_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache, no-transform"),
    ("X-Accel-Buffering", "no"),
]


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (RFC 9112 7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def event(data: bytes, event_id: str | None = None) -> bytes:
    """One ``message`` event holding ``data`` (a JSON text, which has no newlines)."""
    if event_id is None:
        return b"event: message\ndata: " + data + b"\n\n"
    return b"id: " + event_id.encode("ascii") + b"\nevent: message\ndata: " + data + b"\n\n"


def priming(event_id: str, retry_ms: int) -> bytes:
    """The event that opens a resumable stream: an id and empty data, so that a client
    that loses the connection before any message can still resume (2025-11-25)."""
    return b"id: %b\nretry: %d\ndata: \n\n" % (event_id.encode("ascii"), retry_ms)


def split_event_id(event_id: str) -> tuple[str, int] | None:
    """``<stream>_<seq>`` back into its parts, or None when it is not one of ours."""
    stream, sep, seq = event_id.strip().rpartition("_")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and few of them
    # (int() refuses more than 4300).
    if not sep or not stream or not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        return None
    return stream, int(seq)


class ReplayBuffer:
    """The last ``capacity`` events of one stream, to send again after ``Last-Event-ID``.

    ``after(seq)`` returns the events that followed ``seq``, or None when some of them
    were already dropped: then resumption cannot be exact and must be refused rather
    than silently lose a message.
    """

    __slots__ = ("_events", "capacity", "next_seq")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._events: deque[tuple[int, bytes]] | None = None
        """Made at the first event: most streams (a POST answered as JSON) hold none."""
        self.next_seq = 1

    def add(self, data: bytes) -> int:
        seq = self.next_seq
        self.next_seq += 1
        if self.capacity:
            events = self._events
            if events is None:
                events = self._events = deque()
            events.append((seq, data))
            if len(events) > self.capacity:
                events.popleft()
        return seq

    def after(self, seq: int) -> list[tuple[int, bytes]] | None:
        if seq >= self.next_seq:
            return None
        if seq == self.next_seq - 1:
            return []
        events = self._events
        if not events or events[0][0] > seq + 1:
            return None
        return [(s, d) for s, d in events if s > seq]


class SseEvent(msgspec.Struct, gc=False):
    """One dispatched event (HTML "event stream interpretation")."""

    data: bytes
    event: str = "message"
    id: str | None = None
    """The last event ID at dispatch, when the stream has set one."""


class SseParser:
    """The client's side of an event stream, without I/O: ``feed(bytes)`` returns the
    events completed so far. Lines end in CRLF, LF or CR; ``data`` lines join with LF;
    an ``id`` with a NUL is ignored, as the standard says; ``retry`` is kept for the
    reconnection delay. An event larger than ``max_event_bytes`` raises ValueError, and
    leaves the parser as ``reset()`` does.

    ``last_id`` is the id of the last event dispatched (HTML 9.2.6: the "last event ID
    string" is set from the "last event ID buffer" only at dispatch), so that an event
    cut off after its ``id`` line is not taken as received when resuming with
    ``Last-Event-ID``; an empty ``id`` sets it back to None."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_max", "_pending_cr", "last_id",
                 "retry_ms")

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        self._event = ""
        self._max = max_event_bytes
        self._pending_cr = False
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def reset(self) -> None:
        """Drop the partial event, before reading a new connection: a resumed stream
        starts at an event boundary, and must not be glued onto the dropped one's tail.
        ``last_id`` and ``retry_ms`` are kept for the resumption."""
        self._buf.clear()
        self._data = []
        self._event = ""
        self._pending_cr = False
        self._id = self.last_id

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF split across two chunks
        self._pending_cr = False
        buf = self._buf
        buf += chunk
        events: list[SseEvent] = []
        start = 0
        end = len(buf)
        while start < end:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else end)
            if cr >= 0:
                stop, after = cr, cr + 1
                if after < end and buf[after] == 0x0A:
                    after += 1
                elif after == end:
                    self._pending_cr = True
            elif lf >= 0:
                stop, after = lf, lf + 1
            else:
                break
            self._line(bytes(buf[start:stop]), events)
            start = after
        del buf[:start]
        if len(buf) + sum(map(len, self._data)) > self._max:
            self.reset()
            raise ValueError(f"an event over {self._max} bytes")
        return events

    def _line(self, line: bytes, events: list[SseEvent]) -> None:
        if not line:
            self.last_id = self._id
            if self._data:
                events.append(SseEvent(b"\n".join(self._data), self._event or "message",
                                       self._id))
            self._data = []
            self._event = ""
            return
        if line.startswith(b":"):
            return  # a comment: keep-alive
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace") or None
        elif name == b"retry" and value.isdigit():
            self.retry_ms = int(value)
