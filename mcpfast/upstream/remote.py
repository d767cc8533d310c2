"""RemoteUpstream: an MCP server the gateway connects to rather than starts, over a
stream socket (a unix socket, or TCP for WebSocket). Each kind opens its connection
and frames its messages; what is common is here: the connect time-out, the writer
with back-pressure, why the connection ended, and closing it.

A remote server outlives the gateway's connection to it: "restart" means reconnect,
with the same backoff as a process that exits (``Upstream._supervise``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import UpstreamConfig
from ..transport.writer import UPSTREAM_HIGH_WATER, CoalescingWriter
from .base import CallT, Upstream, UpstreamError, UpstreamEvents


class StreamProtocol(asyncio.Protocol):
    """The connection's reading side; each kind turns bytes into messages
    (``data_received``). ``opened`` is done when the connection is ready for MCP
    messages (after a kind's own handshake), ``closed`` when it ends."""

    def __init__(self, upstream: RemoteUpstream[Any]) -> None:
        self.upstream = upstream
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.reason = "the connection closed"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def end(self, reason: str) -> None:
        """The connection is over (or must be): say why, once, and close it."""
        if not self.closed.done():
            self.reason = reason
            self.closed.set_result(None)
            if not self.opened.done():
                self.opened.set_exception(UpstreamError(-32000, reason))
                self.opened.exception()  # retrieved here when nobody waits any more
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.end("the server closed the connection" if exc is None else
                 f"the connection was lost: {exc}")

    def eof_received(self) -> bool | None:
        self.end("the server closed the connection")
        return None


class RemoteUpstream(Upstream[CallT]):
    kind = "remote"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self._protocol: StreamProtocol | None = None

    @property
    def address(self) -> str:
        """Where the server is, as /status and the log show it."""
        raise NotImplementedError

    async def open(self) -> tuple[asyncio.BaseTransport, StreamProtocol]:
        """Open the socket (each kind its own)."""
        raise NotImplementedError

    def writer_for(self, transport: asyncio.Transport, protocol: StreamProtocol
                   ) -> CoalescingWriter:
        return CoalescingWriter(transport, asyncio.get_running_loop(),
                                high_water=UPSTREAM_HIGH_WATER,
                                on_congested=self.congested)

    async def connect(self) -> asyncio.Future[Any]:
        """Connect, and finish the kind's handshake, within ``connect_timeout``; the
        future is done when the connection ends."""
        protocol: StreamProtocol | None = None

        async def opening() -> StreamProtocol:
            nonlocal protocol
            _, protocol = await self.open()
            await protocol.opened
            return protocol
        try:
            await asyncio.wait_for(opening(), self.config.connect_timeout)
        except TimeoutError:
            if protocol is not None:
                protocol.end("connect timeout")
            raise UpstreamError(-32000, f"cannot connect to {self.address}: no connection "
                                f"within {self.config.connect_timeout:g} s") from None
        except OSError as exc:
            raise UpstreamError(-32000, f"cannot connect to {self.address}: "
                                f"{exc.strerror or exc}") from None
        assert protocol is not None and protocol.transport is not None
        self._protocol = protocol
        self.connection.writer = self.writer_for(protocol.transport, protocol)
        self.starts += 1
        self.log.info("connected to %s", self.address)
        return protocol.closed

    def ended_because(self) -> str:
        return self._protocol.reason if self._protocol is not None else "not connected"

    async def disconnect(self) -> None:
        protocol = self._protocol
        self.connection.writer = None
        if protocol is None:
            return
        protocol.end(protocol.reason if protocol.closed.done() else
                     "the gateway closed the connection")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["address"] = self.address
        return info
