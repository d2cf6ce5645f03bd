"""The batch plan: handler contract, retries and bisection, as a pure generator."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import HandlerContractError, Retry
from freight._core._plan import Call, Reply, Sleep, plan_batch


def execute(
    items: list[int], handler: Callable[[list[int]], Any], retry: Retry | None
) -> tuple[list[Any], int, list[float]]:
    """Run a plan synchronously; return outcomes, handler calls and sleeps."""
    plan = plan_batch(items, retry, lambda: 0.5)
    calls, sleeps = 0, []
    effect = next(plan)
    while True:
        try:
            if isinstance(effect, Call):
                calls += 1
                try:
                    reply = Reply(value=handler(effect.items))
                except Exception as exc:
                    reply = Reply(error=exc)
                effect = plan.send(reply)
            else:
                assert isinstance(effect, Sleep)
                sleeps.append(effect.seconds)
                effect = next(plan)
        except StopIteration as stop:
            return stop.value.outcomes, calls, sleeps


def poisoned(bad: set[int]) -> Callable[[list[int]], list[int]]:
    def handler(items: list[int]) -> list[int]:
        if bad.intersection(items):
            raise ValueError(f"poison in {sorted(bad.intersection(items))}")
        return [i * 10 for i in items]

    return handler


def test_one_poison_in_100_costs_at_most_2_log2_n_plus_1_calls() -> None:
    outcomes, calls, _ = execute(list(range(100)), poisoned({42}), Retry(attempts=1))
    assert [o for o in outcomes if isinstance(o, Exception)] == [outcomes[42]]
    assert sum(not isinstance(o, Exception) for o in outcomes) == 99
    assert calls - 1 <= 2 * math.ceil(math.log2(100)) + 1


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 120),
    bad=st.sets(st.integers(0, 119), max_size=5),
)
def test_bisection_isolates_exactly_the_poison_items(n: int, bad: set[int]) -> None:
    bad = {b for b in bad if b < n}
    outcomes, _, _ = execute(list(range(n)), poisoned(bad), Retry(attempts=1))
    for i, outcome in enumerate(outcomes):
        if i in bad:
            assert isinstance(outcome, ValueError)
        else:
            assert outcome == i * 10


def test_transient_whole_batch_failure_retries_with_backoff() -> None:
    failures = iter([ConnectionError("reset"), TimeoutError("slow")])

    def handler(items: list[int]) -> list[int]:
        error = next(failures, None)
        if error is not None:
            raise error
        return items

    retry = Retry(attempts=3, backoff=1, jitter=0)
    outcomes, calls, sleeps = execute([1, 2], handler, retry)
    assert (outcomes, calls, sleeps) == ([1, 2], 3, [1.0, 2.0])


def test_without_isolation_every_item_gets_the_batch_error() -> None:
    outcomes, calls, _ = execute([1, 2, 3], poisoned({2}), Retry(attempts=1, isolate=False))
    assert calls == 1
    assert all(isinstance(o, ValueError) for o in outcomes)


def test_contract_errors() -> None:
    outcomes, _, _ = execute([1, 2], lambda items: [1], None)
    assert all(isinstance(o, HandlerContractError) for o in outcomes)
    assert "returned 1 results for 2 items" in str(outcomes[0])
    outcomes, _, _ = execute([1, 2], lambda items: "ab", None)
    assert all(isinstance(o, HandlerContractError) for o in outcomes)
    outcomes, _, _ = execute([1, 2], lambda items: (5, 6), None)
    assert outcomes == [5, 6]
    outcomes, _, _ = execute([1, 2], lambda items: None, None)
    assert outcomes == [None, None]


def test_an_outage_is_not_bisected_item_by_item() -> None:
    def down(items: list[int]) -> list[int]:
        raise ConnectionError("refused")

    outcomes, calls, sleeps = execute(list(range(100)), down, Retry(attempts=3, jitter=0))
    assert calls == 3 + 2  # the retries, then one split whose halves both fail transiently
    assert len(sleeps) == 2
    assert all(isinstance(o, ConnectionError) for o in outcomes)


def test_a_transient_poison_item_is_still_isolated() -> None:
    def slow_on_13(items: list[int]) -> list[int]:
        if 13 in items:
            raise TimeoutError("13 is too big")
        return items

    outcomes, _, _ = execute(list(range(20)), slow_on_13, Retry(attempts=2, jitter=0))
    assert isinstance(outcomes[13], TimeoutError)
    assert [o for i, o in enumerate(outcomes) if i != 13] == [i for i in range(20) if i != 13]


def test_the_plan_reports_whole_batch_tries() -> None:
    plan = plan_batch([1], Retry(attempts=2, jitter=0), lambda: 0.0)
    assert isinstance(next(plan), Call)
    assert isinstance(plan.send(Reply(error=TimeoutError())), Sleep)
    assert isinstance(next(plan), Call)
    with pytest.raises(StopIteration) as stop:
        plan.send(Reply(value=[5]))
    assert (stop.value.value.outcomes, stop.value.value.tries) == ([5], 2)


def run_to_end(plan: Any, replies: list[Reply]) -> Any:
    """Feed ``replies`` to the plan's calls (sleeps resume it); return its outcome."""
    effect = next(plan)
    feed = iter(replies)
    while True:
        try:
            effect = plan.send(next(feed)) if isinstance(effect, Call) else next(plan)
        except StopIteration as stop:
            return stop.value


