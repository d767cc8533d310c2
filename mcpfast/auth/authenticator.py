"""Admission by credential: what the transports ask once per WebSocket upgrade,
Streamable HTTP request and unix-socket connection.

A client presents an API key (``Authorization: Bearer KEY`` or ``auth.api_key_header``)
or a JWT (``Authorization: Bearer JWT``); any method the listener lists admits it.
A credential verified once is remembered until it expires (a bounded table), so a
client that sends the same token with every request is verified once, and a WebSocket
client once per connection. As an OAuth 2.1 resource server (MCP authorization; RFC
9728, RFC 6750), the gateway answers a missing or bad token with 401 and a
``WWW-Authenticate: Bearer resource_metadata=...`` challenge, a token without a needed
scope with 403 ``insufficient_scope``, and serves its protected-resource metadata.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, ConfigError
from .api_keys import ApiKeys
from .identity import Identity
from .tokens import AuthFailure, JwtVerifier

log = logging.getLogger("mcpfast.auth")
audit = logging.getLogger("mcpfast.audit")

METADATA_PATH = "/.well-known/oauth-protected-resource"
MISSING = AuthFailure(401, None, "authentication required: send Authorization: Bearer "
                                 "with a token or API key")
API_KEY_TTL = 300.0
"""How long a verified API key is remembered: a key removed by a reload is refused
from the reload on (the table is new), so this only bounds the memory."""


def _jwks_settings(authenticator: Authenticator) -> tuple[object, ...] | None:
    verifier = authenticator.jwt
    if verifier is None or verifier.jwks is None:
        return None
    config = verifier.config
    return (config.jwks_url, config.jwks_refresh, config.jwks_min_interval,
            config.jwks_timeout)


def _credential(value: str) -> str | None:
    """The credential in a header value ``authenticate`` found: a bearer token, or
    (after a NUL) an API key."""
    credential = value[1:] if value.startswith("\0") else value[7:]
    return credential.strip() or None


class Authenticator:
    """The listener's authentication, built from one config snapshot."""

    def __init__(self, config: Config, failures: dict[str, int] | None = None) -> None:
        auth = config.auth
        listen = config.listen
        self.methods = tuple(listen.auth)
        self.required = bool(self.methods)
        self.mtls = "mtls" in self.methods
        """A verified client certificate admits (its subject's CN is the name)."""
        self.scheme = "https" if listen.tls is not None else "http"
        self.api_keys = ApiKeys(auth.api_keys) if "api_key" in self.methods else None
        self.api_key_header = auth.api_key_header
        self.jwt: JwtVerifier | None = None
        if "jwt" in self.methods and auth.jwt is not None:
            try:
                self.jwt = JwtVerifier(auth.jwt, auth.jwt.audience or [auth.resource])
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.resource = auth.resource
        self.path = listen.path
        self.authorization_servers = auth.authorization_servers or (
            [auth.jwt.issuer] if auth.jwt is not None else [])
        self.scopes_supported = auth.scopes_supported
        self.cache_size = auth.cache_size
        self._cache: dict[str, tuple[Identity, float]] = {}
        self.unix_uids = frozenset(listen.unix_allow_uids) \
            if listen.unix_allow_uids is not None else None
        self.unix_gids = frozenset(listen.unix_allow_gids) \
            if listen.unix_allow_gids is not None else None
        self.failures = failures if failures is not None else {}
        """Refused admissions by reason (``missing``, ``invalid_token``,
        ``insufficient_scope``, ``unix_peer``): a metric, kept across reloads."""

    async def start(self) -> None:
        if self.jwt is not None and self.jwt.jwks is not None:
            await self.jwt.jwks.start()

    async def stop(self) -> None:
        if self.jwt is not None and self.jwt.jwks is not None:
            await self.jwt.jwks.stop()

    def same_sources(self, other: Authenticator) -> bool:
        """Whether ``other`` fetches keys as this one does (a reload that changes nothing
        there, whatever else of the JWT settings it changes, keeps the keys fetched)."""
        return _jwks_settings(self) == _jwks_settings(other)

    def adopt_keys(self, old: Authenticator) -> None:
        """Take ``old``'s fetched keys and background fetch (same sources)."""
        if self.jwt is not None and old.jwt is not None:
            self.jwt.jwks = old.jwt.jwks

    # -- admission -----------------------------------------------------------------------
    def authenticate(self, header: Callable[[str], str | None], peer: str | None,
                     certified: Identity | None = None) -> Identity | AuthFailure:
        """The identity the request's credential proves, or why it is refused
        (``peer``: for the audit log; ``certified``: who the connection's verified
        client certificate names, which admits where mutual TLS is a method)."""
        if certified is not None and self.mtls:
            return certified
        # Remembered by the header's value as sent (a bearer Authorization header's, or
        # the API-key header's after a NUL so that the two never meet): a client sends
        # the same bytes every time, and nothing has to be parsed to find them again.
        key = header("Authorization")
        if key is None or key[:7].lower() != "bearer ":
            key = self._api_key_value(header)
        if key is None or (credential := _credential(key)) is None:
            return self._refused(MISSING, peer)
        now = time.time()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[key]
        verified = self._verify(credential, now)
        if isinstance(verified, AuthFailure):
            return self._refused(verified, peer)
        identity, until = verified
        if len(self._cache) >= self.cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest
        self._cache[key] = (identity, until)
        return identity

    def _api_key_value(self, header: Callable[[str], str | None]) -> str | None:
        if self.api_keys is None:
            return None
        value = header(self.api_key_header)
        return "\0" + value if value is not None else None



    def _verify(self, credential: str, now: float) -> tuple[Identity, float] | AuthFailure:
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        if self.api_keys is not None:
            identity = self.api_keys.verify(credential)
            if identity is not None:
                return identity, now + API_KEY_TTL
        return AuthFailure(401, "invalid_token", "the credential is not valid")

    def _refused(self, failure: AuthFailure, peer: str | None) -> AuthFailure:
        reason = failure.error or "missing"
        self.failures[reason] = self.failures.get(reason, 0) + 1
        audit.warning("authentication refused: peer=%s reason=%s detail=%s", peer, reason,
                      failure.description, extra={"event": "authentication_refused",
                                                  "peer": peer, "reason": reason})
        return failure

    def admit_unix(self, uid: int | None, gid: int | None) -> str | None:
        """Why a unix-socket peer is refused by the allow-lists, or None."""
        if self.unix_uids is None and self.unix_gids is None:
            return None
        if (self.unix_uids is not None and uid in self.unix_uids) or \
                (self.unix_gids is not None and gid in self.unix_gids):
            return None
        self.failures["unix_peer"] = self.failures.get("unix_peer", 0) + 1
        audit.warning("authentication refused: unix peer uid=%s gid=%s is not allowed",
                      uid, gid, extra={"event": "authentication_refused", "uid": uid,
                                       "gid": gid, "reason": "unix_peer"})
        return f"uid {uid}, gid {gid} may not connect"

    # -- the OAuth resource server's side ------------------------------------------------
    def resource_uri(self, host: str | None) -> str:
        return self.resource or f"{self.scheme}://{host or 'localhost'}{self.path}"

    def metadata_url(self, host: str | None) -> str:
        """RFC 9728 3.1: the well-known path inserted before the resource's path."""
        parts = urlsplit(self.resource_uri(host))
        return f"{parts.scheme}://{parts.netloc}{METADATA_PATH}{parts.path.rstrip('/')}"

    def challenge(self, failure: AuthFailure, host: str | None) -> list[tuple[str, str]]:
        """The ``WWW-Authenticate`` header for a refusal (RFC 6750 3, RFC 9728 5.1)."""
        # The metadata is named only where it is served (JWTs): a client sent to a 404
        # would start an OAuth discovery that cannot succeed, when a key is what it needs.
        params = [f'resource_metadata="{self.metadata_url(host)}"'] if self.jwt is not None \
            else ['realm="mcpfast"']
        if failure.error is not None:
            params.append(f'error="{failure.error}"')
            # A header value is ASCII here: what a token said (a key id) is escaped.
            described = failure.description.replace('"', "'").replace("\\", "/")
            params.append('error_description="{}"'.format(
                described.encode("ascii", "backslashreplace").decode("ascii")))
        scope = failure.scope
        if scope is None and self.jwt is not None and self.jwt.required_scopes:
            # What a token must carry, for the client to ask for it (MCP authorization
            # "Scope Selection Strategy": servers SHOULD name it in the challenge).
            scope = " ".join(sorted(self.jwt.required_scopes))
        if scope is not None:
            params.append(f'scope="{scope}"')
        return [("WWW-Authenticate", "Bearer " + ", ".join(params))]

    def serves_metadata(self, path: str) -> bool:
        return self.jwt is not None and (
            path == METADATA_PATH or path == METADATA_PATH + self.path.rstrip("/"))

    def metadata(self, host: str | None) -> dict[str, Any]:
        """The protected-resource metadata document (RFC 9728 2)."""
        document: dict[str, Any] = {
            "resource": self.resource_uri(host),
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpfast",
        }
        if self.scopes_supported:
            document["scopes_supported"] = self.scopes_supported
        return document
