"""Per-row outcomes for sinks whose write is all-or-nothing (COPY, a transaction).

A write of many rows that fails because of some of them is taken apart in one of two
ways, both inside the sink's own write, which then returns one outcome per row (the
handler contract):

- **located** (:func:`locate`): the server names the row it failed on (PostgreSQL's
  COPY names the line). The rows before it are good, it is bad, and the rest is
  written again: it may hold more bad rows. One failed statement per bad row, instead
  of ``2·log2(n)`` per bad row for bisection; a 100,000-row load with 0.5 % bad rows
  took 24 s by bisection, at most twice the clean load's time this way.
- **bisected** (:func:`isolate`): where the server does not say, the core's poison
  isolation through the shared runner: the good rows are written in smaller calls,
  each bad row gets its own error. One try per half; outages are the job's ``Retry``.

:func:`locate` is a plan (a generator of effects, no I/O), carried out by
:func:`run_located` or :func:`arun_located`, so the sync and async sinks share it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from freight._core._plan import Reply
from freight._core._retry import Retry
from freight._drivers._runner import call_sync, run_async, run_sync

__all__ = [
    "Bisect",
    "Refused",
    "Write",
    "aisolate",
    "arun_located",
    "isolate",
    "locate",
    "run_located",
]

_ONCE = Retry(attempts=1, isolate=True)

# What one more statement costs, in rows parsed: three round trips (~0.2 ms) against
# ~4 us a row for the server to parse and insert a typed CSV row (measured locally).
_STATEMENT_ROWS = 50
_MIN_WINDOW = 16


@dataclass(frozen=True, slots=True)
class Write:
    """Write the rows at these indices (ascending) in one statement.

    Reply ``None`` when it went in, else :class:`Refused`.
    """

    rows: list[int]


@dataclass(frozen=True, slots=True)
class Bisect:
    """Isolate the rows at these indices by bisection (:func:`isolate`).

    Their write already failed with ``error``: it is not tried again. Reply with one
    outcome per row (``None`` or its error).
    """

    rows: list[int]
    error: BaseException


@dataclass(frozen=True, slots=True)
class Refused:
    """A failed :class:`Write`: the row at ``at`` (an index into that write's rows)
    failed with ``error``; ``at`` is ``None`` when the server did not say which."""

    error: BaseException
    at: int | None


Plan = Generator[Write | Bisect, Refused | list[Any] | None, list[Any]]


def locate(n: int, refused: Mapping[int, BaseException] | None = None) -> Plan:
    """Plan the write of ``n`` rows, locating each bad row from the server's reply.

    ``refused`` holds rows already known bad (checked before writing): they are never
    sent. Returns one outcome per row (``None``: written).

    Rules:

    - The first write takes every row: a clean write is one statement.
    - A write refused at row ``at``: that row is bad; the rows before it are good
      (the server went through them) and are written again with the next new rows,
      in order, so that a later row still comes after an earlier one (an upsert's
      last value wins).
    - After a bad row, a write takes on ``w ≈ sqrt(s·g)`` new rows, where ``g`` is
      the number of rows per bad row so far and ``s`` what a statement costs in rows
      parsed (``_STATEMENT_ROWS``). The rows a failed statement went through before
      its bad row are parsed twice (``w/2`` per bad row on average); smaller writes
      are more statements (``n/w``): ``sqrt(2·s·g)`` minimises their sum, and about
      0.7 of it did best in simulations, where the good rows carried over make failed
      statements dearer. After a clean write the window doubles.
    - The good rows carried over are written alone once they are as many as a window.
    - A refusal that names no row, or a row proven good before, is bisected.
    """
    outcomes: list[Any] = [None] * n
    for index, error in (refused or {}).items():
        outcomes[index] = error
    todo = [i for i in range(n) if outcomes[i] is None] if refused else list(range(n))
    cursor = 0  # todo[cursor:] were never sent
    good: list[int] = []  # proven good by a failed write, not written yet
    window = len(todo)
    bad = 0
    while cursor < len(todo) or good:
        fresh = [] if good and len(good) >= window else todo[cursor : cursor + window]
        rows = good + fresh
        reply = yield Write(rows)
        if reply is None:
            good = []
            cursor += len(fresh)
            window = min(2 * window, max(len(todo) - cursor, 1))
            continue
        assert isinstance(reply, Refused)
        at = reply.at
        if at is None or not len(good) <= at < len(rows):
            isolated = yield Bisect(rows, reply.error)
            assert isinstance(isolated, list)
            for index, outcome in zip(rows, isolated, strict=True):
                outcomes[index] = outcome
            good = []
            cursor += len(fresh)
            continue
        outcomes[rows[at]] = reply.error
        bad += 1
        cursor += at - len(good) + 1
        good = rows[:at]
        window = max(_MIN_WINDOW, math.isqrt(_STATEMENT_ROWS * cursor // bad))
    return outcomes


def run_located(
    plan: Plan,
    write: Callable[[list[int]], Refused | None],
    bisect: Callable[[list[int], BaseException], list[Any]],
) -> list[Any]:
    """Carry out a :func:`locate` plan; return its outcomes."""
    effect = next(plan)
    while True:
        reply: Refused | list[Any] | None
        if isinstance(effect, Write):
            reply = write(effect.rows)
        else:
            reply = bisect(effect.rows, effect.error)
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


async def arun_located(
    plan: Plan,
    write: Callable[[list[int]], Awaitable[Refused | None]],
    bisect: Callable[[list[int], BaseException], Awaitable[list[Any]]],
) -> list[Any]:
    """:func:`run_located` for ``async`` writes."""
    effect = next(plan)
    while True:
        reply: Refused | list[Any] | None
        if isinstance(effect, Write):
            reply = await write(effect.rows)
        else:
            reply = await bisect(effect.rows, effect.error)
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def isolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], None],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
    *,
    failed: BaseException | None = None,
) -> list[Any]:
    """Write ``rows`` by bisection; return ``None`` or the (classified) error per row.

    ``failed``: the error the write of all ``rows`` already met. The plan's first
    call (all the rows) is then answered with it instead of failing a second time.
    """
    known = [failed] if failed is not None else []

    def call(part: list[Any]) -> Reply:
        if known:
            return Reply(error=known.pop())
        return call_sync(write, part)

    outcome, _ = run_sync(
        list(rows),
        call,
        _ONCE,
        random=random.random,
        sleep=time.sleep,  # one try per part: the plan never waits here
    )
    return [classify(o) if isinstance(o, BaseException) else None for o in outcome.outcomes]


async def aisolate(
    rows: Sequence[Any],
    write: Callable[[list[Any]], Awaitable[None]],
    classify: Callable[[BaseException], BaseException] = lambda error: error,
    *,
    failed: BaseException | None = None,
) -> list[Any]:
    """:func:`isolate` for an ``async`` write: the same bisection plan, awaited."""
    known = [failed] if failed is not None else []

    async def call(part: list[Any]) -> Reply:
        if known:
            return Reply(error=known.pop())
        try:
            await write(list(part))
        except Exception as exc:
            return Reply(error=exc)
        return Reply(value=None)

    outcome, _ = await run_async(list(rows), call, _ONCE, random=random.random, sleep=asyncio.sleep)
    return [classify(o) if isinstance(o, BaseException) else None for o in outcome.outcomes]
