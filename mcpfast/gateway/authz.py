"""Authorization: which tools, prompts and resources each identity may use.

``[[authorization.rules]]`` tables select identities (names, groups, scopes, JWT
claims) and allow or deny names and URIs by shell pattern, optionally on one upstream.
For a request, the rules that apply to the caller decide: a deny wins over an allow,
and what no rule decides gets ``authorization.default``. Lists are filtered by the same
verdicts, so a caller sees exactly what it may use.

A denied call is answered as if the name did not exist (the same error an unknown tool,
prompt or resource gets), so a caller learns nothing of what it may not see; the refusal
is logged to the ``mcpfast.audit`` logger and counted.

Verdicts are worked out once per identity and name and remembered (``Grants``), on the
session: a call pays an attribute read and a dict lookup.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from typing import Any

from ..auth.identity import Identity
from ..config import AccessRuleConfig, AuthorizationConfig, scoped_name
from ..protocol import jsonrpc
from .call import Request
from .refusal import Refusal
from .session import DownstreamSession

audit = logging.getLogger("mcpfast.audit")

KINDS = ("tools", "prompts", "resources")
POLICY = "authorization"
"""The label its refusals are counted under (Refusal.policy)."""
LIST_KINDS = {"tools": "tools", "prompts": "prompts", "resources": "resources",
              "resourceTemplates": "resources"}
MAX_VERDICTS = 10_000
"""Verdicts one identity remembers (names that routed, so the catalog bounds them)."""
MAX_GRANTS = 10_000
"""Identities whose rules are remembered."""


def _patterns(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.S)


class Rule:
    """One rule, compiled."""

    __slots__ = ("allow", "any_name", "claims", "deny", "groups", "keys", "name", "names",
                 "scopes", "upstream")

    def __init__(self, config: AccessRuleConfig, index: int) -> None:
        self.name = config.name or f"rules[{index}]"
        self.names = frozenset(name for name in config.names if not scoped_name(name))
        """Bare names: the verified name, however it was verified."""
        self.keys = frozenset(name for name in config.names if scoped_name(name))
        """``METHOD:NAME``: that name, verified that way (the identity's key)."""
        self.any_name = "*" in self.names
        self.groups = frozenset(config.groups)
        self.scopes = frozenset(config.scopes)
        self.claims = {k: (v,) if isinstance(v, str) else tuple(v)
                       for k, v in config.claims.items()}
        self.upstream = config.upstream
        self.allow = {kind: _patterns(getattr(config, f"allow_{kind}")) for kind in KINDS}
        self.deny = {kind: _patterns(getattr(config, f"deny_{kind}")) for kind in KINDS}

    def applies_to(self, identity: Identity) -> bool:
        if (self.names or self.keys) and not (
                identity.name in self.names or identity.key in self.keys or
                (self.any_name and identity.authenticated)):
            return False
        if self.groups and self.groups.isdisjoint(identity.groups):
            return False
        if self.scopes and not self.scopes <= identity.scopes:
            return False
        if self.claims:
            claims = identity.claims or {}
            for claim, values in self.claims.items():
                value = claims.get(claim)
                if not (value in values if isinstance(value, str) else
                        isinstance(value, list) and any(v in values for v in value)):
                    return False
        return True

    def verdict(self, kind: str, upstream: str, name: str) -> bool | None:
        """False: denied, True: allowed, None: this rule says nothing of it."""
        if self.upstream is not None and self.upstream != upstream:
            return None
        deny = self.deny[kind]
        if deny is not None and deny.match(name):
            return False
        allow = self.allow[kind]
        if allow is not None and allow.match(name):
            return True
        return None


class Grants:
    """What one identity may use: the rules that apply to it, and the verdicts
    reached so far."""

    __slots__ = ("_seen", "default", "owner", "rules")

    def __init__(self, owner: Authorization, rules: tuple[Rule, ...], default: bool) -> None:
        self.owner = owner
        self.rules = rules
        self.default = default
        self._seen: dict[tuple[str, str, str], bool] = {}

    def allows(self, kind: str, upstream: str, name: str) -> bool:
        key = (kind, upstream, name)
        verdict = self._seen.get(key)
        if verdict is None:
            verdicts = [r.verdict(kind, upstream, name) for r in self.rules]
            verdict = False if False in verdicts else True if True in verdicts \
                else self.default
            if len(self._seen) >= MAX_VERDICTS:
                self._seen.clear()
            self._seen[key] = verdict
        return verdict


class Authorization:
    """The compiled ``[authorization]`` of one config snapshot."""

    def __init__(self, config: AuthorizationConfig, denied: dict[str, int] | None = None
                 ) -> None:
        self.rules = tuple(Rule(rule, i) for i, rule in enumerate(config.rules))
        self.default = config.default == "allow"
        self.claim_names = tuple(sorted({c for rule in self.rules for c in rule.claims}))
        self._grants: dict[tuple[Any, ...], Grants] = {}
        self.denied = denied if denied is not None else {}
        """Refused calls by kind: a metric, kept across reloads."""
        for kind in KINDS:
            self.denied.setdefault(kind, 0)

    def grants(self, session: DownstreamSession) -> Grants:
        """The session's grants under this config (worked out once per identity)."""
        grants = session.grants
        if grants is not None and grants.owner is self:
            return grants  # type: ignore[no-any-return]
        identity = session.identity
        claims = identity.claims or {}
        key = (identity.key, identity.groups, identity.scopes,
               *(repr(claims.get(c)) for c in self.claim_names))
        grants = self._grants.get(key)
        if grants is None:
            if len(self._grants) >= MAX_GRANTS:
                self._grants.clear()
            grants = self._grants[key] = Grants(
                self, tuple(r for r in self.rules if r.applies_to(identity)), self.default)
        session.grants = grants
        return grants

    def refused(self, req: Request, upstream: str, kind: str, name: str) -> Refusal:
        """Count and log a denied call, and answer it as an unknown name."""
        self.denied[kind] += 1
        identity = req.session.identity
        audit.warning("denied: identity=%s method=%s name=%s upstream=%s", identity.key,
                      req.method, name, upstream,
                      extra={"event": "denied", "identity": identity.key,
                             "method": req.method, "target": name, "upstream": upstream,
                             "reason": "authorization"})
        if kind == "tools":
            return Refusal(jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}", policy=POLICY)
        if kind == "prompts":
            return Refusal(jsonrpc.INVALID_PARAMS, f"Unknown prompt: {name}", policy=POLICY)
        if req.method == "completion/complete":
            return Refusal(jsonrpc.INVALID_PARAMS, f"Unknown resource template: {name}",
                           policy=POLICY)
        if req.modern:
            return Refusal(jsonrpc.INVALID_PARAMS, f"Resource not found: {name}",
                           {"uri": name}, POLICY)
        return Refusal(jsonrpc.RESOURCE_NOT_FOUND, f"Resource not found: {name}",
                       policy=POLICY)


def _target(req: Request) -> tuple[str, str] | None:
    """What ``req`` uses, as (kind, name or URI); None when it names nothing."""
    method = req.method
    if method == "tools/call":
        return ("tools", req.name) if req.name is not None else None
    if method == "prompts/get":
        return ("prompts", req.name) if req.name is not None else None
    if method in ("resources/read", "resources/subscribe"):
        return ("resources", req.uri) if req.uri is not None else None
    if method == "completion/complete":
        # Routed by params.ref, which _complete copies into name (a prompt) or uri.
        if req.name is not None:
            return "prompts", req.name
        return ("resources", req.uri) if req.uri is not None else None
    return None


def authz_check(authorization: Authorization) -> Any:
    """The chain's check: refuse a call the caller's rules do not allow."""
    grants_of = authorization.grants

    def check(req: Request, upstream: str, now: float) -> Refusal | None:
        target = _target(req)
        if target is None or grants_of(req.session).allows(target[0], upstream, target[1]):
            return None
        return authorization.refused(req, upstream, *target)
    return check


def authz_view(authorization: Authorization) -> Any:
    """The chain's view: list only what the caller may use."""
    grants_of = authorization.grants

    def view(session: DownstreamSession, upstream: str, listed: str, name: str) -> bool:
        return grants_of(session).allows(LIST_KINDS[listed], upstream, name)
    return view
