"""The connection alone (upstream/connection.py): the wire half of an upstream, which a
new upstream kind reuses whole. Driven here without any transport: what it writes
lands in a list, and the server's answers are handed to ``on_message``."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from msgspec import UNSET

from mcpfast.protocol import jsonrpc
from mcpfast.protocol.jsonrpc import Envelope
from mcpfast.upstream.connection import Connection, Hooks, UpstreamError

from ..conftest import run


class Call:
    """The gateway's record of a request, as far as a connection reads it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0.0
        self.deadline = 0.0


class Session:
    flow = None


class Writer:
    """The transport's writer: what is written is kept, and read back as the upstream
    reads it, a message a line."""

    congested = False

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    @property
    def messages(self) -> list[dict[str, Any]]:
        stream = b"".join(self.chunks)
        assert stream.endswith(b"\n") or not stream, stream  # every message framed
        return [json.loads(line) for line in stream.split(b"\n")[:-1]]


def answer_of(env: Envelope | None, line: bytes) -> Any:
    """What an answer carries; ``env`` is None for a result message_scan.read_result
    read in ``line`` (the connection's hooks take it so)."""
    if env is None:
        env = jsonrpc.decode(line, None)
        assert env.error is UNSET
    return json.loads(bytes(env.result if env.error is UNSET else env.error))  # type: ignore[arg-type]


def connection() -> tuple[Connection[Call], Writer, list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []
    hooks: Hooks[Call] = Hooks(
        lambda call, env, line: seen.append(("answered", (call.name, answer_of(env, line))))
        or setattr(call, "line", line),
        lambda call: seen.append(("abandoned", call.name)),
        lambda call: seen.append(("timed_out", call.name)),
        lambda call, message: seen.append(("failed", (call.name, message))),
        lambda env: seen.append(("notification", env.method)),
        lambda env: seen.append(("request", env.method)))
    conn: Connection[Call] = Connection("up", 5.0, hooks, logging.getLogger("test"))
    writer = Writer()
    conn.writer = writer  # type: ignore[assignment]
    conn.delimiter = b"\n"
    conn.ready = True
    return conn, writer, seen


def test_requests_are_numbered_sent_framed_and_answered_by_their_own_id() -> None:
    conn, writer, seen = connection()
    first, second = Call("a"), Call("b")
    assert conn.forward(first, Session(), "tools/call", b'{"name":"x"}') == 1
    assert conn.forward(second, Session(), "tools/call", b'{"name":"y"}') == 2
    assert writer.messages == [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "y"}}]
    # Each line as the encoder writes the envelope, the params as they came.
    assert b"".join(writer.chunks) == (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}\n'
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"y"}}\n')
    assert 4.9 < first.deadline - first.started <= 5.0
    conn.on_message(b'{"jsonrpc":"2.0","id":2,"result":{"v":2}}')
    conn.on_message(b'{"jsonrpc":"2.0","id":2,"result":{"v":"again"}}')  # dropped
    conn.on_message(b'{"jsonrpc":"2.0","method":"notifications/message","params":{}}')
    conn.on_message(b'{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage"}')
    assert seen == [("answered", ("b", {"v": 2})), ("notification", "notifications/message"),
                    ("request", "sampling/createMessage")]
    # The answer as the server wrote it goes along, for the gateway to splice.
    assert second.line == b'{"jsonrpc":"2.0","id":2,"result":{"v":2}}'  # type: ignore[attr-defined]
    assert list(conn.pending) == [1] and conn.requests_forwarded == 2


def test_a_message_spread_over_lines_reaches_the_gateway_on_one() -> None:
    """A server over WebSocket or HTTP may pretty-print: what the gateway forwards to a
    client must still fit on one line (the unix socket and stdio clients read a message
    a line), so the newlines between its tokens become spaces."""
    conn, _, seen = connection()
    conn.delimiter = b""  # not stdio
    call = Call("a")
    conn.forward(call, Session(), "tools/call", b"{}")
    conn.on_message(b'{\n  "jsonrpc": "2.0",\n  "id": 1,\n'
                    b'  "result": {\n    "v": [1,\n2]\n  }\n}\n')
    assert seen == [("answered", ("a", {"v": [1, 2]}))]
    assert b"\n" not in call.line  # type: ignore[attr-defined]
    # Carriage returns too (an SSE client reads one line an event), and only between
    # tokens: a raw line break inside a string is invalid JSON, refused as before rather
    # than read as a space (found by review).
    second, third = Call("b"), Call("c")
    conn.forward(second, Session(), "tools/call", b"{}")
    conn.forward(third, Session(), "tools/call", b"{}")
    conn.on_message(b'{"jsonrpc": "2.0",\r\n"id": 2,\r"result": {"v": "a b"}}')
    assert seen[-1] == ("answered", ("b", {"v": "a b"}))
    assert b"\r" not in second.line and b"\n" not in second.line  # type: ignore[attr-defined]
    answered = len(seen)
    conn.on_message(b'{"jsonrpc":"2.0","id":3,"result":{"v":"a\nb"}}')
    assert len(seen) == answered and 3 in conn.pending  # dropped, not answered "a b"


