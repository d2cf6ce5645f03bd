"""A transient error may say how long to wait (``TransientError(retry_after=...)``, an HTTP
429's ``Retry-After``): the policy waits at least that long, even past its own backoff."""

from __future__ import annotations

from typing import Any

from freight import PermanentError, Retry, TransientError
from freight._core._plan import Call, Outcome, Reply, Sleep, plan_batch

RETRY = Retry(attempts=3, backoff=1.0, max_backoff=2.0, jitter=0)


def test_wait_is_the_backoff_when_no_error_asks_for_more() -> None:
    assert RETRY.wait(1, 0.0, []) == 1.0
    assert RETRY.wait(2, 0.0, [TransientError("busy"), ValueError("x")]) == 2.0
    assert RETRY.wait(1, 0.0, [TransientError("soon", retry_after=0.5)]) == 1.0


def test_wait_is_the_longest_retry_after_asked_even_past_max_backoff() -> None:
    errors = [TransientError("a", retry_after=30), TransientError("b", retry_after=45.5)]
    assert RETRY.wait(1, 0.0, errors) == 45.5
    assert RETRY.wait(1, 0.0, [PermanentError("no retry_after here")]) == 1.0


def test_retry_after_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(TransientError("429", retry_after=7)))
    assert (str(error), error.retry_after) == ("429", 7)


def run(plan: Any, replies: list[Reply]) -> tuple[list[Any], Outcome]:
    effects: list[Any] = []
    effect = next(plan)
    try:
        while True:
            effects.append(effect)
            effect = plan.send(replies.pop(0)) if isinstance(effect, Call) else next(plan)
    except StopIteration as stop:
        return effects, stop.value


def test_a_whole_batch_failure_asking_for_60s_sleeps_60s_before_the_next_try() -> None:
    plan = plan_batch([1, 2], RETRY, lambda: 0.0)
    replies = [Reply(error=TransientError("429", retry_after=60)), Reply(value=[10, 20])]
    effects, outcome = run(plan, replies)
    assert [e.seconds for e in effects if isinstance(e, Sleep)] == [60]
    assert outcome.outcomes == [10, 20]


def test_items_failing_alone_come_back_after_the_longest_wait_they_ask_for() -> None:
    plan = plan_batch([1, 2, 3], RETRY, lambda: 0.0)
    replies = [Reply(value=[TransientError("a", retry_after=9), 2, TransientError("b")])]
    _, outcome = run(plan, replies)
    assert outcome.again == [0, 2]
    assert outcome.again_after == 9
