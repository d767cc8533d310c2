"""``mode = "per_session"`` (gateway/per_session.py): each client session gets an upstream
of its own, behind a real gateway.

What a user would notice: a stateful server keeps each client's state apart (the
background test server counts calls per process); a server's sampling requests reach
the client whose call caused them however many clients there are (the official SDK's
server and client); spares make the first call quick; ``max_sessions`` bounds the
processes; a client leaving, or idling past ``session_idle_timeout``, stops its
upstream."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from mcpfast.config import ConfigError, parse
from mcpfast.upstream.process import STDIN_PIPE_SIZE

from ..conftest import (
    ROOT,
    GatewayProcess,
    McpClient,
    answer_sampling,
    forked,
    run,
    wait_until,
    ws_client,
)

BACKGROUND = str(ROOT / "tests" / "servers" / "background_server.py")


def start(tmp_path: Path, command: list[str] | None = None, **settings: Any) -> GatewayProcess:
    gateway = GatewayProcess(tmp_path, {"own": {
        "command": command or ["python", BACKGROUND], "era": "legacy", "mode": "per_session",
        **settings}}, {})
    gateway.start()
    return gateway


async def calls_seen(client: McpClient) -> int:
    """How many ``count`` calls the upstream behind this session has served."""
    answer = await client.call_tool("count")
    assert "result" in answer, answer
    return int(json.loads(answer["result"]["content"][0]["text"])["count"])


def pool(gateway: GatewayProcess) -> dict[str, Any]:
    return gateway.upstream("own")["per_session"]  # type: ignore[no-any-return]


def test_each_session_has_its_own_upstream_until_it_leaves(tmp_path: Path) -> None:
    gateway = start(tmp_path)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as a:
                await a.initialize()
                async with ws_client(gateway.ws_url) as b:
                    await b.initialize()
                    assert [await calls_seen(a) for _ in range(3)] == [1, 2, 3]
                    assert await calls_seen(b) == 1  # not the 4th call of a shared one
                    assert pool(gateway)["sessions"] == 2
                wait_until(lambda: pool(gateway)["sessions"] == 1, 30)
                assert await calls_seen(a) == 4
        run(body())
        wait_until(lambda: pool(gateway)["sessions"] == 0, 30)
        assert 'mcpfast_upstream_session_upstreams{role="session",upstream="own"} 0.0' in \
            gateway.admin_get("/metrics")[1].decode()
    finally:
        gateway.cleanup()


def test_spares_are_kept_started_and_max_sessions_bounds_them(tmp_path: Path) -> None:
    gateway = start(tmp_path, spares=1, max_sessions=2)
    try:
        wait_until(lambda: pool(gateway)["spares_ready"] == 1, 30)

        async def body() -> None:
            async with ws_client(gateway.ws_url) as a, ws_client(gateway.ws_url) as b, \
                    ws_client(gateway.ws_url) as c:
                for client in (a, b, c):
                    await client.initialize()
                assert await calls_seen(a) == 1  # the spare, now a's
                assert await calls_seen(b) == 1  # the second of max_sessions
                refused = await c.call_tool("count")
                assert refused["error"]["code"] == -32000
                assert "max_sessions (2)" in refused["error"]["message"]
                assert pool(gateway)["sessions"] == 2
        run(body())
        # Both left: their upstreams stop, and a spare is started again.
        wait_until(lambda: pool(gateway)["sessions"] == 0
                   and pool(gateway)["spares_ready"] == 1, 30)
    finally:
        gateway.cleanup()


def test_an_idle_session_loses_its_upstream(tmp_path: Path) -> None:
    gateway = start(tmp_path, session_idle_timeout=0.5)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                assert [await calls_seen(client) for _ in range(2)] == [1, 2]
                for _ in range(600):  # 30 s at most
                    if pool(gateway)["sessions"] == 0:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(pool(gateway))
                assert await calls_seen(client) == 1  # a new one, started for this call
        run(body())
    finally:
        gateway.cleanup()


def test_sampling_reaches_the_client_that_caused_it_among_many(tmp_path: Path) -> None:
    """Shared, the upstream's sampling requests name no client, and with several clients
    the gateway cannot deliver them; per session, each is its client's."""
    gateway = start(tmp_path, command=forked("sdk_server"))
    try:
        async def one(prompt: str) -> str:
            async with Client(streamable_http_client(gateway.http_url), mode="legacy",
                              sampling_callback=answer_sampling) as client:
                result = await client.call_tool("sample", {"prompt": prompt})
                content = result.content[0]
                assert isinstance(content, TextContent)
                return content.text

        async def body() -> list[str]:
            return list(await asyncio.gather(*(one(f"question {i}") for i in range(4))))
        assert run(body()) == [f"echo of question {i}" for i in range(4)]
    finally:
        gateway.cleanup()


