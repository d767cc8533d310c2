"""SseUpstream: an MCP server on the HTTP+SSE transport of protocol version 2024-11-05,
which many remote servers still serve (``transport = "sse"``; ``url`` is the SSE
endpoint, say ``https://host/sse``).

The client GETs the SSE endpoint; the server's first event (``endpoint``) names the URL
to POST messages to, and every message the server sends, answers included, comes down
that one stream. So it is a connection like a socket's: each message written is a POST
(answered 202), each ``message`` event read is a message; the stream ending is the
connection ending, reconnected with the restart backoff (this transport has no
resumption). Legacy era only: the transport predates the modern one.

Both the stream and the POSTs are exchanges of the upstream's HTTP client
(http_client.py) read on its callbacks: no task per message.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin, urlsplit

import msgspec
from msgspec import UNSET, UnsetType

from ..config import UpstreamConfig
from ..protocol.sse import SseParser
from .base import CallT, UpstreamError, UpstreamEvents
from .http_client import ConnectError, Exchange, HttpClientError, Response
from .streamable import SSE, HttpUpstream, PostWriter, repeatable, shown_url


class _Method(msgspec.Struct, gc=False):
    method: str | UnsetType = UNSET


_method = msgspec.json.Decoder(_Method)


class _Stream(Exchange):
    """The SSE stream: its ``endpoint`` event, then the server's messages."""

    __slots__ = ("endpoint", "parser", "upstream")

    def __init__(self, upstream: SseUpstream[Any]) -> None:
        super().__init__()
        self.upstream = upstream
        self.endpoint: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.parser = SseParser(upstream.config.max_message_bytes)

    def response_received(self, response: Response) -> bool:
        if response.status != 200 or response.content_type != SSE:
            self.abort()
            self.ended(f"{self.upstream.address} answered HTTP {response.status} "
                       f"{response.content_type}, not an SSE stream")
            return False
        return True

    def body_received(self, data: bytes) -> None:
        endpoint = self.endpoint
        for event in self.parser.feed(data):  # an event over the limit fails the stream
            if event.event == "endpoint" and not endpoint.done():
                try:
                    endpoint.set_result(self.upstream._endpoint_url(event.data))
                except UpstreamError as exc:
                    self.abort()
                    self.ended(exc.message)
                    return
            elif event.event == "message" and event.data and endpoint.done():
                self.upstream.on_message(event.data)

    def response_complete(self, body: bytes) -> None:
        self.ended("the server ended the SSE stream")

    def request_failed(self, error: HttpClientError) -> None:
        self.ended(f"cannot connect to {self.upstream.address}: {error.reason}"
                   if isinstance(error, ConnectError) else f"the SSE stream failed: {error}")

    def ended(self, reason: str) -> None:
        if not self.endpoint.done():
            self.endpoint.set_exception(UpstreamError(-32000, reason))
            self.endpoint.exception()  # retrieved: connect() reports it
        self.upstream._end(reason)


class _Post(Exchange):
    """One message posted: the server answers 202, and the message's answer, if any,
    comes down the stream."""

    __slots__ = ("upstream",)

    def __init__(self, upstream: SseUpstream[Any]) -> None:
        super().__init__()
        self.upstream = upstream

    def response_received(self, response: Response) -> bool:
        if response.status >= 300:
            # The answer would come down the stream; without it, the request waits
            # for its time-out. A refused post means the stream is stale.
            self.upstream._end(f"posting to {self.upstream.shown_endpoint} answered HTTP "
                               f"{response.status}")
        return False

    def request_failed(self, error: HttpClientError) -> None:
        self.upstream._end(f"posting to {self.upstream.shown_endpoint} failed: {error}")


class SseUpstream(HttpUpstream[CallT]):
    kind = "sse"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.endpoint: str | None = None
        """Where messages are posted, as the server's ``endpoint`` event named it."""
        self.shown_endpoint = ""
        self._post_head = b""

    async def connect(self) -> asyncio.Future[Any]:
        """GET the SSE endpoint and wait for its ``endpoint`` event (within
        ``connect_timeout``); the future is done when the stream ends."""
        loop = asyncio.get_running_loop()
        self._http = http = self.http_client()
        self._closed = loop.create_future()
        stream = _Stream(self)
        http.send(stream, http.head("GET", accept=SSE))
        try:
            self.endpoint = await asyncio.wait_for(asyncio.shield(stream.endpoint),
                                                   self.config.connect_timeout)
            target = urlsplit(self.endpoint)._replace(scheme="", netloc="", fragment="")
            self._post_head = http.head("POST", target.geturl() or "/",
                                        content_type="application/json")
        except TimeoutError:
            await self.disconnect()
            raise UpstreamError(-32000, f"{self.address} sent no endpoint event within "
                                f"{self.config.connect_timeout:g} s") from None
        except (UpstreamError, HttpClientError) as exc:
            await self.disconnect()
            raise UpstreamError(-32000, str(exc)) from None
        self.shown_endpoint = shown_url(self.endpoint)
        self.connection.writer = PostWriter(self.post)
        self.starts += 1
        self.log.info("connected to %s (posting to %s)", self.address, self.shown_endpoint)
        return self._closed

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
        http = self._http
        if http is None or self.endpoint is None:
            return
        exchange = _Post(self)
        try:
            exchange.replayable = repeatable(_method.decode(data).method)
        except msgspec.DecodeError:
            pass
        http.send(exchange, self._post_head, None, data)

    async def disconnect(self) -> None:
        http = self._http
        if http is None:
            return
        self._http = None
        self.connection.writer = None
        self._end(self._reason)
        http.close()
