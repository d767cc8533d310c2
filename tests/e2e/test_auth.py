"""Authentication and authorization end to end: a real gateway, the official SDK
client over Streamable HTTP in both eras, a WebSocket client, a unix-socket client, and
an issuer whose JWKS the gateway fetches over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from mcp import Client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError

from mcpfast.auth.api_keys import hash_key

from ..conftest import (
    CAPS,
    INIT_PARAMS,
    Issuer,
    Record,
    collect,
    events_upstream,
    http_headers,
    http_initialize,
    modern_request,
    recording_upstream,
    run,
    sdk_upstream,
    ws_client,
)

KEY = "mcpf_e2e-key-0123456789abcdef"


def auth_sections(issuer: Issuer, jwks_url: str, **jwt: Any) -> dict[str, Any]:
    return {
        "listen": {"auth": ["api_key", "jwt"]},
        "auth": {
            "resource": Issuer.AUDIENCE,
            "scopes_supported": ["mcp:call"],
            "api_keys": [{"name": "ci-bot", "hash": hash_key(KEY), "groups": ["ci"]}],
            "jwt": {"issuer": Issuer.ISSUER, "jwks_url": jwks_url, **jwt},
        },
        "authorization": {
            "default": "deny",
            "rules": [
                {"name": "everyone", "names": ["*"], "allow_tools": ["echo", "whoami"]},
                {"name": "engineers", "groups": ["eng"], "allow_tools": ["add"]},
                {"name": "no whoami for ci", "names": ["api_key:ci-bot"], "deny_tools": ["whoami"]},
            ],
        },
    }


def sdk(url: str, token: str, mode: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(url, http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_the_sdk_client_sees_and_calls_only_what_its_token_allows(
        gateway_factory: Any, issuer: Issuer, mode: str) -> None:
    gw = gateway_factory(**auth_sections(issuer, issuer.serve()))

    async def main() -> None:
        async with sdk(gw.http_url, issuer.token("alice", groups=["eng"]), mode) as alice:
            assert {t.name for t in (await alice.list_tools()).tools} == {"echo", "whoami",
                                                                          "add"}
            added = await alice.call_tool("add", {"a": 2, "b": 3})
            assert added.content[0].text == "5"  # type: ignore[union-attr]
        async with sdk(gw.http_url, issuer.token("bob", groups=["sales"]), mode) as bob:
            assert {t.name for t in (await bob.list_tools()).tools} == {"echo", "whoami"}
            with pytest.raises(MCPError, match="Unknown tool: add"):
                await bob.call_tool("add", {"a": 2, "b": 3})
        async with sdk(gw.http_url, KEY, mode) as bot:
            assert {t.name for t in (await bot.list_tools()).tools} == {"echo"}
    run(main())
    log = gw.log()
    assert "denied: identity=jwt:bob method=tools/call name=add" in log
    code, metrics = gw.admin_get("/metrics")
    assert code == 200
    assert b'mcpfast_authorization_denied_total{kind="tools"} 1.0' in metrics


def test_http_without_a_valid_token_gets_the_oauth_challenge(gateway_factory: Any,
                                                             issuer: Issuer) -> None:
    gw = gateway_factory(**auth_sections(issuer, issuer.serve(),
                                         required_scopes=["mcp:call"]))
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(gw.http_url, json=init, headers=http_headers()) as resp:
                assert resp.status == 401
                challenge = resp.headers["WWW-Authenticate"]
                # The scope a token needs named too (MCP authorization "Scope Selection
                # Strategy").
                assert challenge == ('Bearer resource_metadata="https://gateway.test/'
                                     '.well-known/oauth-protected-resource/mcp", '
                                     'scope="mcp:call"')
                assert (await resp.json())["error"]["message"].startswith("Unauthorized")
            expired = issuer.token("alice", lifetime=-3600, scope="mcp:call")
            async with http.post(gw.http_url, json=init, headers=http_headers(
                    Authorization=f"Bearer {expired}")) as resp:
                assert resp.status == 401
                assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
                assert 'error_description="the token has expired"' in \
                    resp.headers["WWW-Authenticate"]
            narrow = issuer.token("alice", scope="mcp:read")
            async with http.post(gw.http_url, json=init, headers=http_headers(
                    Authorization=f"Bearer {narrow}")) as resp:
                assert resp.status == 403
                assert 'error="insufficient_scope", ' in resp.headers["WWW-Authenticate"]
                assert 'scope="mcp:call"' in resp.headers["WWW-Authenticate"]
            base = f"http://127.0.0.1:{gw.port}"
            for path in ("/.well-known/oauth-protected-resource/mcp",
                         "/.well-known/oauth-protected-resource"):
                async with http.get(base + path) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {
                        "resource": Issuer.AUDIENCE,
                        "authorization_servers": [Issuer.ISSUER],
                        "bearer_methods_supported": ["header"],
                        "resource_name": "mcpfast", "scopes_supported": ["mcp:call"]}
            good = issuer.token("alice", scope="mcp:call mcp:read")
            session_id = await http_initialize(http, gw.http_url,
                                               Authorization=f"Bearer {good}")
            assert session_id
    run(main())
    assert "authentication refused: peer=127.0.0.1 reason=missing" in gw.log()
    assert "reason=insufficient_scope" in gw.log()
    _, metrics = gw.admin_get("/metrics")
    for reason in ("missing", "invalid_token", "insufficient_scope"):
        assert f'mcpfast_authentication_refused_total{{reason="{reason}"}} 1.0'.encode() \
            in metrics, reason


def test_a_legacy_session_is_bound_to_the_identity_that_made_it(gateway_factory: Any,
                                                                issuer: Issuer) -> None:
    gw = gateway_factory(**auth_sections(issuer, issuer.serve()))
    alice = {"Authorization": f"Bearer {issuer.token('alice')}"}
    mallory = {"Authorization": f"Bearer {issuer.token('mallory')}"}
    ping = {"jsonrpc": "2.0", "id": 7, "method": "ping"}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            session_id = await http_initialize(http, gw.http_url, **alice)
            async with http.post(gw.http_url, json=ping,
                                 headers=http_headers(session_id, **mallory)) as resp:
                assert resp.status == 404, await resp.text()
            async with http.post(gw.http_url, json=ping,
                                 headers=http_headers(session_id, **alice)) as resp:
                assert resp.status == 200 and (await resp.json())["id"] == 7
    run(main())


def test_websocket_upgrades_need_a_credential(gateway_factory: Any, issuer: Issuer) -> None:
    gw = gateway_factory(**auth_sections(issuer, issuer.serve()))

    async def main() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_client(gw.ws_url):
                pass
        response = refused.value.response
        assert response.status_code == 401
        assert "resource_metadata=" in response.headers["WWW-Authenticate"]
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            async with ws_client(gw.ws_url, additional_headers=headers) as client:
                await client.initialize()
                tools = await client.request("tools/list", {})
                assert [t["name"] for t in tools["result"]["tools"]] == ["echo"]
                denied = await client.call_tool("whoami")
                assert denied["error"]["message"] == "Unknown tool: whoami"
    run(main())


@pytest.mark.parametrize("allowed", [True, False])
def test_the_unix_socket_admits_only_listed_users(gateway_factory: Any, allowed: bool) -> None:
    uid = os.getuid()
    gw = gateway_factory(listen={"unix_allow_uids": [uid if allowed else uid + 1]})

    async def main() -> None:
        reader, writer = await asyncio.open_unix_connection(gw.unix_path)
        try:
            writer.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                     "params": INIT_PARAMS}).encode() + b"\n")
            await writer.drain()
            line = json.loads(await asyncio.wait_for(reader.readline(), 10))
            if allowed:
                assert line["result"]["protocolVersion"]
            else:
                assert line["error"]["message"] == \
                    f"Forbidden: uid {uid}, gid {os.getgid()} may not connect"
                assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        finally:
            writer.close()
    run(main())
    if not allowed:
        assert f"unix peer uid={uid} gid={os.getgid()} is not allowed" in gw.log()


def test_a_parked_call_is_retried_only_by_its_own_identity(gateway_factory: Any) -> None:
    """A modern client's requestState names a call waiting for input: another
    identity presenting it is told nothing waits, and the owner's retry still works."""
    other_key = "mcpf_e2e-other-key-0123456789"
    gw = gateway_factory(
        {"events": events_upstream("legacy")},
        listen={"auth": ["api_key"]},
        auth={"api_keys": [{"name": "alice", "hash": hash_key(KEY)},
                           {"name": "mallory", "hash": hash_key(other_key)}]})
    call = {"name": "sample", "arguments": {"prompt": "why?"},
            "_meta": {CAPS: {"sampling": {}}}}
    answer = {"role": "assistant", "model": "m", "content": {"type": "text", "text": "4"}}

    async def main() -> None:
        async with ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY}) as alice, \
                ws_client(gw.ws_url, additional_headers={"X-API-Key": other_key}) as mallory:
            first = (await modern_request(alice, "tools/call", call))["result"]
            state, key = first["requestState"], next(iter(first["inputRequests"]))
            retry = {**call, "requestState": state, "inputResponses": {key: answer}}
            stolen = await modern_request(mallory, "tools/call", retry)
            assert stolen["error"]["code"] == -32602
            assert "names no waiting request" in stolen["error"]["message"]
            final = (await modern_request(alice, "tools/call", retry))["result"]
            assert final["content"][0]["text"] == "4"
    run(main())


