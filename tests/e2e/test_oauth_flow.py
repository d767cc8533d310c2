"""The OAuth 2.1 flow of the MCP authorization specification, end to end, with nothing
stood in for: the official SDK client with its client-credentials provider, a standard
authorization server (oidc-provider, run by Node: tests/servers/authorization_server.mjs)
and a real gateway that requires its JWTs, all on loopback.

``make test`` installs oidc-provider into ``.tools/oidc-provider`` with Node 22
(scripts/node-tools.sh).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.shared.exceptions import MCPError

from ..conftest import ROOT, GatewayProcess, run, sdk_text, toml_value

NODE = ROOT / ".tools" / "node22" / "node_modules" / ".bin" / "node"
OIDC_PROVIDER = ROOT / ".tools" / "oidc-provider" / "node_modules" / "oidc-provider"
AUTHORIZATION_SERVER = ROOT / "tests" / "servers" / "authorization_server.mjs"
CLIENT_ID = "nightly-indexer"
SCOPE = "mcp:call"
STARTUP_TIMEOUT = 60.0


class AuthorizationServer:
    """tests/servers/authorization_server.mjs in a subprocess: one confidential client,
    ``CLIENT_ID`` with ``secret``; its log (a line per token issued or refused) in
    ``log_path``."""

    def __init__(self, workdir: Path) -> None:
        assert NODE.exists() and OIDC_PROVIDER.is_dir(), \
            "oidc-provider or Node 22 is missing: run scripts/node-tools.sh (make test does)"
        self.secret = secrets.token_urlsafe(24)
        self.log_path = workdir / "authorization-server.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # Each value joined to its option: a secret may begin with "-", which
            # node's parseArgs takes for an option when it stands alone (1 run in 64).
            [str(NODE), str(AUTHORIZATION_SERVER), f"--client-id={CLIENT_ID}",
             f"--client-secret={self.secret}", f"--scope={SCOPE}"],
            stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT)
        try:
            self.issuer = self._announced()["issuer"]
            with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration",
                                        timeout=10) as response:
                self.metadata: dict[str, Any] = json.load(response)
        except BaseException:
            self.close()
            raise

    def _announced(self) -> dict[str, Any]:
        """The line the server prints once it answers (read on a thread, so a server
        that hangs before it fails the test instead of blocking it)."""
        stdout = self.proc.stdout
        assert stdout is not None
        lines: list[bytes] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        if not lines or not lines[0]:
            raise AssertionError(f"the authorization server did not start:\n{self.log()}")
        return json.loads(lines[0])  # type: ignore[no-any-return]

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.metadata["jwks_uri"], timeout=10) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def authorization_server(tmp_path: Path) -> Iterator[AuthorizationServer]:
    server = AuthorizationServer(tmp_path)
    yield server
    server.close()


class MemoryTokenStorage:
    """The SDK's ``TokenStorage``, kept in memory: what a process that starts afresh
    each time holds."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def require_tokens_from(gw: GatewayProcess, server: AuthorizationServer) -> None:
    """Make the gateway (not started yet) an OAuth resource server of ``server``: its
    JWTs, for the gateway's own URL, with ``SCOPE``; and let the client it issues
    tokens to use ``add`` and ``echo`` only. Written after the gateway got its port,
    which the resource URI names."""
    auth = {"resource": gw.http_url, "scopes_supported": [SCOPE],
            "jwt": {"issuer": server.issuer, "jwks_url": server.metadata["jwks_uri"],
                    "required_scopes": [SCOPE]}}
    authorization = {"default": "deny"}
    rule = {"names": [CLIENT_ID], "allow_tools": ["add", "echo"]}
    lines = ["[auth]", *(f"{k} = {toml_value(v)}" for k, v in auth.items()),
             "[authorization]", *(f"{k} = {toml_value(v)}" for k, v in authorization.items()),
             "[[authorization.rules]]", *(f"{k} = {toml_value(v)}" for k, v in rule.items())]
    gw.config_path.write_text(gw.config_path.read_text() + "\n".join(lines) + "\n")


def test_the_sdk_client_gets_a_token_by_itself_and_calls_through_the_gateway(
        gateway_factory: Any, authorization_server: AuthorizationServer) -> None:
    """The client starts with no token: the gateway's 401 leads it to the gateway's
    protected-resource metadata (RFC 9728), from there to the authorization server's
    metadata (RFC 8414), and to a client-credentials token for the gateway's URI
    (RFC 8707), with which it lists and calls tools."""
    gw: GatewayProcess = gateway_factory(start=False, listen={"auth": ["jwt"]})
    require_tokens_from(gw, authorization_server)
    gw.start()
    storage = MemoryTokenStorage()
    provider = ClientCredentialsOAuthProvider(
        server_url=gw.http_url, storage=storage, client_id=CLIENT_ID,
        client_secret=authorization_server.secret, issuer=authorization_server.issuer)

    exchanges: list[str] = []

    async def record(response: httpx2.Response) -> None:
        exchanges.append(f"{response.request.method} {response.request.url} "
                         f"{response.status_code}")

    async def main() -> None:
        http = create_mcp_http_client(auth=provider)
        http.event_hooks["response"].append(record)
        async with Client(streamable_http_client(gw.http_url, http_client=http),
                          mode="legacy") as client:
            listed = await client.list_tools()
            assert {tool.name for tool in listed.tools} == {"add", "echo"}
            assert sdk_text(await client.call_tool("add", {"a": 2, "b": 40})) == "42"
            with pytest.raises(MCPError, match="Unknown tool: whoami"):
                await client.call_tool("whoami", {})
    run(main())

    # What the client sent, in order: the refused request, the discovery, the token
    # request, the same request again with the token; then nothing was refused.
    base, issuer = f"http://127.0.0.1:{gw.port}", authorization_server.issuer
    assert exchanges[:5] == [
        f"POST {gw.http_url} 401",
        f"GET {base}/.well-known/oauth-protected-resource/mcp 200",
        f"GET {issuer}/.well-known/oauth-authorization-server 200",
        f"POST {authorization_server.metadata['token_endpoint']} 200",
        f"POST {gw.http_url} 200"], exchanges
    assert all(exchange.split()[1].startswith(gw.http_url) and
               exchange.endswith((" 200", " 202", " 204")) for exchange in exchanges[5:]), \
        exchanges

    # The token the SDK obtained: an RFC 9068 JWT for the gateway, signed with the key
    # the authorization server publishes.
    assert storage.tokens is not None
    token = storage.tokens.access_token
    header = jwt.get_unverified_header(token)
    published = {key["kid"]: key for key in authorization_server.jwks()["keys"]}
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert published[header["kid"]]["kty"] == "EC" and "d" not in published[header["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(published[header["kid"]]).key, algorithms=["ES256"],
                        audience=gw.http_url, issuer=authorization_server.issuer)
    assert claims["sub"] == CLIENT_ID and claims["scope"] == SCOPE

    # One token, asked for once; one refusal (the first request, without it), then
    # every request admitted.
    issued = [line for line in authorization_server.log().splitlines() if "issued" in line]
    assert issued == [f"authorization server: issued a JWT access token to {CLIENT_ID} "
                      f"for {gw.http_url} scope={SCOPE}"], authorization_server.log()
    log = gw.log()
    assert log.count("authentication refused:") == 1, log
    assert "authentication refused: peer=127.0.0.1 reason=missing" in log
    assert f"denied: identity=jwt:{CLIENT_ID} method=tools/call name=whoami" in log
    _, metrics = gw.admin_get("/metrics")
    assert b'mcpfast_authentication_refused_total{reason="missing"} 1.0' in metrics
