"""The admin port's live dashboard: a page that holds no data (``static/``), and one
Server-Sent Events stream of the gateway's state and traffic, behind the admin token.

Off the data path. Rates come from the counters the data path keeps anyway, read once
a second on the admin app's own timer into a rolling window (``TrafficWindow``). The
timer runs whether or not anyone watches, so that a dashboard opened after an incident
shows the minutes before it: a reading is some twenty integers plus, with
``[metrics] per_tool``, a column sum over the per-tool lists (measured: 20 µs for 20
tools, 0.3 ms for the most, 1,000), once a second. Latency comes from the per-tool
histograms when they are kept; without them, a ``LatencyTap`` joins
``Gateway.observers`` while at least one stream is open and leaves when the last one
closes, so that an unwatched gateway pays nothing.

The page reads the stream with ``fetch()`` rather than ``EventSource``, which cannot
send an ``Authorization`` header: a token in the URL would land in access logs, proxy
logs and the browser's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_right
from collections import deque
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from ..gateway.call import OUTCOMES, Request, Upstream
from ..gateway.tool_stats import BOUNDS, FIRST_BUCKET, SUM, ToolStats

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway

WINDOW_SECONDS = 300
"""How far back the charts go: one sample a second."""
SAMPLE_INTERVAL = 1.0
MAX_SESSIONS_SHOWN = 200
"""Rows of the open-sessions table; the count and the split by transport cover all."""
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PAGE_PATHS = frozenset({"/dashboard", "/dashboard/", *(f"/dashboard/{a}" for a in ASSETS)})
"""Served without a token: they hold no data (the stream behind them needs one)."""
# The page runs only its own script and talks only to its own origin: a script that
# could be injected could read the token the page keeps in sessionStorage.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_encode = msgspec.json.Encoder().encode


class LatencyTap:
    """Latency of every request that ends, for when the per-tool histograms are off:
    told by ``Gateway.ended`` only while a dashboard stream is open."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BOUNDS) + 1)
        self.count = 0
        self.total = 0.0

    def record(self, upstream: Upstream, request: Request, outcome: int) -> None:
        started = request.started
        if started:
            elapsed = time.monotonic() - started
            self.buckets[bisect_right(BOUNDS, elapsed)] += 1
            self.count += 1
            self.total += elapsed


Latency = tuple[int, float, list[int]]
"""Requests timed, the sum of their durations (seconds), their count per bucket."""


def tool_latency(stats: ToolStats) -> Latency:
    """The per-tool histograms added up, column by column in C (zip and sum): it runs
    each second over up to ``max_tools`` lists."""
    rows = [counts for by_name in stats.by_upstream.values() for counts in by_name.values()]
    if not rows:
        return 0, 0.0, [0] * (len(BOUNDS) + 1)
    columns = [sum(column) for column in zip(*rows, strict=True)]
    buckets = [int(n) for n in columns[FIRST_BUCKET:SUM]]
    return sum(buckets), float(columns[SUM]), buckets


class Reading(msgspec.Struct, frozen=True):
    """The counters at one instant (absolute values)."""

    at: float
    requests: int
    ended: tuple[int, ...]
    errors: int
    rate_limited: int
    denied: int
    authentication_refused: int
    latency: Latency | None