def test_bypass_attempts_are_refused(gateway_factory: Any, issuer: Issuer) -> None:
    """A credential in the query string, repeated Authorization headers, and a WebSocket
    whose first message carries what its upgrade lacked: none admits. Header names and
    the scheme are case-insensitive (RFC 9110, RFC 6750), so those variants do."""
    from multidict import CIMultiDict

    gw = gateway_factory(**auth_sections(issuer, issuer.serve()))
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}
    alice = issuer.token("alice")

    async def status(http: aiohttp.ClientSession, url: str, headers: Any) -> int:
        async with http.post(url, json=init, headers=headers) as resp:
            return resp.status

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            for query in (f"access_token={alice}", f"api_key={KEY}", f"token={KEY}"):
                assert await status(http, f"{gw.http_url}?{query}", http_headers()) == 401
            for repeated in ([alice, alice], [alice, "garbage"], ["garbage", alice],
                             [KEY, alice]):
                headers = CIMultiDict(http_headers())
                for credential in repeated:
                    headers.add("Authorization", f"Bearer {credential}")
                assert await status(http, gw.http_url, headers) == 401, repeated
            for name, scheme in (("authorization", "bearer"), ("AUTHORIZATION", "BEARER"),
                                 ("Authorization", "BeArEr")):
                assert await status(http, gw.http_url,
                                    {**http_headers(), name: f"{scheme} {alice}"}) == 200
            assert await status(http, gw.http_url,
                                {**http_headers(), "Authorization": f"Basic {alice}"}) == 401
            assert await status(http, gw.http_url,
                                {**http_headers(), "Authorization": alice}) == 401
        # No upgrade without a credential, so no first message could carry one.
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_client(f"{gw.ws_url}?access_token={alice}"):
                pass
        assert refused.value.response.status_code == 401
    run(main())


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_denied_tool_has_no_other_name(gateway_factory: Any, era: str) -> None:
    """Two upstreams, names prefixed: a tool denied by its public name or by its
    upstream is refused under every spelling a client may try, in either era."""
    gw = gateway_factory(
        {"a": sdk_upstream("a"), "b": sdk_upstream("b")},
        listen={"auth": ["api_key"]},
        auth={"api_keys": [{"name": "ci-bot", "hash": hash_key(KEY)}]},
        routing={"prefix": "always"},
        authorization={"rules": [{"deny_tools": ["a__echo"]},
                                 {"upstream": "b", "deny_tools": ["*add"]}]})

    async def main() -> None:
        async with ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY}) as client:
            if era == "legacy":
                await client.initialize()

                async def call(name: str) -> dict[str, Any]:
                    return await client.call_tool(name, {"text": "x", "a": 1, "b": 2})

                listed = await client.request("tools/list", {})
            else:
                async def call(name: str) -> dict[str, Any]:
                    return await modern_request(client, "tools/call", {
                        "name": name, "arguments": {"text": "x", "a": 1, "b": 2}})

                listed = await modern_request(client, "tools/list", {})
            names = {t["name"] for t in listed["result"]["tools"]}
            assert "a__echo" not in names and "b__add" not in names
            assert {"b__echo", "a__add"} <= names
            for spelling in ("a__echo", "echo", "A__echo", "a__echo ", "b__add", "add"):
                answer = await call(spelling)
                assert answer["error"]["code"] == -32602, (spelling, answer)
                assert answer["error"]["message"] == f"Unknown tool: {spelling}"
            assert "result" in await call("b__echo")
            assert "result" in await call("a__add")
    run(main())


