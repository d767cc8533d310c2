"""JSON-RPC batches (JSON-RPC 2.0 section 6) through the real gateway: taken on a
session at MCP 2025-03-26 or 2024-11-05 over the unix socket, WebSocket and legacy
Streamable HTTP, refused on later versions. Each item is answered as it would be alone,
and the batch's answers come back as one array, in the order of the items, once the
last has come; nothing else waits for it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import websockets

from ..conftest import (
    INIT_PARAMS,
    GatewayProcess,
    McpClient,
    Record,
    http_headers,
    recording_upstream,
    run,
    running_gateway,
    unix_client,
    ws_client,
)

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}
REFUSED = ("Invalid Request: JSON-RPC batches are taken only on a session at MCP "
           "2025-03-26 or 2024-11-05 (MCP has had none since 2025-06-18); send one "
           "message at a time")


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Record]]:
    workdir = tmp_path_factory.mktemp("batch")
    record = Record(workdir / "one.jsonl")
    with running_gateway(workdir, {"one": recording_upstream(record.path, "one")}) as gw:
        yield gw, record


def request(request_id: Any, method: str, params: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def call(request_id: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    return request(request_id, "tools/call", {"name": tool, "arguments": arguments})


def cancel(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "test"}}


def text(answer: dict[str, Any]) -> str:
    assert "result" in answer, answer
    return str(answer["result"]["content"][0]["text"])


class client:  # noqa: N801 - a context manager, like unix_client
    def __init__(self, gw: GatewayProcess, transport: str, version: str) -> None:
        self.opened = unix_client(gw.unix_path) if transport == "unix" \
            else ws_client(gw.ws_url)
        self.version = version

    async def __aenter__(self) -> McpClient:
        c = await self.opened.__aenter__()
        reply = await c.initialize(protocolVersion=self.version)
        assert reply["result"]["protocolVersion"] == self.version, reply
        return c

    async def __aexit__(self, *exc: Any) -> None:
        await self.opened.__aexit__(*exc)


@pytest.mark.parametrize("transport", ["unix", "ws"])
@pytest.mark.parametrize("version", ["2025-03-26", "2024-11-05"])
def test_a_batch_is_answered_as_one_array_in_the_order_of_its_items(
        one: tuple[GatewayProcess, Record], transport: str, version: str) -> None:
    gw, record = one

    async def body() -> None:
        async with client(gw, transport, version) as c:
            items: list[Any] = [
                call("slow", "slow", seconds=0.4),
                call(1, "echo", text=f"{transport} {version}"),
                {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                request(3, "ping"),
                request(4, "no/such/method"),
                call(5, "nothing-of-that-name"),
                7,
                [request(8, "ping")],
                call("fail", "fail"),
            ]
            started = time.monotonic()
            await c.send_raw(json.dumps(items))
            reply = await c.receive()
            assert isinstance(reply, list), reply
            assert time.monotonic() - started >= 0.4  # it waited for the slow call
            assert [answer["id"] for answer in reply] == ["slow", 1, 3, 4, 5, None, None,
                                                          "fail"]
            assert text(reply[0]) == "slow done"
            assert text(reply[1]) == f"{transport} {version}"
            assert reply[2]["result"] == {}
            assert reply[3]["error"]["code"] == -32601
            assert reply[4]["error"] == {"code": -32602,
                                         "message": "Unknown tool: nothing-of-that-name"}
            assert reply[5]["error"]["code"] == -32600
            assert reply[6]["error"] == {
                "code": -32600,
                "message": "Invalid Request: a batch's items are messages (objects), not "
                           "arrays"}
            assert reply[7]["error"] == {"code": -32603, "message": "failed on purpose"}
            # The upstream saw each call as a message of its own.
            assert record.call("echo", text=f"{transport} {version}") is not None
            # The session goes on as before: single messages get single answers.
            assert (await c.request("ping", request_id="after"))["result"] == {}
    run(body())


@pytest.mark.parametrize("transport", ["unix", "ws"])
def test_what_answers_nothing_gets_nothing_and_an_empty_batch_one_error(
        one: tuple[GatewayProcess, Record], transport: str) -> None:
    gw, _ = one

    async def body() -> None:
        async with client(gw, transport, "2025-03-26") as c:
            await c.send_raw(json.dumps([
                {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
                {"jsonrpc": "2.0", "id": 999, "result": {}}]))  # answers nothing asked
            await c.send_raw("[]")
            assert await c.receive() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32600, "message": "Invalid Request: an empty batch"}}
            await c.send_raw(" [ ] ")
            assert (await c.receive())["error"]["code"] == -32600
            await c.send_raw("[1,2]")
            assert [e["error"]["code"] for e in await c.receive()] == [-32600, -32600]
            # A 2026-07-28 request has no batches: refused in its place, the rest taken.
            await c.send_raw(json.dumps([
                request("m", "subscriptions/listen", {"notifications": {"toolsListChanged": True},
                                                      "_meta": MODERN_META}),
                request("p", "ping")]))
            assert await c.receive() == [
                {"jsonrpc": "2.0", "id": "m", "error": {"code": -32600, "message": (
                    "Invalid Request: a 2026-07-28 request is not part of a JSON-RPC "
                    "batch (that version has none); send it alone")}},
                {"jsonrpc": "2.0", "id": "p", "result": {}}]
            # limits.max_batch (256 by default) bounds what one message may ask.
            await c.send_raw(json.dumps([request(n, "ping") for n in range(257)]))
            assert await c.receive() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32600, "message": "Invalid Request: a batch of 257 messages is more "
                "than limits.max_batch (256); send fewer at a time"}}
            everything = await asyncio.wait_for(c.send_raw(json.dumps(
                [request(n, "ping") for n in range(256)])), 10)
            assert everything is None
            assert [answer["id"] for answer in await c.receive()] == list(range(256))
    run(body())


@pytest.mark.parametrize("transport", ["unix", "ws"])
def test_a_batch_waits_for_nothing_but_its_own(one: tuple[GatewayProcess, Record],
                                               transport: str) -> None:
    """A single request sent after a batch is answered alone and first; the same id in
    one batch twice is refused for the second, as on its own; a call the client
    cancels (in the batch or after it) is not waited for."""
    gw, record = one
    cancels = len(record.received("notifications/cancelled"))

    async def body() -> None:
        async with client(gw, transport, "2025-03-26") as c:
            await c.send_raw(json.dumps([call("b", "slow", seconds=0.5)]))
            alone = await c.request("tools/call", {"name": "echo", "arguments": {
                "text": "alone"}}, request_id="x")
            assert text(alone) == "alone"
            assert [text(answer) for answer in await c.receive()] == ["slow done"]

            await c.send_raw(json.dumps([call(9, "slow", seconds=0.3), call(9, "echo")]))
            twice = await c.receive()
            assert [answer["id"] for answer in twice] == [9, 9]
            assert text(twice[0]) == "slow done"
            assert twice[1]["error"] == {
                "code": -32600, "message": "request id 9 is already in flight on this session"}

            # A single request reusing an id the batch waits for is refused as itself.
            await c.send_raw(json.dumps([call(7, "slow", seconds=0.3)]))
            reused = await c.request("ping", request_id=7)
            assert reused["error"] == {
                "code": -32600, "message": "request id 7 is already in flight on this session"}
            assert [text(answer) for answer in await c.receive()] == ["slow done"]

            started = time.monotonic()
            await c.send_raw(json.dumps([call("c", "slow", seconds=30), cancel("c"),
                                         request("p", "ping")]))
            assert await c.receive() == [{"jsonrpc": "2.0", "id": "p", "result": {}}]
            await c.send_raw(json.dumps([call("d", "slow", seconds=30),
                                         request("q", "ping")]))
            await asyncio.sleep(0.2)
            await c.send(cancel("d"))
            assert await c.receive() == [{"jsonrpc": "2.0", "id": "q", "result": {}}]
            assert time.monotonic() - started < 10
            record.wait(lambda r: len(r.received("notifications/cancelled")) >= cancels + 2,
                        what="the upstream told of both cancels")
    run(body())


@pytest.mark.parametrize("transport", ["unix", "ws"])
def test_a_batch_is_refused_on_later_versions_and_before_initialize(
        one: tuple[GatewayProcess, Record], transport: str) -> None:
    gw, record = one

    async def body() -> None:
        async with client(gw, transport, "2025-11-25") as c:
            await c.send_raw(json.dumps([call(1, "echo", text="refused")]))
            assert await c.receive() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32600, "message": REFUSED}}
        opened = unix_client(gw.unix_path) if transport == "unix" else ws_client(gw.ws_url)
        async with opened as c:
            # 2025-03-26 itself: initialize MUST NOT be part of a batch.
            await c.send_raw(json.dumps([request(1, "initialize", {
                **INIT_PARAMS, "protocolVersion": "2025-03-26"})]))
            assert (await c.receive())["error"]["message"] == REFUSED
        assert record.call("echo", text="refused") is None
    run(body())


def test_a_batch_over_streamable_http(one: tuple[GatewayProcess, Record]) -> None:
    gw, _ = one
    url = gw.http_url

    async def session(http: aiohttp.ClientSession, version: str) -> dict[str, str]:
        init = request(0, "initialize", {**INIT_PARAMS, "protocolVersion": version})
        async with http.post(url, json=init, headers=http_headers()) as resp:
            assert resp.status == 200, await resp.text()
            headers = http_headers(resp.headers["Mcp-Session-Id"])
        headers["MCP-Protocol-Version"] = version
        async with http.post(url, json={"jsonrpc": "2.0", "method":
                                        "notifications/initialized"}, headers=headers) as resp:
            assert resp.status == 202
        return headers

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            headers = await session(http, "2025-03-26")
            async with http.post(url, json=[call(1, "echo", text="over http"),
                                            call(2, "slow", seconds=0.2),
                                            request(3, "no/such/method")],
                                 headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["Content-Type"] == "application/json"
                assert resp.headers["Mcp-Session-Id"] == headers["Mcp-Session-Id"]
                answers = await resp.json()
            assert [answer["id"] for answer in answers] == [1, 2, 3]
            assert [text(answers[0]), text(answers[1])] == ["over http", "slow done"]
            assert answers[2]["error"]["code"] == -32601
            async with http.post(url, json=[{"jsonrpc": "2.0", "method":
                                             "notifications/roots/list_changed"}],
                                 headers=headers) as resp:
                assert resp.status == 202 and await resp.read() == b""
            async with http.post(url, data=b"[]", headers=headers) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["message"] == \
                    "Invalid Request: an empty batch"
            # A single request on the same session is answered as before.
            async with http.post(url, json=request(4, "ping"), headers=headers) as resp:
                assert (await resp.json()) == {"jsonrpc": "2.0", "id": 4, "result": {}}

            later = await session(http, "2025-11-25")
            async with http.post(url, json=[request(5, "ping")], headers=later) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == {"code": -32600, "message": REFUSED}
    run(body())


LIMIT = 1 << 20


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.answer: Any = None
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_an_answer_goes_to_the_batch_that_awaits_its_id_and_no_other() -> None:
    """While an item is dispatched, only an answer with its id (or none) is its own: an
    answer to another request that the dispatch causes goes where that request's
    answer belongs (an earlier batch, or the session as before)."""
    from mcpfast.gateway.batch import Batches, run_batch

    session = FakeSession()
    delivered: list[bytes | None] = []

    def forward(item: bytes) -> None:
        pass  # forwarded: answered later

    run_batch(session, [json.dumps(call(1, "slow")).encode()], delivered.append, forward, LIMIT)
    batches = session.answer
    assert type(batches) is Batches and not delivered

    def dispatch(item: bytes) -> None:
        message = json.loads(item)
        if message["id"] == 2:
            batches(1, b'{"id":1}', False)  # the earlier batch's request ends meanwhile
            batches("other", b'{"id":"other"}', False)  # a single request's answer
            batches(2, b'{"id":2}', False)  # its own answer

    run_batch(session, [json.dumps(request(2, "ping")).encode()], delivered.append,
              dispatch, LIMIT)
    assert delivered == [b'[{"id":1}]', b'[{"id":2}]']
    assert session.sent == [b'{"id":"other"}']
    assert session.answer is None  # no batch runs: the session's own answer again

    # A response in a batch (the client's answer to an input request, say) owes no
    # answer: what its dispatch settles is an earlier request's, under the same id.
    run_batch(session, [json.dumps(call(1, "slow")).encode()], delivered.append, forward, LIMIT)
    batches = session.answer

    def settles(item: bytes) -> None:
        if json.loads(item)["id"] == 1:
            batches(1, b'{"id":1,"late":true}', True)  # the earlier batch's request
            batches(3, b'{"id":3}', True)  # a single request's

    run_batch(session, [b'{"jsonrpc":"2.0","id":1,"result":{}}',
                        b'{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"no"}}'],
              delivered.append, settles, LIMIT)
    assert delivered[2:] == [b'[{"id":1,"late":true}]', None]
    assert session.sent[1:] == [b'{"id":3}']


def test_an_upstream_that_sends_batches_is_read_item_by_item(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 2025-03-26 server may batch what it sends (its client MUST take it): here each
    answer, its handshake's included, comes as a batch with a log message before it."""
    workdir = tmp_path_factory.mktemp("batching-upstream")
    record = Record(workdir / "b.jsonl")
    upstream = recording_upstream(record.path, "b", "--batch-answers")

    async def body(gw: GatewayProcess) -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            tools = await c.request("tools/list")
            assert "echo" in [tool["name"] for tool in tools["result"]["tools"]]
            await c.send_raw(json.dumps(call(1, "echo", text="one")) + "\n"
                             + json.dumps(call(2, "echo", text="two")))
            assert [text(await c.wait_for(1)), text(await c.wait_for(2))] == ["one", "two"]
            assert (await c.call_tool("fail"))["error"]["message"] == "failed on purpose"

    with running_gateway(workdir, {"b": upstream}) as gw:
        run(body(gw))
        assert "dropped" not in gw.log()


