"""SizeTuner: the pure tuning logic behind BatchSpec(size="auto"), fed plain values."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight._core._adaptive import (
    FIRST_WAIT,
    SAFETY_MAX,
    SAFETY_MIN,
    Observation,
    SizeTuner,
    _largest,
    _smallest,
)

FIXED, PER_ITEM = 0.002, 0.000_02  # the simulated handler: 2 ms + 20 µs per item


def handler_time(n: int) -> float:
    return FIXED + PER_ITEM * n


def feed(tuner: SizeTuner, size: int, *, at: float, accepted: int, waited: float = 0.0) -> bool:
    duration = handler_time(size)
    return tuner.observe(Observation(size, waited + duration, duration, accepted, at))


def test_before_any_batch_it_batches_up_to_its_cap_for_a_tenth_of_the_target() -> None:
    tuner = SizeTuner(0.05, max_size=512)
    assert tuner.size == 512
    assert tuner.wait == pytest.approx(FIRST_WAIT * 0.05)
    assert tuner.model() is None
    assert tuner.cost() is None
    assert tuner.rate() is None
    assert SizeTuner(0.05, max_size=512, max_wait=0.001).wait == 0.001
    assert "size=512" in repr(tuner)


def test_the_model_separates_fixed_and_per_item_once_sizes_differ() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    feed(tuner, 100, at=0.01, accepted=200)
    assert tuner.model() is None  # one size: fixed and per-item cannot be told apart
    feed(tuner, 300, at=0.03, accepted=600)
    fixed, per_item = tuner.model() or (math.nan, math.nan)
    assert fixed == pytest.approx(FIXED)
    assert per_item == pytest.approx(PER_ITEM)
    cost = tuner.cost()
    assert cost is not None
    assert cost(500) == pytest.approx(handler_time(500))


def test_until_sizes_differ_the_model_is_the_pessimistic_bound() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    tuner.observe(Observation(100, 0.006, 0.004, 100, 0.01))
    tuner.observe(Observation(100, 0.006, 0.004, 200, 0.02))
    cost = tuner.cost()
    assert cost is not None
    # Whatever the split, a batch of 50 costs at most 4 ms and one of 200 at most 8 ms
    assert cost(50) == pytest.approx(0.004)
    assert cost(200) == pytest.approx(0.008)


def test_the_size_is_the_largest_that_fills_and_runs_twice_within_the_budget() -> None:
    # Given 30,000 items/s and a handler of 2 ms + 20 µs per item, target 50 ms
    tuner = SizeTuner(0.05, max_size=1024)
    feed(tuner, 150, at=0.010, accepted=300)
    feed(tuner, 400, at=0.030, accepted=900)
    assert tuner.rate() == pytest.approx(30_000)
    # Then s/rate + 2 T(s) <= 0.8 * 50 ms: s ~ 491, and the wait is the rest of the budget
    budget = SAFETY_MAX * 0.05
    assert tuner.size in (490, 491)
    assert tuner.size / 30_000 + 2 * handler_time(tuner.size) <= budget
    assert (tuner.size + 2) / 30_000 + 2 * handler_time(tuner.size + 2) > budget
    assert tuner.wait == pytest.approx(budget - 2 * handler_time(tuner.size))


def test_a_slow_trickle_gets_small_batches_and_a_bounded_wait() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    feed(tuner, 3, at=0.010, accepted=4)
    feed(tuner, 20, at=0.050, accepted=24)  # 500 items/s
    assert tuner.rate() == pytest.approx(500)
    assert tuner.size == 17
    assert 0 < tuner.wait < 0.04


def test_stability_wins_over_the_latency_budget() -> None:
    # Given 40,000 items/s on a 2 ms + 20 µs handler: only batches of 800 or more keep up
    tuner = SizeTuner(0.05, max_size=4096)
    feed(tuner, 300, at=0.010, accepted=400)
    feed(tuner, 600, at=0.020, accepted=800)
    # The latency budget alone would pick ~553; a queue without bound is worse
    assert tuner.size == pytest.approx(800, abs=1)
    assert 40_000 * handler_time(tuner.size) <= 0.9 * tuner.size
    assert 40_000 * handler_time(tuner.size - 2) > 0.9 * (tuner.size - 2)
    # The wait lets that batch fill: twice its fill time
    assert tuner.wait == pytest.approx(2 * tuner.size / 40_000)


def test_an_overload_no_size_keeps_up_with_waits_no_longer_than_the_target() -> None:
    # Given 50,000 items/s: 20 µs per item alone is the whole second
    tuner = SizeTuner(0.05, max_size=4096)
    feed(tuner, 300, at=0.010, accepted=500)
    feed(tuner, 600, at=0.020, accepted=1000)
    assert tuner.size == 4096  # the largest batches drain it fastest
    assert tuner.wait == 0.05  # but no caller is held longer than the target for company


def test_concurrent_batches_share_the_load() -> None:
    one = SizeTuner(0.05, max_size=4096)
    two = SizeTuner(0.05, max_size=4096, concurrency=2)
    for tuner in (one, two):
        feed(tuner, 300, at=0.010, accepted=400)
        feed(tuner, 600, at=0.020, accepted=800)
    assert two.size < one.size


def test_a_late_batch_shrinks_the_safety_factor_and_timely_ones_grow_it_back() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    feed(tuner, 100, at=0.01, accepted=100)
    feed(tuner, 300, at=0.02, accepted=400)
    planned = tuner.size
    tuner.observe(Observation(300, 0.08, handler_time(300), 700, 0.03))  # 80 ms > 50 ms
    assert tuner.safety == pytest.approx(SAFETY_MAX * 0.7)
    assert tuner.size < planned
    for _ in range(30):
        tuner.observe(Observation(300, 0.08, handler_time(300), 700, 0.03))
    assert tuner.safety == SAFETY_MIN
    for i in range(40):
        feed(tuner, 300, at=0.04 + i * 0.01, accepted=1000 + 300 * i)
    assert tuner.safety == SAFETY_MAX


def test_the_wait_never_exceeds_the_spec_timeout() -> None:
    tuner = SizeTuner(0.05, max_size=1024, max_wait=0.002)
    feed(tuner, 3, at=0.010, accepted=4)
    feed(tuner, 20, at=0.050, accepted=24)
    assert tuner.wait == 0.002


def test_the_rate_follows_the_batches_of_the_last_target_window() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    feed(tuner, 10, at=0.0, accepted=10)
    feed(tuner, 10, at=0.5, accepted=20)  # 20 per second over the first half second
    for i in range(1, 6):
        feed(tuner, 10, at=0.5 + i * 0.01, accepted=20 + 100 * i)  # 10,000 per second
    assert tuner.rate() == pytest.approx(10_000)


def test_when_nothing_arrived_the_size_is_kept() -> None:
    tuner = SizeTuner(0.05, max_size=64)
    feed(tuner, 10, at=0.0, accepted=10)
    size = tuner.size
    assert size == 20  # twice the sizes seen, until the fit holds (rule 1)
    feed(tuner, 10, at=0.2, accepted=10)
    assert tuner.rate() == 0
    assert tuner.size == size
    cost = tuner.cost()
    assert cost is not None
    assert tuner.wait == pytest.approx(SAFETY_MAX * 0.05 - 2 * cost(size))


def test_the_first_batch_alone_gives_the_rate_and_all_at_once_is_infinite() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    assert feed(tuner, 50, at=0.01, accepted=50, waited=0.005)  # 10,000 per second
    assert tuner.size < 1024
    burst = SizeTuner(0.05, max_size=1024)
    feed(burst, 1024, at=0.01, accepted=1024, waited=0.0)  # every item at once
    feed(burst, 1024, at=0.01, accepted=2048)  # and again, at the same instant
    assert burst.rate() == math.inf
    assert burst.size == 1024  # no batch keeps up with a burst but the largest
    assert burst.wait == 0


def test_batches_that_say_nothing_of_the_handler_teach_only_the_rate() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    assert not tuner.observe(Observation(10, 0.5, None, 10, 0.5))  # retried: no cost known
    assert tuner.cost() is None
    assert tuner.safety < SAFETY_MAX  # it was late all the same


def test_a_negative_fit_falls_back_to_a_single_term() -> None:
    faster_when_bigger = SizeTuner(0.05, max_size=1024)
    faster_when_bigger.observe(Observation(10, 0.01, 0.008, 10, 0.01))
    faster_when_bigger.observe(Observation(100, 0.01, 0.004, 110, 0.02))
    fixed, per_item = faster_when_bigger.model() or (math.nan, math.nan)
    assert per_item == 0
    assert fixed > 0
    super_linear = SizeTuner(0.05, max_size=1024)
    super_linear.observe(Observation(10, 0.01, 0.000_1, 10, 0.01))
    super_linear.observe(Observation(100, 0.01, 0.01, 110, 0.02))
    fixed, per_item = super_linear.model() or (math.nan, math.nan)
    assert fixed == 0
    assert per_item > 0


def test_noisy_handler_times_widen_the_margin_up_to_twice() -> None:
    tuner = SizeTuner(0.05, max_size=1024)
    for i, (n, d) in enumerate([(100, 0.004), (300, 0.008), (200, 0.018)]):
        tuner.observe(Observation(n, d, d, 100 * (i + 1), 0.01 * (i + 1)))
    cost, model = tuner.cost(), tuner.model()
    assert cost is not None
    assert model is not None
    bare = model[0] + model[1] * 200
    assert cost(200) == pytest.approx(min(2.0, 0.018 / bare) * bare)
    zero = SizeTuner(0.05, max_size=8)
    zero.observe(Observation(4, 0.0, 0.0, 4, 0.01))  # an instant handler
    assert zero.cost() is not None


def test_binary_searches_find_the_edges_or_fall_back() -> None:
    assert _largest(100, lambda s: s <= 37) == 37
    assert _largest(100, lambda s: False) == 1
    assert _smallest(100, lambda s: s >= 63) == 63
    assert _smallest(100, lambda s: False) == 100


def simulate(rate: float, target: float, seconds: float, seed: int) -> list[float]:
    """Latencies of Poisson arrivals through one handler, batches sized by the tuner.

    A plain loop of the semantics the drivers carry out: a batch opens with its
    first item and leaves when it holds ``tuner.size`` items or at its wait; the
    handler runs one batch at a time.
    """
    rng = random.Random(seed)
    tuner = SizeTuner(target, max_size=1024)
    latencies: list[float] = []
    free_at = 0.0
    accepted = 0
    t = 0.0
    arrivals: list[float] = []
    while t < seconds:
        t += rng.expovariate(rate)
        arrivals.append(t)
    i = 0
    while i < len(arrivals):
        opened = arrivals[i]
        deadline = opened + tuner.wait
        batch = [opened]
        i += 1
        while i < len(arrivals) and len(batch) < tuner.size and arrivals[i] <= deadline:
            batch.append(arrivals[i])
            i += 1
        flushed = batch[-1] if len(batch) == tuner.size else deadline
        start = max(flushed, free_at)
        free_at = start + handler_time(len(batch))
        accepted += len(batch)
        latencies += [free_at - a for a in batch]
        tuner.observe(
            Observation(len(batch), free_at - opened, handler_time(len(batch)), accepted, free_at)
        )
    return sorted(latencies)


@settings(max_examples=12, deadline=None)
@given(rate=st.sampled_from([200, 2_000, 20_000, 35_000]), seed=st.integers(0, 2**16))
def test_simulated_callers_p99_stays_within_the_target(rate: int, seed: int) -> None:
    latencies = simulate(rate, 0.05, 0.5, seed)
    p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]
    assert p99 <= 0.05
