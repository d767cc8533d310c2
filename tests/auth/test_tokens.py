"""JWT verification (auth/tokens.py) against tokens signed as real issuers sign them:
the asymmetric algorithms only, each with a key of its own type; issuer, audience and
the times checked with leeway; the JWKS fetched over HTTP, rotated by key id, and
refetched for an unknown key id no more often than allowed."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest

from mcpfast.auth.tokens import AuthFailure, JwksSource, JwtVerifier
from mcpfast.config import JwtConfig

from ..conftest import Issuer, run


def verifier(issuer: Issuer, **settings: Any) -> JwtVerifier:
    keys = settings.pop("keys", None)
    if keys is None:
        keys = [json.dumps(issuer.jwks())]
    config = JwtConfig(issuer=Issuer.ISSUER, audience=[Issuer.AUDIENCE], keys=keys,
                       **settings)
    return JwtVerifier(config, config.audience)


def refused(result: Any) -> AuthFailure:
    assert isinstance(result, AuthFailure), result
    return result


@pytest.mark.parametrize("kid", ["rsa", "ec", "ed"])
def test_each_asymmetric_algorithm_verifies(issuer: Issuer, kid: str) -> None:
    result = verifier(issuer).verify(issuer.token("alice", kid, scope="mcp:read mcp:call",
                                                  groups=["eng"]))
    assert not isinstance(result, AuthFailure), result
    identity, until = result
    assert identity.key == "jwt:alice" and identity.method == "jwt"
    assert identity.scopes == {"mcp:read", "mcp:call"} and identity.groups == ("eng",)
    assert until > time.time()


def test_a_static_pem_key_verifies(issuer: Issuer) -> None:
    check = verifier(issuer, keys=[issuer.public_pem("rsa")])
    assert not isinstance(check.verify(issuer.token()), AuthFailure)


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    return f"{part({'alg': alg, 'typ': 'JWT', 'kid': 'rsa'})}.{part(claims)}."


def test_alg_none_is_refused(issuer: Issuer) -> None:
    claims = {"iss": Issuer.ISSUER, "aud": Issuer.AUDIENCE, "sub": "mallory",
              "exp": int(time.time()) + 300}
    failure = refused(verifier(issuer).verify(_unsigned(claims)))
    assert failure.status == 401 and failure.error == "invalid_token"
    assert "'none'" in failure.description


def test_hmac_signed_with_the_public_key_is_refused(issuer: Issuer) -> None:
    """The classic confusion: HS256 keyed with the RSA public key's PEM."""
    claims = {"iss": Issuer.ISSUER, "aud": Issuer.AUDIENCE, "sub": "mallory",
              "exp": int(time.time()) + 300}
    import hashlib
    import hmac

    head = base64.urlsafe_b64encode(json.dumps(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa"}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    mac = hmac.new(issuer.public_pem("rsa").encode(), head + b"." + body, hashlib.sha256)
    forged = b".".join([head, body, base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")])
    failure = refused(verifier(issuer, keys=[issuer.public_pem("rsa")]).verify(forged.decode()))
    assert "'HS256' are not accepted" in failure.description


def test_an_algorithm_with_a_key_of_another_type_is_refused(issuer: Issuer) -> None:
    """An ES256 token naming the RSA key's id: no key of its type, so no verification."""
    token = jwt.encode({"iss": Issuer.ISSUER, "aud": Issuer.AUDIENCE, "sub": "x",
                        "exp": int(time.time()) + 60}, issuer.private["ec"],
                       algorithm="ES256", headers={"kid": "rsa"})
    assert "no key" in refused(verifier(issuer).verify(token)).description


def test_a_signature_by_an_unknown_key_is_refused(issuer: Issuer) -> None:
    other = Issuer()
    failure = refused(verifier(issuer).verify(other.token()))
    assert failure.description == "the token's signature does not verify"


@pytest.mark.parametrize(("claims", "reason"), [
    ({"iss": "https://evil.test"}, "issuer is not trusted"),
    ({"aud": "https://other.test/mcp"}, "not issued for this resource"),
    ({"lifetime": -120}, "has expired"),
    ({"nbf": int(time.time()) + 600}, "not valid yet"),
    ({"lifetime": 300, "exp": None}, "no 'exp' claim"),
    ({"sub": ""}, "no 'sub' claim"),
])
def test_claims_that_do_not_hold_are_refused(issuer: Issuer, claims: dict[str, Any],
                                             reason: str) -> None:
    sub = claims.pop("sub", "alice")
    lifetime = claims.pop("lifetime", 300)
    token = issuer.token(sub, lifetime=lifetime, **claims)
    failure = refused(verifier(issuer).verify(token))
    assert reason in failure.description and failure.status == 401


def test_leeway_allows_a_little_clock_skew(issuer: Issuer) -> None:
    token = issuer.token(lifetime=-10)  # expired 10 s ago
    assert not isinstance(verifier(issuer, leeway=30.0).verify(token), AuthFailure)
    assert isinstance(verifier(issuer, leeway=0.0).verify(token), AuthFailure)


def test_a_missing_required_scope_is_403_insufficient_scope(issuer: Issuer) -> None:
    check = verifier(issuer, required_scopes=["mcp:call"])
    failure = refused(check.verify(issuer.token(scope="mcp:read")))
    assert (failure.status, failure.error, failure.scope) == (403, "insufficient_scope",
                                                              "mcp:call")
    assert not isinstance(check.verify(issuer.token(scp=["mcp:call"])), AuthFailure)


def test_a_bad_static_key_is_a_config_error_naming_it(issuer: Issuer) -> None:
    with pytest.raises(ValueError, match=r"auth\.jwt\.keys\[1\]"):
        verifier(issuer, keys=[issuer.public_pem("rsa"), "not a key"])


def test_the_jwks_is_fetched_rotated_and_refetched_at_most_every_min_interval(
        issuer: Issuer) -> None:
    url = issuer.serve()

    async def main() -> None:
        config = JwtConfig(issuer=Issuer.ISSUER, audience=[Issuer.AUDIENCE], jwks_url=url,
                           jwks_min_interval=0.5, jwks_refresh=3600.0)
        check = JwtVerifier(config, config.audience)
        assert check.jwks is not None
        await check.jwks.start()
        try:
            assert issuer.fetches == 1
            assert not isinstance(check.verify(issuer.token(kid="ec")), AuthFailure)
            # A new key: its first token is refused and sets off a refetch...
            issuer.rotate("k2")
            first = refused(check.verify(issuer.token(kid="k2")))
            assert "key id 'k2'" in first.description
            for _ in range(500):
                if "k2" in check.jwks.keys:
                    break
                await asyncio.sleep(0.01)
            assert issuer.fetches == 2
            # ...after which it verifies.
            assert not isinstance(check.verify(issuer.token(kid="k2")), AuthFailure)
            # Made-up key ids: at most one fetch per min_interval, however many.
            for i in range(50):
                check.verify(issuer.token(kid="rsa", headers={"kid": f"bogus{i}"}))
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.6)
            assert issuer.fetches <= 4, issuer.fetches
        finally:
            await check.jwks.stop()
    run(main())


def test_an_unreachable_jwks_refuses_tokens_and_keeps_retrying() -> None:
    async def main() -> None:
        source = JwksSource(JwtConfig(issuer="x", audience=["y"],
                                      jwks_url="http://127.0.0.1:9/jwks", jwks_timeout=0.5))
        started = time.monotonic()
        await source.start()  # logs, does not raise
        assert time.monotonic() - started < 5 and source.keys == {}
        await asyncio.sleep(1.2)
        assert source.failures >= 2
        await source.stop()
    run(main())


def test_a_tampered_payload_and_garbage_are_refused(issuer: Issuer) -> None:
    head, body, signature = issuer.token("alice", kid="ec").split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    check = verifier(issuer)
    assert refused(check.verify(f"{head}.{forged}.{signature}")).description == \
        "the token's signature does not verify"
    for garbage in ("a.b.c", "not a token", f"{head}..{signature}", ""):
        assert refused(check.verify(garbage)).status == 401


def test_an_access_token_type_can_be_required(issuer: Issuer) -> None:
    """RFC 9068 access tokens say typ at+jwt; with typ set, another JWT of the same
    issuer (an ID token, typ JWT) does not pass as one."""
    check = verifier(issuer, typ="at+jwt")
    assert not isinstance(check.verify(issuer.token(headers={"typ": "at+jwt"})), AuthFailure)
    assert not isinstance(check.verify(issuer.token(headers={"typ": "application/at+JWT"})),
                          AuthFailure)
    failure = refused(check.verify(issuer.token(headers={"typ": "JWT"})))
    assert failure.description == "the token's typ is not 'at+jwt'"
    assert not isinstance(verifier(issuer).verify(issuer.token(headers={"typ": "JWT"})),
                          AuthFailure)


def test_odd_headers_are_refused_not_raised(issuer: Issuer) -> None:
    """An alg that is not a string, and a key id in any script: a 401, never an
    exception (an unauthenticated client controls them)."""
    claims = {"iss": Issuer.ISSUER, "aud": Issuer.AUDIENCE, "sub": "x",
              "exp": int(time.time()) + 60}

    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    odd = f"{part({'alg': ['RS256'], 'kid': 'rsa'})}.{part(claims)}.c2ln"
    assert refused(verifier(issuer).verify(odd)).description == "the token names no algorithm"
    unknown = issuer.token(kid="rsa", headers={"kid": "日本"})
    failure = refused(verifier(issuer).verify(unknown))
    from mcpfast.auth.authenticator import Authenticator
    from mcpfast.config import parse

    auth = Authenticator(parse(f'[listen]\nauth = ["jwt"]\n[auth]\nresource = '
                               f'"{Issuer.AUDIENCE}"\n[auth.jwt]\nissuer = "{Issuer.ISSUER}"\n'
                               f'keys = {json.dumps([issuer.public_pem("rsa")])}\n'
                               '[upstreams.a]\ncommand = ["true"]\n'))
    (_, value), = auth.challenge(failure, "gw")
    value.encode("latin-1")  # a header can carry it
    assert value.isascii() and "\\u65e5" in value
