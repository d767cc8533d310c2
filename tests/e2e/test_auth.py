"""Authentication and authorization end to end: a real gateway, the official SDK
client over Streamable HTTP in both eras, a WebSocket client, a unix-socket client, and
an issuer whose JWKS the gateway fetches over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
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
    events_upstream,
    http_headers,
    http_initialize,
    modern_request,
    run,
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
                {"name": "no whoami for ci", "names": ["ci-bot"], "deny_tools": ["whoami"]},
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
                assert challenge == ('Bearer resource_metadata="https://gateway.test/'
                                     '.well-known/oauth-protected-resource/mcp"')
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
