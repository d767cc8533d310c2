"""Signed Streamable HTTP session ids.

An id is random (unguessable) and carries, under an HMAC, what another replica needs to
serve the session without having issued it: the negotiated protocol version and the
client capabilities that decide which server-to-client requests may be relayed. Replicas
that share ``listen.http.session_secret`` accept each other's ids.

Layout before base64url: format (1 byte), version index (1), capability bits (1), issue
time (4, seconds), random (16), then the first 16 bytes of HMAC-SHA256 over all of it.
Every character is visible ASCII (basic/transports "Session Management").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from dataclasses import dataclass

from .mcp import LEGACY_VERSIONS

FORMAT = 1
_HEAD = struct.Struct(">BBBI")
_RANDOM = 16
_MAC = 16
_PAYLOAD = _HEAD.size + _RANDOM
_ID_LENGTH = -(-(_PAYLOAD + _MAC) * 4 // 3)  # unpadded base64: 4 characters per 3 bytes
_ID = re.compile(f"[A-Za-z0-9_-]{{{_ID_LENGTH}}}")
"""The one spelling of an id: unpadded URL-safe base64 of payload and MAC (39 bytes are
52 characters, every bit used). Base64 decoders skip what is outside their alphabet and
padding past the data, so without this one id would have many spellings, and an ended
one could come back under another (the endpoint remembers ended ids by string)."""
CAPABILITY_BITS = {"sampling": 1, "elicitation": 2, "roots": 4}


@dataclass(frozen=True, slots=True)
class SessionClaims:
    protocol_version: str
    capabilities: dict[str, dict[str, object]]
    issued_at: int


class SessionSigner:
    def __init__(self, secret: str | bytes = b"") -> None:
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._key = secret or secrets.token_bytes(32)

    def issue(self, protocol_version: str, capabilities: dict[str, object],
              bound_to: str = "") -> str:
        """A new id; ``bound_to`` (an identity's key) is signed with it, unseen, and
        the id verifies only for the same ``bound_to``."""
        try:
            version = LEGACY_VERSIONS.index(protocol_version)
        except ValueError:
            version = 0
        bits = 0
        for name, bit in CAPABILITY_BITS.items():
            if name in capabilities:
                bits |= bit
        payload = _HEAD.pack(FORMAT, version, bits, int(time.time()) & 0xFFFFFFFF) \
            + secrets.token_bytes(_RANDOM)
        raw = payload + self._mac(payload, bound_to)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, session_id: str, bound_to: str = "") -> SessionClaims | None:
        """The claims of an id this key signed for ``bound_to``, or None for anything
        else."""
        if not isinstance(session_id, str) or _ID.fullmatch(session_id) is None:
            return None
        raw = base64.urlsafe_b64decode(session_id)
        payload, mac = raw[:_PAYLOAD], raw[_PAYLOAD:]
        if not hmac.compare_digest(mac, self._mac(payload, bound_to)):
            return None
        fmt, version, bits, issued = _HEAD.unpack_from(payload)
        if fmt != FORMAT or version >= len(LEGACY_VERSIONS):
            return None
        caps: dict[str, dict[str, object]] = {
            name: {} for name, bit in CAPABILITY_BITS.items() if bits & bit}
        return SessionClaims(LEGACY_VERSIONS[version], caps, issued)

    def _mac(self, payload: bytes, bound_to: str) -> bytes:
        if bound_to:
            payload += b"\0" + bound_to.encode("utf-8")
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC]
