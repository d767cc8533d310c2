"""HttpClient: the HTTP/1.1 client of the HTTP upstream kinds (streamable.py, sse.py), for
one origin: a keep-alive pool of raw asyncio connections, responses parsed by httptools
(llhttp).

Chosen by measurement (bench/http_client.py): aiohttp's client cost about 100 µs of CPU
per upstream call, ten times the gateway's whole proxy cost; this one costs a few µs,
because the common path (a POST answered with JSON) runs on callbacks alone, with no
Task or Future per request.

The caller's side of a request is an ``Exchange``, subclassed the way an
``asyncio.Protocol`` is: ``response_received`` with the head (return True to have the
body streamed chunk by chunk to ``body_received``, as an SSE stream must be; otherwise it
is collected, up to ``max_body_bytes``), then ``response_complete`` with the body, or
``request_failed``. Every exchange gets exactly one of those two endings, unless the
caller ``abort``s it first (that closes its connection: how a request is cancelled).
``Fetch`` is an exchange to await, for the rare paths a coroutine reads best.

No read flow control: every body chunk is handed to the caller as it is read and the
caller consumes it at once, so nothing piles up here.

Connections: at most ``max_connections``, each carrying one request at a time; a request
that finds none idle waits in a FIFO queue. A connection goes back to the pool only after
a complete response without ``Connection: close``; it is closed on a parse error, an
oversized body, an abort or an early close, and when idle longer than ``idle_timeout`` (or
the server's ``Keep-Alive: timeout``). Redirects are not followed: the request fails
naming where it was sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import deque
from collections.abc import Callable, Generator, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httptools

from .. import __version__

log = logging.getLogger("mcpfast.upstream.http")

IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection is kept, unless the server says less."""
MAX_HEAD_BYTES = 64 * 1024
"""The most a response's status line and headers may take."""
MAX_KEPT_LINES = 1024
"""Request header lines kept encoded and checked, at most (``HttpClient._line``)."""

_QUEUED, _SENT, _ENDED = 0, 1, 2
"""An exchange's state: waiting for a connection, written on one, or ended."""


class HttpClientError(Exception):
    """Why a request failed: the root of this module's errors."""


class ConnectError(HttpClientError):
    """No connection could be made (refused, unresolvable, timed out, TLS refused)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot connect to {address}: {reason}")
        self.address = address
        self.reason = reason


class HeaderError(HttpClientError, ValueError):
    """A header that cannot be sent (a line break in it): the request is refused, never
    written."""


class Response:
    """A response's head. ``headers`` are as received; ``header`` looks one up by name,
    ignoring case."""

    __slots__ = ("content_length", "content_type", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content_type: str,
                 content_length: int | None) -> None:
        self.status = status
        self.headers = headers
        self.content_type = content_type
        """The media type, lower case, without parameters ("application/json")."""
        self.content_length = content_length

    @property
    def reason(self) -> str:
        """The status's standard phrase (the server's own is not read: it costs a
        callback per response, and only error messages show it)."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if len(key) == len(wanted) and key.lower() == wanted:
                return value.decode("latin-1")
        return None


class Exchange:
    """One request and its response, as the caller sees them: override the callbacks.
    They run inside the connection's read; an exception from ``response_received`` or
    ``body_received`` fails the exchange (a ValueError's message is the reason: say, an
    event over the size limit) and closes its connection."""

    __slots__ = ("_connection", "_data", "_retried", "_state", "client", "replayable")

    def __init__(self, replayable: bool = False) -> None:
        self.replayable = replayable
        """Whether the request may be sent twice (idempotent, RFC 9110 9.2.2): only such
        a request is sent again when a reused connection closes before answering."""
        self.client: HttpClient | None = None
        self._connection: _Connection | None = None
        self._data = b""
        self._retried = False
        self._state = _ENDED

    def response_received(self, response: Response) -> bool:
        """The head arrived: True to stream the body to ``body_received``."""
        return False

    def body_received(self, data: bytes) -> None:
        """A chunk of a streamed body, as it arrived."""

    def response_complete(self, body: bytes) -> None:
        """The response ended: ``body`` is the whole body, or empty when streamed."""

    def request_failed(self, error: HttpClientError) -> None:
        """No complete response will come (connection refused or lost, unparsable,
        oversized, redirected)."""

    def abort(self) -> None:
        """Stop: a request still queued is dropped, one sent has its connection closed;
        no callback follows."""
        if self._state == _ENDED:
            return
        self._state = _ENDED
        connection = self._connection
        if connection is not None:
            self._connection = None
            connection.close()

    def _complete(self, body: bytes) -> None:
        self._state = _ENDED
        self._connection = None
        self._data = b""
        try:
            self.response_complete(body)
        except Exception:
            log.exception("an HTTP exchange's completion failed")

    def _fail(self, error: HttpClientError) -> None:
        if self._state == _ENDED:
            return
        self._state = _ENDED
        self._connection = None
        self._data = b""
        try:
            self.request_failed(error)
        except Exception:
            log.exception("an HTTP exchange's failure handler failed")


