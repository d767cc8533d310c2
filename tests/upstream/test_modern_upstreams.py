"""Upstream era: the ``server/discover`` probe and its fallback, and modern (2026-07-28)
upstreams behind the gateway, for modern and legacy clients, with raw messages over the
unix socket and with the official SDK client through ``mcpfast connect``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mcp.client.session import ClientRequestContext
from mcp.types import CreateMessageRequestParams, CreateMessageResult, TextContent

from mcpfast.config import ConfigError, parse

from ..conftest import (
    CAPS,
    INFO,
    LEVEL,
    PV,
    SERVER_INFO,
    SUB_ID,
    GatewayProcess,
    Record,
    bridged,
    collect,
    events_upstream,
    modern,
    recording_upstream,
    run,
    unix_client,
    wait_until,
)
from ..conftest import modern_request as request
from ..conftest import sdk_text as text_of

SILENT_SERVER = """
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m or m.get("method") == "server/discover":
        continue  # a legacy server that ignores what it does not know
    result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
              "serverInfo": {"name": "silent", "version": "1"}} \\
        if m["method"] == "initialize" else {"tools": []} if m["method"] == "tools/list" else {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": result}), flush=True)
"""


@pytest.fixture
def modern_gateway(gateway_factory: Any) -> GatewayProcess:
    """One dual-era upstream, probed: it answers server/discover, so it is modern, and a
    legacy client goes through the gateway's translation (with era "both" it would get
    a legacy twin: below)."""
    return gateway_factory({"events": events_upstream("auto")})


MODERN_ONLY_SERVER = """
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    method, rid = m.get("method"), m["id"]
    if method == "initialize":
        out = {"error": {"code": -32022, "message": "only 2026-07-28",
                         "data": {"supported": ["2026-07-28"]}}}
    elif method == "server/discover":
        out = {"result": {"supportedVersions": ["2026-07-28"], "resultType": "complete",
                          "capabilities": {"tools": {}},
                          "_meta": {"io.modelcontextprotocol/serverInfo":
                                    {"name": "modern-only", "version": "1"}}}}
    elif method == "tools/list":
        out = {"result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}],
                          "resultType": "complete"}}
    elif method == "tools/call":
        text = m["params"]["arguments"]["text"]
        out = {"result": {"content": [{"type": "text", "text": text}],
                          "resultType": "complete"}}
    else:
        out = {"error": {"code": -32601, "message": "Method not found"}}
    print(json.dumps({"jsonrpc": "2.0", "id": rid, **out}), flush=True)
