"""StreamableHttpUpstream: an MCP server at an ``http://`` or ``https://`` URL, spoken to
over Streamable HTTP in either era (PROTOCOL.md, "Transports").

Every message the gateway writes becomes a POST of its own; what the server answers
(a JSON body, or an SSE stream carrying the request's notifications and server-to-client
requests before its response) is read as if it had come down one connection. So the
rest of the gateway sees the same ``Connection`` as for stdio, and what arrives on a
request's own stream is known to be that request's (``Connection.stream_of``).

Legacy era: the ``Mcp-Session-Id`` issued with the initialize result goes with every
later message, with ``MCP-Protocol-Version``; the session's GET stream is opened after
the handshake (405 means the server has none) and reopened with ``Last-Event-ID`` when
it drops; a POST stream that ends before its response is resumed the same way; 404 on
the session means it expired, and the upstream reconnects (a new initialize); DELETE
ends the session when the gateway disconnects.

Modern era: stateless POSTs with ``MCP-Protocol-Version``, ``Mcp-Method`` and
``Mcp-Name``; closing a request's response stream is how it is cancelled.

The HTTP client is aiohttp's, with a keep-alive pool per upstream (``max_connections``).
A server that cannot be reached fails the request in flight at once and takes the
upstream down, to be reconnected with the restart backoff.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec
from msgspec import UNSET, UnsetType

from ..config import UpstreamConfig
from ..protocol.modern import (
    META_PROTOCOL_VERSION,
    encode_header_value,
    param_headers,
    x_mcp_headers,
)
from ..protocol.sse import SseParser
from .base import CallT, Upstream, UpstreamEvents

RESUME_ATTEMPTS = 3
"""Times a dropped stream is resumed with ``Last-Event-ID`` before giving up."""
DEFAULT_RETRY = 1.0
"""Seconds before resuming a stream whose server named no ``retry``."""
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The methods whose ``Mcp-Name`` header is a member of ``params``, and which."""


class _OutMeta(msgspec.Struct, gc=False):
    version: str | UnsetType = msgspec.field(default=UNSET, name=META_PROTOCOL_VERSION)


class _OutParams(msgspec.Struct, gc=False):
    name: Any = UNSET
    uri: Any = UNSET
    arguments: msgspec.Raw = msgspec.Raw(b"null")
    """Decoded only for a tool whose schema mirrors arguments in headers."""
    requestId: Any = UNSET  # noqa: N815 - the wire name
    meta: _OutMeta | UnsetType = msgspec.field(default=UNSET, name="_meta")


class _Outgoing(msgspec.Struct, gc=False):
    """What the writer reads of a message it posts."""

    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: _OutParams | UnsetType = UNSET


_outgoing = msgspec.json.Decoder(_Outgoing)


class _Id(msgspec.Struct, gc=False):
    id: Any = UNSET


_answer_id = msgspec.json.Decoder(_Id)
_any = msgspec.json.Decoder()


def http_client(config: UpstreamConfig) -> aiohttp.ClientSession:
    """An upstream's HTTP client: a keep-alive pool of ``max_connections``, the config's
    headers on every request, certificates verified (against ``ca_file`` when set)."""
    tls: ssl.SSLContext | bool = True
    if config.ca_file:
        tls = ssl.create_default_context(cafile=config.ca_file)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.max_connections, ssl=tls),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout,
                                      connect=config.connect_timeout),
        headers=config.headers)


def shown_url(url: str) -> str:
    """``url`` as /status and the log show it: no query or user part, which may hold a
    credential."""
    split = urlsplit(url)
    return urlunsplit((split.scheme, split.netloc.rpartition("@")[2], split.path, "", ""))


class PostWriter:
    """The connection's writer for an HTTP upstream: each message a POST (``post``, of
    ``StreamableHttpUpstream`` or ``SseUpstream``). The keep-alive pool bounds the POSTs
    in flight; the rest wait in aiohttp, and the gateway's per-session in-flight cap
    bounds those."""

    __slots__ = ("_post", "congested")

    def __init__(self, post: Callable[[bytes], None]) -> None:
        self._post = post
        self.congested = False

    def write(self, data: bytes) -> None:
        self._post(data)

    def drained(self, low_water: int) -> bool:
        return True

    def buffered(self) -> int:
        return 0


class HttpUpstream(Upstream[CallT]):
    """What the HTTP kinds share: the client, where the server is as shown, and the
    end of the connection (``_end``: the upstream must be reconnected)."""

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.address = shown_url(config.url)
        self._http: aiohttp.ClientSession | None = None
        self._closed: asyncio.Future[None] | None = None
        self._reason = "not connected"

    def _end(self, reason: str) -> None:
        """The upstream must be reconnected: the supervisor fails what is in flight,
        waits its backoff, and starts again (with a new session, where there is one)."""
        closed = self._closed
        if closed is not None and not closed.done():
            self._reason = reason
            closed.set_result(None)

    def ended_because(self) -> str:
        return self._reason

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["address"] = self.address
        return info


