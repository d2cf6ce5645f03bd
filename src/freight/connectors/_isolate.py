"""Per-row outcomes for sinks whose write is all-or-nothing (COPY, a transaction).

When a write of many rows fails because of some of them, :func:`isolate` bisects the
rows with the core's poison isolation: the good rows are written (in smaller calls),
each bad row gets its own error. One try per half; outages are the job's ``Retry``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from freight._core._plan import Call, Reply, plan_batch
from freight._core._retry import Retry
from freight._drivers._sync import call_handler, run_plan

__all__ = ["aisolate", "isolate"]

_ONCE = Retry(attempts=1, isolate=True)


def isolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], None],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
) -> list[Any]:
    """Write ``rows`` by bisection; return ``None`` or the (classified) error per row."""
    outcome, _ = run_plan(
        list(rows),
        lambda part: call_handler(write, part),
        _ONCE,
        random=random.random,
        sleep=lambda seconds: None,
    )
    return [classify(o) if isinstance(o, BaseException) else None for o in outcome.outcomes]


async def aisolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], Awaitable[None]],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
) -> list[Any]:
    """:func:`isolate` for an ``async`` write: the same bisection plan, awaited."""
    plan = plan_batch(list(rows), _ONCE, random.random)
    effect = next(plan)
    while True:
        assert isinstance(effect, Call)  # one try per part: the plan never sleeps here
        try:
            await write(list(effect.items))
            reply = Reply(value=None)
        except Exception as exc:
            reply = Reply(error=exc)
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            outcomes = stop.value.outcomes
            return [classify(o) if isinstance(o, BaseException) else None for o in outcomes]
