"""``workers = N`` (supervisor.py, admin/workers.py): N gateway processes behind one
supervisor, sharing the TCP port (SO_REUSEPORT) and the unix socket, each with its own
upstream processes; one admin port for all; reload, drain and restart across them.

Real processes on loopback. Which worker serves a connection is read from the admin
API (``/api/v1/connections`` names each session's worker), never guessed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import urllib.request
from collections import Counter
from typing import Any

import pytest
import websockets
from websockets.frames import Close

from .conftest import (
    ROOT,
    GatewayProcess,
    group_alive,
    http_headers,
    http_initialize,
    modern,
    modern_headers,
    run,
    unix_client,
    wait_until,
    ws_client,
)

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]
TOKEN = "workers-admin-token-0123456789"
ONE_TOKEN_FOR_ALL = ('\n[[rate_limits]]\nrate = 0.001\nburst = 1\nper = "global"\n'
                     'tool = "bg__big"\n')


def background(**extra: Any) -> dict[str, Any]:
    return {"command": BACKGROUND, "era": "legacy", **extra}


def start_workers(factory: Any, upstreams: dict[str, dict[str, Any]] | None = None,
                  workers: int = 2, **sections: dict[str, Any]) -> GatewayProcess:
    gw: GatewayProcess = factory(upstreams or {"bg": background()}, start=False, **sections)
    gw.config_path.write_text(f"workers = {workers}\n" + gw.config_path.read_text())
    return gw.start()


def admin(gw: GatewayProcess, method: str, path: str, token: str | None = TOKEN
          ) -> tuple[int, Any]:
    request = urllib.request.Request(gw.admin_url + path, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def worker_of_clients(gw: GatewayProcess, token: str | None = None) -> dict[str, int]:
    """Each open session's client name (from its initialize) → the worker serving it."""
    code, body = (admin(gw, "GET", "/api/v1/connections", token) if token else
                  (200, json.loads(gw.admin_get("/api/v1/connections")[1])))
    assert code == 200, body
    return {c["client"]["name"]: c["worker"] for c in body["connections"]
            if c.get("client")}


def worker_pids(gw: GatewayProcess) -> dict[int, int]:
    return {w["index"]: w["pid"] for w in gw.status()["workers"]}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not); ``group_alive`` for the
    upstreams, which lead process groups of their own."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def private_directory(gw: GatewayProcess) -> str:
    """Where the workers' admin sockets are (from a worker's command line)."""
    pid = next(iter(worker_pids(gw).values()))
    argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    return argv[argv.index("--worker-dir") + 1]


def upstream_pids(gw: GatewayProcess) -> dict[int, list[int]]:
    return {w["index"]: [u["pid"] for u in w["status"]["upstreams"]]
            for w in gw.status()["workers"]}


async def spread(gw: GatewayProcess, count: int, prefix: str = "c",
                 token: str | None = None) -> tuple[list[Any], list[Any], dict[str, int]]:
    """At least ``count`` initialized WebSocket clients, and at least one on each worker:
    the kernel spreads connections over the workers by their addresses, so ``count``
    of them may all land on one (a chance of 2**-(count-1)); then more are opened, up
    to 64 in all (2**-63). Returns the context managers, the clients, and which worker
    serves each client (by name)."""
    managers: list[Any] = []
    clients: list[Any] = []
    where: dict[str, int] = {}
    while len(clients) < count or set(where.values()) != {0, 1}:
        assert len(clients) < 64, where
        manager = ws_client(gw.ws_url)
        client = await manager.__aenter__()
        await client.initialize(clientInfo={"name": f"{prefix}{len(clients)}", "version": "0"})
        managers.append(manager)
        clients.append(client)
        if len(clients) >= count:
            where = worker_of_clients(gw, token)
    return managers, clients, where


async def close_all(managers: list[Any]) -> None:
    for manager in managers:
        try:
            await manager.__aexit__(None, None, None)
        except (OSError, websockets.ConnectionClosed):
            pass


