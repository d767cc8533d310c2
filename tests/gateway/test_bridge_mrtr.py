"""Client input across eras (gateway/mrtr.py): a legacy client answers a modern
upstream's ``input_required`` as server-to-client requests, and a modern client answers a
legacy upstream's server-to-client requests as ``input_required`` results and retries.

Real peers: the SDK test servers pinned to one era, the SDK client (through ``mcpfast
connect``, and over Streamable HTTP), and raw messages on the unix socket and WebSocket.
A scripted modern upstream (ASKER_SERVER) asks whatever it is told to, capabilities or
not, so the gateway's own checks are exercised.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    Root,
    TextContent,
)

from mcpfast.gateway.mrtr import (
    REQUEST_STATE_TTL,
    RequestStateError,
    RequestStateSigner,
    input_requests_problem,
)
from mcpfast.protocol.mcp import input_response_problem, required_capability

from ..conftest import (
    CAPS,
    SERVER_INFO,
    GatewayProcess,
    McpClient,
    Record,
    bridged,
    collect,
    events_upstream,
    recording_upstream,
    run,
    unix_client,
    ws_client,
)
from ..conftest import CONFORMANCE_SERVER as FIXTURE
from ..conftest import modern_request as request
from ..conftest import sdk_text as text_of

ASKER_SERVER = r"""
import json, sys
log = open(sys.argv[1], "a")
SAMPLE = {"method": "sampling/createMessage", "params": {
    "messages": [{"role": "user", "content": {"type": "text", "text": "2+2?"}}],
    "maxTokens": 5}}
URL = {"method": "elicitation/create", "params": {
    "mode": "url", "message": "Sign in", "url": "https://example.com/login",
    "elicitationId": "e-1"}}

def reply(m, result):
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": result}), flush=True)

for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or "method" not in m:
        continue
    params = m.get("params") or {}
    if m["method"] == "server/discover":
        reply(m, {"resultType": "complete", "supportedVersions": ["2026-07-28"],
                  "capabilities": {"tools": {}},
                  "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "asker",
                                                                   "version": "1"}}})
    elif m["method"] == "tools/list":
        reply(m, {"resultType": "complete", "tools": [
            {"name": n, "inputSchema": {"type": "object"}} for n in ("ask", "loop", "url")]})
    elif m["method"] == "tools/call":
        log.write(json.dumps(params) + "\n")
        log.flush()
        got = params.get("inputResponses")
        if params["name"] == "loop":
            reply(m, {"resultType": "input_required", "requestState": "again"})
        elif got is None:
            ask = URL if params["name"] == "url" else SAMPLE
            reply(m, {"resultType": "input_required", "inputRequests": {"q": ask},
                      "requestState": "s1"})
        else:
            reply(m, {"resultType": "complete", "content": [{"type": "text", "text": json.dumps(
                {"inputResponses": got, "requestState": params.get("requestState")})}]})
    else:
        reply(m, {})
