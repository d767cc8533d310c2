# cython: language_level=3
"""What the gateway reads of a JSON-RPC message before (or instead of) parsing it.

Compiled twin of ``message_scan_py.py``, whose docstrings state the contract; both
return the same values for every input (``tests/ext/test_message_scan.py`` compares
them on random messages). ``survey`` is one pass over the bytes where the twin makes
four; ``splice_response`` and ``request_line`` build their bytes with one allocation.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy, strlen
from msgspec import UNSET


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

NEWLINE = 1
NOT_ASCII = 2
BRACKETS_SHIFT = 2
RESPONSE_HEAD = b'{"jsonrpc":"2.0","id":'

cdef const char* _HEAD = b'{"jsonrpc":"2.0","id":'
cdef Py_ssize_t _HEAD_LEN = 22


def survey(bytes data not None):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i
    cdef Py_ssize_t brackets = 0
    cdef unsigned char c
    cdef unsigned char high = 0
    cdef int newline = 0
    for i in range(n):
        c = p[i]
        high |= c
        if c == 0x7B or c == 0x5B:
            brackets += 1
        elif c == 0x0A:
            newline = 1
    return (brackets << 2) | newline | (2 if high & 0x80 else 0)


cdef Py_ssize_t _digits(unsigned long long value, char* out) noexcept:
    """``value`` in decimal into ``out`` (20 bytes at least); its length."""
    cdef char tmp[20]
    cdef Py_ssize_t n = 0
    cdef Py_ssize_t i
    while True:
        tmp[n] = <char>(48 + value % 10)
        value //= 10
        n += 1
        if value == 0:
            break
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n


cdef const char* _RESULT = b'"result":'
cdef const char* _ERROR = b'"error":'
cdef Py_ssize_t _RESULT_LEN = strlen(_RESULT)
cdef Py_ssize_t _ERROR_LEN = strlen(_ERROR)


def splice_response(bytes line not None, upstream_id, client_id, bint error,
                    Py_ssize_t value_size):
    if type(client_id) is not int or type(upstream_id) is not int or upstream_id < 0:
        return None
    cdef char up[24]
    cdef char cl[24]
    cdef Py_ssize_t up_len, cl_len, n, end, tail_len
    cdef const char* member = _ERROR if error else _RESULT
    cdef Py_ssize_t member_len = _ERROR_LEN if error else _RESULT_LEN
    cdef long long cid
    cdef int negative = 0
    try:
        up_len = _digits(<unsigned long long>upstream_id, up)
        cid = client_id
    except OverflowError:
        return None
    if cid < 0:
        negative = 1
        cl[0] = 45
        cl_len = 1 + _digits(<unsigned long long>(-(cid + 1)) + 1, cl + 1)
    else:
        cl_len = _digits(<unsigned long long>cid, cl)
    cdef const char* p = PyBytes_AS_STRING(line)
    n = PyBytes_GET_SIZE(line)
    end = _HEAD_LEN + up_len
    # Exactly the head, the id, a comma, the member's name, its value and the brace:
    # room for no other member (see the twin).
    if n != end + 1 + member_len + value_size + 1 or memcmp(p, _HEAD, _HEAD_LEN) != 0 \
            or memcmp(p + _HEAD_LEN, up, up_len) != 0 or p[end] != 44 \
            or memcmp(p + end + 1, member, member_len) != 0 or p[n - 1] != 125:
        return None
    tail_len = n - end
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _HEAD_LEN + cl_len + tail_len)
    cdef char* o = PyBytes_AS_STRING(out)
    memcpy(o, _HEAD, _HEAD_LEN)
    memcpy(o + _HEAD_LEN, cl, cl_len)
    memcpy(o + _HEAD_LEN + cl_len, p + end, tail_len)
    return out


cdef const char* _METHOD = b',"method":"'
cdef const char* _PARAMS = b'","params":'
cdef Py_ssize_t _METHOD_LEN = strlen(_METHOD)
cdef Py_ssize_t _PARAMS_LEN = strlen(_PARAMS)


def request_line(unsigned long long upstream_id, str method not None, object params,
                 bytes delimiter not None):
    cdef Py_ssize_t method_len = PyUnicode_GET_LENGTH(method)
    cdef const unsigned char* m
    cdef Py_ssize_t i
    cdef unsigned char c
    if not PyUnicode_IS_ASCII(method):
        return None
    m = <const unsigned char*>PyUnicode_DATA(method)
    for i in range(method_len):
        c = m[i]
        if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:
            return None
    cdef char digits[24]
    cdef Py_ssize_t id_len = _digits(upstream_id, digits)
    cdef Py_ssize_t delimiter_len = PyBytes_GET_SIZE(delimiter)
    cdef Py_buffer view
    cdef bint has_params = params is not UNSET
    cdef Py_ssize_t params_len = 0
    cdef bytes out
    cdef char* o
    if has_params:
        PyObject_GetBuffer(params, &view, PyBUF_SIMPLE)
        params_len = view.len
    try:
        out = PyBytes_FromStringAndSize(
            NULL, _HEAD_LEN + id_len + _METHOD_LEN + method_len
            + (_PARAMS_LEN + params_len if has_params else 1) + 1 + delimiter_len)
        o = PyBytes_AS_STRING(out)
        memcpy(o, _HEAD, _HEAD_LEN)
        o += _HEAD_LEN
        memcpy(o, digits, id_len)
        o += id_len
        memcpy(o, _METHOD, _METHOD_LEN)
        o += _METHOD_LEN
        memcpy(o, m, method_len)
        o += method_len
        if has_params:
            memcpy(o, _PARAMS, _PARAMS_LEN)
            o += _PARAMS_LEN
            memcpy(o, view.buf, params_len)
            o += params_len
        else:
            o[0] = 34  # the method's closing quote
            o += 1
        o[0] = 125
        o += 1
        memcpy(o, PyBytes_AS_STRING(delimiter), delimiter_len)
    finally:
        if has_params:
            PyBuffer_Release(&view)
    return out


cdef inline bint _at(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, const char* word,
                     Py_ssize_t size) noexcept:
    return i + size <= n and memcmp(p + i, word, size) == 0


def may_repeat_a_name(object params):
    """One pass where the twin makes four: each pattern counted as ``bytes.count``
    counts it (non-overlapping, left to right), so both agree on every input."""
    if params is UNSET:
        return False
    cdef Py_buffer view
    PyObject_GetBuffer(params, &view, PyBUF_SIMPLE)
    cdef const unsigned char* p = <const unsigned char*>view.buf
    cdef Py_ssize_t n = view.len
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t next_name = 0, next_uri = 0, next_ref = 0
    cdef int names = 0, uris = 0, refs = 0
    cdef unsigned char c
    cdef bint found = False
    try:
        while i < n:
            c = p[i]
            if c == 0x5C:  # a backslash: an escape of the form \u anywhere
                if i + 1 < n and p[i + 1] == 0x75:
                    found = True
                    break
            elif c == 0x22:
                if i >= next_name and _at(p, i, n, b'"name"', 6):
                    names += 1
                    next_name = i + 6
                if i >= next_uri and _at(p, i, n, b'"uri"', 5):
                    uris += 1
                    next_uri = i + 5
                if i >= next_ref and _at(p, i, n, b'"ref"', 5):
                    refs += 1
                    next_ref = i + 5
                if names > 1 or uris > 1 or refs > 1:
                    found = True
                    break
            i += 1
    finally:
        PyBuffer_Release(&view)
    return found


# -- read_call: a client's tools/call read in one pass ------------------------------------

cdef unsigned char _IN_STRING[256]
"""A byte's class inside a string: 0 plain, 1 the closing quote, 2 an escape, 3 a
control character (not allowed raw), 4 beyond ASCII (a UTF-8 sequence begins)."""
cdef int _c
for _c in range(256):
    _IN_STRING[_c] = 1 if _c == 0x22 else 2 if _c == 0x5C else 3 if _c < 0x20 \
        else 4 if _c >= 0x80 else 0


cdef uint64_t _ONES = 0x0101010101010101ULL
cdef uint64_t _HIGHS = 0x8080808080808080ULL
cdef uint64_t _QUOTES = 0x2222222222222222ULL
cdef uint64_t _BACKSLASHES = 0x5C5C5C5C5C5C5C5CULL
cdef uint64_t _SPACES = 0x2020202020202020ULL


cdef inline Py_ssize_t _ws(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and (p[i] == 0x20 or p[i] == 0x09):
        i += 1
    return i


cdef inline int _hex(unsigned char c) noexcept:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef Py_ssize_t _utf8(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """After the well-formed UTF-8 sequence at ``i`` (Unicode 15 table 3-7); -1."""
    cdef unsigned char c = p[i]
    cdef unsigned char low = 0x80
    cdef unsigned char high = 0xBF
    cdef Py_ssize_t need, k
    if 0xC2 <= c <= 0xDF:
        need = 1
    elif c == 0xE0:
        need = 2
        low = 0xA0
    elif 0xE1 <= c <= 0xEC or c == 0xEE or c == 0xEF:
        need = 2
    elif c == 0xED:
        need = 2
        high = 0x9F
    elif c == 0xF0:
        need = 3
        low = 0x90
    elif 0xF1 <= c <= 0xF3:
        need = 3
    elif c == 0xF4:
        need = 3
        high = 0x8F
    else:
        return -1
    if i + need >= n or p[i + 1] < low or p[i + 1] > high:
        return -1
    for k in range(2, need + 1):
        if p[i + k] < 0x80 or p[i + k] > 0xBF:
            return -1
    return i + need + 1


cdef Py_ssize_t _string(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                        bint* escaped) noexcept:
    """After the string whose opening quote is at ``i``; -1 for what is no string, or
    has a ``\\u`` escape of a surrogate. ``escaped`` is set when it has an escape."""
    cdef unsigned char c
    cdef unsigned char kind
    cdef int value, digit, k
    cdef uint64_t word
    i += 1
    while i < n:
        # Eight plain bytes at a time: none a quote, a backslash, a control character
        # or beyond ASCII (the usual SWAR test for a zero byte, on each).
        while i + 8 <= n:
            memcpy(&word, p + i, 8)
            if ((word ^ _QUOTES) - _ONES) & ~(word ^ _QUOTES) & _HIGHS \
                    or ((word ^ _BACKSLASHES) - _ONES) & ~(word ^ _BACKSLASHES) & _HIGHS \
                    or (word - _SPACES) & ~word & _HIGHS or word & _HIGHS:
                break
            i += 8
        if i >= n:
            return -1
        c = p[i]
        kind = _IN_STRING[c]
        if kind == 0:
            i += 1
        elif kind == 1:
            return i + 1
        elif kind == 2:
            escaped[0] = True
            if i + 1 >= n:
                return -1
            c = p[i + 1]
            if c == 0x75:  # \uXXXX
                if i + 5 >= n:
                    return -1
                value = 0
                for k in range(2, 6):
                    digit = _hex(p[i + k])
                    if digit < 0:
                        return -1
                    value = value * 16 + digit
                if 0xD800 <= value <= 0xDFFF:
                    return -1
                i += 6
            elif c == 0x22 or c == 0x5C or c == 0x2F or c == 0x62 or c == 0x66 \
                    or c == 0x6E or c == 0x72 or c == 0x74:
                i += 2
            else:
                return -1
        elif kind == 4:
            i = _utf8(p, i, n)
            if i < 0:
                return -1
        else:
            return -1
    return -1


cdef Py_ssize_t _digits_at(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and 48 <= p[i] <= 57:
        i += 1
    return i


cdef Py_ssize_t _number(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """After the JSON number at ``i``; -1."""
    cdef Py_ssize_t start
    if p[i] == 0x2D:
        i += 1
        if i >= n:
            return -1
    if p[i] == 0x30:
        i += 1
    elif 49 <= p[i] <= 57:
        i = _digits_at(p, i + 1, n)
    else:
        return -1
    if i < n and p[i] == 0x2E:
        start = i + 1
        i = _digits_at(p, start, n)
        if i == start:
            return -1
    if i < n and (p[i] == 0x65 or p[i] == 0x45):
        i += 1
        if i < n and (p[i] == 0x2B or p[i] == 0x2D):
            i += 1
        start = i
        i = _digits_at(p, start, n)
        if i == start:
            return -1
    return i


cdef inline Py_ssize_t _member(const unsigned char* p, Py_ssize_t i, Py_ssize_t n,
                               bint* escaped, Py_ssize_t* key_end) noexcept:
    """The key at ``i`` (a string: its characters from ``i + 1`` to ``key_end``), its
    colon and the spaces around it: where the member's value begins; -1 for what is
    none. ``escaped`` is set when the key has an escape."""
    if i >= n or p[i] != 0x22:
        return -1
    i = _string(p, i, n, escaped)
    if i < 0:
        return -1
    key_end[0] = i - 1
    i = _ws(p, i, n)
    if i >= n or p[i] != 0x3A:
        return -1
    i = _ws(p, i + 1, n)
    return i if i < n else -1


cdef Py_ssize_t _value(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int depth,
                       int max_depth) noexcept:
    """After the JSON value at ``i`` (no space before it), inside a container at level
    ``depth``; -1 for what is no value, or nests deeper than ``max_depth``."""
    cdef bint escaped = False
    cdef unsigned char c = p[i]
    if c == 0x22:
        return _string(p, i, n, &escaped)
    if c == 0x7B or c == 0x5B:
        if depth + 1 > max_depth:
            return -1
        return _container(p, i, n, depth + 1, max_depth)
    if c == 0x2D or 48 <= c <= 57:
        return _number(p, i, n)
    if c == 0x74 and i + 4 <= n and memcmp(p + i, b"true", 4) == 0:
        return i + 4
    if c == 0x66 and i + 5 <= n and memcmp(p + i, b"false", 5) == 0:
        return i + 5
    if c == 0x6E and i + 4 <= n and memcmp(p + i, b"null", 4) == 0:
        return i + 4
    return -1


cdef Py_ssize_t _container(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int depth,
                           int max_depth) noexcept:
    """After the object or array at ``i``, itself at level ``depth``; -1."""
    cdef bint is_object = p[i] == 0x7B
    cdef unsigned char close = 0x7D if is_object else 0x5D
    cdef bint escaped = False
    cdef Py_ssize_t key_end
    i = _ws(p, i + 1, n)
    if i < n and p[i] == close:
        return i + 1
    while i < n:
        if is_object:
            i = _member(p, i, n, &escaped, &key_end)
            if i < 0:
                return -1
        i = _value(p, i, n, depth, max_depth)
        if i < 0:
            return -1
        i = _ws(p, i, n)
        if i >= n:
            return -1
        if p[i] == close:
            return i + 1
        if p[i] != 0x2C:
            return -1
        i = _ws(p, i + 1, n)
    return -1


cdef enum:
    _JSONRPC = 1
    _ID = 2
    _METHOD_MEMBER = 4
    _PARAMS_MEMBER = 8


cdef int _key(const unsigned char* p, Py_ssize_t start, Py_ssize_t size) noexcept:
    """Which envelope member the key from ``start`` names (0: none of them)."""
    if size == 7 and memcmp(p + start, b"jsonrpc", 7) == 0:
        return _JSONRPC
    if size == 2 and p[start] == 0x69 and p[start + 1] == 0x64:
        return _ID
    if size == 6:
        if memcmp(p + start, b"method", 6) == 0:
            return _METHOD_MEMBER
        if memcmp(p + start, b"params", 6) == 0:
            return _PARAMS_MEMBER
    return 0


cdef Py_ssize_t _params(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int max_depth,
                        Py_ssize_t* name) noexcept:
    """After the params object at ``i`` (level 2); -1 where ``read_call`` declines.
    ``name`` gets where the name's characters begin and end."""
    cdef bint escaped = False
    cdef Py_ssize_t start, size, key_end
    i = _ws(p, i + 1, n)
    if i < n and p[i] == 0x7D:
        return i + 1
    while i < n:
        start = i + 1
        i = _member(p, i, n, &escaped, &key_end)
        if i < 0 or escaped:
            return -1
        size = key_end - start
        if size == 4 and memcmp(p + start, b"name", 4) == 0:
            if name[0] >= 0 or p[i] != 0x22:
                return -1
            name[0] = i + 1
            i = _string(p, i, n, &escaped)
            if i < 0 or escaped:
                return -1
            name[1] = i - 1
        elif (size == 3 and memcmp(p + start, b"uri", 3) == 0) \
                or (size == 3 and memcmp(p + start, b"ref", 3) == 0) \
                or (size == 6 and memcmp(p + start, b"cursor", 6) == 0) \
                or (size == 5 and memcmp(p + start, b"_meta", 5) == 0):
            return -1
        else:
            i = _value(p, i, n, 2, max_depth)
            if i < 0:
                return -1
        i = _ws(p, i, n)
        if i >= n:
            return -1
        if p[i] == 0x7D:
            return i + 1
        if p[i] != 0x2C:
            return -1
        i = _ws(p, i + 1, n)
    return -1


