"""Header validation (protocol/modern.py, and the Origin/Host allow-lists), at the edges
the mutation run found unguarded: tabs inside values, the exact reason a value is
refused, the version header never being Base64-decoded, how values of each JSON type
compare with their ``Mcp-Param-*`` rendering, and the allow-list's bounded cache."""

from __future__ import annotations

from typing import Any

import pytest

from mcpfast.config import is_loopback
from mcpfast.protocol import modern
from mcpfast.protocol.modern import HEADER_MISMATCH, RequestError
from mcpfast.transport.http_checks import AllowList

VERSION = "2026-07-28"


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(RequestError) as error:
        call(*args)
    assert error.value.code == HEADER_MISMATCH
    return error.value.message


@pytest.mark.parametrize("raw,decoded", [
    ("a\tb", "a\tb"),            # a tab inside a value is allowed
    ("\ta b\t", "a b"),          # around it, it is OWS
    ("=?base64?YQli?=", "a\tb"),
])
def test_tabs_are_part_of_a_value(raw: str, decoded: str) -> None:
    assert modern.decode_header_value(raw) == decoded


@pytest.mark.parametrize("raw,reason", [
    ("caf\u00e9", "header value contains characters outside visible ASCII"),
    ("a\nb", "header value contains characters outside visible ASCII"),
    ("=?base64?ab*c?=", "malformed base64 in header value"),
    ("=?base64?abc?=", "malformed base64 in header value"),
    ("=?base64?YWI=x?=", "malformed base64 in header value"),
    ("=?base64?YR==?=", "non-canonical base64 in header value"),
    ("=?base64?/w==?=", "base64 header value is not UTF-8"),
])
def test_each_malformed_value_says_why(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        modern.decode_header_value(raw)


def test_the_version_header_is_compared_as_written() -> None:
    """Only Mcp-Name and Mcp-Param-* values may be Base64; a version or method header in
    that form is a mismatch."""
    encoded = "=?base64?MjAyNi0wNy0yOA==?="  # 2026-07-28
    assert modern.decode_header_value(encoded) == VERSION
    params = {"_meta": {"io.modelcontextprotocol/protocolVersion": VERSION}}
    message = refused(modern.check_headers, [("MCP-Protocol-Version", encoded),
                                             ("Mcp-Method", "tools/list")],
                      "tools/list", params)
    assert "MCP-Protocol-Version" in message
    method = "=?base64?dG9vbHMvbGlzdA==?="  # tools/list
    message = refused(modern.check_headers, [("MCP-Protocol-Version", VERSION),
                                             ("Mcp-Method", method)], "tools/list", params)
    assert "Mcp-Method" in message
    modern.check_headers([("MCP-Protocol-Version", VERSION), ("Mcp-Method", "tools/list")],
                         "tools/list", params)


SCHEMA = {"type": "object", "properties": {
    "n": {"type": "integer", "x-mcp-header": "N"},
    "s": {"type": "string", "x-mcp-header": "S"},
    "b": {"type": "boolean", "x-mcp-header": "B"},
}}


@pytest.mark.parametrize("name,header,value", [
    ("N", "42.5", 42.5),     # not an integer after all: compared as Python renders it
    ("S", "42.0", 42.0),     # a number where a string was declared: its rendering
    ("S", "42.5", 42.5),
    ("B", "1.5", 1.5),
])
def test_values_of_another_type_compare_by_their_rendering(name: str, header: str,
                                                           value: object) -> None:
    key = name.lower()
    modern.check_param_headers([(f"Mcp-Param-{name}", header)], SCHEMA, {key: value})


@pytest.mark.parametrize("name,header,value", [
    ("S", "42", 42.0),       # only an integer-typed param compares numerically
    ("N", "1", [1]),          # objects and arrays have no header rendering
    ("N", "1", {"a": 1}),
    ("S", "x", ["x"]),
])
def test_values_without_that_rendering_are_refused(name: str, header: str,
                                                   value: object) -> None:
    message = refused(modern.check_param_headers, [(f"Mcp-Param-{name}", header)], SCHEMA,
                      {name.lower(): value})
    assert f"Mcp-Param-{name}" in message and "does not match" in message


@pytest.mark.parametrize("schema", [None, [], "schema", 7])
def test_a_schema_that_is_not_an_object_checks_nothing(schema: object) -> None:
    modern.check_param_headers([("Mcp-Param-N", "anything")], schema, {"n": 1})


def test_allow_list_verdicts_are_cached_up_to_a_bound() -> None:
    """Each request checks a dict, not the patterns; a client sending ever new values
    cannot grow that dict past 1024 entries, and verdicts stay right past it."""
    allow = AllowList(["http://ok.example", "http://*.ok.example"])
    for n in range(3000):
        assert (f"http://{n}.ok.example" in allow) is True
        assert (f"http://{n}.bad.example" in allow) is False
    assert len(allow._seen) == 1024
    assert "http://ok.example" in allow and "http://ok.example.bad" not in allow


@pytest.mark.parametrize("host,loopback", [
    ("localhost", True), ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
    ("0:0:0:0:0:0:0:1", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("example.com", False), ("localhost.example.com", False), ("", False),
])
def test_which_listen_hosts_are_loopback(host: str, loopback: bool) -> None:
    """A loopback listener defaults to loopback Host names; any other serves any Host."""
    assert is_loopback(host) is loopback
