"""The unix-socket listener's connections: newline-delimited JSON (the stdio framing)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..protocol import jsonrpc
from ..protocol.ndjson import OVERSIZED, LineFramer
from .writer import ClientProtocol, CoalescingWriter

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway
    from ..gateway.listener import Listener
    from ..gateway.session import DownstreamSession


class UnixConnection(ClientProtocol):
    __slots__ = ("eof", "framer", "gateway", "listener", "session", "transport", "writer")

    def __init__(self, gateway: Gateway, listener: Listener) -> None:
        self.gateway = gateway
        self.listener = listener
        self.framer = LineFramer(gateway.config.listen.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.writer: CoalescingWriter | None = None
        self.session: DownstreamSession | None = None
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        self.writer = CoalescingWriter(self.transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        self.listener.connections.add(self)
        self.session = self.gateway.open_session("unix", self.listener.address, self.send,
                                                 self.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        if self.session is not None:
            self.gateway.close_session(self.session)

    def data_received(self, data: bytes) -> None:
        session = self.session
        assert session is not None
        handle = self.gateway.handle
        for line in self.framer.feed(data):
            if line is OVERSIZED:
                self.gateway.counters.oversized += 1
                self.gateway.send_error(
                    session, None, jsonrpc.INVALID_REQUEST,
                    f"message exceeds the {self.framer.limit}-byte limit and was dropped")
            else:
                handle(session, line)

    def eof_received(self) -> bool:
        """The client half-closed: answer what it already asked, then close."""
        self.eof = True
        if self.session is None or not self.session.inflight:
            self.close(1000, "end of input")
        return True

    def send(self, data: bytes) -> None:
        writer = self.writer
        if writer is not None:
            writer.write(data)
            writer.write(b"\n")
            if self.eof and self.session is not None and not self.session.inflight:
                self.close(1000, "end of input")

    def close(self, code: int, reason: str) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
