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

Items of different shapes (mappings that do not all carry the same fields) are written
in runs (:class:`Run`, :func:`shaped`): the items cut where their fields change, in order,
each run one statement with its own columns, so that no field is dropped, a column an
item does not carry is left alone (an upsert keeps it, a new row gets its default), and
a later item still comes after an earlier one. Items of one shape, the rule, are found
by :func:`uniform_rows` in C-level passes: they cost what one column list always cost.
A field the target lacks, or one outside the columns given, fails its item with a reason
naming it (:func:`known_runs`, :func:`shaped`): it is never dropped. :func:`segments`
says which runs are a bulk statement each and which short ones go together.
"""

from __future__ import annotations

import asyncio
import math
import operator
import random
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from freight._core._plan import Reply
from freight._core._retry import Retry
from freight._drivers._runner import call_lean, run_async, run_sync
from freight._errors import PermanentError

__all__ = [
    "Bisect",
    "Refused",
    "Run",
    "Write",
    "aisolate",
    "arun_located",
    "isolate",
    "known_runs",
    "locate",
    "run_located",
    "runs",
    "segments",
    "settled",
    "shaped",
    "unsendable",
    "uniform_rows",
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
    """Carry out a :func:`locate` plan; return its outcomes (a plan whose rows were all
    refused before writing has no effect at all)."""
    reply: Refused | list[Any] | None = None
    while True:
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(effect, Write):
            reply = write(effect.rows)
        else:
            reply = bisect(effect.rows, effect.error)


async def arun_located(
    plan: Plan,
    write: Callable[[list[int]], Awaitable[Refused | None]],
    bisect: Callable[[list[int], BaseException], Awaitable[list[Any]]],
) -> list[Any]:
    """:func:`run_located` for ``async`` writes."""
    reply: Refused | list[Any] | None = None
    while True:
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(effect, Write):
            reply = await write(effect.rows)
        else:
            reply = await bisect(effect.rows, effect.error)


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
        return call_lean(write, part)  # its error is read, not kept: no frames

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


@dataclass(frozen=True, slots=True)
class Run:
    """Items written by one statement: the ``columns`` it sets, each item's values in
    that order (``rows``), and the items' indices in the write (``places``)."""

    columns: list[str]
    rows: list[Any]
    places: list[int]


def uniform_rows(items: Sequence[Any], columns: Sequence[str]) -> list[Any] | None:
    """Each item's values of ``columns`` (a tuple), when every item is a ``dict`` holding
    exactly these fields; else ``None``.

    One C-level pass per check (types, sizes, the values: a missing field is a
    ``KeyError``), no Python step per item: same-sized dicts that all hold every column
    hold no other field.
    """
    if not columns or set(map(type, items)) != {dict} or set(map(len, items)) != {len(columns)}:
        return None
    get = operator.itemgetter(*columns)
    try:
        values = list(map(get, items))
    except KeyError:
        return None
    return values if len(columns) > 1 else [(value,) for value in values]


def runs(items: Sequence[Mapping[str, Any]], places: Sequence[int]) -> list[Run]:
    """``items`` (at ``places`` in the write) cut where their fields change, in order.

    A run's columns are its first item's fields, in their order; a field's order within
    an item does not start a new run. Writing the runs one after the other in one
    transaction sets exactly each item's own fields, and a later item of a key still
    comes after an earlier one (an upsert's last value wins).
    """
    found: list[Run] = []
    start = 0
    for end in range(1, len(items) + 1):
        if end == len(items) or items[end].keys() != items[start].keys():
            columns = list(items[start])
            part = items[start:end]
            if len(columns) > 1:
                rows = list(map(operator.itemgetter(*columns), part))
            else:
                rows = [tuple(item[c] for c in columns) for item in part]
            found.append(Run(columns, rows, list(places[start:end])))
            start = end
    return found


