# cython: language_level=3
"""Token bucket rate limiting: ``rate`` tokens a second into a bucket of ``burst`` tokens.

Compiled twin of ``token_bucket_py.py``; both must behave identically, to the last bit
of every float (``tests/test_token_bucket.py`` cross-checks them on random input). The
twin's docstrings describe the contract. Here the state is four C doubles and ``take``
runs without touching a Python object once its arguments are unboxed; every expression
keeps the twin's order of operations so the two round alike.
"""

from libc.math cimport INFINITY, nextafter

cdef int _MAX_NUDGES = 64


cdef class TokenBucket:
    """Refilled lazily from the clock on each ``take``; starts full.

    A clock that goes backwards refills nothing until it passes the latest value seen.
    """

    cdef readonly double rate
    cdef readonly double burst
    cdef double _tokens
    # The latest clock value seen; never decreases.
    cdef double _last

    def __init__(self, double rate, double burst, double now):
        if not 0.0 < rate < INFINITY:
            raise ValueError(f"rate must be a positive finite number, not {rate!r}")
        if not 1.0 <= burst < INFINITY:
            raise ValueError(f"burst must be a finite number of at least 1, not {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    @property
    def tokens(self):
        """Tokens in the bucket as of the last refill (the latest ``take``)."""
        return self._tokens

    def take(self, double now, double cost=1.0):
        """Refill up to ``now``, then take ``cost`` tokens if the bucket holds them."""
        cdef double tokens
        if not cost >= 0.0:
            raise ValueError(f"cost must not be negative, not {cost!r}")
        if now > self._last:
            tokens = self._tokens + (now - self._last) * self.rate
            self._tokens = tokens if tokens < self.burst else self.burst
            self._last = now
        if cost <= self._tokens:
            self._tokens -= cost
            return True
        return False

    def retry_after(self, double now, double cost=1.0):
        """Seconds from ``now`` until ``take(now + result, cost)`` will succeed."""
        cdef double start, available, at, wait
        cdef int i
        if not cost >= 0.0:
            raise ValueError(f"cost must not be negative, not {cost!r}")
        if cost > self.burst:
            return INFINITY
        start = now if now > self._last else self._last
        available = self._available(start)
        if available >= cost:
            return 0.0
        at = start + (cost - available) / self.rate
        wait = at - now
        for i in range(_MAX_NUDGES):
            if self._available(now + wait) >= cost:
                break
            at = nextafter(at, INFINITY)
            wait = at - now
        return wait

    cdef inline double _available(self, double at) noexcept:
        cdef double tokens
        if at > self._last:
            tokens = self._tokens + (at - self._last) * self.rate
            return tokens if tokens < self.burst else self.burst
        return self._tokens
