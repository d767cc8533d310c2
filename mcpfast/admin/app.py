"""The admin side app (aiohttp) on its own port: health, status, metrics and the live
dashboard (dashboard.py).

Never on the data path: it only reads the gateway's state when asked. With an admin
token set (``admin.token``, or its hash in ``admin.token_hashes``), everything but the
health probes and the dashboard's page needs ``Authorization: Bearer`` (RFC 6750
section 2.1); the probes stay open because orchestrators call them bare, the page
because it holds no data (its stream needs the token). /metrics also takes a scraper's token
(``admin.metrics_token_hashes``), or none with ``admin.public_metrics``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from mcpfast_ext import IMPLEMENTATION

from ..config import AdminConfig, ConfigError
from ..metrics import GatewayCollector
from ..transport.http_checks import host_allow_list
from . import dashboard
from .openapi import OPENAPI

if TYPE_CHECKING:
    from ..gateway.gateway import Gateway

GATEWAY = web.AppKey("gateway", object)
REGISTRY = web.AppKey("registry", CollectorRegistry)
RELOAD = web.AppKey("reload", object)
PROBES = frozenset({"/health", "/liveness", "/readiness"})
OPEN = PROBES | dashboard.PAGE_PATHS


def _digests(hashes: list[str]) -> frozenset[bytes]:
    return frozenset(bytes.fromhex(h.removeprefix("sha256:")) for h in hashes)


def served_hosts(config: AdminConfig) -> Middleware | None:
    """The admin port's ``Host`` check (421), against DNS rebinding: a web page that
    has its name resolve to 127.0.0.1 must not read /status or the connections list
    through the visitor's browser. None when any Host is served."""
    hosts = host_allow_list(config.allowed_hosts, config.host)
    if hosts is None:
        return None

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        # An absolute-form target's authority is the host asked for (RFC 9112 3.2.2).
        host = request.headers.get("Host", "") if request.raw_path.startswith("/") \
            else request.url.raw_authority
        if host not in hosts and request.path not in PROBES:
            return web.json_response({"error": f"Host {host.strip().lower()!r} is not "
                                               "served here (admin.allowed_hosts)"},
                                     status=421)
        return await handler(request)

    return check_host


@web.middleware
async def http_1_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP/1.0 and 1.1 only: aiohttp answers any version on the request line as if it
    were one of them (505 otherwise, as on the MCP port)."""
    if request.version.major != 1:
        return web.json_response({"error": f"HTTP Version Not Supported: HTTP/"
                                           f"{request.version.major}."
                                           f"{request.version.minor}"}, status=505)
    return await handler(request)


def guards(config: AdminConfig) -> list[Middleware]:
    """What every request to the admin port passes first: its HTTP version, the Host
    check, then the tokens."""
    return [guard for guard in (http_1_only, served_hosts(config), bearer_tokens(config))
            if guard is not None]


def bearer_tokens(config: AdminConfig) -> Middleware | None:
    """The admin port's guard; None when nothing needs a token."""
    plain = config.token.encode() if config.token else None
    admins = _digests(config.token_hashes)
    scrapers = _digests(config.metrics_token_hashes)
    if not config.guarded and not scrapers:
        return None

    def admits(given: bytes, path: str) -> bool:
        # compare_digest: how long a wrong token took to refuse says nothing about it;
        # a hash looked up says nothing about the token either.
        if plain is not None and hmac.compare_digest(given, plain):
            return True
        digest = hashlib.sha256(given).digest()
        return digest in admins or (path == "/metrics" and digest in scrapers)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in OPEN or (path == "/metrics" and config.public_metrics) or \
                (not config.guarded and path != "/metrics"):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not admits(
                given.strip().encode("utf-8", "surrogateescape"), path):
            return web.json_response(
                {"error": "unauthorized: send Authorization: Bearer with an admin token"},
                status=401, headers={"WWW-Authenticate": 'Bearer realm="mcpfast admin"'})
        return await handler(request)

    return require_token


def create_app(gateway: Gateway, reload: Callable[[], list[str]] | None = None,
               guarded: bool = True) -> web.Application:
    """``reload`` rereads the config and puts it in force (server.reload), for
    POST /api/v1/reload. ``guarded`` False: no Host or token is checked (a worker's app, which
    only its supervisor reaches, on a socket in a private directory; the supervisor's
    own admin port checks the tokens, admin/workers.py)."""
    app = web.Application(middlewares=guards(gateway.config.admin) if guarded else [])
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(gateway))
    registry.register(PROCESS_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    app[GATEWAY] = gateway
    app[REGISTRY] = registry
    app[RELOAD] = reload
    app.router.add_get("/health", health)
    app.router.add_get("/liveness", liveness)
    app.router.add_get("/readiness", readiness)
    app.router.add_get("/status", status)
    app.router.add_get("/api/v1/connections", connections)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/reload", reload_config)
    app.router.add_post("/api/v1/upstreams/{name}/drain", drain_upstream)
    app.router.add_post("/api/v1/upstreams/{name}/undrain", drain_upstream)
    app.router.add_post("/api/v1/upstreams/{name}/endpoints/{index}/drain", drain_endpoint)
    app.router.add_post("/api/v1/upstreams/{name}/endpoints/{index}/undrain",
                        drain_endpoint)
    app.router.add_post("/api/v1/tools/{name}/disable", disable_tool)
    app.router.add_post("/api/v1/tools/{name}/enable", disable_tool)
    app.router.add_delete("/api/v1/sessions/{id}", close_session)
    dashboard.install(app, gateway)
    return app


def _gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]  # type: ignore[return-value]


