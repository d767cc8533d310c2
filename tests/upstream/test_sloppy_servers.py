"""Servers that get MCP or JSON-RPC wrong (``servers/sloppy_server.py``): what one of them
sends is refused or read as far as it can be, at once, and never reaches the gateway's
handshake with its clients, another server, or a restarted process of the same server.
Each case was found by an outside sweep, where it broke the gateway."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..conftest import ROOT, GatewayProcess, recording_upstream, run, unix_client

SLOPPY = str(ROOT / "tests" / "servers" / "sloppy_server.py")
TOOLS = ["echo", "error_string", "error_no_code", "result_with_method", "close_stdin",
         "huge", "ask", "exit", "odd_notes", "early_reply"]


def sloppy(*faults: str, **extra: Any) -> dict[str, Any]:
    flags = [arg for fault in faults for arg in ("--fault", fault)]
    return {"command": [sys.executable, SLOPPY, *flags], "era": "legacy", **extra}


def text(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


async def asked(c: Any, call_id: Any) -> dict[str, Any]:
    """Initialize ``c`` with sampling, call ``ask`` as ``call_id``: the server's question."""
    await c.initialize(capabilities={"sampling": {}})
    await c.start_call("ask", {}, call_id)
    question: dict[str, Any] = await c.receive()
    assert question["method"] == "sampling/createMessage", question
    return question


async def reply(c: Any, question: dict[str, Any], said: str) -> None:
    """The client's model answers ``question`` with ``said``."""
    await c.send({"jsonrpc": "2.0", "id": question["id"], "result": {
        "role": "assistant", "model": "m", "content": {"type": "text", "text": said}}})


def test_a_server_s_malformed_handshake_and_lists_spoil_nothing_else(
        gateway_factory: Any, tmp_path: Path) -> None:
    """``capabilities.resources: true``, ``logging: []``, a number for instructions,
    non-objects, an unnamed tool and a tool listed twice in tools/list, and an object
    for prompts/list's array: the server is ready with what can be read, the other
    server with all it has, and clients initialize and call both."""
    gw: GatewayProcess = gateway_factory({
        "rec": recording_upstream(tmp_path / "rec.jsonl"),
        "sloppy": sloppy("capabilities", "instructions", "items")})
    assert {u["name"]: u["state"] for u in gw.status()["upstreams"]} == \
        {"rec": "ready", "sloppy": "ready"}

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            init = await c.initialize()
            assert "resources" in init["result"]["capabilities"], init
            assert "instructions" not in init["result"], init
            names = [tool["name"] for tool in (await c.request("tools/list"))["result"]["tools"]]
            assert sorted(n for n in names if n.startswith("sloppy__")) == \
                sorted(f"sloppy__{name}" for name in TOOLS), names
            assert "rec__echo" in names
            assert text(await c.call_tool("sloppy__echo", {"text": "s"})) == "s"
            assert text(await c.call_tool("rec__echo", {"text": "r"})) == "r"
    run(body())
    log = gw.log()
    assert "Traceback" not in log
    assert "capabilities.resources must be an object, not a boolean" in log
    assert "instructions must be a string, not a number" in log
    assert "tools[1] must be an object, not a string" in log
    assert "name 'echo' listed twice" in log
    assert "prompts must be an array, not an object" in log


