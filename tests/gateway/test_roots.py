"""A client's ``notifications/roots/list_changed`` (client/roots: a client that declares
``roots.listChanged`` MUST send it when its roots change). The gateway declares that
capability to every legacy server, so it passes the notification on to each server
whose ``roots/list`` requests would reach that client (README, "Whose message is it?"):
one only it has used since the server started, and its own under ``per_session``; a
server other clients use too is not told, as it could not ask whose roots changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..conftest import GatewayProcess, Record, recording_upstream, run, unix_client, ws_client

CHANGED = "notifications/roots/list_changed"


def test_a_client_s_roots_change_reaches_the_servers_whose_requests_are_its(
        gateway_factory: Any, tmp_path: Path) -> None:
    mine, shared, own = (Record(tmp_path / f"{name}.jsonl")
                         for name in ("mine", "shared", "own"))
    gw: GatewayProcess = gateway_factory({
        "mine": recording_upstream(mine.path, "mine"),
        "shared": recording_upstream(shared.path, "shared"),
        "own": recording_upstream(own.path, "own", mode="per_session")})

    def told(record: Record) -> list[int]:
        """The pids of the processes the notification reached, in order."""
        return [e["pid"] for e in record.events("recv")
                if e["message"].get("method") == CHANGED]

    def pid_of(record: Record, text: str) -> int:
        """The pid of the process that echoed ``text``."""
        (pid,) = {e["pid"] for e in record.events("recv")
                  if e["message"].get("params", {}).get("arguments", {}).get("text") == text}
        return int(pid)

    async def echo(client: Any, tool: str, text: str = "x") -> None:
        """A round trip: what the gateway wrote to the server before it is recorded
        once the answer is back."""
        answer = await client.call_tool(tool, {"text": text})
        assert answer["result"]["content"][0]["text"] == text, answer

    async def body() -> None:
        async with ws_client(gw.ws_url) as a, unix_client(gw.unix_path) as b:
            for client in (a, b):
                await client.initialize()
            await echo(a, "mine__echo")
            for client, text in ((a, "a"), (b, "b")):
                await echo(client, "shared__echo")
                await echo(client, "own__echo", text)
            a_own, b_own = pid_of(own, "a"), pid_of(own, "b")
            assert a_own != b_own

            await a.notify(CHANGED)
            for tool in ("mine__echo", "shared__echo", "own__echo"):
                await echo(a, tool)
            await echo(b, "own__echo")
            assert len(told(mine)) == 1
            assert told(own) == [a_own]
            assert told(shared) == []  # a and b both use it

            await b.notify(CHANGED)
            for tool in ("mine__echo", "shared__echo", "own__echo"):
                await echo(b, tool)
            await echo(a, "own__echo")
            assert len(told(mine)) == 1  # b never used it
            assert told(own) == [a_own, b_own]
            assert told(shared) == []
    run(body())
