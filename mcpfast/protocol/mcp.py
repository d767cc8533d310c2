"""MCP protocol facts the gateway decides on: versions, methods, era.

Design note: mcpfast terminates the MCP handshake on both sides. Clients negotiate a
version with the gateway; the gateway negotiates its own with each upstream. The legacy
versions below are the ones whose message shapes the gateway forwards unchanged.

Eras (PROTOCOL.md): a client request is modern (2026-07-28) when it comes on a session the
transport marked modern or when its ``params._meta`` names a protocol version; anything
else is legacy and needs ``initialize`` first. An upstream's era is decided once per
start: ``server/discover`` with a short timeout, then ``initialize`` on any other answer
(basic/transports/stdio "Backward Compatibility"). The gateway converts between the two
at its edges; ``gateway.py`` holds the conversions.

Choices the specification leaves open, recorded here:
- ``server/discover``'s ``supportedVersions`` and -32022's ``supported`` are the same
  list, the modern versions only (streamable-http-notes §6.3).
- The gateway's own results for modern clients (``server/discover`` and the aggregated
  lists) carry ``ttlMs: 0`` and ``cacheScope: "private"``: they change whenever an
  upstream restarts or announces a change, which the gateway cannot promise against,
  and lists will be filtered per caller. ``resources/read`` from a legacy upstream gets
  the same hints; a modern upstream's own hints pass through (server/utilities/caching).
- A listen stream's subscription id is the listen request's id, with its JSON type.
"""

from __future__ import annotations

LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST_LEGACY = LEGACY_VERSIONS[0]

# Methods a client may send before the session is initialized (basic/lifecycle).
PRE_INIT_METHODS = frozenset({"initialize", "ping"})

# Server-to-client requests (client/sampling, client/elicitation, client/roots) and the
# client capability each needs.
CLIENT_CAPABILITY_FOR = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}

# What the gateway declares to upstreams as a client: it can pass each of these on to a
# client that has them. Modern capabilities have no roots.listChanged (the notification
# was removed in 2026-07-28).
LEGACY_CLIENT_CAPABILITIES: dict[str, dict[str, bool]] = {
    "sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}
MODERN_CLIENT_CAPABILITIES: dict[str, dict[str, bool]] = {
    "sampling": {}, "elicitation": {}, "roots": {}}

# subscriptions/listen filter flag -> the list kind (and capability) it watches.
LISTEN_FLAGS = {"toolsListChanged": "tools", "promptsListChanged": "prompts",
                "resourcesListChanged": "resources"}
SUBSCRIPTIONS_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
