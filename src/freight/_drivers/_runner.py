"""The runners: the one place a batch plan's effects are carried out.

The core's :func:`~freight._core._plan.plan_batch` decides everything about a batch
(calls, waits, bisection, which items come back for another try and when). A runner
only performs what the plan asks, on the clock it is given:

- a :class:`~freight._core._plan.Call`: wait for the rate limiter (if any), call the
  handler, send the reply back;
- a :class:`~freight._core._plan.Sleep`: sleep on the given clock.

There is one sync runner (:func:`run_sync`, for threads, jobs and connectors) and one
async runner (:func:`run_async`, for the asyncio :class:`~freight.Batcher` and Flow
consumers). Every shape runs its batches through one of them, so the same
:class:`~freight.Retry` means the same thing everywhere. What a shape does with the
items that come back (:attr:`Outcome.again`) is the shape's: a batcher or a Flow
consumer puts them back in its buffer; a job or a connector, which has no buffer,
calls :func:`settle_sync` to try them again in follow-up calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from freight._core._plan import Call, Outcome, Reply, plan_batch
from freight._core._retry import Retry
from freight._errors import BatcherClosed, HandlerContractError
from freight._ratelimit import RateLimiter

__all__ = [
    "EXITS",
    "call_handler",
    "call_sync",
    "handler_raised",
    "run_async",
    "run_sync",
    "settle_sync",
    "stopped_by",
]

EXITS = (KeyboardInterrupt, SystemExit, asyncio.CancelledError)
"""What a batcher lets a handler's ``BaseException`` through as: a request to stop."""


def call_sync(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """Call ``handler`` on a copy of ``items``; an ``Exception`` becomes the reply's error."""
    try:
        return Reply(value=handler(list(items)))
    except Exception as exc:
        return Reply(error=exc)


def handler_raised(exc: BaseException) -> HandlerContractError:
    """The error a batcher's callers get when its handler raised ``exc``, a
    ``BaseException`` that is neither an ``Exception`` nor one of :data:`EXITS`.

    Such an exception (``class Boom(BaseException)``, a stray ``GeneratorExit``) is
    not a request to stop the program, so it fails the batch like any raising
    handler, and the batcher goes on with its next batch; it is named in the message
    and kept as ``__cause__``.
    """
    detail = f": {exc}"[:202] if str(exc) else ""
    error = HandlerContractError(
        f"the batch handler raised {type(exc).__qualname__} (a BaseException, not an "
        f"Exception){detail}; the whole batch failed with it. Raise an Exception subclass "
        "to fail a batch: only KeyboardInterrupt, SystemExit and cancellation stop a batcher"
    )
    error.__cause__ = exc
    return error


def stopped_by(name: str, exc: BaseException) -> BatcherClosed:
    """What the callers of a batch get when its handler raised one of :data:`EXITS`
    (which itself goes on propagating): their items were not handled."""
    return BatcherClosed(
        f"batcher {name!r} stopped this batch: its handler raised {type(exc).__qualname__}, "
        "a request to stop; this item was not handled"
    )


def call_handler(handler: Callable[[list[Any]], Any], items: list[Any]) -> Reply:
    """:func:`call_sync` for the batchers: a ``BaseException`` other than :data:`EXITS`
    also becomes the reply's error (:func:`handler_raised`).

    Jobs and connectors keep :func:`call_sync`: for them a ``BaseException`` stands
    for the process going away and must unwind the run.
    """
    try:
        return Reply(value=handler(list(items)))
    except Exception as exc:
        return Reply(error=exc)
    except EXITS:
        raise
    except BaseException as exc:
        return Reply(error=handler_raised(exc))


def _cost(rate_limit: RateLimiter, items: list[Any]) -> int:
    return len(items) if rate_limit.unit == "items" else 1


def run_sync(
    items: list[Any],
    call: Callable[[list[Any]], Reply],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], None],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
    tried: Sequence[int] | None = None,
) -> tuple[Outcome, int]:
    """Carry out one batch's plan in this thread; return its outcome and the calls made.

    ``now`` is required with ``rate_limit`` (the limiter is paced on that clock).
    """
    plan = plan_batch(items, retry, random, tried)
    calls = 0
    effect = next(plan)
    while True:
        if type(effect) is Call:
            calls += 1
            if rate_limit is not None:
                assert now is not None
                delay = rate_limit.reserve(_cost(rate_limit, effect.items), now=now())
                if delay > 0:
                    sleep(delay)
            try:
                effect = plan.send(call(effect.items))
            except StopIteration as stop:
                return stop.value, calls
        else:
            sleep(effect.seconds)  # type: ignore[union-attr]
            effect = next(plan)


async def run_async(
    items: list[Any],
    call: Callable[[list[Any]], Awaitable[Reply]],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
    tried: Sequence[int] | None = None,
) -> tuple[Outcome, int]:
    """:func:`run_sync` for asyncio: the same plan, its calls and sleeps awaited."""
    plan = plan_batch(items, retry, random, tried)
    calls = 0
    effect = next(plan)
    while True:
        if type(effect) is Call:
            calls += 1
            if rate_limit is not None:
                assert now is not None
                delay = rate_limit.reserve(_cost(rate_limit, effect.items), now=now())
                if delay > 0:
                    await sleep(delay)
            reply = await call(effect.items)
            try:
                effect = plan.send(reply)
            except StopIteration as stop:
                return stop.value, calls
        else:
            await sleep(effect.seconds)  # type: ignore[union-attr]
            effect = next(plan)


def settle_sync(
    items: list[Any],
    call: Callable[[list[Any]], Reply],
    retry: Retry | None,
    *,
    random: Callable[[], float],
    sleep: Callable[[float], None],
    now: Callable[[], float] | None = None,
    rate_limit: RateLimiter | None = None,
) -> tuple[list[Any], list[int]]:
    """Run ``items`` until each has a final outcome; return outcomes and attempts per item.

    For shapes without a buffer (a job's chunk, a connector): the items a plan sends
    back for another try are tried again together, after the plan's wait, in a
    follow-up call, exactly as a batcher would re-batch them.
    """
    n = len(items)
    outcomes: list[Any] = [None] * n
    attempts = [0] * n
    pending = list(range(n))
    tried: list[int] | None = None
    while pending:
        outcome, _ = run_sync(
            [items[i] for i in pending],
            call,
            retry,
            random=random,
            sleep=sleep,
            now=now,
            rate_limit=rate_limit,
            tried=tried,
        )
        for j, i in enumerate(pending):
            outcomes[i] = outcome.outcomes[j]
            attempts[i] = outcome.attempts[j]
        if not outcome.again:
            break
        sleep(outcome.again_after)
        pending = [pending[j] for j in outcome.again]
        tried = [attempts[i] for i in pending]
    return outcomes, attempts
