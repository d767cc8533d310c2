"""What the Streamable HTTP endpoint checks a request's headers and body against, before
its session is found: allowed Origin and Host values, acceptable media types, the
session binding, a POST's progress token, and a tool's ``x-mcp-header`` annotations for
the modern era. Pure, and cached where clients repeat themselves (``streamable.py``
applies them)."""

from __future__ import annotations

import functools
import re
from typing import Any

import msgspec
from msgspec import UNSET

from ..auth.identity import Identity
from ..config import is_loopback
from ..protocol import jsonrpc, modern
from ..protocol.http import HttpRequest
from .exchange import _accepts, _media_types

Annotations = dict[str, tuple[tuple[str, ...], str]]


class AllowList:
    """Glob patterns (``*`` matches anything) with the verdicts for values already seen:
    each request is checked against a dict, not a list of patterns. A value is matched
    without its surrounding whitespace (RFC 9110 OWS), and lower-cased when ``fold``
    (the patterns are then lower-case); the verdict is kept for the value as sent."""

    def __init__(self, patterns: list[str], fold: bool = False) -> None:
        # Only ``*`` is a wildcard: fnmatch would read the brackets of ``[::1]`` as a
        # character class and let ``:`` or ``1`` through.
        self._regex = re.compile("|".join(
            f"(?:{re.escape(p).replace(re.escape('*'), '.*')})\\Z" for p in patterns)
            or r"(?!)", re.S)
        self._fold = fold
        self._seen: dict[str, bool] = {}

    def __contains__(self, value: str) -> bool:
        verdict = self._seen.get(value)
        if verdict is None:
            seen = value.strip()
            verdict = self._regex.match(seen.lower() if self._fold else seen) is not None
            if len(self._seen) < 1024:
                self._seen[value] = verdict
        return verdict


def host_allow_list(hosts: list[str] | None, bound: str) -> AllowList | None:
    """The ``Host`` values a listener bound to ``bound`` serves, against DNS rebinding:
    ``hosts`` as configured; unset, the loopback names when ``bound`` is a loopback
    address, and any Host (None) otherwise."""
    if hosts is None and is_loopback(bound):
        name = f"[{bound}]" if ":" in bound else bound
        hosts = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]",
                 "[::1]:*", name, f"{name}:*"]
    return AllowList([h.lower() for h in hosts], fold=True) if hosts is not None else None


def origin_or_host_refused(request: HttpRequest, origins: AllowList, hosts: AllowList | None
                           ) -> tuple[int, str] | None:
    """Why a request is refused for its Host or Origin, with the status: an HTTP/1.1
    request without exactly one Host (400, RFC 9112 3.2), an Origin not allowed (403),
    a Host not served (421, against DNS rebinding); None when neither."""
    fields = request.fields
    host = fields.get("host")
    if (host is None and request.version == "1.1") or (
            request.repeated is not None and "host" in request.repeated):
        return 400, "Bad Request: an HTTP/1.1 request has exactly one Host header"
    origin = fields.get("origin")
    if origin is not None and origin not in origins:
        return 403, f"Origin {origin.strip()!r} is not allowed"
    if hosts is not None:
        target = request.target
        if target[:1] != "/" and "://" in target:
            # An absolute-form target names the host; Host is then ignored (RFC 9112
            # 3.2.2), so the target's authority is what must be served here.
            host = target.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        if (host or "") not in hosts:
            return 421, f"Host {(host or '').strip().lower()!r} is not served here"
    return None


@functools.lru_cache(maxsize=256)
def unacceptable(accept: str | None, content_type: str | None, modern_era: bool
                 ) -> tuple[int, str] | None:
    """Why a POST with these Accept and Content-Type values is refused (status and
    reason), or None. Cached: clients send the same few values on every request."""
    if not _accepts(accept, "application/json") or (
            not modern_era and not _accepts(accept, "text/event-stream")):
        wanted = ("application/json" if modern_era
                  else "both application/json and text/event-stream")
        return 406, f"Not Acceptable: the client must accept {wanted}"
    if "application/json" not in _media_types(content_type):
        return 415, "Unsupported Media Type: the body must be application/json"
    return None


class _TokenMeta(msgspec.Struct, gc=False):
    progressToken: Any = None  # noqa: N815 - the wire name


class _TokenParams(msgspec.Struct, gc=False):
    meta: _TokenMeta | None = msgspec.field(default=None, name="_meta")


_token_params = msgspec.json.Decoder(_TokenParams)
_any = msgspec.json.Decoder()


class _CancelParams(msgspec.Struct, gc=False):
    requestId: Any = None  # noqa: N815 - the wire name


_cancel_params = msgspec.json.Decoder(_CancelParams)


def _read(decoder: msgspec.json.Decoder[Any], env: jsonrpc.Envelope) -> Any:
    """The params read with ``decoder``; None when there are none or of another shape."""
    if env.params is UNSET:
        return None
    try:
        return decoder.decode(env.params)  # type: ignore[arg-type]
    except msgspec.DecodeError:
        return None


def an_id(value: Any) -> int | str | None:
    """``value`` when it can be a request id (an int or a string, not a bool)."""
    return value if isinstance(value, (int, str)) and not isinstance(value, bool) else None


def progress_token(env: jsonrpc.Envelope) -> int | str | None:
    """The request's progress token, reading nothing else of its params."""
    params = _read(_token_params, env)
    return an_id(params.meta.progressToken) if params and params.meta else None


def cancelled_id(env: jsonrpc.Envelope) -> int | str | None:
    """The request a ``notifications/cancelled`` names, reading nothing else."""
    params = _read(_cancel_params, env)
    return an_id(params.requestId) if params else None


def modern_without_header(fields: dict[str, str], env: jsonrpc.Envelope
                          ) -> modern.RequestError | None:
    """Why a sessionless POST is refused as the modern era refuses it, when its body is
    of that era (its ``_meta`` names a protocol version) but its
    ``MCP-Protocol-Version`` header is missing or legacy, so that it reached the legacy
    transport: the header mismatch (-32020), not a missing session."""
    if env.params is UNSET or not isinstance(env.method, str):
        return None
    try:
        params = _any.decode(env.params)  # type: ignore[arg-type]
    except msgspec.DecodeError:
        return None
    if not modern.is_modern(params):
        return None
    try:
        modern.check_routing_headers(fields, env.method, params)
    except modern.RequestError as exc:
        return exc
    return None


def binding(identity: Identity | None) -> str:
    """What a session id is bound to: the verified identity's key (so that another
    replica sharing the key binds it too); nothing for a client known by address."""
    return identity.key if identity is not None and identity.authenticated else ""


class HeaderAnnotations:
    """Each tool's ``x-mcp-header`` annotations (``modern.x_mcp_headers``), read once
    per tool list rather than from its inputSchema on every call."""

    def __init__(self) -> None:
        self._tools: object = None
        self._by_name: dict[Any, Annotations] = {}

    def of(self, tools: list[dict[str, Any]], name: object) -> Annotations:
        """Tool ``name``'s annotations in ``tools`` (the gateway's current list)."""
        if self._tools is not tools:
            self._tools = tools
            self._by_name = {t.get("name"): modern.x_mcp_headers(t.get("inputSchema"))
                             for t in tools}
        return self._by_name.get(name) or {}
