"""Free loopback ports for the servers and gateways the harnesses start."""

from __future__ import annotations

import collections
import random
import socket
from collections.abc import Container
from pathlib import Path

_GIVEN: collections.deque[int] = collections.deque(maxlen=1000)
"""The ports this process handed out lately: free now, and perhaps about to be bound by
what they were given to (a gateway's listener and its admin port, asked for in a row,
must not be the same one)."""


def free_port(avoid: Container[int] = ()) -> int:
    """A free port below the kernel's ephemeral range, which no outgoing connection can
    take before it is bound (a faulted server may be down for a while); none of
    ``avoid``, nor one this process handed out lately."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100):
        port = random.randrange(10000, max(10001, low))
        if port in avoid or port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.append(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")
