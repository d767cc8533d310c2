"""Streamable HTTP, legacy era (2025-11-25): sessions, streams, resumption, errors.

Clients: the official SDK's ``mcp.Client`` in legacy mode, and raw aiohttp requests for
what an SDK would never send.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import mcp
import pytest
from mcp.types import CreateMessageResult, TextContent

from ..conftest import GatewayProcess, read_events, run, sdk_upstream
from ..conftest import http_headers as headers

LEGACY = {"sdk": sdk_upstream(era="legacy")}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                   "clientInfo": {"name": "raw", "version": "0"}}}


@pytest.fixture
def gateway(gateway_factory: Any) -> GatewayProcess:
    """The SDK upstream pinned to the legacy era: legacy end to end."""
    return gateway_factory(LEGACY)


async def initialize(http: aiohttp.ClientSession, url: str) -> str:
    async with http.post(url, json=INIT, headers=headers()) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("application/json")
        # RFC 9110 6.6.1: an origin server with a clock sends Date (found missing by an
        # outside sweep), in IMF-fixdate.
        sent = parsedate_to_datetime(resp.headers["Date"])
        assert abs(sent.timestamp() - time.time()) < 60 and resp.headers["Date"].endswith(" GMT")
        body = await resp.json()
        session_id = resp.headers["Mcp-Session-Id"]
    assert body["result"]["protocolVersion"] == "2025-11-25"
    assert all(0x21 <= ord(c) <= 0x7E for c in session_id)
    async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                         headers=headers(session_id)) as resp:
        assert resp.status == 202 and "Date" in resp.headers
    return session_id


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_sdk_client_legacy_mode(gateway_factory: Any, era: str) -> None:
    """A legacy client, to a legacy upstream end to end and to a modern one through the
    gateway's translation (sampling then travels as input_required upstream)."""
    gateway = gateway_factory({"sdk": sdk_upstream(era=era)})
    progress: list[float] = []

    async def sampling(context: Any, params: Any) -> CreateMessageResult:
        return CreateMessageResult(role="assistant", model="test",
                                   content=TextContent(type="text", text="forty-two"))

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def main() -> None:
        async with mcp.Client(gateway.http_url, mode="legacy",
                              sampling_callback=sampling) as client:
            tools = await client.list_tools()
            assert "echo" in [t.name for t in tools.tools]
            result = await client.call_tool("echo", {"text": "over http"})
            assert result.content[0].text == "over http"
            result = await client.call_tool("progress", {"steps": 3},
                                            progress_callback=on_progress)
            assert result.content[0].text == "completed 3 steps"
            result = await client.call_tool("sample", {"prompt": "meaning of life?"})
            assert result.content[0].text == "forty-two"
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert "Ada" in prompt.messages[0].content.text
            read = await client.read_resource("test://item/7")
            assert "7" in read.contents[0].text
    run(main())
    assert progress == [1, 2, 3]