def test_a_cancel_withdraws_and_tells_the_server() -> None:
    conn, writer, seen = connection()
    conn.forward(Call("a"), Session(), "tools/call", b"{}")
    conn.cancel(1, "client disconnected")
    assert seen == [("abandoned", "a")] and not conn.pending
    assert writer.messages[-1] == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                   "params": {"requestId": 1, "reason": "client disconnected"}}


def test_the_sweep_times_out_what_outlived_its_deadline_once() -> None:
    conn, writer, seen = connection()
    late, fresh = Call("late"), Call("fresh")
    conn.forward(late, Session(), "tools/call", b"{}")
    conn.forward(fresh, Session(), "tools/call", b"{}")
    fresh.deadline = late.deadline + 10.0
    conn.sweep(late.deadline)
    assert ("timed_out", "late") in seen and ("abandoned", "late") not in seen
    assert writer.messages[-1]["method"] == "notifications/cancelled"
    conn.sweep(fresh.deadline)
    assert [s for s in seen if s[0] == "timed_out"] == [("timed_out", "late"),
                                                         ("timed_out", "fresh")]
    assert conn.requests_failed == 2 and not conn.pending


def test_fail_all_fails_requests_and_the_gateways_own_calls() -> None:
    conn, _, seen = connection()

    async def main() -> None:
        conn.forward(Call("a"), Session(), "tools/call", b"{}")
        pending = conn.pending
        _, own = conn.start_call("tools/list")
        conn.fail_all("gone")
        assert seen == [("failed", ("a", "gone"))]
        assert conn.pending is pending and not pending
        with pytest.raises(UpstreamError) as error:
            await own
        assert error.value.message == "gone"
    run(main())


def test_not_ready_forwards_nothing_and_a_closed_wire_refuses_writes() -> None:
    conn, writer, _ = connection()
    conn.ready = False
    assert conn.forward(Call("a"), Session(), "tools/call", b"{}") is None
    assert not writer.messages and conn.requests_failed == 1
    conn.writer = None
    with pytest.raises(UpstreamError):
        conn.notify("notifications/initialized")


def test_an_unreadable_answer_fails_its_request_now() -> None:
    """Not a time-out later: the request it answers gets an error at once."""
    conn, _, seen = connection()
    call = Call("a")
    conn.forward(call, Session(), "tools/call", b"{}")
    conn.on_message(b'{"jsonrpc":"2.0","id":1,"result":{"text":"\xff"}}')  # not UTF-8
    ((what, (name, error)),) = seen
    assert (what, name, error["code"]) == ("answered", "a", -32603)
    assert "sent an invalid response" in error["message"] and not conn.pending
    # The error is the gateway's, not the server's bytes: nothing of them is spliced on.
    assert call.line == b""  # type: ignore[attr-defined]


def test_the_gateways_own_call_settles_with_its_answer() -> None:
    conn, writer, _ = connection()

    async def main() -> None:
        task = asyncio.ensure_future(conn.call("ping"))
        await asyncio.sleep(0)
        assert writer.messages[-1] == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        conn.on_message(b'{"jsonrpc":"2.0","id":1,"result":{}}')
        assert await task == {}
    run(main())


def test_a_call_that_cannot_be_written_leaves_no_future_behind() -> None:
    """The upstream is not running: the caller gets the error at once, and no future
    waits to be failed later, when nobody would retrieve its exception (asyncio logged
    "Future exception was never retrieved" at shutdown; found by an outside sweep)."""
    async def body() -> None:
        conn, _, _ = connection()
        conn.writer = None
        with pytest.raises(UpstreamError, match="not running"):
            conn.start_call("resources/subscribe", {"uri": "x"})
        assert not conn._calls
    asyncio.run(body())
