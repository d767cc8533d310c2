"""One HTTP request and its response on a keep-alive connection (``Exchange``), and the
header helpers the Streamable HTTP transport shares: media types and JSON error bodies.
An exchange answers once, whole (JSON) or as an event stream, and tells its connection
when it is done so that the next pipelined request can go."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from ..protocol import jsonrpc, sse
from ..protocol.http import HttpRequest, date_field, date_line, format_response


@functools.lru_cache(maxsize=256)
def _media_types(value: str | None) -> tuple[str, ...]:
    """The media types an Accept or Content-Type value lists, in order. Cached: clients
    send the same few values on every request."""
    if not value:
        return ()
    return tuple(part.split(";", 1)[0].strip().lower() for part in value.split(","))


@functools.lru_cache(maxsize=256)
def _qualities(value: str | None) -> dict[str, float]:
    """Each media range an Accept value lists, with its weight (``q``, 1 when none or
    unreadable); the first of a range listed twice counts."""
    weights: dict[str, float] = {}
    for part in (value or "").split(","):
        media, *parameters = part.split(";")
        media = media.strip().lower()
        weight = 1.0
        for parameter in parameters:
            name, _, number = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(number.strip())
                except ValueError:
                    pass
        if media:
            weights.setdefault(media, weight)
    return weights


@functools.lru_cache(maxsize=256)
def _accepts(value: str | None, wanted: str) -> bool:
    """Whether Accept admits ``wanted``: the most specific range that matches it decides,
    and a weight of 0 means "not acceptable" (RFC 9110 12.5.1)."""
    weights = _qualities(value)
    for media in (wanted, f"{wanted.split('/', 1)[0]}/*", "*/*"):
        if media in weights:
            return weights[media] > 0
    return False


@functools.lru_cache(maxsize=256)
def _prefers_sse(value: str | None) -> bool:
    """Whether the client lists text/event-stream before application/json in Accept:
    then it is answered with a stream even when nothing precedes the response."""
    types = _media_types(value)
    try:
        return types.index("text/event-stream") < types.index("application/json")
    except ValueError:
        return False


_OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


def _json_error(status: int, request_id: Any, code: int, message: str, *,
                keep_alive: bool, headers: list[tuple[str, str]] | None = None,
                data: Any = UNSET) -> bytes:
    body = jsonrpc.error_response(request_id, code, message, data)
    return format_response(status, [("Content-Type", "application/json"), *(headers or ())],
                           body, keep_alive=keep_alive)


class Exchange:
    """One HTTP request and its response, on one connection. The connection hands the
    next request over only when this one is ``done``."""

    __slots__ = ("_conn", "_on_lost", "chunked", "done", "keep_alive", "request", "streaming")

    def __init__(self, conn: Any, request: HttpRequest) -> None:
        self._conn = conn
        self.request = request
        self.keep_alive = request.keep_alive
        self.chunked = request.version != "1.0"
        self.done = False
        self.streaming = False
        self._on_lost: Callable[[], None] | None = None

    def watch(self, on_lost: Callable[[], None]) -> None:
        """Call ``on_lost`` if the client goes away before the response is complete."""
        self._on_lost = on_lost

    def respond(self, data: bytes) -> None:
        """A whole response (built with ``format_response``)."""
        if self.done:
            return
        self.done = True
        self._on_lost = None
        self._conn.exchange_finished(self, data, self.keep_alive)

    def ok(self, body: bytes, head: bytes = b"") -> None:
        """A 200 JSON response; ``head`` is more header lines, encoded and each ending
        in CRLF. The same bytes as ``json(200, ...)``, joined without formatting."""
        self.respond(b"".join((
            _OK_JSON, date_field(), head, b"Content-Length: ", str(len(body)).encode(),
            b"\r\n\r\n" if self.keep_alive else b"\r\nConnection: close\r\n\r\n", body)))

    def json(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
             ) -> None:
        self.respond(format_response(status, [("Content-Type", "application/json"),
                                              *(headers or ())],
                                     body, keep_alive=self.keep_alive))

    def error(self, status: int, request_id: Any, code: int, message: str,
              headers: list[tuple[str, str]] | None = None, data: Any = UNSET) -> None:
        self.respond(_json_error(status, request_id, code, message,
                                 keep_alive=self.keep_alive, headers=headers, data=data))

    def start_stream(self, headers: list[tuple[str, str]], on_lost: Callable[[], None]) -> None:
        """Send the head of a 200 ``text/event-stream`` response whose body follows."""
        lines = ["HTTP/1.1 200 OK", date_line(),
                 *(f"{k}: {v}" for k, v in sse.SSE_HEADERS),
                 *(f"{k}: {v}" for k, v in headers)]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            self.keep_alive = False
            lines.append("Connection: close")
        self.streaming = True
        self._on_lost = on_lost
        self._conn.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send(self, data: bytes) -> None:
        if not self.done:
            self._conn.write(sse.chunk(data) if self.chunked else data)

    def end(self) -> None:
        if self.done:
            return
        self.done = True
        self._on_lost = None
        self._conn.exchange_finished(self, sse.LAST_CHUNK if self.chunked else b"",
                                     self.keep_alive)

    def lost(self) -> None:
        """The connection went away before the response was complete."""
        if self.done:
            return
        self.done = True
        callback, self._on_lost = self._on_lost, None
        if callback is not None:
            callback()


# -- legacy sessions ----------------------------------------------------------------------