async def http_session(http: aiohttp.ClientSession, url: str, version: str) -> dict[str, str]:
    init = request(0, "initialize", {**INIT_PARAMS, "protocolVersion": version})
    async with http.post(url, json=init, headers=http_headers()) as resp:
        assert resp.status == 200, await resp.text()
        headers = http_headers(resp.headers["Mcp-Session-Id"])
    headers["MCP-Protocol-Version"] = version
    async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers=headers) as resp:
        assert resp.status == 202
    return headers


async def until(condition: Any, timeout: float = 15.0) -> None:
    """Wait for ``condition()``, the event loop running meanwhile (the client's own
    sockets close and send only while it does)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


def test_an_http_batch_ends_with_its_client_and_its_session(
        one: tuple[GatewayProcess, Record]) -> None:
    """A client that leaves while its batch runs cancels the batch's calls upstream; a
    session deleted meanwhile answers the batch's POST with 404; a cancel in a batch
    ends the POST of the request it cancels."""
    gw, record = one
    url = gw.http_url

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            headers = await http_session(http, url, "2025-03-26")
            calls = len(record.received("tools/call"))
            pending = asyncio.ensure_future(http.post(
                url, json=[call(1, "slow", seconds=30)], headers=headers))
            await until(lambda: len(record.received("tools/call")) > calls)
            cancels = len(record.received("notifications/cancelled"))
            # Its own call is cancelled, and not the other POST's (``true`` is not 1,
            # and an id refused as in flight is not this batch's).
            with pytest.raises(asyncio.TimeoutError):
                async with http.post(url, json=[request(True, "ping"), call(1, "echo"),
                                                call("gone", "slow", seconds=30)],
                                     headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=0.5)):
                    pass
            await until(lambda: len(record.received("notifications/cancelled")) > cancels)
            await asyncio.sleep(0.3)
            assert len(record.received("notifications/cancelled")) == cancels + 1
            assert not pending.done()
            calls = len(record.received("tools/call"))
            single = asyncio.ensure_future(http.post(
                url, json=call("single", "slow", seconds=30), headers=headers))
            await until(lambda: len(record.received("tools/call")) > calls)
            async with http.post(url, json=[cancel("single"), request("p", "ping")],
                                 headers=headers) as resp:
                assert await resp.json() == [{"jsonrpc": "2.0", "id": "p", "result": {}}]
            ended = await asyncio.wait_for(single, 10)
            assert ended.status == 200
            assert await asyncio.wait_for(ended.read(), 10) == b""  # withdrawn: no answer
            ended.release()

            async with http.delete(url, headers=headers) as resp:
                assert resp.status == 200
            held = await asyncio.wait_for(pending, 10)
            assert held.status == 404
            assert "before the batch was answered" in (await held.json())["error"]["message"]
    run(body())


@pytest.mark.parametrize("mode", ["shared", "per_session"])
def test_a_batch_is_answered_before_a_closing_connection_closes(
        tmp_path_factory: pytest.TempPathFactory, mode: str) -> None:
    """A unix socket the client half-closed, and a WebSocket that failed (a binary
    frame), close once the batch sent before is answered; also while a call of it
    waits for the session's own upstream to start (``per_session``), when it is not
    yet in flight anywhere."""
    workdir = tmp_path_factory.mktemp(f"half-closed-{mode}")
    upstream = recording_upstream(workdir / "r.jsonl", "r", mode=mode, spares=0)

    async def body(gw: GatewayProcess) -> None:
        reader, writer = await asyncio.open_unix_connection(gw.unix_path)
        init = request(0, "initialize", {**INIT_PARAMS, "protocolVersion": "2025-03-26"})
        writer.write(json.dumps(init).encode() + b"\n")
        assert json.loads(await reader.readline())["id"] == 0
        writer.write(json.dumps([call("s", "slow", seconds=0.3), request("p", "ping")]).encode()
                     + b"\n")
        writer.write_eof()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert [each["id"] for each in answer] == ["s", "p"]
        assert await asyncio.wait_for(reader.read(), 10) == b""  # then it closes
        writer.close()

        async with client(gw, "ws", "2025-03-26") as c:
            await c.send_raw(json.dumps([call("s", "slow", seconds=0.3),
                                         request("p", "ping")]))
            await c.send_raw(b"MCP is text")  # a binary frame: the connection fails
            assert [each["id"] for each in await c.receive()] == ["s", "p"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await c.receive()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003

    with running_gateway(workdir, {"r": upstream}) as gw:
        run(body(gw))


def test_what_an_outside_sweep_found(one: tuple[GatewayProcess, Record]) -> None:
    """Each answer where it belongs: a number beyond a float's range in an item, an
    invalid item that names a forwarded item's id, a single message reusing an id the
    batch waits for, a cancel naming ``true``; and the batch's array is no level of
    nesting its items count."""
    gw, _ = one

    async def body() -> None:
        async with client(gw, "unix", "2025-03-26") as c:
            huge = request(1, "tools/call", {"name": "echo", "arguments": {"text": "big"}})
            raw = json.dumps(huge)[:-2] + ',"n":1e400}}'
            await c.send_raw("[" + raw + "," + json.dumps(request(2, "ping")) + "]")
            answer = await c.receive()
            assert [each["id"] for each in answer] == [1, 2] and text(answer[0]) == "big"
            # A modern request, whose params the gateway reads whole: refused as
            # unreadable params, not an internal error.
            modern_call = request("m", "tools/call", {"name": "echo", "arguments": {},
                                                      "_meta": MODERN_META})
            await c.send_raw(json.dumps(modern_call)[:-2] + ',"n":1e400}}')
            refused = await c.wait_for("m")
            assert refused["error"]["code"] == -32602, refused

            await c.send_raw(json.dumps([call(5, "echo", text="real"),
                                         {"jsonrpc": "2.0", "id": 5}]))
            answer = await c.receive()
            assert [each["id"] for each in answer] == [5, 5]
            assert text(answer[0]) == "real" and answer[1]["error"]["code"] == -32600
            await c.send_raw(json.dumps([{"jsonrpc": "2.0", "id": 6}]))
            assert [each["error"]["code"] for each in await c.receive()] == [-32600]

            await c.send_raw(json.dumps([call(1, "slow", seconds=0.5)]))
            await c.send(request(1, "bogus"))
            alone = await c.receive()
            assert alone["id"] == 1 and alone["error"]["message"] == \
                "request id 1 is already in flight on this session", alone
            await c.send_raw(json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}))
            alone = await c.receive()
            assert alone["id"] == 1 and alone["error"]["code"] == -32600, alone
            await c.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": True}})
            assert [text(each) for each in await c.receive()] == ["slow done"]

            deep: Any = "x"
            for _ in range(61):  # envelope, params, arguments and 61 arrays: 64 levels
                deep = [deep]
            alone = await c.request("tools/call", {"name": "echo", "arguments": {
                "text": "deep", "x": deep}}, request_id="alone")
            assert text(alone) == "deep"
            await c.send_raw(json.dumps([call("inside", "echo", text="deep", x=deep)]))
            assert [text(each) for each in await c.receive()] == ["deep"]
    run(body())
    assert "Traceback" not in gw.log()


def test_a_batch_holds_no_more_than_a_client_buffer(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Answers a batch holds count against limits.client_buffer_bytes, as those in the
    client's connection buffer: past it, the batch gets one error and the session goes
    on. The error comes once the batch's last request is answered, so that none of its
    ids is still in flight when the client may use them again."""
    workdir = tmp_path_factory.mktemp("batch-limit")
    upstream = recording_upstream(workdir / "r.jsonl", "r")

    async def body(gw: GatewayProcess) -> None:
        async with client(gw, "unix", "2025-03-26") as c:
            await c.send_raw(json.dumps([call(n, "big", size=30_000) for n in range(3)]
                                        + [call(3, "slow", seconds=0.5)]))
            assert await c.receive() == {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": "the batch's answers passed limits."
                "client_buffer_bytes (65536 bytes) and were dropped; send fewer or "
                "smaller requests at a time"}}
            await c.send_raw(json.dumps([call(n, "big", size=10_000) for n in range(4)]))
            assert [len(text(each)) for each in await c.receive()] == [10_000] * 4
            assert (await c.request("ping", request_id="after"))["result"] == {}

    with running_gateway(workdir, {"r": upstream},
                         limits={"client_buffer_bytes": 65536}) as gw:
        run(body(gw))


