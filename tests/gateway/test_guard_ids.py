"""Request ids and progress tokens keep their JSON type and value through the gateway,
on every client transport, while the upstream sees ids and tokens of the gateway's own.

Each id is compared by type and value (``7`` must not come back as ``7.0`` or ``"7"``,
``"7"`` not as ``7``): integers, integers past 2**53 and 2**64, numeric strings, other
strings. The upstream is ``servers/recording_server.py``, so what it received is
asserted where it was received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import (
    GatewayProcess,
    McpClient,
    Record,
    http_headers,
    http_initialize,
    modern,
    modern_headers,
    read_events,
    recording_upstream,
    run,
    running_gateway,
    sdk_upstream,
    start_era,
    unix_client,
    ws_client,
)

IDS: list[int | str] = [0, 7, -3, 2**53 + 1, 2**63 - 1, 2**64 + 5, -(2**63) - 1,
                        "7", "007", "-1", "7.0", "1e3", "", "req-7", "ünï"]
TOKENS: list[int | str] = [7, 0, 2**53 + 1, 2**64 + 5, "7", "07", "tok"]


def same(got: Any, sent: Any) -> bool:
    return type(got) is type(sent) and got == sent


def label(value: Any) -> str:
    return f"{type(value).__name__}:{value!r}"


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Record]]:
    workdir = tmp_path_factory.mktemp("ids")
    record = workdir / "record.jsonl"
    with running_gateway(workdir, {"rec": recording_upstream(record)}) as gw:
        yield gw, Record(record)


def connect(gw: GatewayProcess, transport: str) -> Any:
    return ws_client(gw.ws_url) if transport == "ws" else unix_client(gw.unix_path)


@pytest.mark.parametrize("transport", ["ws", "unix"])
def test_ids_keep_their_type_and_value(rec: tuple[GatewayProcess, Record],
                                       transport: str) -> None:
    """All the ids in flight at once, "7" next to 7 and "007": each answer carries its
    own request's id, with its type, and the text of its own call."""
    gw, record = rec

    async def body() -> None:
        async with connect(gw, transport) as c:
            await c.initialize()
            marker = f"ids-{transport}"
            forwarded = gw.upstream("rec")["requests_forwarded"]
            for request_id in IDS:
                await c.start_call("echo", {"text": f"{marker} {label(request_id)}"},
                                   request_id)
            for request_id in IDS:
                response = await c.wait_for(request_id)
                assert same(response["id"], request_id), response
                assert response["result"]["content"][0]["text"] == \
                    f"{marker} {label(request_id)}"
            assert gw.upstream("rec")["requests_forwarded"] == forwarded + len(IDS)
            # Answers the gateway gives itself keep the type too: ping, and errors.
            for request_id in IDS:
                pong = await c.request("ping", request_id=request_id)
                assert same(pong["id"], request_id) and pong["result"] == {}
                unknown = await c.call_tool("no-such-tool", request_id=request_id)
                assert same(unknown["id"], request_id)
                assert unknown["error"]["code"] == -32602
            # The upstream saw ids of the gateway's own: integers, each used once.
            seen = [m["id"] for m in record.received("tools/call")
                    if m["params"]["arguments"].get("text", "").startswith(marker + " ")]
            assert len(seen) == len(IDS)
            assert all(type(i) is int for i in seen) and len(set(seen)) == len(IDS)
    run(body())


def test_ids_keep_their_type_over_legacy_http(rec: tuple[GatewayProcess, Record]) -> None:
    gw, _ = rec

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            for request_id in IDS:
                call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": label(request_id)}}}
                async with http.post(gw.http_url, json=call, headers=http_headers(sid)) as resp:
                    assert resp.status == 200
                    reply = json.loads(await resp.read())
                assert same(reply["id"], request_id), reply
                assert reply["result"]["content"][0]["text"] == label(request_id)
            # An answer on an event stream (the client prefers one) keeps it too.
            for request_id in (7, "7"):
                call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "sse"}}}
                async with http.post(gw.http_url, json=call, headers=http_headers(
                        sid, Accept="text/event-stream, application/json")) as resp:
                    events = await read_events(resp, 100)
                (answer,) = [e[1] for e in events if e[1] is not None]
                assert same(answer["id"], request_id), answer
    run(main())


