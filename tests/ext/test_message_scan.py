"""The message scanner, compiled and pure-Python.

Every test taking the ``ms`` fixture runs once per implementation ("c" fails when the
extension was not built; MCPFAST_NO_EXTENSIONS=1 skips it). The random tests hold the
two to the same answer on the same bytes, and both to what a parser reads.
"""

from __future__ import annotations

import json
import os
import random
from types import ModuleType
from typing import Any

import msgspec
import pytest
from msgspec import UNSET

from mcpfast.protocol import jsonrpc

from ..conftest import compiled, twin

HEAD = b'{"jsonrpc":"2.0","id":'


@pytest.fixture(params=["py", "c"])
def ms(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "message_scan")


def test_survey_counts_brackets_and_flags_newlines_and_high_bytes(ms: ModuleType) -> None:
    flags = ms.NEWLINE | ms.NOT_ASCII
    assert ms.survey(b"") == 0
    assert ms.survey(b'{"a":[1,{"b":"[x"}]}') == 4 << ms.BRACKETS_SHIFT
    assert ms.survey(b'{"a":\n1}') == (1 << ms.BRACKETS_SHIFT) | ms.NEWLINE
    assert ms.survey('{"a":"é"}'.encode()) == (1 << ms.BRACKETS_SHIFT) | ms.NOT_ASCII
    assert ms.survey(b"\xff\n") & flags == flags
    assert ms.survey(b"\x7f\r\t") == 0


