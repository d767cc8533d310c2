"""The access log: one structured line per request that ended, on the ``mcpfast.access``
logger (identity, method, tool or URI, upstream, outcome, duration), optionally sampled.
Off by default (``logging.access_log``); on, it costs a log record per sampled request
and nothing for the others but a random draw."""

from __future__ import annotations

import logging
import random
from time import monotonic

from .call import OUTCOMES, Request, Upstream

log = logging.getLogger("mcpfast.access")


class AccessLog:
    __slots__ = ("sample",)

    def __init__(self, sample: float) -> None:
        self.sample = sample

    def record(self, upstream: Upstream, request: Request, outcome: int) -> None:
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        duration = monotonic() - request.started if request.started else 0.0
        identity = request.session.identity.key
        target = request.name or request.uri or "-"
        log.info("%s %s %s upstream=%s outcome=%s duration_ms=%.3f", identity,
                 request.method, target, upstream.name, OUTCOMES[outcome], duration * 1000,
                 extra={"event": "request", "identity": identity, "method": request.method,
                        "target": target, "upstream": upstream.name,
                        "outcome": OUTCOMES[outcome], "duration_seconds": round(duration, 6)})
