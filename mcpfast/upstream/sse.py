"""SseUpstream: an MCP server on the HTTP+SSE transport of protocol version 2024-11-05,
which many remote servers still serve (``transport = "sse"``; ``url`` is the SSE
endpoint, say ``https://host/sse``).

The client GETs the SSE endpoint; the server's first event (``endpoint``) names the URL
to POST messages to, and every message the server sends, answers included, comes down
that one stream. So it is a connection like a socket's: each message written is a POST
(answered 202), each ``message`` event read is a message; the stream ending is the
connection ending, reconnected with the restart backoff (this transport has no
resumption). Legacy era only: the transport predates the modern one.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from ..config import UpstreamConfig
from ..protocol.sse import SseParser
from .base import CallT, UpstreamError, UpstreamEvents
from .streamable import HttpUpstream, PostWriter, http_client, shown_url


class SseUpstream(HttpUpstream[CallT]):
    kind = "sse"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.endpoint: str | None = None
        """Where messages are posted, as the server's ``endpoint`` event named it."""
        self._reader: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()

    async def connect(self) -> asyncio.Future[Any]:
        """GET the SSE endpoint and wait for its ``endpoint`` event (within
        ``connect_timeout``); the future is done when the stream ends."""
        loop = asyncio.get_running_loop()
        self._http = http = http_client(self.config)
        self._closed = loop.create_future()
        endpoint: asyncio.Future[str] = loop.create_future()
        self._reader = asyncio.ensure_future(self._read(http, endpoint))
        try:
            self.endpoint = await asyncio.wait_for(asyncio.shield(endpoint),
                                                   self.config.connect_timeout)
        except TimeoutError:
            await self.disconnect()
            raise UpstreamError(-32000, f"{self.address} sent no endpoint event within "
                                f"{self.config.connect_timeout:g} s") from None
        except UpstreamError:
            await self.disconnect()
            raise
        self.connection.writer = PostWriter(self.post)
        self.starts += 1
        self.log.info("connected to %s (posting to %s)", self.address,
                      shown_url(self.endpoint))
        return self._closed

    async def _read(self, http: aiohttp.ClientSession, endpoint: asyncio.Future[str]) -> None:
        reason = "the server ended the SSE stream"
        try:
            async with http.get(self.config.url,
                                headers={"Accept": "text/event-stream"}) as response:
                if response.status != 200 or response.content_type != "text/event-stream":
                    reason = (f"{self.address} answered HTTP {response.status} "
                              f"{response.content_type}, not an SSE stream")
                    return
                parser = SseParser(self.config.max_message_bytes)
                async for chunk in response.content.iter_any():
                    for event in parser.feed(chunk):
                        if event.event == "endpoint" and not endpoint.done():
                            endpoint.set_result(self._endpoint_url(event.data))
                        elif event.event == "message" and event.data and endpoint.done():
                            self.on_message(event.data)
        except UpstreamError as exc:
            reason = exc.message
        except aiohttp.ClientConnectorError as exc:
            reason = f"cannot connect to {self.address}: {exc.os_error}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            reason = f"the SSE stream failed: {exc or type(exc).__name__}"
        finally:
            if not endpoint.done():
                endpoint.set_exception(UpstreamError(-32000, reason))
                endpoint.exception()  # retrieved: connect() reports it
            self._end(reason)

    def _endpoint_url(self, data: bytes) -> str:
        """The POST URL, resolved against the SSE URL; one on another origin is refused
        (the config's headers, credentials among them, would go there)."""
        url = urljoin(self.config.url, data.decode("utf-8", "replace").strip())
        base, named = urlsplit(self.config.url), urlsplit(url)
        if (named.scheme, named.netloc) != (base.scheme, base.netloc):
            raise UpstreamError(-32000, f"the endpoint event names another origin "
                                f"({named.scheme}://{named.netloc})")
        return url

    def post(self, data: bytes) -> None:
        task = asyncio.ensure_future(self._post(data))
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _post(self, data: bytes) -> None:
        http, endpoint = self._http, self.endpoint
        if http is None or endpoint is None:
            return
        try:
            async with http.post(endpoint, data=data,
                                 headers={"Content-Type": "application/json"}) as response:
                if response.status >= 300:
                    # The answer would come down the stream; without it, the request
                    # waits for its time-out. A refused post means the stream is stale.
                    self._end(f"posting to {shown_url(endpoint)} answered HTTP "
                              f"{response.status}")
        except (aiohttp.ClientError, OSError) as exc:
            self._end(f"posting to {shown_url(endpoint)} failed: {exc or type(exc).__name__}")

    async def disconnect(self) -> None:
        http = self._http
        if http is None:
            return
        self._http = None
        self.connection.writer = None
        self._end(self._reason)
        for task in (self._reader, *self._posts):
            if task is not None:
                task.cancel()
        await http.close()
