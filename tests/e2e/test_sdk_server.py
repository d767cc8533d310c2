"""Smoke tests for tests/servers/sdk_server.py, the SDK-built upstream of the integration
tests, so that a change in the SDK cannot quietly break the server those tests rely on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp.types import (
    PromptReference,
)

from ..conftest import answer_sampling
from ..conftest import sdk_text as text_of

SDK_SERVER = Path(__file__).resolve().parent.parent / "servers" / "sdk_server.py"
TOOLS = {"echo", "add", "slow", "progress", "log", "crash", "whoami", "sample", "fail", "grow"}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sdk_client(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> Client:
    params = StdioServerParameters(command=sys.executable, args=[str(SDK_SERVER), *args], env=env)
    return Client(params, **kwargs)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_tools_listed_and_callable_in_both_eras(mode: str) -> None:
    seen_progress: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen_progress.append(progress)

    async with sdk_client(mode=mode, sampling_callback=answer_sampling) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        assert text_of(await client.call_tool("echo", {"text": "hi"})) == "hi"
        assert text_of(await client.call_tool("add", {"a": 2, "b": 3})) == "5"
        steps = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        assert text_of(steps) == "completed 3 steps"
        assert seen_progress == [1, 2, 3]
        sampled = await client.call_tool("sample", {"prompt": "ping?"})
        assert text_of(sampled) == "echo of ping?"
        failed = await client.call_tool("fail", {})
        assert failed.is_error


async def test_whoami_answers_the_name_given_on_the_command_line() -> None:
    async with sdk_client("--name", "upstream-b", mode="legacy") as client:
        assert client.server_info is not None and client.server_info.name == "upstream-b"
        assert text_of(await client.call_tool("whoami", {})) == "upstream-b"


async def test_tool_prefix_from_environment() -> None:
    async with sdk_client(env={"SDK_SERVER_TOOL_PREFIX": "b_"}, mode="legacy") as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == {
            f"b_{name}" for name in TOOLS
        }
        assert text_of(await client.call_tool("b_echo", {"text": "x"})) == "x"
        assert text_of(await client.call_tool("b_whoami", {})) == "sdk"


async def test_prompt_resources_completion_and_crash() -> None:
    async with sdk_client(mode="legacy") as client:
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]
        [static] = (await client.read_resource("test://static")).contents
        assert static.text == "static resource"  # type: ignore[union-attr]
        [item] = (await client.read_resource("test://item/42")).contents
        assert item.text == "item 42"  # type: ignore[union-attr]
        names = await client.complete(
            PromptReference(type="ref/prompt", name="greet"), {"name": "name", "value": "al"}
        )
        assert names.completion.values == ["Alice", "Alfred"]
        with pytest.raises(MCPError):
            await client.call_tool("crash", {})
