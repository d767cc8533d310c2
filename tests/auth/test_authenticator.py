"""Admission by credential (auth/authenticator.py): which header carries what, a
verified credential remembered until it expires, the OAuth challenge and metadata,
the unix-socket allow-lists, and API keys stored as hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mcpfast.auth.api_keys import hash_key
from mcpfast.auth.authenticator import MISSING, Authenticator
from mcpfast.auth.identity import Identity
from mcpfast.auth.tokens import AuthFailure
from mcpfast.config import ConfigError, parse

from ..conftest import ROOT, Issuer, toml_value

KEY = "mcpf_test-key-for-ci-bot-0123456789"


def authenticator(issuer: Issuer | None = None, methods: tuple[str, ...] = ("api_key",),
                  **auth: Any) -> Authenticator:
    lines = [f"[listen]\nauth = {toml_value(list(methods))}",
             "[auth]", f'resource = "{Issuer.AUDIENCE}"']
    lines += [f"{k} = {toml_value(v)}" for k, v in auth.items()]
    lines.append(f"[[auth.api_keys]]\nname = \"ci-bot\"\nhash = \"{hash_key(KEY)}\"\n"
                 "groups = [\"ci\"]\nscopes = [\"mcp:call\"]")
    if issuer is not None:
        lines.append(f"[auth.jwt]\nissuer = \"{Issuer.ISSUER}\"\n"
                     f"keys = {toml_value([json.dumps(issuer.jwks())])}")
    lines.append('[upstreams.a]\ncommand = ["true"]')
    return Authenticator(parse("\n".join(lines)))


def headers(**values: str) -> Any:
    lowered = {k.lower().replace("_", "-"): v for k, v in values.items()}
    return lambda name: lowered.get(name.lower())


def test_an_api_key_admits_by_bearer_or_its_own_header() -> None:
    auth = authenticator()
    for presented in (headers(authorization=f"Bearer {KEY}"), headers(x_api_key=KEY),
                      headers(authorization=f"bearer   {KEY}  ")):
        identity = auth.authenticate(presented, "10.0.0.1")
        assert isinstance(identity, Identity), identity
        assert (identity.key, identity.groups, identity.scopes) == (
            "api_key:ci-bot", ("ci",), frozenset({"mcp:call"}))


def test_no_credential_and_a_wrong_one_are_told_apart() -> None:
    auth = authenticator()
    assert auth.authenticate(headers(), "10.0.0.1") is MISSING
    wrong = auth.authenticate(headers(authorization="Bearer nope"), "10.0.0.1")
    assert isinstance(wrong, AuthFailure) and wrong.error == "invalid_token"
    basic = auth.authenticate(headers(authorization=f"Basic {KEY}"), "10.0.0.1")
    assert basic is MISSING  # not a bearer credential
    assert auth.failures == {"missing": 2, "invalid_token": 1}


def test_a_verified_token_is_remembered_until_it_expires(issuer: Issuer,
                                                         monkeypatch: Any) -> None:
    auth = authenticator(issuer, ("jwt",))
    assert auth.jwt is not None
    calls: list[str] = []
    verify = auth.jwt.verify
    monkeypatch.setattr(auth.jwt, "verify", lambda t: calls.append(t) or verify(t))
    token = issuer.token("alice", lifetime=300)
    for _ in range(5):
        assert isinstance(auth.authenticate(headers(authorization=f"Bearer {token}"), "p"),
                          Identity)
    assert len(calls) == 1
    # An expired entry is verified again (and then refused).
    credential = next(iter(auth._cache))
    auth._cache[credential] = (auth._cache[credential][0], 0.0)
    assert isinstance(auth.authenticate(headers(authorization=f"Bearer {token}"), "p"),
                      Identity)
    assert len(calls) == 2


def test_the_table_of_verified_credentials_is_bounded(issuer: Issuer) -> None:
    auth = authenticator(issuer, ("jwt",), cache_size=3)
    for i in range(10):
        token = issuer.token(f"user{i}")
        assert isinstance(auth.authenticate(headers(authorization=f"Bearer {token}"), "p"),
                          Identity)
    assert len(auth._cache) == 3


def test_jwt_and_api_keys_side_by_side(issuer: Issuer) -> None:
    auth = authenticator(issuer, ("api_key", "jwt"))
    jwt_identity = auth.authenticate(headers(authorization=f"Bearer {issuer.token('bo')}"),
                                     "p")
    key_identity = auth.authenticate(headers(authorization=f"Bearer {KEY}"), "p")
    assert isinstance(jwt_identity, Identity) and jwt_identity.key == "jwt:bo"
    assert isinstance(key_identity, Identity) and key_identity.key == "api_key:ci-bot"


def test_the_challenge_points_at_the_metadata(issuer: Issuer) -> None:
    auth = authenticator(issuer, ("jwt",), scopes_supported=["mcp:call"])
    (name, value), = auth.challenge(MISSING, "gw:8080")
    assert name == "WWW-Authenticate"
    assert value == ('Bearer resource_metadata="https://gateway.test/.well-known/'
                     'oauth-protected-resource/mcp"')
    bad = auth.challenge(AuthFailure(403, "insufficient_scope", 'needs "x"', "mcp:call"), None)
    assert 'error="insufficient_scope"' in bad[0][1] and 'scope="mcp:call"' in bad[0][1]
    assert 'error_description="needs \'x\'"' in bad[0][1]
    assert auth.serves_metadata("/.well-known/oauth-protected-resource/mcp")
    assert auth.serves_metadata("/.well-known/oauth-protected-resource")
    assert auth.metadata(None) == {
        "resource": Issuer.AUDIENCE, "authorization_servers": [Issuer.ISSUER],
        "bearer_methods_supported": ["header"], "resource_name": "mcpfast",
        "scopes_supported": ["mcp:call"]}


def test_without_jwts_the_challenge_names_no_metadata(issuer: Issuer) -> None:
    """API keys only: no metadata is served, so the challenge names none (a client sent
    there would start an OAuth discovery that ends in a 404; found by an outside
    sweep)."""
    auth = authenticator(None, ("api_key",))
    (name, value), = auth.challenge(MISSING, "gw:8080")
    assert (name, value) == ("WWW-Authenticate", 'Bearer realm="mcpfast"')
    assert not auth.serves_metadata("/.well-known/oauth-protected-resource/mcp")


def test_the_challenge_names_the_scopes_a_token_needs(issuer: Issuer) -> None:
    """MCP authorization, "Scope Selection Strategy": the 401 names the scopes a token
    must carry (auth.jwt.required_scopes), so that a client asks for them."""
    lines = [f'[listen]\nauth = ["jwt"]\n[auth]\nresource = "{Issuer.AUDIENCE}"',
             f"[auth.jwt]\nissuer = \"{Issuer.ISSUER}\"\n"
             f"keys = {toml_value([json.dumps(issuer.jwks())])}\n"
             'required_scopes = ["mcp:call", "mcp:read"]', '[upstreams.a]\ncommand = ["true"]']
    auth = Authenticator(parse("\n".join(lines)))
    (_, value), = auth.challenge(MISSING, "gw:8080")
    assert value.startswith('Bearer resource_metadata="') and \
        value.endswith(', scope="mcp:call mcp:read"'), value


def test_without_a_resource_the_metadata_names_the_host_asked() -> None:
    auth = Authenticator(parse('[upstreams.a]\ncommand = ["true"]'))
    assert not auth.required
    assert auth.metadata_url("gw.example:8080") == \
        "http://gw.example:8080/.well-known/oauth-protected-resource/mcp"


@pytest.mark.parametrize(("uids", "gids", "admitted"), [
    (None, None, True), ([1000], None, True), ([5], None, False), ([5], [100], True),
    (None, [7], False)])
def test_unix_allow_lists(uids: list[int] | None, gids: list[int] | None,
                          admitted: bool) -> None:
    lines = ["[listen]"]
    if uids is not None:
        lines.append(f"unix_allow_uids = {uids}")
    if gids is not None:
        lines.append(f"unix_allow_gids = {gids}")
    auth = Authenticator(parse("\n".join(lines) + '\n[upstreams.a]\ncommand = ["true"]'))
    assert (auth.admit_unix(1000, 100) is None) == admitted


def test_config_errors_name_the_key() -> None:
    def error(text: str) -> str:
        with pytest.raises(ConfigError) as caught:
            Authenticator(parse(text + '\n[upstreams.a]\ncommand = ["true"]'))
        return str(caught.value)
    assert error('[listen]\nauth = ["api_key"]').startswith("listen.auth: api_key is listed")
    assert error('[listen]\nauth = ["oidc"]').startswith("listen.auth")
    assert error('[listen]\nauth = ["jwt"]\n[auth]\nresource = "https://g/mcp"\n'
                 '[auth.jwt]\nissuer = "i"\nkeys = ["junk"]').startswith("auth.jwt.keys[0]")


def test_hash_key_reads_the_key_from_stdin() -> None:
    done = subprocess.run([sys.executable, "-m", "mcpfast", "hash-key"], input=KEY + "\n",
                          capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == hash_key(KEY)
    made = subprocess.run([sys.executable, "-m", "mcpfast", "hash-key", "--new"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    key_line, hash_line = made.stdout.splitlines()
    assert hash_line.split()[1] == hash_key(key_line.split()[1])


def test_a_reload_keeps_fetched_keys_unless_where_they_come_from_changes() -> None:
    def with_jwt(**jwt: Any) -> Authenticator:
        table = {"issuer": "https://i", "jwks_url": "https://i/jwks", **jwt}
        return Authenticator(parse(f'[listen]\nauth = ["jwt"]\n[auth]\nresource = '
                                   f'"https://g/mcp"\njwt = {toml_value(table)}\n'
                                   '[upstreams.a]\ncommand = ["true"]\n'))
    base = with_jwt()
    assert base.same_sources(with_jwt(leeway=5.0, required_scopes=["x"]))
    assert not base.same_sources(with_jwt(jwks_url="https://other/jwks"))
    assert not base.same_sources(with_jwt(jwks_refresh=60.0))
    assert not base.same_sources(authenticator())
