"""Sans-I/O HTTP/1.1: bytes in, whole requests out, and responses formatted.

The listener's port speaks HTTP/1.1 for Streamable HTTP and the WebSocket upgrade. The
reader (llhttp through httptools, with callbacks compiled in ``mcpfast_ext.http_reader``
or their pure twin) assembles requests; this module formats responses. It never touches
a socket.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from mcpfast_ext import http_reader
from mcpfast_ext.http_types import BODY, HEAD, IDLE, HttpError, HttpRequest, asks_websocket

HttpRequestReader = http_reader.HttpRequestReader
"""Feed bytes, collect whole requests: compiled, or its pure-Python twin (mcpfast_ext)."""

__all__ = ["BODY", "HEAD", "IDLE", "HttpError", "HttpRequest", "HttpRequestReader",
           "asks_websocket", "date_field", "date_line", "error_response", "format_response",
           "refresh_date"]


_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}" for s in HTTPStatus}
_date = [b"", ""]
"""The ``Date`` header line as bytes (CRLF included) and as text (without), as
``refresh_date`` last made them."""


def refresh_date(now: float | None = None) -> None:
    """Make the ``Date`` header line anew, for the second it is: the listener does each
    second (``date_field`` then only reads it, as nginx reads its cached time)."""
    text = f"Date: {formatdate(time.time() if now is None else now, usegmt=True)}"
    _date[:] = [f"{text}\r\n".encode("ascii"), text]


def date_field() -> bytes:
    """The ``Date`` header line, CRLF included (RFC 9110 6.6.1: an origin server with a
    clock sends one in every 2xx, 3xx and 4xx response), at most a second old while a
    listener refreshes it."""
    return _date[0]  # type: ignore[return-value]


def date_line() -> str:
    """``date_field`` as text, without the CRLF."""
    return _date[1]  # type: ignore[return-value]


refresh_date()


def format_response(
    status: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    keep_alive: bool = True,
) -> bytes:
    """Serialize a complete HTTP/1.1 response with Content-Length."""
    lines = [(_STATUS_LINES.get(status) or f"HTTP/1.1 {status} {HTTPStatus(status).phrase}")
             + "\r\n" + date_line()]
    closing = not keep_alive
    for name, value in headers or ():
        if closing and name.lower() == "connection":
            # One Connection field with both options (426's "Upgrade", say).
            value, closing = f"{value}, close", False
        lines.append(f"{name}: {value}")
    if status >= 200 and status not in (204, 304):
        lines.append(f"Content-Length: {len(body)}")
    if closing:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_response(status: int, detail: str, *, keep_alive: bool = False,
                   headers: list[tuple[str, str]] | None = None) -> bytes:
    """A plain-text error response whose body says what was wrong."""
    body = (detail.rstrip() + "\n").encode("utf-8")
    all_headers = [("Content-Type", "text/plain; charset=utf-8"), *(headers or ())]
    return format_response(status, all_headers, body, keep_alive=keep_alive)