def test_the_sdk_oauth_discovery_reads_the_challenge_and_metadata(gateway_factory: Any,
                                                                  issuer: Issuer) -> None:
    """What the official SDK's OAuth client does on a 401: take resource_metadata from
    WWW-Authenticate, and failing that the well-known URLs, and read the metadata there
    (mcp.client.auth.utils), against the gateway's real answers."""
    from mcp.client.auth.utils import (
        build_protected_resource_metadata_discovery_urls,
        extract_resource_metadata_from_www_auth,
        handle_protected_resource_response,
    )

    sections = auth_sections(issuer, issuer.serve(), audience=[Issuer.AUDIENCE])
    del sections["auth"]["resource"]  # the metadata then names the host it was asked on
    gw = gateway_factory(**sections)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS}

    async def main() -> None:
        async with create_mcp_http_client() as http:
            refused = await http.post(gw.http_url, json=init, headers=http_headers())
            assert refused.status_code == 401
            found = extract_resource_metadata_from_www_auth(refused)
            assert found == (f"http://127.0.0.1:{gw.port}/.well-known/"
                             "oauth-protected-resource/mcp")
            urls = build_protected_resource_metadata_discovery_urls(found, gw.http_url)
            assert len(urls) == 3
            for url in urls:  # every URL the SDK may try answers the same
                metadata = await handle_protected_resource_response(await http.get(url))
                assert metadata is not None, url
                assert str(metadata.resource) == gw.http_url
                assert [str(s).rstrip("/") for s in metadata.authorization_servers] == \
                    [Issuer.ISSUER]
                assert metadata.scopes_supported == ["mcp:call"]
    run(main())


