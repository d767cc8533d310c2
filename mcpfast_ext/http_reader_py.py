"""HTTP/1.1 request framing on httptools (llhttp): bytes in, whole requests out.

Pure-Python twin of ``http_reader.pyx``; both must behave identically (the tests run one
body against each, and compare them on random requests cut at random places). llhttp
parses and validates; the callbacks here only collect what it found.
"""

from __future__ import annotations

import httptools

from .http_types import (
    BODY,
    HEAD,
    IDLE,
    HttpError,
    HttpRequest,
    asks_websocket,
    declined_head,
    head_complete,
    target_path,
)

__all__ = ["BODY", "HEAD", "IDLE", "HttpError", "HttpRequest", "HttpRequestReader"]


class HttpRequestReader:
    """Feed bytes; collect complete requests. After an upgrade request, the bytes that
    follow its head belong to the new protocol and are returned as ``upgraded_data``.
    ``phase`` tells where the next request stands, so that the connection can time its
    head and its body (the limits' header_timeout and body_timeout).

    Each header is indexed by its lower-cased name as it arrives, so that a request's
    lookups cost a dict access."""

    __slots__ = ("_body", "_body_bytes", "_ended", "_head_bytes", "_headers", "_index",
                 "_max_body", "_max_head", "_parser", "_repeated", "_requests",
                 "_url", "continue_expected", "failed", "phase", "upgraded_data")

    def __init__(self, *, max_head_bytes: int = 16384, max_body_bytes: int = 4 * 1024 * 1024):
        self._parser = httptools.HttpRequestParser(self)
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._requests: list[HttpRequest] = []
        self.upgraded_data: bytes | None = None
        self.failed: HttpError | None = None
        """A malformed request after whole ones in the same bytes: ``feed`` returned
        those, and the connection answers this error after them (RFC 9112 9.3: in
        order), then closes. Cleared by the connection."""
        self._ended = False
        """A request that ends the connection was read (``Connection: close``, or
        HTTP/1.0 without keep-alive): what follows it is not read (RFC 9112 9.6)."""
        self.continue_expected = False
        """Set when a head that asks for ``100 Continue`` is read and its body is still
        to come (``head_complete``); the connection answers and clears it."""
        self.on_message_begin()  # the per-request state, empty
        self.phase = IDLE

    def feed(self, data: bytes) -> list[HttpRequest]:
        """Return the requests completed by ``data``. Raise HttpError for a malformed or
        oversized request; the connection should then be answered and closed."""
        if self.upgraded_data is not None:
            raise RuntimeError("connection was upgraded; feed the new protocol instead")
        if self._ended:
            return []
        while True:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                offset = upgrade.args[0] if upgrade.args else len(data)
                if self._requests and not asks_websocket(
                        self._requests[-1].fields.get("upgrade")):
                    # Declined: a new parser reads the request again (``declined_head``).
                    self._parser = httptools.HttpRequestParser(self)
                    data = declined_head(self._requests.pop()) + data[offset:]
                    continue
                else:
                    self.upgraded_data = bytes(data[offset:])
            except httptools.HttpParserError as exc:
                error = exc.__context__ if isinstance(exc.__context__, HttpError) \
                    else HttpError(400, f"malformed HTTP request: {exc}")
                if self._ended:
                    break  # bytes after a request that ends the connection: dropped
                if self._requests:
                    self.failed = error  # answered after the requests before it
                    break
                raise error from None
            break
        requests = self._requests
        if requests:
            self._requests = []
        return requests

    @property
    def buffered(self) -> int:
        """Bytes held for the request not yet complete."""
        return self._head_bytes + self._body_bytes if self.phase != IDLE else 0

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.phase = HEAD
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._index: dict[str, str] = {}
        self._repeated: set[str] | None = None
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            # The target comes first: it alone is too long (RFC 9112 3).
            raise HttpError(414, f"URI Too Long: the request target exceeds "
                            f"{self._max_head} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes + len(name) + len(value)
        if size > self._max_head:
            raise HttpError(431, f"request head exceeds {self._max_head} bytes")
        self._head_bytes = size
        key, text = name.decode("latin-1"), value.decode("latin-1")
        self._headers.append((key, text))
        lowered = key.lower()
        index = self._index
        if lowered in index:
            index[lowered] = f"{index[lowered]}, {text}"
            if self._repeated is None:
                self._repeated = set()
            self._repeated.add(lowered)
        else:
            index[lowered] = text

    def on_headers_complete(self) -> None:
        self.phase = BODY
        self.continue_expected = head_complete(self._index, self._max_body,
                                               self._parser.get_http_version)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise HttpError(413, f"request body exceeds {self._max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.phase = IDLE
        parser = self._parser
        url = self._url
        target = url.decode("latin-1")
        if url[:1] == b"/" and url[1:2] != b"/" and b"?" not in url and b"#" not in url:
            path = target  # origin-form with no query: nothing to split off
        else:
            path = target_path(url)
        # After the path: a target refused (target_path raises) is answered, whether or
        # not the request would have ended the connection.
        if not parser.should_keep_alive():
            self._ended = True
        self._requests.append(HttpRequest(
            parser.get_method().decode("ascii"), target, path, parser.get_http_version(),
            self._headers, b"".join(self._body), parser.should_keep_alive(),
            parser.should_upgrade(), self._index, self._repeated))
