"""Signed Streamable HTTP session ids (protocol/session_ids.py): what an id carries, who
accepts it, and that nothing else passes for one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time

import pytest

from mcpfast.protocol.mcp import LEGACY_VERSIONS
from mcpfast.protocol.session_ids import CAPABILITY_BITS, FORMAT, SessionSigner

SECRET = "a session secret of some length"


def raw(session_id: str) -> bytes:
    return base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(secret: bytes, payload: bytes) -> str:
    return encode(payload + hmac.new(secret, payload, hashlib.sha256).digest()[:16])


@pytest.mark.parametrize("version", LEGACY_VERSIONS)
def test_an_id_carries_the_version_and_capabilities(version: str) -> None:
    signer = SessionSigner(SECRET)
    before = int(time.time())
    session_id = signer.issue(version, {"sampling": {}, "roots": {"listChanged": True},
                                        "experimental": {}})
    claims = signer.verify(session_id)
    assert claims is not None
    assert claims.protocol_version == version
    assert claims.capabilities == {"sampling": {}, "roots": {}}
    assert before <= claims.issued_at <= int(time.time())


@pytest.mark.parametrize("names", [(), ("sampling",), ("elicitation",), ("roots",),
                                   ("sampling", "elicitation", "roots")])
def test_each_capability_has_its_own_bit(names: tuple[str, ...]) -> None:
    signer = SessionSigner(SECRET)
    claims = signer.verify(signer.issue("2025-06-18", {n: {} for n in names}))
    assert claims is not None and set(claims.capabilities) == set(names)
    assert sorted(CAPABILITY_BITS.values()) == [1, 2, 4]


def test_an_unknown_version_is_issued_as_the_oldest() -> None:
    signer = SessionSigner(SECRET)
    claims = signer.verify(signer.issue("1999-01-01", {}))
    assert claims is not None and claims.protocol_version == LEGACY_VERSIONS[0]


def test_the_layout_is_the_documented_one() -> None:
    signer = SessionSigner(SECRET)
    session_id = signer.issue(LEGACY_VERSIONS[2], {"elicitation": {}})
    data = raw(session_id)
    assert len(data) == 7 + 16 + 16 and len(session_id) <= 64
    fmt, version, bits, issued = struct.unpack(">BBBI", data[:7])
    assert (fmt, version, bits) == (FORMAT, 2, CAPABILITY_BITS["elicitation"])
    assert abs(issued - time.time()) < 5
    assert data[23:] == hmac.new(SECRET.encode(), data[:23], hashlib.sha256).digest()[:16]
    assert all(0x21 <= ord(c) <= 0x7E for c in session_id)


def test_ids_are_unguessable() -> None:
    signer = SessionSigner(SECRET)
    ids = {signer.issue("2025-11-25", {}) for _ in range(200)}
    assert len(ids) == 200
    randoms = {raw(i)[7:23] for i in ids}
    assert len(randoms) == 200


def test_replicas_sharing_the_secret_accept_each_other() -> None:
    one, two = SessionSigner(SECRET), SessionSigner(SECRET.encode())
    assert two.verify(one.issue("2025-11-25", {})) is not None
    assert SessionSigner("another secret, also long").verify(one.issue("2025-11-25", {})) \
        is None
    # Without a secret each process has a random key of its own.
    assert SessionSigner().verify(SessionSigner().issue("2025-11-25", {})) is None
    alone = SessionSigner("")
    assert alone.verify(alone.issue("2025-11-25", {})) is not None


def test_every_changed_byte_is_refused() -> None:
    signer = SessionSigner(SECRET)
    data = raw(signer.issue("2025-11-25", {"sampling": {}}))
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            forged = bytearray(data)
            forged[i] ^= flip
            assert signer.verify(encode(bytes(forged))) is None, (i, flip)


def test_malformed_ids_are_refused() -> None:
    signer = SessionSigner(SECRET)
    good = signer.issue("2025-11-25", {})
    data = raw(good)
    for bad in ("", "x", good[:-1], good + "A", good + "AAAA", "!" * len(good),
                good[:10] + "*" + good[11:], "A" * 65, encode(data[:-1]), encode(data + b"\0")):
        assert signer.verify(bad) is None, bad


@pytest.mark.parametrize("fmt,version", [(FORMAT + 1, 0), (0, 0),
                                         (FORMAT, len(LEGACY_VERSIONS)), (FORMAT, 255)])
def test_a_signed_id_of_another_format_or_version_is_refused(fmt: int, version: int) -> None:
    """Signed with the right key, but not an id this code issues."""
    payload = struct.pack(">BBBI", fmt, version, 0, int(time.time())) + b"r" * 16
    assert SessionSigner(SECRET).verify(sign(SECRET.encode(), payload)) is None
    # The same, well formed, passes: the refusal is about format and version alone.
    fine = struct.pack(">BBBI", FORMAT, len(LEGACY_VERSIONS) - 1, 7, 0) + b"r" * 16
    claims = SessionSigner(SECRET).verify(sign(SECRET.encode(), fine))
    assert claims is not None and claims.protocol_version == LEGACY_VERSIONS[-1]
    assert set(claims.capabilities) == {"sampling", "elicitation", "roots"}


def test_an_id_is_accepted_only_as_it_was_issued() -> None:
    """Base64 decoders skip characters outside their alphabet and padding past the
    data: every other spelling of a valid id is refused, or an ended id could come back
    under one of them."""
    signer = SessionSigner(SECRET)
    good = signer.issue("2025-11-25", {})
    assert len(good) == 52 and signer.verify(good) is not None
    for other in (good + "=", good + "=" * 40, good + ".", "." + good, good[:10] + "*" +
                  good[10:], good[:10] + "=" + good[10:], good + "\n", " " + good,
                  good[:-1], good[:-1] + "+", good.replace("-", "+").replace("_", "/")):
        if other != good:
            assert signer.verify(other) is None, other


# -- Endpoint's memory of ended ids (transport/streamable.py), in process -----------------

class _Gateway:
    """What Endpoint reads of its gateway to keep its session bookkeeping."""

    def __init__(self) -> None:
        from mcpfast import config
        self.config = config.parse("[upstreams.a]\ncommand = ['x']\n")


class _Session:
    def __init__(self, token: str, address: str, issued_at: int) -> None:
        self.token, self.address, self.issued_at = token, address, issued_at


def test_forgetting_the_oldest_ended_id_refuses_every_id_issued_up_to_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The revocation list is bounded (MAX_ENDED): past the bound the oldest entry goes,
    and ids issued up to its issue time are no longer adopted, so a deleted id never
    comes back; ids issued later still are."""
    from mcpfast.transport import streamable
    monkeypatch.setattr(streamable, "MAX_ENDED", 3)
    endpoint = streamable.Endpoint(_Gateway())  # type: ignore[arg-type]
    start = endpoint.not_before
    ended = [_Session(f"id{n}", "10.0.0.1", start + 10 + n) for n in range(4)]
    for session in ended:
        endpoint.sessions[session.token] = session  # type: ignore[assignment]
        endpoint.per_address["10.0.0.1"] = endpoint.per_address.get("10.0.0.1", 0) + 1
    for session in ended[:3]:
        endpoint.unregister(session)  # type: ignore[arg-type]
    assert list(endpoint.ended) == ["id0", "id1", "id2"]
    assert endpoint.not_before == start  # nothing forgotten yet
    endpoint.unregister(ended[3])  # type: ignore[arg-type]
    assert list(endpoint.ended) == ["id1", "id2", "id3"]  # the oldest went
    assert endpoint.not_before == start + 11
    assert not endpoint._adoptable(start + 10)  # the forgotten id's issue second
    assert endpoint._adoptable(start + 11)
    # Every session of the address ended: nothing is left counted for it.
    assert endpoint.per_address == {} and endpoint.sessions == {}


