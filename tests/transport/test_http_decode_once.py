"""Streamable HTTP decodes a request once and routes its answer without reading it again.

The endpoint decodes the body to check it and hands the envelope to the core with the
bytes; the core answers through the session's ``answer`` with the request id, so that
the transport picks the stream without parsing the response. Counted here on an
in-process gateway fronting a real stdio upstream, with the connection's socket
replaced by a list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.protocol import jsonrpc
from mcpfast.transport import http_sessions
from mcpfast.transport.tcp import TcpConnection

from ..conftest import (
    ROOT,
    InProcessListener,
    Socket,
    http_post,
    next_response,
    run,
    toml_value,
)

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]


class Counting:
    """Wraps a decoder, counting its calls."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.calls = 0

    def decode(self, data: Any) -> Any:
        self.calls += 1
        return self.decoder.decode(data)


def connected(gw: Gateway) -> tuple[TcpConnection, Socket]:
    """A client connection to ``gw``, its socket replaced by a list."""
    connection = TcpConnection(gw, InProcessListener(gw))  # type: ignore[arg-type]
    socket = Socket()
    connection.connection_made(socket)  # type: ignore[arg-type]
    return connection, socket


def test_a_request_is_decoded_once_and_its_answer_not_at_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"[upstreams.bg]\ncommand = {toml_value(BACKGROUND)}\n"
                      'era = "legacy"\n')

    async def main() -> None:
        gw = Gateway(load(str(config)))
        await gw.start_upstreams()
        try:
            connection, socket = connected(gw)
            connection.data_received(http_post({
                "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"}}}))
            head, _ = await next_response(socket)
            session_id = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                              if line.lower().startswith("mcp-session-id:"))

            decodes = 0
            decode = jsonrpc.decode

            def counting_decode(data: bytes, max_depth: int | None = None) -> Any:
                # A client's message is decoded with a depth limit; an upstream's is
                # read with none (and is not what this test counts).
                nonlocal decodes
                decodes += max_depth is not None
                return decode(data, max_depth)

            monkeypatch.setattr(jsonrpc, "decode", counting_decode)
            routing = Counting(http_sessions._out)
            monkeypatch.setattr(http_sessions, "_out", routing)
            connection.data_received(http_post({
                "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                    "name": "big", "arguments": {"size": 3}}}, session_id))
            head, body = await next_response(socket)
            assert head.startswith("HTTP/1.1 200 OK\r\n"), head
            assert json.loads(body) == {"jsonrpc": "2.0", "id": 2, "result": {
                "content": [{"type": "text", "text": "xxx"}]}}
            assert f"Mcp-Session-Id: {session_id}" in head.split("\r\n")
            assert (decodes, routing.calls) == (1, 0)

            # An error answer, flagged as one: the legacy transport keeps its 200.
            connection.data_received(http_post({
                "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                    "name": "nope", "arguments": {}}}, session_id))
            head, body = await next_response(socket)
            assert head.startswith("HTTP/1.1 200 OK\r\n"), head
            assert json.loads(body)["error"]["code"] == jsonrpc.INVALID_PARAMS
            assert (decodes, routing.calls) == (2, 0)
        finally:
            await gw.stop()
    run(main())


def test_a_modern_request_has_its_params_read_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2026-07-28 POST: the endpoint reads its params and ``_meta`` for the header
    checks, and the core takes them as read rather than decoding the params and reading
    the ``_meta`` again."""
    from mcpfast.gateway import requests
    from mcpfast.protocol import modern
    from mcpfast.transport import streamable

    config = tmp_path / "gw.toml"
    config.write_text(f"[upstreams.bg]\ncommand = {toml_value(BACKGROUND)}\n"
                      'era = "legacy"\n')
    meta = {modern.META_PROTOCOL_VERSION: modern.LATEST_MODERN,
            modern.META_CLIENT_CAPABILITIES: {}}

    def call(request_id: int, name: str) -> bytes:
        return http_post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                          "params": {"name": name, "arguments": {"size": 3}, "_meta": meta}},
                         **{"MCP-Protocol-Version": modern.LATEST_MODERN,
                            "Mcp-Method": "tools/call", "Mcp-Name": name})

    async def main() -> None:
        gw = Gateway(load(str(config)))
        await gw.start_upstreams()
        try:
            connection, socket = connected(gw)
            endpoint_reads = Counting(streamable._any)
            core_reads = Counting(requests._any)
            monkeypatch.setattr(streamable, "_any", endpoint_reads)
            monkeypatch.setattr(requests, "_any", core_reads)
            metas = 0
            read_meta = modern.read_meta

            def counting_read_meta(params: object) -> modern.ModernMeta:
                nonlocal metas
                metas += 1
                return read_meta(params)

            monkeypatch.setattr(modern, "read_meta", counting_read_meta)
            monkeypatch.setattr(requests, "read_meta", counting_read_meta)
            connection.data_received(call(1, "big"))
            head, body = await next_response(socket)
            assert head.startswith("HTTP/1.1 200 OK\r\n"), head
            answer = json.loads(body)
            assert answer["id"] == 1
            assert answer["result"]["content"] == [{"type": "text", "text": "xxx"}]
            assert (endpoint_reads.calls, core_reads.calls, metas) == (1, 0, 1)

            # An unknown tool, refused by the core from the params it was handed.
            connection.data_received(call(2, "nope"))
            head, body = await next_response(socket)
            assert json.loads(body)["error"]["code"] == jsonrpc.INVALID_PARAMS, body
            assert (endpoint_reads.calls, core_reads.calls, metas) == (2, 0, 2)
        finally:
            await gw.stop()
    run(main())