def test_session_lifecycle_and_errors(gateway: GatewayProcess) -> None:
    url = gateway.http_url
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            async with http.post(url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 200
                assert (await resp.json())["result"]["tools"]
            # No session id: 400; an unknown or forged one: 404.
            async with http.post(url, json=call, headers=headers()) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == -32600
            async with http.post(url, json=call, headers=headers(sid[:-4] + "AAAA")) as resp:
                assert resp.status == 404
            # Unsupported protocol version: 400.
            h = headers(sid)
            h["MCP-Protocol-Version"] = "1999-01-01"
            async with http.post(url, json=call, headers=h) as resp:
                assert resp.status == 400
                error = (await resp.json())["error"]
                assert error["code"] == -32600 and "1999-01-01" in error["message"], error
            # A notification or a response gets 202 and no body.
            async with http.post(url, json={"jsonrpc": "2.0", "method": "notifications/x"},
                                 headers=headers(sid)) as resp:
                assert resp.status == 202
                assert await resp.read() == b""
            # Malformed JSON: 400 with -32700; a batch: 400 with -32600.
            async with http.post(url, data=b"{nope", headers=headers(sid)) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == -32700
            async with http.post(url, json=[call], headers=headers(sid)) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == -32600
            # Content negotiation.
            async with http.post(url, json=call, headers=headers(
                    sid, Accept="application/json")) as resp:
                assert resp.status == 406
            async with http.post(url, data=json.dumps(call), headers=headers(
                    sid, **{"Content-Type": "text/plain"})) as resp:
                assert resp.status == 415
            async with http.put(url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 405
                assert "POST" in resp.headers["Allow"]
            # Origin and Host (DNS rebinding).
            async with http.post(url, json=call, headers=headers(
                    sid, Origin="http://evil.example")) as resp:
                assert resp.status == 403
            async with http.post(url, json=call, headers=headers(
                    sid, Origin=f"http://127.0.0.1:{gateway.port}")) as resp:
                assert resp.status == 200
            async with http.post(url, json=call, headers=headers(
                    sid, Host="evil.example")) as resp:
                assert resp.status == 421
            # A second GET stream is a conflict.
            async with http.get(url, headers=headers(sid, Accept="text/event-stream")) as get:
                assert get.status == 200
                async with http.get(url, headers=headers(
                        sid, Accept="text/event-stream")) as second:
                    assert second.status == 409
            # DELETE ends the session; its id is then unknown.
            tcp = [lst for lst in gateway.status()["listeners"] if "http" in lst]
            assert tcp[0]["http"]["sessions"] == 1
            async with http.delete(url, headers=headers(sid)) as resp:
                assert resp.status == 200
            tcp = [lst for lst in gateway.status()["listeners"] if "http" in lst]
            assert tcp[0]["http"]["sessions"] == 0
            async with http.post(url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 404
    run(main())


def test_idle_session_expires(gateway_factory: Any) -> None:
    """A session with no requests and no open stream for listen.http.session_timeout
    ends: its id then gets 404, and the client initializes again."""
    gw = gateway_factory(LEGACY, listen={"http": {"session_timeout": 1.0}})
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, gw.http_url)
            await asyncio.sleep(2.5)
            async with http.post(gw.http_url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 404
            fresh = await initialize(http, gw.http_url)
            async with http.post(gw.http_url, json=call, headers=headers(fresh)) as resp:
                assert resp.status == 200
    run(main())


def test_body_limit(gateway_factory: Any) -> None:
    gw = gateway_factory(LEGACY, listen={"max_message_bytes": 2048})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            big = {**INIT, "params": {**INIT["params"], "pad": "x" * 4096}}
            async with http.post(gw.http_url, json=big, headers=headers()) as resp:
                assert resp.status == 413
    run(main())


def test_each_response_is_dated_with_its_second(gateway: GatewayProcess) -> None:
    """The Date line is made anew each second (the listener's clock), not once: a
    response well after the gateway started carries the time it is sent."""
    for _ in range(2):
        time.sleep(1.5)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{gateway.port}/elsewhere", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            sent = parsedate_to_datetime(exc.headers["Date"]).timestamp()
        assert abs(sent - time.time()) < 1.5, (sent, time.time())


def test_post_stream_resumes_without_losing_an_event(gateway: GatewayProcess) -> None:
    """Drop the SSE answer of a call mid-way, resume with Last-Event-ID: every progress
    notification and the result arrive exactly once."""
    url = gateway.http_url
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "progress", "arguments": {"steps": 6},
                       "_meta": {"progressToken": "tok"}}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            resp = await http.post(url, json=call, headers=headers(sid))
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await read_events(resp, 3)  # priming event, then progress 1 and 2
            resp.close()  # the connection drops
            assert first[0][1] is None
            seen = [e[1]["params"]["progress"] for e in first[1:]]
            last_id = first[-1][0]
            assert last_id is not None
            await asyncio.sleep(0.2)  # events keep coming while nobody reads
            async with http.get(url, headers=headers(
                    sid, Accept="text/event-stream", **{"Last-Event-ID": last_id})) as again:
                assert again.status == 200
                rest = await read_events(again, 100)
            notes = [e[1] for e in rest if "method" in e[1]]
            seen += [n["params"]["progress"] for n in notes]
            assert seen == [1, 2, 3, 4, 5, 6]
            assert rest[-1][1]["id"] == 5
            assert rest[-1][1]["result"]["content"][0]["text"] == "completed 6 steps"
    run(main())


def test_get_stream_delivers_list_changed_and_resumes(gateway: GatewayProcess) -> None:
    url = gateway.http_url

    def grow(request_id: int, name: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                "params": {"name": "grow", "arguments": {"tool_name": name}}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            get = await http.get(url, headers=headers(sid, Accept="text/event-stream"))
            assert get.status == 200
            primed = await read_events(get, 1)
            async with http.post(url, json=grow(3, "extra_one"), headers=headers(sid)) as r:
                assert r.status == 200
                await r.read()
            changed = await read_events(get, 1)
            assert changed[0][1]["method"] == "notifications/tools/list_changed"
            get.close()
            # While no GET stream is open, the next announcement waits in the buffer.
            async with http.post(url, json=grow(4, "extra_two"), headers=headers(sid)) as r:
                await r.read()
            await asyncio.sleep(0.3)
            async with http.get(url, headers=headers(
                    sid, Accept="text/event-stream",
                    **{"Last-Event-ID": changed[0][0]})) as again:
                # A GET stream never ends: a third announcement marks where to stop
                # reading, so that an event sent twice (the one before Last-Event-ID,
                # or the missed one) would be seen.
                async with http.post(url, json=grow(5, "extra_three"),
                                     headers=headers(sid)) as r:
                    await r.read()
                resumed = await read_events(again, 2)
                assert [e[1]["method"] for e in resumed] == \
                    ["notifications/tools/list_changed"] * 2
                # Nothing else was queued before the third: no repeat is still coming.
                async with http.post(url, json=grow(6, "extra_four"),
                                     headers=headers(sid)) as r:
                    await r.read()
                fourth = await read_events(again, 1)
            ids = [changed[0][0], *(e[0] for e in resumed), fourth[0][0]]
            stream = {i.rsplit("_", 1)[0] for i in ids if i}
            seqs = [int(i.rsplit("_", 1)[1]) for i in ids if i]
            assert len(stream) == 1 and seqs == list(range(seqs[0], seqs[0] + 4)), ids
            assert primed[0][1] is None
    run(main())


@pytest.mark.parametrize("last", [b"1_\xb2", b"1_" + "\u0661".encode(), b"1_" + b"9" * 5000])
def test_a_last_event_id_that_is_not_ours_is_refused_as_such(
        gateway: GatewayProcess, last: bytes) -> None:
    """A Last-Event-ID whose sequence is not ASCII digits ("²" and the Arabic-Indic
    one are digits to str.isdigit), or too long for int, names no event: 400, as any
    other unknown id, not a traceback and a 500."""
    host, port = gateway.http_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)

    async def main() -> bytes:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, gateway.http_url)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /mcp HTTP/1.1\r\nHost: %b:%b\r\nAccept: text/event-stream\r\n"
                     b"Mcp-Session-Id: %b\r\nMCP-Protocol-Version: 2025-11-25\r\n"
                     b"Last-Event-ID: %b\r\nConnection: close\r\n\r\n"
                     % (host.encode(), port.encode(), sid.encode(), last))
        answer = await reader.read()
        writer.close()
        return answer
    answer = run(main())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"cannot resume" in answer
    assert "Traceback" not in gateway.log()


