"""Server-sent events over HTTP/1.1 chunked bodies, and the replay buffer for resumption.

Sans-I/O: functions return bytes to write. Each event carries one JSON-RPC message
(MCP basic/transports "Streamable HTTP"); an event id names its stream and position,
``<stream>_<seq>``, so that ``Last-Event-ID`` identifies the stream to resume
("Resumability and Redelivery": ids are unique across the session's streams).
"""

from __future__ import annotations

from collections import deque

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
    if not sep or not stream or not seq.isdigit():
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
