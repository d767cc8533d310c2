"""The express path of a common ``tools/call`` (``Requests._express``) does what the
general path does: for every message and every state of the gateway, the same bytes
reach the upstream and the client, and the same records wait for the answers. It
takes the common call, and leaves everything else to the general path."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.micro.fakes import gateway_in_process, initialized_session
from mcpfast.gateway import requests
from mcpfast.gateway.requests import Requests
from mcpfast.upstream import connection


class RecordingWriter:
    congested = False

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def call(request_id: Any, params: Any = msgspec.UNSET, method: str = "tools/call") -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not msgspec.UNSET:
        message["params"] = params
    return json.dumps(message).encode()


ARGUMENTS = {"text": "hello", "n": [1, 2.5, None]}
MESSAGES = [
    call(1, {"name": "search", "arguments": ARGUMENTS}),
    call("two", {"arguments": ARGUMENTS, "name": "search"}),
    call(1, {"name": "search"}),  # its id is in flight
    call(3, {"name": "search", "_meta": {"progressToken": "p"}}),
    call(4, {"name": "search", "_meta": {}}),
    call(5, {"name": "docs__search", "arguments": {}}),
    call(6, {"name": "nope"}),
    call(7, {"name": 7}),
    call(8),
    call(9, [1, 2]),
    call(10, {"name": "search", "uri": "file:///x"}),
    b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"search"},"x":1}',
    # Other methods routed by a name, naming the tool: never forwarded as a call.
    call(12, {"name": "search"}, "prompts/get"),
    call(13, {"name": "search", "uri": "file:///x"}, "resources/read"),
    # A number beyond a float's range where params are decoded again (a prefixed
    # name): -32602 on both paths; names repeated or escaped inside arguments, which
    # a policy makes the gateway encode again.
    b'{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"docs__search",'
    b'"arguments":{"x":1e400}}}',
    b'{"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":"search",'
    b'"arguments":{"name":"x","name":"y","s":"\\u0041"}}}',
]
"""Calls the express path takes, and calls it must leave to the general path."""
STATES = ["ready", "prefixed", "not initialized", "draining", "overloaded",
          "upstream down", "rate limited", "denied", "two in flight at most", "traced"]


def random_messages(seed: int, count: int = 300) -> list[bytes | None]:
    """Calls of every shape the express path must tell apart, ids that collide, and
    (None) the upstream's answer to the oldest call in flight."""
    rng = random.Random(seed)
    messages: list[bytes | None] = []
    for _ in range(count):
        if rng.random() < 0.3:
            messages.append(None)
            continue
        params: dict[str, Any] = {}
        name = rng.choice(["search", "search", "docs__search", "nope", 5, None, ""])
        if name is not None:
            params["name"] = name
        if rng.random() < 0.5:
            params["arguments"] = {"q": "x" * rng.randrange(5), "n": rng.random()}
        meta = rng.choice([None, None, {}, {"progressToken": rng.randrange(3)},
                           {"progressToken": "t"}, {"other": 1}])
        if meta is not None:
            params["_meta"] = meta
        if rng.random() < 0.1:
            params["uri"] = "file:///r"
        shape = rng.random()
        request_id = rng.choice([rng.randrange(12), str(rng.randrange(4)), -1, 2**53])
        messages.append(call(request_id, params if shape < 0.9 else
                             msgspec.UNSET if shape < 0.95 else [params]))
    return messages