def _raw_post(host: str, port: str, sid: str, text: str, extra: str = "") -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": text, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": text}}}).encode()
    return (f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json, "
            f"text/event-stream\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}"
            f"\r\nMCP-Protocol-Version: 2025-11-25\r\n{extra}Content-Length: {len(body)}"
            "\r\n\r\n").encode() + body


@pytest.mark.parametrize("after", [b"BAD REQUEST LINE\r\n\r\n", b"close"])
def test_a_pipelined_request_is_answered_whatever_follows_it(
        gateway: GatewayProcess, after: bytes) -> None:
    """A request and, in the same segment, bytes that are no request: the request is
    answered, then 400, then the connection closes (RFC 9112 9.3: in order). A request
    with ``Connection: close`` and one after it: the first is answered and the
    connection closes; the second is not read (RFC 9112 9.6)."""
    host, port = gateway.http_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)

    async def main() -> bytes:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, gateway.http_url)
        reader, writer = await asyncio.open_connection(host, int(port))
        if after == b"close":
            writer.write(_raw_post(host, port, sid, "first", "Connection: close\r\n")
                         + _raw_post(host, port, sid, "second"))
        else:
            writer.write(_raw_post(host, port, sid, "first") + after)
        answer = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        return answer
    answer = run(main())
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"first"' in answer, answer
    if after == b"close":
        assert answer.count(b"HTTP/1.1 ") == 1 and b"second" not in answer, answer
    else:
        assert answer.count(b"HTTP/1.1 ") == 2, answer
        assert answer.split(b"HTTP/1.1 ")[2].startswith(b"400 "), answer
    assert "Traceback" not in gateway.log()