def read_call(bytes data not None, int max_depth):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t i, start, key_end
    cdef Py_ssize_t id_start = 0, id_end = 0, params_start = 0, params_end = 0
    cdef Py_ssize_t name[2]
    cdef bint escaped = False
    cdef bint id_is_string = False
    cdef int seen = 0
    cdef int member, digits
    cdef long long number
    name[0] = -1
    name[1] = -1
    if max_depth < 2:
        return None
    i = _ws(p, 0, n)
    if i >= n or p[i] != 0x7B:
        return None
    i = _ws(p, i + 1, n)
    while i < n:
        start = i + 1
        i = _member(p, i, n, &escaped, &key_end)
        if i < 0 or escaped:
            return None
        member = _key(p, start, key_end - start)
        if member == 0 or seen & member:
            return None
        seen |= member
        if member == _JSONRPC:
            if i + 5 > n or memcmp(p + i, b'"2.0"', 5) != 0:
                return None
            i += 5
        elif member == _METHOD_MEMBER:
            if i + 12 > n or memcmp(p + i, b'"tools/call"', 12) != 0:
                return None
            i += 12
        elif member == _ID:
            if p[i] == 0x22:
                id_is_string = True
                id_start = i + 1
                i = _string(p, i, n, &escaped)
                if i < 0 or escaped:
                    return None
                id_end = i - 1
            else:
                id_start = i
                if p[i] == 0x2D:
                    i += 1
                if i >= n or not 48 <= p[i] <= 57 or (p[i] == 0x30 and i + 1 < n
                                                     and 48 <= p[i + 1] <= 57):
                    return None
                i = _digits_at(p, i, n)
                id_end = i
                if id_end - id_start - (p[id_start] == 0x2D) > 18 or (
                        i < n and (p[i] == 0x2E or p[i] == 0x65 or p[i] == 0x45)):
                    return None
        else:
            if p[i] != 0x7B:
                return None
            params_start = i
            i = _params(p, i, n, max_depth, name)
            if i < 0 or name[0] < 0:
                return None
            params_end = i
        i = _ws(p, i, n)
        if i >= n:
            return None
        if p[i] == 0x7D:
            i = _ws(p, i + 1, n)
            if i != n or seen != 15:
                return None
            break
        if p[i] != 0x2C:
            return None
        i = _ws(p, i + 1, n)
    else:
        return None
    if id_is_string:
        request_id = PyUnicode_DecodeUTF8(<const char*>p + id_start, id_end - id_start, NULL)
    else:
        number = 0
        for i in range(id_start + (p[id_start] == 0x2D), id_end):
            number = number * 10 + (p[i] - 48)
        request_id = -number if p[id_start] == 0x2D else number
    return (request_id,
            PyUnicode_DecodeUTF8(<const char*>p + name[0], name[1] - name[0], NULL),
            PyBytes_FromStringAndSize(<const char*>p + params_start, params_end - params_start))


