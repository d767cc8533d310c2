"""Several upstreams: merged lists, prefixed names, calls routed to the right one."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from ..conftest import (
    GatewayProcess,
    events_upstream,
    modern,
    recording_upstream,
    run,
    sdk_upstream,
    unix_client,
    wait_until,
    ws_client,
)


def test_names_are_prefixed_and_calls_routed(gateway_factory: Any) -> None:
    gw = gateway_factory({"alpha": sdk_upstream("alpha"), "beta": sdk_upstream("beta")})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            tools = {t["name"] for t in (await c.request("tools/list"))["result"]["tools"]}
            assert {"alpha__whoami", "beta__whoami", "alpha__echo", "beta__echo"} <= tools
            assert "whoami" not in tools
            for name in ("alpha", "beta"):
                r = await c.call_tool(f"{name}__whoami")
                assert r["result"]["content"][0]["text"] == name
            prompts = {p["name"] for p in (await c.request("prompts/list"))["result"]["prompts"]}
            assert prompts == {"alpha__greet", "beta__greet"}
            got = await c.request("prompts/get", {"name": "beta__greet",
                                                  "arguments": {"name": "Bo"}})
            assert "Bo" in str(got["result"])
            done = await c.request("completion/complete", {
                "ref": {"type": "ref/prompt", "name": "alpha__greet"},
                "argument": {"name": "name", "value": "A"}})
            assert "result" in done
            unknown = await c.call_tool("whoami")
            assert unknown["error"]["code"] == -32602
            progress = await c.request("tools/call", {
                "name": "beta__progress", "arguments": {"steps": 2},
                "_meta": {"progressToken": 7}})
            assert progress["result"]["content"][0]["text"] == "completed 2 steps"
            tokens = [n["params"]["progressToken"] for n in c.notifications
                      if n["method"] == "notifications/progress"]
            assert tokens == [7, 7]
    run(body())


def test_conditional_prefix_only_on_collision(gateway_factory: Any) -> None:
    gw = gateway_factory({"alpha": sdk_upstream("alpha"), "beta": sdk_upstream("beta", "b_")},
                         routing={"prefix": "conditional"})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            tools = {t["name"] for t in (await c.request("tools/list"))["result"]["tools"]}
            # Tool names differ ("whoami" vs "b_whoami"), so none is prefixed...
            assert {"whoami", "b_whoami", "echo", "b_echo"} <= tools
            # ...but both servers' prompt is called "greet", so those are.
            prompts = {p["name"] for p in (await c.request("prompts/list"))["result"]["prompts"]}
            assert prompts == {"alpha__greet", "beta__greet"}
            assert (await c.call_tool("b_whoami"))["result"]["content"][0]["text"] == "beta"
            assert (await c.call_tool("whoami"))["result"]["content"][0]["text"] == "alpha"
    run(body())


def test_one_failing_upstream_does_not_hide_the_other(gateway_factory: Any) -> None:
    gw = gateway_factory({"good": sdk_upstream("good"),
                          "broken": {"command": ["python", "-c", "import sys; sys.exit(4)"],
                                     "init_timeout": 2.0, "restart_backoff": 5.0}},
                         start=False)
    gw.start(wait_ready=False)
    wait_until(lambda: gw.admin_get("/status", starting=True)[0] == 200
               and gw.upstream("good")["ready"] and gw.status()["listeners"][0]["accepting"])
    broken = gw.upstream("broken")
    assert not broken["ready"] and "code 4" in (broken["last_error"] or "")
    assert gw.admin_get("/readiness")[0] == 503

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            tools = {t["name"] for t in (await c.request("tools/list"))["result"]["tools"]}
            assert "good__echo" in tools
            r = await c.call_tool("good__echo", {"text": "x"})
            assert r["result"]["content"][0]["text"] == "x"
    run(body())


def test_list_changed_refreshes_the_catalog_and_reaches_clients(gateway_factory: Any) -> None:
    gw = gateway_factory({"alpha": sdk_upstream("alpha"), "beta": sdk_upstream("beta")})

    async def body() -> None:
        async with ws_client(gw.ws_url) as caller, ws_client(gw.ws_url) as watcher:
            await caller.initialize()
            await watcher.initialize()
            grown = await caller.call_tool("beta__grow", {"tool_name": "fresh"})
            assert grown["result"]["content"][0]["text"] == "added fresh"
            for c in (caller, watcher):
                for _ in range(50):
                    if any(n["method"] == "notifications/tools/list_changed"
                           for n in c.notifications):
                        break
                    await c.request("ping")
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("no tools/list_changed reached the client")
            tools = {t["name"] for t in (await watcher.request("tools/list"))["result"]["tools"]}
            assert "beta__fresh" in tools and "alpha__fresh" not in tools
            r = await watcher.call_tool("beta__fresh", {"text": "hi"})
            assert r["result"]["content"][0]["text"] == "fresh: hi"
    run(body())


def test_every_announced_change_is_passed_on_even_when_the_list_reads_the_same(
        gateway_factory: Any) -> None:
    """The upstream announces a change twice; the second leaves the list as it was (the
    same tool added again). Both announcements reach the client, after the refetch: it
    cannot know what changed behind the list (2026-07-28 conformance checks this)."""
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with ws_client(gw.ws_url) as client:
            await client.initialize()

            async def announced(count: int) -> None:
                for _ in range(200):  # 10 s at most
                    if sum(n["method"] == "notifications/tools/list_changed"
                           for n in client.notifications) >= count:
                        return
                    await client.request("ping")
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{count} tools/list_changed expected, got "
                                     f"{client.notifications}")
            for round_ in (1, 2):
                answer = await client.call_tool("announce", {"tool_name": "fresh"})
                assert answer["result"]["content"][0]["text"] == "added fresh"
                await announced(round_)
            tools = [t["name"] for t in (await client.request("tools/list"))["result"]["tools"]]
            assert tools.count("fresh") == 1
    run(body())


def two_recorders(gateway_factory: Any, tmp_path: Path, **sections: Any) -> GatewayProcess:
    gw: GatewayProcess = gateway_factory({
        "a": recording_upstream(tmp_path / "a.jsonl", "a"),
        "b": recording_upstream(tmp_path / "b.jsonl", "b")}, **sections)
    return gw


@pytest.mark.parametrize("prefix", ["always", "conditional"])
def test_the_configured_separator_is_used(gateway_factory: Any, tmp_path: Path,
                                          prefix: str) -> None:
    """routing.separator = "." : names are exposed and routed as ``a.echo``, and the
    default ``__`` means nothing."""
    gw = two_recorders(gateway_factory, tmp_path,
                       routing={"prefix": prefix, "separator": "."})

    async def body() -> None:
        async with ws_client(gw.ws_url) as c:
            await c.initialize()
            tools = {t["name"] for t in (await c.request("tools/list"))["result"]["tools"]}
            assert {"a.whoami", "b.whoami", "a.echo", "b.region"} <= tools
            assert not any("__" in name for name in tools)
            for name in ("a", "b"):
                r = await c.call_tool(f"{name}.whoami")
                assert r["result"]["content"][0]["text"] == name
            unknown = await c.call_tool("b__whoami", request_id="u")
            assert unknown["id"] == "u" and unknown["error"]["code"] == -32602
    run(body())


def test_a_uri_no_upstream_serves_is_32002_for_legacy_clients(gateway_factory: Any,
                                                              tmp_path: Path) -> None:
    """With two upstreams a URI that neither lists nor templates is nobody's: -32002
    for a legacy client (read and subscribe), -32602 with data.uri for a modern one."""
    gw = two_recorders(gateway_factory, tmp_path)

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            read = await c.request("resources/read", {"uri": "rec://b/doc"})
            assert read["result"]["contents"][0]["text"] == "b rec://b/doc"
            for method, request_id in (("resources/read", 7), ("resources/read", "7"),
                                       ("resources/subscribe", 8)):
                missing = await c.request(method, {"uri": "nope://x"}, request_id=request_id)
                assert type(missing["id"]) is type(request_id)
                assert missing["id"] == request_id
                assert missing["error"]["code"] == -32002, missing
                assert "nope://x" in missing["error"]["message"]
            modern_missing = await c.request("resources/read", modern({"uri": "nope://x"}))
            assert modern_missing["error"]["code"] == -32602
            assert modern_missing["error"]["data"]["uri"] == "nope://x"
    run(body())


def test_lists_are_paged_with_cursors_the_gateway_issues(gateway_factory: Any) -> None:
    gw = gateway_factory({"alpha": sdk_upstream("alpha"), "beta": sdk_upstream("beta")},
                         routing={"page_size": 3})

    async def body() -> None:
        async with ws_client(gw.ws_url) as legacy, unix_client(gw.unix_path) as new:
            await legacy.initialize()
            await new.request("server/discover", modern())
            for client, params in ((legacy, {}), (new, modern())):
                names: list[str] = []
                cursor = None
                for _ in range(20):
                    asked = {**params, **({"cursor": cursor} if cursor else {})}
                    page = (await client.request("tools/list", asked))["result"]
                    assert len(page["tools"]) <= 3
                    names += [tool["name"] for tool in page["tools"]]
                    cursor = page.get("nextCursor")
                    if cursor is None:
                        break
                assert len(names) == 20 and len(set(names)) == 20  # 10 tools each
                assert {"alpha__echo", "beta__echo"} <= set(names)
            first = (await legacy.request("tools/list", {}))["result"]
            for bad in ("garbage!", first["nextCursor"].swapcase(), 7):
                refused = await legacy.request("tools/list", {"cursor": bad})
                assert refused["error"]["code"] == -32602, refused
            # Forged: an offset past the list, another list's, a generation to come.
            listed, generation, _ = base64.urlsafe_b64decode(
                first["nextCursor"]).decode().split(":")
            for forged in (f"{listed}:{generation}:999", f"prompts:{generation}:0",
                           f"{listed}:{int(generation) + 5}:0", f"{listed}:-1:0"):
                refused = await legacy.request("tools/list", {
                    "cursor": base64.urlsafe_b64encode(forged.encode()).decode()})
                assert refused["error"]["code"] == -32602, refused
                assert "not a cursor of this list (tools)" in refused["error"]["message"]
            # A rebuild (a tool added) makes the cursors issued before it stale.
            await legacy.call_tool("beta__grow", {"tool_name": "fresh"})
            for _ in range(200):
                refused = await legacy.request("tools/list", {"cursor": first["nextCursor"]})
                if "error" in refused:
                    break
                await asyncio.sleep(0.05)
            assert refused["error"]["code"] == -32602
            assert "stale" in refused["error"]["message"]
    run(body())


def test_without_paging_a_cursor_the_gateway_never_issued_is_refused(
        gateway_factory: Any) -> None:
    gw = gateway_factory({"alpha": sdk_upstream("alpha")})

    async def body() -> None:
        async with ws_client(gw.ws_url) as client:
            await client.initialize()
            whole = (await client.request("tools/list", {}))["result"]
            assert "nextCursor" not in whole and len(whole["tools"]) == 10
            refused = await client.request("tools/list", {"cursor": "abc"})
            assert refused["error"]["code"] == -32602
    run(body())