def test_ids_keep_their_type_over_modern_http(rec: tuple[GatewayProcess, Record]) -> None:
    gw, _ = rec

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            for request_id in IDS:
                call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                        "params": modern({"name": "echo",
                                          "arguments": {"text": label(request_id)}})}
                async with http.post(gw.http_url, json=call,
                                     headers=modern_headers("tools/call", "echo")) as resp:
                    assert resp.status == 200
                    reply = json.loads(await resp.read())
                assert same(reply["id"], request_id), reply
                assert reply["result"]["content"][0]["text"] == label(request_id)
    run(main())


async def progress_call(c: McpClient, token: Any, request_id: Any, steps: int,
                        modern_era: bool = False) -> list[Any]:
    """Call the progress tool with ``token``; the tokens of the notifications that came."""
    params: dict[str, Any] = {"name": "progress",
                              "arguments": {"steps": steps, "interval": 0.02},
                              "_meta": {"progressToken": token}}
    response = await c.request("tools/call", modern(params) if modern_era else params,
                               request_id=request_id)
    assert response["result"]["content"][0]["text"] == f"{steps} steps", response
    return [n["params"]["progressToken"] for n in c.notifications
            if n["method"] == "notifications/progress"]


@pytest.mark.parametrize("token", TOKENS, ids=label)
def test_progress_tokens_are_mapped_per_client(rec: tuple[GatewayProcess, Record],
                                               token: Any) -> None:
    """Two clients (WebSocket and unix) use the same token at once: each gets its own
    notifications, with the token it sent, type and value; the upstream saw two
    different tokens of the gateway's own."""
    gw, record = rec

    async def one(opened: Any, request_id: str, steps: int) -> list[Any]:
        async with opened as c:
            await c.initialize()
            return await progress_call(c, token, request_id, steps)

    async def body() -> None:
        ws_tokens, unix_tokens = await asyncio.gather(
            one(ws_client(gw.ws_url), f"ws-{label(token)}", 3),
            one(unix_client(gw.unix_path), f"unix-{label(token)}", 5))
        assert len(ws_tokens) == 3 and len(unix_tokens) == 5
        assert all(same(t, token) for t in ws_tokens + unix_tokens), (ws_tokens, unix_tokens)
    run(body())
    calls = [m for m in record.received("tools/call") if m["params"]["name"] == "progress"]
    upstream_tokens = [m["params"]["_meta"]["progressToken"] for m in calls[-2:]]
    assert upstream_tokens[0] != upstream_tokens[1]


@pytest.mark.parametrize("token", TOKENS, ids=label)
def test_progress_tokens_of_modern_requests_keep_their_type(
        rec: tuple[GatewayProcess, Record], token: Any) -> None:
    gw, _ = rec

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            tokens = await progress_call(c, token, "m1", 3, modern_era=True)
            assert len(tokens) == 3 and all(same(t, token) for t in tokens), tokens
    run(body())


@pytest.mark.parametrize("token", [7, "7", "tok"], ids=label)
def test_progress_tokens_keep_their_type_over_legacy_http(
        rec: tuple[GatewayProcess, Record], token: Any) -> None:
    gw, _ = rec

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "progress", "arguments": {"steps": 3, "interval": 0.02},
                               "_meta": {"progressToken": token}}}
            async with http.post(gw.http_url, json=call, headers=http_headers(sid)) as resp:
                events = [e[1] for e in await read_events(resp, 100) if e[1] is not None]
            notes = [e for e in events if e.get("method") == "notifications/progress"]
            assert [n["params"]["progress"] for n in notes] == [1, 2, 3]
            assert all(same(n["params"]["progressToken"], token) for n in notes), notes
            assert same(events[-1]["id"], 2)
    run(main())