def test_an_item_failing_transiently_alone_comes_back_after_the_backoff() -> None:
    retry = Retry(attempts=3, backoff=2, jitter=0)
    error = TimeoutError("busy")
    outcome = run_to_end(plan_batch([1, 2, 3], retry, lambda: 0.0), [Reply(value=[10, error, 30])])
    assert outcome.outcomes == [10, error, 30]
    assert (outcome.again, outcome.again_after, outcome.attempts) == ([1], 2.0, [1, 1, 1])


def test_earlier_tries_count_toward_an_items_attempts() -> None:
    retry = Retry(attempts=3, backoff=1, jitter=0)
    error = TimeoutError("busy")
    plan = plan_batch([1, 2], retry, lambda: 0.0, tried=[2, 1])
    outcome = run_to_end(plan, [Reply(value=[error, error])])
    assert outcome.attempts == [3, 2]
    assert outcome.again == [1]  # item 1 used its three attempts; item 2 has one left
    assert outcome.again_after == 2.0  # the backoff after its second attempt


def test_permanent_and_exhausted_item_errors_are_final() -> None:
    retry = Retry(attempts=2, jitter=0)
    outcome = run_to_end(
        plan_batch([1, 2], retry, lambda: 0.0),
        [Reply(value=[ValueError("bad"), TimeoutError("slow")])],
    )
    assert outcome.again == [1]  # ValueError is permanent: final at once
    whole = run_to_end(
        plan_batch([1], retry, lambda: 0.0),
        [Reply(error=TimeoutError("a")), Reply(error=TimeoutError("b"))],
    )
    assert (whole.again, whole.tries, whole.attempts) == ([], 2, [2])
    fresh = run_to_end(plan_batch([1], None, lambda: 0.0, tried=[1]), [Reply(value=[5])])
    assert (fresh.outcomes, fresh.attempts) == ([5], [2])


def test_a_batch_that_succeeds_sends_nothing_back() -> None:
    outcome = run_to_end(plan_batch([1, 2], Retry(attempts=3), lambda: 0.0), [Reply(value=None)])
    assert (outcome.outcomes, outcome.again, outcome.attempts) == ([None, None], [], [1, 1])


def test_an_item_sent_back_never_gets_more_than_its_attempts_from_an_outage() -> None:
    retry = Retry(attempts=3, jitter=0)
    outage = [Reply(error=ConnectionError("down"))] * 5
    outcome = run_to_end(plan_batch([1, 2], retry, lambda: 0.0, tried=[2, 0]), outage)
    assert outcome.tries == 1  # item 1 had 2 of its 3 attempts: no whole-batch retry
    assert outcome.attempts == [3, 1]
    assert outcome.again == [1]  # item 2 still has two attempts: it comes back alone


def test_a_batch_that_all_succeeded_sends_nothing_back_with_a_retry_policy() -> None:
    """The all-``None`` shortcut of the final decision: no item comes back, attempts kept."""
    plan = plan_batch([1, 2, 3], Retry(attempts=3), lambda: 0.5, [1, 0, 2])
    assert isinstance(next(plan), Call)
    try:
        plan.send(Reply(value=None))
    except StopIteration as stop:
        outcome = stop.value
    else:  # pragma: no cover - the plan must end after one successful call
        raise AssertionError("the plan asked for more")
    assert outcome.outcomes == [None, None, None]
    assert outcome.again == []
    assert outcome.attempts == [2, 1, 3]
