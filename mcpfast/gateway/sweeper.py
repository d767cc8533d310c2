"""The gateway's sweep, every ``SWEEP_INTERVAL``: what no single event ends. It measures
the bytes buffered everywhere (the overload switch), times out the requests upstreams did
not answer, lets go of expired parked calls and idle per-session upstreams, evicts
rate-limit buckets that have refilled, and closes idle sessions. Off the data path."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ..config import Config
from .batch import Batches
from .call import Upstream
from .fleet import Fleet
from .mrtr import InputBridge
from .per_session import SessionPool
from .rate_limit import RateLimit
from .session import DownstreamSession

log = logging.getLogger("mcpfast.gateway")

SWEEP_INTERVAL = 0.5
EVICT_EVERY = 10
"""Sweeps between evictions of rate-limit buckets that have refilled (5 s)."""


class Swept(Protocol):
    """What the sweep reads and sets (the Gateway)."""

    config: Config
    upstreams: dict[str, Upstream]
    listeners: list[Any]
    sessions: dict[str, DownstreamSession]
    rate_limits: tuple[RateLimit, ...]
    fleet: Fleet
    mrtr: InputBridge
    buffered: int
    overloaded: bool

    def pools(self) -> list[SessionPool]: ...


async def sweep_forever(gw: Swept) -> None:
    sweeps = 0
    idle_closed: set[str] = set()
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        # Read each time: a reload may have changed it (the config snapshot).
        idle = gw.config.listen.idle_timeout
        # A Streamable HTTP session has no connection to be idle on: it ends after
        # listen.http.session_timeout without a request.
        idle_http = gw.config.listen.http.session_timeout
        measure_buffers(gw)
        now = time.monotonic()
        for upstream in gw.fleet.all():
            if upstream.pending:
                upstream.sweep(now)
        gw.mrtr.sweep(now)
        for pool in gw.pools():
            pool.reap(now)
        sweeps += 1
        if gw.rate_limits and sweeps % EVICT_EVERY == 0:
            for limit in gw.rate_limits:
                limit.evict_full(now)
        # A session closed for idleness stays until the client answers the close, or
        # its connection is aborted: it is not closed (and logged) again meanwhile.
        idle_closed.intersection_update(gw.sessions)
        for session in list(gw.sessions.values()):
            if session.id in idle_closed:
                continue
            if session.inflight or session.listens or session.subscriptions:
                # Waiting for an answer, or for what a stream or a resource subscription
                # brings, is not idleness: the idle time starts again when the last
                # request, stream or subscription ends (to a sweep).
                session.last_activity = now
                continue
            if session.idle_for(now) > (idle_http if session.transport == "http" else idle):
                log.info("closing idle session %s (%s)", session.id, session.peer)
                idle_closed.add(session.id)
                session.close(1001, "idle timeout")


def measure_buffers(gw: Swept) -> None:
    """Envoy's overload manager, sampled: the bytes queued everywhere (the answers
    batches hold included) decide whether new work is taken (``gw.overloaded``, until
    they fall below half the limit)."""
    total = sum(u.buffered() for u in gw.upstreams.values())
    for listener in gw.listeners:
        for connection in listener.connections:
            total += connection.buffered()
    for session in gw.sessions.values():
        batches = session.answer
        if type(batches) is Batches:  # the answers its batches hold
            total += batches.held()
    gw.buffered = total
    limit = gw.config.limits.process_buffer_bytes
    if not gw.overloaded and total > limit:
        gw.overloaded = True
        log.warning("%d bytes are buffered (limits.process_buffer_bytes is %d): "
                    "refusing new requests until they drain", total, limit)
    elif gw.overloaded and total < limit // 2:
        gw.overloaded = False
        log.warning("buffers drained to %d bytes: taking new requests again", total)
