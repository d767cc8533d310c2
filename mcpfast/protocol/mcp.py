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
- Client input across eras (basic/patterns/mrtr; gateway/mrtr.py). A legacy upstream asks
  one thing at a time, so each of its requests becomes its own ``input_required`` round,
  keyed by the capability it needs (``sampling``, ``elicitation``, ``roots``). The
  ``requestState`` is HMAC-SHA256 signed, expires after five minutes, names the method,
  the tool/prompt name or URI and a digest of the arguments, and is good for one retry;
  it names no principal, as the gateway authenticates no clients yet. A client that
  lacks the capability gets -32021 with ``requiredCapabilities`` in either direction (a
  legacy client too: the code is in the implementation-defined range there); a legacy
  client that answers a relayed request with an error fails its call with -32603, since
  ``inputResponses`` can carry no error.
"""

from __future__ import annotations

from typing import Any

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
# client that has them, and answers a server's request that needs what its client lacks
# with an error (``required_capability``): so every part a legacy server may use is
# declared, URL-mode elicitation and tool use in sampling included (client/elicitation
# and client/sampling "Capabilities"). Modern capabilities have no roots.listChanged (the
# notification was removed in 2026-07-28).
LEGACY_CLIENT_CAPABILITIES: dict[str, dict[str, Any]] = {
    "sampling": {"tools": {}}, "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True}}
MODERN_CLIENT_CAPABILITIES: dict[str, dict[str, bool]] = {
    "sampling": {}, "elicitation": {}, "roots": {}}

# subscriptions/listen filter flag -> the list kind (and capability) it watches.
LISTEN_FLAGS = {"toolsListChanged": "tools", "promptsListChanged": "prompts",
                "resourcesListChanged": "resources"}
SUBSCRIPTIONS_ACKNOWLEDGED = "notifications/subscriptions/acknowledged"

# basic/patterns/mrtr "Supported Requests": the only requests an input_required result
# may answer.
INPUT_REQUIRED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
ELICITATION_ACTIONS = frozenset({"accept", "decline", "cancel"})


def required_capability(method: str, params: object,
                        capabilities: dict[str, Any]) -> dict[str, Any] | None:
    """What a client lacks to take the server-to-client request ``method``, as the
    ``requiredCapabilities`` object of a -32021 error (basic/index "Error Codes"), or
    None when its ``capabilities`` cover it. URL-mode elicitation needs ``url`` declared
    under ``elicitation`` (client/elicitation "Capabilities": ``{}`` means form only), and
    sampling with ``tools`` or ``toolChoice`` needs ``tools`` under ``sampling``."""
    capability = CLIENT_CAPABILITY_FOR.get(method)
    if capability is None:
        return None
    declared = capabilities.get(capability)
    if declared is None:
        return {capability: {}}
    parts = declared if isinstance(declared, dict) else {}
    if capability == "elicitation" and isinstance(params, dict) and \
            params.get("mode") == "url" and "url" not in parts:
        return {"elicitation": {"url": {}}}
    if capability == "sampling" and isinstance(params, dict) and \
            ("tools" in params or "toolChoice" in params) and "tools" not in parts:
        # client/sampling "Tool Use": only to a client that declared sampling.tools.
        return {"sampling": {"tools": {}}}
    return None


def input_response_problem(method: str, answer: object) -> str | None:
    """Why ``answer`` cannot be the client's result for the server-to-client request
    ``method`` (CreateMessageResult, ElicitResult, ListRootsResult), or None. Only the
    members a server cannot do without are checked; the rest is the server's business."""
    if not isinstance(answer, dict):
        return "must be an object"
    if method == "sampling/createMessage" and not (
            isinstance(answer.get("content"), dict | list) and isinstance(answer.get("role"), str)):
        return "must be a CreateMessageResult (role, content, model)"
    if method == "elicitation/create" and answer.get("action") not in ELICITATION_ACTIONS:
        return "must be an ElicitResult (action: accept, decline or cancel)"
    if method == "roots/list" and not isinstance(answer.get("roots"), list):
        return "must be a ListRootsResult (roots)"
    return None
