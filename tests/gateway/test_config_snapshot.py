"""The config snapshot (``Gateway.use``): replaced as a whole, in one step, while sessions
stay connected. Hot reload (a later issue) will call it; here it is called directly, on
an in-process gateway fronting a real stdio upstream that counts the calls it gets."""

from __future__ import annotations

import json
from pathlib import Path

from mcpfast.config import load
from mcpfast.gateway.gateway import Gateway
from mcpfast.transport.tcp import TcpConnection

from ..conftest import (
    ROOT,
    InProcessClient,
    InProcessListener,
    Socket,
    forked,
    http_post,
    in_gateway,
    next_response,
    toml_value,
)

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]


def config_file(path: Path, extra: str = "", command: list[str] = BACKGROUND) -> Path:
    path.write_text(f"[listen]\nport = 0\n\n[upstreams.bg]\ncommand = {toml_value(command)}\n"
                    f'era = "legacy"\n\n{extra}')
    return path


async def counted(client: InProcessClient) -> dict[str, int]:
    answer = await client.call("count")
    return json.loads(answer["result"]["content"][0]["text"])  # type: ignore[no-any-return]


def test_a_new_snapshot_limits_a_session_that_was_already_open(tmp_path: Path) -> None:
    plain = config_file(tmp_path / "plain.toml")
    limited = config_file(tmp_path / "limited.toml",
                          '[[rate_limits]]\nrate = 0.001\nburst = 1\ntool = "big"\n')

    async def body(gw: Gateway, client: InProcessClient) -> None:
        for _ in range(3):
            assert "result" in await client.call("big")
        assert gw.use(load(str(limited))) == []
        assert "result" in await client.call("big")
        refused = await client.call("big")
        assert refused["error"]["code"] == -32029, refused
        # The refused call never reached the upstream: 3 before, 1 after.
        assert (await counted(client))["big"] == 4
        # Back to no limit: the chain is empty again.
        assert gw.use(load(str(plain))) == []
        assert gw.requests.checks == ()
        assert "result" in await client.call("big")
    in_gateway(plain, body)


def test_an_unchanged_limit_keeps_its_buckets(tmp_path: Path) -> None:
    limit = '[[rate_limits]]\nrate = 0.001\nburst = 1\ntool = "big"\n'
    first = config_file(tmp_path / "first.toml", limit)
    second = config_file(tmp_path / "second.toml", limit + "\n[limits]\nmax_in_flight = 7\n")

    async def body(gw: Gateway, client: InProcessClient) -> None:
        assert "result" in await client.call("big")
        before = gw.rate_limits[0]
        assert gw.use(load(str(second))) == []
        assert gw.rate_limits[0] is before
        assert gw.max_in_flight == 7
        # The bucket this session emptied is still empty under the new snapshot.
        assert (await client.call("big"))["error"]["code"] == -32029
    in_gateway(first, body)


def test_what_needs_a_restart_is_named_and_keeps_its_old_value(tmp_path: Path) -> None:
    base = config_file(tmp_path / "base.toml")
    moved = tmp_path / "moved.toml"
    moved.write_text(base.read_text().replace("port = 0", "port = 1")
                     + '\n[upstreams.new]\ncommand = ["python", "-c", "pass"]\n'
                     '\n[limits]\nmax_in_flight = 3\n'
                     '\n[tracing]\nenabled = true\n')

    async def body(gw: Gateway, client: InProcessClient) -> None:
        held = gw.use(load(str(moved)))
        assert held == ["tracing", "listen.port"]
        assert gw.config.listen.port == 0
        assert not gw.config.tracing.enabled and gw.tracing is None
        # Upstreams are no longer held: the new one is added (fleet.py).
        assert list(gw.config.upstreams) == ["bg", "new"] and "new" in gw.upstreams
        # The rest of the new snapshot is in force.
        assert gw.config.limits.max_in_flight == 3 and gw.max_in_flight == 3
        # With two upstreams, names are prefixed (routing.prefix = "always").
        assert "result" in await client.call("bg__big")
    in_gateway(base, body)