def test_sse_keepalive_comments(gateway_factory: Any) -> None:
    gw = gateway_factory(LEGACY, listen={"http": {"sse_keepalive": 0.2}})

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, gw.http_url)
            async with http.get(gw.http_url, headers=headers(
                    sid, Accept="text/event-stream")) as get:
                assert get.headers["X-Accel-Buffering"] == "no"
                lines = []
                async with asyncio.timeout(5):
                    while b": ping\n" not in lines:
                        lines.append(await get.content.readline())
    run(main())


def test_signed_session_served_by_another_replica(gateway_factory: Any) -> None:
    """Two gateways sharing a session secret (and upstream): a session begun on one is
    served by the other; a gateway with another secret refuses it."""
    secret = {"http": {"session_secret": "a shared secret of some length"}}
    one = gateway_factory(LEGACY, listen=secret)
    two = gateway_factory(LEGACY, listen=secret)
    other = gateway_factory(LEGACY, listen={
        "http": {"session_secret": "a different secret, also long"}})
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "replica"}}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, one.http_url)
            async with http.post(two.http_url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["result"]["content"][0]["text"] == "replica"
            async with http.post(other.http_url, json=call, headers=headers(sid)) as resp:
                assert resp.status == 404
    run(main())


@pytest.mark.parametrize("request_line", ["GET", "DELETE"])
def test_get_and_delete_need_a_session(gateway: GatewayProcess, request_line: str) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http, http.request(
                request_line, gateway.http_url, headers={"Accept": "text/event-stream"}) as resp:
            assert resp.status == 400
    run(main())


def test_a_deleted_session_frees_its_place_under_the_per_address_cap(
        gateway_factory: Any) -> None:
    """max_sessions_per_peer counts the sessions an address holds now: a DELETE gives
    its place back, and only its own (the cap holds again at the next one)."""
    gw = gateway_factory(LEGACY, listen={"http": {"max_sessions": 10,
                                                  "max_sessions_per_peer": 2}})
    url = gw.http_url

    async def init_status(http: aiohttp.ClientSession) -> tuple[int, str | None]:
        async with http.post(url, json=INIT, headers=headers()) as resp:
            body = await resp.json()
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "5"
                assert body["error"]["code"] == -32600 and body["id"] == 1
            return resp.status, resp.headers.get("Mcp-Session-Id")

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            first = await initialize(http, url)
            await initialize(http, url)
            assert await init_status(http) == (429, None)
            async with http.delete(url, headers=headers(first)) as resp:
                assert resp.status == 200
            status, third = await init_status(http)
            assert status == 200 and third is not None
            assert await init_status(http) == (429, None)
    run(main())


def test_a_deleted_session_id_is_refused_in_every_spelling(gateway: GatewayProcess) -> None:
    """Base64 decoders skip characters outside their alphabet and padding past the data:
    an ended id with one more character must not be adopted as a new session (it was,
    200, before ids had to be spelled exactly as issued)."""
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, gateway.http_url)
            async with http.delete(gateway.http_url, headers=headers(sid)) as resp:
                assert resp.status == 200
            for variant in (sid, sid + "=", sid + "==", sid + ".", "." + sid,
                            sid[:10] + "*" + sid[10:], sid + "\t"):
                async with http.post(gateway.http_url, json=ping,
                                     headers=headers(variant.strip())) as resp:
                    assert resp.status == 404, (variant, resp.status)
                    assert "Mcp-Session-Id" not in resp.headers
    run(main())


SLOW_7 = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
          "params": {"name": "slow", "arguments": {"seconds": 30}}}
"""A call answered as plain JSON, after 30 s."""
STEPS_8 = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
           "params": {"name": "progress", "arguments": {"steps": 600},
                      "_meta": {"progressToken": "p"}}}
"""A call answered as an event stream, its progress first."""


