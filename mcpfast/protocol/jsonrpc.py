"""JSON-RPC 2.0 envelopes as msgspec Structs, and the errors the gateway answers with.

The envelope keeps ``params``, ``result`` and ``error`` as ``msgspec.Raw`` so that the
gateway forwards bytes it does not need to read without decoding them. ``id`` is
``UNSET`` when absent (a notification) and ``None`` when the sender wrote ``null``:
JSON-RPC distinguishes the two, and so must we.

Because Raw bytes are forwarded unread, ``decode`` checks what msgspec would not: that
the whole message is UTF-8 (RFC 8259 8.1; a WebSocket text frame must be too) and how
deeply it nests (msgspec recurses, and so do most peers' parsers). Both checks cost a
pass in C over the message, and a real scan only for the rare message that needs one.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

from mcpfast_ext import message_scan

_survey = message_scan.survey
_NEWLINE = message_scan.NEWLINE
_NOT_ASCII = message_scan.NOT_ASCII
_BRACKETS_SHIFT = message_scan.BRACKETS_SHIFT

# JSON-RPC 2.0 section 5.1
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000 to -32099). -32001 and -32002 keep the
# meanings the MCP SDKs give them (request timeout, resource not found).
UPSTREAM_UNAVAILABLE = -32000
REQUEST_TIMEOUT = -32001
RESOURCE_NOT_FOUND = -32002
GATEWAY_SHUTTING_DOWN = -32003
RATE_LIMITED = -32029
"""A rate limit refused the request; ``data.retryAfterSeconds`` says when to retry (the
code and member other MCP gateways use)."""

RequestId = int | str

DEFAULT_MAX_DEPTH = 64
"""Nesting levels a client message may have (``listen.max_json_depth``); the envelope
object is the first."""


class Envelope(msgspec.Struct, gc=False, omit_defaults=True):
    """Any JSON-RPC message: request, notification, response or error response."""

    jsonrpc: str | UnsetType = UNSET
    id: int | str | UnsetType | None = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: Raw | UnsetType = UNSET


class ErrorObject(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: Any = UNSET


_decoder = msgspec.json.Decoder(Envelope)
_any_decoder = msgspec.json.Decoder()
# Reads any JSON, a number beyond a float's range included (RFC 8259 6 allows it; msgspec
# would stop at it before reading the rest).
_syntax = msgspec.json.Decoder(float_hook=lambda text: None)
_encoder = msgspec.json.Encoder()
encode = _encoder.encode


class MessageError(Exception):
    """A message that cannot be processed; becomes a JSON-RPC error to its sender.

    ``request_id`` is the id to answer with (None: ``null``). ``response_id`` is set
    instead when the message was recognisably a response, which is never answered: the
    receiver may settle the request it answered with an error.
    """

    def __init__(self, code: int, message: str, request_id: RequestId | None = None,
                 response_id: RequestId | None = None, batch: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.response_id = response_id
        self.batch = batch
        """The message is a JSON array: a JSON-RPC batch (section 6), whose items the
        receiver may take one by one where batches are allowed (``split_batch``)."""


def decode(data: bytes, max_depth: int | None = DEFAULT_MAX_DEPTH) -> Envelope:
    """Decode one JSON-RPC message, raising MessageError with the right code.

    Malformed JSON is -32700; valid JSON of the wrong shape (an array, a missing or
    wrong ``jsonrpc``, a non-string method, a float id) is -32600. Invalid UTF-8, and
    nesting deeper than ``max_depth``, are -32700 too: the message is not read, so it
    cannot be called a valid request. Their error carries the id when the members
    around the nested part name it (``_head``).

    ``max_depth`` is for a client's message; None, for an upstream's, leaves the depth
    to the parser's recursion guard (results are forwarded unread). A client's raw
    newlines, which JSON allows between tokens, also become tabs, which it allows there
    too and nowhere else: parts of the message go on unread to stdio upstreams, whose
    messages must not contain a newline (MCP stdio transport).
    """
    if max_depth is not None:
        # One pass (message_scan.survey) finds what needs a closer look: a message nests
        # at most as deep as it has opening brackets, so only those with more get the
        # exact scan.
        survey = _survey(data)
        if survey & _NEWLINE:
            data = data.replace(b"\n", b"\t")
        if survey >> _BRACKETS_SHIFT > max_depth and _too_deep(data, max_depth) and not (
                data.lstrip().startswith(b"[") and not _too_deep(data, max_depth + 1)):
            # A batch's array is a level of its own: its items are checked one by one.
            raise _unread(data, f"Parse error: JSON nested deeper than {max_depth} levels")
        not_ascii = survey & _NOT_ASCII
    else:
        not_ascii = not data.isascii()
    if not_ascii:
        try:
            data.decode()
        except UnicodeDecodeError as exc:
            raise _unread(data, f"Parse error: invalid UTF-8 at byte {exc.start}") from None
    try:
        env = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        # msgspec stops at the first value of the wrong type, before it has read the
        # rest: only JSON that parses whole is an Invalid Request (JSON-RPC 2.0 5.1).
        try:
            whole = _syntax.decode(data)
        except msgspec.DecodeError as parse_exc:
            raise _parse_error(data, parse_exc) from None
        except RecursionError:
            raise _unread(data, "Parse error: JSON nested too deeply") from None
        if data.lstrip().startswith(b"["):
            raise MessageError(INVALID_REQUEST, BATCH_REFUSED, batch=True) from None
        # The id, where it is one (a method of the wrong type, say): the error names it.
        request_id = whole.get("id") if isinstance(whole, dict) else None
        raise MessageError(INVALID_REQUEST, f"Invalid Request: {exc}",
                           None if isinstance(request_id, bool) else _safe_id(request_id)
                           ) from None
    except msgspec.DecodeError as exc:
        raise _parse_error(data, exc) from None
    except RecursionError:
        # Only reachable with max_depth None, or deeper than the recursion limit allows.
        raise _unread(data, "Parse error: JSON nested too deeply") from None
    if env.jsonrpc != "2.0":
        raise MessageError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"',
                           *_ids(env))
    if env.method is UNSET:
        if env.id is UNSET or (env.result is UNSET and env.error is UNSET):
            raise MessageError(INVALID_REQUEST,
                               "Invalid Request: not a request, notification or response",
                               _safe_id(env.id))
        if env.result is not UNSET and env.error is not UNSET:
            raise MessageError(INVALID_REQUEST,
                               "Invalid Request: a response has either result or error",
                               None, _safe_id(env.id))
        if env.error is not UNSET and not _error_object(env.error):
            raise MessageError(INVALID_REQUEST,
                               "Invalid Request: a response's error is an object with an "
                               "integer code and a string message", None, _safe_id(env.id))
    elif env.result is not UNSET or env.error is not UNSET:
        # Neither a request (which has no result or error) nor a response (which has no
        # method); what it answers, if anything, is its id's (JSON-RPC 2.0 sections 4, 5).
        raise MessageError(INVALID_REQUEST,
                           "Invalid Request: a message with a method has no result or error",
                           None, _safe_id(env.id) if env.id is not UNSET else None)
    elif env.id is None:
        # MCP (basic/index "Requests"): the ID MUST NOT be null.
        raise MessageError(INVALID_REQUEST, "Invalid Request: request id must not be null")
    return env


class _ErrorShape(msgspec.Struct, gc=False):
    """What an Error object must have; its ``data`` is the sender's (skipped unread)."""

    code: int
    message: str


