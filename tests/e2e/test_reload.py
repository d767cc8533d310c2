"""SIGHUP: the config file is read again and, valid as a whole, put in force at once,
while clients keep calling and without dropping a connection; a config that does not
load is refused with its key path, and the one in force stays (server.py, Gateway.use).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest

from ..conftest import (
    ROOT,
    GatewayProcess,
    collect,
    free_port,
    run,
    unix_client,
    wait_until,
    ws_client,
)

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]
ONE_TOKEN_FOR_ALL = ('\n[[rate_limits]]\nrate = 0.001\nburst = 1\nper = "global"\n'
                     'tool = "bg__big"\n')


def outcome(answer: dict[str, Any]) -> str | int:
    return "result" if "result" in answer else int(answer["error"]["code"])


async def logged(gw: GatewayProcess, text: str, times: int = 1) -> None:
    """Wait (up to 30 s, for a busy machine) until the log holds ``text`` ``times``."""
    for _ in range(600):
        if gw.log().count(text) >= times:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} was not logged {times} time(s):\n{gw.log()[-2000:]}")


def reload(gw: GatewayProcess, text: str) -> None:
    gw.config_path.write_text(text)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)


def test_sighup_puts_a_new_config_in_force_under_load(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"},
                                          "other": {"command": BACKGROUND, "era": "legacy"}})
    base = gw.config_path.read_text()

    async def main() -> None:
        async with ws_client(gw.ws_url) as a, ws_client(gw.ws_url) as b, \
                unix_client(gw.unix_path) as idle:
            for client in (a, b, idle):
                await client.initialize()
            outcomes: list[str | int] = []
            by_client: dict[int, list[str | int]] = {id(a): [], id(b): []}
            stopping = False

            async def calls(client: Any) -> None:
                while not stopping:
                    answer = outcome(await client.call_tool("bg__big", {"size": 1}))
                    outcomes.append(answer)
                    by_client[id(client)].append(answer)

            load = [asyncio.ensure_future(calls(client)) for client in (a, b)]
            while len(outcomes) < 50:
                await asyncio.sleep(0.01)
            reload(gw, base + ONE_TOKEN_FOR_ALL)
            await logged(gw, "reloaded")
            seen = len(outcomes)
            seen_by = {key: len(mine) for key, mine in by_client.items()}
            # Refusals come at once and answers at the upstream's pace: wait for 50 more
            # outcomes, and for a few calls of each client made under the new config
            # (on a busy machine one client's 50 refusals can come before the other's
            # call in flight is answered).
            while len(outcomes) < seen + 50 or \
                    any(len(mine) < seen_by[key] + 3 for key, mine in by_client.items()):
                await asyncio.sleep(0.01)
            stopping = True
            await asyncio.gather(*load)

            # Every call was answered, and no connection dropped: results until the
            # reload; then refusals, but for the one token the new limit has for everyone
            # and the call each client had in flight as it came (answers are recorded as
            # they arrive, so those may land after the first refusal).
            assert set(outcomes) == {"result", -32029}, set(outcomes)
            first_refusal = outcomes.index(-32029)
            assert first_refusal >= 50
            assert outcomes[first_refusal:].count("result") <= 3
            # Each client calls one at a time: once refused, it is refused from then on
            # (the one token is gone). Across clients, an answer the upstream was slow to
            # give may land after the other client's refusals, however many.
            for mine in by_client.values():
                assert -32029 in mine
                assert set(mine[mine.index(-32029):]) == {-32029}, mine
            # A session idle through the reload is under the new limit too.
            assert outcome(await idle.call_tool("bg__big", {"size": 1})) == -32029
            assert outcome(await idle.call_tool("other__big", {"size": 1})) == "result"

            # A config that does not load is refused with its key path, and the one in
            # force stays.
            reload(gw, base + ONE_TOKEN_FOR_ALL + '\n[limits]\nmax_in_flight = "many"\n')
            await logged(gw, "reload refused")
            assert "limits.max_in_flight: expected int, got str" in gw.log()
            assert outcome(await a.call_tool("bg__big", {"size": 1})) == -32029

            # And back: no limit at all.
            reload(gw, base)
            await logged(gw, "reloaded", 2)
            assert outcome(await b.call_tool("bg__big", {"size": 1})) == "result"

            # What the process was built from is named, and keeps its value.
            reload(gw, base + '\n[routing]\nseparator = "--"\n')
            await logged(gw, "reloaded", 3)
            assert "config: routing changed and will apply after a restart" in gw.log()
            assert outcome(await a.call_tool("other__big", {"size": 1})) == "result"
    run(main())
    assert gw.proc is not None and gw.proc.poll() is None


def test_reload_adds_removes_and_replaces_upstreams_without_a_dropped_call(
        gateway_factory: Any) -> None:
    """Upstreams as a reload changes them: one removed while a call of its runs (the
    call finishes, its names go), one added (its names come, sessions are told), and one
    replaced (a new process; calls go on throughout, every one answered)."""
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"},
                                          "other": {"command": BACKGROUND, "era": "legacy"}})
    base = gw.config_path.read_text()

    async def main() -> None:
        async with ws_client(gw.ws_url) as a, ws_client(gw.ws_url) as watcher:
            await a.initialize()
            await watcher.initialize()
            pid_before = next(u["pid"] for u in gw.status()["upstreams"] if u["name"] == "bg")
            outcomes: list[str | int] = []
            stopping = False

            async def calls() -> None:
                while not stopping:
                    outcomes.append(outcome(await a.call_tool("bg__big", {"size": 1})))

            load = asyncio.ensure_future(calls())
            slow = asyncio.ensure_future(watcher.call_tool("other__slow", {"seconds": 1.5}))
            while len(outcomes) < 20:
                await asyncio.sleep(0.01)
            changed = base.replace("[upstreams.other]", "[upstreams.third]").replace(
                '[upstreams.bg]\n', '[upstreams.bg]\nenv = { REPLACED = "1" }\n')
            reload(gw, changed)
            await logged(gw, "upstreams other removed, bg replaced, third added")
            await logged(gw, "upstream 'bg': the new instance serves from now on")
            await logged(gw, "upstream 'other' stopped")
            seen = len(outcomes)
            while len(outcomes) < seen + 20:
                await asyncio.sleep(0.01)
            stopping = True
            await load
            # Every call to the replaced upstream was answered, before, during and after.
            assert set(outcomes) == {"result"}, set(outcomes)
            # The removed one's call in flight finished; its names are gone.
            assert outcome(await slow) == "result"
            assert outcome(await a.call_tool("other__big", {"size": 1})) == -32602
            # The added one answers once it is ready.
            for _ in range(300):
                if outcome(await a.call_tool("third__big", {"size": 1})) == "result":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("third never answered")
            assert any(m.get("method") == "notifications/tools/list_changed"
                       for m in watcher.notifications + await collect(watcher, 0.5))
            upstreams = {u["name"]: u for u in gw.status()["upstreams"]}
            assert set(upstreams) == {"bg", "third"}
            assert upstreams["bg"]["pid"] != pid_before
    run(main())
    assert gw.proc is not None and gw.proc.poll() is None


def test_reload_moves_the_listeners(gateway_factory: Any, tmp_path: Any) -> None:
    """A new port and a new unix socket path: bound at the reload; the old ones take no
    new connection, and a connection opened before goes on."""
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"}})
    base = gw.config_path.read_text()
    new_port = free_port()
    new_path = str(gw.unix_dir / "moved.sock")

    async def main() -> None:
        async with ws_client(gw.ws_url) as kept:
            await kept.initialize()
            reload(gw, base.replace(f"port = {gw.port}\n", f"port = {new_port}\n").replace(
                json.dumps(gw.unix_path), json.dumps(new_path)))
            await logged(gw, "listener moved from")
            await logged(gw, "unix-socket listener moved")
            async with ws_client(f"ws://127.0.0.1:{new_port}/mcp") as moved:
                await moved.initialize()
                assert outcome(await moved.call_tool("big", {"size": 1})) == "result"
            async with unix_client(new_path) as over_unix:
                await over_unix.initialize()
                assert outcome(await over_unix.call_tool("big", {"size": 1})) == "result"
            with pytest.raises(OSError):
                async with ws_client(gw.ws_url):
                    pass
            assert not os.path.exists(gw.unix_path)
            # Opened before the move, still served.
            assert outcome(await kept.call_tool("big", {"size": 1})) == "result"
            # The old listener is shown while a connection holds it...
            shown = [(entry["kind"], entry["accepting"]) for entry in gw.status()["listeners"]]
            assert shown.count(("websocket", False)) == 1, shown
        # ... and not once none does (an outside sweep found each move's listener kept
        # in /status for good).
        wait_until(lambda: ("websocket", False) not in [
            (entry["kind"], entry["accepting"]) for entry in gw.status()["listeners"]])
        shown = [(entry["kind"], entry["accepting"]) for entry in gw.status()["listeners"]]
        assert shown.count(("websocket", True)) == 1 and ("unix", True) in shown, shown
    run(main())
    assert "apply after a restart" not in gw.log()


def test_a_reload_that_changes_what_a_client_may_see_tells_it(gateway_factory: Any) -> None:
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"}})
    base = gw.config_path.read_text()

    def changed(messages: list[dict[str, Any]]) -> bool:
        return any(m.get("method") == "notifications/tools/list_changed" for m in messages)

    async def main() -> None:
        async with ws_client(gw.ws_url) as client:
            await client.initialize()
            reload(gw, base + '\n[limits]\nmax_in_flight = 9\n')  # nothing it sees
            await logged(gw, "reloaded")
            assert not changed(await collect(client, 0.5))
            reload(gw, base + '\n[[authorization.rules]]\ndeny_tools = ["count"]\n')
            await logged(gw, "reloaded", 2)
            assert changed(client.notifications + await collect(client, 2.0))
            listed = await client.request("tools/list", {})
            assert "count" not in {t["name"] for t in listed["result"]["tools"]}
    run(main())


def test_a_reload_changes_the_idle_timeout(gateway_factory: Any) -> None:
    """``listen.idle_timeout`` is read at every sweep, so a reload's new value applies
    to the sessions open and to come; a client that does not answer the close frame is
    closed once (logged once), not again at every sweep until its connection ends."""
    gw: GatewayProcess = gateway_factory({"bg": {"command": BACKGROUND, "era": "legacy"}},
                                         listen={"idle_timeout": 600})
    base = gw.config_path.read_text()
    assert "idle_timeout = 600" in base

    async def main() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Sec-WebSocket-Protocol: mcp\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            assert head.startswith(b"HTTP/1.1 101 "), head
            reload(gw, base.replace("idle_timeout = 600", "idle_timeout = 1"))
            await logged(gw, "reloaded")
            # Silent from here on, and deaf to the close frame: the gateway closes the
            # connection itself once CLOSE_TIMEOUT (5 s) has passed.
            await logged(gw, "closing idle session")
            frame = await asyncio.wait_for(reader.read(2 + 2 + len("idle timeout")), 30)
            assert frame[:1] == b"\x88" and b"idle timeout" in frame, frame
            assert await asyncio.wait_for(reader.read(), 30) == b""
            assert gw.log().count("closing idle session") == 1, gw.log()[-3000:]
        finally:
            writer.close()
    run(main())