def _write_refused(request: web.Request) -> web.Response | None:
    """The admin API's writes need an admin token set (the middleware then checks it):
    403 when none is."""
    if _gateway(request).config.admin.guarded:
        return None
    return web.json_response(
        {"error": "forbidden: set admin.token to enable the admin API's writes"},
        status=403)


async def reload_config(request: web.Request) -> web.Response:
    """Reread the config file and put it in force whole, as SIGHUP does. A write."""
    refused = _write_refused(request)
    if refused is not None:
        return refused
    reload = request.app[RELOAD]
    if reload is None:
        return web.json_response({"error": "this gateway has no config file to reread"},
                                 status=409)
    try:
        held = reload()  # type: ignore[operator]
    except ConfigError as exc:
        return web.json_response(
            {"error": f"reload refused, the config in force stays: {exc}"}, status=400)
    return web.json_response({"reloaded": _gateway(request).config.source, "held": held})


async def drain_upstream(request: web.Request) -> web.Response:
    """POST .../drain: no new request goes to the upstream (those in flight finish);
    .../undrain: they go again. A write."""
    refused = _write_refused(request)
    if refused is not None:
        return refused
    gw = _gateway(request)
    name = request.match_info["name"]
    if name not in gw.upstreams:
        return web.json_response({"error": f"no upstream is named {name!r}"}, status=404)
    drained = request.path.endswith("/drain")
    gw.set_drained(name, drained)
    return web.json_response({"upstream": name, "drained": drained})


async def drain_endpoint(request: web.Request) -> web.Response:
    """POST .../endpoints/INDEX/drain: no new request goes to that endpoint of the
    upstream (the others take them; those in flight finish); .../undrain: it takes them
    again. A write."""
    refused = _write_refused(request)
    if refused is not None:
        return refused
    gw = _gateway(request)
    name, index = request.match_info["name"], request.match_info["index"]
    upstream = gw.upstreams.get(name)
    balancer = upstream.balancer if upstream is not None else None
    if balancer is None or not (index.isascii() and index.isdigit()) or len(index) > 6 \
            or int(index) >= len(balancer.endpoints):
        return web.json_response({"error": f"upstream {name!r} has no endpoint {index!r}"},
                                 status=404)
    drained = request.path.endswith("/drain")
    balancer.endpoints[int(index)].drained = drained
    return web.json_response({"upstream": name, "endpoint": int(index), "drained": drained})


async def disable_tool(request: web.Request) -> web.Response:
    """POST .../disable: the tool (as clients name it) is hidden from every list and
    answered as unknown; .../enable: it is back. Sessions whose tool list changes are
    told. A write. A tool no list holds is refused (404), unless ``replay=1``: the
    supervisor's replay to a restarted worker, whose upstreams may not have listed
    their tools yet (the switch must be in place before they do)."""
    refused = _write_refused(request)
    if refused is not None:
        return refused
    gw = _gateway(request)
    name = request.match_info["name"]
    disabled = request.path.endswith("/disable")
    if disabled and request.query.get("replay") != "1" and \
            name not in {tool.get("name") for tool in gw.router.tools}:
        return web.json_response({"error": f"no tool is named {name!r}"}, status=404)
    gw.set_tool_disabled(name, disabled)
    return web.json_response({"tool": name, "disabled": disabled})


async def close_session(request: web.Request) -> web.Response:
    """DELETE a client session: its connection is closed (a WebSocket with 1008, a unix
    socket at once; a Streamable HTTP session ends and its id is refused from then on)
    and its calls are cancelled upstream. A write."""
    refused = _write_refused(request)
    if refused is not None:
        return refused
    gw = _gateway(request)
    session = gw.sessions.get(request.match_info["id"])
    if session is None:
        return web.json_response({"error": "no session has that id"}, status=404)
    session.close(1008, "closed by the operator")
    gw.close_session(session)
    return web.json_response({"closed": session.id})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def liveness(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def health(request: web.Request) -> web.Response:
    gw = _gateway(request)
    upstreams = {name: u.state for name, u in gw.upstreams.items()}
    healthy = any(u.ready for u in gw.upstreams.values())
    return web.json_response({"status": "ok" if healthy else "degraded", "ready": gw.ready,
                              "upstreams": upstreams}, status=200 if healthy else 503)


async def readiness(request: web.Request) -> web.Response:
    gw = _gateway(request)
    if gw.ready:
        return web.json_response({"ready": True})
    reason = ("draining" if gw.draining else "not listening yet" if not gw.listening
              else "upstreams not initialized")
    return web.json_response({"ready": False, "reason": reason}, status=503)


async def status(request: web.Request) -> web.Response:
    gw = _gateway(request)
    body = gw.status()
    body["implementation"] = IMPLEMENTATION
    return web.json_response(body)


async def connections(request: web.Request) -> web.Response:
    gw = _gateway(request)
    return web.json_response({"connections": [s.describe() for s in gw.sessions.values()]})


async def metrics(request: web.Request) -> web.Response:
    output = generate_latest(request.app[REGISTRY])
    return web.Response(body=output, headers={"Content-Type": CONTENT_TYPE_LATEST})
