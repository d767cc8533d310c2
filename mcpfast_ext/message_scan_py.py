"""What the gateway reads of a JSON-RPC message before (or instead of) parsing it.

Pure-Python twin of ``message_scan.pyx``; both return the same values for every input
(``tests/ext/test_message_scan.py`` compares them on random messages).

``survey`` is the one pass over a client's message that decides which of the rare
checks it needs: a raw newline (replaced before it can reach a stdio upstream), more
brackets than the depth limit (then the exact count runs), bytes beyond ASCII (then
UTF-8 is validated). ``splice_response`` writes an upstream's response for the client
by replacing the id at its head, without reading or re-encoding the rest;
``request_line`` writes a client's request for an upstream, its params as they came.
"""

from __future__ import annotations

import re

import msgspec
from msgspec import UNSET, UnsetType

NEWLINE = 1
"""``survey``: the message holds a raw newline."""
NOT_ASCII = 2
"""``survey``: the message holds a byte beyond ASCII."""
BRACKETS_SHIFT = 2
"""``survey``: its count of ``{`` and ``[`` bytes (in strings too) above this bit."""

_U64 = 2**64 - 1
_I64 = 2**63
RESPONSE_HEAD = b'{"jsonrpc":"2.0","id":'
"""How a response written by msgspec, the Python SDK, and most servers begins."""
_RESULT = b'"result":'
_ERROR = b'"error":'


def survey(data: bytes) -> int:
    """``NEWLINE`` | ``NOT_ASCII`` | the bracket count << ``BRACKETS_SHIFT``."""
    brackets = data.count(b"{") + data.count(b"[")
    return (brackets << BRACKETS_SHIFT) | (NEWLINE if b"\n" in data else 0) \
        | (0 if data.isascii() else NOT_ASCII)


def splice_response(line: bytes, upstream_id: object, client_id: object, error: bool,
                    value_size: int) -> bytes | None:
    """``line``, a response the parser read whole with the id ``upstream_id`` and a
    ``result`` (``error`` False) or ``error`` member of ``value_size`` bytes, with the
    client's integer id ``client_id`` in its place; None when it cannot be spliced, and
    the caller re-encodes it instead.

    The line must be exactly ``{"jsonrpc":"2.0","id":`` ``upstream_id`` ``,"result":``
    (or ``"error":``), the value, and ``}``: sizes that leave room for no other member,
    so no second ``id`` (which a parser would read instead of the first) can hide in it.
    Anything else is declined: a string id, an id beyond 64 bits, another order, spaces.
    """
    if type(client_id) is int and type(upstream_id) is int and line[-1:] == b"}":
        head = b'{"jsonrpc":"2.0","id":%d,' % upstream_id
        member = _ERROR if error else _RESULT
        if len(line) == len(head) + len(member) + value_size + 1 \
                and line.startswith(head) and line.startswith(member, len(head)) \
                and 0 <= upstream_id <= _U64 and -_I64 <= client_id < _I64:
            return b'{"jsonrpc":"2.0","id":%d,' % client_id + line[len(head):]
    return None


class _Request(msgspec.Struct, omit_defaults=True, gc=False):
    jsonrpc: str
    id: int
    method: str
    params: msgspec.Raw | UnsetType = UNSET


_encode = msgspec.json.Encoder().encode
_plain_methods: dict[str, bool] = {}
"""Whether each method seen needs no escape in JSON: the gateway forwards a few
methods, all its own names; at most 256 are kept."""


def request_line(upstream_id: int, method: str, params: msgspec.Raw | bytes | UnsetType,
                 delimiter: bytes) -> bytes | None:
    """The request an upstream is sent: ``{"jsonrpc":"2.0","id":`` ``upstream_id``
    (0 to 2**64 - 1) ``,"method":`` ``method`` ``,"params":`` ``params`` ``}``, then
    ``delimiter``, the bytes the JSON encoder writes for that envelope. ``params``
    (``Raw`` or ``bytes``, JSON already read) goes in as it is; ``UNSET`` leaves the
    member out. None when ``method`` would need an escape (a quote, a backslash, a
    character outside printable ASCII): the caller encodes the envelope itself."""
    plain = _plain_methods.get(method)
    if plain is None:
        plain = method.isascii() and method.isprintable() and '"' not in method \
            and "\\" not in method
        if len(_plain_methods) < 256:
            _plain_methods[method] = plain
    if not plain:
        return None
    data = _encode(_Request("2.0", upstream_id, method, msgspec.Raw(params)
                            if isinstance(params, bytes) else params))
    return data + delimiter if delimiter else data


