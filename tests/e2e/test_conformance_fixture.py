"""Smoke tests for tests/servers/conformance_server.py, the upstream that the conformance
suite is run against through mcpfast: both protocol eras over stdio, with the SDK's client
as the peer, so that a change in the SDK cannot quietly break what the suite relies on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    InputRequiredResult,
    PromptReference,
    TextContent,
)

FIXTURE = Path(__file__).resolve().parent.parent / "servers" / "conformance_server.py"
FIRST_TOOLS = ["test_simple_text", "test_image_content", "test_audio_content",
               "test_embedded_resource", "test_multiple_content_types"]
LEGACY_ONLY_TOOLS = {"test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults",
                     "test_elicitation_sep1330_enums", "test_tool_with_logging",
                     "test_reconnection"}
MODERN_ONLY_TOOLS = {"test_missing_capability", "test_streaming_elicitation",
                     "test_logging_tool", "test_trigger_tool_change", "test_x_mcp_header",
                     "test_input_required_result_elicitation",
                     "test_input_required_result_tampered_state"}

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def answer_sampling(
    context: ClientRequestContext, params: CreateMessageRequestParams
) -> CreateMessageResult:
    return CreateMessageResult(role="assistant", model="test-model",
                               content=TextContent(type="text", text="Paris"))


async def answer_elicitation(
    context: ClientRequestContext, params: ElicitRequestParams
) -> ElicitResult:
    fields = getattr(params, "requested_schema", {}).get("properties", {})
    canned = {"name": "Ann", "color": "blue", "username": "ann", "email": "ann@example.com"}
    return ElicitResult(action="accept", content={k: v for k, v in canned.items() if k in fields})


def fixture_client(mode: str, *, answers: bool = True) -> Client:
    params = StdioServerParameters(command=sys.executable, args=[str(FIXTURE)])
    if not answers:
        return Client(params, mode=mode)
    return Client(params, mode=mode, sampling_callback=answer_sampling,
                  elicitation_callback=answer_elicitation)


def text_of(result: Any) -> str:
    content = result.content[0]
    assert isinstance(content, TextContent)
    return content.text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_both_eras_list_every_tool_in_order_and_answer(mode: str) -> None:
    async with fixture_client(mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert names[:len(FIRST_TOOLS)] == FIRST_TOOLS
        assert set(names) >= LEGACY_ONLY_TOOLS | MODERN_ONLY_TOOLS
        assert len(names) == len(set(names)) == 28
        simple = await client.call_tool("test_simple_text")
        assert text_of(simple) == "This is a simple text response for testing."
        assert (await client.call_tool("test_error_handling", {})).is_error
        # Legacy: a sampling/createMessage request mid-call; modern: input_required + retry.
        sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
        assert text_of(sampled) == "LLM response: Paris"
        template = await client.read_resource("test://template/123/data")
        assert '"id": "123"' in getattr(template.contents[0], "text", "")
        completion = await client.complete(PromptReference(type="ref/prompt",
                                                           name="test_prompt_with_arguments"),
                                           {"name": "arg1", "value": "test"})
        assert completion.completion.values == ["test", "test-value", "testing"]


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_legacy_session_declares_the_legacy_capabilities() -> None:
    async with fixture_client("legacy") as client:
        capabilities = client.server_capabilities
        assert capabilities.logging is not None and capabilities.completions is not None
        assert capabilities.tools is not None and capabilities.tools.list_changed
        assert capabilities.resources is not None and capabilities.resources.subscribe
        await client.set_logging_level("debug")
        await client.subscribe_resource("test://watched-resource")
        enums = await client.call_tool("test_elicitation_sep1330_enums", {})
        assert text_of(enums).startswith("Elicitation completed: action=accept")


async def test_modern_multi_round_and_tampered_state() -> None:
    async with fixture_client("2026-07-28") as client:
        rounds = await client.call_tool("test_input_required_result_multi_round", {})
        assert text_of(rounds) == "Ann likes blue"
        first = await client.session.call_tool("test_input_required_result_tampered_state", {},
                                               allow_input_required=True)
        assert isinstance(first, InputRequiredResult) and first.request_state
        answer = ElicitResult(action="accept", content={"name": "Ann"})
        with pytest.raises(MCPError) as rejected:
            await client.session.call_tool(
                "test_input_required_result_tampered_state", {},
                input_responses={"user_name": answer},
                request_state=first.request_state + "-TAMPERED", allow_input_required=True)
        assert rejected.value.error.code == -32602
        honest = await client.session.call_tool(
            "test_input_required_result_tampered_state", {},
            input_responses={"user_name": answer}, request_state=first.request_state)
        assert text_of(honest) == "state verified for Ann"


async def test_modern_request_without_the_capability_is_refused() -> None:
    async with fixture_client("2026-07-28", answers=False) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("test_missing_capability", {})
        assert refused.value.error.code == -32021
        assert refused.value.error.data == {"requiredCapabilities": {"sampling": {}}}
