"""API keys: the config holds each key's SHA-256 only, with a name, groups and scopes."""

from __future__ import annotations

import hashlib
import secrets

from ..config import ApiKeyConfig
from .identity import Identity


def hash_key(key: str) -> str:
    """What ``[[auth.api_keys]]`` stores for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe."""
    return "mcpf_" + secrets.token_urlsafe(32)


class ApiKeys:
    """The configured keys, looked up by the digest of what a client presents (a hash
    of a secret leaks nothing through the lookup's timing)."""

    __slots__ = ("_by_digest",)

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._by_digest = {
            bytes.fromhex(key.hash.removeprefix("sha256:")): Identity(
                f"api_key:{key.name}", method="api_key", name=key.name,
                groups=tuple(key.groups), scopes=frozenset(key.scopes))
            for key in keys}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def verify(self, key: str) -> Identity | None:
        return self._by_digest.get(hashlib.sha256(key.encode("utf-8")).digest())
