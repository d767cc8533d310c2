"""2026-07-28 clients through the gateway to legacy upstreams, over the unix socket and
WebSocket: no initialize, ``_meta`` on every request, ``server/discover``, result shapes,
per-request log levels and ``subscriptions/listen``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ..conftest import (
    CAPS,
    LEVEL,
    PV,
    SERVER_INFO,
    SUB_ID,
    GatewayProcess,
    Record,
    collect,
    events_upstream,
    modern,
    recording_upstream,
    run,
    sdk_upstream,
    unix_client,
    ws_client,
)
from ..conftest import modern_request as request


@pytest.fixture
def legacy_gateway(gateway_factory: Any) -> GatewayProcess:
    """One legacy-era upstream that can announce changes and take subscriptions. Its
    logs and requests come only during the call that caused them, and several clients
    share it here: attribution "in_flight" (the default would refuse them)."""
    return gateway_factory({"events": {**events_upstream(), "attribution": "in_flight"}})


def clients(gw: GatewayProcess) -> list[Any]:
    return [unix_client(gw.unix_path), ws_client(gw.ws_url)]


def test_discover_needs_no_initialize_and_names_the_gateway(legacy_gateway: GatewayProcess
                                                            ) -> None:
    async def body() -> None:
        for opened in clients(legacy_gateway):
            async with opened as c:
                result = (await request(c, "server/discover", request_id="d-1"))["result"]
                assert result["resultType"] == "complete"
                assert result["supportedVersions"] == ["2026-07-28"]
                assert result["_meta"][SERVER_INFO]["name"] == "mcpfast"
                assert result["ttlMs"] == 0 and result["cacheScope"] == "private"
                caps = result["capabilities"]
                assert caps["tools"] == {"listChanged": True}
                assert caps["prompts"] == {"listChanged": True}
                assert caps["resources"] == {"listChanged": True, "subscribe": True}
                assert "completions" in caps
    run(body())


def test_envelope_and_version_errors(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            missing = await c.request("tools/list", {"_meta": {PV: "2026-07-28"}})
            assert missing["error"]["code"] == -32602
            assert CAPS in missing["error"]["message"]
            bad_level = await c.request("tools/list", modern(**{LEVEL: "loud"}))
            assert bad_level["error"]["code"] == -32602
            old = await c.request("tools/list", modern(**{PV: "v999.0.0"}), request_id="v")
            assert old["id"] == "v"
            assert old["error"]["code"] == -32022
            assert old["error"]["data"] == {"supported": ["2026-07-28"],
                                            "requested": "v999.0.0"}
            # A modern request whose params the routing fields cannot hold (a name that
            # is not a string) is still read as modern: its own -32602, not the
            # legacy "before initialize" (-32600).
            nameless = await c.request("tools/call", modern({"name": 5}), request_id="n")
            assert nameless["error"]["code"] == -32602, nameless
            assert "params.name" in nameless["error"]["message"], nameless
            # Without the envelope the same connection is still a legacy one.
            before = await c.request("tools/list")
            assert before["error"]["code"] == -32600
            # A modern-only method without its envelope: what it lacks, as over HTTP.
            for params in (None, {}, {"_meta": {}}, {"_meta": {CAPS: {}}}):
                lacking = await c.request("server/discover", params, request_id="sd")
                assert lacking["id"] == "sd" and lacking["error"]["code"] == -32602, lacking
                assert "_meta" in lacking["error"]["message"], lacking
    run(body())


@pytest.mark.parametrize("method", ["initialize", "ping", "logging/setLevel",
                                    "resources/subscribe", "resources/unsubscribe",
                                    "unknown/method"])
def test_methods_gone_in_2026_are_unknown(legacy_gateway: GatewayProcess, method: str) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            params = {"uri": "test://static", "level": "debug", "protocolVersion": "2026-07-28",
                      "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}
            answer = await request(c, method, params, request_id=7)
            assert answer["id"] == 7 and answer["error"]["code"] == -32601
    run(body())


def test_lists_and_calls_get_modern_shapes(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        for opened in clients(legacy_gateway):
            async with opened as c:
                for method, key in (("tools/list", "tools"), ("prompts/list", "prompts"),
                                    ("resources/list", "resources"),
                                    ("resources/templates/list", "resourceTemplates")):
                    result = (await request(c, method))["result"]
                    assert result["resultType"] == "complete", method
                    assert result["ttlMs"] == 0 and result["cacheScope"] == "private"
                    assert result["_meta"][SERVER_INFO]["name"] == "mcpfast"
                    assert result[key], method
                called = (await request(c, "tools/call",
                                        {"name": "echo", "arguments": {"text": "hi"}}))["result"]
                assert called["resultType"] == "complete"
                assert called["content"][0]["text"] == "hi"
                assert called["_meta"][SERVER_INFO]["name"] == "mcpfast"
                assert "ttlMs" not in called
                read = (await request(c, "resources/read", {"uri": "test://static"}))["result"]
                assert read["contents"][0]["text"] == "static resource"
                assert read["resultType"] == "complete"
                assert read["ttlMs"] == 0 and read["cacheScope"] == "private"
                prompt = (await request(c, "prompts/get",
                                        {"name": "greet", "arguments": {"name": "Ann"}}))
                assert prompt["result"]["resultType"] == "complete"
                assert "Ann" in json.dumps(prompt["result"]["messages"])
                completion = await request(c, "completion/complete", {
                    "ref": {"type": "ref/prompt", "name": "greet"},
                    "argument": {"name": "name", "value": "Al"}})
                assert completion["result"]["completion"]["values"] == ["Alice", "Alfred"]
                assert completion["result"]["resultType"] == "complete"
    run(body())


def test_the_legacy_upstream_sees_no_modern_meta(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            seen = await request(c, "tools/call", {
                "name": "meta", "arguments": {}, "inputResponses": {"k": {}},
                "_meta": {"progressToken": "p", "trace": "t"}})
            meta = json.loads(seen["result"]["content"][0]["text"])
            assert not any(key.startswith("io.modelcontextprotocol/") for key in meta)
            assert meta["trace"] == "t"
            # Mapped per upstream connection (the SDK spells the key its own way).
            assert isinstance(meta["progress_token"], int)
            # A requestState for a legacy upstream can only be one the gateway issued
            # (tests/gateway/test_bridge_mrtr.py); any other is rejected (mrtr "Server
            # Requirements": state that fails verification MUST be rejected).
            forged = await request(c, "tools/call", {"name": "meta", "arguments": {},
                                                     "requestState": "opaque"})
            assert forged["error"]["code"] == -32602
    run(body())


def test_resource_not_found_is_invalid_params_with_the_uri(gateway_factory: Any) -> None:
    # The bundled demo server is legacy only and answers -32002 (2025-11-25 resources).
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"],
                                   "era": "auto"}})

    async def body() -> None:
        assert gw.upstream("demo")["era"] == "legacy"
        async with unix_client(gw.unix_path) as c:
            uri = "mcpfast://demo/nope"
            modern_answer = await request(c, "resources/read", {"uri": uri})
            assert modern_answer["error"]["code"] == -32602
            assert modern_answer["error"]["data"]["uri"] == uri
            await c.initialize()
            legacy_answer = await c.request("resources/read", {"uri": uri})
            assert legacy_answer["error"]["code"] == -32002
    run(body())


def test_progress_tokens_come_back_to_the_modern_caller(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            done = await request(c, "tools/call", {"name": "progress", "arguments": {"steps": 3},
                                                   "_meta": {"progressToken": "tok"}})
            assert done["result"]["resultType"] == "complete"
            tokens = [n["params"]["progressToken"] for n in c.notifications
                      if n["method"] == "notifications/progress"]
            assert tokens == ["tok", "tok", "tok"]
    run(body())


def test_logs_only_for_requests_that_ask(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            await request(c, "tools/call", {"name": "log", "arguments": {"message": "quiet"}})
            await request(c, "tools/call", {"name": "log", "arguments": {
                "message": "too low", "level": "info"}, "_meta": {LEVEL: "error"}})
            await request(c, "tools/call", {"name": "log", "arguments": {
                "message": "loud", "level": "warning"}, "_meta": {LEVEL: "info"}})
            await asyncio.sleep(0.2)
            await request(c, "tools/list")
            logs = [n["params"]["data"] for n in c.notifications
                    if n["method"] == "notifications/message"]
            assert logs == ["loud"]
    run(body())


def test_a_legacy_session_keeps_its_level_beside_a_modern_request(
        legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as old, \
                unix_client(legacy_gateway.unix_path) as new:
            await old.initialize()
            await old.request("logging/setLevel", {"level": "debug"})
            await request(new, "tools/call", {"name": "log", "arguments": {"message": "m1"}})
            await old.call_tool("log", {"message": "l1"})
            await request(new, "tools/list")
            assert not [n for n in new.notifications if n["method"] == "notifications/message"]
            assert [n["params"]["data"] for n in old.notifications
                    if n["method"] == "notifications/message"] == ["l1"]
    run(body())


def test_a_server_request_the_client_cannot_take_fails_the_call(legacy_gateway: GatewayProcess
                                                                ) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as c:
            # META declares no capabilities: the upstream's sampling/createMessage cannot
            # become an input_required result for this request (basic/index -32021).
            answer = await request(c, "tools/call", {"name": "sample",
                                                     "arguments": {"prompt": "hi"}})
            assert answer["error"]["code"] == -32021
            assert answer["error"]["data"] == {"requiredCapabilities": {"sampling": {}}}
            assert "sampling/createMessage" in answer["error"]["message"]
            assert not c.requests  # no server-to-client request reached the modern client
            assert (await request(c, "tools/call", {"name": "echo", "arguments": {
                "text": "still fine"}}))["result"]["content"][0]["text"] == "still fine"
    run(body())


def test_listen_acknowledges_then_delivers_tagged_changes(legacy_gateway: GatewayProcess
                                                          ) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as tools, \
                unix_client(legacy_gateway.unix_path) as prompts, \
                ws_client(legacy_gateway.ws_url) as resources, \
                unix_client(legacy_gateway.unix_path) as caller:
            await tools.send({"jsonrpc": "2.0", "id": 5, "method": "subscriptions/listen",
                              "params": modern({"notifications": {
                                  "toolsListChanged": True, "unknownFlag": True}})})
            ack = await tools.receive()
            assert ack == {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                           "params": {"_meta": {SUB_ID: 5},
                                      "notifications": {"toolsListChanged": True}}}
            await prompts.send({"jsonrpc": "2.0", "id": "p", "method": "subscriptions/listen",
                                "params": modern({"notifications": {
                                    "promptsListChanged": True}})})
            assert (await prompts.receive())["params"]["_meta"] == {SUB_ID: "p"}
            await resources.send({"jsonrpc": "2.0", "id": 0, "method": "subscriptions/listen",
                                  "params": modern({"notifications": {"resourceSubscriptions": [
                                      "test://static", "test://static"]}})})
            ack = await resources.receive()
            assert ack["params"] == {"_meta": {SUB_ID: 0}, "notifications": {
                "resourceSubscriptions": ["test://static"]}}

            await request(caller, "tools/call", {"name": "announce",
                                                 "arguments": {"tool_name": "fresh"}})
            changed = await tools.receive()
            assert changed == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                               "params": {"_meta": {SUB_ID: 5}}}
            # The refresh happened before the announcement.
            names = {t["name"] for t in (await request(caller, "tools/list"))["result"]["tools"]}
            assert "fresh" in names
            # The upstream was subscribed once, for the listen stream.
            subscribed = await request(caller, "tools/call", {"name": "subscriptions",
                                                              "arguments": {}})
            assert subscribed["result"]["content"][0]["text"] == "test://static"
            await request(caller, "tools/call", {"name": "touch",
                                                 "arguments": {"uri": "test://static"}})
            updated = await resources.receive()
            assert updated == {"jsonrpc": "2.0", "method": "notifications/resources/updated",
                               "params": {"uri": "test://static", "_meta": {SUB_ID: 0}}}
            assert await collect(prompts, 0.3) == []
            assert await collect(tools, 0.1) == []
    run(body())


def test_listen_ends_with_cancel_or_disconnect(legacy_gateway: GatewayProcess) -> None:
    async def body() -> None:
        async with unix_client(legacy_gateway.unix_path) as caller:
            async with unix_client(legacy_gateway.unix_path) as listener:
                await listener.send({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
                                     "params": modern({"notifications": {
                                         "toolsListChanged": True,
                                         "resourceSubscriptions": ["test://item/1"]}})})
                await listener.receive()
                subscribed = await request(caller, "tools/call", {"name": "subscriptions",
                                                                  "arguments": {}})
                assert subscribed["result"]["content"][0]["text"] == "test://item/1"
                await listener.notify("notifications/cancelled", {"requestId": 1})
                await asyncio.sleep(0.2)
                await request(caller, "tools/call", {"name": "announce",
                                                     "arguments": {"tool_name": "later"}})
                assert await collect(listener, 0.3) == []
                # The id is free again once the listen is over.
                await listener.send({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
                                     "params": modern({"notifications": {
                                         "resourceSubscriptions": ["test://item/2"]}})})
                assert (await listener.receive())["params"]["notifications"] == {
                    "resourceSubscriptions": ["test://item/2"]}
            # The listener disconnected: its subscription is released upstream.
            for _ in range(50):
                left = await request(caller, "tools/call", {"name": "subscriptions",
                                                            "arguments": {}})
                if left["result"]["content"][0]["text"] == "":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the upstream subscription outlived the listen stream")
    run(body())


def test_a_modern_request_and_a_legacy_session_share_an_upstream(gateway_factory: Any) -> None:
    gw = gateway_factory({"sdk": sdk_upstream(era="legacy")})

    async def body() -> None:
        async with unix_client(gw.unix_path) as c:
            await c.initialize()
            legacy = await c.call_tool("echo", {"text": "legacy"})
            assert "resultType" not in legacy["result"]
            # One connection, both eras: the envelope decides per request.
            new = await request(c, "tools/call", {"name": "echo", "arguments": {"text": "new"}})
            assert new["result"]["resultType"] == "complete"
            assert gw.upstream("sdk")["era"] == "legacy"
    run(body())


def test_a_modern_request_lowers_the_upstream_level_before_it_runs(gateway_factory: Any) -> None:
    gw = gateway_factory({"demo": {"command": ["python", "-m", "mcpfast.demo"]}})

    async def body() -> None:
        async with unix_client(gw.unix_path) as old, unix_client(gw.unix_path) as new:
            await old.initialize()
            # The demo server now logs errors and worse only.
            await old.request("logging/setLevel", {"level": "error"})
            answer = await request(new, "tools/call", {"name": "countdown", "arguments": {
                "n": 1}, "_meta": {LEVEL: "info"}})
            assert answer["result"]["content"][0]["text"] == "liftoff"
            assert [n["params"]["data"] for n in new.notifications
                    if n["method"] == "notifications/message"] == ["countdown started"]
            # Back to the legacy session's level once the request is over.
            new.notifications.clear()
            await request(new, "tools/call", {"name": "countdown", "arguments": {"n": 1}})
            await old.call_tool("echo", {"text": "x"})
            assert not [n for c in (old, new) for n in c.notifications
                        if n["method"] == "notifications/message"]
    run(body())


def test_listen_acknowledges_only_what_the_server_agreed_to(gateway_factory: Any,
                                                            tmp_path: Any) -> None:
    """A legacy server refuses one of the URIs a listen names: the acknowledgement
    lists only the other ("reflects the subset the server agreed to honor"), and the
    refused one is not counted as held, so that a later subscriber asks the server
    again rather than being told it is subscribed (found by an outside sweep)."""
    record = Record(tmp_path / "rec.jsonl")
    gw: GatewayProcess = gateway_factory({"rec": recording_upstream(record.path)})

    async def body() -> None:
        async with ws_client(gw.ws_url) as listener, unix_client(gw.unix_path) as legacy:
            await listener.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                                 "params": modern({"notifications": {"resourceSubscriptions": [
                                     "rec://rec/doc", "rec://refuse/doc"]}})})
            ack = await listener.receive()
            assert ack["params"] == {"_meta": {SUB_ID: "L"}, "notifications": {
                "resourceSubscriptions": ["rec://rec/doc"]}}, ack
            await legacy.initialize()
            refused = await legacy.request("resources/subscribe", {"uri": "rec://refuse/doc"})
            assert refused["error"]["code"] == -32603, refused
            held = await legacy.request("resources/subscribe", {"uri": "rec://rec/doc"})
            assert held["result"] == {}, held
    run(body())
    asked = [m["params"]["uri"] for m in record.received("resources/subscribe")]
    assert asked == ["rec://rec/doc", "rec://refuse/doc", "rec://refuse/doc"], asked
