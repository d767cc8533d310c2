"""Cancellation reaches the upstream, and a request the upstream does not answer within
``request_timeout`` gets -32001 in time: asserted where the upstream is, since the
recording upstream (``servers/recording_server.py``) writes down every message it gets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..conftest import (
    GatewayProcess,
    McpClient,
    Record,
    events_upstream,
    http_headers,
    http_initialize,
    modern,
    modern_headers,
    read_events,
    recording_upstream,
    run,
    running_gateway,
    unix_client,
    wait_until,
    ws_client,
)

REQUEST_TIMEOUT = 2.0
SWEEP_PERIOD = 0.5
"""How often the gateway looks for expired requests (sweeper.SWEEP_INTERVAL): an
expired request is answered at most this late."""
SLACK = 1.4
"""For a busy machine. Below REQUEST_TIMEOUT - SWEEP_PERIOD, so that a deadline of
twice the configured time fails the time-out test."""
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Record]]:
    workdir = tmp_path_factory.mktemp("cancel")
    record = workdir / "record.jsonl"
    upstream = recording_upstream(record, request_timeout=REQUEST_TIMEOUT)
    with running_gateway(workdir, {"rec": upstream}) as gw:
        yield gw, Record(record)


def connect(gw: GatewayProcess, transport: str) -> Any:
    return ws_client(gw.ws_url) if transport == "ws" else unix_client(gw.unix_path)


def tag() -> str:
    return f"call-{next(_tags)}"


def upstream_id_of(record: Record, marker: str) -> int:
    """The id the upstream got for the slow call tagged ``marker``, once it got it."""
    call = record.wait(lambda r: r.call("slow", tag=marker), what=f"slow call {marker}")
    upstream_id = call["id"]
    assert type(upstream_id) is int
    return upstream_id


def cancels_for(record: Record, upstream_id: int) -> list[dict[str, Any]]:
    return [m["params"] for m in record.received("notifications/cancelled")
            if m["params"].get("requestId") == upstream_id]


async def settle(c: McpClient) -> None:
    """A round trip after which anything the gateway sent before it has arrived."""
    assert (await c.request("ping"))["result"] == {}


@pytest.mark.parametrize("transport", ["ws", "unix"])
@pytest.mark.parametrize("client_id", [99, "99"])
def test_cancelled_notification_reaches_the_upstream(rec: tuple[GatewayProcess, Record],
                                                     transport: str, client_id: Any) -> None:
    gw, record = rec
    marker = tag()

    async def body() -> None:
        async with connect(gw, transport) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 30, "tag": marker}, client_id)
            upstream_id = upstream_id_of(record, marker)
            await c.notify("notifications/cancelled", {"requestId": client_id,
                                                       "reason": "changed my mind"})
            told = record.wait(lambda r: cancels_for(r, upstream_id),
                               what="notifications/cancelled")
            assert told == [{"requestId": upstream_id, "reason": "changed my mind"}]
            # The cancelled request is never answered; the session carries on.
            await settle(c)
            assert not c.responded(client_id)
            echo = await c.call_tool("echo", {"text": "after"})
            assert echo["result"]["content"][0]["text"] == "after"
            assert not c.responded(client_id)
    run(body())
    assert gw.upstream("rec")["in_flight"] == 0


def test_a_cancel_naming_another_id_type_cancels_nothing(rec: tuple[GatewayProcess, Record]
                                                        ) -> None:
    """A cancel for "5" when 5 is in flight (or for an unknown id) is ignored: the call
    is answered and the upstream hears of no cancellation."""
    gw, record = rec
    marker = tag()

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 0.5, "tag": marker}, 5)
            upstream_id = upstream_id_of(record, marker)
            await c.notify("notifications/cancelled", {"requestId": "5"})
            await c.notify("notifications/cancelled", {"requestId": 5.0})
            await c.notify("notifications/cancelled", {"requestId": 424242})
            response = await c.wait_for(5)
            assert response["result"]["content"][0]["text"] == "slow done"
            assert cancels_for(record, upstream_id) == []
    run(body())


def test_a_unix_client_s_full_close_cancels_at_the_upstream_at_once(
        rec: tuple[GatewayProcess, Record]) -> None:
    """A unix client's EOF may be a half-close that still gets its answers (its own
    test), or a close of the whole socket, which polls POLLHUP: then nobody reads the
    answers, and its requests are cancelled upstream at once, as a WebSocket client's
    (before: at their time-out, "request timed out at the gateway")."""
    gw, record = rec
    marker = tag()

    async def body() -> int:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 30, "tag": marker}, 1)
            return upstream_id_of(record, marker)
    upstream_id = run(body())
    told = record.wait(lambda r: cancels_for(r, upstream_id), 10.0, "notifications/cancelled")
    assert told == [{"requestId": upstream_id, "reason": "client disconnected"}]


def test_disconnect_cancels_at_the_upstream(rec: tuple[GatewayProcess, Record]) -> None:
    """Over WebSocket."""
    gw, record = rec
    marker = tag()
    sessions = gw.status()["connections"]["open"]

    async def body() -> int:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            await c.start_call("slow", {"seconds": 30, "tag": marker}, 1)
            assert gw.status()["connections"]["open"] == sessions + 1
            return upstream_id_of(record, marker)
    upstream_id = run(body())
    told = record.wait(lambda r: cancels_for(r, upstream_id), what="notifications/cancelled")
    assert told == [{"requestId": upstream_id, "reason": "client disconnected"}]
    assert gw.status()["connections"]["open"] == sessions


def test_legacy_http_cancel_reaches_the_upstream(rec: tuple[GatewayProcess, Record]) -> None:
    gw, record = rec
    marker = tag()

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            call = {"jsonrpc": "2.0", "id": "c-1", "method": "tools/call",
                    "params": {"name": "slow", "arguments": {"seconds": 30, "tag": marker}}}
            pending = asyncio.create_task(http.post(gw.http_url, json=call,
                                                    headers=http_headers(sid)))
            upstream_id = await asyncio.to_thread(upstream_id_of, record, marker)
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": "c-1", "reason": "over http"}}
            async with http.post(gw.http_url, json=cancel, headers=http_headers(sid)) as resp:
                assert resp.status == 202
            told = await asyncio.to_thread(
                record.wait, lambda r: cancels_for(r, upstream_id), 15.0, "cancel")
            assert told == [{"requestId": upstream_id, "reason": "over http"}]
            pending.cancel()
    run(main())


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_an_http_client_that_leaves_cancels_at_the_upstream(
        rec: tuple[GatewayProcess, Record], era: str) -> None:
    """The client drops the connection before anything was answered: on the modern
    transport that is the cancel, on the legacy one the request is abandoned."""
    gw, record = rec
    marker = tag()

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            params = {"name": "slow", "arguments": {"seconds": 30, "tag": marker}}
            if era == "legacy":
                sid = await http_initialize(http, gw.http_url)
                headers = http_headers(sid)
            else:
                params = modern(params)
                headers = modern_headers("tools/call", "slow")
            call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
            task = asyncio.create_task(http.post(gw.http_url, json=call, headers=headers))
            upstream_id = await asyncio.to_thread(upstream_id_of, record, marker)
            task.cancel()  # aiohttp drops the connection
            told = await asyncio.to_thread(
                record.wait, lambda r: cancels_for(r, upstream_id), 15.0, "cancel")
            # The reason tells this cancel from the time-out's (REQUEST_TIMEOUT later).
            reason = "the HTTP client disconnected" if era == "legacy" else \
                "client disconnected"
            assert told == [{"requestId": upstream_id, "reason": reason}]
            if era == "legacy":
                # The abandoned request's id is free again on the session.
                call["params"] = {"name": "echo", "arguments": {"text": "again"}}
                async with http.post(gw.http_url, json=call, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()
                    reply = await resp.json()
                assert reply["result"]["content"][0]["text"] == "again"
    run(main())
    assert gw.upstream("rec")["in_flight"] == 0


@pytest.mark.parametrize("client_id", [7, "7"])
def test_request_timeout_answers_32001_in_time(rec: tuple[GatewayProcess, Record],
                                               client_id: Any) -> None:
    """At least request_timeout after the request, at most one sweep period and some
    slack later: a deadline twice as long fails this. The upstream is told to stop."""
    gw, record = rec
    marker = tag()

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            failed = gw.upstream("rec")["requests_failed"]
            started = time.monotonic()
            await c.start_call("slow", {"seconds": 30, "tag": marker}, client_id)
            response = await c.wait_for(client_id, timeout=REQUEST_TIMEOUT * 4)
            elapsed = time.monotonic() - started
            assert REQUEST_TIMEOUT <= elapsed < REQUEST_TIMEOUT + SWEEP_PERIOD + SLACK, elapsed
            assert type(response["id"]) is type(client_id) and response["id"] == client_id
            assert response["error"]["code"] == -32001
            assert "slow" not in json.dumps(response.get("result"))
            upstream_id = upstream_id_of(record, marker)
            told = record.wait(lambda r: cancels_for(r, upstream_id), what="cancel")
            assert told == [{"requestId": upstream_id,
                             "reason": "request timed out at the gateway"}]
            assert gw.upstream("rec")["requests_failed"] == failed + 1
            # The connection carries on.
            echo = await c.call_tool("echo", {"text": "ok"})
            assert echo["result"]["content"][0]["text"] == "ok"
    run(body())
    assert gw.upstream("rec")["in_flight"] == 0


def test_a_dropped_event_stream_is_kept_not_cancelled(rec: tuple[GatewayProcess, Record]
                                                      ) -> None:
    """A legacy POST answered as an event stream that the client drops is not counted
    open any more, and is not cancelled: it stays resumable."""
    gw, record = rec

    def open_streams() -> int:
        (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
        return int(tcp["http"]["open_streams"])

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = await http_initialize(http, gw.http_url)
            before = open_streams()
            call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
                "name": "progress", "arguments": {"steps": 3, "interval": 0.4},
                "_meta": {"progressToken": "p"}}}
            resp = await http.post(gw.http_url, json=call, headers=http_headers(sid))
            events = await read_events(resp, 2)
            assert open_streams() == before + 1
            resp.close()
            await asyncio.to_thread(wait_until, lambda: open_streams() == before, 5)
            async with http.get(gw.http_url, headers=http_headers(
                    sid, Accept="text/event-stream",
                    **{"Last-Event-ID": events[-1][0]})) as again:
                rest = [e[1] for e in await read_events(again, 100)]
            assert rest[-1]["result"]["content"][0]["text"] == "3 steps"
    run(main())
    calls = [m for m in record.received("tools/call") if m["params"]["name"] == "progress"]
    assert cancels_for(record, calls[-1]["id"]) == []


def test_a_disconnect_answers_the_upstream_request_it_left_open(gateway_factory: Any,
                                                               tmp_path: Path) -> None:
    """The upstream asked the client (sampling); the client leaves without answering:
    the upstream gets an error for its request rather than waiting for ever. (A gateway
    of its own: the one client is then, by any rule, the one the request is for.)"""
    record = Record(tmp_path / "ask.jsonl")
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(record.path)})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize(capabilities={"sampling": {}})
            await c.start_call("ask", {"prompt": "left open"}, 1)
            asked = await c.receive()
            assert asked.get("method") == "sampling/createMessage", asked
    run(body())
    call = record.call("ask", prompt="left open")
    assert call is not None
    ask_id = f"ask-{call['id']}"  # the id the recording server gave its request
    reply = record.wait(lambda r: [m for m in r.received() if "method" not in m
                                   and m.get("id") == ask_id], what="the reply")
    assert reply == [{"jsonrpc": "2.0", "id": ask_id, "error": {
        "code": -32603, "message": "the client disconnected"}}]


def test_the_last_subscriber_leaving_unsubscribes_upstream(rec: tuple[GatewayProcess, Record]
                                                          ) -> None:
    """By disconnecting (legacy) or by cancelling its listen (modern)."""
    gw, record = rec
    uri = "rec://rec/doc"

    def count(method: str) -> int:
        return sum(1 for m in record.received(method) if m["params"]["uri"] == uri)

    async def body() -> None:
        subscribed, unsubscribed = count("resources/subscribe"), count("resources/unsubscribe")
        async with ws_client(gw.ws_url) as a, unix_client(gw.unix_path) as b:
            await a.initialize()
            await b.initialize()
            assert (await a.request("resources/subscribe", {"uri": uri}))["result"] == {}
            assert (await b.request("resources/subscribe", {"uri": uri}))["result"] == {}
            assert count("resources/subscribe") == subscribed + 1
            await a.ws.close()
            await settle(b)
            assert count("resources/unsubscribe") == unsubscribed  # b still holds it
        await asyncio.to_thread(record.wait, lambda r: count("resources/unsubscribe")
                                == unsubscribed + 1, 15.0, "resources/unsubscribe")
        async with unix_client(gw.unix_path) as c:
            await c.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                          "params": modern({"notifications": {
                              "resourceSubscriptions": [uri]}})})
            ack = await c.receive()
            assert ack["params"]["notifications"] == {"resourceSubscriptions": [uri]}
            await asyncio.to_thread(record.wait, lambda r: count("resources/subscribe")
                                    == subscribed + 2, 15.0, "resources/subscribe")
            await c.notify("notifications/cancelled", {"requestId": "L"})
            await asyncio.to_thread(record.wait, lambda r: count("resources/unsubscribe")
                                    == unsubscribed + 2, 15.0, "resources/unsubscribe")
    run(body())


def test_a_leaving_session_gives_back_its_log_level(rec: tuple[GatewayProcess, Record]) -> None:
    """Two sessions ask for debug logs: the upstream is asked once; it keeps debug while
    one of them stays, and goes quiet when both have left."""
    gw, record = rec

    def levels() -> list[str]:
        return [m["params"]["level"] for m in record.received("logging/setLevel")]

    async def upstream_round_trip(c: McpClient) -> None:
        """A call through the upstream: what the gateway wrote to it before this has
        been recorded once the answer is back."""
        echo = await c.call_tool("echo", {"text": "sync"})
        assert echo["result"]["content"][0]["text"] == "sync"

    async def body() -> None:
        before = len(levels())
        sessions = gw.status()["connections"]["open"]
        async with ws_client(gw.ws_url) as a:
            async with unix_client(gw.unix_path) as b:
                for c in (a, b):
                    await c.initialize()
                    assert (await c.request("logging/setLevel", {"level": "debug"}))[
                        "result"] == {}
                await upstream_round_trip(a)
                assert levels()[before:] == ["debug"]
            await asyncio.to_thread(
                wait_until, lambda: gw.status()["connections"]["open"] == sessions + 1)
            await upstream_round_trip(a)
            assert levels()[before:] == ["debug"]  # a still wants debug
        await asyncio.to_thread(record.wait, lambda r: levels()[before:] == [
            "debug", "emergency"], 15.0, "logging/setLevel emergency")
    run(body())


def test_notifications_other_than_initialized_do_not_initialize(
        rec: tuple[GatewayProcess, Record]) -> None:
    gw, _ = rec

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            for method in ("notifications/roots/list_changed", "notifications/progress",
                           "notifications/cancelled"):
                await c.notify(method, {})
            early = await c.request("tools/list")
            assert early["error"]["code"] == -32600, early
    run(body())


def test_a_closed_modern_stream_is_not_counted_open(rec: tuple[GatewayProcess, Record]) -> None:
    gw, _ = rec

    def open_streams() -> int:
        (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
        return int(tcp["http"]["open_streams"])

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            before = open_streams()
            listen = {"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                      "params": modern({"notifications": {"toolsListChanged": True}})}
            resp = await http.post(gw.http_url, json=listen,
                                   headers=modern_headers("subscriptions/listen"))
            (ack,) = await read_events(resp, 1)
            assert ack[1]["method"] == "notifications/subscriptions/acknowledged"
            assert open_streams() == before + 1
            resp.close()
            await asyncio.to_thread(wait_until, lambda: open_streams() == before, 5)
    run(main())


def test_a_refused_subscription_is_not_held(rec: tuple[GatewayProcess, Record]) -> None:
    """The upstream refuses: the client gets the upstream's error, and the next client
    to subscribe asks the upstream again rather than being told it is subscribed."""
    gw, record = rec
    uri = "rec://rec/refuse"

    async def body() -> None:
        async with ws_client(gw.ws_url) as a, unix_client(gw.unix_path) as b:
            for c in (a, b):
                await c.initialize()
                refused = await c.request("resources/subscribe", {"uri": uri})
                assert refused["error"] == {"code": -32603, "message":
                                            "resources/subscribe refused by the test"}
    run(body())
    asked = [m for m in record.received("resources/subscribe") if m["params"]["uri"] == uri]
    assert len(asked) == 2


def test_a_websocket_client_that_leaves_gives_back_its_log_level_once(
        rec: tuple[GatewayProcess, Record]) -> None:
    """A WebSocket client that closes properly is seen leaving twice (its close frame,
    then the end of the connection): its log level is given back once, so a session
    that stays with the same level keeps getting it from the upstream."""
    gw, record = rec

    def levels() -> list[str]:
        return [m["params"]["level"] for m in record.received("logging/setLevel")]

    def websocket_connections() -> int:
        (tcp,) = [lst for lst in gw.status()["listeners"] if "http" in lst]
        return int(tcp["connections"])

    async def upstream_round_trip(c: McpClient) -> None:
        echo = await c.call_tool("echo", {"text": "sync"})
        assert echo["result"]["content"][0]["text"] == "sync"

    async def body() -> None:
        before = len(levels())
        connections = websocket_connections()
        async with unix_client(gw.unix_path) as stays:
            await stays.initialize()
            assert (await stays.request("logging/setLevel", {"level": "info"}))[
                "result"] == {}
            async with ws_client(gw.ws_url) as leaves:
                await leaves.initialize()
                assert (await leaves.request("logging/setLevel", {"level": "info"}))[
                    "result"] == {}
                await upstream_round_trip(leaves)
                assert levels()[before:] == ["info"]
            # The connection is gone for good (both leave-takings are behind us).
            await asyncio.to_thread(wait_until, lambda: websocket_connections() == connections)
            await upstream_round_trip(stays)
            assert levels()[before:] == ["info"]  # the unix session still wants info
        await asyncio.to_thread(record.wait, lambda r: levels()[before:] == [
            "info", "emergency"], 15.0, "logging/setLevel emergency")
    run(body())


def test_input_a_legacy_client_never_gives_times_out_in_time(gateway_factory: Any) -> None:
    """A modern upstream asks a legacy client for input (relayed as a server-to-client
    request) and the client never answers: at request_timeout the relayed request is
    withdrawn and the call gets -32001, as a call the upstream never answers would."""
    gw: GatewayProcess = gateway_factory({"events": {**events_upstream("modern"),
                                                     "request_timeout": REQUEST_TIMEOUT}})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize(capabilities={"sampling": {}, "elicitation": {}})
            started = time.monotonic()
            await c.start_call("interview", {"topic": "tides"}, "call")
            asked = await c.receive()
            asked_at = time.monotonic()  # the deadline was set just before it was sent
            assert asked.get("method") == "sampling/createMessage", asked
            response = await c.wait_for("call", timeout=REQUEST_TIMEOUT * 4)
            answered_at = time.monotonic()
            assert answered_at - started >= REQUEST_TIMEOUT, answered_at - started
            assert answered_at - asked_at < REQUEST_TIMEOUT + SWEEP_PERIOD + SLACK, \
                answered_at - asked_at
            assert response["error"]["code"] == -32001, response
            assert "did not answer upstream 'events'" in response["error"]["message"]
            assert [n["params"] for n in c.notifications
                    if n["method"] == "notifications/cancelled"] == [
                {"requestId": asked["id"], "reason": "the client did not answer in time"}]
            # The session carries on, and the withdrawn request's answer goes nowhere.
            await c.send({"jsonrpc": "2.0", "id": asked["id"], "result": {
                "role": "assistant", "model": "m", "content": {"type": "text", "text": "x"}}})
            await settle(c)
            assert not c.responded("call")
    run(body())
    assert gw.status()["in_flight"] == 0