class TrafficWindow:
    """The last ``WINDOW_SECONDS`` of traffic, a sample a second, and the streams that
    watch it."""

    def __init__(self, gateway: Gateway, seconds: int = WINDOW_SECONDS) -> None:
        self.gateway = gateway
        self.samples: deque[dict[str, Any]] = deque(maxlen=seconds)
        self.sequence = 0
        """Samples taken so far: a stream sends those past the last it sent."""
        self.watchers = 0
        self.closing = False
        self.tap: LatencyTap | None = None
        self._last: Reading | None = None
        self._state: tuple[int, dict[str, Any]] | None = None
        self._changed = asyncio.Condition()

    # -- sampling, on the admin app's timer --------------------------------------------
    def read(self) -> Reading:
        gw = self.gateway
        c = gw.counters
        latency: Latency | None = None
        if gw.tool_stats is not None:
            latency = tool_latency(gw.tool_stats)
        elif self.tap is not None:
            latency = self.tap.count, self.tap.total, list(self.tap.buckets)
        return Reading(time.monotonic(), c.requests, tuple(c.ended), c.errors,
                       sum(limit.refused for limit in gw.rate_limits),
                       sum(c.denied.values()), sum(c.authentication_refused.values()),
                       latency)

    def sample(self) -> None:
        """Take a reading and add what changed since the last one to the window."""
        now = self.read()
        last, self._last = self._last, now
        if last is None:
            return
        seconds = now.at - last.at
        # A reload may replace a rate limit (its count starts again): never below zero.
        def delta(a: int, b: int) -> int:
            return max(0, a - b)
        latency: dict[str, Any] | None = None
        if now.latency is not None and last.latency is not None:
            count = delta(now.latency[0], last.latency[0])
            buckets = [delta(a, b) for a, b in zip(now.latency[2], last.latency[2],
                                                   strict=True)]
            latency = {"count": count, "buckets": buckets,
                       "mean_ms": round(1000 * (now.latency[1] - last.latency[1]) / count, 3)
                       if count else 0.0}
        self.samples.append({
            "t": round(time.time(), 3),
            "seconds": round(seconds, 3),
            "requests": delta(now.requests, last.requests),
            "outcomes": {name: delta(a, b)
                         for name, a, b in zip(OUTCOMES, now.ended, last.ended, strict=True)},
            "errors": delta(now.errors, last.errors),
            "rate_limited": delta(now.rate_limited, last.rate_limited),
            "denied": delta(now.denied, last.denied),
            "authentication_refused": delta(now.authentication_refused,
                                            last.authentication_refused),
            "latency": latency,
        })
        self.sequence += 1

    async def run(self) -> None:
        self.sample()
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            self.sample()
            async with self._changed:
                self._changed.notify_all()

    async def close(self) -> None:
        """End every stream (the admin app is shutting down)."""
        self.closing = True
        async with self._changed:
            self._changed.notify_all()

    async def wait_past(self, sequence: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.sequence > sequence or self.closing)

    # -- the streams -------------------------------------------------------------------
    def watch(self) -> None:
        self.watchers += 1
        gw = self.gateway
        if self.watchers == 1 and gw.tool_stats is None:
            self.tap = LatencyTap()
            gw.observers = (*gw.observers, self.tap.record)
            if self._last is not None:
                # The tap counts from zero now: the next sample has what it saw since.
                self._last = msgspec.structs.replace(
                    self._last, latency=(0, 0.0, [0] * (len(BOUNDS) + 1)))

    def unwatch(self) -> None:
        self.watchers -= 1
        if self.watchers == 0 and self.tap is not None:
            record = self.tap.record
            gw = self.gateway
            gw.observers = tuple(o for o in gw.observers if o != record)
            self.tap = None

    def since(self, sequence: int) -> list[dict[str, Any]]:
        """The samples taken after the ``sequence``-th (those still in the window)."""
        missed = min(self.sequence - sequence, len(self.samples))
        return list(self.samples)[len(self.samples) - missed:] if missed > 0 else []

    def shared_state(self) -> dict[str, Any]:
        """``state()`` as of the last sample, made once for every stream that sends it
        (it walks every session)."""
        if self._state is None or self._state[0] != self.sequence:
            self._state = self.sequence, self.state()
        return self._state[1]

    def state(self) -> dict[str, Any]:
        """What the gateway is now: upstreams, sessions, totals."""
        gw = self.gateway
        c = gw.counters
        drained = gw.operator.drained
        upstreams = []
        for upstream in gw.upstreams.values():
            info = upstream.status()
            endpoints = [_endpoint(e) for e in info.get("endpoints", [info])]
            upstreams.append({key: info.get(key) for key in (
                "name", "kind", "state", "ready", "era", "in_flight", "requests_forwarded",
                "requests_failed", "last_error")} | {
                "endpoints": endpoints, "drained": upstream.name in drained})
        by_transport: dict[str, int] = {}
        shown: list[dict[str, Any]] = []
        for session in gw.sessions.values():
            by_transport[session.transport] = by_transport.get(session.transport, 0) + 1
            if len(shown) < MAX_SESSIONS_SHOWN:
                shown.append({"id": session.id, "transport": session.transport,
                              "identity": session.identity.key, "peer": session.peer,
                              "client": (session.client_info or {}).get("name"),
                              "in_flight": len(session.inflight)})
        latency_source = "per_tool" if gw.tool_stats is not None else \
            "dashboard" if self.tap is not None else None
        return {
            "ready": gw.ready,
            "draining": gw.draining,
            "uptime_seconds": round(time.time() - gw.started_at, 1),
            "upstreams": upstreams,
            "sessions": {"open": len(gw.sessions), "by_transport": by_transport,
                         "shown": shown, "total": sum(c.connections.values())},
            "totals": {
                "requests": c.requests,
                "errors": c.errors,
                "outcomes": dict(zip(OUTCOMES, c.ended, strict=True)),
                "rate_limited": {limit.name: limit.refused for limit in gw.rate_limits},
                "authorization_denied": dict(c.denied),
                "authentication_refused": dict(c.authentication_refused),
                "limits_enforced": {
                    "max_in_flight": c.refused_in_flight,
                    "process_buffer_bytes": c.refused_overloaded,
                    "client_buffer_bytes": c.client_overflows,
                    "max_connections": gw.admission.refused,
                    "max_sessions": c.refused_sessions,
                    "max_sessions_per_peer": c.refused_sessions_per_peer},
            },
            "latency_source": latency_source,
        }


