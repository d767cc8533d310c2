"""The admin API, described in OpenAPI 3.1 (served at /api/v1/openapi.json). A test
holds it to the routes the app really has."""

from __future__ import annotations

from typing import Any

_JSON = "application/json"


def _answer(description: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {_JSON: {"schema": {"type": "object"}}}
    if example is not None:
        content[_JSON]["example"] = example
    return {"description": description, "content": content}


_ERRORS = {
    "401": _answer("No or a wrong admin token (when one is set).",
                   {"error": "unauthorized: send Authorization: Bearer with an admin token"}),
}
_WRITE_ERRORS = {
    **_ERRORS,
    "403": _answer("Writes need an admin token to be set (admin.token or "
                   "admin.token_hashes).", {"error": "forbidden: set admin.token to enable "
                                                     "the admin API's writes"}),
}


def _probe(summary: str, example: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {
        "200": _answer("Healthy / ready.", example),
        "503": _answer("Not healthy / not ready, with the reason.")}}}


def _read(summary: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": _answer("OK", example),
                                                       **_ERRORS}}}


def _page(summary: str, media_type: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [], "responses": {"200": {
        "description": "The file.", "content": {media_type: {"schema": {"type": "string"}}}}}}}


def _write(method: str, summary: str, parameter: str | None, ok: dict[str, Any],
           missing: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary,
                                 "responses": {"200": _answer("Done.", ok), **_WRITE_ERRORS}}
    if parameter is not None:
        operation["parameters"] = [{"name": parameter, "in": "path", "required": True,
                                    "schema": {"type": "string"}}]
    if missing is not None:
        operation["responses"]["404"] = _answer(missing)
    return {method: operation}


def _endpoint_write(summary: str, drained: bool) -> dict[str, Any]:
    operation = _write("post", summary, "name",
                       {"upstream": "search", "endpoint": 1, "drained": drained},
                       "No upstream has that name, or it has no such endpoint.")
    operation["post"]["parameters"].append({"name": "index", "in": "path", "required": True,
                                            "schema": {"type": "integer", "minimum": 0}})
    return operation


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mcpfast admin API", "version": "1",
             "description": "Health, status, metrics and the operator's switches of an "
                            "mcpfast gateway, on its admin port. With an admin token set, "
                            "everything but the health probes and the dashboard's page "
                            "(which holds no data) needs it as a bearer token; "
                            "/metrics also takes a scraper's token, or none with "
                            "admin.public_metrics."},
    "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
    "security": [{"admin": []}],
    "paths": {
        "/health": _probe("Up, with each upstream's state (503 when none is ready).",
                          {"status": "ok", "ready": True, "upstreams": {"demo": "ready"}}),
        "/liveness": _probe("The process answers.", {"status": "alive"}),
        "/readiness": _probe("Ready for traffic: listening, upstreams initialized, not "
                             "draining (with workers > 1: every worker).", {"ready": True}),
        "/status": _read("Version, listeners, connections, in flight, upstreams, routes, "
                         "what the operator switched. With workers > 1: a `workers` list "
                         "(index, pid, state, restarts, and each one's own status) and "
                         "totals summed over them."),
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {
            "200": {"description": "The text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_ERRORS}}},
        "/dashboard": {"get": {
            "summary": "The live dashboard's page (redirects to /dashboard/).",
            "security": [], "responses": {"308": {"description": "To /dashboard/."}}}},
        "/dashboard/": _page("The live dashboard: an HTML page that holds no data (so it "
                             "needs no token); it asks for the admin token and reads "
                             "/api/v1/dashboard/stream with it.", "text/html"),
        "/dashboard/dashboard.js": _page("The dashboard's script.", "text/javascript"),
        "/dashboard/dashboard.css": _page("The dashboard's style sheet.", "text/css"),
        "/api/v1/dashboard/stream": {"get": {
            "summary": "The dashboard's live data, as Server-Sent Events: one `snapshot` "
                       "(the rolling window of per-second samples so far and the state "
                       "now), then a `sample` each second (the samples since and the state "
                       "now). Each event's data is one line of JSON.",
            "responses": {"200": {
                "description": "An endless event stream.",
                "content": {"text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'event: sample\ndata: {"samples":[{"t":1767225600.0,'
                               '"seconds":1.0,"requests":42,"outcomes":{"answered":41,'
                               '"refused":1},"errors":1,"rate_limited":1,"denied":0,'
                               '"authentication_refused":0,"latency":{"count":42,'
                               '"buckets":[30,12],"mean_ms":0.61}}],"state":{"ready":true,'
                               '"upstreams":[],"sessions":{"open":1,"by_transport":'
                               '{"websocket":1},"shown":[]},"totals":{}}}\n\n'}}},
                **_ERRORS}}},
        "/api/v1/connections": _read("Every client session: transport, peer, identity and "
                                     "credentials, era, requests in flight."),
        "/api/v1/openapi.json": _read("This document."),
        "/api/v1/reload": {"post": {
            "summary": "Reread the config file and put it in force whole (as SIGHUP).",
            "responses": {"200": _answer("Reloaded; `held` lists the key paths that wait "
                                         "for a restart.", {"reloaded": "/etc/mcpfast.toml",
                                                             "held": []}),
                          "400": _answer("The config does not load; the one in force "
                                         "stays. The error names the key path."),
                          "409": _answer("The gateway was started without a config file."),
                          **_WRITE_ERRORS}}},
        "/api/v1/upstreams/{name}/drain": _write(
            "post", "Send no new request to the upstream; those in flight finish (new ones "
            "get -32000).", "name", {"upstream": "demo", "drained": True},
            "No upstream has that name."),
        "/api/v1/upstreams/{name}/undrain": _write(
            "post", "Send new requests to the upstream again.", "name",
            {"upstream": "demo", "drained": False}, "No upstream has that name."),
        "/api/v1/upstreams/{name}/endpoints/{index}/drain": _endpoint_write(
            "Send no new request to that endpoint of the upstream (its index in "
            "`endpoints`); the other endpoints take them, those in flight finish.", True),
        "/api/v1/upstreams/{name}/endpoints/{index}/undrain": _endpoint_write(
            "Send new requests to the endpoint again.", False),
        "/api/v1/tools/{name}/disable": _write(
            "post", "Hide the tool (as clients name it) from every list and answer calls "
            "to it as to an unknown tool; sessions whose list changes are told.", "name",
            {"tool": "demo__echo", "disabled": True}, "No tool has that name."),
        "/api/v1/tools/{name}/enable": _write(
            "post", "Bring a disabled tool back.", "name",
            {"tool": "demo__echo", "disabled": False}),
        "/api/v1/sessions/{id}": _write(
            "delete", "Close a client session: its connection is closed and its calls are "
            "cancelled upstream.", "id", {"closed": "1a2b-7"}, "No session has that id."),
    },
}