def outcome(answer: dict[str, Any]) -> str | int:
    return "result" if "result" in answer else int(answer["error"]["code"])


def test_two_workers_serve_websocket_unix_and_streamable_http(gateway_factory: Any) -> None:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    gw = start_workers(gateway_factory)
    status = gw.status()
    assert [w["state"] for w in status["workers"]] == ["running", "running"]
    pids = {w["pid"] for w in status["workers"]}
    assert len(pids) == 2 and gw.pid not in pids
    # Each worker has an upstream process of its own.
    assert len({pid for pids in upstream_pids(gw).values() for pid in pids}) == 2

    async def body() -> None:
        managers, clients, where = await spread(gw, 12)
        try:
            answers = await asyncio.gather(*(c.call_tool("big", {"size": 3})
                                             for c in clients))
            assert [outcome(a) for a in answers] == ["result"] * len(clients)
            assert gw.status()["connections"]["open"] == len(clients)
            by_worker = Counter(where.values())
            opened = {w["index"]: w["status"]["connections"]["open"]
                      for w in gw.status()["workers"]}
            assert opened == dict(by_worker)
        finally:
            await close_all(managers)

        # The unix socket, bound once by the supervisor, accepted by the workers.
        async with unix_client(gw.unix_path) as u1, unix_client(gw.unix_path) as u2:
            for client in (u1, u2):
                await client.initialize()
                assert outcome(await client.call_tool("big", {"size": 1})) == "result"
        assert os.stat(gw.unix_path).st_mode & 0o777 == 0o660

        # Legacy Streamable HTTP through the official SDK: concurrent calls open
        # several connections, which land on either worker; each serves the session
        # another signed (they share one random secret).
        async def sdk_session(n: int) -> list[str]:
            async with Client(streamable_http_client(gw.http_url), mode="legacy") as sdk:
                results = await asyncio.gather(*(
                    sdk.call_tool("slow", {"seconds": 0.2}) for _ in range(6)))
                return [r.content[0].text for r in results]  # type: ignore[union-attr]
        texts = await asyncio.gather(*(sdk_session(n) for n in range(3)))
        assert [t for session in texts for t in session] == ["slow done"] * 18

        # Modern (2026-07-28): every request stands alone.
        import aiohttp
        async with aiohttp.ClientSession() as http:
            for i in range(8):
                call = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                        "params": modern({"name": "big", "arguments": {"size": 2}})}
                async with aiohttp.ClientSession() as fresh, fresh.post(
                        gw.http_url, json=call,
                        headers=modern_headers("tools/call", "big")) as resp:
                    assert resp.status == 200, await resp.text()
                    assert "result" in json.loads(await resp.read())
            # A legacy session opened with aiohttp, its requests on new connections.
            session_id = await http_initialize(http, gw.http_url)
            for i in range(6):
                call = {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                        "params": {"name": "big", "arguments": {"size": 1}}}
                async with aiohttp.ClientSession() as fresh, fresh.post(
                        gw.http_url, json=call, headers=http_headers(session_id)) as resp:
                    assert resp.status == 200, await resp.text()
    run(body(), 120)
    # A worker served a session that the other one opened: the shared secret at work.
    assert "adopted an HTTP session signed by another replica" in gw.log()
    assert "worker 0 mcpfast" in gw.log() and "worker 1 mcpfast" in gw.log()
    assert gw.terminate() == 0


