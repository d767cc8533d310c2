"""A stdio upstream that dies: requests in flight fail at once, the process restarts
with backoff, and its process group is always reaped."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from typing import Any

from ..conftest import SDK_SERVER, GatewayProcess, group_alive, run, wait_until, ws_client


def test_killed_upstream_fails_in_flight_requests_and_restarts(gateway_factory: Any) -> None:
    # A shell that leaves a grandchild behind in the upstream's process group.
    gw: GatewayProcess = gateway_factory({"sdk": {
        "command": ["sh", "-c", f"sleep 300 & exec {sys.executable} {SDK_SERVER} --name sdk"],
        "restart_backoff": 0.2}})
    first_pid = gw.upstream("sdk")["pid"]
    assert group_alive(first_pid)

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 30}, "slow")
            await asyncio.sleep(0.3)
            started = time.monotonic()
            crashed = await c.call_tool("crash", request_id="crash")
            slow = await c.wait_for("slow")
            # Both answered at once with an error, not after the 30 s the tool wanted.
            assert time.monotonic() - started < 5
            for response in (crashed, slow):
                assert response["error"]["code"] == -32000
                assert "sdk" in response["error"]["message"]
            # While it restarts, calls fail fast with a clear error, never hang.
            wait_until(lambda: gw.upstream("sdk")["ready"])
            echo = await c.call_tool("echo", {"text": "back"})
            assert echo["result"]["content"][0]["text"] == "back"
    run(body())
    status = gw.upstream("sdk")
    assert status["starts"] == 2 and status["pid"] != first_pid
    wait_until(lambda: not group_alive(first_pid), 5)
    second_pid = status["pid"]
    assert gw.terminate() == 0
    wait_until(lambda: not group_alive(second_pid), 5)


def test_calls_to_a_restarting_upstream_fail_fast(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"sdk": {
        "command": ["python", SDK_SERVER], "restart_backoff": 3.0,
        "restart_backoff_max": 3.0}})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            failed = gw.upstream("sdk")["requests_failed"]
            crashed = await c.call_tool("crash")
            assert crashed["error"]["code"] == -32000
            started = time.monotonic()
            response = await c.call_tool("echo", {"text": "x"})
            assert time.monotonic() - started < 1
            assert response["error"]["code"] == -32000
            assert "not available" in response["error"]["message"]
            # Each failed call counts once: the crashed one and the refused one.
            assert gw.upstream("sdk")["requests_failed"] == failed + 2
    run(body())


def test_request_timeout_answers_the_client(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"sdk": {"command": ["python", SDK_SERVER],
                                                  "request_timeout": 1.0}})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            started = time.monotonic()
            response = await c.call_tool("slow", {"seconds": 10})
            # Never early; the tight upper bound is in test_guard_cancel.py.
            assert 1.0 <= time.monotonic() - started < 4
            assert response["error"]["code"] == -32001
            echo = await c.call_tool("echo", {"text": "ok"})
            assert echo["result"]["content"][0]["text"] == "ok"
    run(body())
    assert gw.upstream("sdk")["in_flight"] == 0


def test_subscriptions_survive_an_upstream_restart(gateway_factory: Any) -> None:
    import signal

    gw: GatewayProcess = gateway_factory({"demo": {
        "command": ["python", "-m", "mcpfast.demo"], "restart_backoff": 0.2}})
    clock = "mcpfast://demo/clock"

    def updates(c: Any) -> int:
        return sum(1 for n in c.notifications
                   if n["method"] == "notifications/resources/updated")

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            assert (await c.request("resources/subscribe", {"uri": clock}))["result"] == {}
            await asyncio.sleep(1.5)
            await c.request("ping")
            assert updates(c) >= 1
            os.kill(gw.upstream("demo")["pid"], signal.SIGKILL)
            wait_until(lambda: gw.upstream("demo")["starts"] == 2
                       and gw.upstream("demo")["ready"])
            c.notifications.clear()
            await asyncio.sleep(2.5)
            await c.request("ping")
            assert updates(c) >= 1, "no resource updates after the upstream restarted"
    run(body())


def test_restart_backoff_doubles_up_to_its_maximum(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory(
        {"broken": {"command": ["python", "-c", "import sys; sys.exit(5)"],
                    "init_timeout": 1.0, "restart_backoff": 0.1, "restart_backoff_max": 0.4}},
        start=False)
    gw.start(wait_ready=False)

    def delays() -> list[str]:
        return [line.rsplit("restarting in ", 1)[1] for line in gw.log().splitlines()
                if "restarting in " in line]

    wait_until(lambda: len(delays()) >= 5, 15)
    assert delays()[:5] == ["0.1 s", "0.2 s", "0.4 s", "0.4 s", "0.4 s"]
    assert "process exited with code 5" in gw.log()


def test_closing_stdout_and_running_on_ends_the_connection(gateway_factory: Any) -> None:
    # Nothing more can be answered: the connection ends, the process is stopped and the
    # reason names the pipe, not a time-out.
    script = "import os, time; os.close(1); time.sleep(300)"
    gw: GatewayProcess = gateway_factory(
        {"mute": {"command": [sys.executable, "-c", script],
                  "init_timeout": 60.0, "restart_backoff": 30.0, "stop_timeout": 0.5}},
        start=False)
    gw.start(wait_ready=False)
    wait_until(lambda: gw.admin_get("/status", starting=True)[0] == 200
               and gw.upstream("mute")["last_error"] is not None, 20)
    status = gw.upstream("mute")
    assert status["last_error"] == "the process closed its stdout during initialization"
    # Stopped, not left running: the log names its end.
    wait_until(lambda: "ended with code -15" in gw.log() or "ended with code -9" in gw.log())


# Answers the handshake and lists one tool; answers the first call to it, then exits at
# once (an answer and the exit reach the gateway together).
LAST_WORDS = """
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method, reply = msg["method"], None
    if method == "initialize":
        reply = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities":
                 {"tools": {}}, "serverInfo": {"name": "last", "version": "1"}}
    elif method == "tools/list":
        reply = {"tools": [{"name": "last", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        reply = {"content": [{"type": "text", "text": "goodbye"}]}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": reply or {}})
                     + "\\n")
    sys.stdout.flush()
    if method == "tools/call":
        sys.exit(0)
"""


def test_an_answer_written_just_before_the_exit_is_delivered(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"last": {
        "command": [sys.executable, "-c", LAST_WORDS], "restart_backoff": 0.2}})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            for start in range(1, 4):
                wait_until(lambda: gw.upstream("last")["ready"]
                           and gw.upstream("last")["starts"] == start)  # noqa: B023
                answer = await c.call_tool("last")
                assert answer.get("result", {}).get("content") == \
                    [{"type": "text", "text": "goodbye"}], answer
    run(body())


def test_an_inherited_ignored_sigchld_still_reports_exit_codes(gateway_factory: Any) -> None:
    # Started with SIGCHLD ignored (some init systems and shells leave it so), the
    # kernel would collect every child's exit and its code: the gateway resets it.
    gw: GatewayProcess = gateway_factory(
        {"broken": {"command": ["python", "-c", "import sys; sys.exit(5)"],
                    "init_timeout": 5.0, "restart_backoff": 30.0}}, start=False)
    gw.command = [sys.executable, "-c", "import os, signal, sys; "
                  "signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
                  "os.execv(sys.executable, [sys.executable, '-m', 'mcpfast', *sys.argv[1:]])"]
    gw.start(wait_ready=False)
    wait_until(lambda: "is down" in gw.log(), 20)
    assert "process exited with code 5" in gw.log(), gw.log()[-2000:]


def test_an_exit_while_a_child_holds_stdout_is_seen_with_its_code(gateway_factory: Any) -> None:
    # The shell exits at once; the sleep it leaves behind keeps the stdout open. The
    # upstream is down with the shell's code, not after init_timeout, and the process
    # group (the sleep) is stopped with it.
    gw: GatewayProcess = gateway_factory(
        {"gone": {"command": ["sh", "-c", "sleep 300 & exit 4"],
                  "init_timeout": 60.0, "restart_backoff": 30.0}}, start=False)
    gw.start(wait_ready=False)
    wait_until(lambda: "process exited with code 4" in gw.log(), 20)
    started = re.search(r"started pid (\d+)", gw.log())
    assert started is not None, gw.log()[-2000:]
    pid = int(started[1])
    wait_until(lambda: not group_alive(pid), 10)