def may_repeat_a_name(params: msgspec.Raw | bytes | UnsetType) -> bool:
    """Whether ``params`` may hold a member the gateway routes or checks by (``name``,
    ``uri``, ``ref``) twice, or spelled with escapes, where this cannot tell: a
    ``\\u`` anywhere, or ``"name"``, ``"uri"`` or ``"ref"`` more than once (as
    ``bytes.count`` counts). JSON leaves repeated names to the parser (RFC 8259 4): the
    gateway reads the last, an upstream may read the first, and would run what a
    policy refused. Such params go on as the gateway read them, encoded again, rather
    than as they came. False for ``UNSET``."""
    if params is UNSET:
        return False
    data = bytes(params)
    return b"\\u" in data or data.count(b'"name"') > 1 or data.count(b'"uri"') > 1 \
        or data.count(b'"ref"') > 1


# -- read_call ----------------------------------------------------------------------------
_ESCAPES = frozenset(b'"\\/bfnrt')
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")
_DECLINED_PARAMS = frozenset((b"uri", b"ref", b"cursor", b"_meta"))
_MEMBERS = {b"jsonrpc": 1, b"id": 2, b"method": 4, b"params": 8}


class _DeclinedError(Exception):
    """What ``read_call`` does not read: the caller parses the message instead."""


def _ws(p: bytes, i: int) -> int:
    n = len(p)
    while i < n and p[i] in (0x20, 0x09):
        i += 1
    return i


def _utf8(p: bytes, i: int) -> int:
    c = p[i]
    low, high = 0x80, 0xBF
    if 0xC2 <= c <= 0xDF:
        need = 1
    elif c == 0xE0:
        need, low = 2, 0xA0
    elif 0xE1 <= c <= 0xEC or c in (0xEE, 0xEF):
        need = 2
    elif c == 0xED:
        need, high = 2, 0x9F
    elif c == 0xF0:
        need, low = 3, 0x90
    elif 0xF1 <= c <= 0xF3:
        need = 3
    elif c == 0xF4:
        need, high = 3, 0x8F
    else:
        raise _DeclinedError
    if i + need >= len(p) or not low <= p[i + 1] <= high \
            or not all(0x80 <= p[i + k] <= 0xBF for k in range(2, need + 1)):
        raise _DeclinedError
    return i + need + 1


def _string(p: bytes, i: int) -> tuple[int, bool]:
    """After the string whose opening quote is at ``i``, and whether it has an escape."""
    n = len(p)
    escaped = False
    i += 1
    while i < n:
        c = p[i]
        if c == 0x22:
            return i + 1, escaped
        if c == 0x5C:
            escaped = True
            if i + 1 >= n:
                raise _DeclinedError
            c = p[i + 1]
            if c == 0x75:
                digits = p[i + 2:i + 6]
                if i + 5 >= n or len(digits) != 4 or not all(d in _HEX for d in digits) \
                        or 0xD800 <= int(digits, 16) <= 0xDFFF:
                    raise _DeclinedError
                i += 6
            elif c in _ESCAPES:
                i += 2
            else:
                raise _DeclinedError
        elif c >= 0x80:
            i = _utf8(p, i)
        elif c < 0x20:
            raise _DeclinedError
        else:
            i += 1
    raise _DeclinedError


def _digits_at(p: bytes, i: int) -> int:
    while i < len(p) and p[i] in _DIGITS:
        i += 1
    return i


def _number(p: bytes, i: int) -> int:
    n = len(p)
    if p[i] == 0x2D:
        i += 1
        if i >= n:
            raise _DeclinedError
    if p[i] == 0x30:
        i += 1
    elif 49 <= p[i] <= 57:
        i = _digits_at(p, i + 1)
    else:
        raise _DeclinedError
    if i < n and p[i] == 0x2E:
        start = i + 1
        i = _digits_at(p, start)
        if i == start:
            raise _DeclinedError
    if i < n and p[i] in (0x65, 0x45):
        i += 1
        if i < n and p[i] in (0x2B, 0x2D):
            i += 1
        start = i
        i = _digits_at(p, start)
        if i == start:
            raise _DeclinedError
    return i


