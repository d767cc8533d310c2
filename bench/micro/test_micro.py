"""One benchmark per hot-path step of a ``tools/call`` (DESIGN.md), on ~300-byte messages.

Each group is one step; ``bench.micro.report`` puts a group's pure and compiled means
side by side. Every benchmark checks its result once afterwards, so a broken fast path
cannot post a fast time. Timings include pytest-benchmark's own per-call overhead (a few
tens of nanoseconds), which compresses the speed-up of the cheapest calls.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from mcpfast.protocol import jsonrpc
from mcpfast.protocol.ndjson import LineFramer

MESSAGE_SIZE = 300
# RFC 6455 5.7's example key.
MASK = bytes.fromhex("37fa213d")


def padded(message: dict[str, Any], pad: list[str | int], size: int) -> bytes:
    """``message`` as compact JSON, grown to ``size`` bytes by filling the string that
    ``pad`` (a path of keys and indexes) points to."""
    target: Any = message
    for key in pad[:-1]:
        target = target[key]
    target[pad[-1]] = ""
    short = len(json.dumps(message, separators=(",", ":")))
    target[pad[-1]] = "x" * (size - short)
    data = json.dumps(message, separators=(",", ":")).encode()
    assert len(data) == size
    return data


def tools_call(request_id: int = 42, size: int = MESSAGE_SIZE) -> bytes:
    return padded(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {
                "name": "docs__search",
                "arguments": {"query": "", "limit": 10, "fuzzy": True},
                "_meta": {"progressToken": "tok-7f3a"},
            },
        },
        ["params", "arguments", "query"],
        size,
    )


def tools_result(request_id: int = 42) -> bytes:
    return padded(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": ""}], "isError": False},
        },
        ["result", "content", 0, "text"],
        MESSAGE_SIZE,
    )


@pytest.mark.benchmark(group="WebSocket parse + unmask, 300 B masked text frame")
def test_websocket_parse(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    codec = hot_path["websocket_codec"]
    payload = tools_call()
    frame = codec.encode_frame(codec.OP_TEXT, payload, mask=MASK)
    parser = codec.FrameParser(expect_masked=True, max_payload=1 << 20)
    # Each call holds one whole frame, so the parser's buffer is empty between rounds.
    frames = benchmark(parser.feed, frame)
    assert frames == [(True, codec.OP_TEXT, payload)]


@pytest.mark.benchmark(group="WebSocket serialize, 300 B unmasked server text frame")
def test_websocket_encode(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    codec = hot_path["websocket_codec"]
    payload = tools_result()
    frame = benchmark(codec.encode_frame, codec.OP_TEXT, payload)
    assert frame == b"\x81\x7e" + len(payload).to_bytes(2, "big") + payload


def rewrite_id(data: bytes) -> bytes:
    env = jsonrpc.decode(data)
    return jsonrpc.reencode(jsonrpc.Envelope(jsonrpc="2.0", id=1_000_001, method=env.method,
                                             params=env.params))


@pytest.mark.benchmark(group="JSON-RPC decode + id rewrite + encode, 300 B tools/call")
@pytest.mark.parametrize("implementation", ["msgspec"])
def test_jsonrpc_rewrite(benchmark: Any, implementation: str) -> None:
    data = tools_call()
    out = benchmark(rewrite_id, data)
    assert json.loads(out) == {**json.loads(data), "id": 1_000_001}


@pytest.mark.benchmark(group="Routing lookup, tool in a 200-tool table")
def test_routing_lookup(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    rt = hot_path["routing_table"]
    table = rt.RoutingTable()
    for i in range(200):
        assert table.add(rt.KIND_TOOL, f"upstream{i % 8}__tool_{i}", i % 8, f"tool_{i}")
    route = benchmark(table.lookup, rt.KIND_TOOL, "upstream5__tool_117")
    assert route == (5, "tool_117")


@pytest.mark.benchmark(group="Token bucket take(), allowed")
def test_token_bucket_take(benchmark: Any, hot_path: dict[str, ModuleType]) -> None:
    # A burst no benchmark run can drain: every call takes the allowed path. The clock
    # is fixed, so after the first call no refill is computed.
    bucket = hot_path["token_bucket"].TokenBucket(rate=1000.0, burst=1e15, now=0.0)
    assert benchmark(bucket.take, 1.0) is True


@pytest.mark.benchmark(group="NDJSON framing, one chunk of 16 lines of 300 B")
@pytest.mark.parametrize("implementation", ["pure"])
def test_ndjson_feed(benchmark: Any, implementation: str) -> None:
    lines = [tools_call(request_id, MESSAGE_SIZE - 1) for request_id in range(100, 116)]
    chunk = b"".join(line + b"\n" for line in lines)
    framer = LineFramer(4 * 1024 * 1024)
    assert benchmark(framer.feed, chunk) == lines
