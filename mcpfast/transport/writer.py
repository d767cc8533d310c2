"""Write coalescing: one transport write per connection per event-loop iteration.

On these machines the kernel's cost per write dominates a proxied message (DESIGN.md),
so messages produced while handling one batch of reads are joined and written once,
just before the loop polls again.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class _Writable(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...


class ClientProtocol(asyncio.Protocol):
    """Flow control for a client connection: while the client does not read its
    answers, stop reading its requests, so that a slow client cannot make the gateway
    buffer without bound."""

    __slots__ = ()
    transport: asyncio.Transport | None

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class CoalescingWriter:
    __slots__ = ("_chunks", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: _Writable, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._chunks: list[bytes] = []
        self._scheduled = False
        self._loop = loop

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        if self._transport.is_closing():
            return
        self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
