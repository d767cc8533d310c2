"""UnixUpstream: an MCP server listening on a unix socket, spoken to in newline-delimited
JSON, as the gateway's own unix listener speaks to its clients."""

from __future__ import annotations

import asyncio

from ..config import UpstreamConfig
from ..protocol.ndjson import LineFramer
from .base import CallT, UpstreamEvents, deliver_lines
from .remote import RemoteUpstream, StreamProtocol


class _LineProtocol(StreamProtocol):
    def __init__(self, upstream: UnixUpstream[CallT]) -> None:
        super().__init__(upstream)
        self.framer = LineFramer(upstream.config.max_message_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        deliver_lines(self.upstream, self.framer, data)


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
