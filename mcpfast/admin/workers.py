"""The supervisor's admin app (``workers`` > 1, supervisor.py): one admin port for all
the workers.

Each worker serves its own admin app (app.py) on a private unix socket that only the
supervisor reaches; this app answers on the configured admin port by asking every
worker and combining what they say:

- /liveness: the supervisor answers. /readiness: 200 when every worker is ready.
  /health: each worker's, ok when every worker's is.
- /status: a ``workers`` list (index, pid, state, restarts, and that worker's own
  status) and totals that are sums over the workers (connections, requests in flight).
- /metrics: every worker's exposition merged into one, each sample labelled with its
  ``worker``, HELP and TYPE once per family; then the supervisor's own families.
- /api/v1/connections: every worker's sessions, each naming its worker.
- The writes go to every worker, with one combined answer; a session is closed by the
  worker that holds it (its id begins with that worker's pid). The operator's switches
  (drain, disable) that every worker took are replayed to a worker that restarts.
- The dashboard is worker 0's (its page and its stream, passed through): its rolling
  window of samples is kept per process, and merging windows second by second is left
  for later.

The Host and the admin tokens are checked here exactly as a single gateway checks them
(``guards``); the workers' own apps check neither.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mcpfast_ext import IMPLEMENTATION

from .. import __version__
from ..config import Config, ConfigError
from . import dashboard
from .app import guards
from .openapi import OPENAPI

READ_TIMEOUT = 10.0
WRITE_TIMEOUT = 30.0
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                        "date", "server"})


class WorkerAdmin:
    """A client of one worker's admin app, on its private unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No kept-alive connections: a worker that restarted has a new socket.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.path, force_close=True))
        return self._session

    async def ask(self, method: str, path: str, timeout: float = READ_TIMEOUT
                  ) -> tuple[int, bytes]:
        """The worker's status and body; (0, reason) when it does not answer."""
        try:
            async with self.session.request(
                    method, f"http://worker{path}", allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return 0, (str(exc) or type(exc).__name__).encode()

    async def ask_json(self, method: str, path: str, timeout: float = READ_TIMEOUT
                       ) -> tuple[int, Any]:
        status, body = await self.ask(method, path, timeout)
        if status == 0:
            return 0, {"error": f"the worker does not answer: {body.decode()}"}
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"error": body.decode(errors="replace")[:200]}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Member(Protocol):
    """One worker, as the supervisor keeps it."""

    index: int
    pid: int | None
    state: str
    restarts: int
    admin: WorkerAdmin


class Workers(Protocol):
    """What this app needs of the supervisor."""

    config: Config
    started_at: float
    draining: bool

    @property
    def members(self) -> Sequence[Member]: ...

    def reload(self) -> list[str]:
        """Reread the config (ConfigError when it does not load); the key paths held
        for a restart by the supervisor itself."""
        ...

    def remember(self, path: str) -> None:
        """An operator switch every worker took (replayed to a worker that restarts)."""
        ...


WORKERS = web.AppKey("workers", object)


def create_supervisor_app(workers: Workers) -> web.Application:
    app = web.Application(middlewares=guards(workers.config.admin))
    app[WORKERS] = workers
    app.router.add_get("/health", health)
    app.router.add_get("/liveness", liveness)
    app.router.add_get("/readiness", readiness)
    app.router.add_get("/status", status)
    app.router.add_get("/api/v1/connections", connections)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/reload", reload_config)
    for path in ("/api/v1/upstreams/{name}/drain", "/api/v1/upstreams/{name}/undrain",
                 "/api/v1/upstreams/{name}/endpoints/{index}/drain",
                 "/api/v1/upstreams/{name}/endpoints/{index}/undrain",
                 "/api/v1/tools/{name}/disable", "/api/v1/tools/{name}/enable"):
        app.router.add_post(path, switch)
    app.router.add_delete("/api/v1/sessions/{id}", close_session)
    for path in [*sorted(dashboard.PAGE_PATHS), "/api/v1/dashboard/stream"]:
        app.router.add_get(path, first_worker)
    return app


def _workers(request: web.Request) -> Workers:
    return request.app[WORKERS]  # type: ignore[return-value]


