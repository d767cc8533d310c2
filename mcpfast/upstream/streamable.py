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

The HTTP client is mcpfast's own (http_client.py), a keep-alive pool per upstream
(``max_connections``). A message posted is a ``_Post``: its answer, a JSON body or an SSE
stream, is delivered from the client's callbacks, with no task per message; only the
rare paths (the GET stream, a resumption, the DELETE) are coroutines. A server that
cannot be reached fails the request in flight at once and takes the upstream down, to
be reconnected with the restart backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import UNSET, UnsetType

from ..config import UpstreamConfig
from ..protocol import jsonrpc
from ..protocol.modern import (
    META_PROTOCOL_VERSION,
    encode_header_value,
    param_headers,
    x_mcp_headers,
)
from ..protocol.sse import SseParser
from .balancer import RETRYABLE
from .base import CallT, Upstream, UpstreamError, UpstreamEvents
from .http_client import (
    ConnectError,
    Exchange,
    HeaderError,
    HttpClient,
    HttpClientError,
    Response,
)

RESUME_ATTEMPTS = 3
"""Times a dropped stream is resumed with ``Last-Event-ID`` before giving up."""
DEFAULT_RETRY = 1.0
"""Seconds before resuming a stream whose server named no ``retry``."""
NAMED_BY = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The methods whose ``Mcp-Name`` header is a member of ``params``, and which."""
ANSWERED_STREAM_GRACE = 1.0
"""Seconds a request's SSE stream may stay open after its response (the server SHOULD
end it then) before the gateway closes it, so that it does not hold a connection."""
JSON_AND_SSE = "application/json, text/event-stream"
SSE = "text/event-stream"


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
    method: Any = UNSET


_answer_id = msgspec.json.Decoder(_Id)


def _our_answer(message: _Id) -> tuple[int, ...]:
    """The id of ``message`` when it is a response to one of the gateway's requests."""
    return (message.id,) if type(message.id) is int and message.method is UNSET else ()
_any = msgspec.json.Decoder()


def shown_url(url: str) -> str:
    """``url`` as /status and the log show it: no query or user part, which may hold a
    credential."""
    split = urlsplit(url)
    return urlunsplit((split.scheme, split.netloc.rpartition("@")[2], split.path, "", ""))


class PostWriter:
    """The connection's writer for an HTTP upstream: each message a POST (``post``, of
    ``StreamableHttpUpstream`` or ``SseUpstream``). The keep-alive pool bounds the POSTs
    in flight; the rest wait in the client's queue, and the gateway's per-session
    in-flight cap bounds those."""

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
        self._http: HttpClient | None = None
        self._closed: asyncio.Future[None] | None = None
        self._reason = "not connected"

    def _end(self, reason: str) -> None:
        """The upstream must be reconnected: the supervisor fails what is in flight,
        waits its backoff, and starts again (with a new session, where there is one)."""
        closed = self._closed
        if closed is not None and not closed.done():
            self._reason = reason
            closed.set_result(None)

    def http_client(self) -> HttpClient:
        """The upstream's HTTP client: a keep-alive pool of ``max_connections``, the
        config's headers on every request, certificates verified (against ``ca_file``
        when set)."""
        config = self.config
        try:
            return HttpClient(config.url, headers=config.headers,
                              max_connections=config.max_connections,
                              connect_timeout=config.connect_timeout, ca_file=config.ca_file,
                              max_body_bytes=config.max_message_bytes)
        except (ValueError, OSError) as exc:
            raise UpstreamError(-32000, f"cannot make the HTTP client of {self.address}: "
                                f"{exc}") from None

    def ended_because(self) -> str:
        return self._reason

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["address"] = self.address
        if self._http is not None:
            info["http"] = self._http.describe()  # the keep-alive pool
        return info


REPEATABLE = RETRYABLE | {"ping", "server/discover", "tools/list", "prompts/list",
                          "resources/list", "resources/templates/list"}
