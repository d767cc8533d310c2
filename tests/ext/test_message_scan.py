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


# -- read_call ----------------------------------------------------------------------------
CALL = b'{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":%s}'


@pytest.mark.parametrize(("message", "expected"), [
    (CALL % (b"7", b'{"name":"echo","arguments":{"text":"hi"}}'),
     (7, "echo", b'{"name":"echo","arguments":{"text":"hi"}}')),
    # How other encoders write it: spaces, another order, escapes and UTF-8 in values.
    (b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"arguments": {"q": "\\u00e9'
     b'\\n\\"", "n": [1, -2.5e-3, 0, true, false, null, {}]}, "name": "s"}, "id": "r-1"}',
     ("r-1", "s", b'{"arguments": {"q": "\\u00e9\\n\\"", "n": [1, -2.5e-3, 0, true, false, '
                  b'null, {}]}, "name": "s"}')),
    ('{"params":{"name":"é→"},"id":-12,"jsonrpc":"2.0","method":"tools/call"}'.encode(),
     (-12, "é→", '{"name":"é→"}'.encode())),
    (b'\t {"jsonrpc":"2.0","id":"","method":"tools/call","params":{"name":""}} \t',
     ("", "", b'{"name":""}')),
    (CALL % (b"999999999999999999", b'{"name":"x"}'), (10**18 - 1, "x", b'{"name":"x"}')),
    (CALL % (b"-0", b'{"name":"x"}'), (0, "x", b'{"name":"x"}')),
])
def test_read_call_reads_a_common_tools_call(ms: ModuleType, message: bytes,
                                             expected: tuple[Any, ...]) -> None:
    read = ms.read_call(message, 64)
    assert read == expected
    assert type(read[0]) is type(expected[0])


@pytest.mark.parametrize("message", [
    CALL % (b"1", b'{"name":"x","name":"y"}'),  # a name twice
    CALL % (b"1", b'{"na\\u006de":"x"}'),  # a key with an escape
    CALL % (b"1", b'{"name":"\\u0078"}'),  # a name with one
    CALL % (b"1", b'{"name":"x","_meta":{"progressToken":1}}'),
    CALL % (b"1", b'{"name":"x","uri":"u"}'),
    CALL % (b"1", b'{"name":"x","ref":{}}'),
    CALL % (b"1", b'{"name":"x","cursor":"c"}'),
    CALL % (b"1", b'{"arguments":{}}'),  # no name
    CALL % (b"1", b'{"name":7}'),
    CALL % (b"1", b'{}'),
    CALL % (b"1", b'[]'),
    CALL % (b"1", b"null"),
    CALL % (b"01", b'{"name":"x"}'),
    CALL % (b"1.0", b'{"name":"x"}'),
    CALL % (b"1e3", b'{"name":"x"}'),
    CALL % (b"1000000000000000000", b'{"name":"x"}'),  # 19 digits
    CALL % (b"null", b'{"name":"x"}'),
    CALL % (b"true", b'{"name":"x"}'),
    CALL % (b'"a\\"b"', b'{"name":"x"}'),
    CALL % (b"1", b'{"name":"x","a":"\\ud800"}'),  # an escaped surrogate
    CALL % (b"1", b'{"name":"x","a":"\xed\xa0\x80"}'),  # an encoded one
    CALL % (b"1", b'{"name":"x","a":"\xc0\xaf"}'),  # an overlong encoding
    CALL % (b"1", b'{"name":"x","a":"\xff"}'),
    CALL % (b"1", b'{"name":"x","a":"tab\tin a string"}'),
    CALL % (b"1", b'{"name":"x","a":"\\x"}'),
    CALL % (b"1", b'{"name":"x","a":01}'),
    CALL % (b"1", b'{"name":"x","a":1.}'),
    CALL % (b"1", b'{"name":"x","a":-}'),
    CALL % (b"1", b'{"name":"x","a":tru}'),
    CALL % (b"1", b'{"name":"x","a":[1,]}'),
    CALL % (b"1", b'{"name":"x","a":{"b":1,}}'),
    CALL % (b"1", b'{"name":"x","a":{"b"}}'),
    CALL % (b"1", b'{"name":"x",\n"a":1}'),  # a raw newline between tokens
    CALL % (b"1", b'{"name":"x",\r"a":1}'),
    CALL % (b"1", b'{"name":"x","a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['
               b'[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}'),
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/callx","params":{"name":"x"}}',
    b'{"jsonrpc":"2.0 ","id":1,"method":"tools/call","params":{"name":"x"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"extra":1}',
    b'{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"x"}}',
    b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}',  # a notification
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}} {}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}',
    b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}]',
    b"", b"{", b"{}", b" ", b'{"',
])
def test_read_call_declines_what_it_does_not_read_the_common_way(
        ms: ModuleType, message: bytes) -> None:
    assert ms.read_call(message, 64) is None


