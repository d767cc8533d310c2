"""Token bucket rate limiting: ``rate`` tokens a second into a bucket of ``burst`` tokens.

Pure-Python twin of ``token_bucket.pyx``; both must behave identically, to the last bit
of every float (``tests/test_token_bucket.py`` cross-checks them on random input), so
both evaluate the same IEEE double expressions in the same order. Sans-I/O: the caller
passes the clock in, so one clock read can serve every bucket a request goes through.
"""

from __future__ import annotations

import math

# Where retry_after's first estimate rounds short, stepping one ulp at a time reaches a
# wait that works within a few steps; the cap only guards against an endless loop.
_MAX_NUDGES = 64


class TokenBucket:
    """Refilled lazily from the clock on each ``take``; starts full.

    The bucket keeps the latest clock value it has seen. A clock that goes backwards
    refills nothing, and the refill resumes only once the clock passes that value
    again, so the same interval is never credited twice.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        # Written as negated comparisons so that NaN is refused too; infinities are
        # refused because the refill arithmetic turns them into NaN (0 * inf).
        if not 0.0 < rate < math.inf:
            raise ValueError(f"rate must be a positive finite number, not {rate!r}")
        if not 1.0 <= burst < math.inf:
            raise ValueError(f"burst must be a finite number of at least 1, not {burst!r}")
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = self._burst
        self._last = float(now)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def tokens(self) -> float:
        """Tokens in the bucket as of the last refill (the latest ``take``)."""
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Refill up to ``now``, then take ``cost`` tokens if the bucket holds them."""
        if not cost >= 0.0:
            raise ValueError(f"cost must not be negative, not {cost!r}")
        if now > self._last:
            tokens = self._tokens + (now - self._last) * self._rate
            # Not min(): the builtin call costs about ten times the comparison.
            self._tokens = tokens if tokens < self._burst else self._burst
            self._last = now
        if cost <= self._tokens:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds from ``now`` until ``take(now + result, cost)`` will succeed.

        0.0 when it would succeed now, ``inf`` when ``cost`` exceeds the burst. Exact:
        a client told to come back after this long is not refused again for want of a
        rounding error, provided no other ``take`` ran on the bucket in between.
        """
        if not cost >= 0.0:
            raise ValueError(f"cost must not be negative, not {cost!r}")
        if cost > self._burst:
            return math.inf
        start = now if now > self._last else self._last
        available = self._available(start)
        if available >= cost:
            return 0.0
        # Checked the way the caller will use it, at now + wait, since neither the
        # division nor the subtraction is exact.
        at = start + (cost - available) / self._rate
        wait = at - now
        for _ in range(_MAX_NUDGES):
            if self._available(now + wait) >= cost:
                break
            at = math.nextafter(at, math.inf)
            wait = at - now
        return wait

    def _available(self, at: float) -> float:
        # The refill of take(), without storing it: the two must stay the same
        # expression or retry_after stops being exact.
        if at > self._last:
            tokens = self._tokens + (at - self._last) * self._rate
            return tokens if tokens < self._burst else self._burst
        return self._tokens
