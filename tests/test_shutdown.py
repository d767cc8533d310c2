"""Graceful shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
import websockets
from websockets.frames import Close

from .conftest import GatewayProcess, group_alive, run, wait_until, ws_client


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_drain_finishes_in_flight_work_then_closes_1001(gateway_factory: Any, sig: int) -> None:
    gw: GatewayProcess = gateway_factory(shutdown={"drain_timeout": 10.0})
    upstream_pid = gw.upstream("sdk")["pid"]

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 1.5}, 1)
            await asyncio.sleep(0.3)
            assert gw.proc is not None
            gw.proc.send_signal(sig)
            await asyncio.sleep(0.3)
            status, body = gw.admin_get("/readiness")
            assert status == 503 and b"draining" in body
            # New connections are refused while draining.
            with pytest.raises(OSError):
                async with ws_client(gw.ws_url):
                    pass
            response = await c.wait_for(1)
            assert response["result"]["content"][0]["text"].startswith("done")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(c.ws.recv(), 10)
            assert closed.value.rcvd == Close(1001, "gateway shutting down")
    run(body())
    assert gw.proc is not None
    assert gw.proc.wait(10) == 0
    wait_until(lambda: not group_alive(upstream_pid), 5)
    assert "stopped" in gw.log()


def test_drain_deadline_fails_what_is_left(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(shutdown={"drain_timeout": 0.5})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 30}, 1)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            response = await c.wait_for(1)
            assert response["error"]["code"] == -32000
            assert "shutting down" in response["error"]["message"]
            assert time.monotonic() - started < 5
    run(body())
    assert gw.proc is not None and gw.proc.wait(10) == 0


def test_stop_escalates_to_sigkill(gateway_factory: Any) -> None:
    from .conftest import ROOT

    stubborn = str(ROOT / "tests" / "servers" / "stubborn_server.py")
    gw: GatewayProcess = gateway_factory({"stubborn": {"command": ["python", stubborn],
                                                       "stop_timeout": 0.5}})
    pid = gw.upstream("stubborn")["pid"]
    started = time.monotonic()
    assert gw.terminate() == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: not group_alive(pid), 5)
    assert f"pid {pid} ended with code -9" in gw.log()
