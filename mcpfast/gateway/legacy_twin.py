"""LegacyTwin: a legacy connection beside a dual-era upstream's modern one, so that each
client is served in its own era end to end (PROTOCOL.md, "Whose message is it?": a
dual-era server's legacy tools may send push-style requests that its modern face cannot).

An upstream probed modern gets a twin, the same server pinned to the legacy era: with
``era = "both"``, and with ``era = "auto"`` when it is remote (the twin is then another
session of the same server; a stdio server's twin is a second process, whose state is
its own, so it is made only when asked for). It is started on the
first call of a legacy client, which waits for its handshake, and serves the legacy
clients' calls from then on; modern clients keep the modern connection. A server whose
legacy handshake fails is modern only: it gets no twin, and legacy clients are served by
the modern connection through the gateway's translation (gateway/mrtr.py), as they are
whenever the twin is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .call import Upstream

log = logging.getLogger("mcpfast.gateway")


class LegacyTwin:
    def __init__(self, upstream: Upstream, make: Callable[[], Upstream]) -> None:
        self.upstream = upstream
        self._make = make
        self.twin: Upstream | None = None
        self._gave_up = False
        """The twin's first handshake failed: the server is modern only."""

    def wanted(self) -> bool:
        upstream = self.upstream
        return upstream.dual_era and upstream.era == "modern"

    def ready(self) -> Upstream | None:
        twin = self.twin
        return twin if twin is not None and twin.ready else None

    async def starting(self) -> Upstream | None:
        """The twin, started if it is not yet and waited for (the first time, until its
        first handshake succeeds or fails); None when it is not ready (the modern
        connection serves). A server that refuses the legacy handshake gets no twin."""
        if self._gave_up:
            return None
        twin = self.twin
        if twin is None:
            self.twin = twin = self._make()
            log.info("upstream %r was probed modern: starting a legacy connection for its "
                     "legacy clients", self.upstream.name)
            await twin.start()
        if twin.ready:
            return twin
        if twin.initialized_once.is_set():
            return None  # it was up and is down now: it restarts by itself
        try:
            await asyncio.wait_for(asyncio.shield(twin.attempted.wait()),
                                   twin.config.init_timeout)
        except TimeoutError:
            pass
        if twin.ready:
            return twin
        self._gave_up = True
        self.twin = None
        log.info("upstream %r does not speak the legacy era (%s): legacy clients go "
                 "through its modern connection", self.upstream.name,
                 twin.last_error or "init_timeout")
        await twin.stop()
        return None
