# cython: language_level=3
"""HTTP/1.1 request framing on httptools (llhttp): bytes in, whole requests out.

Compiled twin of ``http_reader_py.py``; both must behave identically (the tests run one
body against each, and compare them on random requests cut at random places). The
twin's docstrings describe the contract. llhttp parses and validates either way; here
the callbacks it makes for every request, which are most of a request's cost in the
twin, run as C with the reader's state in C fields.

Before llhttp, a request that arrived whole and is written the plain way (an origin-form
target without a query, ``HTTP/1.1``, token header names, visible-ASCII values, a
``Content-Length`` or no body) is read here in one pass with no callback
(``_plain``). Whatever it does not recognise as such, down to a single byte, it leaves
to llhttp from the request's first byte, so everything llhttp would refuse or read
differently still goes to llhttp: this path only ever accepts a subset of what llhttp
accepts, and reads it alike (the tests compare both twins on random and mutated
requests). A keep-alive client sends the same header lines with every request: a line
byte for byte equal to the one at its place in the previous plain request is taken from
it (its name, value and lower-cased name), not decoded again.
"""

import httptools

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcmp


from mcpfast_ext.http_types import (
    BODY, HEAD, IDLE, HttpError, HttpRequest, asks_websocket, declined_head,
    head_complete,
    target_path,
)

cdef int _IDLE = IDLE
cdef int _HEAD = HEAD
cdef int _BODY = BODY

# tchar (RFC 9110 5.6.2): the bytes of a header name.
cdef bint _TCHAR[256]
# The bytes of a target this path reads itself: unreserved, sub-delims, ":", "@", "/"
# and "%" (RFC 3986 pchar); "?" and "#", and all the rest, are left to llhttp.
cdef bint _PCHAR[256]
cdef int _i
for _i in range(256):
    _TCHAR[_i] = (48 <= _i <= 57) or (65 <= _i <= 90) or (97 <= _i <= 122) \
        or _i in b"!#$%&'*+-.^_`|~"
    _PCHAR[_i] = (48 <= _i <= 57) or (65 <= _i <= 90) or (97 <= _i <= 122) \
        or _i in b"-._~!$&'()*+,;=:@/%"
_METHODS = ("POST", "GET", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH")


cdef inline str _lowered(const unsigned char* p, Py_ssize_t start, Py_ssize_t end,
                         str key):
    """``key`` (the ASCII bytes from ``start`` to ``end``) in lower case: itself when it
    has no upper-case letter, as most clients send their header names."""
    cdef Py_ssize_t i
    for i in range(start, end):
        if 65 <= p[i] <= 90:
            return key.lower()
    return key


cdef extern from "Python.h":
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)


cdef inline bint _spells(str text, const unsigned char* p, Py_ssize_t start,
                         Py_ssize_t end):
    """Whether ``text`` is the latin-1 reading of the bytes from ``start`` to ``end``:
    a latin-1 string is stored one byte a character, those very bytes."""
    return PyUnicode_GET_LENGTH(text) == end - start and PyUnicode_KIND(text) == 1 \
        and memcmp(PyUnicode_DATA(text), p + start, end - start) == 0


MAX_NAMES = 512
MAX_NAME_BYTES = 64
cdef dict _NAMES = {}
"""Header names as decoded, each with its lower-cased form, shared by every connection
of the process: the few names clients send are held once, not once a connection
(``HttpRequestReader._lines`` keeps a keep-alive connection's lines). Bounded: past
``MAX_NAMES`` names, or longer than ``MAX_NAME_BYTES``, a name is decoded and lowered
for itself."""


cdef int _ORDINARY = 0
cdef int _LENGTH = 1
cdef int _REFUSED = 2


cdef inline int _kind(str lowered, str text):
    """What a header line is to this path: Content-Length, one it leaves to llhttp
    (framing and connection headers llhttp reads its own way), or any other."""
    if lowered == "content-length":
        return _LENGTH
    if lowered == "transfer-encoding" or lowered == "upgrade" \
            or lowered == "proxy-connection" \
            or (lowered == "connection" and text.lower() != "keep-alive"):
        return _REFUSED  # llhttp reads Proxy-Connection as Connection
    return _ORDINARY