_error_decoder = msgspec.json.Decoder(_ErrorShape)


def _error_object(error: Raw) -> bool:
    """Whether a response's ``error`` is an Error object (JSON-RPC 2.0 5.1)."""
    try:
        _error_decoder.decode(error)
    except msgspec.DecodeError:
        return False
    return True


def _parse_error(data: bytes, exc: msgspec.DecodeError) -> MessageError:
    """-32700 for JSON msgspec could not parse. A string escaping half of a UTF-16
    surrogate pair is named as such (msgspec calls a lone high surrogate "truncated"),
    with the id around it: the rest of the message may be well formed."""
    if b"\\u" in data:
        lone = lone_surrogate(data)
        if lone is not None:
            return _unread(data, f"Parse error: a lone UTF-16 surrogate "
                                 f"({data[lone:lone + 6].decode()}) at byte {lone}: a JSON "
                                 "string must be valid Unicode (RFC 8259 8.2)")
    return MessageError(PARSE_ERROR, f"Parse error: {exc}")


_ESCAPE = re.compile(rb"\\(?:u([dD][0-9a-fA-F]{3})|.)", re.S)


def lone_surrogate(data: bytes) -> int | None:
    """Where the first escape of half a surrogate pair begins (a high one not followed
    by a low one, or a low one alone), or None. Escapes are taken left to right, so an
    escaped backslash before ``u`` is not read as one."""
    high = -1
    for escape in _ESCAPE.finditer(data):
        unit = escape[1]
        if high >= 0:
            if unit is None or unit[1] not in b"cdefCDEF" or escape.start() != high + 6:
                return high
            high = -1
            continue
        if unit is not None:
            if unit[1] in b"89abAB":
                high = escape.start()
            elif unit[1] in b"cdefCDEF":
                return escape.start()
    return high if high >= 0 else None