def test_survey_matches_counting_on_random_bytes(ms: ModuleType) -> None:
    rng = random.Random(7)
    alphabet = b'{}[]"\\\n\r\t :,ab01\x7f\x80\xc3\xa9\xff'
    for _ in range(3000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        expected = ((data.count(b"{") + data.count(b"[")) << ms.BRACKETS_SHIFT) \
            | (ms.NEWLINE if b"\n" in data else 0) | (0 if data.isascii() else ms.NOT_ASCII)
        assert ms.survey(data) == expected, data


def test_survey_refuses_what_is_not_bytes(ms: ModuleType) -> None:
    with pytest.raises((TypeError, AttributeError)):
        ms.survey("{}")


def splice(ms: ModuleType, line: bytes, upstream_id: object, client_id: object) -> Any:
    """``splice_response`` as the relay calls it: with what the gateway's parser read of
    ``line`` (its result or error, and that value's size)."""
    try:
        env = jsonrpc.decode(line, None)
    except jsonrpc.MessageError:
        return ms.splice_response(line, upstream_id, client_id, False, 2)
    error = env.error is not UNSET
    value = env.error if error else env.result
    return ms.splice_response(line, upstream_id, client_id, error,
                              len(value) if value is not UNSET else 0)  # type: ignore[arg-type]


def test_splice_puts_the_client_id_in_the_upstream_id_place(ms: ModuleType) -> None:
    line = HEAD + b'17,"result":{"content":[],"id":17}}'
    assert splice(ms, line, 17, 42) == HEAD + b'42,"result":{"content":[],"id":17}}'
    assert splice(ms, line, 17, -3) == HEAD + b'-3,"result":{"content":[],"id":17}}'
    assert splice(ms, line, 17, 0) == HEAD + b'0,"result":{"content":[],"id":17}}'
    error = HEAD + b'0,"error":{"code":-32601,"message":"no"}}'
    assert splice(ms, error, 0, 2**63 - 1) == \
        HEAD + b'9223372036854775807,"error":{"code":-32601,"message":"no"}}'
    assert splice(ms, line, 17, -(2**63)) == HEAD + b'-9223372036854775808' \
        + b',"result":{"content":[],"id":17}}'


@pytest.mark.parametrize("line,upstream_id,client_id", [
    (HEAD + b'17,"result":{}}', 17, "abc"),  # a string id is re-encoded
    (HEAD + b'17,"result":{}}', 17, True),
    (HEAD + b'17,"result":{}}', 17, 2**63),  # beyond 64 bits
    (HEAD + b'17,"result":{}}', 17, -(2**63) - 1),
    (HEAD + b'17,"result":{}}', 1, 42),  # not the id the parser read
    (HEAD + b'17,"result":{}}', 171, 42),
    (HEAD + b'171,"result":{}}', 17, 42),  # a longer number with the same start
    (HEAD + b'17 ,"result":{}}', 17, 42),  # spaced
    (HEAD + b'17,"result": {}}', 17, 42),
    (HEAD + b'17,"result":{}}\n', 17, 42),  # anything after the brace
    (HEAD + b'17,"result":{}} ', 17, 42),
    # A second id, which a parser reads instead of the first (found by review), or any
    # other member after the value: no room is left for one.
    (HEAD + b'17,"result":{},"id":17}', 17, 42),
    (HEAD + b'17,"result":{},"\\u0069d":17}', 17, 42),
    (HEAD + b'17,"result":{"a":1},"result":{}}', 17, 42),
    (HEAD + b'17,"error":{"code":1,"message":"m"},"id":17}', 17, 42),
    (HEAD + b'17,"id":17,"result":{}}', 17, 42),
    (HEAD + b'17,"\\u0072esult":{}}', 17, 42),
    (b'{"id":17,"jsonrpc":"2.0","result":{}}', 17, 42),  # another order
    (b'{"result":{},"jsonrpc":"2.0","id":17}', 17, 42),
    (b'{ "jsonrpc":"2.0","id":17,"result":{}}', 17, 42),
    (HEAD + b'17,', 17, 42),
    (HEAD + b'17', 17, 42),
    (HEAD, 17, 42),
    (b"", 17, 42),
    (HEAD + b'17,"result":{}}', -17, 42),
    (HEAD + b'17,"result":{}}', 2**64, 42),
    (HEAD + b'17,"result":{}}', "17", 42),
])
def test_splice_declines_what_it_cannot_splice(ms: ModuleType, line: bytes,
                                               upstream_id: object, client_id: object) -> None:
    assert splice(ms, line, upstream_id, client_id) is None


def test_splice_needs_the_values_exact_size(ms: ModuleType) -> None:
    line = HEAD + b'17,"result":{"a":1}}'
    assert ms.splice_response(line, 17, 42, False, 7) == HEAD + b'42,"result":{"a":1}}'
    for size in (0, 6, 8, 100, -1):
        assert ms.splice_response(line, 17, 42, False, size) is None
    assert ms.splice_response(line, 17, 42, True, 7) is None  # not an error member


def test_splice_agrees_with_the_parser_and_the_other_twin() -> None:
    """On random responses, whenever either twin splices, both give the same bytes, and
    the client reads exactly the upstream's response with its own id."""
    import mcpfast_ext.message_scan_py as pure
    implementations = [pure]
    if os.environ.get("MCPFAST_NO_EXTENSIONS") != "1":
        implementations.append(compiled("message_scan"))
    rng = random.Random(11)
    spliced = 0
    for _ in range(2000):
        upstream_id = rng.choice([0, 1, 9, 10, 99, 12345, 2**32, 2**64 - 1])
        client_id = rng.choice([0, 1, -1, 7, 10**18, -(2**63), 2**63 - 1, "x", "\u00e9"])
        member = rng.choice(['"result":{"a":[1,2,{"b":"}"}]}', '"error":{"code":-1,'
                             '"message":"m","data":null}', '"result":{}'])
        layout = rng.choice([
            '{"jsonrpc":"2.0","id":%d,%s}', '{"id":%d,"jsonrpc":"2.0",%s}',
            '{"jsonrpc": "2.0", "id": %d, %s}', '{"jsonrpc":"2.0","id":%d,%s}\n'])
        line = (layout % (upstream_id, member)).encode()
        results = {impl.__name__: splice(impl, line, upstream_id, client_id)
                   for impl in implementations}
        assert len(set(results.values())) == 1, (line, client_id, results)
        out = next(iter(results.values()))
        if out is None:
            continue
        spliced += 1
        expected = json.loads(line)
        expected["id"] = client_id
        assert msgspec.json.decode(out) == expected
    assert spliced > 300


def test_request_line_is_the_encoders_envelope_and_the_delimiter(ms: ModuleType) -> None:
    raw = msgspec.Raw(b'{"name":"search","arguments":{"q":"\\u00e9 \\"x\\""}}')
    for upstream_id in (0, 7, 10, 2**32, 2**64 - 1):
        for params in (raw, bytes(raw), b"[]", UNSET):
            for delimiter in (b"", b"\n"):
                expected = jsonrpc.reencode(jsonrpc.Envelope(
                    jsonrpc="2.0", id=upstream_id, method="tools/call",
                    params=msgspec.Raw(params) if type(params) is bytes else params))
                assert ms.request_line(upstream_id, "tools/call", params, delimiter) == \
                    expected + delimiter


@pytest.mark.parametrize("method", ['a"b', "a\\b", "tab\t", "nl\n", "del\x7f", "é", "\u2028",
                                    "\x00"])
def test_request_line_leaves_a_method_needing_an_escape_to_the_encoder(
        ms: ModuleType, method: str) -> None:
    assert ms.request_line(1, method, b"{}", b"\n") is None
    assert ms.request_line(1, method, UNSET, b"") is None


def test_request_line_agrees_with_the_encoder_and_the_other_twin() -> None:
    """Random methods and params: where either twin writes the line, both write the
    encoder's bytes; where one declines, so does the other."""
    import mcpfast_ext.message_scan_py as pure
    implementations = [pure]
    if os.environ.get("MCPFAST_NO_EXTENSIONS") != "1":
        implementations.append(compiled("message_scan"))
    rng = random.Random(13)
    alphabet = 'az/_-. 09"\\\t\x7f\x1féZ~{}'
    written = 0
    for _ in range(3000):
        method = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        params = rng.choice([UNSET, b"{}", msgspec.Raw(b'{"a":[1,"\\n"]}'), b"null",
                             msgspec.json.encode({"k": "v" * rng.randrange(300)})])
        upstream_id = rng.randrange(2**64)
        delimiter = rng.choice([b"", b"\n"])
        results = {impl.__name__: impl.request_line(upstream_id, method, params, delimiter)
                   for impl in implementations}
        assert len(set(results.values())) == 1, (method, results)
        line = next(iter(results.values()))
        if line is None:
            assert not (method.isascii() and method.isprintable()) or '"' in method \
                or "\\" in method
            continue
        written += 1
        assert line == jsonrpc.reencode(jsonrpc.Envelope(
            jsonrpc="2.0", id=upstream_id, method=method,
            params=msgspec.Raw(params) if type(params) is bytes else params)) + delimiter
    assert written > 300
