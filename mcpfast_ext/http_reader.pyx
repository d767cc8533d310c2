# cython: language_level=3
"""HTTP/1.1 request framing on httptools (llhttp): bytes in, whole requests out.

Compiled twin of ``http_reader_py.py``; both must behave identically (the tests run one
body against each, and compare them on random requests cut at random places). The
twin's docstrings describe the contract. llhttp parses and validates either way; here
the callbacks it makes for every request, which are most of a request's cost in the
twin, run as C with the reader's state in C fields.
"""

import httptools

from mcpfast_ext.http_types import BODY, HEAD, IDLE, HttpError, HttpRequest

cdef int _IDLE = IDLE
cdef int _HEAD = HEAD
cdef int _BODY = BODY


cdef class HttpRequestReader:
    """Feed bytes; collect complete requests (see the twin)."""

    cdef object _parser
    cdef Py_ssize_t _max_head
    cdef Py_ssize_t _max_body
    cdef Py_ssize_t _head_bytes
    cdef Py_ssize_t _body_bytes
    cdef bytes _url
    cdef list _headers
    cdef dict _index
    cdef object _repeated
    cdef list _body
    cdef list _requests
    cdef public object upgraded_data
    cdef public int phase

    def __init__(self, *, Py_ssize_t max_head_bytes=16384,
                 Py_ssize_t max_body_bytes=4 * 1024 * 1024):
        self._parser = httptools.HttpRequestParser(self)
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._requests = []
        self.upgraded_data = None
        self.on_message_begin()  # the per-request state, empty
        self.phase = _IDLE

    def feed(self, data):
        """Return the requests completed by ``data``; raise HttpError for a malformed or
        oversized request."""
        if self.upgraded_data is not None:
            raise RuntimeError("connection was upgraded; feed the new protocol instead")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.upgraded_data = bytes(data[offset:])
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HttpError):
                raise exc.__context__ from None
            raise HttpError(400, f"malformed HTTP request: {exc}") from None
        cdef list requests = self._requests
        if requests:
            self._requests = []
        return requests

    @property
    def buffered(self):
        """Bytes held for the request not yet complete."""
        return self._head_bytes + self._body_bytes if self.phase != _IDLE else 0

    # httptools callbacks
    def on_message_begin(self):
        self.phase = _HEAD
        self._url = b""
        self._headers = []
        self._index = {}
        self._repeated = None
        self._body = []
        self._body_bytes = 0
        self._head_bytes = 0

    def on_url(self, bytes url):
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            raise HttpError(431, f"request head exceeds {self._max_head} bytes")

    def on_header(self, bytes name, bytes value):
        cdef Py_ssize_t size = self._head_bytes + len(name) + len(value)
        cdef str key
        cdef str text
        cdef str lowered
        cdef dict index = self._index
        if size > self._max_head:
            raise HttpError(431, f"request head exceeds {self._max_head} bytes")
        self._head_bytes = size
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        self._headers.append((key, text))
        lowered = key.lower()
        if lowered in index:
            index[lowered] = f"{index[lowered]}, {text}"
            if self._repeated is None:
                self._repeated = set()
            self._repeated.add(lowered)
        else:
            index[lowered] = text

    def on_headers_complete(self):
        self.phase = _BODY

    def on_body(self, bytes body):
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise HttpError(413, f"request body exceeds {self._max_body} bytes")
        self._body.append(body)

    def on_message_complete(self):
        cdef bytes url = self._url
        cdef str target = url.decode("latin-1")
        cdef object path
        parser = self._parser
        self.phase = _IDLE
        if url[:1] == b"/" and url[1:2] != b"/" and b"?" not in url and b"#" not in url:
            path = target  # origin-form with no query: nothing to split off
        else:
            parsed = httptools.parse_url(url)
            path = parsed.path.decode("latin-1") if parsed.path else "/"
        self._requests.append(HttpRequest(
            parser.get_method().decode("ascii"), target, path, parser.get_http_version(),
            self._headers, b"".join(self._body), parser.should_keep_alive(),
            parser.should_upgrade(), self._index, self._repeated))