def test_metrics_are_one_exposition_labelled_by_worker(gateway_factory: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    gw = start_workers(gateway_factory)
    calls = 30

    async def body() -> dict[str, int]:
        managers, clients, where = await spread(gw, 10)
        try:
            for i in range(calls):
                assert outcome(await clients[i % 10].call_tool("big", {"size": 1})) \
                    == "result"
        finally:
            await close_all(managers)
        return where
    where = run(body())
    per_worker = Counter(where[f"c{i % 10}"] for i in range(calls))

    code, raw = gw.admin_get("/metrics")
    assert code == 200
    text = raw.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # HELP and TYPE once per family.
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    supervisor = {"mcpfast_workers", "mcpfast_worker_up", "mcpfast_worker_restarts"}
    for name, family in families.items():
        for sample in family.samples:
            if name not in supervisor:
                assert sample.labels.get("worker") in ("0", "1"), (name, sample)
    answered = Counter()
    for sample in families["mcpfast_tool_requests"].samples:
        if sample.labels["tool"] == "big" and sample.labels["outcome"] == "answered":
            answered[int(sample.labels["worker"])] += int(sample.value)
    assert answered == per_worker and sum(answered.values()) == calls
    assert [s.value for s in families["mcpfast_workers"].samples] == [2]
    assert {s.labels["worker"]: s.value for s in families["mcpfast_worker_up"].samples} \
        == {"0": 1, "1": 1}
    assert {s.labels["worker"]: s.value
            for s in families["mcpfast_worker_restarts"].samples} == {"0": 0, "1": 0}
    opened = sum(s.value for s in families["mcpfast_connections"].samples
                 if s.labels["transport"] == "websocket")
    assert opened == len(where)
    # Status totals are sums over the workers too.
    status = gw.status()
    assert status["connections"]["total"] == sum(
        w["status"]["connections"]["total"] for w in status["workers"]) >= 10


def test_a_killed_worker_is_restarted_while_the_other_serves(gateway_factory: Any) -> None:
    gw = start_workers(gateway_factory)
    before = worker_pids(gw)
    upstreams_before = upstream_pids(gw)

    async def body() -> None:
        managers, clients, where = await spread(gw, 8)
        victim = 0
        survivor = next(c for i, c in enumerate(clients) if where[f"c{i}"] == 1)
        answers: list[str | int] = []
        killed = asyncio.Event()
        restarted = asyncio.Event()

        async def keep_calling() -> None:
            while not restarted.is_set() or len(answers) < 20:
                answers.append(outcome(await survivor.call_tool("big", {"size": 1})))
                if killed.is_set():
                    await asyncio.sleep(0.01)
        calling = asyncio.ensure_future(keep_calling())
        while len(answers) < 10:
            await asyncio.sleep(0.01)
        os.kill(before[victim], signal.SIGKILL)
        killed.set()

        def back() -> bool:
            worker = gw.status()["workers"][victim]
            return worker["restarts"] == 1 and worker["state"] == "running" and \
                worker["pid"] != before[victim]
        await asyncio.to_thread(wait_until, back, 30)
        restarted.set()
        await calling
        assert set(answers) == {"result"}, Counter(answers)
        # The clients of the killed worker lost their connection.
        for i, client in enumerate(clients):
            if where[f"c{i}"] == victim:
                with pytest.raises((AssertionError, websockets.ConnectionClosed)):
                    await client.call_tool("big", {"size": 1}, timeout=5)
        await close_all(managers)
        # New connections are served, by both workers again.
        managers, clients, _ = await spread(gw, 10, prefix="n")
        try:
            answers = [outcome(a) for a in await asyncio.gather(
                *(c.call_tool("big", {"size": 1}) for c in clients))]
            assert answers == ["result"] * len(clients)
        finally:
            await close_all(managers)
    run(body(), 120)
    after = worker_pids(gw)
    assert after[1] == before[1] and after[0] != before[0]
    # The killed worker's upstream process did not outlive it; the new one has its own.
    for pid in upstreams_before[0]:
        wait_until(lambda pid=pid: not group_alive(pid), 10)
    assert upstream_pids(gw)[0] != upstreams_before[0]
    assert f"worker 0 (pid {before[0]}) exited unasked with signal SIGKILL" in gw.log()
    _, raw = gw.admin_get("/metrics")
    assert 'mcpfast_worker_restarts_total{worker="0"} 1.0' in raw.decode()


def test_sighup_applies_a_new_rate_limit_in_every_worker(gateway_factory: Any) -> None:
    gw = start_workers(gateway_factory, {"bg": background(), "other": background()})
    base = gw.config_path.read_text()

    async def body() -> None:
        managers, clients, where = await spread(gw, 10)
        try:
            for client in clients:
                assert outcome(await client.call_tool("bg__big", {"size": 1})) == "result"
            gw.config_path.write_text(base + ONE_TOKEN_FOR_ALL)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: all(
                f"worker {i} mcpfast: reloaded" in gw.log() for i in (0, 1)), 30)
            # A global limit is per worker: each has its one token.
            outcomes = [outcome(await c.call_tool("bg__big", {"size": 1}))
                        for c in clients for _ in range(2)]
            assert Counter(outcomes) == {-32029: 18, "result": 2}, Counter(outcomes)
            refused_on = {where[f"c{i // 2}"] for i, o in enumerate(outcomes)
                          if o == -32029}
            assert refused_on == {0, 1}
            assert {outcome(await c.call_tool("other__big", {"size": 1}))
                    for c in clients} == {"result"}

            # A config that does not load is refused by the supervisor, with its key
            # path; the workers keep the one in force.
            gw.config_path.write_text(base + ONE_TOKEN_FOR_ALL +
                                      '\n[limits]\nmax_in_flight = "many"\n')
            gw.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: "reload refused" in gw.log(), 30)
            assert "mcpfast.supervisor: reload refused, the config in force stays: " \
                "limits.max_in_flight: expected int, got str" in gw.log()
            assert {outcome(await c.call_tool("bg__big", {"size": 1}))
                    for c in clients} == {-32029}
            assert gw.log().count("mcpfast: reloaded") == 2

            # workers itself waits for a restart.
            gw.config_path.write_text(base.replace("workers = 2", "workers = 3"))
            gw.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: gw.log().count(
                "mcpfast: reloaded") == 4, 30)
            assert "workers changed (2 to 3) and will apply after a restart" in gw.log()
            assert len(gw.status()["workers"]) == 2
            assert {outcome(await c.call_tool("bg__big", {"size": 1}))
                    for c in clients} == {"result"}
        finally:
            await close_all(managers)
    run(body(), 120)