"""


def test_a_probed_dual_era_upstream_serves_legacy_clients_in_the_legacy_era(
        gateway_factory: Any, tmp_path: Path) -> None:
    """With era "both", probed modern, the events server also answers initialize: a
    legacy client's
    calls go to a legacy connection of their own (push-style sampling works there, which
    the modern era cannot carry); modern clients keep the modern one. A modern-only
    server gets no twin, and its legacy clients are served through translation."""
    only = tmp_path / "modern_only.py"
    only.write_text(MODERN_ONLY_SERVER)
    gw = gateway_factory({"events": events_upstream("both"),
                          "only": {"command": ["python", str(only)], "era": "both"}})
    sampling = {"role": "assistant", "model": "m",
                "content": {"type": "text", "text": "fine"}}

    async def body() -> None:
        async with unix_client(gw.unix_path) as old, unix_client(gw.unix_path) as new:
            await old.initialize(capabilities={"sampling": {}})
            # Set before the twin exists: the twin is asked for it when it starts.
            assert "result" in await old.request("logging/setLevel", {"level": "warning"})
            await new.request("server/discover", modern())
            call = asyncio.ensure_future(old.call_tool("events__push_sample",
                                                       {"prompt": "how?"}, timeout=30))
            for _ in range(600):
                if old.requests:
                    break
                await asyncio.sleep(0.05)
            (asked,) = old.requests
            assert asked["method"] == "sampling/createMessage"
            await old.send({"jsonrpc": "2.0", "id": asked["id"], "result": sampling})
            assert (await call)["result"]["content"][0]["text"] == "pushed: fine"
            # The legacy client's calls reach the server as legacy ones: no modern _meta.
            meta = json.loads((await old.call_tool("events__meta"))["result"]
                              ["content"][0]["text"])
            assert PV not in (meta or {})
            # A modern client's still go to the modern connection.
            seen = await request(new, "tools/call", {"name": "events__meta"})
            assert json.loads(seen["result"]["content"][0]["text"])[PV] == "2026-07-28"
            # The legacy client's log level reached the twin: its log messages come.
            await old.call_tool("events__log", {"message": "via the twin",
                                                "level": "warning"})
            for _ in range(200):
                if any(n["method"] == "notifications/message" for n in old.notifications):
                    break
                await asyncio.sleep(0.05)
            assert [n["params"]["data"] for n in old.notifications
                    if n["method"] == "notifications/message"] == ["via the twin"]
            # The modern-only server: its twin's initialize is refused, so no twin.
            echoed = await old.call_tool("only__echo", {"text": "translated"}, timeout=30)
            assert echoed["result"]["content"][0]["text"] == "translated"
    run(body())
    upstreams = {u["name"]: u for u in gw.status()["upstreams"]}
    assert upstreams["events"]["era"] == "modern"
    assert upstreams["events"]["legacy_twin"]["era"] == "legacy"
    assert "legacy_twin" not in upstreams["only"]
    assert "does not speak the legacy era" in gw.log()


def test_a_legacy_twin_is_asked_for_the_level_its_clients_set(
        gateway_factory: Any, tmp_path: Path) -> None:
    """A dual-era server that declares logging, probed modern: the legacy twin that
    serves legacy clients' calls is asked for the level they set (logging/setLevel),
    set before the twin started and changed after, as any legacy upstream is (found by
    an outside sweep: it was never asked, and a server that logs only when asked sent
    nothing)."""
    record = tmp_path / "record.jsonl"
    gw = gateway_factory({"rec": recording_upstream(record, "rec", "--modern", era="both")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as old:
            await old.initialize()
            assert "result" in await old.request("logging/setLevel", {"level": "warning"})
            echoed = await old.call_tool("echo", {"text": "via the twin"}, timeout=30)
            assert echoed["result"]["content"][0]["text"] == "via the twin"
            assert "result" in await old.request("logging/setLevel", {"level": "debug"})
            for _ in range(200):
                levels = [m["params"]["level"] for m in Record(record).received(
                    "logging/setLevel")]
                if levels[-1:] == ["debug"]:
                    break
                await asyncio.sleep(0.05)
            assert levels == ["warning", "debug"], levels
    run(body())
    # The session gone, no one wants its messages any more.
    wait_until(lambda: gw.status()["upstreams"][0]["legacy_twin"]["log_level"] == "emergency",
               30)
    assert gw.status()["upstreams"][0]["era"] == "modern"


def test_era_config_is_validated() -> None:
    base = '[upstreams.u]\ncommand = ["x"]\n'
    assert parse(base).upstreams["u"].era == "auto"
    assert parse(base + 'era = "legacy"\n').upstreams["u"].era == "legacy"
    with pytest.raises(ConfigError) as error:
        parse(base + 'era = "sometimes"\n')
    assert str(error.value) == "upstreams.u.era: Invalid enum value 'sometimes'"


def test_the_probe_decides_the_era(gateway_factory: Any, tmp_path: Path) -> None:
    silent = tmp_path / "silent.py"
    silent.write_text(SILENT_SERVER)
    started = time.monotonic()
    gw = gateway_factory({
        "dual": events_upstream("auto"),
        "pinned": events_upstream("legacy"),
        "demo": {"command": ["python", "-m", "mcpfast.demo"], "era": "auto"},
        "silent": {"command": ["python", str(silent)], "era": "auto", "init_timeout": 1.0},
    })
    # The silent server costs the probe's timeout (init_timeout here), not more.
    assert time.monotonic() - started < 10
    eras = {u["name"]: (u["era"], u["protocol_version"]) for u in gw.status()["upstreams"]}
    assert eras == {"dual": ("modern", "2026-07-28"), "pinned": ("legacy", "2025-11-25"),
                    "demo": ("legacy", "2025-11-25"), "silent": ("legacy", "2025-06-18")}
    assert gw.upstream("dual")["server_info"]["name"] == "events"


def test_a_legacy_server_pinned_modern_does_not_start(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"],
                                   "era": "modern", "init_timeout": 2.0}}, start=False)
    gw.start(wait_ready=False)
    wait_until(lambda: gw.admin_get("/status", starting=True)[0] == 200 and
               "server/discover" in (gw.upstream("demo")["last_error"] or ""))
    assert gw.upstream("demo")["ready"] is False


def test_modern_client_to_modern_upstream(modern_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(modern_gateway.unix_path) as c:
            client_meta = {CAPS: {"sampling": {}}, INFO: {"name": "me", "version": "9"},
                           "progressToken": 3, "custom": "kept"}
            seen = await request(c, "tools/call", {"name": "meta", "arguments": {},
                                                   "_meta": client_meta})
            result = seen["result"]
            assert result["_meta"][SERVER_INFO]["name"] == "mcpfast"
            meta = json.loads(result["content"][0]["text"])
            assert meta[PV] == "2026-07-28"
            assert meta[CAPS] == {"sampling": {}}
            assert meta[INFO] == {"name": "me", "version": "9"}
            assert meta["custom"] == "kept"
            listed = (await request(c, "tools/list"))["result"]
            assert {"echo", "announce", "meta"} <= {t["name"] for t in listed["tools"]}
            missing = await request(c, "resources/read", {"uri": "test://nope"})
            assert missing["error"]["code"] == -32602
            assert missing["error"]["data"]["uri"] == "test://nope"
            read = (await request(c, "resources/read", {"uri": "test://static"}))["result"]
            assert read["resultType"] == "complete" and "ttlMs" in read
            assert read["_meta"][SERVER_INFO]["name"] == "mcpfast"
            done = await request(c, "tools/call", {"name": "progress", "arguments": {"steps": 2},
                                                   "_meta": {"progressToken": "t"}})
            assert done["result"]["resultType"] == "complete"
            assert [n["params"]["progressToken"] for n in c.notifications
                    if n["method"] == "notifications/progress"] == ["t", "t"]
            await request(c, "tools/call", {"name": "log", "arguments": {"message": "no"}})
            await request(c, "tools/call", {"name": "log", "arguments": {"message": "yes"},
                                            "_meta": {LEVEL: "debug"}})
            assert [n["params"]["data"] for n in c.notifications
                    if n["method"] == "notifications/message"] == ["yes"]
    run(body())


def test_input_required_passes_straight_through(modern_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(modern_gateway.unix_path) as c:
            call = {"name": "sample", "arguments": {"prompt": "capital of France?"},
                    "_meta": {CAPS: {"sampling": {}}}}
            first = (await request(c, "tools/call", call))["result"]
            assert first["resultType"] == "input_required"
            assert not c.requests
            (key, asked), = first["inputRequests"].items()
            assert asked["method"] == "sampling/createMessage"
            text = asked["params"]["messages"][0]["content"]["text"]
            assert text == "capital of France?"
            retry = {**call, "inputResponses": {key: {
                "role": "assistant", "model": "m", "content": {"type": "text",
                                                                "text": "Paris"}}}}
            if "requestState" in first:
                retry["requestState"] = first["requestState"]
            final = (await request(c, "tools/call", retry))["result"]
            assert final["resultType"] == "complete"
            assert final["content"][0]["text"] == "Paris"
    run(body())


def test_legacy_client_to_modern_upstream(modern_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(modern_gateway.unix_path) as c:
            opened = await c.initialize(capabilities={"roots": {}},
                                        clientInfo={"name": "old", "version": "1"})
            # It forwards the modern server's log messages: it declares logging
            # (server/utilities/logging: a server that sends them MUST).
            assert opened["result"]["capabilities"]["logging"] == {}
            await c.request("logging/setLevel", {"level": "warning"})
            echoed = (await c.call_tool("echo", {"text": "hi"}))["result"]
            assert echoed["content"][0]["text"] == "hi"
            assert "resultType" not in echoed and "_meta" not in echoed
            meta = json.loads((await c.call_tool("meta"))["result"]["content"][0]["text"])
            assert meta[PV] == "2026-07-28"
            assert meta[CAPS] == {"roots": {}}
            assert meta[INFO] == {"name": "old", "version": "1"}
            assert meta[LEVEL] == "warning"
            read = (await c.request("resources/read", {"uri": "test://static"}))["result"]
            assert set(read) == {"contents"}
            await c.call_tool("log", {"message": "quiet", "level": "info"})
            await c.call_tool("log", {"message": "loud", "level": "error"})
            assert [n["params"]["data"] for n in c.notifications
                    if n["method"] == "notifications/message"] == ["loud"]
            assert (await c.request("ping"))["result"] == {}
    run(body())


def test_changes_of_a_modern_upstream_reach_both_eras(modern_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(modern_gateway.unix_path) as legacy, \
                unix_client(modern_gateway.unix_path) as listener, \
                unix_client(modern_gateway.unix_path) as caller:
            await legacy.initialize()
            assert (await legacy.request("resources/subscribe",
                                         {"uri": "test://item/1"}))["result"] == {}
            await listener.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                                 "params": modern({"notifications": {
                                     "toolsListChanged": True, "promptsListChanged": True,
                                     "resourceSubscriptions": ["test://static"]}})})
            ack = await listener.receive()
            assert ack["params"]["notifications"] == {
                "toolsListChanged": True, "promptsListChanged": True,
                "resourceSubscriptions": ["test://static"]}
            await request(caller, "tools/call", {"name": "announce",
                                                 "arguments": {"tool_name": "extra"}})
            assert await listener.receive() == {
                "jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                "params": {"_meta": {SUB_ID: "L"}}}
            names = {t["name"] for t in (await request(caller, "tools/list"))["result"]["tools"]}
            assert "extra" in names
            await request(caller, "tools/call", {"name": "touch",
                                                 "arguments": {"uri": "test://static"}})
            assert await listener.receive() == {
                "jsonrpc": "2.0", "method": "notifications/resources/updated",
                "params": {"uri": "test://static", "_meta": {SUB_ID: "L"}}}
            await request(caller, "tools/call", {"name": "touch",
                                                 "arguments": {"uri": "test://item/1"}})
            seen: list[dict[str, Any]] = []
            while not any(n["method"] == "notifications/resources/updated" for n in seen):
                seen.append(await legacy.receive())
            assert {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                    "params": {"uri": "test://item/1"}} in seen
            assert {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"} in seen
            assert await collect(listener, 0.3) == []
    run(body())


def test_listen_survives_an_upstream_restart(modern_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(modern_gateway.unix_path) as listener, \
                unix_client(modern_gateway.unix_path) as caller:
            await listener.send({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
                                 "params": modern({"notifications": {
                                     "resourceSubscriptions": ["test://static"]}})})
            await listener.receive()
            starts = modern_gateway.upstream("events")["starts"]
            crashed = await request(caller, "tools/call", {"name": "crash", "arguments": {}})
            assert crashed["error"]["code"] == -32000, crashed  # the upstream died
            await asyncio.to_thread(wait_until, lambda: (
                u := modern_gateway.upstream("events"))["ready"] and u["starts"] > starts)
            await request(caller, "tools/call", {"name": "touch",
                                                 "arguments": {"uri": "test://static"}})
            assert (await listener.receive(5))["params"] == {
                "uri": "test://static", "_meta": {SUB_ID: 1}}
    run(body())


# -- the official SDK client, through `mcpfast connect` --------------------------------------

async def answer_sampling(context: ClientRequestContext, params: CreateMessageRequestParams
                          ) -> CreateMessageResult:
    asked = params.messages[0].content
    assert isinstance(asked, TextContent)
    return CreateMessageResult(role="assistant", model="test-model",
                               content=TextContent(type="text", text=f"sdk says {asked.text}"))


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
def test_sdk_client_modern_end_to_end(modern_gateway: GatewayProcess, mode: str) -> None:
    async def body() -> None:
        async with bridged(modern_gateway, mode=mode, sampling_callback=answer_sampling) as c, \
                bridged(modern_gateway, mode="2026-07-28") as other:
            assert c.protocol_version == "2026-07-28"
            assert {"echo", "sample", "announce"} <= {t.name for t in
                                                      (await c.list_tools()).tools}
            assert text_of(await c.call_tool("echo", {"text": "hé"})) == "hé"
            # The upstream's input_required goes to the client and its retry comes back.
            assert text_of(await c.call_tool("sample", {"prompt": "why?"})) == "sdk says why?"
            async with c.listen(tools_list_changed=True) as subscription:
                assert subscription.honored.tools_list_changed
                await other.call_tool("announce", {"tool_name": "sdk_added"})
                async with asyncio.timeout(5):
                    async for event in subscription:
                        assert type(event).__name__ == "ToolsListChanged"
                        break
            assert "sdk_added" in {t.name for t in (await c.list_tools()).tools}
    run(body())


def test_sdk_client_modern_against_a_legacy_upstream(gateway_factory: Any) -> None:
    gw = gateway_factory({"events": events_upstream("legacy")})

    async def body() -> None:
        async with bridged(gw, mode="auto") as c:
            assert c.protocol_version == "2026-07-28"
            assert text_of(await c.call_tool("add", {"a": 1, "b": 2})) == "3"
            resource = await c.read_resource("test://item/7")
            assert resource.contents[0].text == "item 7"  # type: ignore[union-attr]
    run(body())