def open_streams(gw: GatewayProcess) -> int:
    (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
    return int(tcp["http"]["open_streams"])


async def until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_post_abandoned_before_its_answer_is_cancelled_and_its_id_freed(
        gateway: GatewayProcess) -> None:
    """A client that drops the connection of a POST before anything was sent cannot
    resume it (there is no event id): the call is cancelled at once, and the request id
    may be used again on the session."""
    url = gateway.http_url
    slow = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 30}}}
    echo = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "again"}}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            task = asyncio.create_task(http.post(url, json=slow, headers=headers(sid)))
            await until(lambda: gateway.status()["in_flight"] == 1, "the call to start")
            started = time.monotonic()
            task.cancel()  # aiohttp drops the connection
            await until(lambda: gateway.status()["in_flight"] == 0, "the cancellation")
            assert time.monotonic() - started < 10  # not the 30 s the call would take
            async with http.post(url, json=echo, headers=headers(sid)) as resp:
                assert resp.status == 200, await resp.text()
                reply = await resp.json()
            assert reply["id"] == 7 and reply["result"]["content"][0]["text"] == "again"
    run(main())


def test_a_cancelled_post_ends_without_an_answer(gateway: GatewayProcess) -> None:
    """``notifications/cancelled`` for a POST's request (basic/utilities/cancellation):
    the call is cancelled upstream, and the POST's response ends, as an event stream
    with no response in it, whether it had begun one (with progress) or not; it does not
    stay open for ever. The request id is free again."""
    url = gateway.http_url
    slow, steps = SLOW_7, STEPS_8

    def cancel(request_id: int) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": request_id, "reason": "changed my mind"}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            # Nothing comes for the first until its answer: its head waits too.
            plain_task = asyncio.create_task(http.post(url, json=slow, headers=headers(sid)))
            streamed = await http.post(url, json=steps, headers=headers(sid))
            assert streamed.headers["Content-Type"] == "text/event-stream"
            begun = [event for _, event in await read_events(streamed, 2)]
            assert begun[0] is None  # the priming event
            assert begun[1]["method"] == "notifications/progress"
            await until(lambda: gateway.status()["in_flight"] == 2, "both calls")
            started = time.monotonic()
            for request_id in (7, 8):
                async with http.post(url, json=cancel(request_id),
                                     headers=headers(sid)) as resp:
                    assert resp.status == 202
            plain = await asyncio.wait_for(plain_task, 10)
            assert plain.status == 200
            assert plain.headers["Content-Type"] == "text/event-stream"
            assert await read_events(plain, 100) == []
            rest = await read_events(streamed, 10_000)
            assert {event["method"] for _, event in rest} <= {"notifications/progress"}
            assert time.monotonic() - started < 10  # not the 30 s the calls would take
            await until(lambda: gateway.status()["in_flight"] == 0, "the cancellations")
            echo = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "again"}}}
            async with http.post(url, json=echo, headers=headers(sid)) as resp:
                assert (await resp.json())["result"]["content"][0]["text"] == "again"
    run(main())


def test_a_post_in_flight_when_its_session_ends_gets_a_404(gateway: GatewayProcess) -> None:
    """A DELETE ends the session while a POST waits for its plain JSON answer, and
    another's event stream is open: the first is answered 404 (Session not found), as a
    request naming the ended session would be; the second stream ends. Before, the
    first got the last chunk of an event stream that never began, which no HTTP client
    can read (found by an outside sweep)."""
    url = gateway.http_url

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            plain_task = asyncio.create_task(http.post(url, json=SLOW_7, headers=headers(sid)))
            streamed = await http.post(url, json=STEPS_8, headers=headers(sid))
            assert streamed.headers["Content-Type"] == "text/event-stream"
            await read_events(streamed, 2)
            await until(lambda: gateway.status()["in_flight"] == 2, "both calls")
            async with http.delete(url, headers=headers(sid)) as resp:
                assert resp.status == 200
            plain = await asyncio.wait_for(plain_task, 10)
            assert plain.status == 404, await plain.text()
            reply = await plain.json()
            assert reply["id"] == 7 and reply["error"]["code"] == -32600, reply
            assert reply["error"]["message"].startswith("Session not found: it ended "
                                                        "(session deleted by the client)")
            rest = await asyncio.wait_for(read_events(streamed, 10_000), 10)
            assert {event["method"] for _, event in rest} <= {"notifications/progress"}
            await until(lambda: gateway.status()["in_flight"] == 0, "the cancellations")
    run(main())