def test_sigterm_drains_every_worker_then_exits_0(gateway_factory: Any) -> None:
    gw = start_workers(gateway_factory, shutdown={"drain_timeout": 10.0})
    pids = list(worker_pids(gw).values())
    upstreams = [pid for each in upstream_pids(gw).values() for pid in each]
    directory = private_directory(gw)
    assert os.stat(directory).st_mode & 0o777 == 0o700

    async def body() -> None:
        managers, clients, _ = await spread(gw, 8)
        try:
            for i, client in enumerate(clients):
                await client.start_call("slow", {"seconds": 1.5}, 100 + i)
            await asyncio.to_thread(wait_until,
                                    lambda: gw.status()["in_flight"] == len(clients), 10)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            for i, client in enumerate(clients):
                answer = await client.wait_for(100 + i, timeout=20)
                assert answer["result"]["content"][0]["text"] == "slow done"
            for client in clients:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(client.ws.recv(), 20)
                assert closed.value.rcvd == Close(1001, "gateway shutting down")
        finally:
            await close_all(managers)
    run(body(), 120)
    assert gw.proc is not None and gw.proc.wait(30) == 0
    for pid in pids:
        assert not alive(pid), pid
    for pid in upstreams:
        assert not group_alive(pid), pid
    assert not os.path.exists(gw.unix_path) and not os.path.exists(directory)
    log = gw.log()
    assert "worker 0 mcpfast: stopped" in log and "worker 1 mcpfast: stopped" in log
    assert log.rstrip().endswith("mcpfast.supervisor: stopped")