class Fetch(Exchange):
    """An exchange to await: ``await`` gives the response and its body, or raises
    HttpClientError. ``stream`` chooses, given the head, a consumer for the body's chunks
    (the body is then not collected), or None. ``end`` stops reading early (the
    connection is closed) and the await returns with an empty body."""

    __slots__ = ("_consume", "_future", "_stream", "response")

    def __init__(self, stream: Callable[[Response], Callable[[bytes], None] | None] | None
                 = None) -> None:
        super().__init__()
        self._future: asyncio.Future[tuple[Response, bytes]] = \
            asyncio.get_running_loop().create_future()
        self._stream = stream
        self._consume: Callable[[bytes], None] | None = None
        self.response: Response | None = None

    def response_received(self, response: Response) -> bool:
        self.response = response
        if self._stream is not None:
            self._consume = self._stream(response)
        return self._consume is not None

    def body_received(self, data: bytes) -> None:
        self._consume(data)  # type: ignore[misc]

    def response_complete(self, body: bytes) -> None:
        if not self._future.done():
            self._future.set_result((self.response, body))  # type: ignore[arg-type]

    def request_failed(self, error: HttpClientError) -> None:
        if not self._future.done():
            self._future.set_exception(error)

    def end(self) -> None:
        super().abort()
        if self._future.done():
            return
        if self.response is not None:
            self._future.set_result((self.response, b""))
        else:
            self._future.cancel()

    def abort(self) -> None:
        super().abort()
        self._future.cancel()

    async def _wait(self) -> tuple[Response, bytes]:
        try:
            return await self._future
        finally:
            self.abort()  # cancelled, or timed out: the connection is not left reading

    def __await__(self) -> Generator[Any, None, tuple[Response, bytes]]:
        return self._wait().__await__()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange at a time. httptools calls back
    per header, for the body, and at the end."""

    __slots__ = ("_body", "_chunked", "_chunks", "_close_delimited", "_content_length",
                 "_content_type", "_head_bytes", "_headers", "_interim", "_keep_alive",
                 "_received", "_response", "_size", "_stream", "client", "closing",
                 "exchange", "idle", "idle_since", "keepalive", "parser", "served",
                 "transport")

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.served = 0
        """Complete responses read so far: above 0, the connection is a reused one."""
        self.idle = False
        self.idle_since = 0.0
        self.keepalive = client.idle_timeout
        self.closing = False
        self._received = False
        """Whether any byte of the current exchange's response arrived."""
        self._head_bytes = 0
        self._interim = False
        self._stream = False
        """Whether the body goes to ``body_received`` (else it is collected)."""
        self._close_delimited = False
        self._reset()

    def _reset(self) -> None:
        """Ready for the next response's head (what its end sets is set there)."""
        self._headers: list[tuple[bytes, bytes]] = []
        self._content_type = b""
        self._content_length: bytes | None = None
        self._chunked = False
        self._keep_alive = b""
        self._response: Response | None = None
        self._body = b""
        self._chunks: list[bytes] | None = None
        self._size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, exchange: Exchange) -> None:
        self.exchange = exchange
        exchange._connection = self
        exchange._state = _SENT
        self._received = False
        self._head_bytes = 0
        self.transport.write(exchange._data)  # type: ignore[union-attr]

    def close(self) -> None:
        """Close now: the exchange on it, if any, gets no further callback."""
        self.closing = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def _break(self, error: HttpClientError) -> None:
        exchange = self.exchange
        self.close()
        if exchange is not None:
            exchange._fail(error)

    # -- reading ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            # Bytes when no request is out (a 408 before an idle close, or junk):
            # the connection is not to be trusted with the next request.
            self.close()
            return
        exchange = self.exchange
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpClientError):
                self._break(cause)
            elif isinstance(cause, ValueError):
                self._break(HttpClientError(str(cause) or "the response was refused"))
            else:
                log.error("an HTTP exchange's callback failed", exc_info=cause)
                self._break(HttpClientError(f"the response could not be handled: {cause!r}"))
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # An upgrade (101) is no answer to an MCP request either.
            self._break(HttpClientError(f"the server's response cannot be parsed: {exc!r}"))
            return
        if self.exchange is exchange and self._response is None:
            # The whole read went into a head still incomplete.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._break(HttpClientError(f"a response head over {MAX_HEAD_BYTES} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        size = len(name)
        if size == 12 and name.lower() == b"content-type":
            self._content_type = value
        elif size == 14 and name.lower() == b"content-length":
            self._content_length = value
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
        elif size == 10 and name.lower() == b"keep-alive":
            self._keep_alive = value

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self._reset()  # interim (103 Early Hints): the final response follows
            self._interim = True
            return
        client = self.client
        if 300 <= status < 400 and status != 304:
            location = next((value for name, value in self._headers
                             if name.lower() == b"location"), b"nowhere")
            raise HttpClientError(
                f"{client.address} redirects (HTTP {status}) to "
                f"{location.decode('latin-1')}; redirects are not followed: configure the "
                "URL it points to")
        length: int | None = None
        if self._content_length is not None:
            length = int(self._content_length)  # llhttp has checked its syntax
        if self._keep_alive:
            self.keepalive = _keep_alive_timeout(self._keep_alive, client.idle_timeout)
        self._close_delimited = (length is None and not self._chunked
                                 and status != 204 and status != 304)
        content_type = _MEDIA_TYPES.get(self._content_type)
        if content_type is None:
            content_type = _media_type(self._content_type)
        response = self._response = Response(status, self._headers, content_type, length)
        stream = exchange.response_received(response)
        if self.exchange is not exchange:
            return  # aborted by the callback
        self._stream = stream
        if not stream and length is not None and length > client.max_body_bytes:
            raise HttpClientError(f"a response over {client.max_body_bytes} bytes")

    def on_body(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        if self._stream:
            exchange.body_received(data)
            return
        self._size += len(data)
        if not self._body:
            self._body = data
        elif self._chunks is None:
            self._chunks = [self._body, data]
        else:
            self._chunks.append(data)
        if self._size > self.client.max_body_bytes:
            raise HttpClientError(f"a response over {self.client.max_body_bytes} bytes")

    def _collected(self) -> bytes:
        return self._body if self._chunks is None else b"".join(self._chunks)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        exchange = self.exchange
        if exchange is None:
            return
        body = self._body if self._chunks is None else b"".join(self._chunks)
        self._reset()
        self.exchange = None
        self.served += 1
        # Back in the pool before the callback, so that a request it makes can reuse
        # this connection.
        self.client._release(self, self.parser.should_keep_alive())
        exchange._complete(body)

    def eof_received(self) -> bool | None:
        self.closing = True  # not to be taken from the pool any more
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self.exchange
        self.exchange = None
        self.closing = True
        if exchange is None:
            self.client._lost(self, None)
        elif not self._received and self.served and not exchange._retried and \
                exchange.replayable:
            # A reused keep-alive connection that the server closed before any byte of
            # the response: most likely it closed the connection as idle while the
            # request was on its way (the race every HTTP/1.1 client meets, RFC 9112
            # 9.3.1). An idempotent request is sent once more, on a fresh connection, as
            # aiohttp, urllib3 and Go's net/http do; a second such close is reported.
            # Any other (a tools/call's POST) may have been acted on: it fails, and the
            # caller decides (RFC 9112 9.3.1.1).
            self.client._lost(self, exchange)
        elif self._response is not None and self._close_delimited and exc is None:
            body = b"" if self._stream else self._collected()
            self._reset()
            self.client._lost(self, None)
            exchange._complete(body)  # the body ran to the close (RFC 9112 6.3)
        else:
            reason = ("the server closed the connection before answering"
                      if not self._received else
                      "the server closed the connection before the response ended")
            if exc is not None:
                reason = f"the connection was lost: {exc}"
            self.client._lost(self, None)
            exchange._fail(HttpClientError(reason))


_MEDIA_TYPES: dict[bytes, str] = {}
"""``Content-Type`` values seen, and their media types: a server sends the same few."""


def _media_type(value: bytes) -> str:
    """The media type of a ``Content-Type`` value, lower case, without parameters."""
    media_type = value.partition(b";")[0].strip().lower().decode("latin-1")
    if len(_MEDIA_TYPES) < 64:
        _MEDIA_TYPES[value] = media_type
    return media_type


def _keep_alive_timeout(value: bytes, default: float) -> float:
    """The ``timeout`` of a ``Keep-Alive`` header (``timeout=5, max=100``), at most
    ``default``."""
    for part in value.split(b","):
        name, _, number = part.strip().partition(b"=")
        if name.lower() == b"timeout":
            try:
                return min(default, max(0.0, float(number)))
            except ValueError:
                break
    return default


def _checked(block: bytes, lines: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """``block``, the header lines, unless a name or value holds CR, LF or NUL (which
    would end the line early: header injection). Counted rather than searched per
    value: three scans of the whole block in C."""
    if block.count(b"\n") == lines and block.count(b"\r") == lines and b"\0" not in block:
        return block
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0"):
            raise HeaderError(f"the header {name!r} holds a line break or NUL; not sent")
    raise HeaderError("a header holds a line break or NUL; not sent")


class HttpClient:
    """Requests to one origin (``url``'s scheme, host and port) over a keep-alive pool."""

    def __init__(self, url: str, *, headers: dict[str, str] | None = None,
                 max_connections: int = 100, connect_timeout: float = 10.0,
                 ca_file: str = "", max_body_bytes: int = 64 * 1024 * 1024,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        split = urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ValueError(f"not an http(s):// URL: {url!r}")
        self.secure = split.scheme == "https"
        self.hostname = split.hostname
        self.port = split.port or (443 if self.secure else 80)
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        default_port = split.port is None or split.port == (443 if self.secure else 80)
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.address = f"{split.scheme}://{self.host_header}"
        """The origin, as errors name it."""
        self.target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        """``url``'s path and query: the default request target."""
        self.max_connections = max(1, max_connections)
        self.connect_timeout = connect_timeout
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self._tls = ssl.create_default_context(cafile=ca_file or None) if self.secure \
            else None
        self._common = _checked(
            "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()
                    ).encode(), len(headers or {}), (headers or {}).items())
        self._loop = asyncio.get_running_loop()
        self._connections: set[_Connection] = set()
        self._connecting = 0
        self._idle: list[_Connection] = []
        """Idle connections, the most recently used last (taken first: the others
        expire)."""
        self._waiting: deque[Exchange] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lines: dict[tuple[str, str], bytes] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self.closed = False

    def head(self, method: str, target: str | None = None, *, accept: str = "",
             content_type: str = "") -> bytes:
        """The start of a request, computed once and passed to ``send``: the request
        line, Host, the client's headers, Accept and Content-Type."""
        target = target or self.target
        if any(ord(c) <= 0x20 or c == "\x7f" for c in method + target):
            raise HeaderError(f"a space or control character in {method} {target!r}")
        lines = (f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                 f"User-Agent: mcpfast/{__version__}\r\n")
        fixed = [(name, value) for name, value in (("Accept", accept),
                                                   ("Content-Type", content_type)) if value]
        block = "".join(f"{name}: {value}\r\n" for name, value in fixed).encode()
        return lines.encode() + self._common + _checked(block, len(fixed), fixed)

    def send(self, exchange: Exchange, head: bytes,
             headers: list[tuple[str, str]] | None = None, body: bytes | None = None) -> None:
        """Send a request (``head`` from ``head()``, this message's own ``headers``, a
        ``body`` or None for none); its response comes to ``exchange``'s callbacks.
        Raises HeaderError for a header that cannot be sent."""
        if self.closed:
            raise HttpClientError("the HTTP client is closed")
        if headers:
            lines = self._lines
            head += b"".join([lines.get(header) or self._line(header) for header in headers])
        if body is None:
            exchange._data = head + b"\r\n"
        else:
            exchange._data = b"%bContent-Length: %d\r\n\r\n%b" % (head, len(body), body)
        exchange.client = self
        exchange._state = _QUEUED
        idle = self._idle
        while idle:
            connection = idle.pop()
            connection.idle = False
            if not connection.closing:
                connection.send(exchange)
                return
        self._waiting.append(exchange)
        self._dispatch()

    def _line(self, header: tuple[str, str]) -> bytes:
        """One header line, checked, and kept for the next message that sends it (most
        repeat: the protocol version, the method, the session): a dictionary lookup is
        cheaper than formatting and checking again."""
        line = f"{header[0]}: {header[1]}\r\n".encode()
        _checked(line, 1, (header,))
        lines = self._lines
        if len(lines) >= MAX_KEPT_LINES:
            lines.clear()  # values that rarely repeat (Mcp-Param-*) filled it
        lines[header] = line
        return line

    def fetch(self, head: bytes, headers: list[tuple[str, str]] | None = None,
              body: bytes | None = None,
              stream: Callable[[Response], Callable[[bytes], None] | None] | None = None
              ) -> Fetch:
        """``send`` with a ``Fetch``: await it for the response. A GET, HEAD or DELETE
        is idempotent, and so replayable."""
        exchange = Fetch(stream)
        exchange.replayable = head.startswith((b"GET ", b"HEAD ", b"DELETE "))
        self.send(exchange, head, headers, body)
        return exchange

    # -- the pool -------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Open connections for the requests waiting, within ``max_connections``."""
        wanted = len(self._waiting) - self._connecting
        while wanted > 0 and len(self._connections) + self._connecting < self.max_connections:
            wanted -= 1
            self._open(None)

    def _open(self, first: Exchange | None) -> None:
        self._connecting += 1
        task = self._loop.create_task(self._connect(first))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, first: Exchange | None) -> None:
        """Open a connection, for ``first`` if given (a retry), else for the queue."""
        try:
            _, connection = await asyncio.wait_for(self._loop.create_connection(
                lambda: _Connection(self), self.hostname, self.port, ssl=self._tls,
                server_hostname=self.hostname if self._tls is not None else None),
                self.connect_timeout)
        except asyncio.CancelledError:
            if first is not None:  # closed while connecting for a retry
                first._fail(HttpClientError("the HTTP client was closed"))
            raise
        except (OSError, TimeoutError, ValueError) as exc:
            self._connecting -= 1
            self._refused(first, ConnectError(self.address, self._why(exc)))
            return
        self._connecting -= 1
        if self.closed:
            connection.close()
            return
        self._connections.add(connection)
        if first is not None and first._state == _QUEUED:
            connection.send(first)
        else:
            self._release(connection, True)

    def _why(self, exc: Exception) -> str:
        """A connect error as the OS names it, the same on uvloop and asyncio (whose
        messages differ)."""
        if isinstance(exc, TimeoutError):
            return f"no connection within {self.connect_timeout:g} s"
        if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
            return os.strerror(exc.errno) if exc.errno > 0 else exc.strerror or str(exc)
        return str(exc) or type(exc).__name__

    @property
    def connected(self) -> bool:
        """Whether a connection to the server is open (busy or idle)."""
        return bool(self._connections)

    def _refused(self, first: Exchange | None, error: ConnectError) -> None:
        """A connection could not be made: the request it was for fails, and so does
        every request queued, unless a connection is still open to take them (one
        failed connect, say at a burst, is not the server gone)."""
        if first is not None:
            first._fail(error)
        if self._connections:
            return
        waiting, self._waiting = self._waiting, deque()
        for exchange in waiting:
            exchange._fail(error)

    def _release(self, connection: _Connection, keep: bool) -> None:
        """A response ended on ``connection``: the next request waiting takes it, or it
        waits idle (or it is closed)."""
        if not keep or self.closed or connection.closing:
            connection.close()
            return
        waiting = self._waiting
        while waiting:
            exchange = waiting.popleft()
            if exchange._state == _QUEUED:
                connection.send(exchange)
                return
        connection.idle = True
        connection.idle_since = now = self._loop.time()
        self._idle.append(connection)
        expiry = now + connection.keepalive
        if self._sweeper is None or expiry < self._sweep_at:
            self._schedule_sweep(expiry)

    def _schedule_sweep(self, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweep_at = when
        self._sweeper = self._loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle longer than their keep-alive."""
        self._sweeper = None
        now = self._loop.time()
        kept: list[_Connection] = []
        for connection in self._idle:
            if connection.idle_since + connection.keepalive <= now:
                connection.idle = False
                connection.close()
            else:
                kept.append(connection)
        self._idle[:] = kept
        if kept:
            self._schedule_sweep(min(c.idle_since + c.keepalive for c in kept))

    def _lost(self, connection: _Connection, retry: Exchange | None) -> None:
        self._connections.discard(connection)
        if connection.idle:
            connection.idle = False
            self._idle.remove(connection)
        if self.closed:
            return
        if retry is not None:
            retry._retried = True
            retry._connection = None
            retry._state = _QUEUED
            self._open(retry)
        self._dispatch()

    def close(self) -> None:
        """Close every connection; the requests in flight or queued fail."""
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in self._tasks:
            task.cancel()
        error = HttpClientError("the HTTP client was closed")
        waiting, self._waiting = self._waiting, deque()
        for exchange in waiting:
            exchange._fail(error)
        for connection in self._idle:
            connection.idle = False
        self._idle.clear()
        for connection in list(self._connections):
            connection._break(error)
        self._connections.clear()

    def describe(self) -> dict[str, int]:
        return {"connections": len(self._connections), "idle": len(self._idle),
                "connecting": self._connecting, "waiting": len(self._waiting)}
