"""Write coalescing and flow control toward one peer.

On these machines the kernel's cost per write dominates a proxied message (DESIGN.md),
so messages produced while handling one batch of reads are joined and written once,
just before the loop polls again.

What is queued toward a peer that does not read is bounded (``limits.client_buffer_bytes``,
Envoy's per-connection buffer limit): past the limit the writer stops writing and calls
``on_overflow``, which closes the client. The check costs one call into the transport per
flush, not per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("mcpfast.transport")


class _Writable(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


PAUSED_BY_CLIENT = 1
"""The client does not read its answers (its transport's write buffer is full)."""
PAUSED_BY_UPSTREAM = 2
"""An upstream the client sends to does not read its requests fast enough."""
PAUSED_FOR_OTHERS = 16
"""The client sent more messages in one read than one turn of the loop handles
(``MESSAGES_PER_TURN``): the rest wait for the next turn, unread meanwhile, so that
other clients are served in between."""
HELD_BY_GATEWAY = PAUSED_BY_UPSTREAM | PAUSED_FOR_OTHERS
"""The reasons to pause that are the gateway's, not the client's: what the client sends
meanwhile waits unread in the kernel, so the deadline of a message it has begun does not
run, and starts again once reading resumes (``ClientProtocol.released``)."""
MESSAGES_PER_TURN = 256
"""Messages of one client handled in one turn of the loop. A read holds up to 256 KiB,
tens of thousands of small messages: handled at once, they kept every other client
(and the admin port) waiting for seconds. A client with 8 calls in flight sends 8."""


class ClientProtocol(asyncio.Protocol):
    """Flow control for a client connection: while the client does not read its
    answers, or an upstream it feeds is congested, stop reading its requests, so that
    neither a slow client nor a slow upstream can make the gateway buffer without
    bound. Reading resumes when every reason to pause is gone."""

    __slots__ = ("_backlog", "paused")
    transport: asyncio.Transport | None
    paused: int
    """The reasons (PAUSED_BY_*) reading is paused for, as bits; 0 while reading."""
    held_by_gateway = HELD_BY_GATEWAY
    """The reasons among them that are the gateway's own."""

    def pause_writing(self) -> None:
        self.pause(PAUSED_BY_CLIENT)

    def resume_writing(self) -> None:
        self.resume(PAUSED_BY_CLIENT)

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        paused = self.paused
        if not paused & reason:
            return
        self.paused = paused & ~reason
        if not self.paused and self.transport is not None and \
                not self.transport.is_closing():
            self.transport.resume_reading()
        if paused & self.held_by_gateway and not self.paused & self.held_by_gateway:
            self.released()

    def released(self) -> None:
        """Reading was held by the gateway and no longer is: a message the client had
        begun gets its whole time again, from now (its bytes waited unread in the
        kernel; a deadline due before the next read would time out what came in time)."""

    # -- a turn of the loop at a time (MESSAGES_PER_TURN) ------------------------------
    _backlog: list[Any] | None
    """The messages of a read beyond this turn's, handled on the next turns."""
    _loop: asyncio.AbstractEventLoop

    def this_turn(self, messages: list[Any]) -> list[Any]:
        """Of a read's ``messages``, those to handle now: the first MESSAGES_PER_TURN;
        the rest wait, reading paused, for ``_next_turn`` on the next turns."""
        if self._backlog is not None:
            self._backlog += messages  # read before the pause took
            return []
        if len(messages) <= MESSAGES_PER_TURN:
            return messages
        self._backlog = messages[MESSAGES_PER_TURN:]
        self.pause(PAUSED_FOR_OTHERS)
        self._loop.call_soon(self._next_turn)
        return messages[:MESSAGES_PER_TURN]

    def next_share(self, still_open: bool) -> list[Any] | None:
        """The waiting messages this turn handles, reading again once none are left;
        None when none wait, or the connection closed meanwhile (they are dropped)."""
        backlog = self._backlog
        if backlog is None or not still_open:
            self._backlog = None
            return None
        if len(backlog) > MESSAGES_PER_TURN:
            self._backlog = backlog[MESSAGES_PER_TURN:]
            self._loop.call_soon(self._next_turn)
            return backlog[:MESSAGES_PER_TURN]
        self._backlog = None
        self.resume(PAUSED_FOR_OTHERS)
        return backlog

    def _next_turn(self) -> None:
        """Handle ``next_share``: each connection its own way."""
        raise NotImplementedError


UPSTREAM_HIGH_WATER = 1024 * 1024
"""Bytes queued toward an upstream past which the clients feeding it stop being read."""
UPSTREAM_LOW_WATER = 256 * 1024


_batch: list[list[CoalescingWriter] | None] = [None]
"""The writers written to since ``begin_batch``, while one is open."""


def begin_batch() -> list[CoalescingWriter] | None:
    """Until ``end_batch``, writes are flushed when the batch ends rather than by a
    callback scheduled for the next turn of the event loop. For an upstream's read:
    every answer in it has reached its client's writer by the end of the read, so
    writing them then coalesces as much as waiting would, and saves the client a turn
    of the loop (an ``epoll_wait`` and a callback) on every call at low load. Returns
    the batch this one interrupts, for ``end_batch``."""
    outer = _batch[0]
    _batch[0] = []
    return outer


def end_batch(outer: list[CoalescingWriter] | None) -> None:
    """Flush what the batch wrote, and restore the batch it interrupted. A writer whose
    flush fails (its overflow or congestion callback raised) is logged and the others
    are flushed all the same, as separate callbacks would have been."""
    writers = _batch[0]
    _batch[0] = outer
    if writers:
        for writer in writers:
            try:
                writer.flush()
            except Exception:
                log.exception("flushing a connection's writes failed")


class CoalescingWriter:
    __slots__ = ("_chunks", "_high_water", "_limit", "_loop", "_on_congested",
                 "_on_overflow", "_scheduled", "_transport", "congested", "overflowed")

    def __init__(self, transport: _Writable, loop: asyncio.AbstractEventLoop,
                 limit: int = 0, on_overflow: Callable[[int], None] | None = None,
                 high_water: int = 0, on_congested: Callable[[], None] | None = None
                 ) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._scheduled = False
        self._loop = loop
        self._limit = limit
        self._on_overflow = on_overflow
        self.overflowed = False
        self._high_water = high_water
        self._on_congested = on_congested
        self.congested = False
        """Set by a flush that left more than ``high_water`` bytes queued; whoever
        feeds the peer stops until ``drained`` says so."""

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if not self._scheduled:
            self._scheduled = True
            batch = _batch[0]
            if batch is None:
                self._loop.call_soon(self.flush)
            else:
                batch.append(self)

    def write_now(self, data: bytes) -> None:
        """Write ``data`` at once unless earlier writes wait to be coalesced (then it
        joins them): for a whole HTTP response, which nothing else joins in this loop
        iteration, so that it costs no scheduled callback."""
        self._chunks.append(data)
        if not self._scheduled:
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        transport = self._transport
        if transport.is_closing() or self.overflowed:
            return
        if self._limit:
            # What the peer has not taken yet, before this batch: a batch is always
            # written whole when the peer keeps up, whatever its size.
            pending = transport.get_write_buffer_size()
            if pending > self._limit:
                self.overflowed = True
                if self._on_overflow is not None:
                    self._on_overflow(pending)
                return
        transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._high_water and not self.congested and \
                transport.get_write_buffer_size() > self._high_water:
            self.congested = True
            if self._on_congested is not None:
                self._on_congested()

    def drained(self, low_water: int) -> bool:
        """Whether a congested peer has taken enough to be fed again (clears
        ``congested`` when it has)."""
        if self._transport.is_closing() or \
                self._transport.get_write_buffer_size() <= low_water:
            self.congested = False
        return not self.congested

    def buffered(self) -> int:
        """Bytes queued toward the peer, in this writer and in the transport."""
        return sum(map(len, self._chunks)) + self._transport.get_write_buffer_size()