def test_the_http_endpoint_and_admission_take_a_new_snapshot(tmp_path: Path) -> None:
    """Transports read the snapshot in force: an Origin the old config refused is let in
    by the new one, and a tighter per-address cap refuses the next connection."""
    base = config_file(tmp_path / "base.toml")
    opened = config_file(tmp_path / "opened.toml",
                         '[listen.http]\nallowed_origins = ["http://app.example"]\n\n'
                         '[limits]\nmax_connections_per_peer = 1\n')
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "0"}}}

    async def body(gw: Gateway, client: InProcessClient) -> None:
        listener = InProcessListener(gw)
        first, socket = TcpConnection(gw, listener), Socket()  # type: ignore[arg-type]
        first.connection_made(socket)  # type: ignore[arg-type]
        first.data_received(http_post(initialize, Origin="http://app.example"))
        head, _ = await next_response(socket)
        assert head.startswith("HTTP/1.1 403 "), head
        assert gw.use(load(str(opened))) == []
        first.data_received(http_post(initialize, Origin="http://app.example"))
        head, _ = await next_response(socket)
        assert head.startswith("HTTP/1.1 200 "), head
        second, refused = TcpConnection(gw, listener), Socket()  # type: ignore[arg-type]
        second.connection_made(refused)  # type: ignore[arg-type]
        head, text = await next_response(refused)
        assert head.startswith("HTTP/1.1 503 ") and b"open from 127.0.0.1" in text, head
    in_gateway(base, body)


def test_an_upstream_removed_under_a_list_filtering_policy_takes_its_names_along(
        tmp_path: Path) -> None:
    """What each identity saw before the reload is read with the routes of before it: a
    removed upstream's names become unknown, and the names of those that stay reach
    them, not whatever upstream now has the removed one's place."""
    policy = '[[authorization.rules]]\ndeny_tools = ["nothing-matches-this"]\n'
    upstream = f'command = {toml_value(BACKGROUND)}\nera = "legacy"\n'
    two = tmp_path / "two.toml"
    two.write_text(f"[listen]\nport = 0\n\n{policy}\n[upstreams.a]\n{upstream}\n"
                   f"[upstreams.bg]\n{upstream}")
    one = config_file(tmp_path / "one.toml", policy)

    async def body(gw: Gateway, client: InProcessClient) -> None:
        for _ in range(2):
            assert "result" in await client.call("a__big")
        names = {tool["name"] for tool in
                 (await client.request("tools/list", {}))["result"]["tools"]}
        assert {"a__big", "bg__big"} <= names
        assert gw.use(load(str(one))) == []
        listed = await client.request("tools/list", {})
        assert {tool["name"] for tool in listed["result"]["tools"]} == \
            {name.split("__", 1)[1] for name in names if name.startswith("bg__")}
        # One upstream is left: its names are no longer prefixed. The "count" that
        # answers is bg's, which has served no call yet, not a's.
        assert await counted(client) == {"count": 1}
        unknown = await client.call("a__big")
        assert unknown["error"]["code"] == -32602, unknown
        assert "result" in await client.call("big")
    in_gateway(two, body)


def test_a_resource_a_reload_denies_sends_no_more_updates_to_its_subscribers(
        tmp_path: Path) -> None:
    """A session subscribed while it could read the resource: once a reload denies it,
    the session is told nothing more of it (nor of anything the policy hides)."""
    events = forked("events_server")
    plain = config_file(tmp_path / "plain.toml", command=events)
    denied = config_file(tmp_path / "denied.toml", '[[authorization.rules]]\n'
                         'deny_resources = ["test://secret"]\n', command=events)

    async def touched(client: InProcessClient, uri: str) -> list[str]:
        """The updates that came with ``touch``'s answer (the server sends its
        notification before it answers)."""
        client.received.clear()
        answer = await client.request("tools/call", {"name": "touch", "arguments": {"uri": uri}})
        assert "result" in answer, answer
        return [m["params"]["uri"] for m in client.received
                if m.get("method") == "notifications/resources/updated"]

    async def body(gw: Gateway, client: InProcessClient) -> None:
        for uri in ("test://secret", "test://open"):
            assert "result" in await client.request("resources/subscribe", {"uri": uri})
        assert await touched(client, "test://secret") == ["test://secret"]
        assert gw.use(load(str(denied))) == []
        assert await touched(client, "test://secret") == []
        assert await touched(client, "test://open") == ["test://open"]
    in_gateway(plain, body)
