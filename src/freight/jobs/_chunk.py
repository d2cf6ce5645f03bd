"""Handling one chunk: process, write, retry per item, dead-letter what fails.

A :class:`ChunkHandler` holds only what handling needs (sink, process functions,
retry policy, key, rate limit, clock), so it can be sent to worker processes
(``executor="processes"``) as well as used from threads; the store is not here:
the run commits each chunk's outcome.

Each stage (``process``/``process_chunk``, then the sink) runs through the shared
sync runner (:func:`~freight._drivers._runner.settle_sync`): the core's plan decides
retries, bisection and which items come back, exactly as in a batcher; a chunk has
no buffer, so the items that come back are tried again together after the plan's
wait. What still fails becomes a dead letter, except a :class:`TargetError` (the target
refuses every row: no table, column or privilege), which stops the run with that one
reason instead of dead-lettering every row with it.

A chunk of plain CSV lines kept as one text (:meth:`~freight.jobs._lines.Lines.block`)
is first offered whole to a sink that takes CSV lines so (PostgreSQL's COPY:
``sink._write_lines(text, context)``, all or nothing), where nothing is processed, keyed
or rate-limited on the way: no string per line. Only when that does not write them all
(a bad row, an outage) are the lines made texts and written as above, the one path that
retries, isolates and reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import itertools
import operator
import random
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from freight._core._clock import Clock
from freight._core._retry import Retry
from freight._drivers._asyncio import is_async_callable
from freight._drivers._runner import call_lean, forget_frames, settle_sync
from freight._errors import FreightError, HandlerContractError, RecordError, TargetError
from freight._ratelimit import RateLimiter
from freight.jobs._lines import Lines
from freight.jobs._sink import Sink, WriteContext, lines_writer
from freight.jobs._sources import BLANK, Record
from freight.store import DeadLetter

__all__ = ["ChunkHandler", "Prepared", "WriteOrder", "handle_installed", "install", "packed"]

_EXCERPT = 200
# A record's fields, read in C over a whole chunk: no Python frame per record (each
# per-record generator or comprehension here cost ~0.3 µs a record under cProfile).
_ITEM = operator.itemgetter(2)
_ERROR = operator.itemgetter(3)


def _category(error: BaseException, retry: Retry | None) -> str:
    if isinstance(error, RecordError) or type(error).__name__ == "ValidationError":
        return "validation"
    if isinstance(error, HandlerContractError):
        return "contract"
    if retry is not None and retry.is_transient(error):
        return "retries_exhausted"
    return "permanent"


def _letter(
    record: Record, error: BaseException, category: str, attempts: int, index: int
) -> DeadLetter:
    item = record.item
    # a raw CSV record (CsvSource(raw=True)) is its line's text: shown as it is
    raw = type(item) is str and record.unit == "line"
    payload = record.raw or (item.rstrip("\r\n") if raw else repr(item))
    forget_frames(error)  # its letter keeps its type and message
    return DeadLetter(
        record_id=record.id,
        position=record.position,
        payload=payload[:_EXCERPT],
        error_type=type(error).__name__,
        message=str(error)[:1000],
        category=category,
        attempts=attempts,
        chunk_index=index,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A chunk ready for the sink (:meth:`ChunkHandler.prepare`): the records left, their
    processed items, the write's context, and what was skipped or failed so far."""

    context: WriteContext
    records: Sequence[Record]
    items: list[Any]
    skipped: int
    dead: list[DeadLetter]
    # The records, plain lines kept as one text, offered whole to the sink first (then
    # ``items`` is empty: their texts are made only if that write does not take them).
    lines: Lines | None = None

    def texts_made(self) -> Prepared:
        """This chunk with its lines' texts as its items (written one item each)."""
        if self.lines is None:
            return self
        return dataclasses.replace(self, items=self.lines.texts.copy(), lines=None)