WINDOW = web.AppKey("dashboard", TrafficWindow)


def event(name: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event (HTML Living Standard, 9.2.6): compact JSON is a single
    line, so one ``data:`` field carries it."""
    return b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"


async def stream(request: web.Request) -> web.StreamResponse:
    """``snapshot`` (the window so far and the state now) once, then ``sample`` (the
    samples since and the state now) each second, until the client goes away."""
    window = request.app[WINDOW]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    window.watch()
    try:
        sent = window.sequence
        await response.write(event("snapshot", {
            "window_seconds": window.samples.maxlen, "interval_seconds": SAMPLE_INTERVAL,
            "outcomes": list(OUTCOMES), "latency_bounds_ms": [1000 * b for b in BOUNDS],
            "samples": list(window.samples),
            "state": window.state()}))
        while True:
            await window.wait_past(sent)
            if window.closing:
                break
            samples = window.since(sent)
            sent = window.sequence
            await response.write(event("sample", {"samples": samples,
                                                  "state": window.shared_state()}))
    except ConnectionResetError:
        pass  # the page was closed or reloaded
    finally:
        window.unwatch()
    return response


def _asset(name: str) -> bytes:
    return files(__package__).joinpath("static", name).read_bytes()  # type: ignore[arg-type]


def install(app: web.Application, gateway: Gateway) -> None:
    """Add the dashboard's routes and its sampler to the admin app."""
    window = app[WINDOW] = TrafficWindow(gateway)
    page = _asset("dashboard.html")
    assets = {name: (_asset(name), kind) for name, kind in ASSETS.items()}

    async def redirect(request: web.Request) -> web.StreamResponse:
        # Relative URLs in the page then resolve under /dashboard/, behind a proxy's
        # path prefix too.
        raise web.HTTPPermanentRedirect("dashboard/")

    async def serve_page(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers=PAGE_HEADERS)

    def serve(name: str) -> Any:
        body, kind = assets[name]

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=kind, charset="utf-8",
                                headers=PAGE_HEADERS)
        return handler

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(window.run(), name="dashboard-sampler")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def end_streams(app: web.Application) -> None:
        await window.close()

    app.cleanup_ctx.append(sampler)
    # on_shutdown comes before aiohttp waits for the handlers still running: the streams
    # end there instead of holding the shutdown for its whole timeout.
    app.on_shutdown.append(end_streams)
    app.router.add_get("/dashboard", redirect)
    app.router.add_get("/dashboard/", serve_page)
    for name in ASSETS:
        app.router.add_get(f"/dashboard/{name}", serve(name))
    app.router.add_get("/api/v1/dashboard/stream", stream)


def _endpoint(info: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as the page shows it: where it is, its process, its state."""
    command = info.get("command")
    address = info.get("address") or (
        " ".join(command) if isinstance(command, list) else info["kind"])
    shown = {"address": address, "pid": info.get("pid"), "state": info.get("state")}
    if "healthy" in info:
        shown.update({key: info[key] for key in ("healthy", "ejected", "drained",
                                                 "circuit_open")})
    return shown