def _ids(env: Envelope) -> tuple[RequestId | None, RequestId | None]:
    """The ``request_id`` and ``response_id`` of an invalid message's error. A response
    (no method; a result or an error) is never answered (JSON-RPC 2.0 section 5): its id
    is one of the receiver's own requests, which an error carrying it would settle on
    the sender's side; it is named as ``response_id`` instead."""
    if env.method is UNSET and env.id is not UNSET and (
            env.result is not UNSET or env.error is not UNSET):
        return None, _safe_id(env.id)
    return _safe_id(env.id), None


def _safe_id(request_id: object) -> RequestId | None:
    return request_id if isinstance(request_id, (int, str)) else None


BATCH_REFUSED = ("Invalid Request: JSON-RPC batches are taken only on a session at MCP "
                 "2025-03-26 or 2024-11-05 (MCP has had none since 2025-06-18); send one "
                 "message at a time")
_batch_items = msgspec.json.Decoder(list[Raw])


def split_batch(data: bytes) -> list[bytes]:
    """The items of a batch (a message ``decode`` refused with ``batch`` set: JSON that
    parses, an array), each as its bytes."""
    return [bytes(item) for item in _batch_items.decode(data)]


# -- messages that are not read: too deep, or not UTF-8 ----------------------------------

_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb'(?:' + _STRING + rb'|-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null)'
_HEAD_MEMBER = re.compile(rb'\s*(' + _STRING + rb')\s*:\s*(' + _SCALAR + rb'|[\[{])\s*,?', re.S)
_TAIL_MEMBERS = re.compile(rb',((?:\s*' + _STRING + rb'\s*:\s*' + _SCALAR + rb'\s*,)*\s*'
                           + _STRING + rb'\s*:\s*' + _SCALAR + rb')\s*\}\s*\Z', re.S)
_TAIL_MEMBER = re.compile(rb'\s*(' + _STRING + rb')\s*:\s*(' + _SCALAR + rb')\s*,?', re.S)
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
HEAD_MEMBERS = 16
"""Outer members read from the start of a message that is not read whole: a bound on the
work a hostile message can cause."""
_TAIL_WINDOW = 512
"""Bytes at the end of a message searched for its last members: enough for ``jsonrpc``
and ``id``, and a bound on the work a hostile message can cause."""
_ID_TOKEN = re.compile(rb'-?[0-9]{1,18}|"[^"\\]{0,200}"')


