"""settle_sync / settle_async: the runners for shapes without a buffer try again, together,
what the plan sends back, until every item has a final outcome."""

from __future__ import annotations

import random

from freight import Retry, TransientError
from freight._core._plan import Reply
from freight._drivers._runner import settle_async, settle_sync


def _flaky(failures: dict[int, int]) -> tuple[list[list[int]], object]:
    """A handler failing item ``i`` transiently its first ``failures[i]`` times."""
    calls: list[list[int]] = []

    def handle(items: list[int]) -> list[object]:
        calls.append(list(items))
        out: list[object] = []
        for i in items:
            if failures.get(i, 0) > 0:
                failures[i] -= 1
                out.append(TransientError(f"busy {i}"))
            else:
                out.append(i * 10)
        return out

    return calls, handle


def test_settle_sync_retries_only_what_came_back() -> None:
    calls, handle = _flaky({1: 2, 3: 5})
    slept: list[float] = []
    outcomes, attempts = settle_sync(
        [0, 1, 2, 3],
        lambda items: Reply(value=handle(items)),  # type: ignore[operator]
        Retry(attempts=3, backoff=1.0, jitter=0.0),
        random=random.random,
        sleep=slept.append,
    )
    assert outcomes[:3] == [0, 10, 20]
    assert isinstance(outcomes[3], TransientError)  # attempts used up
    assert attempts == [1, 3, 1, 3]
    assert calls[0] == [0, 1, 2, 3]
    assert calls[1] == [1, 3]
    assert slept  # waited between the tries, on the given sleep


async def test_settle_async_matches_settle_sync() -> None:
    calls, handle = _flaky({1: 2, 3: 5})
    slept: list[float] = []

    async def call(items: list[int]) -> Reply:
        return Reply(value=handle(items))  # type: ignore[operator]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    outcomes, attempts = await settle_async(
        [0, 1, 2, 3],
        call,
        Retry(attempts=3, backoff=1.0, jitter=0.0),
        random=random.random,
        sleep=sleep,
    )
    assert outcomes[:3] == [0, 10, 20]
    assert isinstance(outcomes[3], TransientError)
    assert attempts == [1, 3, 1, 3]
    assert calls[0] == [0, 1, 2, 3]
    assert calls[1] == [1, 3]
    assert slept


async def test_settle_async_without_retry_calls_once() -> None:
    seen: list[list[int]] = []

    async def call(items: list[int]) -> Reply:
        seen.append(items)
        return Reply(value=[TransientError("x")] * len(items))

    async def sleep(seconds: float) -> None:
        raise AssertionError("no wait without a retry policy")

    outcomes, attempts = await settle_async([1, 2], call, None, random=random.random, sleep=sleep)
    assert [type(o) for o in outcomes] == [TransientError, TransientError]
    assert attempts == [1, 1]
    assert seen == [[1, 2]]