def test_admin_writes_reach_every_worker_and_a_restarted_one(gateway_factory: Any) -> None:
    gw = start_workers(gateway_factory, {"bg": background(), "other": background()},
                       admin={"token": TOKEN})
    assert admin(gw, "GET", "/status", token=None)[0] == 401
    assert admin(gw, "GET", "/status", token="wrong-token-0123456789")[0] == 401
    assert gw.admin_get("/readiness")[0] == 200  # the probes stay open
    code, drained = admin(gw, "POST", "/api/v1/upstreams/other/drain")
    assert code == 200 and drained["drained"] is True
    assert [w["status"] for w in drained["workers"]] == [200, 200]
    assert admin(gw, "POST", "/api/v1/upstreams/nothing/drain")[0] == 404

    async def calls(prefix: str) -> set[tuple[int, str | int]]:
        """(worker, outcome) of a call to the drained upstream from each of 10 clients
        spread over the workers."""
        managers, clients, where = await spread(gw, 10, prefix, TOKEN)
        seen: set[tuple[int, str | int]] = set()
        try:
            for i, client in enumerate(clients):
                seen.add((where[f"{prefix}{i}"],
                          outcome(await client.call_tool("other__big", {"size": 1}))))
                assert outcome(await client.call_tool("bg__big", {"size": 1})) == "result"
        finally:
            await close_all(managers)
        return seen

    assert run(calls("a")) == {(0, -32000), (1, -32000)}
    code, disabled = admin(gw, "POST", "/api/v1/tools/bg__count/disable")
    assert code == 200 and [w["status"] for w in disabled["workers"]] == [200, 200]

    async def disabled_calls(prefix: str) -> set[tuple[int, str | int]]:
        """(worker, outcome) of a call to the disabled tool from each of 10 clients."""
        managers, clients, where = await spread(gw, 10, prefix, TOKEN)
        try:
            return {(where[f"{prefix}{i}"], outcome(await client.call_tool("bg__count", {})))
                    for i, client in enumerate(clients)}
        finally:
            await close_all(managers)

    assert run(disabled_calls("d")) == {(0, -32602), (1, -32602)}
    before = {w["index"]: w["pid"] for w in admin(gw, "GET", "/status")[1]["workers"]}
    os.kill(before[1], signal.SIGKILL)

    def back() -> bool:
        worker = admin(gw, "GET", "/status")[1]["workers"][1]
        return worker["state"] == "running" and worker["pid"] != before[1]
    wait_until(back, 30)
    wait_until(lambda: "worker 1: replayed /api/v1/upstreams/other/drain" in gw.log())
    assert run(calls("b")) == {(0, -32000), (1, -32000)}
    # The restarted worker took the disabled tool before its upstream listed it.
    assert "worker 1: replayed /api/v1/tools/bg__count/disable (HTTP 200)" in gw.log()
    assert run(disabled_calls("e")) == {(0, -32602), (1, -32602)}
    assert admin(gw, "POST", "/api/v1/tools/bg__count/enable")[0] == 200
    code, _ = admin(gw, "POST", "/api/v1/upstreams/other/undrain")
    assert code == 200
    assert run(calls("c")) == {(0, "result"), (1, "result")}

    # A session is closed by the worker that holds it.
    async def close_one() -> None:
        async with ws_client(gw.ws_url) as client:
            await client.initialize(clientInfo={"name": "closing", "version": "0"})
            code, listing = admin(gw, "GET", "/api/v1/connections")
            (session,) = [c for c in listing["connections"]
                          if c["client"]["name"] == "closing"]
            code, closed = admin(gw, "DELETE", f"/api/v1/sessions/{session['id']}")
            assert code == 200 and closed["worker"] == session["worker"]
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(client.ws.recv(), 10)
    run(close_one())
    assert admin(gw, "DELETE", "/api/v1/sessions/1-1")[0] == 404

    # A reload over the admin API: the supervisor rereads, then every worker.
    code, reloaded = admin(gw, "POST", "/api/v1/reload")
    assert code == 200 and [w["status"] for w in reloaded["workers"]] == [200, 200]
    assert admin(gw, "GET", "/api/v1/openapi.json")[0] == 200
    # The dashboard is worker 0's, passed through.
    status, page = gw.admin_get("/dashboard/")
    assert status == 200 and b"<html" in page.lower()