# -- read_result and respond_as: an upstream's common result ------------------------------

cdef const char* _RESULT_MEMBER = b',"result":'
RESULT_DEPTH = 512
"""Levels a result read by ``read_result`` may nest (the envelope is the first);
deeper, the parser decides."""


def read_result(bytes line not None):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(line)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef Py_ssize_t i = _HEAD_LEN
    cdef Py_ssize_t end
    cdef long long number = 0
    if n < _HEAD_LEN + 13 or memcmp(p, _HEAD, _HEAD_LEN) != 0 or p[n - 1] != 0x7D:
        return None
    if p[i] == 0x30:
        i += 1
    else:
        while i < n and 48 <= p[i] <= 57 and i - _HEAD_LEN < 18:
            number = number * 10 + (p[i] - 48)
            i += 1
    if i == _HEAD_LEN or i + 10 >= n - 1 or memcmp(p + i, _RESULT_MEMBER, 10) != 0:
        return None
    end = _value(p, i + 10, n - 1, 1, RESULT_DEPTH)
    if end != n - 1:
        return None
    return number


def respond_as(bytes line not None, client_id):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(line)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(line)
    cdef Py_ssize_t i = _HEAD_LEN
    cdef char digits[24]
    cdef const char* id_bytes
    cdef Py_ssize_t id_len, k
    cdef long long cid
    cdef bytes out
    cdef char* o
    cdef bint quoted = False
    if n <= _HEAD_LEN or memcmp(p, _HEAD, _HEAD_LEN) != 0:
        return None
    while i < n and 48 <= p[i] <= 57:
        i += 1
    if i == _HEAD_LEN or i >= n or p[i] != 0x2C:
        return None
    if type(client_id) is int:
        try:
            cid = client_id
        except OverflowError:
            return None
        if cid < 0:
            digits[0] = 45
            id_len = 1 + _digits(<unsigned long long>(-(cid + 1)) + 1, digits + 1)
        else:
            id_len = _digits(<unsigned long long>cid, digits)
        id_bytes = digits
    elif type(client_id) is str and PyUnicode_IS_ASCII(client_id):
        id_bytes = <const char*>PyUnicode_DATA(client_id)
        id_len = PyUnicode_GET_LENGTH(client_id)
        for k in range(id_len):
            if id_bytes[k] < 0x20 or id_bytes[k] > 0x7E or id_bytes[k] == 0x22 \
                    or id_bytes[k] == 0x5C:
                return None
        quoted = True
    else:
        return None
    out = PyBytes_FromStringAndSize(NULL, _HEAD_LEN + id_len + 2 * quoted + n - i)
    o = PyBytes_AS_STRING(out)
    memcpy(o, _HEAD, _HEAD_LEN)
    o += _HEAD_LEN
    if quoted:
        o[0] = 0x22
        o += 1
    memcpy(o, id_bytes, id_len)
    o += id_len
    if quoted:
        o[0] = 0x22
        o += 1
    memcpy(o, p + i, n - i)
    return out
