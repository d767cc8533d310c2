"""SIGHUP: the config file is read again and, valid as a whole, put in force at once,
while clients keep calling and without dropping a connection; a config that does not
load is refused with its key path, and the one in force stays (server.py, Gateway.use).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from ..conftest import ROOT, GatewayProcess, run, unix_client, ws_client

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
            stopping = False

            async def calls(client: Any) -> None:
                while not stopping:
                    outcomes.append(outcome(await client.call_tool("bg__big", {"size": 1})))

            load = [asyncio.ensure_future(calls(client)) for client in (a, b)]
            while len(outcomes) < 50:
                await asyncio.sleep(0.01)
            reload(gw, base + ONE_TOKEN_FOR_ALL)
            await logged(gw, "reloaded")
            seen = len(outcomes)
            while len(outcomes) < seen + 50:
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
            assert set(outcomes[-40:]) == {-32029}
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
            reload(gw, base.replace('[upstreams.other]', '[upstreams.third]'))
            await logged(gw, "reloaded", 3)
            assert "upstreams apply after a restart" in gw.log()
            assert outcome(await a.call_tool("other__big", {"size": 1})) == "result"
    run(main())
    assert gw.proc is not None and gw.proc.poll() is None