def test_list_changed_follows_each_identitys_view(gateway_factory: Any) -> None:
    """A tool appears that one identity may use and another may not: only the first is
    told that its tool list changed."""
    bob_key = "mcpf_e2e-bob-key-0123456789"
    gw = gateway_factory(
        listen={"auth": ["api_key"]},
        auth={"api_keys": [{"name": "alice", "hash": hash_key(KEY)},
                           {"name": "bob", "hash": hash_key(bob_key)}]},
        authorization={"rules": [{"names": ["bob"], "deny_tools": ["grown*"]}]})

    def list_changed(messages: list[dict[str, Any]]) -> bool:
        return any(m.get("method") == "notifications/tools/list_changed" for m in messages)

    async def main() -> None:
        async with ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY}) as alice, \
                ws_client(gw.ws_url, additional_headers={"X-API-Key": bob_key}) as bob:
            await alice.initialize()
            await bob.initialize()
            grown = await alice.call_tool("grow", {"tool_name": "grown_one"})
            assert "result" in grown, grown
            for _ in range(100):  # the refetch follows the upstream's announcement
                if list_changed(alice.notifications):
                    break
                alice.notifications += await collect(alice, 0.1)
            assert list_changed(alice.notifications)
            # Sent to bob in the same step as to alice, had it been sent: a second is
            # far more than it would take to arrive.
            assert not list_changed(bob.notifications + await collect(bob, 1.0))
            listed = await alice.request("tools/list", {})
            assert "grown_one" in {t["name"] for t in listed["result"]["tools"]}
            listed = await bob.request("tools/list", {})
            assert "grown_one" not in {t["name"] for t in listed["result"]["tools"]}
    run(main())


