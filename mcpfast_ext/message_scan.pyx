# cython: language_level=3
"""What the gateway reads of a JSON-RPC message before (or instead of) parsing it.

Compiled twin of ``message_scan_py.py``, whose docstrings state the contract; both
return the same values for every input (``tests/ext/test_message_scan.py`` compares
them on random messages). ``survey`` is one pass over the bytes where the twin makes
four; ``splice_response`` and ``request_line`` build their bytes with one allocation.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
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
