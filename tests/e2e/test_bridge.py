"""`mcpfast connect`: the official SDK's stdio client reaches the gateway through it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from ..conftest import GatewayProcess, run


def test_sdk_stdio_client_through_the_bridge(gateway: GatewayProcess) -> None:
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "mcpfast", "connect", "--unix", gateway.unix_path])

    async def body() -> None:
        progress: list[float] = []

        async def on_progress(progress_: float, total: float | None, message: str | None) -> None:
            progress.append(progress_)

        async with Client(params, mode="legacy") as client:
            assert client.server_info.name == "mcpfast"
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "progress", "whoami"} <= tools
            echo = await client.call_tool("echo", {"text": "via the bridge"})
            assert isinstance(echo.content[0], TextContent)
            assert echo.content[0].text == "via the bridge"
            done = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
            assert isinstance(done.content[0], TextContent)
            assert done.content[0].text == "completed 3 steps"
            assert progress == [1, 2, 3]
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in str(prompt.messages)
    run(body())


INITIALIZE = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
              b'"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n')


@pytest.mark.parametrize("seconds", [0.5, 6])
def test_after_the_input_ends_every_answer_comes_back_however_long(
        gateway: GatewayProcess, seconds: float) -> None:
    """The client half-closes with a call in flight: the gateway answers it, then hangs
    up, and the bridge waits for that (found by an outside sweep: 5 s after its input
    ended, the bridge gave up and exited 0, and an answer still on its way was lost)."""
    lines = INITIALIZE + (b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{'
                          b'"name":"slow","arguments":{"seconds":%g}}}\n' % seconds)
    out = subprocess.run([sys.executable, "-m", "mcpfast", "connect", "--unix",
                          gateway.unix_path], input=lines, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    answers = out.stdout.splitlines()
    assert len(answers) == 2 and b"done after %.1fs" % seconds in answers[1], answers


def initialized_bridge(gw: GatewayProcess, keepalive: str) -> subprocess.Popen[bytes]:
    """A bridge to ``gw`` (``--keepalive``) whose client has initialized."""
    bridge = subprocess.Popen([sys.executable, "-m", "mcpfast", "connect", "--unix",
                               gw.unix_path, "--keepalive", keepalive], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert bridge.stdin is not None and bridge.stdout is not None
    bridge.stdin.write(INITIALIZE)
    bridge.stdin.flush()
    assert json.loads(bridge.stdout.readline())["id"] == 1
    return bridge


def test_a_gateway_that_hangs_up_first_ends_the_bridge_with_a_line_and_a_status(
        gateway_factory: Any) -> None:
    """The client still has its input open, and the gateway closes its session (here
    for idleness): the client has lost its server, and is told so by the exit status
    and one line."""
    gw: GatewayProcess = gateway_factory(listen={"idle_timeout": 1.0})
    bridge = initialized_bridge(gw, "0")
    assert bridge.stdin is not None and bridge.stdout is not None
    try:
        err = bridge.stderr.read() if bridge.wait(timeout=30) is not None else b""  # type: ignore[union-attr]
    finally:
        bridge.kill()
        bridge.stdin.close()
    assert bridge.returncode == 1, err
    assert b"mcpfast connect: relaying stopped: the gateway closed the connection" in err


def test_a_quiet_client_keeps_its_session(gateway_factory: Any) -> None:
    """A stdio client may say nothing for longer than the gateway's idle_timeout; its
    server, the bridge, must stay (an outside sweep found it exiting): it sends a blank
    line after each ``--keepalive`` of silence, which the gateway counts as the client's
    presence and no server sees. Its stdout carries only the answers."""
    gw: GatewayProcess = gateway_factory(listen={"idle_timeout": 1.0})
    bridge = initialized_bridge(gw, "0.3")
    assert bridge.stdin is not None and bridge.stdout is not None
    try:
        time.sleep(4)  # four idle time-outs without a message
        assert bridge.poll() is None, bridge.stderr.read()  # type: ignore[union-attr]
        # A line begun and left unfinished for longer than --keepalive: no blank line
        # is put inside it.
        bridge.stdin.write(b'{"jsonrpc":"2.0","id":3,"method":')
        bridge.stdin.flush()
        time.sleep(0.8)
        bridge.stdin.write(b'"ping"}\n')
        bridge.stdin.flush()
        assert json.loads(bridge.stdout.readline()) == {"jsonrpc": "2.0", "id": 3, "result": {}}
        bridge.stdin.write(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":'
                           b'{"name":"echo","arguments":{"text":"still here"}}}\n')
        bridge.stdin.flush()
        answer = json.loads(bridge.stdout.readline())
        assert answer["id"] == 2 and answer["result"]["content"][0]["text"] == "still here"
        bridge.stdin.close()
        assert bridge.wait(timeout=30) == 0, bridge.stderr.read()  # type: ignore[union-attr]
        assert bridge.stdout.read() == b""
    finally:
        bridge.kill()
    assert "closing idle session" not in gw.log()


def test_bridge_reports_a_missing_socket(tmp_path: Any) -> None:
    out = subprocess.run([sys.executable, "-m", "mcpfast", "connect", "--unix",
                          str(tmp_path / "none.sock")], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1 and "cannot connect" in out.stderr


def test_a_client_that_stops_reading_ends_the_bridge_with_a_line_and_a_status(
        gateway: GatewayProcess) -> None:
    """The client closes its end of the bridge's stdout while an answer is on its way:
    the bridge says so in one line and exits 1, with no traceback."""
    bridge = subprocess.Popen([sys.executable, "-m", "mcpfast", "connect", "--unix",
                               gateway.unix_path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert bridge.stdin is not None and bridge.stdout is not None
    bridge.stdout.close()
    bridge.stdin.write(INITIALIZE)
    bridge.stdin.flush()
    try:
        _, err = bridge.communicate(timeout=20)
    finally:
        bridge.kill()
    assert bridge.returncode == 1, err
    assert b"mcpfast connect: relaying stopped: Broken pipe" in err, err
    assert b"Traceback" not in err and b"never retrieved" not in err, err