"""Requests that only read: posted again when a reused connection closes before any
answer (HttpClient), where a tools/call, which may have acted, fails instead."""


def repeatable(method: Any) -> bool:
    """Whether posting the message of ``method`` twice does no harm: a reading request,
    a notification, or a response (no method)."""
    return not isinstance(method, str) or method in REPEATABLE or \
        method.startswith("notifications/")


class _Post(Exchange):
    """One message posted, on the common path: no task and no future. Its answer, a JSON
    body or a request's SSE stream, is delivered as it is read."""

    __slots__ = ("answered", "grace", "initialize", "parser", "registered", "request_id",
                 "response", "upstream")

    def __init__(self, upstream: StreamableHttpUpstream[Any], request_id: Any,
                 initialize: bool) -> None:
        super().__init__()
        self.upstream = upstream
        self.request_id = request_id
        """The upstream-side id of the request posted; None for any other message."""
        self.initialize = initialize
        self.registered = False
        self.response: Response | None = None
        self.parser: SseParser | None = None
        self.answered = False
        self.grace: asyncio.TimerHandle | None = None

    def response_received(self, response: Response) -> bool:
        upstream = self.upstream
        if upstream._http is not self.client:
            return False
        if self.initialize and response.status == 200:
            upstream.session_id = response.header("mcp-session-id")
        self.response = response
        if response.status < 300 and response.content_type == SSE:
            self.parser = SseParser(upstream.config.max_message_bytes)
            return True
        return False

    def body_received(self, data: bytes) -> None:
        upstream = self.upstream
        if self.answered or upstream._http is not self.client:
            return
        try:
            events = self.parser.feed(data)  # type: ignore[union-attr]
        except ValueError as exc:
            self.abort()
            self._settle()
            upstream._fail(self.request_id, f"the request to {upstream.address} failed: {exc}")
            return
        request_id = self.request_id
        for event in events:
            if event.event != "message" or not event.data:
                continue
            upstream._deliver(event.data, request_id)
            if request_id is not None and request_id in upstream._answers_in(event.data):
                self.answered = True
                self._settle()
                self.grace = asyncio.get_running_loop().call_later(ANSWERED_STREAM_GRACE,
                                                                   self.abort)
                return

    def response_complete(self, body: bytes) -> None:
        upstream = self.upstream
        if upstream._http is not self.client:
            return
        self._settle()
        if self.parser is not None:
            self._stream_ended()
            return
        response = self.response
        assert response is not None
        status = response.status
        request_id = self.request_id
        if status == 404 and upstream.session_id is not None:
            # The session expired: a new one takes a new initialize (the client's part in
            # "Session Management").
            upstream._fail(request_id, "the upstream's session expired")
            upstream._end("the upstream's session expired (404)")
            return
        if status in (202, 204):
            if request_id is not None:
                upstream._fail(request_id, f"the upstream answered the request with {status} "
                               "and no response")
            return
        if response.content_type == "application/json" and body:
            answered = upstream._answers_in(body)
            if answered:
                # A JSON-RPC answer, whatever the status (a 400 with -32020, a 404 with
                # -32601): the client gets the upstream's own error.
                upstream._deliver(body, None)
                if request_id is None or request_id in answered:
                    return
        if request_id is not None:
            upstream._fail(request_id, f"the upstream answered HTTP {status} "
                           f"{response.reason}".rstrip())

    def request_failed(self, error: HttpClientError) -> None:
        upstream = self.upstream
        http = upstream._http
        if http is None or http is not self.client:
            return  # the upstream disconnected: the supervisor fails what is in flight
        self._settle()
        if isinstance(error, ConnectError):
            reason = f"cannot connect to {upstream.address}: {error.reason}"
            upstream._fail(self.request_id, reason)
            if not http.connected:  # the server is gone, not one connect lost
                upstream._end(reason)
        elif self.parser is not None:
            self._stream_ended()  # dropped: resumed, or failed
        else:
            upstream._fail(self.request_id, f"the request to {upstream.address} failed: "
                           f"{error}")

    def _stream_ended(self) -> None:
        """The request's stream ended, or dropped: unless its response came, it is
        resumed with ``Last-Event-ID`` (legacy), or the request fails."""
        if self.grace is not None:
            self.grace.cancel()
        if self.request_id is None or self.answered:
            return
        upstream = self.upstream
        parser = self.parser
        assert parser is not None
        if upstream.era == "legacy" and parser.last_id is not None:
            upstream._spawn(upstream._resume(parser, self.request_id))
        else:
            upstream._fail(self.request_id, "the upstream's stream ended before its response")

    def _settle(self) -> None:
        """The request needs no cancelling any more."""
        if self.registered:
            self.registered = False
            self.upstream._posts.pop(self.request_id, None)