def test_an_id_in_flight_is_not_taken_twice(rec: tuple[GatewayProcess, Record]) -> None:
    """A second request with the id of one still in flight (or of an open listen) is
    refused with -32600 under that id; the same digits as a string are another id."""
    gw, _ = rec

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 1.0}, 7)
            await c.start_call("echo", {"text": "again"}, 7)
            refused = await c.receive()
            assert same(refused["id"], 7) and refused["error"]["code"] == -32600, refused
            assert "already in flight" in refused["error"]["message"]
            # A request the gateway answers itself is no different.
            for method in ("ping", "tools/list"):
                await c.send({"jsonrpc": "2.0", "id": 7, "method": method})
                refused = await c.receive()
                assert same(refused["id"], 7) and refused["error"]["code"] == -32600, \
                    (method, refused)
            other = await c.call_tool("echo", {"text": "a string 7"}, request_id="7")
            assert same(other["id"], "7")
            assert other["result"]["content"][0]["text"] == "a string 7"
            slow = await c.wait_for(7)
            assert slow["result"]["content"][0]["text"] == "slow done"
            # Answered, the id is free again.
            again = await c.call_tool("echo", {"text": "free"}, request_id=7)
            assert again["result"]["content"][0]["text"] == "free"
        async with unix_client(gw.unix_path) as c:
            await c.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                          "params": modern({"notifications": {"toolsListChanged": True}})})
            assert (await c.receive())["method"] == "notifications/subscriptions/acknowledged"
            taken = await c.request("tools/call", modern({"name": "echo", "arguments": {}}),
                                    request_id="L")
            assert taken["error"]["code"] == -32600, taken
    run(body())


# -- through a modern (2026-07-28) upstream: the official SDK server pinned modern ---------

@pytest.fixture(scope="module")
def modern_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("modern-up")
    with running_gateway(workdir, {"sdk": sdk_upstream(era="modern")}) as gw:
        yield gw


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_ids_and_tokens_through_a_modern_upstream(modern_up: GatewayProcess, era: str) -> None:
    """Both eras of client, each id type, answered by a modern upstream; and progress
    tokens of each type come back as sent."""
    async def body() -> None:
        async with unix_client(modern_up.unix_path) as c:
            params = await start_era(c, era)
            for request_id in IDS:
                await c.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                              "params": params({"name": "echo",
                                                "arguments": {"text": label(request_id)}})})
            for request_id in IDS:
                response = await c.wait_for(request_id)
                assert same(response["id"], request_id), response
                assert response["result"]["content"][0]["text"] == label(request_id)
            for n, token in enumerate(TOKENS):
                c.notifications.clear()
                done = await c.request("tools/call", params({
                    "name": "progress", "arguments": {"steps": 2},
                    "_meta": {"progressToken": token}}), request_id=f"p{n}")
                assert done["result"]["content"][0]["text"] == "completed 2 steps", done
                tokens = [m["params"]["progressToken"] for m in c.notifications
                          if m["method"] == "notifications/progress"]
                assert len(tokens) == 2 and all(same(t, token) for t in tokens), tokens
    run(body())


def test_progress_nobody_asked_for_is_dropped(rec: tuple[GatewayProcess, Record]) -> None:
    """Progress under a token the client never gave, or after the answer, reaches no
    client, and is no error either."""
    gw, _ = rec

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            unasked = await c.call_tool("progress", {"steps": 2, "guess": True})
            assert unasked["result"]["content"][0]["text"] == "2 steps"
            asked = await c.request("tools/call", {
                "name": "progress", "arguments": {"steps": 2, "late": True},
                "_meta": {"progressToken": "mine"}})
            assert asked["result"]["content"][0]["text"] == "2 steps"
            await asyncio.sleep(0.3)  # the late one comes right after the answer
            assert (await c.request("ping"))["result"] == {}
            tokens = [n["params"]["progressToken"] for n in c.notifications
                      if n["method"] == "notifications/progress"]
            assert tokens == ["mine", "mine"], tokens
    run(body())
    assert "could not handle a message from the upstream" not in gw.log()


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_progress_nobody_asked_for_is_dropped_from_a_modern_upstream(
        gateway_factory: Any, tmp_path: Path, era: str) -> None:
    """The same through a modern upstream (the recording server in its modern guise),
    for each era of client."""
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        tmp_path / "m.jsonl", "rec", "--modern", era="modern")})
    assert gw.upstream("rec")["era"] == "modern"

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            params = await start_era(c, era)
            unasked = await c.request("tools/call", params(
                {"name": "progress", "arguments": {"steps": 2, "guess": True}}))
            assert unasked["result"]["content"][0]["text"] == "2 steps", unasked
            asked = await c.request("tools/call", params({
                "name": "progress", "arguments": {"steps": 2, "late": True},
                "_meta": {"progressToken": 7}}))
            assert asked["result"]["content"][0]["text"] == "2 steps"
            await asyncio.sleep(0.3)
            await c.request("tools/call", params({"name": "echo", "arguments": {}}))
            tokens = [n["params"]["progressToken"] for n in c.notifications
                      if n["method"] == "notifications/progress"]
            assert tokens == [7, 7], tokens
    run(body())
    assert "could not handle a message from the upstream" not in gw.log()


