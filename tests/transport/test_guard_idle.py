"""``listen.idle_timeout``: a client that sends nothing for that long is closed (1001
"idle timeout"), but not while the gateway is working for it, or it holds a listen
stream open or a resource subscription. Timed against the configured value, with the
sweeper's resolution."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.frames import Close

from ..conftest import GatewayProcess, modern, recording_upstream, run, running_gateway, ws_client

IDLE = 1.0
SWEEP_PERIOD = 0.5
"""The sweeper notices activity and idleness each period, so a close comes up to two
periods after the idle time (sweeper.SWEEP_INTERVAL)."""
SLACK = 1.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("idle")
    with running_gateway(workdir, {"rec": recording_upstream(workdir / "record.jsonl")},
                         listen={"idle_timeout": IDLE}) as gateway:
        yield gateway


async def closed_after(ws: object, since: float) -> float:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)  # type: ignore[attr-defined]
    assert closed.value.rcvd == Close(1001, "idle timeout")
    return time.monotonic() - since


def test_an_idle_client_is_closed_in_time(gw: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            last = time.monotonic()
            idle = await closed_after(c.ws, last)
            assert IDLE <= idle < IDLE + 2 * SWEEP_PERIOD + SLACK, idle
    run(body())


def test_traffic_keeps_a_client_open(gw: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            for _ in range(8):  # 2.4 s in all, a message every 0.3 s
                await asyncio.sleep(0.3)
                assert (await c.request("ping"))["result"] == {}
            await closed_after(c.ws, time.monotonic())
    run(body())


def test_a_client_waiting_for_an_answer_is_not_idle(gateway_factory: Any,
                                                    tmp_path: Path) -> None:
    """Nor is it idle at once when the answer comes: its idle time starts then (to a
    sweep), not when it sent its request."""
    idle = 2.0  # apart from a close at the next sweep (0.5 s) by more than the slack
    gw = gateway_factory({"rec": recording_upstream(tmp_path / "record.jsonl")},
                         listen={"idle_timeout": idle})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            response = await c.call_tool("slow", {"seconds": idle * 1.5}, timeout=10)
            answered = time.monotonic()
            assert response["result"]["content"][0]["text"] == "slow done"
            after = await closed_after(c.ws, answered)
            assert idle - SWEEP_PERIOD <= after < idle + 2 * SWEEP_PERIOD + SLACK, after
    run(body())


def test_a_client_holding_a_listen_stream_is_not_idle(gw: GatewayProcess) -> None:
    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                          "params": modern({"notifications": {"toolsListChanged": True}})})
            ack = await c.receive()
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.ws.recv(), IDLE * 3)
            await c.notify("notifications/cancelled", {"requestId": "L"})
            await closed_after(c.ws, time.monotonic())
    run(body())


def test_a_client_subscribed_to_a_resource_is_not_idle(gw: GatewayProcess) -> None:
    """It waits for the resource's updates (resources/subscribe), as a listen stream's
    holder waits for its notifications; once it unsubscribes, it is idle again."""
    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            uri = "rec://rec/doc"
            assert "result" in await c.request("resources/subscribe", {"uri": uri})
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.ws.recv(), IDLE * 3)
            assert "result" in await c.request("resources/unsubscribe", {"uri": uri})
            await closed_after(c.ws, time.monotonic())
    run(body())
