"""The catalog the gateway offers: its capabilities and instructions (the union of its
upstreams'), the handshake of either era (``initialize``, ``server/discover``), the
aggregated lists, and the announcement of their changes as upstreams come, go and
refresh."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET

from ..protocol import jsonrpc
from ..protocol.mcp import LATEST_LEGACY, LEGACY_VERSIONS
from ..protocol.modern import (
    META_SERVER_INFO,
    MODERN_VERSIONS,
    complete_result,
    tagged,
)
from ..upstream.base import UpstreamError
from .call import Request, Upstream
from .chain import View
from .ports import CACHE_HINTS, SERVER_INFO, Core, Handler
from .router import KIND_PROMPT, KIND_TOOL, Router
from .session import DownstreamSession

log = logging.getLogger("mcpfast.gateway")
_any = msgspec.json.Decoder()


LIST_KEYS = {"tools": "name", "prompts": "name", "resources": "uri",
             "resourceTemplates": "uriTemplate"}
"""The member that names an item of each list, as the policy views see it."""
LISTS = ("tools", "prompts", "resources")
"""The lists a session is told changed (resources with their templates)."""


Seen = dict[Any, dict[str, tuple[dict[str, Any], ...]]]
"""What each identity is shown of each list (``Catalog._seen``), by its view key."""

class Catalog:
    def __init__(self, gw: Core) -> None:
        self.gw = gw
        self.views: tuple[View, ...] = ()
        """The policy chain's views (chain.py): empty when no policy hides anything."""
        self.page_size = gw.config.routing.page_size

    def capabilities(self) -> dict[str, Any]:
        """What the gateway offers, in either era: the union of its upstreams'
        capabilities. List changes are always announced (and delivered on listen streams)
        because the gateway's own lists change whenever an upstream comes or goes."""
        caps: dict[str, Any] = {}
        for upstream in self.gw.upstreams.values():
            theirs = upstream.capabilities
            if "tools" in theirs:
                caps["tools"] = {"listChanged": True}
            if "prompts" in theirs:
                caps["prompts"] = {"listChanged": True}
            if "resources" in theirs:
                res = caps.setdefault("resources", {"listChanged": True})
                if (theirs["resources"] or {}).get("subscribe"):
                    res["subscribe"] = True
            if "logging" in theirs or upstream.era == "modern":
                # A 2026-07-28 server logs when a request asks it to (its _meta's log
                # level, which the gateway sets from a legacy client's setLevel): the
                # gateway, which then sends notifications/message, declares logging.
                caps["logging"] = {}
            if "completions" in theirs:
                caps["completions"] = {}
        return caps

    def instructions(self) -> str | None:
        ups = [u for u in self.gw.upstreams.values() if u.instructions]
        if len(self.gw.upstreams) == 1:
            return ups[0].instructions if ups else None
        return "\n\n".join(f"## {u.name}\n{u.instructions}" for u in ups) or None

    def initialize(self, req: Request) -> None:
        session, env = req.session, req.env
        if session.initialized:
            self.gw.send_error(session, env.id, jsonrpc.INVALID_REQUEST,
                               "the session is already initialized")
            return
        try:
            params = _any.decode(env.params) if env.params is not UNSET else {}
        except msgspec.DecodeError as exc:
            self.gw.send_error(session, env.id, jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}")
            return
        if not isinstance(params, dict) or not isinstance(params.get("protocolVersion"), str):
            self.gw.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                               "initialize requires params.protocolVersion")
            return
        problem = _initialize_problem(params)
        if problem is not None:
            self.gw.send_error(session, env.id, jsonrpc.INVALID_PARAMS,
                               f"Invalid params: {problem}")
            return
        requested = params["protocolVersion"]
        # basic/lifecycle "Version Negotiation": answer the client's version when we
        # support it, otherwise the latest we do; the client decides whether to go on.
        version = requested if requested in LEGACY_VERSIONS else LATEST_LEGACY
        session.protocol_version = version
        caps = params.get("capabilities")
        session.client_capabilities = caps if isinstance(caps, dict) else {}
        info = params.get("clientInfo")
        session.client_info = info if isinstance(info, dict) else {}
        session.initialized = True
        session.era = "legacy"
        self.gw.respond(session, env.id, {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": SERVER_INFO,
            **({"instructions": text} if (text := self.instructions()) else {}),
        })

    def discover(self, req: Request) -> None:
        """server/discover: answered by the gateway itself, for all its upstreams."""
        result: dict[str, Any] = {
            "resultType": "complete",
            # The same list -32022 names as supported (notes §6.3).
            "supportedVersions": list(MODERN_VERSIONS),
            "capabilities": self.capabilities(),
        }
        if text := self.instructions():
            result["instructions"] = text
        result["_meta"] = {META_SERVER_INFO: SERVER_INFO}
        result.update(CACHE_HINTS)
        self.gw.respond(req.session, req.id, result)

    def list_handler(self, kind: str) -> Handler:
        attribute = {"tools": "tools", "prompts": "prompts", "resources": "resources",
                     "resourceTemplates": "resource_templates"}[kind]
        capability = "resources" if kind == "resourceTemplates" else kind

        def handler(req: Request) -> None:
            items = getattr(self.gw.router, attribute)
            if self.views:
                items = self.visible(req.session, kind, items)
            cursor = req.params.get("cursor") if req.params is not None else \
                req.head.cursor if req.head is not None else UNSET
            page: dict[str, Any] = {kind: items}
            if (cursor is not UNSET and cursor is not None) or self.page_size:
                try:
                    page = self._page(kind, items, cursor)
                except ValueError as exc:
                    self.gw.send_error(req.session, req.id, jsonrpc.INVALID_PARAMS,
                                       f"Invalid params: {exc}")
                    return
            if not req.modern:
                self.gw.respond(req.session, req.id, page)
                return
            # server/discover declares only what some upstream serves, and a family it
            # does not declare must not answer (the conformance suite checks both ways).
            if capability not in self.capabilities():
                self.gw.send_error(req.session, req.id, jsonrpc.METHOD_NOT_FOUND,
                                   f"Method not found: {req.method} (no upstream offers "
                                   f"{capability})")
                return
            self.gw.respond(req.session, req.id, complete_result(
                page, cacheable=True, server_info=SERVER_INFO))
        return handler

    def _page(self, kind: str, items: list[dict[str, Any]], cursor: Any
              ) -> dict[str, Any]:
        """The page of ``items`` that ``cursor`` (UNSET or None: the first) points to,
        with the cursor of the next when there is one. A cursor names the list, the
        router's generation and an offset: one from before a rebuild, which may have
        moved items, is refused (the client was told the list changed)."""
        start = 0
        if cursor is not UNSET and cursor is not None:
            if not isinstance(cursor, str):
                raise ValueError("cursor must be a string")
            try:
                listed, generation, offset = base64.urlsafe_b64decode(
                    cursor.encode()).decode().split(":")
                start, issued = int(offset), int(generation)
            except (ValueError, UnicodeError):
                raise ValueError("not a cursor this gateway issued") from None
            current = self.gw.router.generation
            if listed == kind and 0 <= issued < current:
                raise ValueError("the cursor is stale (the list changed since it was "
                                 "issued): list again from the start")
            if listed != kind or issued != current or not 0 <= start <= len(items):
                raise ValueError(f"not a cursor of this list ({kind}) that this gateway "
                                 "issued")
        end = start + self.page_size if self.page_size else len(items)
        page: dict[str, Any] = {kind: items[start:end]}
        if end < len(items):
            page["nextCursor"] = base64.urlsafe_b64encode(
                f"{kind}:{self.gw.router.generation}:{end}".encode()).decode()
        return page

    def visible(self, session: DownstreamSession, kind: str, items: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
        """The items of list ``kind`` that every view shows ``session``."""
        router = self.gw.router
        key = LIST_KEYS[kind]
        shown = []
        for item in items:
            name = item.get(key)
            if not isinstance(name, str):
                continue
            upstream = _owner(router, kind, name)
            if upstream is not None and all(view(session, upstream.name, kind, name)
                                            for view in self.views):
                shown.append(item)
        return shown

    def refresh(self, upstream: Upstream, kinds: tuple[str, ...]) -> None:
        async def refresh() -> None:
            try:
                await upstream.fetch_catalog(kinds)
            except UpstreamError as exc:
                log.warning("could not refresh %s of %r: %s", "/".join(kinds), upstream.name,
                            exc.message)
                return
            # The upstream said its list changed: that is passed on after the refetch
            # even if the merged list reads the same (what changed may be behind it).
            self.rebuild(tuple(dict.fromkeys(
                "resources" if kind == "resourceTemplates" else kind for kind in kinds)))
        self.gw.background(refresh())

    def rebuild(self, announced: tuple[str, ...] = (),
                upstreams: list[Upstream] | None = None) -> None:
        """Rebuild the routes from the upstreams' catalogs and tell the sessions (and
        the listen streams that asked) which lists changed, and the lists an upstream
        ``announced`` changed: with views, each session only of the lists whose items
        it is shown changed. ``upstreams``: the upstreams to route to from now on (a
        reload added, removed or replaced one), put in place once what each session
        was shown has been read with the routes of before."""
        before = self._lists()
        seen_before = self._seen_by_identity() if self.views else None
        router = self.gw.router
        if upstreams is not None:
            for index, upstream in enumerate(upstreams):
                upstream.index = index
            router.upstreams = upstreams
        router.rebuild()
        self._announce_changes(before, seen_before, announced)

    def _lists(self) -> dict[str, list[dict[str, Any]]]:
        r = self.gw.router
        return {"tools": r.tools, "prompts": r.prompts,
                "resources": r.resources + r.resource_templates}

    def _seen_by_identity(self) -> Seen:
        """What each identity among the sessions is shown of each list, as names (the
        views decide by identity, so sessions of one identity share it)."""
        seen: Seen = {}
        for session in self.gw.sessions.values():
            key = _view_key(session)
            if key not in seen:
                seen[key] = self._seen(session)
        return seen

    def _seen(self, session: DownstreamSession) -> dict[str, tuple[dict[str, Any], ...]]:
        """What ``session`` is shown of each list, items whole: a change to an item it
        sees (a description, a schema) is a change to its list; one to an item it does
        not see is not."""
        r = self.gw.router
        return {"tools": tuple(self.visible(session, "tools", r.tools)),
                "prompts": tuple(self.visible(session, "prompts", r.prompts)),
                "resources": (*self.visible(session, "resources", r.resources),
                              *self.visible(session, "resourceTemplates",
                                            r.resource_templates))}

    def refilter(self, kinds: tuple[str, ...], change: Callable[[], None]) -> None:
        """Apply ``change`` to the views, and tell each session whose view of the lists
        ``kinds`` it changed."""
        seen_before = self._seen_by_identity()
        change()
        self._tell(kinds, seen_before)

    def _announce_changes(self, before: dict[str, list[dict[str, Any]]],
                          seen_before: Seen | None = None,
                          announced: tuple[str, ...] = ()) -> None:
        after = self._lists()
        self._tell(tuple(kind for kind in LISTS
                         if kind in announced or before[kind] != after[kind]),
                   seen_before)

    def _tell(self, kinds: tuple[str, ...], seen_before: Seen | None) -> None:
        """Send ``list_changed`` for each of ``kinds`` to every session (and its listen
        streams that asked); with ``seen_before`` (views are in force), only to those
        whose view of that list changed: an item it is shown came, went or changed."""
        if not kinds:
            return
        encoded = {kind: jsonrpc.notification(f"notifications/{kind}/list_changed")
                   for kind in kinds}
        seen_after: Seen = {}
        for session in list(self.gw.sessions.values()):
            earlier = after = None
            if seen_before is not None:
                key = _view_key(session)
                if key not in seen_after:
                    seen_after[key] = self._seen(session)
                earlier, after = seen_before.get(key), seen_after[key]
            for kind in kinds:
                if earlier is not None and after is not None and earlier[kind] == after[kind]:
                    continue  # nothing it is shown changed
                if session.initialized:
                    self.gw.send(session, encoded[kind])
                for listen in list(session.listens.values()):
                    if listen.wants(kind):
                        self.gw.send(session, tagged(f"notifications/{kind}/list_changed", {},
                                                     listen.request_id))


def _view_key(session: DownstreamSession) -> tuple[Any, ...]:
    """Sessions that views treat alike: of one identity (its key, groups and scopes)."""
    identity = session.identity
    return identity.key, identity.groups, identity.scopes


def _owner(router: Router, kind: str, name: str) -> Upstream | None:
    """The upstream a listed item comes from."""
    if kind == "tools" or kind == "prompts":
        route = router.route(KIND_TOOL if kind == "tools" else KIND_PROMPT, name)
        return route[0] if route is not None else None
    if kind == "resources":
        return router.route_uri(name)
    return router.route_template(name)


def _initialize_problem(params: dict[str, Any]) -> str | None:
    """What in initialize's ``params`` has the wrong type (InitializeRequestParams):
    ``capabilities`` and ``clientInfo`` are objects, and so is each capability the
    gateway acts on (``{"sampling": 5}`` declares nothing). Either one missing is taken
    as empty, as clients older than the schema's requirement send."""
    caps = params.get("capabilities", {})
    if not isinstance(caps, dict):
        return "params.capabilities must be an object"
    for name in ("sampling", "elicitation", "roots", "experimental"):
        if name in caps and not isinstance(caps[name], dict):
            return f"params.capabilities.{name} must be an object"
    if not isinstance(params.get("clientInfo", {}), dict):
        return "params.clientInfo must be an object"
    return None