class StreamableHttpUpstream(HttpUpstream[CallT]):
    kind = "streamable_http"

    def __init__(self, name: str, index: int, config: UpstreamConfig,
                 events: UpstreamEvents[CallT]) -> None:
        super().__init__(name, index, config, events)
        self.session_id: str | None = None
        self._posts: dict[int | str, _Post] = {}
        """The POSTs of requests waiting for their response, by the request's id: a
        cancel (the client's, or the gateway's at a time-out) closes its stream."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._annotated: Any = None
        self._annotations: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {}
        """Each tool's ``x-mcp-header`` annotations, from the catalog ``_annotated``."""
        self._post_head = self._get_head = self._delete_head = b""

    # -- the connection's life (Upstream) -------------------------------------------------
    async def connect(self) -> asyncio.Future[Any]:
        """Make the client (nothing is sent yet: the handshake's first POST connects);
        the future is done when the upstream must be reconnected."""
        loop = asyncio.get_running_loop()
        self._http = http = self.http_client()
        self._post_head = http.head("POST", accept=JSON_AND_SSE,
                                    content_type="application/json")
        self._get_head = http.head("GET", accept=SSE)
        self._delete_head = http.head("DELETE")
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
        self._posts.clear()
        if self.session_id is not None:
            # Ends the session (basic/transports, "Session Management"); a server that
            # does not allow it answers 405, and one that is gone cannot.
            try:
                await asyncio.wait_for(http.fetch(self._delete_head, self._headers()), 2)
            except (HttpClientError, TimeoutError):
                pass
        http.close()

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
        if method == "notifications/cancelled" and not isinstance(params, UnsetType):
            # The request's stream is closed: it holds a pool connection, and nothing on
            # it is wanted any more. Modern HTTP has no cancel notification: closing the
            # stream is the cancel; a legacy server is told as well.
            cancelled = self._posts.pop(params.requestId, None)
            if cancelled is not None:
                cancelled.abort()
            if self.era == "modern":
                return
        http = self._http
        if http is None:
            return
        request_id = message.id if not isinstance(method, UnsetType) else None
        if isinstance(request_id, UnsetType):
            request_id = None
        exchange = _Post(self, request_id, method == "initialize")
        exchange.replayable = repeatable(method)
        try:
            http.send(exchange, self._post_head, self._headers(message), data)
        except HttpClientError as exc:
            self._fail(request_id, f"the request to {self.address} was not sent: {exc}")
            return
        if request_id is not None:
            self._posts[request_id] = exchange
            exchange.registered = True

    def _headers(self, message: _Outgoing | None = None) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if self.session_id is not None:
            headers.append(("Mcp-Session-Id", self.session_id))
        version = self.protocol_version if self.era is not None else None
        if message is not None and not isinstance(message.params, UnsetType) and \
                not isinstance(message.params.meta, UnsetType) and \
                isinstance(message.params.meta.version, str):
            version = message.params.meta.version  # a modern request's own
        if version is not None:
            headers.append(("MCP-Protocol-Version", version))
        if message is not None and self.era != "legacy" and \
                isinstance(message.method, str) and not isinstance(message.id, UnsetType):
            headers.append(("Mcp-Method", message.method))
            member = NAMED_BY.get(message.method)
            if member is not None and not isinstance(message.params, UnsetType):
                named = getattr(message.params, member)
                if isinstance(named, str):
                    headers.append(("Mcp-Name", encode_header_value(named)))
                    if message.method == "tools/call":
                        headers += self._param_headers(named, message.params)
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

    @staticmethod
    def _answers_in(body: bytes) -> tuple[int, ...]:
        """The ids of the responses to the gateway's requests that ``body`` is or
        holds: none, one, or (a JSON-RPC batch, which a 2025-03-26 server may send)
        several, each item read on its own."""
        try:
            return _our_answer(_answer_id.decode(body))
        except msgspec.DecodeError:
            pass
        try:
            items = jsonrpc.split_batch(body)
        except msgspec.DecodeError:
            return ()
        answered: tuple[int, ...] = ()
        for item in items:
            try:
                answered += _our_answer(_answer_id.decode(item))
            except msgspec.DecodeError:
                continue  # an item that is no message: on_message drops it
        return answered

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

    # -- the rare paths: GET streams ------------------------------------------------------
    async def _resume(self, parser: SseParser, request_id: Any) -> None:
        """A request's stream dropped before its response: resume it with
        ``Last-Event-ID``, up to RESUME_ATTEMPTS times (legacy)."""
        for _ in range(RESUME_ATTEMPTS):
            await asyncio.sleep((parser.retry_ms or DEFAULT_RETRY * 1000) / 1000)
            if request_id not in self.pending:
                return  # ended meanwhile (timed out, cancelled): nothing to resume for
            if (await self._events(parser, request_id))[1]:
                return
        self._fail(request_id, "the upstream's stream ended before its response")

    async def _events(self, parser: SseParser, request_id: Any
                      ) -> tuple[Response | None, bool]:
        """GET a stream (the session's, or with ``request_id`` a request's, resumed from
        ``parser.last_id``) and deliver its messages until it ends, or until
        ``request_id``'s response. Returns the response (None if none came) and whether
        that response came."""
        http = self._http
        if http is None:
            return None, False
        parser.reset()  # what the dropped stream left half read is replayed whole
        headers = self._headers()
        if parser.last_id is not None:
            headers.append(("Last-Event-ID", parser.last_id))
        answered = False

        def feed(chunk: bytes) -> None:
            nonlocal answered
            for event in parser.feed(chunk):
                if event.event != "message" or not event.data:
                    continue
                self._deliver(event.data, request_id)
                if request_id is not None and request_id in self._answers_in(event.data):
                    answered = True
                    fetch.end()
                    return

        try:
            fetch = http.fetch(self._get_head, headers, stream=lambda response: feed if (
                response.status == 200 and response.content_type == SSE) else None)
            response, _ = await fetch
        except HttpClientError as exc:
            self.log.debug("the GET stream dropped: %s", exc)
            return None if isinstance(exc, HeaderError) else fetch.response, answered
        return response, answered

    async def _listen(self) -> None:
        """GET the session's server-to-client stream, and keep it open: resumed with
        ``Last-Event-ID`` when it drops, until the server says it has none (405) or the
        session ends."""
        parser = SseParser(self.config.max_message_bytes)
        while self._http is not None:
            response, _ = await self._events(parser, None)
            if response is not None and response.status == 404 and \
                    self.session_id is not None:
                self._end("the upstream's session expired (404)")
                return
            if response is not None and (response.status != 200 or
                                         response.content_type != SSE):
                self.log.debug("no GET stream (HTTP %d)", response.status)
                return
            await asyncio.sleep((parser.retry_ms or DEFAULT_RETRY * 1000) / 1000)