def test_read_call_counts_levels_as_the_depth_limit_does(ms: ModuleType) -> None:
    message = CALL % (b"1", b'{"name":"x","arguments":{"a":[{}]}}')  # 5 levels
    assert ms.read_call(message, 5) is not None
    assert ms.read_call(message, 4) is None
    assert ms.read_call(CALL % (b"1", b'{"name":"x"}'), 2) is not None
    assert ms.read_call(CALL % (b"1", b'{"name":"x"}'), 1) is None


def test_read_call_refuses_what_is_not_bytes(ms: ModuleType) -> None:
    with pytest.raises(TypeError):
        ms.read_call(CALL.decode(), 64)


def _random_json(rng: random.Random, depth: int) -> bytes:
    pick = rng.randrange(9 if depth < 6 else 6)
    if pick == 0:
        return rng.choice([b"0", b"-1", b"12.5", b"1e9", b"-0.0E+1", b"123456789012345678901"])
    if pick == 1:
        return rng.choice([b"true", b"false", b"null"])
    if pick in (2, 3, 4, 5):
        return rng.choice([b'"plain"', b'""', b'"\\u00e9\\t\\"\\\\\\/"', '"é中😀"'.encode(),
                           b'"name"', b'"\\ud83d\\ude00"', b'"' + b"x" * rng.randrange(40)
                           + b'"'])
    if pick == 6:
        return b"[" + b",".join(_random_json(rng, depth + 1)
                                for _ in range(rng.randrange(4))) + b"]"
    keys = [b'"a"', b'"name"', b'"arguments"', b'"_meta"', b'"uri"', b'"k\\u0065y"', b'"b"']
    return b"{" + b",".join(rng.choice(keys) + b":" + _random_json(rng, depth + 1)
                            for _ in range(rng.randrange(4))) + b"}"


def _random_call(rng: random.Random) -> bytes:
    members = [(b'"jsonrpc"', rng.choice([b'"2.0"'] * 8 + [b'"1.0"', b"2"])),
               (b'"id"', rng.choice([b"1", b"-7", b'"s"', b"0", b"1.5", b"null",
                                     b"99999999999999999999", b'"\\u0041"'])),
               (b'"method"', rng.choice([b'"tools/call"'] * 8 + [b'"ping"'])),
               (b'"params"', b'{"name":' + rng.choice([b'"echo"'] * 6 + [b'"\xc3\xa9"', b"1"])
                + b"".join(b"," + rng.choice([b'"arguments"', b'"a"', b'"name"', b'"_meta"'])
                           + b":" + _random_json(rng, 3) for _ in range(rng.randrange(3)))
                + b"}")]
    rng.shuffle(members)
    if rng.random() < 0.1:
        members.append(rng.choice(members))
    if rng.random() < 0.05:
        members.pop()
    space = rng.choice([b"", b"", b" ", b"\t"])
    message = b"{" + space + (b"," + space).join(
        key + space + b":" + space + value for key, value in members) + space + b"}"
    if rng.random() < 0.3:  # a byte changed, removed or added
        at = rng.randrange(len(message))
        change = bytes([rng.choice(b'{}[]",:\\ \n0a\xc3\x00\xff')])
        message = rng.choice([message[:at] + change + message[at + 1:],
                              message[:at] + message[at + 1:],
                              message[:at] + change + message[at:]])
    return message