def test_an_address_is_counted_for_the_sessions_it_still_has() -> None:
    """The per-address cap (max_sessions_per_peer) counts live sessions: ending one of
    two leaves one counted, ending both leaves none."""
    from mcpfast.transport import streamable
    endpoint = streamable.Endpoint(_Gateway())  # type: ignore[arg-type]
    now = endpoint.not_before
    one, two = _Session("a1", "10.0.0.2", now), _Session("a2", "10.0.0.2", now)
    other = _Session("b1", "10.0.0.3", now)
    for session in (one, two, other):
        endpoint.sessions[session.token] = session  # type: ignore[assignment]
    endpoint.per_address.update({"10.0.0.2": 2, "10.0.0.3": 1})
    endpoint.unregister(one)  # type: ignore[arg-type]
    assert endpoint.per_address == {"10.0.0.2": 1, "10.0.0.3": 1}
    endpoint.unregister(one)  # type: ignore[arg-type]  # ended already: counted once
    assert endpoint.per_address == {"10.0.0.2": 1, "10.0.0.3": 1}
    endpoint.unregister(two)  # type: ignore[arg-type]
    assert endpoint.per_address == {"10.0.0.3": 1}
    assert list(endpoint.ended) == ["a1", "a2"]


def test_an_id_bound_to_an_identity_verifies_only_for_it() -> None:
    """What replicas sharing the key check before adopting a session another one
    issued: the identity it was issued to is under the MAC."""
    signer = SessionSigner("a-shared-secret-of-16+")
    replica = SessionSigner("a-shared-secret-of-16+")
    bound = signer.issue("2025-11-25", {}, "jwt:alice")
    assert replica.verify(bound, "jwt:alice") is not None
    assert replica.verify(bound, "jwt:mallory") is None
    assert replica.verify(bound) is None
    assert replica.verify(signer.issue("2025-11-25", {}), "jwt:alice") is None