def _value(p: bytes, i: int, depth: int, max_depth: int) -> int:
    """After the JSON value at ``i`` (no space before it), inside a container at level
    ``depth``; raises for what is no value, or nests deeper than ``max_depth``. A loop
    with a stack of the containers it is in, as deep as a message may nest."""
    closers: list[int] = []
    while True:
        c = p[i]
        if c in (0x7B, 0x5B):
            if depth + len(closers) + 1 > max_depth:
                raise _DeclinedError
            close = 0x7D if c == 0x7B else 0x5D
            i = _ws(p, i + 1)
            if i < len(p) and p[i] == close:
                i += 1  # empty: a whole value
            else:
                closers.append(close)
                if close == 0x7D:
                    i = _key_and_colon(p, i)[0]
                continue  # its first value
        else:
            i = _scalar(p, i, c)
        while closers:  # a value ended: what follows it, in each container it ends
            i, ended = _separator(p, i, closers[-1])
            if not ended:
                if closers[-1] == 0x7D:
                    i = _key_and_colon(p, i)[0]
                break  # the container's next value
            closers.pop()
        else:
            return i


def _scalar(p: bytes, i: int, c: int) -> int:
    if c == 0x22:
        return _string(p, i)[0]
    if c == 0x2D or 48 <= c <= 57:
        return _number(p, i)
    for literal in (b"true", b"false", b"null"):
        if p.startswith(literal, i):
            return i + len(literal)
    raise _DeclinedError


def _separator(p: bytes, i: int, close: int) -> tuple[int, bool]:
    """After a value: the next index and whether the container ended."""
    i = _ws(p, i)
    if i >= len(p):
        raise _DeclinedError
    if p[i] == close:
        return i + 1, True
    if p[i] != 0x2C:
        raise _DeclinedError
    return _ws(p, i + 1), False


def _key_and_colon(p: bytes, i: int) -> tuple[int, bytes, bool]:
    """The member's key at ``i`` (its bytes, whether escaped), and where its value is."""
    if i >= len(p) or p[i] != 0x22:
        raise _DeclinedError
    end, escaped = _string(p, i)
    key = p[i + 1:end - 1]
    i = _ws(p, end)
    if i >= len(p) or p[i] != 0x3A:
        raise _DeclinedError
    i = _ws(p, i + 1)
    if i >= len(p):
        raise _DeclinedError
    return i, key, escaped


def _params(p: bytes, i: int, max_depth: int) -> tuple[int, tuple[int, int]]:
    name: tuple[int, int] | None = None
    i = _ws(p, i + 1)
    if i < len(p) and p[i] == 0x7D:
        raise _DeclinedError  # no name
    while i < len(p):
        i, key, escaped = _key_and_colon(p, i)
        if escaped or key in _DECLINED_PARAMS:
            raise _DeclinedError
        if key == b"name":
            if name is not None or p[i] != 0x22:
                raise _DeclinedError
            end, escaped = _string(p, i)
            if escaped:
                raise _DeclinedError
            name = (i + 1, end - 1)
            i = end
        else:
            i = _value(p, i, 2, max_depth)
        i, ended = _separator(p, i, 0x7D)
        if ended:
            if name is None:
                raise _DeclinedError
            return i, name
    raise _DeclinedError


def read_call(data: bytes, max_depth: int) -> tuple[int | str, str, bytes] | None:
    """A client's ``tools/call`` read in one pass when it is written the common way, as
    (its id, the tool's name, its params' bytes); None otherwise, and the caller parses
    the message instead, for a result, or an error, that this never differs from.

    Read: a JSON object (RFC 8259: UTF-8, strings without raw control characters or
    ``\\u`` escapes of a surrogate), spaces and tabs only between tokens, nesting at
    most ``max_depth`` levels (the object is the first), whose members are exactly
    ``jsonrpc`` (the string ``"2.0"``), ``id`` (an integer of at most 18 digits, or a
    string without escapes), ``method`` (the string ``"tools/call"``) and ``params``
    (an object), each once, in any order, their keys without escapes. Among params'
    members, whose keys have no escapes: ``name`` once, a string without escapes, and
    none of ``uri``, ``ref``, ``cursor`` and ``_meta`` (what routing reads beyond the
    name, and what makes a request modern)."""
    if not isinstance(data, bytes):
        raise TypeError("read_call() takes bytes")
    try:
        return _read_call(data, max_depth)
    except (_DeclinedError, IndexError):
        return None


