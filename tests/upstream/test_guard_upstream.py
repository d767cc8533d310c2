"""What the README promises about each stdio upstream, observed by the upstream itself
(``servers/recording_server.py``): the real time between restarts, the environment and
working directory it starts with, the cap on its message size, and how long the era
probe waits."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..conftest import GatewayProcess, Record, recording_upstream, run, wait_until, ws_client


def test_restart_backoff_doubles_in_real_time(gateway_factory: Any, tmp_path: Path) -> None:
    """The time from one exit to the next start: at least the backoff (0.5, 1, 2, then
    capped at 2 s), and not much more."""
    record = tmp_path / "restarts.jsonl"
    gw: GatewayProcess = gateway_factory(
        {"broken": recording_upstream(record, "broken", "--exit-at-start", "5",
                                      init_timeout=1.0, restart_backoff=0.5,
                                      restart_backoff_max=2.0)}, start=False)
    gw.start(wait_ready=False)
    rec = Record(record)
    rec.wait(lambda r: len(r.events("start")) >= 5, timeout=30, what="fifth start")
    starts = [e["t"] for e in rec.events("start")]
    exits = [e["t"] for e in rec.events("exit")]
    gaps = [round(start - end, 3) for end, start in zip(exits, starts[1:5], strict=False)]
    expected = [0.5, 1.0, 2.0, 2.0]
    assert len(gaps) == 4, gaps
    for gap, backoff in zip(gaps, expected, strict=True):
        # Each gap holds the sleep plus noticing the exit and starting Python.
        assert backoff <= gap < backoff + 1.5, (gaps, expected)
    assert "process exited with code 5" in gw.log()


def test_inherit_env_false_keeps_the_gateway_environment_out(gateway_factory: Any,
                                                            tmp_path: Path) -> None:
    """A variable of the gateway's environment reaches an upstream with inherit_env =
    true and not one with inherit_env = false; ``env`` reaches both."""
    hidden = {"GUARD_GATEWAY_ONLY": "from-the-gateway"}
    gateway_factory({
        "open": recording_upstream(tmp_path / "open.jsonl", "open", inherit_env=True,
                                   env={"GUARD_GIVEN": "given"}),
        "closed": recording_upstream(tmp_path / "closed.jsonl", "closed", inherit_env=False,
                                     env={"GUARD_GIVEN": "given"})}, env=hidden)
    (opened,) = Record(tmp_path / "open.jsonl").events("start")
    (closed,) = Record(tmp_path / "closed.jsonl").events("start")
    assert opened["env"]["GUARD_GATEWAY_ONLY"] == "from-the-gateway"
    # .get(): a failure shows this one value, not the whole environment.
    assert closed["env"].get("GUARD_GATEWAY_ONLY") is None
    assert opened["env"]["GUARD_GIVEN"] == closed["env"]["GUARD_GIVEN"] == "given"


def test_cwd_is_the_upstream_working_directory(gateway_factory: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "upstream-home"
    workdir.mkdir()
    gateway_factory({"rec": recording_upstream(tmp_path / "cwd.jsonl", cwd=str(workdir))})
    (start,) = Record(tmp_path / "cwd.jsonl").events("start")
    assert os.path.samefile(start["cwd"], workdir)
    assert not os.path.samefile(start["cwd"], os.getcwd())


def test_an_upstream_message_over_max_message_bytes_is_dropped_and_logged(
        gateway_factory: Any, tmp_path: Path) -> None:
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        tmp_path / "big.jsonl", max_message_bytes=4096, request_timeout=60.0)})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            fits = await c.call_tool("big", {"size": 3000})
            assert len(fits["result"]["content"][0]["text"]) == 3000
            # The answer is over the limit: dropped unread, but its beginning names the
            # request it answers, which fails now rather than at its time-out.
            started = time.monotonic()
            dropped = await c.call_tool("big", {"size": 5000}, timeout=30)
            assert dropped.get("error", {}).get("code") == -32603, str(dropped)[:300]
            assert "answered with a message over 4096 bytes" in dropped["error"]["message"]
            assert time.monotonic() - started < 20
            after = await c.call_tool("echo", {"text": "still here"})
            assert after["result"]["content"][0]["text"] == "still here"
    run(body())
    assert "dropped a message from the upstream over 4096 bytes" in gw.log()


def test_the_era_probe_waits_two_seconds_at_most(gateway_factory: Any, tmp_path: Path) -> None:
    """era = "auto" with a server that never answers server/discover: the gateway falls
    back to initialize after 2 s, although init_timeout is much longer."""
    record = Record(tmp_path / "probe.jsonl")
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        record.path, "rec", "--silent-discover", era="auto", init_timeout=10.0)})
    (start,) = record.events("start")
    (init,) = [e for e in record.events("recv")
               if e["message"].get("method") == "initialize"]
    # The probe is written after the process was created, and initialize 2 s after the
    # probe: so at least 2 s after the creation (known to a clock tick, 10 ms). The
    # probe's own arrival is no reference: the server reads it only once it has started,
    # which on a busy machine may be well after the gateway wrote it.
    assert start["spawned"] is not None
    waited = init["t"] - start["spawned"]
    assert 2.0 - 0.02 <= waited < 3.9, waited
    wait_until(lambda: gw.upstream("rec")["era"] == "legacy")


def test_an_upstream_error_during_initialization_is_reported_at_once(
        gateway_factory: Any, tmp_path: Path) -> None:
    """The upstream answers tools/list with an error: the start fails with that error
    (in /status), not with a time-out much later."""
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(
        tmp_path / "e.jsonl", "rec", "--fail", "tools/list", init_timeout=30.0,
        request_timeout=30.0, restart_backoff=30.0, restart_backoff_max=30.0)},
        start=False)
    gw.start(wait_ready=False)
    wait_until(lambda: gw.admin_get("/status", starting=True)[0] == 200
               and "refused by the test" in (gw.upstream("rec")["last_error"] or ""), 10)
    assert gw.upstream("rec")["ready"] is False
