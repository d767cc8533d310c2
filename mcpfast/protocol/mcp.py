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


LIST_ITEM_KEYS = {"tools": "name", "prompts": "name", "resources": "uri",
                  "resourceTemplates": "uriTemplate"}
"""The member that names an item of each list (a string every item must have)."""


def server_capabilities(value: object) -> tuple[dict[str, Any], list[str]]:
    """A server's ``capabilities`` as the gateway reads them, and what was wrong with
    what it sent. Each capability is an object (ServerCapabilities); one sent as another
    value is taken as declared without options (``true`` says as much), null or
    ``false`` as not declared: one server's slip never breaks the gateway's own
    handshake with its clients."""
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        return {}, [f"capabilities must be an object, not {json_type(value)}"]
    problems = []
    read: dict[str, Any] = {}
    for name, options in value.items():
        if isinstance(options, dict):
            read[name] = options
            continue
        problems.append(f"capabilities.{name} must be an object, not {json_type(options)}")
        if options is not None and options is not False:
            read[name] = {}
    return read, problems


def list_page_items(page: object, kind: str, seen: set[str]) -> tuple[list[dict[str, Any]],
                                                                     list[str]]:
    """The items of one page of a server's list ``kind`` the gateway can serve (objects
    named by a string, each name once: ``seen`` holds the names of the pages before),
    and what was wrong with the rest."""
    if not isinstance(page, dict):
        return [], [f"the result must be an object, not {json_type(page)}"]
    key = LIST_ITEM_KEYS[kind]
    raw = page.get(kind)
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [f"{kind} must be an array, not {json_type(raw)}"]
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        name = item.get(key) if isinstance(item, dict) else None
        if not isinstance(item, dict):
            problems.append(f"{kind}[{index}] must be an object, not {json_type(item)}")
        elif not isinstance(name, str):
            problems.append(f"{kind}[{index}] has no string {key!r}")
        elif name in seen:
            problems.append(f"{kind}[{index}]: {key} {name!r} listed twice; the first is kept")
        else:
            seen.add(name)
            items.append(item)
    return items, problems


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
