"""The upstreams a reload changes: added ones start, removed ones are drained, changed
ones are replaced, without a dropped call.

- Added: started at once; its tools join the lists when it is ready (sessions are told).
- Removed: taken out of routing at once (its names become unknown), while the calls it
  has in flight finish; then it is stopped. Calls still running after
  ``shutdown.drain_timeout`` are failed.
- Changed (its table differs): a new instance is started beside the old one; once it is
  ready, routing switches to it and the old one is retired as a removed one is. If the
  new one does not become ready within its init_timeout, it is stopped and the old one
  stays.

Retiring upstreams are still swept for time-outs and counted in flight, so a drain or a
shutdown waits for them too. Reloads may come faster than replacements start: each name
has a generation, and a replacement that a later reload overtook (a newer replacement,
or the name's removal) is stopped instead of taking over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import Config, UpstreamConfig
from .call import Upstream

log = logging.getLogger("mcpfast.gateway")


class Fleet:
    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.retiring: list[Upstream] = []
        """Upstreams out of routing, finishing their calls before they stop."""
        self.starting: list[Upstream] = []
        """Replacements not ready yet."""
        self._generation: dict[str, int] = {}

    def all(self) -> list[Upstream]:
        """Every upstream running: those routed to, retiring, or starting, each
        endpoint of them."""
        members: list[Upstream] = []
        for upstream in (*self.gw.upstreams.values(), *self.retiring, *self.starting):
            members.extend(upstream.pool.members if upstream.pool is not None
                           else upstream.balancer.members if upstream.balancer is not None
                           else (upstream,))
            twin = upstream.legacy_twin
            if twin is not None and twin.twin is not None:
                members.append(twin.twin)
        return members

    def reconcile(self, old: dict[str, UpstreamConfig], config: Config) -> list[str]:
        """Make the upstreams what ``config`` says; what changes, as log phrases."""
        new = config.upstreams
        changes: list[str] = []
        for name in {*old, *new}:
            if old.get(name) != new.get(name):
                self._generation[name] = self._generation.get(name, 0) + 1
        for name in [n for n in old if n not in new]:
            self._remove(name)
            changes.append(f"{name} removed")
        for name in [n for n in new if n in old and new[n] != old[n]]:
            self._replace(name, new[name], config)
            changes.append(f"{name} replaced")
        for name in [n for n in new if n not in old]:
            self._add(name, new[name], config)
            changes.append(f"{name} added")
        return changes

    def _make(self, name: str, upstream: UpstreamConfig, config: Config) -> Upstream:
        return self.gw.make_upstream(name, len(self.gw.upstreams), upstream,
                                     config.interpolated)

    def _reroute(self) -> None:
        """Route to the upstreams as they are now, and tell the sessions what changed."""
        self.gw.catalog.rebuild(upstreams=list(self.gw.upstreams.values()))

    def _add(self, name: str, upstream: UpstreamConfig, config: Config) -> None:
        fresh = self._make(name, upstream, config)
        self.gw.upstreams[name] = fresh
        self._reroute()
        self.gw.background(fresh.start())

    def _remove(self, name: str) -> None:
        upstream = self.gw.upstreams.pop(name)
        self._reroute()
        self._retire(upstream, "it was removed from the config")

    def _replace(self, name: str, upstream: UpstreamConfig, config: Config) -> None:
        fresh = self._make(name, upstream, config)
        generation = self._generation[name]
        self.starting.append(fresh)

        async def swap() -> None:
            # Cancelled (a shutdown), it stays in ``starting``, and the gateway stops it.
            try:
                await fresh.start()
                await asyncio.wait_for(fresh.initialized_once.wait(), upstream.init_timeout)
            except TimeoutError:
                self.starting.remove(fresh)
                log.error("upstream %r: the new instance was not ready within %g s (%s); "
                          "the old one stays", name, upstream.init_timeout,
                          fresh.last_error or "no answer")
                await fresh.stop_all()
                return
            self.starting.remove(fresh)
            if self._generation.get(name) != generation:
                log.info("upstream %r: a later reload overtook this replacement", name)
                await fresh.stop_all()
                return
            old = self.gw.upstreams.get(name)
            self.gw.upstreams[name] = fresh
            self._reroute()
            log.info("upstream %r: the new instance serves from now on", name)
            if old is not None:
                self._retire(old, "it was replaced by a reload")
        self.gw.background(swap())

    def _retire(self, upstream: Upstream, why: str) -> None:
        self.retiring.append(upstream)

        async def retire() -> None:
            deadline = time.monotonic() + self.gw.config.shutdown.drain_timeout
            while upstream.pending and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if upstream.pending:
                log.warning("upstream %r: %d calls still running after the drain "
                            "timeout; failing them", upstream.name, len(upstream.pending))
                upstream.fail_all(f"upstream {upstream.name!r} was stopped: {why}")
            await upstream.stop_all()
            self.retiring.remove(upstream)
            log.info("upstream %r stopped: %s", upstream.name, why)
        self.gw.background(retire())