def test_workers_end_with_a_killed_supervisor(gateway_factory: Any) -> None:
    """However the supervisor dies, its workers drain and end, with their upstreams, and
    leave no socket behind."""
    gw = start_workers(gateway_factory)
    pids = list(worker_pids(gw).values())
    upstreams = [pid for each in upstream_pids(gw).values() for pid in each]
    directory = private_directory(gw)
    assert gw.proc is not None
    gw.proc.kill()
    for pid in pids:
        wait_until(lambda pid=pid: not alive(pid), 30)
    for pid in upstreams:
        wait_until(lambda pid=pid: not group_alive(pid), 30)
    assert not os.path.exists(directory)
    assert "worker 0 mcpfast: stopped" in gw.log() and "worker 1 mcpfast: stopped" in gw.log()


def test_a_reload_while_workers_start_waits_for_them(gateway_factory: Any) -> None:
    """SIGHUP before a worker has its handler would end it: the supervisor sends it once
    the worker listens."""
    gw: GatewayProcess = gateway_factory({"bg": background()}, start=False)
    gw.config_path.write_text("workers = 2\n" + gw.config_path.read_text())
    gw.start(wait_ready=False)
    wait_until(lambda: "worker 1 started" in gw.log())
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_ready()
    wait_until(lambda: all(f"worker {i} mcpfast: reloaded" in gw.log() for i in (0, 1)))
    assert [(w["state"], w["restarts"]) for w in gw.status()["workers"]] == \
        [("running", 0), ("running", 0)]


def test_orphans_are_not_ended_while_a_worker_is_being_started(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker being started is a child of the supervisor that ``workers`` does not
    list yet: the ending of a crashed worker's orphans waits until it is listed, so that
    it is not taken for one of them (``Supervisor.children``)."""
    from mcpfast import supervisor as supervisor_module
    from mcpfast.config import parse

    config = parse('workers = 2\n[upstreams.x]\ncommand = ["true"]\n')
    sweeps: list[list[int]] = []

    class Process:
        def __init__(self, pid: int, ends: asyncio.Event) -> None:
            self.pid, self.ends, self.returncode = pid, ends, None

        async def wait(self) -> int:
            await self.ends.wait()
            self.returncode = 1
            return 1

    async def main() -> None:
        sup = supervisor_module.Supervisor(config, lambda: config, ["serve"])
        first, second = sup.workers
        second.restarts = 1  # it ran before: its exit restarts it
        crash, never, spawning, spawned = (asyncio.Event() for _ in range(4))

        async def create_subprocess_exec(*argv: str, **_: Any) -> Process:
            if argv[argv.index("--worker") + 1] == "0":
                spawning.set()
                await spawned.wait()  # a child already, not listed yet
                return Process(1000, never)
            return Process(1001, crash)

        async def reap_orphans(grace: float = 1.0, keep: Any = ()) -> list[int]:
            sweeps.append(sorted(keep))
            return []

        monkeypatch.setattr(supervisor_module.asyncio, "create_subprocess_exec",
                            create_subprocess_exec)
        monkeypatch.setattr(supervisor_module, "reap_orphans", reap_orphans)
        try:
            keeps = [asyncio.create_task(sup._keep(second))]
            while second.pid is None:
                await asyncio.sleep(0)
            keeps.append(asyncio.create_task(sup._keep(first)))
            await spawning.wait()
            crash.set()  # the second worker crashes while the first is being started
            for _ in range(100):
                await asyncio.sleep(0)
            assert sweeps == [], "orphans ended while a worker was being started"
            spawned.set()
            async with asyncio.timeout(10):
                while not sweeps:
                    await asyncio.sleep(0.01)
            assert sweeps == [[1000]]
        finally:
            sup.stop.set()
            for task in keeps:
                task.cancel()
            await asyncio.gather(*keeps, return_exceptions=True)
            for worker in sup.workers:
                await worker.admin.close()
            shutil.rmtree(sup.directory, ignore_errors=True)
    asyncio.run(main())
