"""``limits.max_subscriptions``: the resource subscriptions one session holds at once,
by ``resources/subscribe`` and by its ``subscriptions/listen`` streams together. Each
is held upstream, so without the bound one listen request naming 50,000 URIs made
50,000 upstream calls (found by an outside sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcpfast.gateway.gateway import Gateway

from ..conftest import InProcessClient, forked, in_gateway, modern, toml_value


def test_a_session_holds_at_most_max_subscriptions(tmp_path: Path) -> None:
    config = tmp_path / "limited.toml"
    config.write_text(f"[listen]\nport = 0\n\n[limits]\nmax_subscriptions = 3\n\n"
                      f"[upstreams.ev]\ncommand = {toml_value(forked('events_server'))}\n"
                      'era = "legacy"\n')

    def listen(uris: list[str]) -> dict[str, Any]:
        return modern({"notifications": {"resourceSubscriptions": uris}})

    async def body(gw: Gateway, client: InProcessClient) -> None:
        for uri in ("test://a", "test://b"):
            assert "result" in await client.request("resources/subscribe", {"uri": uri})
        # Two more by a listen stream: four, over three. Refused whole, nothing held.
        refused = await client.request("subscriptions/listen", listen(["test://c",
                                                                      "test://d"]))
        assert refused["error"]["code"] == -32602, refused
        assert "limits.max_subscriptions (3)" in refused["error"]["message"]
        assert set(gw.upstreams["ev"].subscriptions) == {"test://a", "test://b"}
        assert "result" in await client.request("resources/subscribe", {"uri": "test://c"})
        refused = await client.request("resources/subscribe", {"uri": "test://d"})
        assert refused["error"]["code"] == -32602, refused
        assert "limits.max_subscriptions" in refused["error"]["message"]
        # One held already is answered as before, not refused.
        assert "result" in await client.request("resources/subscribe", {"uri": "test://a"})
        assert "result" in await client.request("resources/unsubscribe", {"uri": "test://a"})
        assert "result" in await client.request("resources/subscribe", {"uri": "test://d"})
        assert set(gw.upstreams["ev"].subscriptions) == {"test://b", "test://c", "test://d"}
    in_gateway(config, body)
