"""Admission of client connections: how many may be open, in all and per peer address.

A peer that opens connections until the descriptor limit starves everything else in the
process, the admin port included (whose ``/liveness`` failing gets a container killed).
So the total is capped below the descriptor limit, leaving ``reserved_descriptors`` for
upstreams, the admin port and logs, and each peer address gets its own cap.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("mcpfast.transport")


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE, raised to the hard limit first when allowed (as nginx's
    worker_rlimit_nofile does): a gateway's connections are its descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


class Admission:
    __slots__ = ("_per_peer", "max_per_peer", "max_total", "open", "refused")

    def __init__(self, max_total: int, max_per_peer: int, reserved: int) -> None:
        self.configure(max_total, max_per_peer, reserved)
        self.open = 0
        self.refused = 0
        self._per_peer: dict[str, int] = {}

    def configure(self, max_total: int, max_per_peer: int, reserved: int) -> None:
        """Set the limits (a new config): connections already open stay, and count."""
        if max_total <= 0:
            max_total = max(16, descriptor_limit() - reserved)
        self.max_total = max_total
        self.max_per_peer = max_per_peer if max_per_peer > 0 else max(1, max_total // 2)

    def admit(self, peer: str | None) -> str | None:
        """Count a new connection from ``peer`` (an IP address; None for a unix-socket
        peer, which only the total limits); the reason to refuse it, or None."""
        if self.open >= self.max_total:
            self.refused += 1
            return f"the gateway has {self.open} client connections open, its limit"
        if peer is not None:
            count = self._per_peer.get(peer, 0)
            if count >= self.max_per_peer:
                self.refused += 1
                return f"{count} connections are open from {peer}, the limit per address"
            self._per_peer[peer] = count + 1
        self.open += 1
        return None

    def release(self, peer: str | None) -> None:
        self.open -= 1
        if peer is not None:
            count = self._per_peer.get(peer, 0) - 1
            if count > 0:
                self._per_peer[peer] = count
            else:
                self._per_peer.pop(peer, None)

    def peers(self) -> int:
        return len(self._per_peer)
