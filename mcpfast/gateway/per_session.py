"""SessionPool: an upstream with ``mode = "per_session"``: each client session gets an
upstream of its own (a process, or a connection), for servers that keep state per
client, and so that whatever the server says (sampling, elicitation, roots, log
messages) is that one client's.

The upstream as routed to is a template: started like any other, it gives the catalog
and the handshake's verdict, and serves no client. A session's first call takes a
ready spare when there is one (``spares`` are kept started), else starts an upstream
for it and waits for its handshake; ``max_sessions`` bounds them (past it, -32000). The
session's upstream is stopped when the client leaves, or after ``session_idle_timeout``
seconds with nothing in flight (the next call starts a new one).

A modern client over Streamable HTTP has no session (each request stands alone): its
requests go to the template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..config import UpstreamConfig
from .call import Upstream
from .session import DownstreamSession

log = logging.getLogger("mcpfast.gateway")


class SessionPool:
    def __init__(self, template: Upstream, config: UpstreamConfig,
                 make: Callable[[], Upstream]) -> None:
        self.template = template
        self.max_sessions = config.max_sessions
        self.spare_count = config.spares
        self.idle_timeout = config.session_idle_timeout
        self._make = make
        self.assigned: dict[str, Upstream] = {}
        """Each session's upstream, by session id."""
        self.spares: list[Upstream] = []
        self._last_used: dict[str, float] = {}
        self._starting: dict[str, asyncio.Future[Upstream]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def members(self) -> list[Upstream]:
        """Every upstream the pool runs: the template, the sessions', the spares."""
        return [self.template, *self.assigned.values(), *self.spares]

    @staticmethod
    def sessionless(session: DownstreamSession) -> bool:
        return session.transport == "http" and session.era == "modern"

    def ready_for(self, session: DownstreamSession) -> Upstream | None:
        """``session``'s upstream when one is ready for it now (its own, or a spare
        that becomes its own); None when one must be started (``starting``)."""
        if self.sessionless(session):
            return self.template
        self._last_used[session.id] = time.monotonic()
        upstream = self.assigned.get(session.id)
        if upstream is not None:
            return upstream
        for spare in self.spares:
            if spare.ready:
                self.spares.remove(spare)
                self.assigned[session.id] = spare
                self.replenish()
                return spare
        return None

    async def starting(self, session: DownstreamSession) -> Upstream:
        """Start an upstream for ``session`` and return it once it is through its
        handshake. Raises LookupError when ``max_sessions`` are taken, TimeoutError
        when it is not ready within its ``init_timeout``."""
        pending = self._starting.get(session.id)
        if pending is not None:
            return await asyncio.shield(pending)
        spare: Upstream | None = None
        if len(self.assigned) + len(self._starting) + len(self.spares) >= self.max_sessions:
            # Spares count against max_sessions: one still starting becomes this one's.
            if not self.spares:
                self.refused += 1
                raise LookupError(f"upstream {self.template.name!r} has an upstream for "
                                  f"each of its max_sessions ({self.max_sessions}) sessions")
            spare = self.spares.pop(0)
        future: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self._starting[session.id] = future
        upstream = spare if spare is not None else self._make()
        try:
            if spare is None:
                await upstream.start()
            await asyncio.wait_for(upstream.initialized_once.wait(),
                                   upstream.config.init_timeout)
        except BaseException as exc:
            del self._starting[session.id]
            future.set_exception(exc)
            future.exception()
            self._stop(upstream)
            raise
        del self._starting[session.id]
        if session.closed:
            self._stop(upstream)
        else:
            self.assigned[session.id] = upstream
        future.set_result(upstream)
        return upstream

    def replenish(self) -> None:
        """Start spares until ``spares`` are there, within ``max_sessions``: the
        sessions' upstreams, those starting and the spares together."""
        while len(self.spares) < self.spare_count and \
                len(self.assigned) + len(self._starting) + len(self.spares) < self.max_sessions:
            spare = self._make()
            self.spares.append(spare)
            self._track(asyncio.ensure_future(spare.start()))

    def release(self, session: DownstreamSession) -> None:
        """The client left: its upstream is stopped."""
        self._last_used.pop(session.id, None)
        upstream = self.assigned.pop(session.id, None)
        if upstream is not None:
            self._stop(upstream)
            self.replenish()

    def reap(self, now: float) -> None:
        """Stop the upstreams of sessions idle for ``session_idle_timeout``."""
        if not self.idle_timeout:
            return
        for session_id, upstream in list(self.assigned.items()):
            if not upstream.pending and \
                    now - self._last_used.get(session_id, now) > self.idle_timeout:
                log.info("upstream %r: stopping the idle session %s's upstream",
                         self.template.name, session_id)
                del self.assigned[session_id]
                self._last_used.pop(session_id, None)
                self._stop(upstream)
        self.replenish()

    def _stop(self, upstream: Upstream) -> None:
        self._track(asyncio.ensure_future(upstream.stop()))

    def _track(self, task: asyncio.Future[None]) -> None:
        self._stopping.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._stopping.discard)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        return {"mode": "per_session", "sessions": len(self.assigned),
                "starting": len(self._starting), "spares": len(self.spares),
                "spares_ready": sum(1 for s in self.spares if s.ready),
                "max_sessions": self.max_sessions}
