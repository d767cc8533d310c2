# cython: language_level=3
"""WebSocket frame codec, RFC 6455 section 5: bytes in, frames out, and back.

Compiled twin of ``websocket_codec_py.py``; both must behave identically, down to the
reason strings of their errors (``tests/test_websocket_codec.py`` cross-checks them on
random input). The twin's docstrings describe the contract; the comments here explain
what the C version does differently to be fast.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from .frame_error import FrameError

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

# Lengths with bit 63 set are refused (5.2) before the limit is compared, so a limit
# above this is the same as this, and it fits the uint64_t field.
cdef uint64_t _LIMIT_CAP = 0x7FFFFFFFFFFFFFFF


cdef inline bint _valid_opcode(int opcode) noexcept nogil:
    return 0 <= opcode <= 2 or 8 <= opcode <= 10


cdef inline void _xor_mask(const unsigned char* src, unsigned char* dst, Py_ssize_t n,
                           const unsigned char* key) noexcept nogil:
    # 5.3: byte i is XORed with key[i % 4]. Eight bytes at a time with the key doubled
    # into a uint64_t; memcpy keeps the unaligned loads legal and compiles to one mov.
    # Both halves of k64 hold the key in memory order, so byte order does not matter.
    cdef uint32_t k32
    cdef uint64_t k64, word
    cdef Py_ssize_t i = 0
    cdef Py_ssize_t n8 = n & ~(<Py_ssize_t>7)
    memcpy(&k32, key, 4)
    k64 = (<uint64_t>k32 << 32) | k32
    while i < n8:
        memcpy(&word, src + i, 8)
        word ^= k64
        memcpy(dst + i, &word, 8)
        i += 8
    # n8 is a multiple of 4, so the tail starts back at key[0].
    while i < n:
        dst[i] = src[i] ^ key[i & 3]
        i += 1


cdef class FrameParser:
    """Split a byte stream into ``(fin, opcode, payload)`` frames, unmasking payloads.

    ``expect_masked`` is True on the server, which reads client frames, and False on
    the client (5.1). A declared payload over ``max_payload`` bytes fails with 1009.

    After ``feed`` raises FrameError the parser is finished: the buffer is dropped, and
    every later call raises the same error again (7.1.7: the connection must be failed).
    The frames completed earlier in that same call come with the error, as its
    ``frames``: the connection answers them before it closes.
    """

    # Bytes of an incomplete frame, owned and grown by realloc; empty between frames.
    cdef unsigned char* _buf
    cdef Py_ssize_t _len
    cdef Py_ssize_t _cap
    cdef unsigned char _mask_bit
    cdef uint64_t _max_payload
    cdef object _error
    # Set while _parse reads _buf. Allocating a payload can run a finalizer; should that
    # call feed on this parser, _append could realloc _buf under _parse's pointer, so
    # the nested call is refused instead (the pure twin has no pointer to protect).
    cdef bint _parsing

    def __cinit__(self):
        self._buf = NULL
        self._len = 0
        self._cap = 0
        self._error = None
        self._parsing = False

    def __dealloc__(self):
        PyMem_Free(self._buf)

    def __init__(self, *, bint expect_masked, max_payload):
        if max_payload < 0:
            raise ValueError("max_payload must not be negative")
        self._mask_bit = 0x80 if expect_masked else 0
        self._max_payload = min(max_payload, _LIMIT_CAP)
        self._len = 0
        self._error = None

    @property
    def buffered(self):
        return self._len

    def feed(self, data):
        cdef Py_buffer view
        cdef list frames = []
        cdef Py_ssize_t used
        if self._error is not None:
            raise FrameError(self._error.code, self._error.reason)
        if self._parsing:
            raise RuntimeError("FrameParser.feed is not reentrant")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._parsing = True
        try:
            if self._len == 0:
                # Nothing pending, the usual case: parse in place from the caller's
                # buffer and copy only an incomplete tail.
                used = self._parse(<const unsigned char*>view.buf, view.len, frames)
                if used < view.len:
                    self._append(<const unsigned char*>view.buf + used, view.len - used)
            else:
                self._append(<const unsigned char*>view.buf, view.len)
                used = self._parse(self._buf, self._len, frames)
                if used:
                    # Only an incomplete frame is left, so this moves at most one frame.
                    self._len -= used
                    memmove(self._buf, self._buf + used, self._len)
        except FrameError as exc:
            raise FrameError(exc.code, exc.reason, frames) from None
        finally:
            self._parsing = False
            PyBuffer_Release(&view)
        return frames

    cdef int _append(self, const unsigned char* src, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef unsigned char* grown
        if self._len + n > self._cap:
            cap = max(self._len + n, 2 * self._cap, 256)
            grown = <unsigned char*>PyMem_Realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._cap = cap
        memcpy(self._buf + self._len, src, n)
        self._len += n
        return 0

    cdef Py_ssize_t _parse(self, const unsigned char* p, Py_ssize_t end,
                           list frames) except -1:
        # Returns how many bytes the complete frames took; the same checks, in the same
        # order, as the twin, whose comments cite the section behind each one.
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t start, avail, i
        cdef unsigned char b0, b1
        cdef int opcode
        cdef uint64_t length
        cdef unsigned char mask_bit = self._mask_bit
        cdef uint64_t max_payload = self._max_payload
        cdef bytes payload
        cdef unsigned char* out
        while end - pos >= 2:
            b0 = p[pos]
            b1 = p[pos + 1]
            if b0 & 0x70:
                self._fail(1002, "reserved bits set")
            opcode = b0 & 0x0F
            if opcode > 2:
                if not _valid_opcode(opcode):
                    self._fail(1002, f"reserved opcode {opcode}")
                if not b0 & 0x80:
                    self._fail(1002, "fragmented control frame")
                if (b1 & 0x7F) > 125:
                    self._fail(1002, "control frame payload longer than 125 bytes")
            if (b1 & 0x80) != mask_bit:
                self._fail(1002, "expected a masked frame" if mask_bit
                           else "unexpected masked frame")
            avail = end - pos
            length = b1 & 0x7F
            if length == 126:
                if avail < 4:
                    break
                length = (<uint64_t>p[pos + 2] << 8) | p[pos + 3]
                start = 4
            elif length == 127:
                if avail < 10:
                    break
                length = 0
                for i in range(2, 10):
                    length = (length << 8) | p[pos + i]
                if length >> 63:
                    self._fail(1002, "payload length has its most significant bit set")
                start = 10
            else:
                start = 2
            if length > max_payload:
                self._fail(1009, f"payload of {length} bytes exceeds the limit of {max_payload}")
            if mask_bit:
                start += 4
            # Compared without adding to pos: length may be near 2**63 when the limit is.
            if avail < start or <uint64_t>(avail - start) < length:
                break
            start += pos
            # One allocation per payload, written in place: no slice, no second copy.
            payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
            out = <unsigned char*>PyBytes_AS_STRING(payload)
            if mask_bit:
                _xor_mask(p + start, out, <Py_ssize_t>length, p + start - 4)
            else:
                memcpy(out, p + start, <size_t>length)
            frames.append(((b0 & 0x80) != 0, opcode, payload))
            pos = start + <Py_ssize_t>length
        return pos

    cdef int _fail(self, int code, str reason) except -1:
        self._error = FrameError(code, reason)
        self._len = 0
        raise self._error


cdef inline int _get_key(object mask, unsigned char* key) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(mask, &view, PyBUF_SIMPLE)
    try:
        if view.len != 4:
            raise ValueError("mask must be 4 bytes")
        memcpy(key, view.buf, 4)
    finally:
        PyBuffer_Release(&view)
    return 0


def encode_frame(int opcode, payload, bint fin=True, mask=None):
    """Serialize one frame, masked with ``mask`` (client side) or unmasked (server side)."""
    cdef Py_buffer view
    cdef unsigned char key[4]
    cdef bint masked = mask is not None
    cdef Py_ssize_t n, head, i
    cdef bytes out
    cdef unsigned char* o
    cdef unsigned char b1
    if not _valid_opcode(opcode):
        raise ValueError(f"reserved opcode {opcode}")
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        if opcode > 2 and (not fin or n > 125):
            raise ValueError("control frames must be final and carry at most 125 bytes")
        if masked:
            _get_key(mask, key)
        head = 2 if n < 126 else 4 if n < 0x10000 else 10
        # One allocation for the whole frame: header, key and payload written in place.
        out = PyBytes_FromStringAndSize(NULL, head + (4 if masked else 0) + n)
        o = <unsigned char*>PyBytes_AS_STRING(out)
        o[0] = (0x80 | opcode) if fin else opcode
        b1 = 0x80 if masked else 0
        if head == 2:
            o[1] = b1 | <unsigned char>n
        elif head == 4:
            o[1] = b1 | 126
            o[2] = <unsigned char>(n >> 8)
            o[3] = <unsigned char>n
        else:
            o[1] = b1 | 127
            for i in range(8):
                o[2 + i] = <unsigned char>((<uint64_t>n) >> (56 - 8 * i))
        if masked:
            memcpy(o + head, key, 4)
            _xor_mask(<const unsigned char*>view.buf, o + head + 4, n, key)
        else:
            memcpy(o + head, view.buf, n)
    finally:
        PyBuffer_Release(&view)
    return out


def apply_mask(data, mask):
    """XOR ``data`` with the 4-byte ``mask`` (5.3); applying it twice gives ``data`` back."""
    cdef Py_buffer view
    cdef unsigned char key[4]
    cdef bytes out
    _get_key(mask, key)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len)
        _xor_mask(<const unsigned char*>view.buf, <unsigned char*>PyBytes_AS_STRING(out),
                  view.len, key)
    finally:
        PyBuffer_Release(&view)
    return out