"""
ANSWER = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "4"}}


def asker(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    script = tmp_path / "asker.py"
    script.write_text(ASKER_SERVER)
    calls = tmp_path / "asker-calls.jsonl"
    calls.touch()
    return {"command": ["python", str(script), str(calls)], "era": "modern"}, calls


def asker_gateway(gateway_factory: Any, tmp_path: Path) -> tuple[GatewayProcess, Path]:
    """A gateway fronting the scripted modern upstream, and the file its calls go to."""
    table, calls = asker(tmp_path)
    return gateway_factory({"asker": table}), calls


def calls_seen(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def conformance_upstream(era: str) -> dict[str, Any]:
    # The fixture asks for input only inside the call that needs it (attribution).
    return {"command": ["python", FIXTURE], "init_timeout": 20.0, "era": era,
            "attribution": "in_flight"}


# -- SDK client callbacks ------------------------------------------------------------------

async def answer_sampling(context: ClientRequestContext, params: CreateMessageRequestParams
                          ) -> CreateMessageResult:
    asked = params.messages[0].content
    assert isinstance(asked, TextContent)
    return CreateMessageResult(role="assistant", model="test-model",
                               content=TextContent(type="text", text=f"re: {asked.text}"))


async def answer_elicitation(context: ClientRequestContext, params: ElicitRequestParams
                             ) -> ElicitResult:
    return ElicitResult(action="accept", content={"name": "Ada", "username": "ada",
                                                  "email": "ada@example.com", "color": "teal"})


async def answer_roots(context: ClientRequestContext) -> ListRootsResult:
    return ListRootsResult(roots=[Root(uri="file:///work", name="work")])  # type: ignore[arg-type]


CALLBACKS: dict[str, Any] = {"sampling_callback": answer_sampling,
                             "elicitation_callback": answer_elicitation,
                             "list_roots_callback": answer_roots}


class Progress:
    def __init__(self) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None
                       ) -> None:
        self.seen.append((progress, total, message))


# -- a legacy client, a modern upstream ----------------------------------------------------

async def answer_relayed(c: McpClient, expected_method: str, result: dict[str, Any]
                         ) -> dict[str, Any]:
    asked = await c.receive()
    assert asked["method"] == expected_method, asked
    await c.send({"jsonrpc": "2.0", "id": asked["id"], "result": result})
    return asked


@pytest.mark.parametrize("transport", ["unix", "websocket"])
def test_legacy_client_answers_two_rounds_as_server_requests(gateway_factory: Any,
                                                             transport: str) -> None:
    gw = gateway_factory({"events": events_upstream("modern")})

    async def body() -> None:
        opened = unix_client(gw.unix_path) if transport == "unix" else ws_client(gw.ws_url)
        async with opened as c:
            await c.initialize(capabilities={"sampling": {}, "elicitation": {}})
            await c.send({"jsonrpc": "2.0", "id": "call", "method": "tools/call", "params": {
                "name": "interview", "arguments": {"topic": "tides"},
                "_meta": {"progressToken": "tok"}}})
            sampled = await answer_relayed(c, "sampling/createMessage", {
                "role": "assistant", "model": "m",
                "content": {"type": "text", "text": "the moon"}})
            assert sampled["params"]["messages"][0]["content"]["text"] == "Tell me about tides"
            elicited = await answer_relayed(c, "elicitation/create", {
                "action": "accept", "content": {"name": "Ada"}})
            assert "the moon" in elicited["params"]["message"]
            assert isinstance(sampled["id"], int) and elicited["id"] != sampled["id"]
            final = await c.wait_for("call")
            result = final["result"]
            assert result["content"][0]["text"] == "Ada asked about tides; the model said the moon"
            assert "resultType" not in result and "_meta" not in result
            # The last round's upstream progress token is a new one; the client sees its own.
            assert [n["params"]["progressToken"] for n in c.notifications
                    if n["method"] == "notifications/progress"] == ["tok"]
    run(body())


def test_legacy_client_retry_carries_answers_and_state(gateway_factory: Any,
                                                       tmp_path: Path) -> None:
    gw, calls = asker_gateway(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "ask", "arguments": {"x": 1}}})
            asked = await answer_relayed(c, "sampling/createMessage", ANSWER)
            assert asked["params"]["messages"][0]["content"]["text"] == "2+2?"
            final = (await c.wait_for(1))["result"]
            assert json.loads(final["content"][0]["text"]) == {
                "inputResponses": {"q": ANSWER}, "requestState": "s1"}
            first, retry = calls_seen(calls)
            assert "inputResponses" not in first and "requestState" not in first
            assert retry["arguments"] == {"x": 1} and retry["name"] == "ask"
            assert retry["inputResponses"] == {"q": ANSWER} and retry["requestState"] == "s1"
    run(body())


def test_legacy_client_lacking_a_capability_gets_an_error(gateway_factory: Any,
                                                          tmp_path: Path) -> None:
    gw, calls = asker_gateway(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"elicitation": {}})
            error = (await c.call_tool("ask"))["error"]
            assert error["code"] == -32021
            assert error["data"] == {"requiredCapabilities": {"sampling": {}}}
            assert "sampling" in error["message"]
            # Form-only elicitation does not cover a URL-mode request.
            error = (await c.call_tool("url"))["error"]
            assert error["data"] == {"requiredCapabilities": {"elicitation": {"url": {}}}}
            assert not c.requests
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"elicitation": {"url": {}}})
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "url", "arguments": {}}})
            asked = await answer_relayed(c, "elicitation/create", {"action": "accept"})
            assert asked["params"]["url"] == "https://example.com/login"
            assert "result" in await c.wait_for(1)
        assert len(calls_seen(calls)) == 4
    run(body())


def test_a_client_error_fails_the_call(gateway_factory: Any, tmp_path: Path) -> None:
    gw, calls = asker_gateway(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {}}})
            asked = await c.receive()
            await c.send({"jsonrpc": "2.0", "id": asked["id"],
                          "error": {"code": -1, "message": "User rejected sampling"}})
            error = (await c.wait_for(9))["error"]
            assert error["code"] == -32603
            assert "User rejected sampling" in error["message"]
            assert error["data"]["error"]["code"] == -1
        assert len(calls_seen(calls)) == 1
    run(body())


def test_input_rounds_are_bounded(gateway_factory: Any, tmp_path: Path) -> None:
    gw, calls = asker_gateway(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            error = (await c.call_tool("loop"))["error"]
            assert error["code"] == -32603 and "16 rounds" in error["message"]
        seen = calls_seen(calls)
        assert len(seen) == 17
        assert all(call["requestState"] == "again" for call in seen[1:])
        assert all("inputResponses" not in call for call in seen)
    run(body())


def test_cancel_or_disconnect_during_a_round_ends_the_call(gateway_factory: Any,
                                                            tmp_path: Path) -> None:
    gw, calls = asker_gateway(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {}}})
            asked = await c.receive()
            await c.notify("notifications/cancelled", {"requestId": 1})
            withdrawn = await c.receive()
            assert withdrawn["method"] == "notifications/cancelled"
            assert withdrawn["params"]["requestId"] == asked["id"]
            # A late answer goes nowhere, and the call gets no answer at all.
            await c.send({"jsonrpc": "2.0", "id": asked["id"], "result": ANSWER})
            assert await collect(c, 0.5) == []
            # The id is free again.
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {}}})
            assert (await c.receive())["method"] == "sampling/createMessage"
        assert len(calls_seen(calls)) == 2
        await asyncio.sleep(0.3)
        assert gw.status()["in_flight"] == 0
        assert len(calls_seen(calls)) == 2
    run(body())


def sdk_client(gw: GatewayProcess, via: str, mode: str) -> Client:
    """The SDK client in ``mode``, through ``mcpfast connect`` or over Streamable HTTP,
    answering sampling, elicitation and roots requests."""
    if via == "connect":
        return bridged(gw, mode=mode, **CALLBACKS)
    return Client(gw.http_url, mode=mode, **CALLBACKS)


@pytest.mark.parametrize("via", ["connect", "http"])
def test_sdk_legacy_client_through_conformance_rounds(gateway_factory: Any, via: str) -> None:
    gw = gateway_factory({"everything": conformance_upstream("modern")})

    async def body() -> None:
        async with sdk_client(gw, via, "legacy") as c:
            assert c.protocol_version == "2025-11-25"
            sampled = await c.call_tool("test_sampling", {"prompt": "capital of France?"})
            assert text_of(sampled) == "LLM response: re: capital of France?"
            elicited = await c.call_tool("test_elicitation", {"message": "who?"})
            assert "ada@example.com" in text_of(elicited)
            # Two rounds, each with its own requestState.
            rounds = await c.call_tool("test_input_required_result_multi_round", {})
            assert text_of(rounds) == "Ada likes teal"
            # Three requests in one round: elicitation, sampling and roots/list.
            three = await c.call_tool("test_input_required_result_multiple_inputs", {})
            assert text_of(three) == "re: Generate a greeting, Ada; roots: file:///work"
            prompt = await c.get_prompt("test_input_required_result_prompt", {})
            assert "Use this context" in str(prompt.messages[0].content)
    run(body())


# -- a modern client, a legacy upstream ----------------------------------------------------

def sample_call(caps: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": "sample", "arguments": {"prompt": "why?"},
            "_meta": {CAPS: {"sampling": {}} if caps is None else caps}}


def test_modern_client_gets_input_required_and_retries(gateway_factory: Any) -> None:
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            call = sample_call()
            first = (await request(c, "tools/call", call, request_id="a"))["result"]
            assert first["resultType"] == "input_required"
            assert first["_meta"][SERVER_INFO]["name"] == "mcpfast"
            assert "ttlMs" not in first
            (key, asked), = first["inputRequests"].items()
            assert asked["method"] == "sampling/createMessage"
            assert asked["params"]["messages"][0]["content"]["text"] == "why?"
            state = first["requestState"]
            assert isinstance(state, str) and not c.requests
            # A missing answer asks again, with the same state.
            again = (await request(c, "tools/call", {**call, "requestState": state},
                                   request_id="b"))["result"]
            assert again == first
            bad = await request(c, "tools/call", {**call, "requestState": state,
                                                  "inputResponses": {key: {"text": "4"}}})
            assert bad["error"]["code"] == -32602 and key in bad["error"]["message"]
            # The state is bound to the tool it was issued for.
            other = {**call, "name": "echo", "arguments": {"text": "x"}}
            wrong = await request(c, "tools/call", {**other, "requestState": state,
                                                    "inputResponses": {key: ANSWER}})
            assert wrong["error"]["code"] == -32602
            # And to the arguments: the server asked its question about these (found by
            # an outside sweep: a retry on other arguments got the first call's result).
            changed = {**call, "arguments": {"prompt": "why not?"}}
            wrong = await request(c, "tools/call", {**changed, "requestState": state,
                                                    "inputResponses": {key: ANSWER}})
            assert wrong["error"]["code"] == -32602
            assert "other arguments" in wrong["error"]["message"], wrong
            # The same arguments written in another order are the same.
            reordered = {"_meta": call["_meta"], "arguments": call["arguments"],
                         "name": call["name"]}
            again = (await request(c, "tools/call", {**reordered, "requestState": state},
                                   request_id="d"))["result"]
            assert again == first
            retry = {**call, "requestState": state, "inputResponses": {key: ANSWER}}
            final = (await request(c, "tools/call", retry, request_id="c"))["result"]
            assert final["resultType"] == "complete"
            assert final["content"][0]["text"] == "4"
            # Used once: a replay names nothing that waits.
            replay = await request(c, "tools/call", retry)
            assert replay["error"]["code"] == -32602
            assert "used already" in replay["error"]["message"]
    run(body())


def test_tampered_state_is_invalid_params(gateway_factory: Any) -> None:
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            first = (await request(c, "tools/call", sample_call()))["result"]
            state, key = first["requestState"], next(iter(first["inputRequests"]))
            payload, mac = state.split(".")
            for tampered in (state + "x", payload[:-2] + "xx." + mac, "garbage", 42):
                answer = await request(c, "tools/call", {
                    **sample_call(), "requestState": tampered, "inputResponses": {key: ANSWER}})
                assert answer["error"]["code"] == -32602, tampered
                assert "requestState" in answer["error"]["message"]
            # The untampered state still works.
            final = await request(c, "tools/call", {
                **sample_call(), "requestState": state, "inputResponses": {key: ANSWER}})
            assert final["result"]["content"][0]["text"] == "4"
    run(body())


def test_missing_capability_is_32021_and_ends_the_upstream_call(gateway_factory: Any) -> None:
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            answer = await request(c, "tools/call", sample_call({"elicitation": {}}))
            assert answer["error"]["code"] == -32021
            assert answer["error"]["data"] == {"requiredCapabilities": {"sampling": {}}}
            assert not c.requests
            echoed = await request(c, "tools/call", {"name": "echo", "arguments": {"text": "ok"}})
            assert echoed["result"]["content"][0]["text"] == "ok"
        assert gw.status()["in_flight"] == 0
    run(body())


def test_a_parked_call_outlives_the_connection_that_asked(gateway_factory: Any) -> None:
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with ws_client(gw.ws_url) as first_connection:
            first = (await request(first_connection, "tools/call", sample_call()))["result"]
        assert gw.status()["in_flight"] == 0  # parked calls do not hold up a drain
        async with unix_client(gw.unix_path) as c:
            final = await request(c, "tools/call", {
                **sample_call(), "requestState": first["requestState"],
                "inputResponses": {next(iter(first["inputRequests"])): ANSWER}})
            assert final["result"]["content"][0]["text"] == "4"
    run(body())


@pytest.mark.parametrize("via", ["connect", "http"])
def test_sdk_modern_client_against_a_legacy_upstream(gateway_factory: Any, via: str) -> None:
    # Each modern HTTP request is a session of its own: only attribution "in_flight"
    # lets the upstream's in-call requests through once the client has sent several.
    gw = gateway_factory({"events": {**events_upstream("legacy"), "attribution": "in_flight"}})

    async def body() -> None:
        async with sdk_client(gw, via, "2026-07-28") as c:
            assert c.protocol_version == "2026-07-28"
            assert text_of(await c.call_tool("sample", {"prompt": "why?"})) == "re: why?"
            progress = Progress()
            interviewed = await c.call_tool("interview", {"topic": "tides"},
                                            progress_callback=progress)
            assert text_of(interviewed) == \
                "Ada asked about tides; the model said re: Tell me about tides"
            assert progress.seen == [(1, 1, "interviewed")]
    run(body())


@pytest.mark.parametrize("via", ["connect", "http"])
def test_sdk_modern_client_through_legacy_conformance_rounds(gateway_factory: Any,
                                                             via: str) -> None:
    gw = gateway_factory({"everything": conformance_upstream("legacy")})

    async def body() -> None:
        async with sdk_client(gw, via, "2026-07-28") as c:
            elicited = await c.call_tool("test_elicitation", {"message": "who?"})
            assert "ada@example.com" in text_of(elicited)
            # The legacy fixture asks twice in a row: two rounds, two states.
            rounds = await c.call_tool("test_input_required_result_multi_round", {})
            assert text_of(rounds) == "Ada likes teal"
            three = await c.call_tool("test_input_required_result_multiple_inputs", {})
            assert text_of(three) == "re: Generate a greeting, Ada; roots: file:///work"
            prompt = await c.get_prompt("test_input_required_result_prompt", {})
            assert "Use this context" in str(prompt.messages[0].content)
    run(body())


# -- the pieces on their own ---------------------------------------------------------------

def test_request_state_signer() -> None:
    signer = RequestStateSigner(b"k" * 32)
    now = time.time()
    state = signer.issue("7", "tools/call", "sample", now + REQUEST_STATE_TTL)
    assert signer.verify(state, "tools/call", "sample", now) == "7"
    with pytest.raises(RequestStateError, match="expired"):
        signer.verify(state, "tools/call", "sample", now + REQUEST_STATE_TTL + 1)
    with pytest.raises(RequestStateError, match="another request"):
        signer.verify(state, "prompts/get", "sample", now)
    with pytest.raises(RequestStateError, match="another request"):
        signer.verify(state, "tools/call", "echo", now)
    with pytest.raises(RequestStateError, match="verification"):
        RequestStateSigner(b"j" * 32).verify(state, "tools/call", "sample", now)
    with pytest.raises(RequestStateError, match="verification"):
        signer.verify(state.replace(".", "x."), "tools/call", "sample", now)
    with pytest.raises(RequestStateError, match="string"):
        signer.verify(None, "tools/call", "sample", now)
    bound = signer.issue("8", "tools/call", "sample", now + 60, {"a": 1, "b": [2, {"c": 3}]})
    assert signer.verify(bound, "tools/call", "sample", now, {"b": [2, {"c": 3}], "a": 1}) == "8"
    for other in (None, {"a": 1}, {"a": 2, "b": [2, {"c": 3}]}, {"a": 1, "b": [{"c": 3}, 2]}):
        with pytest.raises(RequestStateError, match="other arguments"):
            signer.verify(bound, "tools/call", "sample", now, other)


def test_a_legacy_server_may_use_every_part_a_client_declares(gateway_factory: Any,
                                                                tmp_path: Path) -> None:
    """The gateway declares URL-mode elicitation and tool use in sampling to legacy
    servers, so that a client that supports them can be asked for them; a request
    needing a part its client lacks is answered an error upstream, and never reaches it.
    Before: the server saw ``sampling: {}`` and ``elicitation: {}`` whatever the client,
    and a conforming server could not use either part through the gateway."""
    record = Record(tmp_path / "rec.jsonl")
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        record.path, "rec", attribution="in_flight")})
    tools = {"tools": [{"name": "lookup", "inputSchema": {"type": "object"}}],
             "toolChoice": {"mode": "auto"}}
    ask = {"prompt": "look it up", "extra": tools}

    async def body() -> None:
        (init,) = record.received("initialize")
        declared = init["params"]["capabilities"]
        assert declared["sampling"] == {"tools": {}}
        assert declared["elicitation"] == {"form": {}, "url": {}}
        async with ws_client(gw.ws_url) as plain, unix_client(gw.unix_path) as able:
            await plain.initialize(capabilities={"sampling": {}})
            await able.initialize(capabilities={"sampling": {"tools": {}}})
            refused = await plain.call_tool("ask", ask)
            assert refused["result"]["content"][0]["text"] == (
                "error: the client does not support sampling/createMessage with "
                "sampling.tools (its capabilities do not declare it)"), refused
            assert not any(m.get("method") == "sampling/createMessage"
                           for m in plain.notifications)
            for client, arguments in ((able, ask), (plain, {"prompt": "2+2"})):
                # Without tools, the client with sampling alone is asked as before.
                await client.send({"jsonrpc": "2.0", "id": "call", "method": "tools/call",
                                   "params": {"name": "ask", "arguments": arguments}})
                asked = await answer_relayed(client, "sampling/createMessage", ANSWER)
                assert asked["params"].get("tools") == arguments.get("extra", {}).get("tools")
                final = await client.wait_for("call")
                assert final["result"]["content"][0]["text"] == "4", final
    run(body())


def test_a_client_s_invalid_answer_fails_the_server_s_request_not_its_own(
        gateway_factory: Any, tmp_path: Path) -> None:
    """A relayed request's id is the gateway's: the client's malformed answer to it
    (both result and error) is no request of the client's to answer with that id, which
    the client would take for the answer to its own request of that number. The server
    that asked gets the error; the client gets one with a null id."""
    record = Record(tmp_path / "rec.jsonl")
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(record.path, "rec")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "ask", "arguments": {"prompt": "2+2"}}})
            asked = await c.receive()
            assert asked["method"] == "sampling/createMessage", asked
            asked_id = asked["id"]
            await c.send({"jsonrpc": "2.0", "id": asked_id, "result": ANSWER,
                          "error": {"code": -1, "message": "x"}})
            complaint = await c.receive()
            assert complaint["id"] is None and complaint["error"]["code"] == -32600, complaint
            final = await c.wait_for(1)
            assert final["result"]["content"][0]["text"] == (
                "error: the client sent an invalid response: Invalid Request: a response "
                "has either result or error"), final
    run(body())


def test_capability_and_answer_checks() -> None:
    assert required_capability("sampling/createMessage", {}, {}) == {"sampling": {}}
    assert required_capability("sampling/createMessage", {"tools": []}, {"sampling": {}}) == \
        {"sampling": {"tools": {}}}
    assert required_capability("sampling/createMessage", {"toolChoice": {"mode": "none"}},
                               {"sampling": {}}) == {"sampling": {"tools": {}}}
    assert required_capability("sampling/createMessage", {"tools": []},
                               {"sampling": {"tools": {}}}) is None
    assert required_capability("sampling/createMessage", {}, {"sampling": {}}) is None
    assert required_capability("roots/list", {}, {"roots": {"listChanged": True}}) is None
    assert required_capability("elicitation/create", {"mode": "url"}, {"elicitation": {}}) == \
        {"elicitation": {"url": {}}}
    assert required_capability("elicitation/create", {}, {"elicitation": {}}) is None
    assert input_response_problem("sampling/createMessage", ANSWER) is None
    assert input_response_problem("elicitation/create", {"action": "maybe"}) is not None
    assert input_response_problem("roots/list", {"roots": []}) is None
    assert input_response_problem("roots/list", []) == "must be an object"
    assert input_requests_problem({}, None) is not None
    assert input_requests_problem({}, "state") is None
    assert input_requests_problem({"k": {"method": "ping"}}, None) is not None