cdef inline object _index(dict index, object repeated, str lowered, str text):
    """One header into the request's index, a repeated one joined with ", " (as
    ``http_types._index``); returns the set of repeated names, made at the first."""
    if lowered in index:
        index[lowered] = f"{index[lowered]}, {text}"
        if repeated is None:
            repeated = set()
        repeated.add(lowered)
    else:
        index[lowered] = text
    return repeated


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
    cdef list _lines
    """The header lines of the last plain request, in order, three items a line:
    ``(name, value)``, the lower-cased name and its ``_kind``. A keep-alive client sends
    the same lines with every request, and a line equal to the one at its place is
    taken from here, not decoded again."""
    cdef str _target
    """The last plain request's target, taken again when the next one has the same."""
    cdef public object upgraded_data
    cdef public object failed
    cdef public bint continue_expected
    cdef public int phase
    cdef bint _ended
    """llhttp read a request that ends the connection (HTTP/1.0, ``Connection:
    close``): llhttp refuses whatever follows, so this path must not read it."""

    def __init__(self, *, Py_ssize_t max_head_bytes=16384,
                 Py_ssize_t max_body_bytes=4 * 1024 * 1024):
        # llhttp's parser, and the per-request state its callbacks fill, are made when a
        # request first needs them (``_llhttp``): a connection whose requests are all
        # plain never does, and an idle keep-alive connection holds neither.
        self._parser = None
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._requests = []
        self._lines = []
        self._target = ""
        self.upgraded_data = None
        self.failed = None
        self.phase = _IDLE

    cdef object _llhttp(self):
        if self._parser is None:
            self._parser = httptools.HttpRequestParser(self)
            self.on_message_begin()  # the per-request state, empty
            self.phase = _IDLE
        return self._parser

    def feed(self, data):
        """Return the requests completed by ``data``; raise HttpError for a malformed or
        oversized request."""
        if self.upgraded_data is not None:
            raise RuntimeError("connection was upgraded; feed the new protocol instead")
        if self._ended:
            return []
        cdef Py_ssize_t start = 0
        cdef Py_ssize_t end
        cdef list requests
        if self.phase == _IDLE and not self._ended and type(data) is bytes:
            while start < PyBytes_GET_SIZE(data):
                end = self._plain(data, start)
                if end < 0:
                    break
                start = end
            if start:
                if start == PyBytes_GET_SIZE(data):
                    requests = self._requests
                    self._requests = []
                    return requests
                data = data[start:]
        while True:
            try:
                self._llhttp().feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                offset = upgrade.args[0] if upgrade.args else len(data)
                if self._requests and not asks_websocket(
                        self._requests[len(self._requests) - 1].fields.get("upgrade")):
                    # Declined: a new parser reads the request again (``declined_head``).
                    self._parser = None
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

    cdef Py_ssize_t _plain(self, bytes data, Py_ssize_t start) except -2:
        """Read the request at ``start`` of ``data`` when it is whole and plain (see the
        module's docstring): append it and return the offset after it; -1 leaves it to
        llhttp."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t i = start
        cdef Py_ssize_t method_end, target_start, target_end, name_start, name_end
        cdef Py_ssize_t value_start, value_end, head_bytes, length = 0, end
        cdef bint has_length = False
        cdef unsigned char c
        # The request line: METHOD SP origin-form SP HTTP/1.1 CRLF.
        while i < n and 65 <= p[i] <= 90:
            i += 1
        if i == start or i >= n or p[i] != 32:
            return -1
        method_end = i
        i += 1
        target_start = i
        if i + 1 >= n or p[i] != 47 or p[i + 1] == 47:
            return -1  # not "/", or "//" (which llhttp reads as an authority)
        while i < n and _PCHAR[p[i]]:
            i += 1
        target_end = i
        if n - i < 11 or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
            return -1
        i += 11
        for method in _METHODS:
            if _spells(method, p, start, method_end):
                break
        else:
            return -1
        head_bytes = target_end - target_start
        if head_bytes > self._max_head:
            return -1
        headers = []
        index = {}
        repeated = None
        cdef list lines = self._lines
        cdef Py_ssize_t count = 0
        cdef tuple pair
        cdef int kind
        cdef Py_ssize_t at
        cdef bint hit
        # Header lines: token ":" OWS value CRLF, the value visible ASCII with single
        # inner spaces or tabs allowed and none at its end, then the empty line.
        while True:
            if i + 1 >= n:
                return -1
            if p[i] == 13:
                if p[i + 1] != 10:
                    return -1
                i += 2
                break
            name_start = i
            while i < n and _TCHAR[p[i]]:
                i += 1
            name_end = i
            if name_end == name_start or i >= n or p[i] != 58:
                return -1
            i += 1
            while i < n and (p[i] == 32 or p[i] == 9):
                i += 1
            value_start = i
            while i < n:
                c = p[i]
                if 33 <= c <= 126 or ((c == 32 or c == 9) and i > value_start):
                    i += 1
                else:
                    break
            value_end = i
            if value_end == value_start or p[value_end - 1] == 32 or p[value_end - 1] == 9 \
                    or i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
                return -1
            i += 2
            head_bytes += (name_end - name_start) + (value_end - value_start)
            if head_bytes > self._max_head:
                return -1
            at = 3 * count
            if at < len(lines):
                pair = <tuple>lines[at]
                hit = _spells(<str>pair[0], p, name_start, name_end) \
                    and _spells(<str>pair[1], p, value_start, value_end)
            else:
                hit = False
            if hit:
                text = pair[1]
                lowered = lines[at + 1]
                kind = lines[at + 2]
            else:
                key = PyUnicode_DecodeLatin1(<const char*>p + name_start,
                                             name_end - name_start, NULL)
                text = PyUnicode_DecodeLatin1(<const char*>p + value_start,
                                              value_end - value_start, NULL)
                name = _NAMES.get(key)
                if name is None:
                    lowered = _lowered(p, name_start, name_end, key)
                    if len(_NAMES) < MAX_NAMES and name_end - name_start <= MAX_NAME_BYTES:
                        _NAMES[key] = (key, lowered)
                else:
                    key, lowered = <tuple>name
                kind = _kind(lowered, text)
                pair = (key, text)
                if at < len(lines):
                    lines[at] = pair
                    lines[at + 1] = lowered
                    lines[at + 2] = kind
                else:
                    lines += (pair, lowered, kind)
            count += 1
            if kind == _LENGTH:
                if has_length or value_end - value_start > 15:
                    return -1
                for end in range(value_start, value_end):
                    if not 48 <= p[end] <= 57:
                        return -1
                    length = length * 10 + (p[end] - 48)
                has_length = True
            elif kind == _REFUSED:
                return -1
            headers.append(pair)
            repeated = _index(index, repeated, lowered, text)
        del lines[3 * count:]
        if length > self._max_body or n - i < length:
            return -1
        end = i + length
        target = self._target
        if not _spells(target, p, target_start, target_end):
            target = self._target = PyUnicode_DecodeLatin1(
                <const char*>p + target_start, target_end - target_start, NULL)
        self._requests.append(HttpRequest(
            method, target, target, "1.1", headers, data[i:end], True, False, index,
            repeated))
        return end

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
            # The target comes first: it alone is too long (RFC 9112 3).
            raise HttpError(414, f"URI Too Long: the request target exceeds "
                            f"{self._max_head} bytes")

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
        self._repeated = _index(index, self._repeated, key.lower(), text)

    def on_headers_complete(self):
        self.phase = _BODY
        self.continue_expected = head_complete(self._index, self._max_body,
                                               self._parser.get_http_version)

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
            path = target_path(url)
        # After the path: a target refused (target_path raises) is answered, whether or
        # not the request would have ended the connection.
        if not parser.should_keep_alive():
            self._ended = True
        self._requests.append(HttpRequest(
            parser.get_method().decode("ascii"), target, path, parser.get_http_version(),
            self._headers, b"".join(self._body), parser.should_keep_alive(),
            parser.should_upgrade(), self._index, self._repeated))
