"""Graceful shutdown on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.frames import Close

from ..conftest import (
    GatewayProcess,
    Record,
    group_alive,
    recording_upstream,
    run,
    wait_until,
    ws_client,
)


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
    from ..conftest import ROOT

    stubborn = str(ROOT / "tests" / "servers" / "stubborn_server.py")
    gw: GatewayProcess = gateway_factory({"stubborn": {"command": ["python", stubborn],
                                                       "stop_timeout": 0.5}})
    pid = gw.upstream("stubborn")["pid"]
    started = time.monotonic()
    assert gw.terminate() == 0
    assert time.monotonic() - started < 5
    wait_until(lambda: not group_alive(pid), 5)
    assert f"pid {pid} ended with code -9" in gw.log()


# -- each step of the stop sequence, seen by the upstream --------------------------------------

STOP_TIMEOUT = 1.0
STEP_SLACK = 2.0
READ_LAG = 0.1
"""The server notes its stdin's end when its reader gets to it, after the gateway closed
it (and its clock for a signal starts when the handler runs): on a busy machine the
interval it measures between the two can fall short of the gateway's by that much."""
"""How much later than stop_timeout a step may come on a busy machine."""


def stopped_upstream(gateway_factory: Any, tmp_path: Path, *flags: str
                     ) -> tuple[GatewayProcess, Record, int]:
    record = tmp_path / "stop.jsonl"
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        record, "rec", *flags, stop_timeout=STOP_TIMEOUT)})
    pid = gw.upstream("rec")["pid"]
    assert gw.terminate() == 0
    wait_until(lambda: not group_alive(pid), 5)
    return gw, Record(record), pid


def test_stop_closes_stdin_then_sigterm_then_sigkill(gateway_factory: Any,
                                                    tmp_path: Path) -> None:
    """A server that ignores both stdin closing and SIGTERM: stdin is closed first,
    SIGTERM comes stop_timeout later, and SIGKILL stop_timeout after that (the server
    ran on until then)."""
    gw, record, pid = stopped_upstream(gateway_factory, tmp_path, "--ignore-eof",
                                       "--on-sigterm", "ignore")
    eofs, signals = record.events("eof"), record.events("signal")
    assert len(eofs) == 1, "the upstream's stdin was not closed first"
    assert [e["name"] for e in signals] == ["SIGTERM"], "the upstream got no SIGTERM"
    eof, sigterm = eofs[0], signals[0]
    waited = sigterm["t"] - eof["t"]
    assert STOP_TIMEOUT - READ_LAG <= waited < STOP_TIMEOUT + STEP_SLACK, waited
    ticks = [e["t"] for e in record.events("tick")]
    assert ticks, "the server did not run on after ignoring SIGTERM"
    # Killed no sooner than about stop_timeout after SIGTERM (ticks are 50 ms apart,
    # and may be late, never early).
    assert max(ticks) - sigterm["t"] >= STOP_TIMEOUT / 2
    assert record.events("exit") == []
    assert f"pid {pid} ended with code -9" in gw.log()


def test_stop_ends_with_sigterm_when_that_is_enough(gateway_factory: Any,
                                                    tmp_path: Path) -> None:
    gw, record, pid = stopped_upstream(gateway_factory, tmp_path, "--ignore-eof")
    assert [e["event"] for e in record.events() if e["event"] != "recv"] == [
        "start", "eof", "signal", "exit"]
    (eof,) = record.events("eof")
    (sigterm,) = record.events("signal")
    waited = sigterm["t"] - eof["t"]
    assert STOP_TIMEOUT - READ_LAG <= waited < STOP_TIMEOUT + STEP_SLACK, waited
    assert f"pid {pid} ended with code 0" in gw.log()


def test_stop_sends_no_signal_to_a_server_that_exits_on_eof(gateway_factory: Any,
                                                            tmp_path: Path) -> None:
    gw, record, pid = stopped_upstream(gateway_factory, tmp_path)
    assert [e["event"] for e in record.events() if e["event"] != "recv"] == [
        "start", "eof", "exit"]
    (eof,) = record.events("eof")
    (end,) = record.events("exit")
    assert end["t"] - eof["t"] < STOP_TIMEOUT
    assert f"pid {pid} ended with code 0" in gw.log()


def test_http_gets_503_while_draining(gateway_factory: Any, tmp_path: Path) -> None:
    """A keep-alive HTTP connection opened before SIGTERM is answered 503 (with
    Retry-After and -32003) while the gateway drains, in both eras."""
    record = tmp_path / "drain.jsonl"
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(record)},
                                         shutdown={"drain_timeout": 10.0})
    legacy = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}}})
    modern_call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}})

    def post(s: socket.socket, body: str, *extra: str) -> tuple[str, dict[str, str], Any]:
        head = ["POST /mcp HTTP/1.1", f"Host: 127.0.0.1:{gw.port}",
                "Accept: application/json, text/event-stream",
                "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
        s.sendall(("\r\n".join(head) + "\r\n\r\n" + body).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "the gateway closed the connection"
            data += chunk
        head_bytes, rest = data.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers["content-length"]):
            rest += s.recv(65536)
        return lines[0], headers, json.loads(rest)

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 3}, 1)
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
                status, _, _ = post(s, json.dumps({"jsonrpc": "2.0", "id": 0, "method": "x"}))
                assert status.startswith("HTTP/1.1 400")  # no session: but it is open
                assert gw.proc is not None
                gw.proc.send_signal(signal.SIGTERM)
                wait_until(lambda: gw.admin_get("/readiness")[0] == 503, 5)
                for payload, extra in ((legacy, ()), (modern_call, (
                        "MCP-Protocol-Version: 2026-07-28", "Mcp-Method: tools/list"))):
                    status, headers, reply = post(s, payload, *extra)
                    assert status.startswith("HTTP/1.1 503"), (status, reply)
                    assert headers["retry-after"] == "1"
                    assert reply["error"]["code"] == -32003
            response = await c.wait_for(1)
            assert response["result"]["content"][0]["text"] == "slow done"
    run(body())
    assert gw.proc is not None and gw.proc.wait(10) == 0