def _read_call(p: bytes, max_depth: int) -> tuple[int | str, str, bytes] | None:
    if max_depth < 2:
        return None
    i = _ws(p, 0)
    if i >= len(p) or p[i] != 0x7B:
        return None
    i = _ws(p, i + 1)
    seen = 0
    request_id: int | str = 0
    name: tuple[int, int] = (0, 0)
    params = b""
    while i < len(p):
        i, key, escaped = _key_and_colon(p, i)
        member = _MEMBERS.get(key, 0)
        if escaped or not member or seen & member:
            return None
        seen |= member
        if member == 1:
            if not p.startswith(b'"2.0"', i):
                return None
            i += 5
        elif member == 4:
            if not p.startswith(b'"tools/call"', i):
                return None
            i += 12
        elif member == 2:
            if p[i] == 0x22:
                end, escaped = _string(p, i)
                if escaped:
                    return None
                request_id = p[i + 1:end - 1].decode()
                i = end
            else:
                start = i
                if p[i] == 0x2D:
                    i += 1
                if i >= len(p) or p[i] not in _DIGITS or (
                        p[i] == 0x30 and i + 1 < len(p) and p[i + 1] in _DIGITS):
                    return None
                i = _digits_at(p, i)
                if i - start - (p[start] == 0x2D) > 18 or (
                        i < len(p) and p[i] in (0x2E, 0x65, 0x45)):
                    return None
                request_id = int(p[start:i])
        else:
            if p[i] != 0x7B:
                return None
            start = i
            i, name = _params(p, i, max_depth)
            params = p[start:i]
        i, ended = _separator(p, i, 0x7D)
        if ended:
            if _ws(p, i) != len(p) or seen != 15:
                return None
            return request_id, p[name[0]:name[1]].decode(), params
    return None


# -- read_result and respond_as -----------------------------------------------------------
_RESULT_MEMBER = b',"result":'
RESULT_DEPTH = 512
"""Levels a result read by ``read_result`` may nest (the envelope is the first);
deeper, the parser decides."""
_ID_DIGITS = re.compile(rb"0|[1-9][0-9]{0,17}")


def read_result(line: bytes) -> int | None:
    """The id of an upstream's result written the common way: exactly
    ``{"jsonrpc":"2.0","id":`` an integer (0, or up to 18 digits without a leading
    zero) ``,"result":`` a JSON value (as ``read_call`` reads values, nesting at most
    ``RESULT_DEPTH`` levels) ``}``, with nothing before or after. None for anything
    else: the caller parses the message instead."""
    if not isinstance(line, bytes):
        raise TypeError("read_result() takes bytes")
    head = len(RESPONSE_HEAD)
    match = _ID_DIGITS.match(line, head)
    if not line.startswith(RESPONSE_HEAD) or line[-1:] != b"}" or match is None \
            or not line.startswith(_RESULT_MEMBER, match.end()):
        return None
    body = line[:-1]
    try:
        end = _value(body, match.end() + len(_RESULT_MEMBER), 1, RESULT_DEPTH)
    except (_DeclinedError, IndexError):
        return None
    return int(match[0]) if end == len(body) else None


def respond_as(line: bytes, client_id: object) -> bytes | None:
    """``line``, a response that begins ``{"jsonrpc":"2.0","id":`` and an integer's
    digits, then a comma, with ``client_id`` in that integer's place: an int of 64
    bits, or a str of printable ASCII without a quote or a backslash (written as JSON
    writes it). None for any other line or id: the caller encodes the response."""
    if not isinstance(line, bytes):
        raise TypeError("respond_as() takes bytes")
    head = len(RESPONSE_HEAD)
    match = re.compile(rb"[0-9]+,").match(line, head)
    if not line.startswith(RESPONSE_HEAD) or match is None:
        return None
    if type(client_id) is int:
        if not -_I64 <= client_id < _I64:
            return None
        written = b"%d" % client_id
    elif type(client_id) is str and client_id.isascii() and client_id.isprintable() \
            and '"' not in client_id and "\\" not in client_id:
        written = b'"%s"' % client_id.encode()
    else:
        return None
    return RESPONSE_HEAD + written + line[match.end() - 1:]