def _too_deep(data: bytes, max_depth: int) -> bool:
    """Whether ``data`` nests deeper than ``max_depth``, brackets in strings aside.

    Without its escapes, a message's quotes delimit its strings. Kept to its quotes and
    brackets, two adjacent quotes enclose no bracket and can go; in what is left, every
    other piece between quotes is structure. Each pass then deletes the innermost ``[]``
    pairs, one level. All of it runs in C. A message that does not balance counts its
    unclosed brackets as levels, as a parser reading it would.
    """
    if b"\\" in data:
        if b"\\\\" in data:
            data = data.replace(b"\\\\", b"")
        if b'\\"' in data:
            data = data.replace(b'\\"', b"")
    marks = data.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    brackets = marks.translate(_ONE_BRACKET)
    for depth in range(max_depth + 1):
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            return depth + inner.count(b"[") > max_depth
        brackets = inner
    return True


def _unread(data: bytes, message: str) -> MessageError:
    """A -32700 error for a message that was not read, with the id its outer members
    give, if any."""
    request_id, is_response = _head(data)
    if is_response:
        return MessageError(PARSE_ERROR, message, None, request_id)
    return MessageError(PARSE_ERROR, message, request_id)


def _head(data: bytes) -> tuple[RequestId | None, bool]:
    """The id of a message that is not read whole, and whether it is a response.

    Read only from the object's outer members written before its first nested value (the
    first ``HEAD_MEMBERS`` of them at most), or after its last (encoders write ``jsonrpc``
    and ``id`` first, or last as the TypeScript SDK does), each a plain string, number,
    boolean or null. A message is a response when it has ``result`` or ``error`` and no
    ``method``.
    """
    members: dict[bytes, bytes] = {}
    match = re.match(rb"\s*\{", data)
    if match is None:
        return None, False
    pos = match.end()
    for _ in range(HEAD_MEMBERS):
        member = _HEAD_MEMBER.match(data, pos)
        if member is None:
            break
        key, value = member[1], member[2]
        if value in (b"{", b"["):
            members.setdefault(key, b"{")
            break
        members.setdefault(key, value)
        pos = member.end()
    tail = _TAIL_MEMBERS.search(data, max(pos, len(data) - _TAIL_WINDOW))
    if tail is not None:
        for member in _TAIL_MEMBER.finditer(tail[1]):
            members.setdefault(member[1], member[2])
    is_response = b'"method"' not in members and (
        b'"result"' in members or b'"error"' in members)
    token = members.get(b'"id"')
    if token is None or not _ID_TOKEN.fullmatch(token):
        return None, is_response
    try:
        request_id = _any_decoder.decode(token)
    except msgspec.DecodeError:
        return None, is_response
    return request_id, is_response


def error_response(request_id: RequestId | None, code: int, message: str,
                   data: Any = UNSET) -> bytes:
    """A complete JSON-RPC error response."""
    return encode({"jsonrpc": "2.0", "id": request_id,
                   "error": ErrorObject(code, message, data)})


def error_envelope(request_id: RequestId | None, code: int, message: str) -> Envelope:
    """An error response as an envelope, for the path a response read off the wire
    takes (its ``error`` encoded, as a received one is raw)."""
    return Envelope(jsonrpc="2.0", id=request_id,
                    error=Raw(encode(ErrorObject(code, message))))


def result_response(request_id: RequestId, result: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def request(request_id: RequestId, method: str, params: Any = UNSET) -> bytes:
    if params is UNSET:
        return encode({"jsonrpc": "2.0", "id": request_id, "method": method})
    return encode({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def notification(method: str, params: Any = UNSET) -> bytes:
    if params is UNSET:
        return encode({"jsonrpc": "2.0", "method": method})
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


request_line = message_scan.request_line
"""A request for an upstream in one piece (``message_scan.request_line``): the bytes
``reencode`` writes for its envelope, then the transport's delimiter; None for a method
that needs an escape, which ``reencode`` takes instead."""


def reencode(env: Envelope) -> bytes:
    """Encode an envelope, with its Raw parts copied through byte for byte."""
    return _encoder.encode(env)
