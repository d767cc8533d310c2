"""The 2026-07-28 ("modern") request envelope: validation ladder rungs and result shaping.

Sans-I/O: every function takes decoded values (header pairs, a params dict, a result
dict) and either returns or raises ``RequestError``. The HTTP transport runs the rungs
in the order of docs/design/streamable-http-notes.md §2.3::

    check_unrepeated_headers         rung 8    -32020
    read_meta                        rung 9    -32602
    check_headers                    rung 10   -32020 (with rung 8 again; the HTTP
                                               transport, which has checked rung 8,
                                               runs check_routing_headers on its index)
    check_version                    rung 11   -32022
    check_param_headers (tools/call) rung 12   -32020

Header-less transports (WebSocket, unix socket) run only ``read_meta`` and
``check_version``; ``is_modern`` is their era test.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from msgspec import UNSET

from mcpfast.protocol.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RATE_LIMITED,
    notification,
    result_response,
)

MODERN_VERSIONS: tuple[str, ...] = ("2026-07-28",)
LATEST_MODERN = "2026-07-28"
_MODERN_VERSION_SET = frozenset(MODERN_VERSIONS)

# basic/index.mdx "_meta": reserved keys.
MCP_META_PREFIX = "io.modelcontextprotocol/"
META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"

# basic/index.mdx "Error Codes": the sub-range -32020..-32099 reserved for the spec.
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022

# RFC 5424 severities, as LoggingLevel in schema/2026-07-28.
LOG_LEVELS = frozenset(
    {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"})

# transports/streamable-http.mdx: the spec fixes 400 for the three modern codes and for
# missing _meta keys, 404 for -32601. The other 400s follow the Python SDK (notes §6.1).
_HTTP_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    RATE_LIMITED: 429,
}

# Header names as the spec spells them (for messages) and folded (for lookups).
PROTOCOL_VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
PARAM_HEADER_PREFIX = "Mcp-Param-"
_VERSION_KEY = "mcp-protocol-version"
_METHOD_KEY = "mcp-method"
_NAME_KEY = "mcp-name"
_PARAM_PREFIX_KEY = "mcp-param-"
_ROUTING_KEYS = {
    _VERSION_KEY: PROTOCOL_VERSION_HEADER,
    _METHOD_KEY: METHOD_HEADER,
    _NAME_KEY: NAME_HEADER,
}

# Method -> the params member that Mcp-Name mirrors ("Standard Request Headers").
NAME_BEARING_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

_OWS = " \t"
_SENTINEL_OPEN = "=?base64?"
_SENTINEL_CLOSE = "?="
_SENTINEL_MIN_LEN = len(_SENTINEL_OPEN) + len(_SENTINEL_CLOSE)
# "Value Encoding": a header value is visible ASCII, space and tab; anything else is
# an invalid character, which servers MUST reject.
_INVALID_VALUE_CHAR = re.compile(r"[^\t\x20-\x7e]")
# RFC 9110 §5.6.2 token (1*tchar): what an x-mcp-header value must be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A header mirroring an integer: decimal, optionally with a zero fraction ("42.0").
# int() alone would also take "+42", " 42" and "4_2".
_INTEGER_TEXT = re.compile(r"(-?[0-9]+)(?:\.([0-9]+))?")
_HEADER_TYPES = frozenset({"string", "integer", "boolean"})
_SHOWN_CHARS = 80


class RequestError(Exception):
    """A modern request rejected by a ladder rung; becomes a JSON-RPC error with ``id``."""

    def __init__(self, code: int, message: str, data: Any = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @property
    def http_status(self) -> int:
        return http_status_for(self.code)

    def __repr__(self) -> str:
        return f"RequestError({self.code}, {self.message!r})"


def http_status_for(code: int) -> int:
    """The HTTP status for a JSON-RPC error code answered as ``application/json``."""
    return _HTTP_STATUS.get(code, 200)


class ModernMeta(msgspec.Struct):
    """The per-request protocol fields of ``params._meta``."""

    protocol_version: str
    client_capabilities: dict[str, Any]
    client_info: dict[str, Any] | None = None
    log_level: str | None = None
    progress_token: int | str | None = None


def is_modern(params: object) -> bool:
    """The era test for a request on a header-less transport (WebSocket, unix socket)."""
    if not isinstance(params, dict):
        return False
    meta = params.get("_meta")
    return isinstance(meta, dict) and META_PROTOCOL_VERSION in meta


def read_meta(params: object) -> ModernMeta:
    """Rung 9: the required ``_meta`` keys (basic/index.mdx "Per-request protocol fields").

    A request missing any required field is malformed: -32602 (HTTP 400).
    """
    meta = params.get("_meta") if isinstance(params, dict) else None
    if meta is None:
        raise RequestError(
            INVALID_PARAMS,
            f"Invalid params: params._meta is required and must carry "
            f"'{META_PROTOCOL_VERSION}' and '{META_CLIENT_CAPABILITIES}'")
    if not isinstance(meta, dict):
        raise RequestError(INVALID_PARAMS, "Invalid params: params._meta must be an object")
    missing = [key for key in (META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES)
               if key not in meta]
    if missing:
        raise RequestError(INVALID_PARAMS,
                           f"Invalid params: params._meta is missing {_and(missing)}")
    version = meta[META_PROTOCOL_VERSION]
    if not isinstance(version, str):
        raise RequestError(INVALID_PARAMS,
                           f"Invalid params: '{META_PROTOCOL_VERSION}' must be a string")
    capabilities = meta[META_CLIENT_CAPABILITIES]
    if not isinstance(capabilities, dict):
        raise RequestError(INVALID_PARAMS,
                           f"Invalid params: '{META_CLIENT_CAPABILITIES}' must be an object")
    client_info = meta.get(META_CLIENT_INFO)
    if client_info is not None and not isinstance(client_info, dict):
        raise RequestError(INVALID_PARAMS,
                           f"Invalid params: '{META_CLIENT_INFO}' must be an object")
    log_level = meta.get(META_LOG_LEVEL, UNSET)
    if log_level is UNSET:
        log_level = None
    elif not isinstance(log_level, str) or log_level not in LOG_LEVELS:
        raise RequestError(
            INVALID_PARAMS,
            f"Invalid params: '{META_LOG_LEVEL}' must be one of debug, info, notice, "
            f"warning, error, critical, alert, emergency (got {_show(log_level)})")
    token = meta.get("progressToken")
    if isinstance(token, bool) or not isinstance(token, int | str):
        token = None
    return ModernMeta(version, capabilities, client_info, log_level, token)


def unsupported_version(requested: str) -> RequestError:
    """The -32022 error; ``supported`` is the list ``server/discover`` advertises."""
    return RequestError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                        {"supported": list(MODERN_VERSIONS), "requested": requested})


def check_version(meta: ModernMeta) -> None:
    """Rung 11 (versioning.mdx "Protocol Version Negotiation")."""
    if meta.protocol_version not in _MODERN_VERSION_SET:
        raise unsupported_version(meta.protocol_version)


def decode_header_value(value: str) -> str:
    """The value an ``Mcp-Name`` or ``Mcp-Param-*`` header stands for.

    OWS is trimmed (RFC 9110 §5.5). Only a value wrapped exactly in ``=?base64?`` and
    ``?=`` is Base64 (of UTF-8); its payload must be canonical, as the encoder only
    emits canonical form. Raises ValueError for a malformed sentinel or a character
    outside visible ASCII, space and tab ("Value Encoding").
    """
    value = value.strip(_OWS)
    # isascii() and isprintable() are C fast paths; only a tab needs the regex.
    if (not (value.isascii() and value.isprintable())
            and _INVALID_VALUE_CHAR.search(value) is not None):
        raise ValueError("header value contains characters outside visible ASCII")
    if (len(value) < _SENTINEL_MIN_LEN or not value.startswith(_SENTINEL_OPEN)
            or not value.endswith(_SENTINEL_CLOSE)):
        return value
    payload = value[len(_SENTINEL_OPEN):-len(_SENTINEL_CLOSE)]
    try:
        raw = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("malformed base64 in header value") from None
    if base64.b64encode(raw).decode("ascii") != payload:
        raise ValueError("non-canonical base64 in header value")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("base64 header value is not UTF-8") from None


def check_unrepeated_headers(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Rung 8: no routing header appears twice; returns them keyed by folded name.

    ``headers`` are the raw request header lines, since a folded mapping would hide a
    repeat; first-copy and last-copy readers would disagree about a repeated header.
    """
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in _ROUTING_KEYS:
            if key in found:
                raise RequestError(HEADER_MISMATCH,
                                   f"Header mismatch: {_ROUTING_KEYS[key]} header is repeated")
            found[key] = value
    return found


