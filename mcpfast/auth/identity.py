"""Who a client is: set once at admission, fixed for the session, read by policies."""

from __future__ import annotations

from typing import Any

import msgspec


class Identity(msgspec.Struct, frozen=True, gc=False):
    """What the gateway knows of a client. Without authentication it is what the
    transport vouches for: the peer's IP address on TCP, and on the unix socket the
    connecting process's credentials as the kernel gives them (``SO_PEERCRED``). An
    authenticated client (auth/) also has a verified name, its groups, scopes and (for
    a JWT) claims; policies read only this."""

    key: str
    """What rate limits count by, logs and the admin API show: ``ip:ADDRESS``,
    ``uid:UID``, or for an authenticated client ``METHOD:NAME`` (``api_key:ci-bot``,
    ``jwt:alice``)."""
    address: str | None = None
    """The peer's IP address (TCP)."""
    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    """The connecting process's user, group and process ids (unix socket)."""
    method: str | None = None
    """How the client was authenticated (``api_key``, ``jwt``); None: it was not."""
    name: str | None = None
    """The verified name: the API key's name, the JWT's subject."""
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = frozenset()
    claims: dict[str, Any] | None = None
    """A JWT's claims, as verified (rules may match on them)."""

    @property
    def authenticated(self) -> bool:
        return self.method is not None

    def describe(self) -> dict[str, Any]:
        """What the admin API shows of it besides the key (never a credential)."""
        shown: dict[str, Any] = {name: value for name in ("address", "uid", "gid", "pid",
                                                          "method", "name")
                                 if (value := getattr(self, name)) is not None}
        if self.groups:
            shown["groups"] = list(self.groups)
        if self.scopes:
            shown["scopes"] = sorted(self.scopes)
        return shown

    def with_peer(self, address: str | None) -> Identity:
        """This identity as seen from ``address`` (a cached verification is shared by
        every connection presenting the same credential)."""
        return msgspec.structs.replace(self, address=address)