def exchange(tmp_path: Path, state: str, express: bool,
             messages: list[bytes | None] = MESSAGES) -> dict[str, Any]:  # type: ignore[assignment]
    """What the gateway wrote and holds after ``messages`` in ``state`` (None: the
    upstream answers the oldest call in flight)."""
    settings = {
        "ready": '[routing]\nprefix = "conditional"\n',
        "prefixed": "",
        "rate limited": '[routing]\nprefix = "conditional"\n'
                        '[[rate_limits]]\nrate = 0.001\nburst = 2\n',
        "denied": '[routing]\nprefix = "conditional"\n[authorization]\n'
                  '[[authorization.rules]]\ndeny_tools = ["search"]\n',
        "two in flight at most": '[routing]\nprefix = "conditional"\n'
                                 '[limits]\nmax_in_flight = 2\n',
        "traced": '[routing]\nprefix = "conditional"\n'
                  '[tracing]\nenabled = true\nschedule_delay = 3600.0\n'
                  'sample_ratio = 0.0\nendpoint = "http://127.0.0.1:9/v1/traces"\n',
    }.get(state, '[routing]\nprefix = "conditional"\n')

    tmp_path.mkdir(exist_ok=True)

    async def main() -> dict[str, Any]:
        gateway, upstream = gateway_in_process(tmp_path, settings)
        writer = upstream.connection.writer = RecordingWriter()
        to_client: list[bytes] = []
        if state == "not initialized":
            session = gateway.open_session("unix", "test", to_client.append,
                                           lambda c, r: None)
        else:
            session = initialized_session(gateway, to_client)
        to_client.clear()
        if state == "draining":
            gateway.draining = True
        elif state == "overloaded":
            gateway.overloaded = True
        elif state == "upstream down":
            upstream.connection.ready = False

        def record(request: Any) -> dict[str, Any]:
            fields = msgspec.structs.asdict(request)
            assert fields.pop("session") is session
            fields.pop("started"), fields.pop("deadline")  # times of their own
            fields.pop("trace")  # a span of its own each time
            return fields
        ended: list[tuple[str, int, dict[str, Any]]] = []

        def observe(upstream: Any, request: Any, outcome: int) -> None:
            ended.append((upstream.name, outcome, record(request)))
        gateway.observers = (*gateway.observers, observe)
        for message in messages:
            if message is not None:
                gateway.handle(session, message)
            elif upstream.pending:
                answer = {"jsonrpc": "2.0", "id": min(upstream.pending),
                          "result": {"content": []}}
                # Written compactly (as message_scan.read_result reads it), or not.
                upstream.on_message(msgspec.json.encode(answer) if answer["id"] % 2
                                    else json.dumps(answer).encode())
        # Nothing failed inside the gateway on either path (an error there would be
        # answered alike by both, and prove nothing).
        assert not any(b'"code":-32603' in data for data in to_client), to_client
        records = [(upstream_id, record(request))
                   for upstream_id, request in upstream.pending.items()]
        counters = gateway.counters
        connection = upstream.connection
        # Spans have ids of their own each time.
        sent = [re.sub(rb'"traceparent":"[^"]*"', b'"traceparent":"?"', data)
                for data in writer.written]
        # A refusal's retry hint counts down with the clock: to the second here.
        answered = [re.sub(rb'"retryAfterSeconds":([0-9.e+-]+)', lambda hint: b'"retryAfter'
                           b'Seconds":%d' % round(float(hint[1])), data) for data in to_client]
        if gateway.tracing is not None:
            gateway.tracing.shutdown()
        return {"upstream": sent, "client": answered, "pending": records,
                "inflight": {k: (u.name, i) for k, (u, i) in session.inflight.items()},
                "ended": ended,
                "counters": {name: getattr(counters, name) for name in counters.__slots__},
                "connection": (connection.requests_forwarded, connection.requests_failed,
                               connection.sole_user is session, connection.shared),
                "tools": {name: stats[:6] for name, stats in  # outcome counts only
                          gateway.tool_stats.by_upstream.get("docs", {}).items()}}
    if not express:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Requests, "_express", lambda *args: False)
            # Every message parsed, none read by message_scan (read_call, read_result).
            patch.setattr(requests, "_read_call", None)
            patch.setattr(connection, "_read_result", None)
            return asyncio.run(main())
    return asyncio.run(main())


@pytest.mark.parametrize("state", STATES)
def test_the_express_path_does_what_the_general_path_does(tmp_path: Path, state: str) -> None:
    general = exchange(tmp_path / "general", state, express=False)
    express = exchange(tmp_path / "express", state, express=True)
    assert express == general


@pytest.mark.parametrize("state", STATES)
def test_both_paths_agree_on_random_calls_and_answers(tmp_path: Path, state: str) -> None:
    for seed in range(3):
        messages = random_messages(seed)
        general = exchange(tmp_path / f"general{seed}", state, False, messages)
        express = exchange(tmp_path / f"express{seed}", state, True, messages)
        assert express == general, seed


@pytest.mark.parametrize("state", ["ready", "prefixed", "upstream down", "rate limited",
                                   "denied", "two in flight at most"])
def test_the_express_path_takes_the_common_call(tmp_path: Path, state: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Otherwise the comparisons above would hold with the express path never taken.
    general: list[Any] = []
    dispatch = Requests._dispatch_legacy
    monkeypatch.setattr(Requests, "_dispatch_legacy",
                        lambda self, session, method, env, head: general.append(env.id)
                        or dispatch(self, session, method, env, head))
    exchange(tmp_path, state, express=True)
    if state == "prefixed":
        # Only the call that names the tool as prefixed, renamed on the way.
        assert general == [0, 1, "two", 1, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 15]
        return
    # The first two calls (ids 1 and "two"), forwarded, refused by a policy or failed
    # with the upstream (then the third, id 1 again, is no duplicate and is taken too).
    assert 0 in general and "two" not in general and general.count(1) <= 1
    if state == "ready":
        # 0: the initialize; the id in flight (1 again) is answered on the express
        # path, by the general path's own check (Gateway.id_taken).
        assert general == [0, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