async def _ask_all(workers: Workers, method: str, path: str,
                   timeout: float = READ_TIMEOUT) -> list[tuple[Member, int, Any]]:
    members = list(workers.members)
    answers = await asyncio.gather(*(m.admin.ask_json(method, path, timeout)
                                     for m in members))
    return [(member, code, body) for member, (code, body) in zip(members, answers,
                                                                 strict=True)]


def _each(answers: list[tuple[Member, int, Any]]) -> list[dict[str, Any]]:
    return [{"worker": m.index, "status": code, "answer": body} for m, code, body in answers]


async def liveness(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readiness(request: web.Request) -> web.Response:
    workers = _workers(request)
    if workers.draining:
        return web.json_response({"ready": False, "reason": "draining"}, status=503)
    answers = await _ask_all(workers, "GET", "/readiness")
    waiting = [{"worker": m.index, "reason": body.get("reason", f"HTTP {code}")
                if isinstance(body, dict) else f"HTTP {code}"}
               for m, code, body in answers if code != 200]
    if not waiting:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": "workers not ready",
                              "workers": waiting}, status=503)


async def health(request: web.Request) -> web.Response:
    answers = await _ask_all(_workers(request), "GET", "/health")
    healthy = all(code == 200 for _, code, _ in answers)
    return web.json_response({"status": "ok" if healthy else "degraded",
                              "workers": _each(answers)}, status=200 if healthy else 503)


async def status(request: web.Request) -> web.Response:
    workers = _workers(request)
    answers = await _ask_all(workers, "GET", "/status")
    listed = []
    open_, total, in_flight = 0, 0, 0
    for member, code, body in answers:
        entry: dict[str, Any] = {"index": member.index, "pid": member.pid,
                                 "state": member.state, "restarts": member.restarts}
        if code == 200:
            entry["status"] = body
            open_ += body["connections"]["open"]
            total += body["connections"]["total"]
            in_flight += body["in_flight"]
        else:
            entry["error"] = body.get("error", f"HTTP {code}")
        listed.append(entry)
    return web.json_response({
        "version": __version__, "implementation": IMPLEMENTATION,
        "uptime_seconds": round(time.time() - workers.started_at, 3),
        "ready": all(code == 200 and body.get("ready") for _, code, body in answers)
        and not workers.draining,
        "draining": workers.draining,
        "connections": {"open": open_, "total": total}, "in_flight": in_flight,
        "workers": listed})


async def connections(request: web.Request) -> web.Response:
    listed: list[dict[str, Any]] = []
    for member, code, body in await _ask_all(_workers(request), "GET",
                                             "/api/v1/connections"):
        if code == 200:
            listed.extend({**session, "worker": member.index}
                          for session in body["connections"])
    return web.json_response({"connections": listed})


async def metrics(request: web.Request) -> web.Response:
    workers = _workers(request)
    members = list(workers.members)
    answers = await asyncio.gather(*(m.admin.ask("GET", "/metrics") for m in members))
    expositions = [(str(m.index), body.decode()) for m, (code, body)
                   in zip(members, answers, strict=True) if code == 200]
    read = {m.index for m, (code, _) in zip(members, answers, strict=True) if code == 200}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*merge_expositions(expositions),
                                 *supervisor_families(members, read)]))
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(expositions: Iterable[tuple[str, str]], label: str = "worker"
                      ) -> list[Metric]:
    """Prometheus text expositions, each from one process named by ``label``'s value,
    as one list of families: a family's samples from every process, each with
    ``label`` added, under one HELP and TYPE (those of the first process that has it)."""
    merged: dict[str, Metric] = {}
    for value, text in expositions:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)
            into.samples.extend(sample._replace(labels={**sample.labels, label: value})
                                for sample in family.samples)
    return list(merged.values())


