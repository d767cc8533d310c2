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

With ``endpoints``, a session's upstream is started on one of them: by ``balance =
"session"`` the first in the rendezvous order of the session's id (so a session whose
upstream was reaped comes back to the same endpoint), otherwise the one with the fewest
sessions. An endpoint whose upstream cannot start (refused, or exited before its
handshake) is passed over for the next in that order. Spares are spread over the
endpoints; a session bound by affinity takes only a spare on its own endpoint. The
session stays on its endpoint for the life of its upstream.

A modern client over Streamable HTTP has no session (each request stands alone): its
requests go to the template, balanced over the endpoints when there are several.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..config import UpstreamConfig
from ..upstream.balancer import rendezvous_order
from .call import Upstream
from .session import DownstreamSession

log = logging.getLogger("mcpfast.gateway")


class SessionPool:
    def __init__(self, template: Upstream, config: UpstreamConfig,
                 make: Callable[[int], Upstream]) -> None:
        self.template = template
        self.max_sessions = config.max_sessions
        self.spare_count = config.spares
        self.idle_timeout = config.session_idle_timeout
        self.endpoint_count = 1 + len(config.replicas)
        self.affinity = config.balance == "session"
        self._make = make
        """An upstream on the endpoint of that index."""
        self.endpoint_of: dict[Upstream, int] = {}
        """Each session's upstream's and spare's endpoint."""
        self._turn = 0
        self.assigned: dict[str, Upstream] = {}
        """Each session's upstream, by session id."""
        self.spares: list[Upstream] = []
        self._last_used: dict[str, float] = {}
        self._starting: dict[str, asyncio.Future[Upstream]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def members(self) -> list[Upstream]:
        """Every upstream the pool runs: the template (each endpoint's), the sessions',
        the spares."""
        balancer = self.template.balancer
        templates = balancer.members if balancer is not None else [self.template]
        return [*templates, *self.assigned.values(), *self.spares]

    @staticmethod
    def sessionless(session: DownstreamSession) -> bool:
        return session.transport == "http" and session.era == "modern"

    def ready_for(self, session: DownstreamSession) -> Upstream | None:
        """``session``'s upstream when one is ready for it now (its own, or a spare
        that becomes its own); None when one must be started (``starting``)."""
        self._last_used[session.id] = time.monotonic()
        upstream = self.assigned.get(session.id)
        if upstream is not None:
            return upstream
        if session.id in self._starting:
            return None  # its own is on its way: the call waits for it (``starting``)
        wanted = self._order(session.id)[0] if self.affinity else None
        for spare in self.spares:
            if spare.ready and wanted in (None, self.endpoint_of[spare]):
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
        order = self._order(session.id)
        spare: Upstream | None = None
        if len(self.assigned) + len(self._starting) + len(self.spares) >= self.max_sessions:
            # Spares count against max_sessions: one still starting becomes this one's
            # (with affinity, one on its own endpoint; else one makes room for it).
            if not self.spares:
                self.refused += 1
                raise LookupError(f"upstream {self.template.name!r} has an upstream for "
                                  f"each of its max_sessions ({self.max_sessions}) sessions")
            wanted = order[0] if self.affinity else None
            spare = next((s for s in self.spares
                          if wanted in (None, self.endpoint_of[s])), None)
            if spare is None:
                self._stop(self.spares.pop(0))
            else:
                self.spares.remove(spare)
        future: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self._starting[session.id] = future
        try:
            upstream = await self._start_on(order, spare)
        except BaseException as exc:
            del self._starting[session.id]
            future.set_exception(exc)
            future.exception()
            raise
        del self._starting[session.id]
        if session.closed:
            self._stop(upstream)
        else:
            self.assigned[session.id] = upstream
        future.set_result(upstream)
        return upstream

    async def _start_on(self, endpoints: list[int], spare: Upstream | None) -> Upstream:
        """An upstream through its handshake: ``spare`` (already started), else on the
        first of ``endpoints`` where one starts. One that fails its first attempt
        (refused, exited, or its handshake failed) is stopped and the next endpoint
        tried; the last one's error is raised, or TimeoutError when it was not ready
        within its ``init_timeout``."""
        if spare is not None:
            endpoints = [e for e in endpoints if e != self.endpoint_of[spare]]
        candidates: list[Upstream | int] = [*([spare] if spare is not None else []),
                                            *endpoints]
        for position, candidate in enumerate(candidates):
            upstream = self._new(candidate) if isinstance(candidate, int) else candidate
            last = position == len(candidates) - 1
            deadline = time.monotonic() + upstream.config.init_timeout
            try:
                if upstream is not spare:
                    await upstream.start()
                await asyncio.wait_for(upstream.attempted.wait(), upstream.config.init_timeout)
                if not upstream.ready and last:  # it keeps trying, as the only one left
                    await asyncio.wait_for(upstream.initialized_once.wait(),
                                           max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                if last:
                    self._stop(upstream)
                    raise
                # Connected but never through its handshake: the next endpoint.
                upstream.last_error = upstream.last_error or "no handshake within init_timeout"
            except BaseException:
                self._stop(upstream)
                raise
            if upstream.ready:
                return upstream
            log.warning("upstream %r: endpoint %d could not start a session's upstream "
                        "(%s); trying the next", self.template.name,
                        self.endpoint_of.get(upstream, -1), upstream.last_error)
            self._stop(upstream)
        raise AssertionError("unreachable: the last candidate returns or raises")

    def _new(self, endpoint: int) -> Upstream:
        upstream = self._make(endpoint)
        self.endpoint_of[upstream] = endpoint
        return upstream

    def _order(self, session_id: str) -> list[int]:
        """The endpoints to start ``session_id``'s upstream on, by preference."""
        if self.endpoint_count == 1:
            return [0]
        if self.affinity:
            return rendezvous_order(session_id, self.endpoint_count)
        sessions = [0] * self.endpoint_count
        for upstream in (*self.assigned.values(), *self.spares):
            sessions[self.endpoint_of[upstream]] += 1
        self._turn += 1
        turned = [(self._turn + i) % self.endpoint_count for i in range(self.endpoint_count)]
        # An endpoint whose template is down comes last, whatever its count (it has no
        # sessions because it cannot start them); ties go round.
        return sorted(turned, key=lambda e: (not self._template_up(e), sessions[e]))

    def _template_up(self, endpoint: int) -> bool:
        balancer = self.template.balancer
        member = balancer.members[endpoint] if balancer is not None else self.template
        return bool(member.ready)

    def replenish(self) -> None:
        """Start spares until ``spares`` are there, within ``max_sessions``: the
        sessions' upstreams, those starting and the spares together."""
        while len(self.spares) < self.spare_count and \
                len(self.assigned) + len(self._starting) + len(self.spares) < self.max_sessions:
            counts = [0] * self.endpoint_count
            for upstream in self.spares:
                counts[self.endpoint_of[upstream]] += 1
            spare = self._new(counts.index(min(counts)))
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
        self.endpoint_of.pop(upstream, None)
        self._track(asyncio.ensure_future(upstream.stop()))

    def _track(self, task: asyncio.Future[None]) -> None:
        self._stopping.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._stopping.discard)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        return {"mode": "per_session", "sessions": len(self.assigned),
                "starting": len(self._starting), "spares": len(self.spares),
                "spares_ready": sum(1 for s in self.spares if s.ready),
                "max_sessions": self.max_sessions,
                "sessions_by_endpoint": [
                    sum(1 for u in self.assigned.values() if self.endpoint_of.get(u) == i)
                    for i in range(self.endpoint_count)]}
