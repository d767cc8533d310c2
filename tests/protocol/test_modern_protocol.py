"""The 2026-07-28 ladder rungs and result shaping (mcpfast/protocol/modern.py).

The conformance probes of docs/design/streamable-http-notes.md §2.3, §2.4 and §4.6 are
reproduced here by name, header bytes and body exactly as the suite sends them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from mcpfast.protocol import modern
from mcpfast.protocol.modern import (
    HEADER_MISMATCH,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
    META_PROTOCOL_VERSION,
    META_SERVER_INFO,
    RequestError,
)

V = "2026-07-28"
REGION_SCHEMA = {"type": "object",
                 "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}


def meta(**extra: Any) -> dict[str, Any]:
    return {META_PROTOCOL_VERSION: V, META_CLIENT_CAPABILITIES: {},
            META_CLIENT_INFO: {"name": "conformance", "version": "1"}, **extra}


def call_params(name: str = "test_simple_text", **extra: Any) -> dict[str, Any]:
    return {"name": name, "_meta": meta(), **extra}


def routing(method: str = "tools/call", name: str | None = "test_simple_text",
            version: str = V) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json"), ("MCP-Protocol-Version", version),
               ("Mcp-Method", method)]
    if name is not None:
        headers.append(("Mcp-Name", name))
    return headers


def rejects(code: int, fn: Any, *args: Any) -> RequestError:
    with pytest.raises(RequestError) as error:
        fn(*args)
    assert error.value.code == code
    return error.value


# Constants and the status table


def test_constants() -> None:
    assert modern.MODERN_VERSIONS == (V,) and modern.LATEST_MODERN == V
    assert (modern.HEADER_MISMATCH, modern.MISSING_CLIENT_CAPABILITY,
            modern.UNSUPPORTED_PROTOCOL_VERSION) == (-32020, -32021, -32022)
    assert modern.META_SUBSCRIPTION_ID == "io.modelcontextprotocol/subscriptionId"
    assert META_LOG_LEVEL == "io.modelcontextprotocol/logLevel"


@pytest.mark.parametrize("code,status", [
    (-32700, 400), (-32600, 400), (-32602, 400), (-32020, 400), (-32021, 400),
    (-32022, 400), (-32601, 404), (-32603, 200), (-32000, 200), (-32002, 200), (7, 200),
])
def test_http_status_for(code: int, status: int) -> None:
    assert modern.http_status_for(code) == status
    assert RequestError(code, "x").http_status == status


def test_request_error_data_unset_by_default() -> None:
    error = RequestError(-32602, "bad")
    assert error.data is msgspec.UNSET and error.message == "bad" and str(error) == "bad"


# Era test


@pytest.mark.parametrize("params,expected", [
    ({"_meta": {META_PROTOCOL_VERSION: V}}, True),
    ({"_meta": {META_PROTOCOL_VERSION: "v999.0.0"}}, True),
    ({"_meta": {"progressToken": 1}}, False),
    ({"_meta": None}, False),
    ({"_meta": [META_PROTOCOL_VERSION]}, False),
    ({"protocolVersion": "2025-11-25", "capabilities": {}}, False),
    ({}, False), (None, False), ([], False), ("_meta", False),
])
def test_is_modern(params: object, expected: bool) -> None:
    assert modern.is_modern(params) is expected


# Rung 9: _meta


def test_read_meta_full() -> None:
    m = modern.read_meta({"_meta": meta(**{META_LOG_LEVEL: "warning", "progressToken": "p-1",
                                           "traceparent": "00-ab-cd-01"})})
    assert m.protocol_version == V and m.client_capabilities == {}
    assert m.client_info == {"name": "conformance", "version": "1"}
    assert m.log_level == "warning" and m.progress_token == "p-1"


def test_read_meta_without_client_info_is_fine() -> None:
    m = modern.read_meta({"_meta": {META_PROTOCOL_VERSION: V,
                                    META_CLIENT_CAPABILITIES: {"sampling": {}}}})
    assert m.client_info is None and m.log_level is None and m.progress_token is None
    assert m.client_capabilities == {"sampling": {}}


@pytest.mark.parametrize("token,expected", [(7, 7), ("t", "t"), (True, None), (1.5, None),
                                            (None, None)])
def test_read_meta_progress_token(token: object, expected: object) -> None:
    assert modern.read_meta({"_meta": meta(progressToken=token)}).progress_token == expected


@pytest.mark.parametrize("params,names", [
    (None, ["_meta"]),
    ({}, ["_meta"]),
    ({"name": "x"}, ["_meta"]),
    ({"_meta": None}, ["_meta"]),
    ({"_meta": "2026-07-28"}, ["_meta"]),
    ({"_meta": {}}, [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]),
    ({"_meta": {META_CLIENT_CAPABILITIES: {}}}, [META_PROTOCOL_VERSION]),
    ({"_meta": {META_PROTOCOL_VERSION: V}}, [META_CLIENT_CAPABILITIES]),
    ({"_meta": {META_PROTOCOL_VERSION: 20260728, META_CLIENT_CAPABILITIES: {}}},
     [META_PROTOCOL_VERSION]),
    ({"_meta": {META_PROTOCOL_VERSION: V, META_CLIENT_CAPABILITIES: []}},
     [META_CLIENT_CAPABILITIES]),
    ({"_meta": meta(**{META_CLIENT_INFO: "me"})}, [META_CLIENT_INFO]),
])
def test_read_meta_rejects_with_invalid_params(params: object, names: list[str]) -> None:
    error = rejects(-32602, modern.read_meta, params)
    assert error.http_status == 400
    for name in names:
        assert name in error.message


def test_read_meta_missing_keys_are_32602_even_with_a_version_header() -> None:
    # Conformance server-stateless: header 2026-07-28 with a body lacking the key is
    # -32602, not -32020, because rung 9 runs before the header rung.
    params = {"_meta": {META_CLIENT_CAPABILITIES: {}}}
    modern.check_unrepeated_headers(routing("server/discover", None))
    rejects(-32602, modern.read_meta, params)


@pytest.mark.parametrize("level", sorted(modern.LOG_LEVELS))
def test_read_meta_log_levels(level: str) -> None:
    assert modern.read_meta({"_meta": meta(**{META_LOG_LEVEL: level})}).log_level == level


@pytest.mark.parametrize("level", ["verbose", "DEBUG", "", None, 3, ["debug"], {}])
def test_read_meta_bad_log_level(level: object) -> None:
    error = rejects(-32602, modern.read_meta, {"_meta": meta(**{META_LOG_LEVEL: level})})
    assert META_LOG_LEVEL in error.message


# Rung 11: version


def test_check_version_accepts_modern() -> None:
    modern.check_version(modern.read_meta({"_meta": meta()}))


@pytest.mark.parametrize("version", ["v999.0.0", "2025-11-25", "2026-07-28 ", ""])
def test_check_version_rejects_with_data(version: str) -> None:
    m = modern.read_meta({"_meta": meta(**{META_PROTOCOL_VERSION: version})})
    error = rejects(-32022, modern.check_version, m)
    assert error.message == "Unsupported protocol version" and error.http_status == 400
    assert error.data == {"supported": [V], "requested": version}


def test_v999_in_header_and_body_is_32022() -> None:
    params = {"_meta": meta(**{META_PROTOCOL_VERSION: "v999.0.0"})}
    m = modern.read_meta(params)
    modern.check_headers(routing("server/discover", None, "v999.0.0"), "server/discover",
                         params)
    error = rejects(-32022, modern.check_version, m)
    assert error.data == {"supported": list(modern.MODERN_VERSIONS), "requested": "v999.0.0"}
    encoded = msgspec.json.decode(msgspec.json.encode(error.data))
    assert set(encoded["supported"]) <= set(modern.MODERN_VERSIONS)


def test_header_v2026_with_body_v999_is_32020_from_check_headers() -> None:
    params = {"_meta": meta(**{META_PROTOCOL_VERSION: "v999.0.0"})}
    modern.read_meta(params)
    error = rejects(HEADER_MISMATCH, modern.check_headers, routing("server/discover", None),
                    "server/discover", params)
    assert "MCP-Protocol-Version" in error.message and "'v999.0.0'" in error.message


# Header value decoding


@pytest.mark.parametrize("raw,decoded", [
    ("plain", "plain"),
    ("  test_simple_text  ", "test_simple_text"),
    ("\t us-west1\t", "us-west1"),
    ("=?base64?SGVsbG8=?=", "Hello"),
    ("  =?base64?SGVsbG8=?=\t", "Hello"),
    ("=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"),
    ("=?base64?IHBhZGRlZCA=?=", " padded "),
    ("=?base64?bGluZTEKbGluZTI=?=", "line1\nline2"),
    ("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?="),
    ("=?base64??=", ""),
    ("SGVsbG8=", "SGVsbG8="),
    ("=?base64?SGVsbG8=", "=?base64?SGVsbG8="),
    ("=?BASE64?SGVsbG8=?=", "=?BASE64?SGVsbG8=?="),
    ("=?base64?=", "=?base64?="),
    ("", ""),
])
def test_decode_header_value(raw: str, decoded: str) -> None:
    assert modern.decode_header_value(raw) == decoded


@pytest.mark.parametrize("raw", [
    "=?base64?SGVsbG8?=",         # missing padding
    "=?base64?SGVs!!!bG8=?=",     # characters outside the alphabet
    "=?base64?SGVsbG9=?=",        # non-canonical: non-zero trailing bits
    "=?base64?SGVs bG8=?=",       # inner whitespace
    "=?base64?/w==?=",            # not UTF-8
    "caf\xe9",                    # latin-1 decoded non-ASCII byte
    "a\x00b",                     # control character
])
def test_decode_header_value_malformed(raw: str) -> None:
    with pytest.raises(ValueError):
        modern.decode_header_value(raw)


# Rungs 8 and 10: routing headers


def test_check_headers_accepts_the_spec_examples() -> None:
    modern.check_headers(routing("tools/call", "get_weather"), "tools/call",
                         call_params("get_weather", arguments={"location": "Seattle, WA"}))
    uri = "file:///projects/myapp/config.json"
    modern.check_headers(routing("resources/read", uri), "resources/read",
                         {"uri": uri, "_meta": meta()})
    modern.check_headers(routing("prompts/get", "p"), "prompts/get",
                         {"name": "p", "_meta": meta()})
    modern.check_headers(routing("tools/list", None), "tools/list", {"_meta": meta()})
    modern.check_headers(routing("server/discover", None), "server/discover", {"_meta": meta()})


def test_mcp_name_with_surrounding_whitespace_is_accepted() -> None:
    modern.check_headers(routing(name="  test_simple_text  "), "tools/call", call_params())


def test_ows_around_method_and_version_is_accepted() -> None:
    headers = [("MCP-Protocol-Version", f" {V}\t"), ("Mcp-Method", " tools/list ")]
    modern.check_headers(headers, "tools/list", {"_meta": meta()})


@pytest.mark.parametrize("transform", [str.lower, str.upper])
def test_header_names_are_case_insensitive(transform: Any) -> None:
    headers = [(transform(name), value) for name, value in routing()]
    modern.check_headers(headers, "tools/call", call_params())


def test_mcp_method_value_is_case_sensitive() -> None:
    error = rejects(HEADER_MISMATCH, modern.check_headers, routing("TOOLS/LIST", None),
                    "tools/list", {"_meta": meta()})
    assert error.http_status == 400
    assert error.message == ("Header mismatch: Mcp-Method header value 'TOOLS/LIST' "
                             "does not match body value 'tools/list'")


def test_mcp_name_mismatch_message() -> None:
    error = rejects(HEADER_MISMATCH, modern.check_headers, routing(name="foo"), "tools/call",
                    call_params("bar"))
    assert error.message == ("Header mismatch: Mcp-Name header value 'foo' "
                             "does not match body value 'bar'")


@pytest.mark.parametrize("headers,method,params,mentions", [
    ([("Mcp-Method", "tools/list")], "tools/list", {"_meta": meta()}, "MCP-Protocol-Version"),
    (routing(version="2025-11-25"), "tools/call", call_params(), "MCP-Protocol-Version"),
    ([("MCP-Protocol-Version", V)], "tools/list", {"_meta": meta()}, "Mcp-Method"),
    (routing("tools/list", None), "tools/call", call_params(), "Mcp-Method"),
    (routing(name=None), "tools/call", call_params(), "Mcp-Name"),
    (routing("prompts/get", None), "prompts/get", {"name": "p", "_meta": meta()}, "Mcp-Name"),
    (routing("resources/read", None), "resources/read", {"uri": "test://a", "_meta": meta()},
     "Mcp-Name"),
    (routing("resources/read", "test://b"), "resources/read",
     {"uri": "test://a", "_meta": meta()}, "Mcp-Name"),
    (routing("prompts/get", "test_simple_text"), "prompts/get",
     {"name": "other", "_meta": meta()}, "Mcp-Name"),
    (routing(name="=?base64?SGVsbG8?="), "tools/call", call_params("Hello"), "Mcp-Name"),
    (routing(), "tools/call", {"_meta": meta()}, "Mcp-Name"),
])
def test_check_headers_mismatches(headers: list[tuple[str, str]], method: str,
                                  params: dict[str, Any], mentions: str) -> None:
    error = rejects(HEADER_MISMATCH, modern.check_headers, headers, method, params)
    assert error.message.startswith("Header mismatch: ") and mentions in error.message


def test_mcp_name_sentinel_is_decoded() -> None:
    modern.check_headers(routing(name="=?base64?SGVsbG8sIOS4lueVjA==?="), "tools/call",
                         call_params("Hello, 世界"))


@pytest.mark.parametrize("name", ["MCP-Protocol-Version", "mcp-method", "Mcp-Name"])
def test_repeated_routing_header_is_rejected(name: str) -> None:
    headers = routing()
    headers.append((name.upper(), dict((n.lower(), v) for n, v in headers)[name.lower()]))
    rejects(HEADER_MISMATCH, modern.check_unrepeated_headers, headers)
    error = rejects(HEADER_MISMATCH, modern.check_headers, headers, "tools/call", call_params())
    assert "repeated" in error.message


def test_unrelated_repeated_headers_are_fine() -> None:
    headers = [*routing(), ("Accept", "application/json"), ("Accept", "text/event-stream")]
    assert modern.check_unrepeated_headers(headers) == {
        "mcp-protocol-version": V, "mcp-method": "tools/call", "mcp-name": "test_simple_text"}


# x-mcp-header annotations


def test_x_mcp_headers_valid_annotations() -> None:
    schema = {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "limit": {"type": "integer", "x-mcp-header": "Row-Limit"},
        "dry": {"type": "boolean", "x-mcp-header": "Dry_Run"},
        "query": {"type": "string"},
        "target": {"type": "object", "properties": {
            "zone": {"type": "string", "x-mcp-header": "Zone"}}},
    }}
    assert modern.x_mcp_headers(schema) == {
        "region": (("region",), "string"),
        "row-limit": (("limit",), "integer"),
        "dry_run": (("dry",), "boolean"),
        "zone": (("target", "zone"), "string"),
    }


def test_x_mcp_headers_ignores_invalid_annotations() -> None:
    schema = {
        "type": "object", "x-mcp-header": "Root",
        "properties": {
            "ok": {"type": "string", "x-mcp-header": "Ok"},
            "num": {"type": "number", "x-mcp-header": "Num"},
            "obj": {"type": "object", "x-mcp-header": "Obj"},
            "multi": {"type": ["string", "null"], "x-mcp-header": "Multi"},
            "untyped": {"x-mcp-header": "Untyped"},
            "empty": {"type": "string", "x-mcp-header": ""},
            "spaced": {"type": "string", "x-mcp-header": "Has Space"},
            "colon": {"type": "string", "x-mcp-header": "a:b"},
            "crlf": {"type": "string", "x-mcp-header": "A\r\nB"},
            "utf": {"type": "string", "x-mcp-header": "Régión"},
            "notstr": {"type": "string", "x-mcp-header": 5},
            "first": {"type": "string", "x-mcp-header": "Twice"},
            "second": {"type": "integer", "x-mcp-header": "TWICE"},
            "list": {"type": "array", "items": {"type": "string", "x-mcp-header": "Item"}},
            "ref": {"$ref": "#/$defs/r"},
            "alt": {"anyOf": [{"type": "string", "x-mcp-header": "Any"}]},
            "cond": {"if": {"type": "string", "x-mcp-header": "If"},
                     "then": {"type": "string", "x-mcp-header": "Then"},
                     "else": {"type": "string", "x-mcp-header": "Else"}},
            "neg": {"not": {"type": "string", "x-mcp-header": "Not"}},
        },
        "$defs": {"r": {"type": "string", "x-mcp-header": "Ref"}},
        "allOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "AllOf"}}}],
        "oneOf": [{"properties": {"o": {"type": "string", "x-mcp-header": "OneOf"}}}],
    }
    assert modern.x_mcp_headers(schema) == {"ok": (("ok",), "string")}


@pytest.mark.parametrize("schema", [None, "schema", [], {}, {"properties": []},
                                    {"properties": {"a": "string"}}])
def test_x_mcp_headers_of_odd_schemas_is_empty(schema: object) -> None:
    assert modern.x_mcp_headers(schema) == {}


# Rung 12: Mcp-Param-* headers


def region_call(header: str | None, region: object = "Hello", **args: Any) -> None:
    headers = routing()
    if header is not None:
        headers.append(("Mcp-Param-Region", header))
    arguments = {"region": region, **args} if region is not None else dict(args)
    modern.check_param_headers(headers, REGION_SCHEMA, arguments)


@pytest.mark.parametrize("header,region", [
    ("=?base64?SGVsbG8=?=", "Hello"),
    ("SGVsbG8=", "SGVsbG8="),
    ("=?base64?SGVsbG8=", "=?base64?SGVsbG8="),
    ("us-west1", "us-west1"),
    ("  us-west1\t", "us-west1"),
    ("=?base64?IHBhZGRlZCA=?=", " padded "),
    (None, None),
])
def test_param_header_accepted(header: str | None, region: object) -> None:
    region_call(header, region)


@pytest.mark.parametrize("header,region,reason", [
    ("=?base64?SGVsbG8?=", "Hello", "malformed"),
    ("=?base64?SGVs!!!bG8=?=", "Hello", "malformed"),
    (None, "Hello", "required"),
    ("Hello", None, "absent"),
    ("hello", "Hello", "does not match"),
    ("SGVsbG8=", "Hello", "does not match"),
    ("x", {"nested": 1}, "does not match"),
])
def test_param_header_rejected(header: str | None, region: object, reason: str) -> None:
    error = rejects(HEADER_MISMATCH, region_call, header, region)
    assert error.http_status == 400 and reason in error.message


def test_null_argument_counts_as_absent() -> None:
    modern.check_param_headers(routing(), REGION_SCHEMA, {"region": None})
    rejects(HEADER_MISMATCH, modern.check_param_headers,
            [("Mcp-Param-Region", "x")], REGION_SCHEMA, {"region": None})


def test_param_header_name_is_case_insensitive() -> None:
    for name in ("mcp-param-region", "MCP-PARAM-REGION", "Mcp-Param-rEgIoN"):
        modern.check_param_headers([(name, "eu")], REGION_SCHEMA, {"region": "eu"})


def test_repeated_param_header_is_rejected() -> None:
    headers = [("Mcp-Param-Region", "eu"), ("mcp-param-region", "eu")]
    error = rejects(HEADER_MISMATCH, modern.check_param_headers, headers, REGION_SCHEMA,
                    {"region": "eu"})
    assert "repeated" in error.message


def test_unannotated_param_headers_are_ignored() -> None:
    headers = [("Mcp-Param-Region", "eu"), ("Mcp-Param-Tenant", "=?base64?bad?="),
               ("Mcp-Param-Tenant", "again")]
    modern.check_param_headers(headers, REGION_SCHEMA, {"region": "eu", "tenant": "t"})


@pytest.mark.parametrize("schema", [None, "x", [], {}])
def test_unknown_schema_fails_open(schema: object) -> None:
    modern.check_param_headers([("Mcp-Param-Region", "=?base64?!?=")], schema, {"region": 1})


def test_missing_arguments_object() -> None:
    modern.check_param_headers(routing(), REGION_SCHEMA, None)
    rejects(HEADER_MISMATCH, modern.check_param_headers, [("Mcp-Param-Region", "eu")],
            REGION_SCHEMA, None)


INT_SCHEMA = {"type": "object", "properties": {
    "n": {"type": "integer", "x-mcp-header": "N"},
    "flag": {"type": "boolean", "x-mcp-header": "Flag"},
}}


@pytest.mark.parametrize("header,value", [
    ("42", 42), ("42", 42.0), ("42.0", 42), ("42.00", 42.0), ("-7", -7), ("0", 0),
    ("-0", 0), ("=?base64?NDI=?=", 42), (" 42 ", 42), (str(2**53 - 1), 2**53 - 1),
])
def test_integer_param_compares_numerically(header: str, value: object) -> None:
    modern.check_param_headers([("Mcp-Param-N", header)], INT_SCHEMA, {"n": value})


@pytest.mark.parametrize("header,value", [
    ("43", 42), ("42.5", 42), ("+42", 42), ("4_2", 42), ("4.2e1", 42), ("0x2a", 42),
    ("42", "42x"), ("", 42), ("42", 42.5), ("1" * 5000, 1),
])
def test_integer_param_mismatch(header: str, value: object) -> None:
    rejects(HEADER_MISMATCH, modern.check_param_headers, [("Mcp-Param-N", header)],
            INT_SCHEMA, {"n": value})


@pytest.mark.parametrize("header,value,ok", [
    ("true", True, True), ("false", False, True), ("True", True, False),
    ("1", True, False), ("false", True, False), ("true", "true", True),
])
def test_boolean_param(header: str, value: object, ok: bool) -> None:
    args = ([("Mcp-Param-Flag", header)], INT_SCHEMA, {"flag": value})
    if ok:
        modern.check_param_headers(*args)
    else:
        rejects(HEADER_MISMATCH, modern.check_param_headers, *args)


def test_nested_param_path() -> None:
    schema = {"type": "object", "properties": {"target": {"type": "object", "properties": {
        "zone": {"type": "string", "x-mcp-header": "Zone"}}}}}
    modern.check_param_headers([("Mcp-Param-Zone", "z1")], schema, {"target": {"zone": "z1"}})
    modern.check_param_headers([], schema, {"target": "not an object"})
    rejects(HEADER_MISMATCH, modern.check_param_headers, [], schema,
            {"target": {"zone": "z1"}})


def test_check_param_values_with_cached_annotations() -> None:
    annotations = modern.x_mcp_headers(REGION_SCHEMA)
    modern.check_param_values([("Mcp-Param-Region", "eu")], annotations, {"region": "eu"})
    rejects(HEADER_MISMATCH, modern.check_param_values, [], annotations, {"region": "eu"})


# Result shaping


def test_complete_result_plain() -> None:
    original = {"content": []}
    assert modern.complete_result(original) == {"content": [], "resultType": "complete"}
    assert original == {"content": []}


def test_complete_result_cacheable_with_server_info() -> None:
    info = {"name": "mcpfast", "version": "1"}
    shaped = modern.complete_result({"tools": [], "_meta": {"x/y": 1}}, cacheable=True,
                                    ttl_ms=5000, cache_scope="public", server_info=info)
    assert shaped == {"tools": [], "resultType": "complete", "ttlMs": 5000,
                      "cacheScope": "public", "_meta": {"x/y": 1, META_SERVER_INFO: info}}


def test_complete_result_keeps_upstream_values() -> None:
    upstream = {"resultType": "complete", "ttlMs": 10, "cacheScope": "public",
                "_meta": {META_SERVER_INFO: {"name": "upstream"}}}
    shaped = modern.complete_result(upstream, cacheable=True, ttl_ms=99)
    assert shaped["ttlMs"] == 10 and shaped["cacheScope"] == "public"
    assert modern.complete_result({}, cacheable=True) == {
        "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}


def test_complete_result_no_cache_hints_on_input_required() -> None:
    shaped = modern.complete_result({"resultType": "input_required", "requestState": "s"},
                                    cacheable=True, ttl_ms=100)
    assert shaped == {"resultType": "input_required", "requestState": "s"}


def test_complete_result_not_cacheable_adds_no_hints() -> None:
    assert "ttlMs" not in modern.complete_result({}, ttl_ms=100)


@pytest.mark.parametrize("result,expected", [
    ({"resultType": "complete"}, {}),
    ({"resultType": "complete", "_meta": {META_SERVER_INFO: {"name": "s"}}}, {}),
    ({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
      "nextCursor": "c", "_meta": {META_SERVER_INFO: {}, "progressToken": 1}},
     {"tools": [], "nextCursor": "c", "_meta": {"progressToken": 1}}),
    ({"content": [], "_meta": {"custom": 1}}, {"content": [], "_meta": {"custom": 1}}),
    ({}, {}),
])
def test_legacy_result(result: dict[str, Any], expected: dict[str, Any]) -> None:
    assert modern.legacy_result(result) == expected


def test_strip_modern_meta() -> None:
    params = {"name": "t", "arguments": {"a": 1}, "inputResponses": {"k": {}},
              "requestState": "s",
              "_meta": {**meta(**{META_LOG_LEVEL: "info"}), "progressToken": 3,
                        "traceparent": "00-a-b-01", "com.example/x": True}}
    stripped = modern.strip_modern_meta(params)
    assert stripped == {"name": "t", "arguments": {"a": 1},
                        "_meta": {"progressToken": 3, "traceparent": "00-a-b-01",
                                  "com.example/x": True}}
    assert META_PROTOCOL_VERSION in params["_meta"] and "requestState" in params


def test_strip_modern_meta_drops_empty_meta() -> None:
    assert modern.strip_modern_meta({"uri": "u", "_meta": meta()}) == {"uri": "u"}
    assert modern.strip_modern_meta({"_meta": meta()}) == {}


# The ladder end to end, as the HTTP transport runs it


def ladder(headers: list[tuple[str, str]], method: str, params: dict[str, Any],
           schema: object = None) -> modern.ModernMeta:
    modern.check_unrepeated_headers(headers)
    m = modern.read_meta(params)
    modern.check_headers(headers, method, params)
    modern.check_version(m)
    if method == "tools/call":
        modern.check_param_headers(headers, schema, params.get("arguments"))
    return m


def test_ladder_spec_example() -> None:
    body = msgspec.json.decode(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_sql",'
        b'"arguments":{"region":"us-west1","query":"SELECT * FROM users"},'
        b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        b'"io.modelcontextprotocol/clientInfo":{"name":"ExampleClient","version":"1.0.0"},'
        b'"io.modelcontextprotocol/clientCapabilities":{}}}}')
    headers = [*routing("tools/call", "execute_sql"), ("Mcp-Param-Region", "us-west1")]
    m = ladder(headers, body["method"], body["params"], REGION_SCHEMA)
    assert m.client_info == {"name": "ExampleClient", "version": "1.0.0"}


@pytest.mark.parametrize("headers,params,code", [
    ([*routing(), ("mcp-name", "x")], {"name": "test_simple_text"}, -32020),
    (routing(), {"name": "test_simple_text"}, -32602),
    (routing(name="wrong"), call_params(), -32020),
    (routing(version="v999.0.0"),
     call_params(_meta=meta(**{META_PROTOCOL_VERSION: "v999.0.0"})), -32022),
    (routing(), call_params(arguments={"region": "eu"}), -32020),
])
def test_ladder_order(headers: list[tuple[str, str]], params: dict[str, Any],
                      code: int) -> None:
    rejects(code, ladder, headers, "tools/call", params, REGION_SCHEMA)


@pytest.mark.parametrize("value,sent", [
    ("us-west1", "us-west1"),
    ("Grüße", "=?base64?R3LDvMOfZQ==?="),
    (" padded ", "=?base64?IHBhZGRlZCA=?="),
    ("=?base64?abc?=", "=?base64?PT9iYXNlNjQ/YWJjPz0=?="),  # would read as Base64
    ("line\nbreak", "=?base64?bGluZQpicmVhaw==?="),
])
def test_a_header_value_is_encoded_as_a_client_must(value: str, sent: str) -> None:
    from mcpfast.protocol.modern import decode_header_value, encode_header_value

    assert encode_header_value(value) == sent
    assert decode_header_value(sent) == value


def test_param_headers_are_what_the_server_check_accepts() -> None:
    from mcpfast.protocol.modern import check_param_values, param_headers, x_mcp_headers

    schema = {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "count": {"type": "integer", "x-mcp-header": "Count"},
        "dry": {"type": "boolean", "x-mcp-header": "Dry"},
        "opts": {"type": "object", "properties": {
            "zone": {"type": "string", "x-mcp-header": "Zone"}}},
        "absent": {"type": "string", "x-mcp-header": "Absent"}}}
    annotations = x_mcp_headers(schema)
    arguments = {"region": "eu-ü", "count": 3.0, "dry": False, "opts": {"zone": "b"},
                 "absent": None}
    headers = param_headers(annotations, arguments)
    assert dict(headers) == {"Mcp-Param-region": "=?base64?ZXUtw7w=?=",
                             "Mcp-Param-count": "3", "Mcp-Param-dry": "false",
                             "Mcp-Param-zone": "b"}
    check_param_values(headers, annotations, arguments)  # raises on any mismatch