def supervisor_families(members: Sequence[Member], read: set[int]) -> Iterator[Metric]:
    running = sum(1 for m in members if m.state in ("starting", "running"))
    yield GaugeMetricFamily("mcpfast_workers", "Worker processes running (starting or "
                            "serving).", value=running)
    up = GaugeMetricFamily("mcpfast_worker_up", "1 when the worker's metrics were read "
                           "for this scrape.", labels=["worker"])
    restarts = CounterMetricFamily("mcpfast_worker_restarts", "Times the worker was "
                                   "started again after it exited unasked.",
                                   labels=["worker"])
    for member in members:
        up.add_metric([str(member.index)], 1 if member.index in read else 0)
        restarts.add_metric([str(member.index)], member.restarts)
    yield up
    yield restarts


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def _write_refused(workers: Workers) -> web.Response | None:
    if workers.config.admin.guarded:
        return None
    return web.json_response(
        {"error": "forbidden: set admin.token to enable the admin API's writes"},
        status=403)


def _combined(answers: list[tuple[Member, int, Any]], base: dict[str, Any]
              ) -> web.Response:
    """One answer for a write every worker was asked to do: the status they agree on
    (a worker that does not answer, being restarted, aside), else 502."""
    statuses = {code for _, code, _ in answers if code != 0}
    body = {**base, "workers": _each(answers)}
    if len(statuses) == 1:
        code = statuses.pop()
        first = next(answer for _, status, answer in answers if status == code)
        return web.json_response({**first, **body}, status=code)
    if not statuses:
        return web.json_response({"error": "no worker answers", **body}, status=503)
    return web.json_response({"error": "the workers answered differently", **body},
                             status=502)


async def reload_config(request: web.Request) -> web.Response:
    """Reread the config here (a config that does not load is refused before any worker
    sees it), then have every worker reread it."""
    workers = _workers(request)
    refused = _write_refused(workers)
    if refused is not None:
        return refused
    try:
        held = workers.reload()
    except ConfigError as exc:
        return web.json_response(
            {"error": f"reload refused, the config in force stays: {exc}"}, status=400)
    answers = await _ask_all(workers, "POST", "/api/v1/reload", WRITE_TIMEOUT)
    for _, code, body in answers:
        if code == 200:
            held.extend(path for path in body.get("held", []) if path not in held)
    return _combined(answers, {"reloaded": workers.config.source, "held": held})


async def switch(request: web.Request) -> web.Response:
    """Drain, undrain, disable, enable: in every worker."""
    workers = _workers(request)
    refused = _write_refused(workers)
    if refused is not None:
        return refused
    answers = await _ask_all(workers, "POST", request.path, WRITE_TIMEOUT)
    # A worker still starting may not list the tool yet: it is not asked to agree,
    # and takes the switch when the supervisor replays it (before it takes a client).
    response = _combined([(member, code if member.state == "running" or 200 <= code < 300
                           else 0, answer) for member, code, answer in answers], {})
    if response.status == 200:
        workers.remember(request.path)
    return response


async def close_session(request: web.Request) -> web.Response:
    """A session id begins with its worker's pid (Gateway.open_session)."""
    workers = _workers(request)
    refused = _write_refused(workers)
    if refused is not None:
        return refused
    prefix = request.match_info["id"].partition("-")[0]
    try:
        pid = int(prefix, 16)
    except ValueError:
        pid = -1
    member = next((m for m in workers.members if m.pid == pid), None)
    if member is None:
        return web.json_response({"error": "no session has that id"}, status=404)
    code, body = await member.admin.ask_json("DELETE", request.path, WRITE_TIMEOUT)
    return web.json_response({**body, "worker": member.index}, status=code or 503)


async def first_worker(request: web.Request) -> web.StreamResponse:
    """Worker 0's answer, streamed through (the dashboard's page and its stream)."""
    admin = _workers(request).members[0].admin
    response: web.StreamResponse | None = None
    try:
        async with admin.session.get(f"http://worker{request.path_qs}",
                                     allow_redirects=False,
                                     timeout=aiohttp.ClientTimeout(total=None,
                                                                   connect=READ_TIMEOUT)
                                     ) as answer:
            response = web.StreamResponse(status=answer.status, headers={
                name: value for name, value in answer.headers.items()
                if name.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
    except (aiohttp.ClientError, OSError) as exc:
        # Once the answer has begun, a worker or a browser that went away ends it.
        if response is None:
            return web.json_response({"error": f"worker 0 does not answer: {exc}"},
                                     status=503)
    return response
