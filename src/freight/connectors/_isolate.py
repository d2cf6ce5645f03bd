"""Per-row outcomes for sinks whose write is all-or-nothing (COPY, a transaction).

When a write of many rows fails because of some of them, :func:`isolate` bisects the
rows with the core's poison isolation: the good rows are written (in smaller calls),
each bad row gets its own error. One try per half; outages are the job's ``Retry``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from freight._core._plan import Reply
from freight._core._retry import Retry
from freight._drivers._runner import call_sync, run_async, run_sync

__all__ = ["aisolate", "isolate"]

_ONCE = Retry(attempts=1, isolate=True)


def isolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], None],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
) -> list[Any]:
    """Write ``rows`` by bisection; return ``None`` or the (classified) error per row."""
    outcome, _ = run_sync(
        list(rows),
        lambda part: call_sync(write, part),
        _ONCE,
        random=random.random,
        sleep=time.sleep,  # one try per part: the plan never waits here
    )
    return [classify(o) if isinstance(o, BaseException) else None for o in outcome.outcomes]


async def aisolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], Awaitable[None]],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
) -> list[Any]:
    """:func:`isolate` for an ``async`` write: the same bisection plan, awaited."""

    async def call(part: list[Any]) -> Reply:
        try:
            await write(list(part))
        except Exception as exc:
            return Reply(error=exc)
        return Reply(value=None)

    outcome, _ = await run_async(list(rows), call, _ONCE, random=random.random, sleep=asyncio.sleep)
    return [classify(o) if isinstance(o, BaseException) else None for o in outcome.outcomes]