def test_read_call_agrees_with_the_parser_and_the_other_twin() -> None:
    """On random calls and mutations of them, both twins read the same; and what they
    read is what the parser reads: the message is valid (decoded at the same depth
    limit), its id, method and params are those, and routing reads the same name and
    nothing else it routes by."""
    import mcpfast_ext.message_scan_py as pure
    from mcpfast.gateway.call import route_params
    implementations = [pure]
    if os.environ.get("MCPFAST_NO_EXTENSIONS") != "1":
        implementations.append(compiled("message_scan"))
    rng = random.Random(17)
    read = 0
    for _ in range(6000):
        message = _random_call(rng)
        max_depth = rng.choice([64, 64, 5, 4, 3])
        results = [impl.read_call(message, max_depth) for impl in implementations]
        assert all(result == results[0] for result in results), (message, results)
        result = results[0]
        if result is None:
            continue
        read += 1
        env = jsonrpc.decode(message, max_depth)
        assert (env.jsonrpc, env.method) == ("2.0", "tools/call")
        assert env.id == result[0] and type(env.id) is type(result[0])
        assert bytes(env.params) == result[2]
        head = route_params.decode(result[2])
        assert head.name == result[1]
        assert (head.uri, head.ref, head.cursor, head.meta) == (UNSET,) * 4
        assert b"\n" not in message and b"\r" not in message
        message.decode()  # UTF-8
    assert read > 400, read


# -- read_result and respond_as -----------------------------------------------------------
@pytest.mark.parametrize(("line", "expected"), [
    (HEAD + b'17,"result":{"content":[{"type":"text","text":"a \\"b\\" \\u00e9"}]}}', 17),
    (HEAD + b'0,"result":{}}', 0),
    (HEAD + b'999999999999999999,"result":[1, 2.5e-1, true, null, "x"]}', 10**18 - 1),
    (HEAD + b'3,"result":"text"}', 3),
    (HEAD + b'3,"result":null}', 3),
    (HEAD + '3,"result":{"t":"é中"}}'.encode(), 3),
])
def test_read_result_reads_a_result_written_the_common_way(ms: ModuleType, line: bytes,
                                                           expected: int) -> None:
    assert ms.read_result(line) == expected


@pytest.mark.parametrize("line", [
    HEAD + b'01,"result":{}}', HEAD + b'-1,"result":{}}', HEAD + b'"a","result":{}}',
    HEAD + b'1.0,"result":{}}', HEAD + b'1000000000000000000,"result":{}}',
    HEAD + b'1,"error":{"code":1,"message":"m"}}', HEAD + b'1, "result":{}}',
    HEAD + b'1,"result": {}}', HEAD + b'1,"result":{}} ', HEAD + b'1,"result":{}}\n',
    HEAD + b'1,"result":{},"id":2}', HEAD + b'1,"result":{}', HEAD + b'1,"result":}',
    HEAD + b'1,"result":{"a":"\\ud800"}}', HEAD + b'1,"result":{"a":"\xff"}}',
    HEAD + b'1,"result":{"a":\n1}}', HEAD + b'1,"result":{"a":"\t"}}',
    HEAD + b'1,"result":' + b"[" * 600 + b"]" * 600 + b"}",
    b'{"id":1,"jsonrpc":"2.0","result":{}}', b'{"jsonrpc":"2.0","id":1}', b"", b"}",
])
def test_read_result_declines_the_rest(ms: ModuleType, line: bytes) -> None:
    assert ms.read_result(line) is None


def test_respond_as_writes_the_client_id_in_the_upstream_id_place(ms: ModuleType) -> None:
    line = HEAD + b'123,"result":{"a":1}}'
    assert ms.respond_as(line, 7) == HEAD + b'7,"result":{"a":1}}'
    assert ms.respond_as(line, -(2**63)) == HEAD + b'-9223372036854775808,"result":{"a":1}}'
    assert ms.respond_as(line, "r-1 x") == HEAD + b'"r-1 x","result":{"a":1}}'
    assert ms.respond_as(line, "") == HEAD + b'"","result":{"a":1}}'
    for refused in (2**63, True, None, 1.0, 'a"b', "a\\b", "é", "\x7f", "tab\t"):
        assert ms.respond_as(line, refused) is None, refused
    for other in (b'{"id":1,"jsonrpc":"2.0","result":{}}', HEAD + b'"s","result":{}}',
                  HEAD + b"12", HEAD + b',"result":{}}'):
        assert ms.respond_as(other, 1) is None