def test_no_client_credential_reaches_the_upstream(gateway_factory: Any, issuer: Issuer,
                                                   tmp_path: Path) -> None:
    """Clients authenticate with a JWT, an API key and a cookie beside them, over both
    HTTP eras and WebSocket; the upstream (which records every message it receives and
    its environment) sees none of them."""
    record_path = tmp_path / "record.jsonl"
    gw = gateway_factory(
        {"rec": recording_upstream(record_path)},
        listen={"auth": ["api_key", "jwt"]},
        auth={"resource": Issuer.AUDIENCE,
              "api_keys": [{"name": "ci-bot", "hash": hash_key(KEY)}],
              "jwt": {"issuer": Issuer.ISSUER, "jwks_url": issuer.serve()}})
    token = issuer.token("alice")
    cookie = "session=cookie-secret-0123456789"
    secrets_sent = (token, KEY, "cookie-secret-0123456789")
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "from http"}}}

    async def main() -> None:
        credentials = {"Authorization": f"Bearer {token}", "X-API-Key": KEY, "Cookie": cookie}
        async with aiohttp.ClientSession() as http:
            session_id = await http_initialize(http, gw.http_url, **credentials)
            async with http.post(gw.http_url, json=call,
                                 headers=http_headers(session_id, **credentials)) as resp:
                assert resp.status == 200, await resp.text()
        async with ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY,
                                                            "Cookie": cookie}) as ws:
            await ws.initialize()
            assert "result" in await ws.call_tool("echo", {"text": "from ws"})
            modern = await modern_request(ws, "tools/call", {
                "name": "echo", "arguments": {"text": "modern"}})
            assert "result" in modern, modern
    run(main())
    record = Record(record_path)
    record.wait(lambda r: len(r.received("tools/call")) >= 3, what="three calls")
    recorded = record_path.read_text()
    for secret in secrets_sent:
        assert secret not in recorded


def test_a_denied_resource_cannot_be_subscribed_to(gateway_factory: Any) -> None:
    """Neither with resources/subscribe (the first time, nor again, nor while another
    session holds it) nor on a modern listen stream; the upstream is never asked."""
    gw = gateway_factory(
        {"events": {**events_upstream(), "attribution": "in_flight"}},
        listen={"auth": ["api_key"]},
        auth={"api_keys": [{"name": "alice", "hash": hash_key(KEY)}]},
        authorization={"rules": [{"deny_resources": ["test://static"]}]})

    async def main() -> None:
        async with ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY}) as legacy, \
                ws_client(gw.ws_url, additional_headers={"X-API-Key": KEY}) as streams:
            await legacy.initialize()
            for _ in range(2):
                refused = await legacy.request("resources/subscribe", {"uri": "test://static"})
                assert refused["error"]["code"] == -32002, refused
            await streams.send({"jsonrpc": "2.0", "id": "L", "method": "subscriptions/listen",
                                "params": {"notifications": {
                                    "resourceSubscriptions": ["test://static"]},
                                    "_meta": {CAPS: {}, "io.modelcontextprotocol/"
                                              "protocolVersion": "2026-07-28"}}})
            ack = await streams.receive()
            assert ack["method"] == "notifications/subscriptions/acknowledged", ack
            assert "resourceSubscriptions" not in ack["params"]["notifications"]
            held = await legacy.call_tool("subscriptions", {})
            assert "test://static" not in held["result"]["content"][0]["text"]
    run(main())
