"""The policy chain: what stands between routing a request and forwarding it.

A policy is compiled at config load into plain callables, and the chain is a tuple of
them: the gateway loops over it inline for each request it forwards and skips the loop
when the tuple is empty, so a gateway without policies pays one truth test per request,
and a policy allocates nothing for a request it lets through.

A check is called with the request (call.py: its session, method, and the tool or
prompt name or resource URI as the client gave it), the upstream's name and the
monotonic time, and returns None to let the request through, or the error to answer it
with (``Refusal``); a refused request never reaches the upstream. Authorization
(``authz.py``) runs first, then the rate limits (``rate_limit.py``), so a denied call
takes no token.

Lists pass through the same policies: a policy that decides what a session may call
also contributes a view, called per listed item with the session, the upstream's name,
the list (``tools``, ``prompts``, ``resources``, ``resourceTemplates``) and the item's
name or URI as the client sees it, so that a caller is shown only what it may call.
With no view, a list is served as the router holds it, without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from .authz import Authorization, authz_check, authz_view
from .call import Request
from .rate_limit import RATE_LIMITED, RateLimit
from .refusal import Refusal
from .session import DownstreamSession

__all__ = ["Chain", "Check", "Refusal", "View", "compile_chain", "compile_checks"]


Check = Callable[[Request, str, float], "Refusal | None"]
View = Callable[[DownstreamSession, str, str, str], bool]
"""Whether the session is shown a listed item: (session, upstream, list, name or URI)."""


class Chain(NamedTuple):
    """The compiled policies."""

    checks: tuple[Check, ...]
    """Run for every request between routing and forwarding."""
    views: tuple[View, ...]
    """Run over every item of every list a session is served."""


def rate_limit_check(limit: RateLimit) -> Check:
    """A limit as a check: it takes a token from the bucket of the session's identity
    (or the shared one) for every request it applies to."""
    applies = limit.applies
    retry_after = limit.retry_after
    name = limit.name
    everything = limit.upstream is None and not limit.filters_tools

    def check(req: Request, upstream: str, now: float) -> Refusal | None:
        if not everything and not applies(upstream, req.method, req.name):
            return None
        wait = retry_after(req.session.identity.key, now)
        if not wait:
            return None
        return Refusal(RATE_LIMITED, f"Rate limited ({name}): retry in {wait:.3g} s",
                       {"retryAfterSeconds": round(wait, 3), "limit": name}, "rate_limit")
    return check


def compile_checks(rate_limits: Iterable[RateLimit],
                   authorization: Authorization | None = None) -> tuple[Check, ...]:
    """The checks, in the order the policies run: authorization, then the rate limits
    in config order."""
    first = (authz_check(authorization),) if authorization is not None else ()
    return first + tuple(rate_limit_check(limit) for limit in rate_limits)


def compile_chain(rate_limits: Iterable[RateLimit],
                  authorization: Authorization | None = None) -> Chain:
    """The whole chain. Authorization hides what a caller may not use; a rate limit
    hides nothing (a tool refused for now is the session's to call once its bucket
    refills, so it stays listed)."""
    views = (authz_view(authorization),) if authorization is not None else ()
    return Chain(compile_checks(rate_limits, authorization), views)