def test_what_batches_hold_counts_toward_the_process_buffer_limit(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two batches, each holding an answer under its client's limit while a slow item
    runs, pass limits.process_buffer_bytes together: new requests are refused as
    overloaded until the batches are answered, and then served again."""
    workdir = tmp_path_factory.mktemp("batch-process-limit")
    upstream = recording_upstream(workdir / "r.jsonl", "r")
    slow = 6.0

    async def refused(c: McpClient) -> bool:
        answer = await c.request("tools/call", {"name": "echo", "arguments": {"text": "x"}})
        return "error" in answer and "overloaded" in answer["error"]["message"]

    async def body(gw: GatewayProcess) -> None:
        async with client(gw, "unix", "2025-03-26") as a, \
                client(gw, "unix", "2025-03-26") as b, client(gw, "ws", "2025-11-25") as c:
            sent = time.monotonic()
            for each in (a, b):
                await each.send_raw(json.dumps([call(1, "big", size=40_000),
                                                call(2, "slow", seconds=slow)]))
            while not await refused(c):
                assert time.monotonic() - sent < slow - 1, "never refused as overloaded"
                await asyncio.sleep(0.1)
            for each in (a, b):
                assert [len(text(answer)) for answer in await each.receive()] == \
                    [40_000, len("slow done")]
            deadline = time.monotonic() + 15
            while await refused(c):
                assert time.monotonic() < deadline, "still refused after the batches"
                await asyncio.sleep(0.1)

    with running_gateway(workdir, {"r": upstream}, limits={
            "client_buffer_bytes": 65536, "process_buffer_bytes": 65536}) as gw:
        run(body(gw), timeout=60)
