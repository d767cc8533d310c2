"""Resource subscriptions and listen streams: who holds which URI, the upstream asked
once for the first holder and told when the last one lets go, updates fanned out to the
holders, and the modern ``subscriptions/listen`` streams (basic/patterns/subscriptions).
A modern upstream has no resources/subscribe: its URIs join the gateway's own listen
stream to it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..protocol import jsonrpc
from ..protocol.mcp import LISTEN_FLAGS, SUBSCRIPTIONS_ACKNOWLEDGED
from ..protocol.modern import META_SUBSCRIPTION_ID, tagged
from .call import Request, Upstream
from .catalog import Catalog
from .ports import Core
from .session import NOTHING_YET, DownstreamSession, Listen

log = logging.getLogger("mcpfast.gateway")


def subscribed(session: DownstreamSession) -> int:
    """The resource subscriptions ``session`` holds (``limits.max_subscriptions``)."""
    return len(session.subscriptions) + sum(len(listen.uris)
                                            for listen in session.listens.values())


class Subscriptions:
    def __init__(self, gw: Core, catalog: Catalog) -> None:
        self.gw = gw
        self.catalog = catalog

    @staticmethod
    def can_subscribe(upstream: Upstream) -> bool:
        return bool((upstream.capabilities.get("resources") or {}).get("subscribe"))

    def refused(self, session: DownstreamSession, upstream: Upstream,
                uri: str) -> None:
        """The upstream answered a forwarded subscribe with an error: undo the
        bookkeeping, so that the next subscriber asks the upstream again."""
        session.subscriptions.pop(uri, None)
        self._uncount(upstream, uri)

    @staticmethod
    def _uncount(upstream: Upstream, uri: str) -> None:
        count = upstream.subscriptions.get(uri, 0) - 1
        if count > 0:
            upstream.subscriptions[uri] = count
        else:
            upstream.subscriptions.pop(uri, None)

    def release(self, uri: str) -> None:
        upstream = self.gw.router.route_uri(uri)
        if upstream is None:
            return
        count = upstream.subscriptions.get(uri, 0) - 1
        if count > 0:
            upstream.subscriptions[uri] = count
            return
        upstream.subscriptions.pop(uri, None)
        if not upstream.ready:
            return
        if upstream.era == "modern":
            upstream.listen(upstream.subscriptions)
        else:
            self.gw.background(upstream.call("resources/unsubscribe", {"uri": uri}))

    def hold(self, upstream: Upstream, uri: str) -> asyncio.Future[Any] | None:
        """Count one more holder of ``uri``; the first asks the upstream for updates.
        Returns a legacy upstream's ``resources/subscribe`` call, which the caller
        awaits (None when nothing was asked, or a modern upstream's listen was)."""
        count = upstream.subscriptions.get(uri, 0)
        upstream.subscriptions[uri] = count + 1
        if count or not upstream.ready:
            return None
        if upstream.era == "modern":
            upstream.listen(upstream.subscriptions)
            return None
        return asyncio.ensure_future(upstream.call("resources/subscribe", {"uri": uri}))

    def resubscribe(self, upstream: Upstream) -> None:
        """A restarted upstream knows none of the subscriptions that sessions still
        hold on it: ask for each of them again (a modern upstream: in one listen)."""
        counts: dict[str, int] = {}
        for session in self.gw.sessions.values():
            held = list(session.subscriptions)
            for listen in session.listens.values():
                held.extend(listen.uris)
            for uri in held:
                if self.gw.router.route_uri(uri) is upstream:
                    counts[uri] = counts.get(uri, 0) + 1
        upstream.subscriptions = counts
        if upstream.era == "modern":
            if counts:
                upstream.listen(counts)
            return
        for uri in counts:
            self.gw.background(upstream.call("resources/subscribe", {"uri": uri}))

    def resource_updated(self, upstream: Upstream, params: dict[str, Any]) -> None:
        uri = params.get("uri")
        if not isinstance(uri, str) or self.gw.router.route_uri(uri) is not upstream:
            return
        method = "notifications/resources/updated"
        plain = jsonrpc.notification(method, params)
        views = self.catalog.views
        for session in list(self.gw.sessions.values()):
            if views and not all(view(session, upstream.name, "resources", uri)
                                 for view in views):
                # Subscribed while it could read the resource, before a reload denied
                # it: what the policy in force refuses it reads nothing of.
                continue
            if uri in session.subscriptions:
                self.gw.send(session, plain)
            for listen in list(session.listens.values()):
                if uri in listen.uris:
                    self.gw.send(session, tagged(method, params, listen.request_id))

    @staticmethod
    def from_listen(upstream: Upstream, params: dict[str, Any]) -> bool:
        """Strip a modern upstream's subscription id; False for a stream the gateway
        has already replaced (its URIs may be ones nobody holds any more)."""
        meta = params.get("_meta")
        if not isinstance(meta, dict) or META_SUBSCRIPTION_ID not in meta:
            return True
        subscription = meta.pop(META_SUBSCRIPTION_ID)
        if not meta:
            del params["_meta"]
        return subscription == upstream.listen_id

    def listen(self, req: Request) -> None:
        """basic/patterns/subscriptions: acknowledge the honoured subset first; the
        stream then gets the changes it asked for until the client goes or cancels, or
        the gateway stops (``protocol.modern.listen_result``)."""
        session, listen_id, params = req.session, req.id, req.params or {}
        if self.gw.id_taken(session, listen_id):
            return
        wanted = params.get("notifications")
        uris = wanted.get("resourceSubscriptions", []) if isinstance(wanted, dict) else None
        if not isinstance(wanted, dict) or not isinstance(uris, list) or \
                not all(isinstance(uri, str) for uri in uris):
            self.gw.send_error(session, listen_id, jsonrpc.INVALID_PARAMS,
                               "subscriptions/listen requires params.notifications, an object "
                               "whose resourceSubscriptions (if any) is a list of URIs")
            return
        wanted_uris = dict.fromkeys(uris)
        limit = self.gw.config.limits.max_subscriptions
        held_before = subscribed(session)
        if len(wanted_uris) + held_before > limit:
            self.gw.send_error(session, listen_id, jsonrpc.INVALID_PARAMS, (
                f"subscriptions/listen names {len(wanted_uris)} resources and the session "
                f"holds {held_before} subscriptions: more than limits.max_subscriptions "
                f"({limit})"))
            return
        served = self.catalog.capabilities()
        honoured: dict[str, Any] = {flag: True for flag, kind in LISTEN_FLAGS.items()
                                    if wanted.get(flag) is True and kind in served}
        views = self.catalog.views
        held = [(uri, upstream) for uri in wanted_uris
                if (upstream := self.gw.router.route_uri(uri)) is not None
                and self.can_subscribe(upstream)
                and all(view(session, upstream.name, "resources", uri) for view in views)]
        listen = session.table("listens")[listen_id] = Listen(listen_id)
        asked = [(uri, upstream, call) for uri, upstream in held
                 if (call := self.hold(upstream, uri)) is not None]
        if asked:
            # A legacy server may refuse a URI: the acknowledgement lists only what it
            # agreed to (basic/patterns/subscriptions "Acknowledgment"), once it has
            # answered. Meanwhile the listen is there (its id taken) and gets nothing.
            self.gw.background(self._acknowledge(session, listen, honoured, held, asked))
        else:
            self._open(session, listen, honoured, tuple(uri for uri, _ in held))

    def _open(self, session: DownstreamSession, listen: Listen, honoured: dict[str, Any],
              uris: tuple[str, ...]) -> None:
        """Acknowledge ``listen`` with what is ``honoured`` and watch ``uris``: from now
        on it gets what it asked for."""
        if uris:
            honoured["resourceSubscriptions"] = list(uris)
        listen.tools = "toolsListChanged" in honoured
        listen.prompts = "promptsListChanged" in honoured
        listen.resources = "resourcesListChanged" in honoured
        listen.uris = uris
        self.gw.send(session, jsonrpc.notification(SUBSCRIPTIONS_ACKNOWLEDGED, {
            "_meta": {META_SUBSCRIPTION_ID: listen.request_id}, "notifications": honoured}))

    async def _acknowledge(self, session: DownstreamSession, listen: Listen,
                           honoured: dict[str, Any], held: list[tuple[str, Upstream]],
                           asked: list[tuple[str, Upstream, asyncio.Future[Any]]]) -> None:
        results = await asyncio.gather(*(call for _, _, call in asked), return_exceptions=True)
        refused = set()
        for (uri, upstream, _), result in zip(asked, results, strict=True):
            if isinstance(result, BaseException):
                # Not held: the next subscriber asks the server again.
                refused.add(uri)
                self._uncount(upstream, uri)
                log.info("upstream %r refused a subscription to %s: %s", upstream.name,
                         uri, result)
        uris = tuple(uri for uri, _ in held if uri not in refused)
        if session.listens.get(listen.request_id) is not listen:
            # Cancelled, or its session closed, while the server answered.
            for uri in uris:
                self.release(uri)
            return
        self._open(session, listen, honoured, uris)

    def end_listen(self, listen: Listen) -> None:
        for uri in listen.uris:
            self.release(uri)

    def session_closed(self, session: DownstreamSession) -> None:
        if session.subscriptions is NOTHING_YET and session.listens is NOTHING_YET:
            return  # it never subscribed nor listened (most sessions)
        for uri in session.subscriptions:
            self.release(uri)
        session.subscriptions.clear()
        listens, session.listens = session.listens, NOTHING_YET
        for listen in listens.values():
            self.end_listen(listen)