def test_a_cursor_that_names_an_earlier_page_ends_the_list(gateway_factory: Any) -> None:
    """MCP cursors are opaque, so the gateway follows them; one it has followed before
    would lead round the same pages for ever (and list each tool again each time)."""
    gw: GatewayProcess = gateway_factory({"loop": sloppy("cursor-loop")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            names = [tool["name"] for tool in (await c.request("tools/list"))["result"]["tools"]]
            assert sorted(names) == sorted(TOOLS)
    run(body())
    assert "nextCursor 'b' names an earlier page again" in gw.log()
    assert "name collision" not in gw.log()


def test_a_malformed_response_is_an_error_at_once(gateway_factory: Any) -> None:
    """An error that is no Error object (JSON-RPC 2.0 5.1), and a response that also has
    a method: the call gets -32603 now, not a time-out; the client is not sent the
    message as a request of the server's."""
    gw: GatewayProcess = gateway_factory({"s": sloppy(request_timeout=60.0)})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            for tool, why in (("error_string", "error is an object"),
                              ("error_no_code", "error is an object"),
                              ("result_with_method", "a message with a method")):
                started = time.monotonic()
                answer = await c.call_tool(tool)
                assert answer["error"]["code"] == -32603, answer
                assert "sent an invalid response" in answer["error"]["message"] and \
                    why in answer["error"]["message"], answer
                assert time.monotonic() - started < 30
            assert not c.requests, c.requests
            assert text(await c.call_tool("echo", {"text": "still"})) == "still"
            # Notifications whose params are no object: dropped, each with a line.
            await c.request("logging/setLevel", {"level": "debug"})
            assert text(await c.request("tools/call", {
                "name": "odd_notes", "arguments": {}, "_meta": {"progressToken": 1}})) == "noted"
            assert not c.notifications, c.notifications
    run(body())
    log = gw.log()
    assert "Traceback" not in log and " ERROR " not in log
    for method in ("progress", "message", "resources/updated", "cancelled"):
        assert f"dropped notifications/{method}: its params are not an object" in log


def test_a_server_that_closes_its_stdin_is_down_at_once(gateway_factory: Any) -> None:
    """It runs on with its stdout open but reads nothing more: the call in flight fails
    now (-32000), not at its time-out, and the server is restarted."""
    gw: GatewayProcess = gateway_factory({"s": sloppy(request_timeout=60.0)})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            answer = await c.call_tool("close_stdin", timeout=30)
            assert answer["error"]["code"] == -32000, answer
            assert "the process closed its stdin" in answer["error"]["message"], answer
            deadline = time.monotonic() + 30
            while True:
                answer = await c.call_tool("echo", {"text": "back"})
                if "result" in answer or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert text(answer) == "back", answer
    run(body())


def test_a_dead_server_s_question_is_withdrawn_and_not_answered_to_its_successor(
        gateway_factory: Any) -> None:
    """The server asks the client's model (id "q"), dies, and its restarted process asks
    again under the same id. The client is told the first question is over
    (notifications/cancelled), and its late answer to it reaches no one: the second
    question's call gets the answer to the second question."""
    gw: GatewayProcess = gateway_factory({"s": sloppy()})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            first = await asked(c, 1)
            answer = await c.call_tool("exit")
            assert answer["error"]["code"] == -32000, answer
            assert (await c.wait_for(1))["error"]["code"] == -32000
            cancelled = [n for n in c.notifications if n["method"] == "notifications/cancelled"]
            while not cancelled:
                message = await c.receive()
                if message.get("method") == "notifications/cancelled":
                    cancelled.append(message)
            assert cancelled[0]["params"]["requestId"] == first["id"], cancelled

            deadline = time.monotonic() + 30
            while True:
                await c.start_call("ask", {}, "again")
                second = await c.receive()
                if second.get("method") == "sampling/createMessage" or \
                        time.monotonic() > deadline:
                    break
                assert second["id"] == "again" and second["error"]["code"] == -32000, second
                await asyncio.sleep(0.1)
            assert second["method"] == "sampling/createMessage", second
            assert second["id"] != first["id"]
            for question, said in ((first, "stale"), (second, "fresh")):
                await reply(c, question, said)
            assert text(await c.wait_for("again")) == "fresh"
    run(body())


def test_a_client_s_progress_on_a_server_s_question_reaches_that_server(
        gateway_factory: Any) -> None:
    """Either side may send progress (basic/utilities/progress): the client's, under the
    token of the server's request, goes to the server that asked; progress under any
    other token goes nowhere."""
    gw: GatewayProcess = gateway_factory({"s": sloppy()})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            question = await asked(c, 1)
            assert question["params"]["_meta"]["progressToken"] == "qp", question
            for token, progress in (("qp", 1), ("other", 5), ("qp", 2)):
                await c.notify("notifications/progress",
                               {"progressToken": token, "progress": progress})
            await reply(c, question, "ok")
            assert text(await c.wait_for(1)) == "ok after progress [1, 2]"
    run(body())


def test_a_question_before_any_client_is_refused_for_that_reason(
        gateway_factory: Any) -> None:
    """A server that asks for roots before any client has called it is told why it gets
    no answer: no client has called it, not that several share it (as it was told)."""
    gw: GatewayProcess = gateway_factory({"s": sloppy("early-question")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"roots": {}})
            reply = json.loads(text(await c.call_tool("early_reply")))
            assert reply["error"]["message"] == "mcpfast cannot route roots/list: no client " \
                "has called this server since it started", reply
            assert not c.requests
    run(body())