def test_a_sessions_own_upstream_tells_only_that_session_its_list_changed(
        tmp_path: Path) -> None:
    """What a session's own server says of its lists is that session's: passed on to it
    as the server said it, never to the other sessions (whose servers said nothing)."""
    gateway = start(tmp_path, command=forked("events_server"))
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as a, ws_client(gateway.ws_url) as b:
                for client in (a, b):
                    await client.initialize()
                    assert "result" in await client.call_tool("whoami")
                assert "result" in await a.call_tool("announce", {"tool_name": "mine"})
                # The server announced before it answered: the notice came first.
                assert [n["method"] for n in a.notifications] == \
                    ["notifications/tools/list_changed"], a.notifications
                assert "result" in await b.call_tool("whoami")
                assert b.notifications == []
        run(body())
    finally:
        gateway.cleanup()


def endpoints_gateway(tmp_path: Path, *commands: list[str], **settings: Any
                      ) -> GatewayProcess:
    gateway = GatewayProcess(tmp_path, {"own": {
        "era": "legacy", "mode": "per_session",
        "endpoints": [{"command": command} for command in commands], **settings}}, {})
    gateway.start()
    return gateway


def test_sessions_are_spread_over_endpoints_and_stay_on_theirs(tmp_path: Path) -> None:
    background = ["python", BACKGROUND]
    gateway = endpoints_gateway(tmp_path, background, background)
    try:
        async def body() -> None:
            clients = [ws_client(gateway.ws_url) for _ in range(4)]
            opened = [await c.__aenter__() for c in clients]
            try:
                for client in opened:
                    await client.initialize()
                    assert await calls_seen(client) == 1
                assert pool(gateway)["sessions_by_endpoint"] == [2, 2]
                # Each session keeps its own upstream, on its endpoint.
                assert [await calls_seen(c) for c in opened] == [2, 2, 2, 2]
            finally:
                for c in clients:
                    await c.__aexit__(None, None, None)
        run(body())
        wait_until(lambda: pool(gateway)["sessions"] == 0, 30)
    finally:
        gateway.cleanup()


def test_a_session_starts_on_the_next_endpoint_when_its_own_cannot(tmp_path: Path) -> None:
    """Affinity puts some sessions on an endpoint whose server exits at once: theirs
    start on the other endpoint, long before ``init_timeout``, and the catalog comes
    from the endpoint that works."""
    broken = ["python", "-c", "raise SystemExit(3)"]
    gateway = endpoints_gateway(tmp_path, broken, ["python", BACKGROUND],
                                balance="session", init_timeout=60, restart_backoff=0.2)
    try:
        async def body() -> float:
            loop = asyncio.get_running_loop()
            slowest = 0.0
            for _ in range(4):
                async with ws_client(gateway.ws_url) as client:
                    await client.initialize()
                    started = loop.time()
                    assert await calls_seen(client) == 1
                    slowest = max(slowest, loop.time() - started)
            return slowest
        slowest = run(body())
        assert slowest < 30, slowest  # not the 60 s init_timeout of the broken endpoint
        assert pool(gateway)["sessions_by_endpoint"] in ([0, 0], [0, 1])
    finally:
        gateway.cleanup()


def test_a_session_whose_endpoint_never_answers_starts_on_the_next(tmp_path: Path) -> None:
    """An endpoint that accepts and never answers the handshake: a session bound to it
    by affinity starts on the other one after ``init_timeout``, instead of failing."""
    hung = ["python", "-c", "import time; time.sleep(600)"]
    gateway = GatewayProcess(tmp_path, {"own": {
        "era": "legacy", "mode": "per_session", "balance": "session", "init_timeout": 2,
        "endpoints": [{"command": hung}, {"command": ["python", BACKGROUND]}]}}, {})
    gateway.start()
    try:
        async def body() -> list[int]:
            seen = []
            for _ in range(4):  # some of them bound to the hung endpoint
                async with ws_client(gateway.ws_url) as client:
                    await client.initialize()
                    seen.append(await calls_seen(client))
            return seen
        assert run(body(), timeout=120) == [1, 1, 1, 1]
    finally:
        gateway.cleanup()


