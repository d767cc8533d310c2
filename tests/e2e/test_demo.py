"""The bundled demo server (``python -m mcpfast.demo``), driven over stdio by real peers:
the official SDK client, and raw JSON-RPC lines for what a well-behaved client never sends."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import LoggingMessageNotificationParams, PromptReference, ResourceTemplateReference

ROOT = Path(__file__).resolve().parent.parent.parent
DEMO = [sys.executable, "-m", "mcpfast.demo"]
GREETING_TEMPLATE = "mcpfast://demo/greeting/{name}"

pytestmark = [
    pytest.mark.anyio,
    # ping and logging/setLevel are deprecated for 2026-07-28, but this is a legacy server.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def demo_client(**kwargs: Any) -> Client:
    params = StdioServerParameters(command=DEMO[0], args=DEMO[1:], cwd=ROOT)
    kwargs.setdefault("mode", "legacy")
    return Client(params, **kwargs)


# Through the official SDK client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_initialize_negotiates_latest_legacy_version(mode: str) -> None:
    # "auto" probes server/discover first; the demo answers -32601 and the SDK falls back.
    async with demo_client(mode=mode) as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None
        assert client.server_info.name == "mcpfast-demo"
        caps = client.server_capabilities
        assert caps.tools is not None and caps.prompts is not None
        assert caps.resources is not None and caps.resources.subscribe is True
        assert caps.logging is not None and caps.completions is not None


async def test_lists_tools_prompts_resources_and_templates() -> None:
    async with demo_client() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"echo", "add", "utc_now", "word_count", "countdown"}
        for tool in tools.values():
            assert tool.title and tool.description
            assert tool.input_schema["type"] == "object"
        assert tools["countdown"].input_schema["required"] == ["n"]
        assert tools["add"].output_schema is not None

        prompts = (await client.list_prompts()).prompts
        assert [p.name for p in prompts] == ["summarize"]
        arguments = {a.name: a.required for a in prompts[0].arguments or []}
        assert arguments == {"text": True, "style": False}

        resources = (await client.list_resources()).resources
        assert [(r.uri, r.mime_type) for r in resources] == [
            ("mcpfast://demo/about", "text/markdown"),
            ("mcpfast://demo/clock", "text/plain"),
        ]
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [GREETING_TEMPLATE]


async def test_quick_tools_answer() -> None:
    async with demo_client() as client:
        echo = await client.call_tool("echo", {"text": "héllo wörld"})
        assert echo.content[0].text == "héllo wörld"  # type: ignore[union-attr]

        added = await client.call_tool("add", {"a": 2, "b": 0.5})
        assert added.content[0].text == "2.5"  # type: ignore[union-attr]
        assert added.structured_content == {"sum": 2.5}

        counted = await client.call_tool("word_count", {"text": "one two\nthree"})
        assert counted.structured_content == {"words": 3, "lines": 2, "characters": 13}

        now = await client.call_tool("utc_now", {})
        stamp = now.content[0].text  # type: ignore[union-attr]
        assert stamp.endswith("+00:00")
        assert abs(time.time() - datetime.fromisoformat(stamp).timestamp()) < 60


async def test_bad_tool_arguments_are_an_error_result() -> None:
    async with demo_client() as client:
        result = await client.call_tool("add", {"a": "two", "b": 1})
        assert result.is_error
        assert "'a' must be a number" in result.content[0].text  # type: ignore[union-attr]
        result = await client.call_tool("countdown", {"n": 31})
        assert result.is_error


async def test_countdown_reports_progress_and_logs_without_blocking_echo() -> None:
    seen_progress: list[tuple[float, float | None]] = []
    logs: list[LoggingMessageNotificationParams] = []
    finished: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen_progress.append((progress, total))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with demo_client(logging_callback=on_log) as client:

        async def countdown() -> None:
            result = await client.call_tool("countdown", {"n": 2}, progress_callback=on_progress)
            assert result.content[0].text == "liftoff"  # type: ignore[union-attr]
            finished.append("countdown")

        async with anyio.create_task_group() as tg:
            tg.start_soon(countdown)
            await anyio.sleep(0.2)
            await client.call_tool("echo", {"text": "meanwhile"})
            finished.append("echo")

    assert finished == ["echo", "countdown"]
    assert seen_progress == [(1, 2), (2, 2)]
    assert [(m.level, m.data) for m in logs] == [("info", "countdown started")]


async def test_set_level_above_info_silences_countdown_log() -> None:
    logs: list[LoggingMessageNotificationParams] = []

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with demo_client(logging_callback=on_log) as client:
        await client.set_logging_level("warning")
        await client.call_tool("countdown", {"n": 1})
        await client.session.send_ping()
    assert logs == []


async def test_summarize_prompt() -> None:
    async with demo_client() as client:
        prompt = await client.get_prompt(
            "summarize", {"text": "MCP is a protocol.", "style": "detailed"}
        )
        [message] = prompt.messages
        assert message.role == "user"
        assert "in detail" in message.content.text  # type: ignore[union-attr]
        assert message.content.text.endswith("MCP is a protocol.")  # type: ignore[union-attr]
        with pytest.raises(MCPError) as missing:
            await client.get_prompt("summarize", {})
        assert missing.value.code == -32602


async def test_read_resources() -> None:
    async with demo_client() as client:
        [about] = (await client.read_resource("mcpfast://demo/about")).contents
        assert about.mime_type == "text/markdown"
        assert "gateway" in about.text  # type: ignore[union-attr]

        [greeting] = (await client.read_resource("mcpfast://demo/greeting/Grace")).contents
        assert greeting.text.startswith("Hello, Grace!")  # type: ignore[union-attr]

        with pytest.raises(MCPError) as missing:
            await client.read_resource("mcpfast://demo/nothing-here")
        assert missing.value.code == -32002


async def test_completion_for_prompt_style_and_template_name() -> None:
    async with demo_client() as client:
        styles = await client.complete(
            PromptReference(type="ref/prompt", name="summarize"), {"name": "style", "value": "d"}
        )
        assert styles.completion.values == ["detailed"]
        names = await client.complete(
            ResourceTemplateReference(type="ref/resource", uri=GREETING_TEMPLATE),
            {"name": "name", "value": "gr"},
        )
        assert names.completion.values == ["Grace"]


# Raw JSON-RPC lines on the demo's stdin


class RawPeer:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.process.stdin is not None
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def receive(self, timeout: float = 2.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, "the demo closed its stdout"
        message: dict[str, Any] = json.loads(line)
        return message

    async def request(
        self, msg_id: int | str, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        return await self.receive()


@asynccontextmanager
async def raw_demo() -> AsyncIterator[RawPeer]:
    process = await asyncio.create_subprocess_exec(
        *DEMO,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = RawPeer(process)
    try:
        init = await peer.request(
            0,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        assert init["result"]["protocolVersion"] == "2025-06-18"
        await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield peer
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_malformed_json_is_a_parse_error_with_null_id() -> None:
    async with raw_demo() as peer:
        await peer.send(b'{"jsonrpc": "2.0", "id": 1, "method": \n')
        reply = await peer.receive()
        assert reply == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32700, "message": reply["error"]["message"]},
        }
        # Each bad line gets its own error and the session carries on.
        assert (await peer.request(2, "ping"))["result"] == {}


async def test_a_number_beyond_a_doubles_range_is_read_not_a_parse_error() -> None:
    """RFC 8259 section 6 sets JSON's numbers no range: 1e400 is read (as infinity), so
    the call is answered under its id rather than with a null-id error that no caller
    can match. What is not JSON stays a parse error."""
    async with raw_demo() as peer:
        reply = await peer.request(1, "tools/call", {"name": "echo", "arguments": {
            "text": "big", "n": 10.0 ** 300}})
        assert reply["result"]["content"][0]["text"] == "big"
        await peer.send(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":'
                        b'{"name":"echo","arguments":{"text":"huge","n":1e400}}}\n')
        assert (await peer.receive())["result"]["content"][0]["text"] == "huge"
        for not_json in (b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"n":NaN}}\n',
                         b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"s":"\\ud800"}}\n'):
            await peer.send(not_json)
            assert (await peer.receive())["error"]["code"] == -32700


async def test_invalid_request_and_unknown_method() -> None:
    async with raw_demo() as peer:
        reply = await peer.request("a-string-id", "no/such/method")
        assert reply["id"] == "a-string-id"
        assert reply["error"]["code"] == -32601
        await peer.send({"jsonrpc": "2.0", "id": 3, "method": 42})
        assert (await peer.receive())["error"]["code"] == -32600


async def test_unknown_tool_is_invalid_params() -> None:
    async with raw_demo() as peer:
        reply = await peer.request(1, "tools/call", {"name": "teleport", "arguments": {}})
        assert reply["id"] == 1
        assert reply["error"]["code"] == -32602


@pytest.mark.parametrize("arguments", [[], "", 0, False, ["text"]])
async def test_arguments_that_are_no_object_are_invalid_params(arguments: Any) -> None:
    async with raw_demo() as peer:
        reply = await peer.request(1, "tools/call", {"name": "echo", "arguments": arguments})
        assert reply["error"] == {"code": -32602, "message": "arguments must be an object"}
        reply = await peer.request(2, "tools/call", {"name": "utc_now", "arguments": None})
        assert "result" in reply, reply


async def test_cancelled_countdown_gets_no_response() -> None:
    async with raw_demo() as peer:
        await peer.send(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {
                    "name": "countdown",
                    "arguments": {"n": 1},
                    "_meta": {"progressToken": "tk"},
                },
            }
        )
        await asyncio.sleep(0.2)
        await peer.send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 7, "reason": "changed my mind"},
            }
        )
        await peer.send({"jsonrpc": "2.0", "id": 8, "method": "ping"})
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 1.5  # the countdown would have answered after 1 s
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(await peer.receive(timeout=left))
            except TimeoutError:
                break
        assert {"jsonrpc": "2.0", "id": 8, "result": {}} in seen
        assert [m for m in seen if m.get("id") == 7] == []
        assert [m for m in seen if m.get("method") == "notifications/progress"] == []


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "countdown-running"])
async def test_exits_cleanly_when_stdin_closes(busy: bool) -> None:
    async with raw_demo() as peer:
        if busy:
            await peer.send(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "countdown", "arguments": {"n": 30}},
                }
            )
        assert peer.process.stdin is not None
        peer.process.stdin.close()
        returncode = await asyncio.wait_for(peer.process.wait(), timeout=2.0)
        assert returncode == 0
