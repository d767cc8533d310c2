"""JSON-RPC 2.0 envelopes as msgspec Structs, and the errors the gateway answers with.

The envelope keeps ``params``, ``result`` and ``error`` as ``msgspec.Raw`` so that the
gateway forwards bytes it does not need to read without decoding them. ``id`` is
``UNSET`` when absent (a notification) and ``None`` when the sender wrote ``null``:
JSON-RPC distinguishes the two, and so must we.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, Raw, UnsetType

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

RequestId = int | str


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
_encoder = msgspec.json.Encoder()
encode = _encoder.encode


class MessageError(Exception):
    """A message that cannot be processed; becomes a JSON-RPC error to its sender."""

    def __init__(self, code: int, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def decode(data: bytes | memoryview) -> Envelope:
    """Decode one JSON-RPC message, raising MessageError with the right code.

    Malformed JSON is -32700; valid JSON of the wrong shape (an array, a missing or
    wrong ``jsonrpc``, a non-string method, a float id) is -32600.
    """
    try:
        env = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise MessageError(INVALID_REQUEST, _shape_error(data, exc)) from None
    except msgspec.DecodeError as exc:
        raise MessageError(PARSE_ERROR, f"Parse error: {exc}") from None
    if env.jsonrpc != "2.0":
        raise MessageError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"',
                           _safe_id(env.id))
    if env.method is UNSET:
        if env.id is UNSET or (env.result is UNSET and env.error is UNSET):
            raise MessageError(INVALID_REQUEST,
                               "Invalid Request: not a request, notification or response",
                               _safe_id(env.id))
        if env.result is not UNSET and env.error is not UNSET:
            raise MessageError(INVALID_REQUEST,
                               "Invalid Request: a response has either result or error",
                               _safe_id(env.id))
    elif env.id is None:
        # MCP (basic/index "Requests"): the ID MUST NOT be null.
        raise MessageError(INVALID_REQUEST, "Invalid Request: request id must not be null")
    return env


def _safe_id(request_id: object) -> RequestId | None:
    return request_id if isinstance(request_id, (int, str)) else None


def _shape_error(data: bytes | memoryview, exc: msgspec.ValidationError) -> str:
    if bytes(data).lstrip().startswith(b"["):
        return "Invalid Request: JSON-RPC batches are not supported by this protocol version"
    return f"Invalid Request: {exc}"


def error_response(request_id: RequestId | None, code: int, message: str,
                   data: Any = UNSET) -> bytes:
    """A complete JSON-RPC error response."""
    return encode({"jsonrpc": "2.0", "id": request_id,
                   "error": ErrorObject(code, message, data)})


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


def reencode(env: Envelope) -> bytes:
    """Encode an envelope, with its Raw parts copied through byte for byte."""
    return _encoder.encode(env)