def shaped(
    items: Sequence[Any],
    columns: list[str] | None,
    *,
    refuse: Callable[[Any], BaseException],
) -> tuple[list[Run], dict[int, BaseException]]:
    """The runs that write ``items`` (one when they share their fields, the rule) and the
    items refused before writing, by place.

    With ``columns``: one run of them, each sequence as it is, each mapping's values
    (NULL for a missing one); a mapping with a field outside ``columns`` is refused,
    naming it. Without: :func:`runs` of the mappings, each run with its items' own
    fields; an item that is not a mapping gets ``refuse(item)``, which is raised
    when no item is a mapping (the whole write is wrong).
    """
    first = columns if columns is not None or not isinstance(items[0], Mapping) else list(items[0])
    rows = uniform_rows(items, first) if first else None
    if rows is not None:
        return [Run(list(first or ()), rows, list(range(len(items))))], {}
    if columns is not None:
        return _given(items, columns)
    places = [place for place, item in enumerate(items) if isinstance(item, Mapping)]
    if not places:
        raise refuse(items[0])
    refused = {p: refuse(item) for p, item in enumerate(items) if not isinstance(item, Mapping)}
    return runs([items[p] for p in places], places), refused


def _given(items: Sequence[Any], columns: list[str]) -> tuple[list[Run], dict[int, BaseException]]:
    """:func:`shaped` with ``columns`` given, item by item."""
    allowed = set(columns)
    rows: list[Any] = []
    places: list[int] = []
    refused: dict[int, BaseException] = {}
    for place, item in enumerate(items):
        if isinstance(item, Mapping):
            if not allowed.issuperset(item):
                unknown = sorted(str(f) for f in item if f not in allowed)
                refused[place] = PermanentError(
                    f"fields {unknown} are not among columns= {columns}, the columns this "
                    "sink writes; drop them from the item or add them to columns="
                )
                continue
            rows.append([item.get(c) for c in columns])
        else:
            rows.append(item)
        places.append(place)
    return [Run(columns, rows, places)], refused


def known_runs(
    planned: list[Run],
    table: Mapping[str, Any] | None,
    name: str,
    refused: dict[int, BaseException],
) -> list[Run]:
    """``planned`` without the runs carrying a field the ``table`` (its columns) lacks,
    their items added to ``refused`` with a reason naming the field.

    Unless every item carries such a field: then ``planned`` is written as it is and the
    target refuses the whole write (a TargetError, which stops a job with one reason
    instead of one dead letter per item). One run is that case; an unknown ``table``
    (``None`` or empty) leaves the target to judge.
    """
    if len(planned) < 2 or not table:
        return planned
    lacking = [[c for c in run.columns if c not in table] for run in planned]
    if not any(lacking):
        return planned
    everyone = set.intersection(*(set(run.columns) for run in planned))
    if any(c in everyone for fields in lacking for c in fields):
        return planned
    kept: list[Run] = []
    for run, fields in zip(planned, lacking, strict=True):
        if not fields:
            kept.append(run)
            continue
        for place in run.places:
            refused[place] = PermanentError(
                f"fields {sorted(fields)} are not columns of {name!r} (its columns: "
                f"{list(table)}); drop them from the item or add the columns"
            )
    return kept


def settled(outcomes: list[Any], refused: Mapping[int, BaseException]) -> list[Any] | None:
    """The written ``outcomes`` with the items ``refused`` before writing; ``None`` when
    every item went in (the handler contract's clean write)."""
    for place, error in refused.items():
        outcomes[place] = error
    return None if outcomes.count(None) == len(outcomes) else outcomes


def segments(planned: list[Run], alone: int) -> list[tuple[bool, list[Run]]]:
    """``planned`` as the statements that write it, in order: a run of at least ``alone``
    rows by itself (``False``: one bulk statement, a COPY), consecutive smaller runs
    together (``True``: one INSERT per row, pipelined: many short runs cost no round
    trips of their own)."""
    found: list[tuple[bool, list[Run]]] = []
    for run in planned:
        if len(run.rows) >= alone:
            found.append((False, [run]))
        elif found and found[-1][0]:
            found[-1][1].append(run)
        else:
            found.append((True, [run]))
    return found


def unsendable(error: UnicodeEncodeError) -> str:
    """Why a row holding a text its driver cannot encode (a lone surrogate) is refused:
    the same reason on every target."""
    bad = error.object[error.start : error.end]
    return f"a text holds a character that cannot be sent in UTF-8 ({bad!r}: {error.reason})"
