"""Router: the aggregated catalog and the compiled table that routes calls by name.

With one upstream its names pass through unchanged. With several, names are exposed as
``upstream<separator>name`` by the prefix mode: ``always`` prefixes every name,
``conditional`` only the names that two upstreams share, ``never`` none (a collision is
then resolved for the first upstream in config order, and logged). Resource URIs keep
their value; an exact URI routes through the table, anything else through the upstreams'
URI templates.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mcpfast_ext import routing_table

if TYPE_CHECKING:
    from .call import Upstream

log = logging.getLogger("mcpfast.router")

KIND_TOOL = routing_table.KIND_TOOL
KIND_PROMPT = routing_table.KIND_PROMPT
KIND_RESOURCE = routing_table.KIND_RESOURCE
MAX_NAME = 128  # the spec's tool name limit (server/tools "Tool names")


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template expands to (levels 1 to 4)."""
    parts: list[str] = []
    pos = 0
    for m in re.finditer(r"\{([^}]*)\}", template):
        parts.append(re.escape(template[pos:m.start()]))
        op = m[1][:1]
        if op in "+#":
            parts.append(".*")
        elif op in "?&":
            parts.append(r"(?:[?&].*)?")
        elif op == "/":
            parts.append(r"(?:/[^?#]*)?")
        elif op in ".;":
            parts.append(r"[^/?#]*")
        else:
            parts.append(r"[^/?#]+")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts) + r"\Z")


class Router:
    def __init__(self, upstreams: Sequence[Upstream], prefix: str, separator: str) -> None:
        self.upstreams = list(upstreams)
        self.prefix = prefix
        self.separator = separator
        self.table = routing_table.RoutingTable()
        self.tools: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.resource_templates: list[dict[str, Any]] = []
        self._templates: list[tuple[re.Pattern[str], Upstream]] = []
        self._template_owner: dict[str, Upstream] = {}
        self.collisions: list[str] = []
        self.generation = 0
        """Counts rebuilds: a list cursor names the generation it pages through."""

    def rebuild(self) -> None:
        """Recompute every list and route from the upstreams' current catalogs."""
        self.generation += 1
        table = routing_table.RoutingTable()
        collisions: list[str] = []
        listed = [u for u in self.upstreams if u.catalog is not None]
        tools = self._named(table, KIND_TOOL, "tools", listed, collisions)
        prompts = self._named(table, KIND_PROMPT, "prompts", listed, collisions)
        resources: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        patterns: list[tuple[re.Pattern[str], Upstream]] = []
        owners: dict[str, Upstream] = {}
        for upstream in listed:
            for item in _listed(upstream, "resources"):
                uri = item.get("uri")
                if not isinstance(uri, str):
                    continue
                if table.add(KIND_RESOURCE, uri, upstream.index, uri):
                    resources.append(item)
                else:
                    collisions.append(f"resource {uri!r} of upstream {upstream.name!r}")
            for item in _listed(upstream, "resourceTemplates"):
                template = item.get("uriTemplate")
                if not isinstance(template, str) or template in owners:
                    continue
                owners[template] = upstream
                patterns.append((template_regex(template), upstream))
                templates.append(item)
        for what in collisions:
            log.warning("name collision: %s is hidden by an earlier upstream", what)
        self.table = table
        self.tools, self.prompts = tools, prompts
        self.resources, self.resource_templates = resources, templates
        self._templates, self._template_owner = patterns, owners
        self.collisions = collisions

    def _named(self, table: Any, kind: int, key: str, listed: list[Upstream],
               collisions: list[str]) -> list[dict[str, Any]]:
        counts: Counter[str] = Counter()
        for upstream in listed:
            counts.update({item["name"] for item in _listed(upstream, key)
                           if isinstance(item.get("name"), str)})
        out: list[dict[str, Any]] = []
        for upstream in listed:
            for item in _listed(upstream, key):
                name = item.get("name")
                if not isinstance(name, str):
                    continue
                public = self.public_name(upstream, name, counts[name] > 1)
                if len(public) > MAX_NAME:
                    log.warning("%s %r of upstream %r is hidden: %r is over %d characters",
                                key[:-1], name, upstream.name, public, MAX_NAME)
                    continue
                if not table.add(kind, public, upstream.index, name):
                    collisions.append(f"{key[:-1]} {name!r} of upstream {upstream.name!r}")
                    continue
                out.append(item if public == name else {**item, "name": public})
        return out

    def public_name(self, upstream: Upstream, name: str, shared: bool) -> str:
        if len(self.upstreams) == 1 or self.prefix == "never":
            return name
        if self.prefix == "always" or shared:
            return f"{upstream.name}{self.separator}{name}"
        return name

    def route(self, kind: int, name: str) -> tuple[Upstream, str] | None:
        hit = self.table.lookup(kind, name)
        if hit is None:
            return None
        return self.upstreams[hit[0]], hit[1]

    def route_uri(self, uri: str) -> Upstream | None:
        hit = self.table.lookup(KIND_RESOURCE, uri)
        if hit is not None:
            return self.upstreams[hit[0]]
        for pattern, upstream in self._templates:
            if pattern.match(uri):
                return upstream
        if len(self.upstreams) == 1:
            # A server may serve URIs it does not list; with one upstream there is no doubt.
            return self.upstreams[0]
        return None

    def route_template(self, template: str) -> Upstream | None:
        owner = self._template_owner.get(template)
        if owner is None and len(self.upstreams) == 1:
            return self.upstreams[0]
        return owner


def _listed(upstream: Upstream, kind: str) -> list[dict[str, Any]]:
    """The items of list ``kind`` that ``upstream`` serves: its own, and those only its
    legacy twin has (a twin is another process of a stdio server, whose lists can change
    apart from the first's: gateway/legacy_twin.py)."""
    assert upstream.catalog is not None
    items: list[dict[str, Any]] = upstream.catalog.get(kind, [])
    twin = upstream.legacy_twin.twin if upstream.legacy_twin is not None else None
    if twin is None or not twin.catalog:
        return items
    key = "uri" if kind == "resources" else "uriTemplate" if kind == "resourceTemplates" \
        else "name"
    known = {item.get(key) for item in items}
    extra = [item for item in twin.catalog.get(kind, []) if item.get(key) not in known]
    return items + extra if extra else items