# -- what a modern client gets from a legacy upstream -----------------------------------------

@pytest.mark.parametrize("uri,message,data", [
    ("rec://missing", "no such resource: rec://missing", {"uri": "rec://missing"}),
    ("rec://missing-data", "no such resource: rec://missing-data",
     {"hint": "ask again", "uri": "rec://missing-data"}),
    ("rec://missing-blank", "Resource not found", {"uri": "rec://missing-blank"}),
])
def test_a_legacy_not_found_becomes_invalid_params_for_a_modern_client(
        rec: tuple[GatewayProcess, Record], uri: str, message: str, data: Any) -> None:
    """2026-07-28 servers never answer -32002: resource not found is -32602 with
    data.uri; a legacy client gets the upstream's -32002 as it was."""
    gw, _ = rec

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            reply = await c.request("resources/read", modern({"uri": uri}), request_id="r")
            assert reply["error"] == {"code": -32602, "message": message, "data": data}
            await c.initialize()
            legacy = await c.request("resources/read", {"uri": uri}, request_id="l")
            assert legacy["error"]["code"] == -32002, legacy
    run(body())


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_upstream_errors_and_odd_results_pass_through(rec: tuple[GatewayProcess, Record],
                                                      era: str) -> None:
    gw, _ = rec

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            params = await start_era(c, era)
            failed = await c.request("tools/call", params({"name": "fail"}), request_id=5)
            assert failed == {"jsonrpc": "2.0", "id": 5, "error": {
                "code": -32603, "message": "failed on purpose"}}
            odd = await c.request("tools/call", params({"name": "odd"}), request_id="o")
            assert odd == {"jsonrpc": "2.0", "id": "o", "result": 42}
    run(body())


def test_a_modern_request_s_log_level_is_held_only_while_it_runs(
        rec: tuple[GatewayProcess, Record]) -> None:
    """A legacy upstream is asked for the request's level before the request, and
    quietened again once it is answered."""
    gw, record = rec

    def levels() -> list[str]:
        return [m["params"]["level"] for m in record.received("logging/setLevel")]

    async def body() -> None:
        before = len(levels())
        async with unix_client(gw.unix_path) as c:
            reply = await c.request("tools/call", modern(
                {"name": "echo", "arguments": {"text": "logged"}},
                **{"io.modelcontextprotocol/logLevel": "info"}))
            assert reply["result"]["content"][0]["text"] == "logged"
            await asyncio.to_thread(record.wait, lambda r: levels()[before:] == [
                "info", "emergency"], 15.0, "logging/setLevel info, then emergency")
    run(body())


def test_a_modern_client_s_read_resumes_with_the_state_issued_for_its_uri(
        gateway_factory: Any, tmp_path: Path) -> None:
    """A legacy upstream asks the client's model while reading a resource: a modern
    client gets input_required, and its retry of that URI with the answer gets the
    contents; the state is bound to the URI, so it does not resume a read of another."""
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        tmp_path / "read.jsonl", "rec", attribution="in_flight")})
    uri = "rec://rec/ask-doc"
    answer = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "4"}}

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            first = (await c.request("resources/read", modern(
                {"uri": uri}, **{"io.modelcontextprotocol/clientCapabilities": {
                    "sampling": {}}}), request_id="r1"))["result"]
            assert first["resultType"] == "input_required", first
            (key, asked), = first["inputRequests"].items()
            assert asked["method"] == "sampling/createMessage"
            assert asked["params"]["messages"][0]["content"]["text"] == f"what is in {uri}?"
            state = first["requestState"]
            other = await c.request("resources/read", modern({
                "uri": "rec://rec/ask-other", "requestState": state,
                "inputResponses": {key: answer}}), request_id="r2")
            assert other["error"]["code"] == -32602, other
            assert "requestState" in other["error"]["message"]
            final = await c.request("resources/read", modern({
                "uri": uri, "requestState": state, "inputResponses": {key: answer}}),
                request_id="r3")
            assert final["result"]["resultType"] == "complete", final
            assert final["result"]["contents"] == [{"uri": uri, "text": "4"}]
    run(body())
