"""JWT bearer tokens: verified with PyJWT against static keys or the issuer's JWKS.

Only asymmetric algorithms are accepted (config.ASYMMETRIC_ALGORITHMS), each only with a
key of its own type, so neither ``none`` nor an HMAC "signature" made with a public key
gets through. ``iss``, ``aud``, ``exp`` are required; ``exp``, ``nbf`` and ``iat`` are
checked with the configured leeway.

The JWKS is fetched in the background (``JwksSource``): at start, every
``jwks_refresh`` seconds, and again when a token names a key id not seen yet, at most
every ``jwks_min_interval`` seconds (so a flood of made-up key ids costs the issuer
nothing). Verification itself never waits on the network: a token signed with a key not
fetched yet is refused, and passes once the refetch it set off has the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ..config import JwtConfig
from .identity import Identity

log = logging.getLogger("mcpfast.auth")

_FAMILIES: dict[str, tuple[type, ...]] = {
    "RS": (rsa.RSAPublicKey,), "PS": (rsa.RSAPublicKey,), "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)}


class AuthFailure(msgspec.Struct, frozen=True, gc=False):
    """Why a client is not admitted: the HTTP status (401, or 403 for a valid token
    without a scope it needs) and the OAuth error code (RFC 6750 3.1; None when no
    credential was presented)."""

    status: int
    error: str | None
    description: str
    scope: str | None = None
    """The scopes needed, for ``insufficient_scope``."""


def key_fits(algorithm: str, key: Any) -> bool:
    """Whether ``key`` (a public key object) is of the type ``algorithm`` signs with."""
    return isinstance(key, _FAMILIES.get(algorithm[:2], ()))


def _static_keys(texts: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Static keys by key id, and those without one."""
    by_id: dict[str, Any] = {}
    anonymous: list[Any] = []
    for i, text in enumerate(texts):
        text = text.strip()
        try:
            if text.startswith("{"):
                document = json.loads(text)
                jwks = document if "keys" in document else {"keys": [document]}
                for jwk in jwt.PyJWKSet.from_dict(jwks).keys:
                    if jwk.key_id:
                        by_id[jwk.key_id] = jwk.key
                    else:
                        anonymous.append(jwk.key)
            else:
                anonymous.append(load_pem_public_key(text.encode("ascii")))
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ValueError(f"auth.jwt.keys[{i}]: not a PEM public key, JWK or JWKS: "
                             f"{exc}") from None
    return by_id, anonymous


