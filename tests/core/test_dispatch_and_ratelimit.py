"""DispatchQueue (concurrency, order per key) and token-bucket rate limiting."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import ConfigError, Flush, RateLimiter
from freight._core._dispatch import DispatchQueue
from freight._core._ratelimit import TokenBucket
from freight.testing import FakeClock


def flush(key: int, n: int) -> Flush[int]:
    return Flush(key, [n], "size", 0.0)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 4),
    ordered=st.booleans(),
    keys=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    finish_order=st.randoms(use_true_random=False),
)
def test_limits_hold_and_every_batch_runs_once(
    limit: int, ordered: bool, keys: list[int], finish_order: object
) -> None:
    import random

    rng = finish_order if isinstance(finish_order, random.Random) else random.Random(0)
    queue: DispatchQueue[int] = DispatchQueue(limit, ordered=ordered)
    running: list[Flush[int]] = []
    started: list[Flush[int]] = []
    for n, key in enumerate(keys):
        for ready in queue.push(flush(key, n)):
            running.append(ready)
            started.append(ready)
        assert len(running) <= limit
        if ordered:
            assert len({f.key for f in running}) == len(running)
        if running and rng.random() < 0.5:
            done = running.pop(rng.randrange(len(running)))
            for ready in queue.done(done):
                running.append(ready)
                started.append(ready)
    while running:
        done = running.pop(rng.randrange(len(running)))
        for ready in queue.done(done):
            running.append(ready)
            started.append(ready)
        assert len(running) <= limit
    assert sorted(f.items[0] for f in started) == list(range(len(keys)))
    if ordered:
        for key in set(keys):
            seq = [f.items[0] for f in started if f.key == key]
            assert seq == sorted(seq)


def test_token_bucket_reserves_fairly() -> None:
    bucket = TokenBucket(rate=2, burst=2)
    assert bucket.reserve(1, now=0) == 0
    assert bucket.reserve(1, now=0) == 0
    assert bucket.reserve(1, now=0) == 0.5
    assert bucket.reserve(1, now=0) == 1.0
    assert not bucket.try_take(1, now=0.9)
    assert bucket.available(now=10) == 2


async def test_rate_limiter_async_on_fake_clock() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, per=1, burst=1, clock=clock)
    done: list[float] = []

    async def user() -> None:
        await limiter.acquire()
        done.append(clock.now())

    tasks = [asyncio.ensure_future(user()) for _ in range(3)]
    await clock.advance(1)
    await asyncio.gather(*tasks)
    assert done == [0, 0.5, 1.0]


def test_rate_limiter_sync_and_try() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, per=1, burst=2, clock=clock)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance_sync(0.1)
    limiter.acquire_sync()  # one token refilled: no wait
    assert repr(limiter) == "RateLimiter(10, per=1, burst=2, unit='batches')"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rate": 0}, "RateLimiter.rate"),
        ({"rate": 1, "per": 0}, "RateLimiter.per"),
        ({"rate": 1, "burst": 0.5}, "RateLimiter.burst"),
        ({"rate": 1, "unit": "bytes"}, "RateLimiter.unit"),
    ],
)
def test_bad_rate_limiter_names_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_dispatch_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_concurrent_batches"):
        DispatchQueue(0)


def test_period_is_another_name_for_per() -> None:
    assert RateLimiter(5, period=60).per == 60