def test_a_closed_get_stream_is_no_longer_counted_open(gateway: GatewayProcess) -> None:
    url = gateway.http_url

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await initialize(http, url)
            get = await http.get(url, headers=headers(sid, Accept="text/event-stream"))
            assert get.status == 200
            await until(lambda: open_streams(gateway) == 1, "the GET stream to open")
            get.close()
            await until(lambda: open_streams(gateway) == 0, "the GET stream to close")
            # The session goes on, and a new GET stream may be opened on it.
            async with http.get(url, headers=headers(sid, Accept="text/event-stream")) as again:
                assert again.status == 200
    run(main())


def test_a_replica_adopts_a_session_only_if_it_has_room(gateway_factory: Any) -> None:
    """A session signed by another replica is a new session here, under this gateway's
    max_sessions: a full gateway answers 503 rather than going past its limit."""
    secret = "a shared secret of some length"
    one = gateway_factory(LEGACY, listen={"http": {"session_secret": secret}})
    full = gateway_factory(LEGACY, listen={"http": {"session_secret": secret,
                                                    "max_sessions": 1}})
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            mine = await initialize(http, full.http_url)
            theirs = await initialize(http, one.http_url)
            async with http.post(full.http_url, json=ping, headers=headers(theirs)) as resp:
                assert resp.status == 503, await resp.text()
                assert resp.headers["Retry-After"] == "1"
                assert (await resp.json())["error"]["code"] == -32600
            async with http.post(full.http_url, json=ping, headers=headers(mine)) as resp:
                assert resp.status == 200
            async with http.delete(full.http_url, headers=headers(mine)) as resp:
                assert resp.status == 200
            async with http.post(full.http_url, json=ping, headers=headers(theirs)) as resp:
                assert resp.status == 200  # room again: adopted
    run(main())


H2C = ("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n")
"""What ``curl --http2`` adds to every request over cleartext: a request to switch to
HTTP/2, which a server that does not may ignore (RFC 9110 7.8)."""


def h2c_post(port: int, message: dict[str, Any], session_id: str = "") -> bytes:
    body = json.dumps(message).encode()
    return (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{H2C}"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            + (f"Mcp-Session-Id: {session_id}\r\n" if session_id else "")
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: its status line, headers, body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status, *lines = head.rstrip("\r\n").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, fields, await reader.readexactly(int(fields.get("content-length", "0")))


def test_an_upgrade_to_http2_is_declined_and_answered_over_http_1_1(
        gateway: GatewayProcess) -> None:
    """``curl --http2`` against the gateway: each request asks for h2c; the gateway
    answers it over HTTP/1.1 and reads the next on the same connection, bodies whole."""
    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            writer.write(h2c_post(gateway.port, INIT))
            status, fields, body = await read_response(reader)
            assert status == "HTTP/1.1 200 OK", (status, body)
            assert json.loads(body)["result"]["protocolVersion"] == "2025-11-25"
            session_id = fields["mcp-session-id"]
            # Two more in one write: the second must not be taken for HTTP/2 bytes.
            writer.write(
                h2c_post(gateway.port, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                         session_id)
                + h2c_post(gateway.port, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                          "params": {"name": "echo",
                                                     "arguments": {"text": "over h2c"}}},
                           session_id))
            status, _, body = await read_response(reader)
            assert status == "HTTP/1.1 202 Accepted", (status, body)
            status, fields, body = await read_response(reader)
            assert status == "HTTP/1.1 200 OK", (status, body)
            assert json.loads(body)["result"]["content"][0]["text"] == "over h2c"
            # An Upgrade header without the "upgrade" connection option: ignored too.
            writer.write(h2c_post(gateway.port, {"jsonrpc": "2.0", "id": 3,
                                                 "method": "tools/list"}, session_id)
                         .replace(b"Connection: Upgrade, HTTP2-Settings\r\n", b""))
            status, fields, body = await read_response(reader)
            assert status == "HTTP/1.1 200 OK", (status, body)
            assert json.loads(body)["result"]["tools"]
            # A WebSocket upgrade is still one (refused here for the POST it is).
            writer.write(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                         "Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n"
                         "\r\n".encode())
            status, _, body = await read_response(reader)
            assert status.startswith("HTTP/1.1 405"), (status, body)
        finally:
            writer.close()
    run(main())