class WriteOrder:
    """Sink writes of concurrent chunks in the order the chunks were handed out
    (``Job(ordered_writes=True)``), where that order can matter.

    The driver gives each chunk a ticket (0, 1, 2, ...) as it submits it. A chunk's
    writes start once each chunk before it is :meth:`done` (its rows and its
    checkpoint committed), so with an upsert on a key the source's last value of a key
    is the one that stays, however the workers' timing falls, and a resume never
    redoes an older chunk after a newer one. Processing before the writes still runs
    in parallel. Worker threads only (a process pool cannot share it).

    A chunk that :meth:`declare` s the keys its write touches (the sink's
    ``conflict_keys``) waits only for the chunks before it that share one, or whose
    keys are unknown: writes of disjoint keys commute, so they run at once.
    """

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._issued = 0
        # The tickets not done yet: their keys, None (every key: waits for all and
        # is waited for by all), or _UNDECLARED until the chunk is prepared.
        self._open: dict[int, frozenset[Hashable] | object | None] = {}

    def ticket(self) -> int:
        """The next chunk's ticket (called in submission order)."""
        with self._turn:
            ticket, self._issued = self._issued, self._issued + 1
            self._open[ticket] = _UNDECLARED
            return ticket

    def declare(self, ticket: int, keys: frozenset[Hashable] | None) -> None:
        """The keys the chunk of ``ticket`` writes (``None``: unknown, any key)."""
        with self._turn:
            if ticket in self._open:
                self._open[ticket] = keys
                self._turn.notify_all()

    def wait(self, ticket: int) -> None:
        """Block until no chunk before ``ticket`` that may share a key with it is open.

        Raises :class:`~freight.FreightError` when such a chunk gave up (:meth:`abandon`):
        its rows may be in the target without its checkpoint, and a resume redoes it,
        so a chunk after it that shares a key must not write first.
        """
        with self._turn:
            self._turn.wait_for(lambda: self._clear(ticket) is not None)
            if not self._clear(ticket):
                raise FreightError(
                    f"chunk ticket {ticket}: a chunk before it that may share a key "
                    "failed; not written, so that a resume keeps the source's order"
                )

    def _clear(self, ticket: int) -> bool | None:
        """True: free to write; None: wait; False: an earlier clashing chunk gave up."""
        mine = self._open.get(ticket)
        for before, keys in self._open.items():  # in ticket order
            if before >= ticket:
                break
            if isinstance(keys, _Abandoned):
                if _clash(mine, keys.keys):
                    return False
                continue
            if _clash(mine, keys):
                return None
        return True

    def done(self, ticket: int) -> None:
        """The chunk of ``ticket`` is committed and checkpointed: the chunks waiting for
        it may write; a second call does nothing."""
        with self._turn:
            if not isinstance(self._open.get(ticket), _Abandoned):
                self._open.pop(ticket, None)
            self._turn.notify_all()

    def abandon(self, ticket: int) -> None:
        """The chunk of ``ticket`` failed (its rows may or may not have landed): the
        chunks after it that may share a key give up instead of writing."""
        with self._turn:
            keys = self._open.get(ticket)
            if ticket in self._open and not isinstance(keys, _Abandoned):
                self._open[ticket] = _Abandoned(keys)
            self._turn.notify_all()


def _clash(mine: object, theirs: object) -> bool:
    """Whether two chunks' keys may meet (unknown or undeclared keys always may)."""
    return (
        not isinstance(mine, frozenset)
        or not isinstance(theirs, frozenset)
        or not mine.isdisjoint(theirs)
    )


@dataclass(frozen=True, slots=True)
class _Abandoned:
    """A ticket whose chunk failed: its keys (or None, unknown) stay in the way."""

    keys: object


_UNDECLARED = object()  # a ticket whose chunk has not said its keys yet