def check_headers(headers: Sequence[tuple[str, str]], method: str,
                  params: dict[str, Any]) -> None:
    """Rungs 8 and 10: the routing headers are present, unrepeated and agree with the
    body ("Server Validation"). Runs before ``check_version`` so that a client whose
    header and body disagree is told so, not that its body version is unsupported.
    """
    check_routing_headers(check_unrepeated_headers(headers), method, params)


def check_routing_headers(found: Mapping[str, str], method: str,
                          params: dict[str, Any]) -> None:
    """Rung 10 alone: ``found`` maps folded header names to their values, none of the
    routing headers repeated (rung 8 passed), such as a request's header index."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    body_version = meta.get(META_PROTOCOL_VERSION) if isinstance(meta, dict) else None
    _compare(PROTOCOL_VERSION_HEADER, found.get(_VERSION_KEY), body_version, decode=False)
    _compare(METHOD_HEADER, found.get(_METHOD_KEY), method, decode=False)
    member = NAME_BEARING_METHODS.get(method)
    if member is not None:
        body_name = params.get(member) if isinstance(params, dict) else None
        _compare(NAME_HEADER, found.get(_NAME_KEY), body_name, decode=True)


def _compare(header: str, raw: str | None, body: object, *, decode: bool) -> None:
    if raw is None:
        raise RequestError(HEADER_MISMATCH, f"Header mismatch: {header} header is required")
    if decode:
        try:
            value = decode_header_value(raw)
        except ValueError as exc:
            raise RequestError(HEADER_MISMATCH,
                               f"Header mismatch: {header} header is malformed ({exc})") from None
    else:
        value = raw.strip(_OWS)
    if value != body:
        raise RequestError(
            HEADER_MISMATCH,
            f"Header mismatch: {header} header value {_show(value)} does not match "
            f"body value {_show(body)}")


def x_mcp_headers(input_schema: object) -> dict[str, tuple[tuple[str, ...], str]]:
    """A tool's valid ``x-mcp-header`` annotations: folded name -> (property path, type).

    Only properties statically reachable through pure ``properties`` chains are
    visited ("Schema Extension"), so annotations under items, composition,
    conditional keywords or ``$ref`` are never seen. A name annotated twice (case
    insensitively) is dropped everywhere: no single property owns its header.
    """
    found: dict[str, tuple[tuple[str, ...], str]] = {}
    duplicated: set[str] = set()
    stack: list[tuple[tuple[str, ...], object]] = [((), input_schema)]
    while stack:
        path, schema = stack.pop()
        if not isinstance(schema, dict):
            continue
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            continue
        for prop, sub in properties.items():
            if not isinstance(sub, dict):
                continue
            sub_path = (*path, prop)
            stack.append((sub_path, sub))
            name = sub.get("x-mcp-header")
            if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
                continue
            json_type = sub.get("type")
            if not isinstance(json_type, str) or json_type not in _HEADER_TYPES:
                continue
            key = name.lower()
            if key in found:
                duplicated.add(key)
            found[key] = (sub_path, json_type)
    for key in duplicated:
        del found[key]
    return found


def check_param_headers(headers: Sequence[tuple[str, str]], input_schema: object,
                        arguments: object) -> None:
    """Rung 12 for ``tools/call``, against the target tool's ``inputSchema``.

    An unknown schema checks nothing (fail open, as the SDK does); callers that keep
    the tool list may cache ``x_mcp_headers`` and call ``check_param_values``.
    """
    if not isinstance(input_schema, dict):
        return
    annotations = x_mcp_headers(input_schema)
    if annotations:
        check_param_values(headers, annotations, arguments)


def check_param_values(headers: Sequence[tuple[str, str]],
                       annotations: dict[str, tuple[tuple[str, ...], str]],
                       arguments: object) -> None:
    """Rung 12 with the annotations already extracted ("Server Behavior for Custom
    Headers"): each annotated argument (null counts as absent) and its ``Mcp-Param-*``
    header are present together and equal, or absent together. Unannotated
    ``Mcp-Param-*`` headers are left alone: intermediaries forward them.
    """
    present: dict[str, tuple[str, str]] = {}
    repeated: set[str] = set()
    for name, raw in headers:
        key = name.lower()
        if key.startswith(_PARAM_PREFIX_KEY):
            key = key[len(_PARAM_PREFIX_KEY):]
            if key in present:
                repeated.add(key)
            present[key] = (name, raw)
    for key, (path, json_type) in annotations.items():
        value = _value_at(arguments, path)
        sent = present.get(key)
        if sent is None:
            if value is not None:
                raise RequestError(
                    HEADER_MISMATCH,
                    f"Header mismatch: {PARAM_HEADER_PREFIX}{key} header is required because "
                    f"argument '{'.'.join(path)}' is present")
            continue
        header, raw = sent
        if key in repeated:
            raise RequestError(HEADER_MISMATCH, f"Header mismatch: {header} header is repeated")
        if value is None:
            raise RequestError(
                HEADER_MISMATCH,
                f"Header mismatch: {header} header is present but argument '{'.'.join(path)}' "
                f"is absent")
        try:
            decoded = decode_header_value(raw)
        except ValueError as exc:
            raise RequestError(HEADER_MISMATCH,
                               f"Header mismatch: {header} header is malformed ({exc})") from None
        if not _param_matches(json_type, decoded, value):
            raise RequestError(
                HEADER_MISMATCH,
                f"Header mismatch: {header} header value {_show(decoded)} does not match "
                f"body value {_show(value)}")


def encode_header_value(value: str) -> str:
    """``value`` as a client sends it in ``Mcp-Name`` or ``Mcp-Param-*`` ("Value
    Encoding"): itself when it is visible ASCII with no surrounding whitespace and could
    not be read as Base64, else ``=?base64?<Base64 of its UTF-8>?=``."""
    if (value.isascii() and value.isprintable() and value == value.strip(_OWS)
            and not (value.startswith(_SENTINEL_OPEN) and value.endswith(_SENTINEL_CLOSE))):
        return value
    return f"{_SENTINEL_OPEN}{base64.b64encode(value.encode()).decode('ascii')}{_SENTINEL_CLOSE}"


def param_headers(annotations: dict[str, tuple[tuple[str, ...], str]],
                  arguments: object) -> list[tuple[str, str]]:
    """The ``Mcp-Param-*`` headers a client sends for a ``tools/call`` with
    ``arguments``, given the tool's ``x_mcp_headers``: one per annotated argument that
    is present (null counts as absent), rendered as "Value Encoding" says."""
    headers: list[tuple[str, str]] = []
    for key, (path, _) in annotations.items():
        value = _value_at(arguments, path)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        else:
            text = str(value)
        headers.append((f"{PARAM_HEADER_PREFIX}{key}", encode_header_value(text)))
    return headers


def _value_at(arguments: object, path: tuple[str, ...]) -> object:
    node = arguments
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _param_matches(json_type: str, decoded: str, value: object) -> bool:
    """Compare as the client renders ("Value Encoding" type conversion); integers
    compare numerically ("Server Validation" note: 42.0 and 42 are equal)."""
    if isinstance(value, bool):
        return decoded == ("true" if value else "false")
    if isinstance(value, str):
        return decoded == value
    if isinstance(value, int | float) and (json_type == "integer" or isinstance(value, int)):
        if isinstance(value, float) and not value.is_integer():
            return decoded == repr(value)
        match = _INTEGER_TEXT.fullmatch(decoded)
        if match is None or (match.group(2) and match.group(2).strip("0")):
            return False
        try:
            return int(match.group(1)) == int(value)
        except ValueError:  # beyond int()'s digit limit: no client would send it
            return False
    if isinstance(value, float):
        return decoded == repr(value)
    return False  # objects and arrays have no header rendering


def complete_result(result: dict[str, Any], *, cacheable: bool = False, ttl_ms: int = 0,
                    cache_scope: str = "private",
                    server_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``result`` shaped for a modern client (basic/index.mdx "ResultType",
    server/utilities/caching.mdx). An upstream's own values win over the defaults.

    Cache hints go only on ``"complete"`` results: an ``input_required`` result is
    never cacheable (mrtr.mdx).
    """
    shaped = dict(result)
    result_type = shaped.setdefault("resultType", "complete")
    if cacheable and result_type == "complete":
        shaped.setdefault("ttlMs", ttl_ms)
        shaped.setdefault("cacheScope", cache_scope)
    if server_info is not None:
        meta = shaped.get("_meta")
        meta = dict(meta) if isinstance(meta, dict) else {}
        meta[META_SERVER_INFO] = server_info
        shaped["_meta"] = meta
    return shaped


def legacy_result(result: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``result`` without the 2026-07-28 members a legacy client does not know
    (legacy ``ping`` and ``logging/setLevel`` results must be exactly ``{}``)."""
    shaped = {key: value for key, value in result.items()
              if key not in ("resultType", "ttlMs", "cacheScope")}
    meta = shaped.get("_meta")
    if isinstance(meta, dict) and META_SERVER_INFO in meta:
        meta = {key: value for key, value in meta.items() if key != META_SERVER_INFO}
        if meta:
            shaped["_meta"] = meta
        else:
            del shaped["_meta"]
    return shaped


def strip_modern_meta(params: dict[str, Any]) -> dict[str, Any]:
    """A copy of modern request ``params`` to forward to a legacy upstream: no
    ``io.modelcontextprotocol/`` keys in ``_meta`` and no MRTR retry members."""
    shaped = {key: value for key, value in params.items()
              if key not in ("inputResponses", "requestState")}
    meta = shaped.get("_meta")
    if isinstance(meta, dict):
        meta = {key: value for key, value in meta.items()
                if not key.startswith(MCP_META_PREFIX)}
        if meta:
            shaped["_meta"] = meta
        else:
            del shaped["_meta"]
    return shaped


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def _and(keys: list[str]) -> str:
    return " and ".join(f"'{key}'" for key in keys)


def listen_result(listen_id: int | str) -> bytes:
    """The answer that ends a ``subscriptions/listen`` stream on purpose (its graceful
    closure, basic/patterns/subscriptions)."""
    return result_response(listen_id, {
        "resultType": "complete", "_meta": {META_SUBSCRIPTION_ID: listen_id}})


def tagged(method: str, params: dict[str, Any], listen_id: int | str) -> bytes:
    """A notification for a listen stream, carrying the stream's subscription id."""
    meta = params.get("_meta")
    meta = {**meta, META_SUBSCRIPTION_ID: listen_id} if isinstance(meta, dict) else \
        {META_SUBSCRIPTION_ID: listen_id}
    return notification(method, {**params, "_meta": meta})