class StreamableHttpUpstream(HttpUpstream[CallT]):
    kind = "streamable_http"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.session_id: str | None = None
        self._posts: dict[int | str, asyncio.Task[None]] = {}
        """The POSTs of requests waiting for their response, by the request's id."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._annotated: Any = None
        self._annotations: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {}
        """Each tool's ``x-mcp-header`` annotations, from the catalog ``_annotated``."""

    # -- the connection's life (Upstream) -------------------------------------------------
    async def connect(self) -> asyncio.Future[Any]:
        """Make the client (nothing is sent yet: the handshake's first POST connects);
        the future is done when the upstream must be reconnected."""
        loop = asyncio.get_running_loop()
        self._http = http_client(self.config)
        self.session_id = None
        self._closed = loop.create_future()
        self._reason = "the gateway disconnected"
        self.connection.writer = PostWriter(self.post)
        self.starts += 1
        return self._closed

    async def handshake(self) -> None:
        await super().handshake()
        if self.era == "legacy":
            self._spawn(self._listen())

    async def disconnect(self) -> None:
        http = self._http
        if http is None:
            return
        self._http = None
        self.connection.writer = None
        self._end(self._reason)
        for task in list(self._tasks):
            task.cancel()
        if self.session_id is not None:
            # Ends the session (basic/transports, "Session Management"); a server that
            # does not allow it answers 405, and one that is gone cannot.
            try:
                async with http.delete(self.config.url, headers=self._headers(),
                                       timeout=aiohttp.ClientTimeout(total=2)):
                    pass
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
        await http.close()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["session_id"] = self.session_id is not None
        return info

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing: one POST a message ------------------------------------------------------
    def post(self, data: bytes) -> None:
        message = _outgoing.decode(data)
        method = message.method
        params = message.params
        if method == "notifications/cancelled" and self.era == "modern" and \
                not isinstance(params, UnsetType):
            # Modern HTTP has no cancel notification: closing the stream is the cancel.
            task = self._posts.pop(params.requestId, None)
            if task is not None:
                task.cancel()
            return
        request_id = message.id if not isinstance(method, UnsetType) else UNSET
        task = asyncio.ensure_future(self._post(data, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not isinstance(request_id, UnsetType) and request_id is not None:
            self._posts[request_id] = task
            task.add_done_callback(lambda _: self._posts.pop(request_id, None))  # type: ignore[arg-type]

    def _headers(self, message: _Outgoing | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        version = self.protocol_version if self.era is not None else None
        if message is not None and not isinstance(message.params, UnsetType) and \
                not isinstance(message.params.meta, UnsetType) and \
                isinstance(message.params.meta.version, str):
            version = message.params.meta.version  # a modern request's own
        if version is not None:
            headers["MCP-Protocol-Version"] = version
        if message is not None and self.era != "legacy" and \
                isinstance(message.method, str) and not isinstance(message.id, UnsetType):
            headers["Mcp-Method"] = message.method
            member = NAMED_BY.get(message.method)
            if member is not None and not isinstance(message.params, UnsetType):
                named = getattr(message.params, member)
                if isinstance(named, str):
                    headers["Mcp-Name"] = encode_header_value(named)
                    if message.method == "tools/call":
                        headers.update(self._param_headers(named, message.params))
        return headers

    def _param_headers(self, tool: str, params: _OutParams) -> list[tuple[str, str]]:
        """The ``Mcp-Param-*`` headers of a call to ``tool``, from its ``x-mcp-header``
        annotations in the upstream's own list ("Custom Headers"): whatever the client's
        transport, the upstream gets the headers its schema asks for."""
        catalog = self.catalog
        if catalog is not self._annotated:
            self._annotated = catalog
            self._annotations = {
                t["name"]: found for t in (catalog or {}).get("tools", [])
                if isinstance(t, dict) and isinstance(t.get("name"), str)
                and (found := x_mcp_headers(t.get("inputSchema")))}
        annotations = self._annotations.get(tool)
        if not annotations:
            return []
        try:
            arguments = _any.decode(params.arguments)
        except msgspec.DecodeError:
            return []
        return param_headers(annotations, arguments)

    async def _post(self, data: bytes, message: _Outgoing) -> None:
        http = self._http
        request_id = message.id if isinstance(message.method, str) else UNSET
        is_request = not isinstance(request_id, UnsetType) and request_id is not None
        if http is None:
            return
        headers = self._headers(message)
        headers["Content-Type"] = "application/json"
        headers["Accept"] = "application/json, text/event-stream"
        try:
            async with http.post(self.config.url, data=data, headers=headers) as response:
                if message.method == "initialize" and response.status == 200:
                    self.session_id = response.headers.get("Mcp-Session-Id")
                await self._read_answer(response, request_id, is_request)
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientConnectorError as exc:
            self._fail(request_id, f"cannot connect to {self.address}: {exc.os_error}")
            self._end(f"cannot connect to {self.address}: {exc.os_error}")
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self._fail(request_id, f"the request to {self.address} failed: "
                       f"{exc or type(exc).__name__}")

    async def _read_answer(self, response: aiohttp.ClientResponse, request_id: Any,
                           is_request: bool) -> None:
        status = response.status
        kind = response.content_type
        if status == 404 and self.session_id is not None:
            # The session expired: a new one takes a new initialize (the client's part in
            # "Session Management").
            self._fail(request_id, "the upstream's session expired")
            self._end("the upstream's session expired (404)")
            return
        if status in (202, 204):
            if is_request:
                self._fail(request_id, f"the upstream answered the request with {status} "
                           "and no response")
            return
        if kind == "text/event-stream" and status < 300:
            await self._read_stream(response, request_id if is_request else None)
            return
        body = await self._body(response)
        if kind == "application/json" and body:
            answered = self._answer_of(body)
            if answered is not None:
                # A JSON-RPC answer, whatever the status (a 400 with -32020, a 404 with
                # -32601): the client gets the upstream's own error.
                self._deliver(body, None)
                if not is_request or answered == request_id:
                    return
        if is_request:
            self._fail(request_id, f"the upstream answered HTTP {status} "
                       f"{response.reason or ''}".rstrip())

    async def _body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.config.max_message_bytes
        if (response.content_length or 0) > limit:
            raise ValueError(f"a response over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ValueError(f"a response over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _answer_of(body: bytes) -> Any:
        """The id of the response ``body`` is, or None when it is not one."""
        try:
            answered = _answer_id.decode(body)
        except msgspec.DecodeError:
            return None
        return None if isinstance(answered.id, UnsetType) else answered.id

    async def _read_stream(self, response: aiohttp.ClientResponse, request_id: Any) -> None:
        """A request's SSE stream: its messages until its response; resumed with
        ``Last-Event-ID`` if it drops first (legacy)."""
        parser = SseParser(self.config.max_message_bytes)
        answered = await self._events(response, parser, request_id)
        attempts = 0
        while request_id is not None and not answered:
            if self.era != "legacy" or parser.last_id is None or attempts >= RESUME_ATTEMPTS:
                self._fail(request_id, "the upstream's stream ended before its response")
                return
            attempts += 1
            await asyncio.sleep((parser.retry_ms or DEFAULT_RETRY * 1000) / 1000)
            answered = await self._resume(parser, request_id)

    async def _resume(self, parser: SseParser, request_id: Any) -> bool:
        http = self._http
        if http is None:
            return False
        headers = self._headers()
        headers["Accept"] = "text/event-stream"
        headers["Last-Event-ID"] = parser.last_id or ""
        try:
            async with http.get(self.config.url, headers=headers) as response:
                if response.status != 200 or response.content_type != "text/event-stream":
                    return False
                return await self._events(response, parser, request_id)
        except (aiohttp.ClientError, OSError, ValueError):
            return False

    async def _events(self, response: aiohttp.ClientResponse, parser: SseParser,
                      request_id: Any) -> bool:
        """Deliver the stream's messages; True once ``request_id``'s response came."""
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event != "message" or not event.data:
                        continue
                    self._deliver(event.data, request_id)
                    if request_id is not None and self._answer_of(event.data) == request_id:
                        return True
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
            pass  # dropped: resumed, or failed, by the caller
        return False

    def _deliver(self, data: bytes, request_id: Any) -> None:
        connection = self.connection
        connection.stream_of = request_id if isinstance(request_id, int) else None
        try:
            self.on_message(data)
        finally:
            connection.stream_of = None

    def _fail(self, request_id: Any, message: str) -> None:
        """Fail ``request_id`` (the upstream's own id) now, rather than let it time out:
        as a lost connection fails what is in flight (not as the server's answer), so
        that the gateway may send a safe request to another endpoint."""
        if not isinstance(request_id, int):
            self.log.warning("%s", message)
            return
        self.connection.fail(request_id, message)

    # -- the session's own stream (legacy) --------------------------------------------------
    async def _listen(self) -> None:
        """GET the session's server-to-client stream, and keep it open: resumed with
        ``Last-Event-ID`` when it drops, until the server says it has none (405) or the
        session ends."""
        parser = SseParser(self.config.max_message_bytes)
        while self._http is not None:
            headers = self._headers()
            headers["Accept"] = "text/event-stream"
            if parser.last_id is not None:
                headers["Last-Event-ID"] = parser.last_id
            try:
                async with self._http.get(self.config.url, headers=headers) as response:
                    if response.status == 404 and self.session_id is not None:
                        self._end("the upstream's session expired (404)")
                        return
                    if response.status != 200 or \
                            response.content_type != "text/event-stream":
                        self.log.debug("no GET stream (HTTP %d)", response.status)
                        return
                    await self._events(response, parser, None)
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                self.log.debug("the GET stream dropped: %s", exc)
            await asyncio.sleep((parser.retry_ms or DEFAULT_RETRY * 1000) / 1000)