class ChunkHandler:
    """Turns a chunk's records into (skipped, written, dead letters)."""

    def __init__(
        self,
        *,
        job_id: str,
        sink: Sink,
        process: Callable[[Any], Any] | None,
        process_chunk: Callable[[list[Any]], Any] | None,
        retry: Retry | None,
        key: Callable[[Any], Hashable] | None,
        rate_limit: RateLimiter | None,
        clock: Clock | None = None,
    ) -> None:
        self.id = job_id
        self.sink = sink
        self.process = process
        self.process_chunk = process_chunk
        self.retry = retry
        self.key = key
        self.rate_limit = rate_limit
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random().random

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["loop"] = None  # an event loop stays in its process
        state["clock"] = None  # so does a clock (its timers); workers use real time
        del state["_random"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._random = random.Random().random

    def handle(self, index: int, records: Sequence[Record]) -> tuple[int, int, list[DeadLetter]]:
        """Process and write ``records``; return (skipped, written, dead letters)."""
        return self.write(self.prepare(index, records))

    def prepare(self, index: int, records: Sequence[Record]) -> Prepared:
        """Everything before the sink: bad and blank records sorted out, ``process``
        applied (its failures dead-lettered), keys computed."""
        if self._whole(records):
            assert isinstance(records, Lines)
            return Prepared(WriteContext(self.id, index, None), records, [], 0, [], records)
        skipped = 0
        dead: list[DeadLetter] = []
        repeat = itertools.repeat
        items = _items(records)
        if not isinstance(records, Lines) and (  # plain lines are never bad nor blank
            any(map(operator.is_not, map(_ERROR, records), repeat(None)))
            or any(map(operator.is_, items, repeat(BLANK)))
        ):
            kept = []
            for record in records:
                if record.item is BLANK:
                    skipped += 1
                elif record.error is not None:
                    dead.append(_letter(record, record.error, "validation", 0, index))
                else:
                    kept.append(record)
            records = kept
            items = list(map(_ITEM, records))
        if self.process is not None:
            process = self.process
            per_item: Callable[[list[Any]], Any] = (
                functools.partial(_gather_each, process)
                if is_async_callable(process)
                else lambda xs: [_apply(process, x) for x in xs]
            )
            records, items = self._stage(index, records, items, per_item, dead)
        elif self.process_chunk is not None:
            records, items = self._stage(index, records, items, self.process_chunk, dead)
        keys = [self.key(i) for i in items] if self.key else None
        return Prepared(WriteContext(self.id, index, keys), records, items, skipped, dead)

    def _whole(self, records: Sequence[Record]) -> bool:
        """Whether ``records`` go to the sink first as one text (see the module's doc)."""
        return (
            isinstance(records, Lines)
            and records.is_block
            and self.process is None
            and self.process_chunk is None
            and self.key is None
            and self.rate_limit is None
            and lines_writer(self.sink) is not None
        )

    def conflict_keys(self, prepared: Prepared) -> frozenset[Hashable] | None:
        """The keys the sink's write of ``prepared`` touches (its optional
        ``conflict_keys(items)``), or ``None``: unknown, so it may touch any. A sink
        that fails to say is asked no more than that: its write says what is wrong."""
        keys_of = getattr(self.sink, "conflict_keys", None)
        if keys_of is None:
            return None
        try:
            items = prepared.items if prepared.lines is None else prepared.lines.texts
            keys = keys_of(items)
            return None if keys is None else frozenset(keys)
        except Exception:  # an item the sink cannot read (its write refuses it), or an
            return None  # unhashable key: unknown, so the chunk waits for every other

    def write(self, prepared: Prepared) -> tuple[int, int, list[DeadLetter]]:
        """The sink stage of a prepared chunk; return (skipped, written, dead letters)."""
        if prepared.lines is not None:
            text, write_lines = prepared.lines.block(), lines_writer(self.sink)
            assert write_lines is not None  # so it was prepared
            try:
                whole = text is not None and bool(write_lines(text, prepared.context))
            except Exception:  # the path below retries and reports what this meets
                whole = False
            if whole:
                return prepared.skipped, len(prepared.lines), list(prepared.dead)
            prepared = prepared.texts_made()
        sink, context, dead = self.sink, prepared.context, list(prepared.dead)
        written, _ = self._stage(
            context.chunk_index,
            prepared.records,
            prepared.items,
            lambda xs: sink.write(xs, context),
            dead,
            rate_limit=self.rate_limit,
        )
        return prepared.skipped, len(written), dead

    def _on_loop(self, handler: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        """With executor="async": awaitable results are awaited on the job's event loop."""
        loop = self.loop
        if loop is None:
            return handler

        def run(items: list[Any]) -> Any:
            result = handler(items)
            if inspect.isawaitable(result):
                return asyncio.run_coroutine_threadsafe(_awaited(result), loop).result()
            return result

        return run

    def _stage(
        self,
        index: int,
        records: Sequence[Record],
        items: list[Any],
        handler: Callable[[list[Any]], Any],
        dead: list[DeadLetter],
        *,
        rate_limit: RateLimiter | None = None,
    ) -> tuple[Sequence[Record], list[Any]]:
        """Run one stage over ``items``; failures become dead letters; return the survivors."""
        if not items:
            return [], []
        clock = self.clock
        call = self._on_loop(handler)
        outcomes, attempts = settle_sync(
            items,
            lambda xs: call_lean(call, xs),
            self.retry,
            random=self._random,
            sleep=clock.sleep_sync if clock is not None else time.sleep,
            now=clock.now if clock is not None else time.monotonic,
            rate_limit=rate_limit,
        )
        if not any(map(isinstance, outcomes, itertools.repeat(BaseException))):
            return records, outcomes  # the rule: every item went through
        refused = next((o for o in outcomes if isinstance(o, TargetError)), None)
        if refused is not None:  # no row can land until the target is fixed: stop the run
            raise refused
        kept_records: list[Record] = []
        kept: list[Any] = []
        for record, outcome, tries in zip(records, outcomes, attempts, strict=True):
            if isinstance(outcome, BaseException):
                category = _category(outcome, self.retry)
                dead.append(_letter(record, outcome, category, tries, index))
            else:
                kept_records.append(record)
                kept.append(outcome)
        return kept_records, kept


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


async def _gather_each(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """An async per-item ``process`` over a chunk, concurrently; errors stay per item."""
    return list(await asyncio.gather(*(fn(item) for item in items), return_exceptions=True))


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except Exception as exc:
        return exc


_installed: ChunkHandler | None = None


def install(handler: ChunkHandler) -> None:
    """Worker-process initializer: keep the handler for the tasks to come."""
    global _installed  # noqa: PLW0603  (one handler per worker process, by design)
    _installed = handler


def _items(records: Sequence[Record]) -> list[Any]:
    """The items of ``records``, read in C (of lines: their texts)."""
    if isinstance(records, Lines):
        return records.texts.copy()
    return list(map(_ITEM, records))


def packed(records: Sequence[Record]) -> tuple[tuple[Any, ...], ...]:
    """A chunk's records as their columns, for a worker process: tuples of plain values
    pickle in C, where a record (a named tuple) pickles through Python calls (~1 µs each
    way, more than a COPY of it costs)."""
    return tuple(zip(*records, strict=True))


def handle_installed(
    index: int, columns: tuple[tuple[Any, ...], ...]
) -> tuple[int, int, list[DeadLetter]]:
    """A worker-process task: handle a chunk (:func:`packed`) with the installed handler."""
    assert _installed is not None, "install() runs first in every worker process"
    records = list(map(tuple.__new__, itertools.repeat(Record), zip(*columns, strict=True)))
    return _installed.handle(index, records)
