"""The server the MCP conformance suite expects behind mcpfast, written with the official SDK.

Run it over stdio: ``python tests/servers/conformance_server.py [--name NAME]``, or over the
SDK's own Streamable HTTP with ``--http PORT`` (on 127.0.0.1, endpoint ``/mcp``) to check
the fixture against the suite without the gateway in between.

It exposes every tool, resource, template, prompt and completion that the suite's server
scenarios name (docs/design/streamable-http-notes.md §4.5), ``test_simple_text`` first,
and serves both protocol eras on one stdio connection type: a client that opens with
``initialize`` gets a 2025-11-25 session, one whose first request carries the 2026-07-28
``_meta`` envelope gets the modern protocol.

Every tool that needs client input asks in the way the connection allows: a legacy session
gets a standalone ``sampling/createMessage`` / ``elicitation/create`` / ``roots/list``
request mid-call (on the calling request's stream), a 2026-07-28 request gets an
``input_required`` result and is answered on the retry. ``requestState`` is sealed by the
SDK's ``RequestStateBoundary``, so a tampered echo is a JSON-RPC error (-32602).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import warnings
import wave
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import anyio
from mcp.server import InitializationOptions, NotificationOptions
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity, UserMessage
from mcp.server.mcpserver.prompts.base import Message, Prompt
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import (
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    RequestParams,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

# Sampling, elicitation, roots and logging are deprecated by 2026-07-28 (SEP-2577) but are
# exactly what the legacy scenarios exercise; the warnings would only clutter stderr.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

SIMPLE_TEXT = "This is a simple text response for testing."
STATIC_TEXT = "This is the content of the static text resource."
# A 1x1 PNG; the suite only checks that image data is base64 with a mime type.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
PNG_B64 = base64.b64encode(PNG).decode()
COMPLETIONS = ("test", "test-value", "testing", "other")

# The exact inputSchema of json_schema_2020_12_tool: the suite checks that every keyword
# survives tools/list, so it is given as JSON, never derived from a signature.
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

# Which client capability each kind of input request needs, and what its answer parses as.
CAPABILITY_OF = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
ANSWER_TYPE: dict[str, type[InputResponse]] = {
    "sampling/createMessage": CreateMessageResult,
    "elicitation/create": ElicitResult,
    "roots/list": ListRootsResult,
}


def _silent_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 800)
    return buffer.getvalue()


WAV_B64 = base64.b64encode(_silent_wav()).decode()


def text(value: str, *, is_error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=value)], is_error=is_error)


def elicit(message: str, properties: dict[str, Any], required: list[str]) -> ElicitRequest:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def sample(prompt: str, max_tokens: int = 100) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(
        params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


LIST_ROOTS = ListRootsRequest(params=RequestParams())
ASK_NAME = elicit("What is your name?", {"name": {"type": "string"}}, ["name"])


def is_modern(ctx: Context) -> bool:
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def declares(ctx: Context, request: InputRequest) -> bool:
    capabilities = ctx.client_capabilities
    needed = CAPABILITY_OF[request.method]
    return capabilities is not None and getattr(capabilities, needed) is not None


def missing_capability(capability: str) -> MCPError:
    # 2026-07-28 basic/index.mdx: requiredCapabilities is a ClientCapabilities object.
    return MCPError(
        code=MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"Server requires the {capability} capability for this request",
        data={"requiredCapabilities": {capability: {}}},
    )


async def ask(
    ctx: Context, questions: Mapping[str, InputRequest], state: str | None = None
) -> dict[str, InputResponse] | InputRequiredResult:
    """The client's answers to ``questions``, keyed like them, or the result that asks for them.

    On a 2026-07-28 request the answers come from the retry's ``inputResponses``, and only
    count when the retry echoes ``state`` (the boundary has already verified its seal);
    anything missing re-asks every question (mrtr.mdx: SHOULD re-request, not fail).
    """
    for request in questions.values():
        if not declares(ctx, request):
            raise missing_capability(CAPABILITY_OF[request.method])
    if not is_modern(ctx):
        # related_request_id puts the request on the calling request's stream (T25 §1.7).
        related = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
        return {
            key: await ctx.session.send_request(request, ANSWER_TYPE[request.method],
                                                metadata=related)
            for key, request in questions.items()
        }
    answers = ctx.input_responses or {}
    if ctx.request_state != state or not all(key in answers for key in questions):
        return InputRequiredResult(input_requests=dict(questions), request_state=state)
    for key, request in questions.items():
        if not isinstance(answers[key], ANSWER_TYPE[request.method]):
            raise MCPError(code=INVALID_PARAMS, message=f"inputResponses[{key!r}] does not "
                           f"answer {request.method}")
    return {key: answers[key] for key in questions}


def form(answer: InputResponse) -> dict[str, Any]:
    """The accepted content of an elicitation answer; empty when declined or cancelled."""
    assert isinstance(answer, ElicitResult)
    return dict(answer.content or {}) if answer.action == "accept" else {}


def sampled_text(answer: InputResponse) -> str:
    assert isinstance(answer, CreateMessageResult)
    content = answer.content
    return content.text if isinstance(content, TextContent) else str(content)


def root_uris(answer: InputResponse) -> list[str]:
    assert isinstance(answer, ListRootsResult)
    return [str(root.uri) for root in answer.roots]


def describe(answer: InputResponse) -> str:
    assert isinstance(answer, ElicitResult)
    return f"action={answer.action}, content={json.dumps(answer.content or {})}"


class ToolList:
    """Collects tools in declaration order: the suite calls ``tools[0]`` with no arguments."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []

    def __call__(
        self, description: str, schema: dict[str, Any] | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            tool = Tool.from_function(fn, description=description, structured_output=False)
            if schema is not None:
                tool = tool.model_copy(update={"parameters": schema})
            self.tools.append(tool)
            return fn

        return register


def build_server(name: str) -> MCPServer:
    tool = ToolList()
    changed = {"tools": False, "prompts": False}

    @tool("Return a fixed text block.")
    def test_simple_text() -> CallToolResult:
        return text(SIMPLE_TEXT)

    @tool("Return a base64 PNG image.")
    def test_image_content() -> CallToolResult:
        return CallToolResult(content=[ImageContent(type="image", data=PNG_B64,
                                                    mime_type="image/png")])

    @tool("Return a base64 WAV clip.")
    def test_audio_content() -> CallToolResult:
        return CallToolResult(content=[AudioContent(type="audio", data=WAV_B64,
                                                    mime_type="audio/wav")])

    @tool("Return an embedded text resource.")
    def test_embedded_resource() -> CallToolResult:
        resource = TextResourceContents(uri="test://embedded-resource", mime_type="text/plain",
                                        text="This is an embedded resource content.")
        return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])

    @tool("Return text, an image and an embedded resource together.")
    def test_multiple_content_types() -> CallToolResult:
        resource = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return CallToolResult(content=[
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ])

    @tool("Send three info log notifications about 50 ms apart.")
    async def test_tool_with_logging(ctx: Context) -> CallToolResult:
        for step, message in enumerate(("Tool execution started", "Tool processing data",
                                        "Tool execution completed")):
            if step:
                await anyio.sleep(0.05)
            await ctx.log("info", message, logger_name=name)
        return text("Tool with logging executed successfully")

    @tool("Always fail with an isError result.")
    def test_error_handling() -> CallToolResult:
        return text("This tool intentionally returns an error for testing", is_error=True)

    @tool("Report progress 0, 50 and 100 of 100 before answering.")
    async def test_tool_with_progress(ctx: Context) -> CallToolResult:
        for step, progress in enumerate((0, 50, 100)):
            if step:
                await anyio.sleep(0.05)
            await ctx.report_progress(progress, 100, f"Completed step {step + 1} of 3")
        return text("Progress test completed")

    @tool("Ask the client's model to answer `prompt`.")
    async def test_sampling(prompt: str, ctx: Context) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"llm_response": sample(prompt)})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"LLM response: {sampled_text(answers['llm_response'])}")

    @tool("Ask the user for a username and an email address.")
    async def test_elicitation(message: str, ctx: Context) -> CallToolResult | InputRequiredResult:
        question = elicit(message, {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        }, ["username", "email"])
        answers = await ask(ctx, {"user_input": question})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"User response: {describe(answers['user_input'])}")

    @tool("Elicit a form whose fields all carry defaults (SEP-1034).")
    async def test_elicitation_sep1034_defaults(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        question = elicit("Please review and update the form fields with defaults", {
            "name": {"type": "string", "description": "User name", "default": "John Doe"},
            "age": {"type": "integer", "description": "User age", "default": 30},
            "score": {"type": "number", "description": "User score", "default": 95.5},
            "status": {"type": "string", "description": "User status",
                       "enum": ["active", "inactive", "pending"], "default": "active"},
            "verified": {"type": "boolean", "description": "Verification status",
                         "default": True},
        }, [])
        answers = await ask(ctx, {"defaults": question})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Elicitation completed: {describe(answers['defaults'])}")

    @tool("Elicit a form with the five enum shapes of SEP-1330.")
    async def test_elicitation_sep1330_enums(ctx: Context) -> CallToolResult | InputRequiredResult:
        options = ["option1", "option2", "option3"]
        question = elicit("Please select options from the enum fields", {
            "untitledSingle": {"type": "string", "description": "Untitled single-select",
                               "enum": options},
            "titledSingle": {"type": "string", "description": "Titled single-select", "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ]},
            "legacyEnum": {"type": "string", "description": "Legacy titled enum",
                           "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "description": "Untitled multi-select",
                              "items": {"type": "string", "enum": options}},
            "titledMulti": {"type": "array", "description": "Titled multi-select", "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]}},
        }, [])
        answers = await ask(ctx, {"enums": question})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Elicitation completed: {describe(answers['enums'])}")

    @tool("Close the SSE stream mid-call (when the transport can resume), then answer.")
    async def test_reconnection(ctx: Context) -> CallToolResult:
        # A no-op without an event store (stdio, or --http as run here): the suite only
        # fails this scenario on an HTTP error or an isError result.
        await ctx.close_sse_stream()
        await anyio.sleep(0.1)
        return text("Reconnection test completed successfully")

    @tool("A tool whose inputSchema uses JSON Schema 2020-12 keywords.", JSON_SCHEMA_2020_12)
    def json_schema_2020_12_tool() -> CallToolResult:
        return text("ok")

    @tool("Needs sampling: without the capability the call fails with -32021.")
    async def test_missing_capability(ctx: Context) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"llm_response": sample("Say hello")})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"LLM response: {sampled_text(answers['llm_response'])}")

    @tool("Ask for a name; on 2026-07-28 the question travels in the result, not the stream.")
    async def test_streaming_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"user_name": ASK_NAME})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Hello, {form(answers['user_name']).get('name', 'stranger')}!")

    @tool("Log at info level; a 2026-07-28 request gets the log only if it set logLevel.")
    async def test_logging_tool(ctx: Context) -> CallToolResult:
        await ctx.log("info", "test_logging_tool ran", logger_name=name)
        return text("Logging tool executed")

    @tool("Add or remove test_dynamic_tool and announce the changed tool list.")
    async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
        if changed["tools"]:
            server.remove_tool("test_dynamic_tool")
        else:
            server.add_tool(test_dynamic_tool, description="Added by test_trigger_tool_change.",
                            structured_output=False)
        changed["tools"] = not changed["tools"]
        await ctx.notify_tools_changed()
        if not is_modern(ctx):
            await ctx.session.send_tool_list_changed()
        return text(f"test_dynamic_tool {'added' if changed['tools'] else 'removed'}")

    @tool("Add or remove test_dynamic_prompt and announce the changed prompt list.")
    async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
        if changed["prompts"]:
            server.remove_prompt("test_dynamic_prompt")
        else:
            server.add_prompt(Prompt.from_function(
                test_dynamic_prompt, description="Added by test_trigger_prompt_change."))
        changed["prompts"] = not changed["prompts"]
        await ctx.notify_prompts_changed()
        if not is_modern(ctx):
            await ctx.session.send_prompt_list_changed()
        return text(f"test_dynamic_prompt {'added' if changed['prompts'] else 'removed'}")

    @tool("Echo `region`, which 2026-07-28 clients mirror in the Mcp-Param-Region header.")
    def test_x_mcp_header(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})] = "",
    ) -> CallToolResult:
        return text(f"region={region}")

    @tool("One elicitation under the key user_name, then a greeting.")
    async def test_input_required_result_elicitation(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"user_name": ASK_NAME})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Hello, {form(answers['user_name']).get('name', 'stranger')}!")

    @tool("One sampling request under the key capital_question.")
    async def test_input_required_result_sampling(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"capital_question": sample("What is the capital of France?")})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"The model said: {sampled_text(answers['capital_question'])}")

    @tool("One roots/list request under the key client_roots.")
    async def test_input_required_result_list_roots(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"client_roots": LIST_ROOTS})
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Client roots: {', '.join(root_uris(answers['client_roots']))}")

    @tool("An elicitation plus requestState; the retry must echo the state.")
    async def test_input_required_result_request_state(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        confirm = elicit("Please confirm", {"ok": {"type": "boolean"}}, ["ok"])
        answers = await ask(ctx, {"confirm": confirm}, state="awaiting-confirm")
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"state-ok: confirmed={form(answers['confirm']).get('ok')}")

    @tool("Elicitation, sampling and roots/list in one round, plus requestState.")
    async def test_input_required_result_multiple_inputs(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {
            "user_name": ASK_NAME,
            "greeting": sample("Generate a greeting", max_tokens=50),
            "client_roots": LIST_ROOTS,
        }, state="awaiting-three")
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"{sampled_text(answers['greeting'])}, "
                    f"{form(answers['user_name']).get('name', 'stranger')}; "
                    f"roots: {', '.join(root_uris(answers['client_roots']))}")

    @tool("Two rounds of elicitation, each with its own requestState.")
    async def test_input_required_result_multi_round(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        step1 = elicit("Step 1: What is your name?", {"name": {"type": "string"}}, ["name"])
        step2 = elicit("Step 2: What is your favorite color?", {"color": {"type": "string"}},
                       ["color"])
        if not is_modern(ctx):
            first, second = await ask(ctx, {"step1": step1}), await ask(ctx, {"step2": step2})
            assert isinstance(first, dict) and isinstance(second, dict)
            name, color = form(first["step1"]).get("name"), form(second["step2"]).get("color")
            return text(f"{name} likes {color}")
        # Round 2's state carries round 1's answer: the retry only brings step2's.
        state = ctx.request_state or ""
        if state.startswith("round-2:"):
            answers = await ask(ctx, {"step2": step2}, state=state)
            if isinstance(answers, InputRequiredResult):
                return answers
            return text(f"{state.removeprefix('round-2:')} likes "
                        f"{form(answers['step2']).get('color')}")
        answers = await ask(ctx, {"step1": step1}, state="round-1")
        if isinstance(answers, InputRequiredResult):
            return answers
        name = form(answers["step1"]).get("name", "stranger")
        return InputRequiredResult(input_requests={"step2": step2},
                                   request_state=f"round-2:{name}")

    @tool("An elicitation plus requestState; a tampered state is rejected.")
    async def test_input_required_result_tampered_state(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        answers = await ask(ctx, {"user_name": ASK_NAME}, state="untampered")
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"state verified for {form(answers['user_name']).get('name', 'stranger')}")

    @tool("Ask only for what the client declared: sampling, elicitation, roots.")
    async def test_input_required_result_capabilities(
        ctx: Context,
    ) -> CallToolResult | InputRequiredResult:
        wanted: dict[str, InputRequest] = {
            "capital_question": sample("What is the capital of France?"),
            "user_name": ASK_NAME,
            "client_roots": LIST_ROOTS,
        }
        questions = {key: request for key, request in wanted.items() if declares(ctx, request)}
        if not questions:
            return text("The client declared none of sampling, elicitation and roots")
        answers = await ask(ctx, questions)
        if isinstance(answers, InputRequiredResult):
            return answers
        return text(f"Answered: {', '.join(sorted(answers))}")

    def test_dynamic_tool() -> CallToolResult:
        return text("dynamic tool")

    def test_dynamic_prompt() -> str:
        return "This prompt was added at run time."

    server = MCPServer(
        name=name,
        version="1.0.0",
        instructions="Fixture for the MCP conformance server scenarios.",
        log_level="WARNING",
        tools=tool.tools,
        # Explicit so the seal's audience is this server's name; the key lives as long as the
        # process, which is as long as any requestState it minted can be used.
        request_state_security=RequestStateSecurity.ephemeral(),
    )

    @server.prompt(description="A prompt without arguments.")
    def test_simple_prompt() -> str:
        return "This is a simple prompt for testing."

    @server.prompt(description="A prompt with two required arguments.")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt(description="A prompt that embeds the resource at `resourceUri`.")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:  # noqa: N803
        resource = TextResourceContents(uri=resourceUri, mime_type="text/plain",
                                        text="Embedded resource content for testing.")
        return [
            UserMessage(EmbeddedResource(type="resource", resource=resource)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image.")
    def test_prompt_with_image() -> list[Message]:
        return [
            UserMessage(ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]

    @server.prompt(description="Asks the client for context before it can render.")
    async def test_input_required_result_prompt(
        ctx: Context,
    ) -> list[Message] | InputRequiredResult:
        question = elicit("What context should the prompt use?", {"context": {"type": "string"}},
                          ["context"])
        answers = await ask(ctx, {"user_context": question})
        if isinstance(answers, InputRequiredResult):
            return answers
        return [UserMessage(f"Use this context: {form(answers['user_context']).get('context')}")]

    @server.resource("test://static-text", name="static-text", mime_type="text/plain",
                     description="A static text resource.")
    def static_text() -> str:
        return STATIC_TEXT

    @server.resource("test://static-binary", name="static-binary", mime_type="image/png",
                     description="A static binary resource (a PNG image).")
    def static_binary() -> bytes:
        return PNG

    @server.resource("test://template/{id}/data", name="template-data",
                     mime_type="application/json", description="Data for the given id.")
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", name="watched-resource", mime_type="text/plain",
                     description="A resource clients may subscribe to.")
    def watched_resource() -> str:
        return "Watched resource content"

    @server.completion()
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, PromptReference) and ref.name == "test_prompt_with_arguments":
            values = [value for value in COMPLETIONS if value.startswith(argument.value)]
            return Completion(values=values, total=len(values), has_more=False)
        return None

    serve_legacy_only_methods(server)
    return server


def serve_legacy_only_methods(server: MCPServer) -> None:
    """Answer ``logging/setLevel`` and ``resources/subscribe|unsubscribe``.

    ``MCPServer`` has no decorator for them; the low-level server derives the ``logging``
    capability and ``resources.subscribe`` from their handlers, and the SDK answers them
    -32601 on 2026-07-28 requests (they were removed, CL26 major 5) whatever is registered.
    """
    lowlevel = server._lowlevel_server

    async def set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        # Every level is sent (legacy ``ctx.log`` is not gated by the SDK); the suite only
        # checks that the request succeeds and that the result is exactly {}.
        return EmptyResult()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        return EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    # Legacy sessions take their capabilities from create_initialization_options(), whose
    # listChanged flags default to false; 2026-07-28 derives them from subscriptions/listen.
    # Both stdio and the HTTP session manager call it with no arguments, so bind them here.
    default_options = lowlevel.create_initialization_options
    list_changed = NotificationOptions(prompts_changed=True, resources_changed=True,
                                       tools_changed=True)

    def initialization_options(
        notification_options: NotificationOptions | None = None, *args: Any, **kwargs: Any
    ) -> InitializationOptions:
        return default_options(notification_options or list_changed, *args, **kwargs)

    lowlevel.create_initialization_options = initialization_options  # type: ignore[method-assign]


class ReplayBuffer(EventStore):
    """The last events of every SSE stream, so an HTTP client can resume with Last-Event-ID.

    Only ``--http`` uses it: with an event store the SDK sends the priming event and
    ``retry`` that the server-sse-polling scenario looks for, and ``test_reconnection``'s
    closed stream really is resumed. Event ids are ``<stream>:<seq>`` (T25 "Resumability").
    """

    def __init__(self, per_stream: int = 100) -> None:
        self.per_stream = per_stream
        self.streams: dict[StreamId, list[tuple[int, JSONRPCMessage | None]]] = {}
        self.next_seq = 0

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self.next_seq += 1
        events = self.streams.setdefault(stream_id, [])
        events.append((self.next_seq, message))
        del events[:-self.per_stream]
        return f"{stream_id}:{self.next_seq}"

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        stream_id, _, seq = last_event_id.rpartition(":")
        if stream_id not in self.streams or not seq.isdigit():
            return None
        for event_seq, message in self.streams[stream_id]:
            if event_seq > int(seq) and message is not None:
                await send_callback(EventMessage(message, f"{stream_id}:{event_seq}"))
        return stream_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", default="conformance", help="the server's name")
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="serve Streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio")
    parser.add_argument("--sse", type=int, metavar="PORT",
                        help="serve the HTTP+SSE transport of 2024-11-05 on "
                        "http://127.0.0.1:PORT/sse instead of stdio")
    args: Any = parser.parse_args(argv)
    server = build_server(args.name)
    if args.sse is not None:
        server.run("sse", host="127.0.0.1", port=args.sse)
    elif args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http,
                   event_store=ReplayBuffer(), retry_interval=1000)


if __name__ == "__main__":
    main()