def test_without_affinity_a_hung_endpoint_is_tried_last(tmp_path: Path) -> None:
    """Round robin by sessions would pick the hung endpoint first (it has none): an
    endpoint whose template is not up comes last, so no session waits ``init_timeout``
    on it."""
    hung = ["python", "-c", "import time; time.sleep(600)"]
    gateway = GatewayProcess(tmp_path, {"own": {
        "era": "legacy", "mode": "per_session", "init_timeout": 8,
        "endpoints": [{"command": hung}, {"command": ["python", BACKGROUND]}]}}, {})
    gateway.start(timeout=60)  # ready once the hung handshake has failed: 8 s
    try:
        async def body() -> float:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with ws_client(gateway.ws_url) as a, ws_client(gateway.ws_url) as b:
                for client in (a, b):
                    await client.initialize()
                    assert await calls_seen(client) == 1
            return loop.time() - started
        # The second session would have gone to the hung endpoint (it has fewer).
        assert run(body(), timeout=120) < 7  # not one init_timeout (8 s)
        assert pool(gateway)["sessions_by_endpoint"][0] == 0
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("table,message", [
    ('command = ["x"]\nmode = "per_session"\nmax_pending_requests = 3',
     "upstreams.p.mode: per_session does not combine with circuit breaking"),
    ('mode = "per_session"\nendpoints = [{command = ["x"]}, {command = ["y"]}]\n'
     'outlier_detection = {}',
     "upstreams.p.endpoints[0].mode: per_session does not combine with"),
    ('command = ["x"]\nspares = 5\nmax_sessions = 2', "upstreams.p.spares: must be between"),
    ('command = ["x"]\nmax_sessions = 0', "upstreams.p.max_sessions: must be at least 1"),
    ('command = ["x"]\nmode = "each"', "upstreams.p.mode: Invalid enum value"),
])
def test_config_errors_name_the_key(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(f"[upstreams.p]\n{table}\n")
    assert message in str(error.value)


def test_a_call_waiting_for_its_session_upstream_is_in_flight(tmp_path: Path) -> None:
    """While a session's own upstream starts, its first calls wait for it, in flight
    as any other: an id reused meanwhile is refused, and a call cancelled meanwhile is
    never sent (the server's count shows it) nor answered, even when its id is used
    again after the cancel (that call is its own, and is sent)."""
    gateway = GatewayProcess(tmp_path, {"own": {
        "command": ["sh", "-c", f"sleep 1.5; exec python {BACKGROUND}"], "era": "legacy",
        "mode": "per_session"}}, {})
    gateway.start(timeout=30)
    try:
        async def body() -> None:
            async with ws_client(gateway.ws_url) as client:
                await client.initialize()
                count = {"name": "count", "arguments": {}}
                await client.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                   "params": count})
                await client.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                   "params": count})
                refused = await client.receive()
                assert refused["id"] == 1 and refused["error"]["message"] == \
                    "request id 1 is already in flight on this session", refused
                for message in ({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                 "params": count},
                                {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": 2}},
                                {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                 "params": count},
                                {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                 "params": {"name": "count", "arguments": {"again": 1}}}):
                    await client.send(message)
                answers = {}
                for _ in range(3):
                    answer = await client.receive()
                    answers[answer["id"]] = json.loads(
                        answer["result"]["content"][0]["text"])["count"]
                # The cancelled 2 never reached the server; the second 2 did, last.
                assert answers == {1: 1, 3: 2, 2: 3}, answers
                assert (await client.request("ping", request_id="after"))["result"] == {}
        run(body())
    finally:
        gateway.cleanup()


def test_a_shared_servers_stdin_pipe_is_widened_and_a_per_session_ones_is_not(
        tmp_path: Path) -> None:
    """A shared server, fed by every client, gets a 256 KiB stdin pipe; a per_session
    server (here the template every session's is made like) keeps the default, whose
    pages count against the user's pipe limit (upstream/process.py)."""
    gateway = GatewayProcess(tmp_path, {
        "own": {"command": ["python", BACKGROUND], "era": "legacy", "mode": "per_session"},
        "shared": {"command": ["python", BACKGROUND], "era": "legacy"}}, {})
    gateway.start(timeout=30)
    try:
        sizes = {}
        for name in ("own", "shared"):
            pid = gateway.upstream(name)["pid"]
            fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
            try:
                sizes[name] = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            finally:
                os.close(fd)
        assert sizes == {"own": 65536, "shared": STDIN_PIPE_SIZE}, sizes
    finally:
        gateway.cleanup()
