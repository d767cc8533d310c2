"""The contract with transports that make one session per modern request (Streamable
HTTP): ``session.era = "modern"``, every message in through ``Gateway.handle``, out
through ``session.send``, and ``close_session`` when the answer is sent or the client is
gone. In process, against real upstreams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mcpfast.config import parse
from mcpfast.gateway.gateway import Gateway
from mcpfast.gateway.session import DownstreamSession

from ..conftest import LEVEL, SUB_ID, forked, modern, toml_value

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Exchange:
    """One HTTP-request-shaped session and what the gateway sent on it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.sent: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.session: DownstreamSession = gateway.open_session(
            "http", "127.0.0.1:1", self._send, lambda code, reason: None)
        self.session.era = "modern"

    def _send(self, data: bytes) -> None:
        self.sent.append(json.loads(data))
        self.arrived.set()

    def post(self, message: dict[str, Any]) -> None:
        self.gateway.handle(self.session, json.dumps({"jsonrpc": "2.0", **message}).encode())

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        while not self.sent:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), timeout)
        return self.sent.pop(0)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    config = parse(f'''
[listen]
port = 0
[upstreams.events]
command = {toml_value(forked("events_server"))}
init_timeout = 10.0
[upstreams.demo]
command = ["python", "-m", "mcpfast.demo"]
''')
    gw = Gateway(config)
    await gw.start_upstreams()
    try:
        yield gw
    finally:
        await gw.drain()
        await gw.stop()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_modern_session_needs_the_envelope(gateway: Gateway) -> None:
    exchange = Exchange(gateway)
    exchange.post({"id": 1, "method": "tools/list"})
    answer = await exchange.next()
    assert answer["id"] == 1 and answer["error"]["code"] == -32602
    exchange.post({"id": 2, "method": "tools/list", "params": modern()})
    assert (await exchange.next())["result"]["resultType"] == "complete"


async def test_close_session_cancels_the_upstream_request(gateway: Gateway) -> None:
    upstream = gateway.upstreams["events"]
    exchange = Exchange(gateway)
    exchange.post({"id": "slow", "method": "tools/call", "params": modern(
        {"name": "events__slow", "arguments": {"seconds": 30}})})
    await until(lambda: upstream.pending)
    gateway.close_session(exchange.session)
    assert not upstream.pending and not exchange.session.inflight
    await asyncio.sleep(0.2)
    assert exchange.sent == []


async def test_close_session_ends_the_listen_and_its_subscriptions(gateway: Gateway) -> None:
    upstream = gateway.upstreams["events"]
    exchange = Exchange(gateway)
    exchange.post({"id": 4, "method": "subscriptions/listen", "params": modern(
        {"notifications": {"toolsListChanged": True,
                           "resourceSubscriptions": ["test://static"]}})})
    ack = await exchange.next()
    assert ack["params"] == {"_meta": {SUB_ID: 4}, "notifications": {
        "toolsListChanged": True, "resourceSubscriptions": ["test://static"]}}
    assert upstream.subscriptions == {"test://static": 1}
    assert exchange.session.listens and not exchange.session.inflight
    gateway.close_session(exchange.session)
    assert upstream.subscriptions == {}
    caller = Exchange(gateway)
    caller.post({"id": 1, "method": "tools/call", "params": modern(
        {"name": "events__announce", "arguments": {"tool_name": "late"}})})
    await caller.next()
    await asyncio.sleep(0.3)
    assert exchange.sent == []


async def test_stopping_the_gateway_ends_listens_gracefully(gateway: Gateway) -> None:
    exchange = Exchange(gateway)
    exchange.post({"id": "l", "method": "subscriptions/listen", "params": modern(
        {"notifications": {"promptsListChanged": True}})})
    await exchange.next()
    await gateway.stop()
    assert await exchange.next() == {"jsonrpc": "2.0", "id": "l", "result": {
        "resultType": "complete", "_meta": {SUB_ID: "l"}}}


async def test_a_cancelled_request_gives_back_its_log_level(gateway: Gateway) -> None:
    demo = gateway.upstreams["demo"]
    exchange = Exchange(gateway)
    exchange.post({"id": 1, "method": "tools/call", "params": modern(
        {"name": "demo__countdown", "arguments": {"n": 20}}, **{LEVEL: "debug"})})
    await until(lambda: demo.pending)
    assert demo.request_levels == {0: 1} and demo.log_level == "debug"
    gateway.close_session(exchange.session)
    assert demo.request_levels == {} and demo.log_level == "emergency"
