"""What both HTTP request reader implementations share: the request they produce, the
error they raise and the phases they report.

It lives in its own pure-Python module so that ``http_reader`` and ``http_reader_py``
return and raise the very same classes, whichever one the selector in ``mcpfast_ext``
picked; ``mcpfast.protocol.http`` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httptools


class HttpError(Exception):
    """A request that cannot be served: carries the status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class HttpRequest:
    method: str
    target: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    keep_alive: bool = True
    upgrade: bool = False
    fields: dict[str, str] = field(default=None, repr=False)  # type: ignore[arg-type]
    """Lower-cased name to value, repeated headers joined with ", " as RFC 9110 5.3
    allows. The reader fills it as it parses, so that a hot path reads a header with
    one ``fields.get`` of a lower-case name; a request built by hand indexes its
    headers when made."""
    repeated: set[str] | None = field(default=None, repr=False)
    """Lower-cased names sent more than once (None: none)."""

    def __post_init__(self) -> None:
        if self.fields is None:
            self.fields, self.repeated = _index(self.headers)

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), as in ``fields``."""
        return self.fields.get(name.lower())

    def header_count(self, name: str) -> int:
        lowered = name.lower()
        if self.repeated is None or lowered not in self.repeated:
            return 1 if lowered in self.fields else 0
        return sum(1 for key, _ in self.headers if key.lower() == lowered)


def _index(headers: list[tuple[str, str]]) -> tuple[dict[str, str], set[str] | None]:
    index: dict[str, str] = {}
    repeated: set[str] | None = None
    for key, value in headers:
        key = key.lower()
        if key in index:
            index[key] = f"{index[key]}, {value}"
            if repeated is None:
                repeated = set()
            repeated.add(key)
        else:
            index[key] = value
    return index, repeated


IDLE = 0
"""Between requests: no byte of the next one has arrived."""
HEAD = 1
"""A request's head has begun and is not complete."""
BODY = 2
"""A request's head is complete and its body is not."""


def head_complete(index: dict[str, str], max_body: int, version: Callable[[], str]) -> bool:
    """What a reader checks once a request's head is read, before its body: a transfer
    coding in an HTTP/1.0 request is 400 (RFC 9112 6.1: faulty framing), one other than
    chunked is 501 (RFC 9112 6.1: one the server does not implement,
    whose body it could not read), and a declared body over ``max_body`` is 413 at once
    rather than once that much has been read. Returns whether the client waits for
    ``100 Continue`` before it sends the body (RFC 9110 10.1.1: an HTTP/1.1 request
    with ``Expect: 100-continue`` and a body); ``version`` gives the request's HTTP
    version, asked only then."""
    coding = index.get("transfer-encoding")
    if coding is not None:
        if version() == "1.0":
            # RFC 9112 6.1: HTTP/1.0 has no transfer codings, so its framing is faulty;
            # read as chunked and kept alive, it could smuggle a request past a proxy
            # in front that frames it otherwise.
            raise HttpError(400, "Bad Request: Transfer-Encoding in an HTTP/1.0 request")
        for part in coding.split(","):
            part = part.strip().lower()
            if part and part != "chunked":
                raise HttpError(501, f"Transfer-Encoding {coding.strip()!r} is not "
                                     "implemented: only chunked is")
    length = index.get("content-length")
    declared = 0
    if length is not None:
        try:
            declared = int(length)  # llhttp has checked its digits
        except ValueError:
            pass
        if declared > max_body:
            raise HttpError(413, f"request body exceeds {max_body} bytes")
    expect = index.get("expect")
    return expect is not None and expect.strip().lower() == "100-continue" and \
        (declared > 0 or coding is not None) and version() == "1.1"


def target_path(url: bytes) -> str:
    """The path of a request target other than a plain path (absolute-form, or with a
    query): "/" when it names none. A target that is neither a path nor a URL (the
    authority-form of CONNECT, which only a forward proxy serves) is 400."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise HttpError(400, f"Bad Request: the request target {url.decode('latin-1')!r} is "
                             "neither a path nor a URL (this is not a forward proxy)") from None
    return parsed.path.decode("latin-1") if parsed.path else "/"


def asks_websocket(upgrade: str | None) -> bool:
    """Whether a request's ``Upgrade`` header (its value, or None) names WebSocket, the
    one protocol the listener switches to. Any other (``h2c``: ``curl --http2`` asks
    for HTTP/2 so on every cleartext request) is declined by ignoring it, as RFC 9110
    7.8 allows: the request is answered over HTTP/1.1, and the connection reads on."""
    return upgrade is not None and any(
        token.strip().lower() == "websocket" for token in upgrade.split(","))


def declined_head(request: HttpRequest) -> bytes:
    """The head of ``request``, an upgrade that ``asks_websocket`` declines, written
    again without its ``Upgrade`` header. llhttp ends an upgrade request at its head
    and leaves the bytes after it to the new protocol; read again from this head, they
    are the request's body and the requests after it, as HTTP/1.1."""
    lines = [f"{request.method} {request.target} HTTP/{request.version}"]
    lines += [f"{name}: {value}" for name, value in request.headers
              if name.lower() != "upgrade"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
