"""Every end of a forwarded request passes through one place (``Gateway.ended``): the
answer, an error answer, the time-out, the client's cancel, the upstream's death and a
policy's refusal. Observed on an in-process gateway fronting a real stdio upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mcpfast.gateway.call import (
    ANSWERED,
    CANCELLED,
    ERRORED,
    FAILED,
    OUTCOMES,
    REFUSED,
    TIMED_OUT,
)

from ..conftest import ROOT, InProcessClient, in_gateway, toml_value

BACKGROUND = ["python", str(ROOT / "tests" / "servers" / "background_server.py")]


def test_each_end_is_told_once_with_the_request(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"[upstreams.bg]\ncommand = {toml_value(BACKGROUND)}\n"
                      'era = "legacy"\nrequest_timeout = 3.0\n\n'
                      '[[rate_limits]]\nrate = 0.001\nburst = 1\ntool = "count"\n')
    ends: list[tuple[str, str, str | None, int | str, int]] = []

    def observe(upstream: Any, pending: Any, outcome: int) -> None:
        assert pending.started > 0
        if outcome != REFUSED:  # a refused request was never sent: it has no deadline
            assert pending.deadline > pending.started
        ends.append((upstream.name, pending.method, pending.name, pending.id, outcome))

    async def call(client: InProcessClient, name: str, **arguments: Any) -> dict[str, Any]:
        return await client.request("tools/call", {"name": name, "arguments": arguments})

    async def body(gw: Any, client: InProcessClient) -> None:
        gw.observers = (observe,)
        assert "result" in await call(client, "big", size=1)
        assert (await call(client, "fail"))["error"]["message"] == "fail fails"
        assert (await call(client, "slow", seconds=60))["error"]["code"] == -32001
        assert "result" in await call(client, "count")
        assert (await call(client, "count"))["error"]["code"] == -32029
        assert [e[4] for e in ends] == [ANSWERED, ERRORED, TIMED_OUT, ANSWERED, REFUSED]
        assert ends[0] == ("bg", "tools/call", "big", 2, ANSWERED)  # 1 was initialize
        assert ends[4][2:4] == ("count", 6)

        # The client goes away with a call in flight: cancelled.
        other = InProcessClient(gw)
        await other.request("initialize", {"protocolVersion": "2025-11-25",
                                           "capabilities": {}, "clientInfo": {"name": "o",
                                                                              "version": "0"}})
        other.gw.handle(other.session, json.dumps({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 30}}}).encode())
        gw.close_session(other.session)
        assert ends[-1] == ("bg", "tools/call", "slow", 7, CANCELLED)

        # The upstream goes away with a call in flight: failed.
        client.gw.handle(client.session, json.dumps({
            "jsonrpc": "2.0", "id": 99, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 30}}}).encode())
        gw.upstreams["bg"].fail_all("the upstream went away")
        assert ends[-1] == ("bg", "tools/call", "slow", 99, FAILED)
        assert len(ends) == 7
        assert {OUTCOMES[o]: n for o, n in enumerate(gw.counters.ended) if n} == {
            "answered": 2, "errored": 1, "timed_out": 1, "cancelled": 1, "failed": 1,
            "refused": 1}
    in_gateway(config, body)
