"""UnixUpstream: an MCP server listening on a unix socket, spoken to in newline-delimited
JSON, as the gateway's own unix listener speaks to its clients."""

from __future__ import annotations

import asyncio

from ..config import UpstreamConfig
from ..protocol.ndjson import OVERSIZED, LineFramer
from ..transport.writer import begin_batch, end_batch
from .base import CallT, UpstreamEvents
from .remote import RemoteUpstream, StreamProtocol


class _LineProtocol(StreamProtocol):
    def __init__(self, upstream: UnixUpstream[CallT]) -> None:
        super().__init__(upstream)
        self.framer = LineFramer(upstream.config.max_message_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        outer = begin_batch()
        try:
            for line in self.framer.feed(data):
                if line is OVERSIZED:
                    upstream.log.warning("dropped a message from the upstream over %d "
                                         "bytes", upstream.config.max_message_bytes)
                else:
                    upstream.on_message(line)
        finally:
            end_batch(outer)


class UnixUpstream(RemoteUpstream[CallT]):
    kind = "unix"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.connection.delimiter = b"\n"

    @property
    def address(self) -> str:
        return f"unix:{self.config.socket}"

    async def open(self) -> tuple[asyncio.BaseTransport, StreamProtocol]:
        return await asyncio.get_running_loop().create_unix_connection(
            lambda: _LineProtocol(self), self.config.socket)
