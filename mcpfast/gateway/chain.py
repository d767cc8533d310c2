"""The policy chain: what stands between routing a request and forwarding it.

A policy is compiled at config load into plain callables, and the chain is a tuple of
them: the gateway loops over it inline for each request it forwards and skips the loop
when the tuple is empty, so a gateway without policies pays one truth test per request,
and a policy allocates nothing for a request it lets through.

A check is called with the session, the upstream's name, the method, the tool, prompt
or resource as the client named it (None for other methods) and the monotonic time, and
returns None to let the request through, or the error to answer it with (``Refusal``);
a refused request never reaches the upstream. Rate limits are the first policy
(``rate_limit.py``); authorization will be the next.

Lists pass through the same policies: a policy that decides what a session may call
also contributes a view, called per listed item with the session, the upstream's name,
the list (``tools``, ``prompts``, ``resources``, ``resourceTemplates``) and the item's
name or URI as the client sees it, so that a caller is shown only what it may call.
With no view, a list is served as the router holds it, without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec
from msgspec import UNSET

from .rate_limit import RATE_LIMITED, RateLimit
from .session import DownstreamSession


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A policy's answer to a request it does not let through: a JSON-RPC error."""

    code: int
    message: str
    data: Any = UNSET
    """The error's ``data``; left out when UNSET."""


Check = Callable[[DownstreamSession, str, str, "str | None", float], "Refusal | None"]
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

    def check(session: DownstreamSession, upstream: str, method: str, called: str | None,
              now: float) -> Refusal | None:
        if not everything and not applies(upstream, method, called):
            return None
        wait = retry_after(session.identity.key, now)
        if not wait:
            return None
        return Refusal(RATE_LIMITED, f"Rate limited ({name}): retry in {wait:.3g} s",
                       {"retryAfterSeconds": round(wait, 3), "limit": name})
    return check


def compile_checks(rate_limits: Iterable[RateLimit]) -> tuple[Check, ...]:
    """The checks, in the order the policies run: rate limits in config order."""
    return tuple(rate_limit_check(limit) for limit in rate_limits)


def compile_chain(rate_limits: Iterable[RateLimit]) -> Chain:
    """The whole chain. A rate limit hides nothing: a tool refused for now is still the
    session's to call once its bucket refills, so it stays listed."""
    return Chain(compile_checks(rate_limits), ())