def test_read_result_and_respond_as_agree_with_the_parser_and_the_other_twin() -> None:
    """Random responses and mutations of them: both twins read and write the same, and
    a result they read is one the parser reads, with that id, which the client gets
    back as it came but for its own id."""
    import mcpfast_ext.message_scan_py as pure
    implementations = [pure]
    if os.environ.get("MCPFAST_NO_EXTENSIONS") != "1":
        implementations.append(compiled("message_scan"))
    rng = random.Random(19)
    read = 0
    for _ in range(6000):
        upstream_id = rng.choice([b"0", b"1", b"42", b"123456789012345678", b"01", b"-3"])
        value = _random_json(rng, rng.choice([1, 1, 3, 5]))
        line = rng.choice([HEAD + upstream_id + b',"result":' + value + b"}",
                           HEAD + upstream_id + b',"result":' + value + b"}",
                           b'{"jsonrpc":"2.0","result":' + value + b',"id":' + upstream_id
                           + b"}"])
        if rng.random() < 0.3:
            at = rng.randrange(len(line))
            change = bytes([rng.choice(b'{}[]",:\\ \n0a\xc3\x00\xff')])
            line = rng.choice([line[:at] + change + line[at + 1:], line[:at] + line[at + 1:],
                               line[:at] + change + line[at:]])
        results = [impl.read_result(line) for impl in implementations]
        assert all(result == results[0] for result in results), (line, results)
        client_id = rng.choice([5, -5, "s", 'q"', 2**70])
        written = [impl.respond_as(line, client_id) for impl in implementations]
        assert all(each == written[0] for each in written), (line, written)
        if results[0] is None:
            continue
        read += 1
        env = jsonrpc.decode(line, None)
        assert env.id == results[0] and env.error is UNSET and env.method is UNSET
        answer = msgspec.json.decode(written[0]) if written[0] is not None else None
        if answer is not None:
            assert answer == {**msgspec.json.decode(line), "id": client_id}
    assert read > 1000, read


def test_both_read_as_deep_as_a_message_may_nest(ms: ModuleType) -> None:
    """At the deepest ``listen.max_json_depth`` (512) and ``RESULT_DEPTH``, without
    running out of stack in either twin."""
    def nested(levels: int) -> bytes:
        return b"[" * levels + b"]" * levels
    call_at = CALL % (b"1", b'{"name":"x","a":' + nested(510) + b"}")  # 512 levels
    assert ms.read_call(call_at, 512) is not None
    assert ms.read_call(call_at, 511) is None
    result_at = HEAD + b'1,"result":' + nested(ms.RESULT_DEPTH - 1) + b"}"
    assert ms.read_result(result_at) == 1
    assert ms.read_result(HEAD + b'1,"result":' + nested(ms.RESULT_DEPTH) + b"}") is None


# -- may_repeat_a_name ----------------------------------------------------------------
@pytest.mark.parametrize(("params", "expected"), [
    (UNSET, False),
    (b'{"name":"search","arguments":{"q":"x"}}', False),
    (b'{"name":"search","arguments":{"name":"x"}}', True),
    (b'{"name":"a","name":"b"}', True),
    (b'{"uri":"file:///a","uri":"file:///b"}', True),
    (b'{"ref":{"type":"ref/prompt","name":"p"},"ref":{}}', True),
    (b'{"ref":{"type":"ref/prompt","name":"p"}}', False),
    (b'{"n\\u0061me":"a"}', True),
    (b'{"name":"a\\\\u"}', True),  # a backslash then u, as bytes: not told apart
    (b'{"name":"a \\"name"}', True),  # "name" inside a string counts as well
    (b'"name"name"', False),  # overlapping: counted as bytes.count counts, once
    (b'"name"name""name"', True),
    (b'{"name":"a\\n","x":"\\t"}', False),
    (b'', False),
    (b'"', False),
    (b'\\', False),
])
def test_may_repeat_a_name(ms: ModuleType, params: Any, expected: bool) -> None:
    assert ms.may_repeat_a_name(params) is expected
    if params is not UNSET:
        assert ms.may_repeat_a_name(msgspec.Raw(params)) is expected


def test_may_repeat_a_name_agrees_with_the_other_twin() -> None:
    """On random byte strings over the alphabet of the patterns, both twins give the
    same answer, which is the twin's four scans of the bytes."""
    import mcpfast_ext.message_scan_py as pure
    if os.environ.get("MCPFAST_NO_EXTENSIONS") == "1":
        pytest.skip("the compiled twin is not in use")
    c = compiled("message_scan")
    rng = random.Random(5)
    pieces = [b'"', b"name", b"uri", b"ref", b"\\", b"u", b"n", b"a", b"me", b'"name"',
              b'"uri"', b'"ref"', b"x", b":", b","]
    found = 0
    for _ in range(20000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        expected = pure.may_repeat_a_name(data)
        assert c.may_repeat_a_name(data) is expected, data
        found += expected
    assert 2000 < found < 18000
