"""The token bucket, compiled and pure-Python.

Every test taking the ``tb`` fixture runs once per implementation. The "c" run fails
when the extension was not built, so a missing build cannot pass as green; set
MCPFAST_NO_EXTENSIONS=1 to test the pure twin alone. The clock is passed in, so every
expected value here is exact: the float arithmetic is chosen to have no rounding.
"""

from __future__ import annotations

import math
import random
from types import ModuleType

import pytest

import mcpfast_ext
import mcpfast_ext.token_bucket_py

from ..conftest import compiled, twin


@pytest.fixture(params=["py", "c"])
def tb(request: pytest.FixtureRequest) -> ModuleType:
    return twin(request, "token_bucket")


def test_starts_full(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(2, 5, 100.0)
    assert (bucket.rate, bucket.burst, bucket.tokens) == (2.0, 5.0, 5.0)
    assert all(bucket.take(100.0) for _ in range(5))
    assert bucket.take(100.0) is False
    assert bucket.tokens == 0.0


def test_refills_at_rate(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=4.0, burst=2.0, now=0.0)
    assert bucket.take(0.0, 2.0)
    assert bucket.take(0.125) is False  # half a token
    assert bucket.tokens == 0.5
    assert bucket.take(0.25)
    assert bucket.tokens == 0.0
    assert bucket.take(0.75, 2.0)


def test_refill_is_capped_at_burst(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert bucket.take(0.0, 3.0)
    assert bucket.take(3600.0, 0.0)
    assert bucket.tokens == 3.0
    assert bucket.take(3600.0, 3.0)
    assert bucket.take(3600.0) is False


def test_backwards_clock_refills_nothing(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=1.0, burst=2.0, now=10.0)
    assert bucket.take(10.0, 2.0)
    assert bucket.take(4.0) is False
    assert bucket.tokens == 0.0
    # The interval from 4 to 10 was already lived once: it is not credited again.
    assert bucket.take(10.0) is False
    assert bucket.take(10.5) is False
    assert bucket.tokens == 0.5
    assert bucket.take(11.0)


def test_backwards_clock_still_spends_what_is_there(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=1.0, burst=2.0, now=10.0)
    assert bucket.take(9.0)
    assert bucket.retry_after(9.0) == 0.0
    assert bucket.take(9.0)
    # Empty at a clock one second behind: one second to get back to 10, one to refill.
    assert bucket.retry_after(9.0) == 2.0


def test_fractional_cost(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=1.0, burst=1.0, now=0.0)
    assert all(bucket.take(0.0, 0.25) for _ in range(4))
    assert bucket.take(0.0, 0.25) is False
    assert bucket.take(0.0, 0.0)  # free calls always pass
    assert bucket.take(0.5, 0.5)


def test_cost_above_burst_never_succeeds(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=100.0, burst=5.0, now=0.0)
    assert bucket.take(1e9, 5.5) is False
    assert bucket.tokens == 5.0  # a refused take spends nothing
    assert bucket.retry_after(1e9, 5.5) == math.inf
    assert bucket.take(1e9, 5.0)


def test_retry_after(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=2.0, burst=4.0, now=0.0)
    assert bucket.retry_after(0.0) == 0.0
    assert bucket.retry_after(0.0, 4.0) == 0.0
    assert bucket.take(0.0, 4.0)
    assert bucket.retry_after(0.0) == 0.5
    assert bucket.retry_after(0.0, 3.0) == 1.5
    assert bucket.retry_after(0.25) == 0.25
    assert bucket.retry_after(10.0) == 0.0
    assert bucket.retry_after(0.0, 4.0) == 2.0
    assert bucket.tokens == 0.0  # asking does not refill
    assert bucket.take(0.5)


def test_retry_after_is_exact(tb: ModuleType) -> None:
    """A client told to retry after w is served at now + w, and not noticeably sooner."""
    rng = random.Random(20240611)
    for _ in range(2000):
        rate = rng.choice([0.1, 1.0, 3.0, 7.3, 1000.0, rng.uniform(0.01, 500.0)])
        burst = rng.choice([1.0, 2.0, 10.0, rng.uniform(1.0, 100.0)])
        origin = rng.choice([0.0, 1e6 + rng.random(), rng.uniform(0.0, 1e4)])
        history = [(origin + rng.uniform(-1.0, 5.0), rng.uniform(0.0, burst)) for _ in range(4)]
        now = origin + rng.uniform(0.0, 6.0)
        cost = rng.uniform(0.0, burst)
        served, early = tb.TokenBucket(rate, burst, origin), tb.TokenBucket(rate, burst, origin)
        for at, spend in history:
            served.take(at, spend)
            early.take(at, spend)
        wait = served.retry_after(now, cost)
        assert 0.0 <= wait < math.inf
        assert served.take(now + wait, cost), (rate, burst, origin, history, now, cost)
        if wait > 1e-3:
            assert not early.take(now + wait - 1e-3 * min(wait, 1.0), cost)


def test_refuses_bad_configuration(tb: ModuleType) -> None:
    for rate, burst in [(0, 1), (-1, 1), (1, 0.5), (1, 0), (math.nan, 1), (1, math.nan),
                        (math.inf, 1), (1, math.inf)]:
        with pytest.raises(ValueError):
            tb.TokenBucket(rate, burst, 0.0)
    tb.TokenBucket(0.001, 1, 0.0)


def test_refuses_negative_cost(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=1.0, burst=2.0, now=0.0)
    bucket.take(0.0, 2.0)
    for cost in (-1.0, math.nan):
        with pytest.raises(ValueError):
            bucket.take(5.0, cost)
        with pytest.raises(ValueError):
            bucket.retry_after(5.0, cost)
    assert bucket.tokens == 0.0  # a refused call does not even refill


def test_configuration_is_read_only(tb: ModuleType) -> None:
    bucket = tb.TokenBucket(rate=1.0, burst=2.0, now=0.0)
    for name in ("rate", "burst", "tokens"):
        with pytest.raises(AttributeError):
            setattr(bucket, name, 9.0)


def _random_operations(rng: random.Random, burst: float, count: int,
                       origin: float) -> list[tuple[float, float]]:
    now = origin
    operations = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1:
            now -= rng.uniform(0.0, 2.0)  # a clock stepping back
        elif roll < 0.3:
            pass  # a burst of calls at one instant
        else:
            now += rng.expovariate(5.0)
        cost = rng.choice([1.0, 1.0, 0.5, 0.0, 2.5, burst, burst + 1.0, rng.uniform(0.0, burst)])
        operations.append((now, cost))
    return operations


def test_twins_agree_on_random_operations() -> None:
    if mcpfast_ext.NO_EXTENSIONS:
        pytest.skip("MCPFAST_NO_EXTENSIONS is set")
    c_module = compiled("token_bucket")
    rng = random.Random(6455)
    for rate, burst, origin in [(1.0, 1.0, 0.0), (3.0, 10.0, 0.0), (7.3, 4.5, 1e6 + 0.123),
                                (0.05, 2.0, 123.456), (2500.0, 100.0, 86400.0 * 30)]:
        pure_bucket = mcpfast_ext.token_bucket_py.TokenBucket(rate, burst, origin)
        c_bucket = c_module.TokenBucket(rate, burst, origin)
        for step, (now, cost) in enumerate(_random_operations(rng, burst, 3000, origin)):
            context = (rate, burst, origin, step, now, cost)
            assert pure_bucket.retry_after(now, cost) == c_bucket.retry_after(now, cost), context
            assert pure_bucket.take(now, cost) is c_bucket.take(now, cost), context
            # Bit for bit: the twins evaluate the same IEEE expressions in the same order.
            assert pure_bucket.tokens == c_bucket.tokens, context


def test_selector_picks_the_token_bucket_with_the_rest() -> None:
    codec_is_pure = mcpfast_ext.websocket_codec.__name__.endswith("_py")
    assert mcpfast_ext.token_bucket.__name__.endswith("_py") is codec_is_pure
    compiled = mcpfast_ext.compiled_modules()
    if compiled is not None:
        assert set(compiled) == {"http_reader", "message_scan", "routing_table",
                                 "token_bucket", "websocket_codec"}