class JwksSource:
    """The issuer's published keys, kept fresh by a background task."""

    def __init__(self, config: JwtConfig) -> None:
        assert config.jwks_url is not None
        self.url = config.jwks_url
        self.refresh = config.jwks_refresh
        self.min_interval = config.jwks_min_interval
        self.timeout = config.jwks_timeout
        self.keys: dict[str, Any] = {}
        self.anonymous: list[Any] = []
        self.failures = 0
        self._last_attempt = float("-inf")
        self._wake = asyncio.Event()
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch the keys, waiting for the first answer up to ``jwks_timeout``; a failure
        is logged and retried (tokens are refused until the keys are there)."""
        self._task = asyncio.create_task(self._run(), name="jwks")
        try:
            await asyncio.wait_for(self._loaded.wait(), self.timeout)
        except TimeoutError:
            log.error("JWKS %s: no keys yet; tokens are refused until they come", self.url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def request_refetch(self) -> None:
        """A token named a key id not seen: fetch again, as soon as
        ``jwks_min_interval`` seconds have passed since the last fetch (however many
        ask, that is one fetch)."""
        self._wake.set()

    async def _run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            retry = 1.0
            while True:
                self._wake.clear()
                ok = await self._fetch(http)
                wait = self.refresh if ok else min(retry, self.refresh)
                retry = 1.0 if ok else min(retry * 2, self.refresh)
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    continue  # time to refresh (or to retry a failed fetch)
                delay = self._last_attempt + self.min_interval - time.monotonic()
                if delay > 0:  # woken for an unknown key id: never more often than this
                    await asyncio.sleep(delay)

    async def _fetch(self, http: Any) -> bool:
        import aiohttp

        self._last_attempt = time.monotonic()
        try:
            async with http.get(self.url, headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                document = await response.json(content_type=None)
            if not isinstance(document, dict):
                raise ValueError("the document is not a JSON object")
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (TimeoutError, aiohttp.ClientError, ValueError, TypeError, KeyError,
                AttributeError, jwt.PyJWTError) as exc:
            self.failures += 1
            log.error("JWKS %s: fetch failed (%s); keeping the %d keys held", self.url,
                      exc or type(exc).__name__, len(self.keys) + len(self.anonymous))
            return False
        self.keys = {jwk.key_id: jwk.key for jwk in keys if jwk.key_id}
        self.anonymous = [jwk.key for jwk in keys if not jwk.key_id]
        self._loaded.set()
        log.info("JWKS %s: %d keys", self.url, len(keys))
        return True


class JwtVerifier:
    """Verifies a token and makes the identity it names."""

    def __init__(self, config: JwtConfig, audience: list[str]) -> None:
        self.config = config
        self.issuer = config.issuer
        self.audience = audience
        self.algorithms = frozenset(config.algorithms)
        self.leeway = config.leeway
        self.required_scopes = frozenset(config.required_scopes)
        self.typ = config.typ.lower().removeprefix("application/") if config.typ else None
        self.static, self.static_anonymous = _static_keys(config.keys)
        self.jwks = JwksSource(config) if config.jwks_url else None

    def _keys(self, kid: str | None) -> list[Any]:
        if kid is not None:
            key = self.static.get(kid)
            if key is None and self.jwks is not None:
                key = self.jwks.keys.get(kid)
            if key is not None:
                return [key]
            if self.jwks is not None:
                self.jwks.request_refetch()
        return [*self.static_anonymous,
                *(self.jwks.anonymous if self.jwks is not None else ())]

    def verify(self, token: str) -> tuple[Identity, float] | AuthFailure:
        """The identity and the time (epoch seconds) it is valid until, or why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return AuthFailure(401, "invalid_token", "the bearer token is not a valid JWT")
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            return AuthFailure(401, "invalid_token", "the token names no algorithm")
        if self.typ is not None and \
                str(header.get("typ", "")).lower().removeprefix("application/") != self.typ:
            return AuthFailure(401, "invalid_token",
                               f"the token's typ is not {self.config.typ!r}")
        if algorithm not in self.algorithms:
            return AuthFailure(401, "invalid_token",
                               f"tokens signed with {algorithm!r} are not accepted")
        kid = header.get("kid")
        keys = [key for key in self._keys(kid if isinstance(kid, str) else None)
                if key_fits(algorithm, key)]
        if not keys:
            return AuthFailure(401, "invalid_token",
                               f"no key to verify the token with (key id {kid!r})")
        claims: dict[str, Any] | None = None
        reason = "the token's signature does not verify"
        for key in keys:
            try:
                claims = jwt.decode(token, key, algorithms=[algorithm], audience=self.audience,
                                    issuer=self.issuer, leeway=self.leeway,
                                    options={"require": ["exp", "iss", "aud"]})
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                reason = _reason(exc)
                break
        if claims is None:
            return AuthFailure(401, "invalid_token", reason)
        return self._identity(claims)

    def _identity(self, claims: dict[str, Any]) -> tuple[Identity, float] | AuthFailure:
        name = claims.get(self.config.name_claim)
        if not isinstance(name, str) or not name:
            return AuthFailure(401, "invalid_token",
                               f"the token has no {self.config.name_claim!r} claim")
        scopes = _scopes(claims)
        missing = self.required_scopes - scopes
        if missing:
            return AuthFailure(403, "insufficient_scope",
                               f"the token lacks scope {' '.join(sorted(missing))}",
                               " ".join(sorted(self.required_scopes)))
        groups = claims.get(self.config.groups_claim)
        if isinstance(groups, str):
            groups = [groups]
        identity = Identity(f"jwt:{name}", method="jwt", name=name,
                            groups=tuple(g for g in groups or () if isinstance(g, str)),
                            scopes=scopes, claims=claims)
        return identity, float(claims["exp"])


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """``scope`` (RFC 8693: space-separated) or ``scp`` (a list, as some issuers send)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token was not issued for this resource (audience)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token's issuer is not trusted"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    return f"the token is not valid: {exc}"
