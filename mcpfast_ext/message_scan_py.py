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
