"""Rate limiting: token buckets per identity, per upstream, per tool, or global.

Each ``[[rate_limits]]`` table of the config becomes one ``RateLimit``, built once at
config load; the gateway holds them as a tuple and skips the whole check when it is
empty, so an unlimited gateway pays one truth test per request. A limit that applies
to a request takes one token from its bucket (the compiled ``mcpfast_ext.token_bucket``
or its twin), and a request any bucket refuses never reaches the upstream: it is
answered -32029 with ``data.retryAfterSeconds``, the code and shape peers use for
"rate limited" (JSON-RPC leaves -32000 to -32099 to the server; MCP assigns none).

A bucket that has refilled to its burst is the same as a new one, so buckets of
identities gone quiet are dropped (``evict_full``): memory follows the identities active
in the last few seconds, however many come and go.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from mcpfast_ext import token_bucket

from ..config import RateLimitConfig
from ..protocol.jsonrpc import RATE_LIMITED

__all__ = ["RATE_LIMITED", "RateLimit", "build"]
MAX_BUCKETS = 100_000
"""Buckets one limit keeps at most; past it, new identities share one overflow bucket,
so that a flood of new addresses cannot grow memory (and is limited together)."""
OVERFLOW_KEY = "(overflow)"
MAX_MATCHES = 10_000
"""Tool names whose match against a limit's pattern is remembered (they are names that
routed, so the catalog bounds them; past this, the memory starts again)."""


class RateLimit:
    __slots__ = ("_buckets", "_matches", "_tool", "burst", "config", "name", "per", "rate",
                 "refused", "upstream")

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self.name = config.name
        self.per = config.per
        self.upstream = config.upstream
        self.rate = config.rate
        self.burst = config.burst if config.burst is not None else max(1.0, config.rate)
        self._tool = re.compile(fnmatch.translate(config.tool)) if config.tool else None
        self._buckets: dict[str, Any] = {}
        self._matches: dict[str, bool] = {}
        self.refused = 0

    @property
    def filters_tools(self) -> bool:
        return self._tool is not None

    def applies(self, upstream: str, method: str, name: str | None) -> bool:
        if self.upstream is not None and self.upstream != upstream:
            return False
        if self._tool is not None:
            if method != "tools/call" or name is None:
                return False
            matches = self._matches.get(name)
            if matches is None:
                if len(self._matches) >= MAX_MATCHES:
                    self._matches.clear()
                matches = self._matches[name] = self._tool.match(name) is not None
            return matches
        return True

    def retry_after(self, identity: str, now: float) -> float:
        """Take a token for ``identity``: 0.0 when it was taken, else the seconds until
        one will be there."""
        key = identity if self.per == "identity" else ""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                key = OVERFLOW_KEY
                bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = token_bucket.TokenBucket(self.rate, self.burst,
                                                                       now)
        if bucket.take(now):
            return 0.0
        self.refused += 1
        return float(bucket.retry_after(now))

    def evict_full(self, now: float) -> int:
        """Drop the buckets that have refilled to their burst; returns how many."""
        full = [key for key, bucket in self._buckets.items()
                if bucket.retry_after(now, self.burst) == 0.0]
        for key in full:
            del self._buckets[key]
        return len(full)

    def __len__(self) -> int:
        return len(self._buckets)


def build(configs: list[RateLimitConfig]) -> tuple[RateLimit, ...]:
    return tuple(RateLimit(config) for config in configs)
