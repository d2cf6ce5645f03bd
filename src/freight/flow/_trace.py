"""Spans: every flush, handler run, publish and dead letter of a flow, to subscribers.

A subscriber is any callable taking a :class:`Span`. Two ship with freight:

- :class:`DuckDBTracer` writes spans to a DuckDB file (extra ``freight[trace]``,
  ``.freight/traces.duckdb``, table ``spans``), so a question such as "which batches
  flushed by timeout last hour and how full were they" is one SQL query.
- :class:`OpenTelemetryTracer` hands them to OpenTelemetry (extra ``freight[otel]``),
  for whatever exporter the application configured.

How the DuckDB tracer stays cheap (a flow traces by default, so its cost is every
flow's): on the event loop, a publish span (one per artifact, most of a flow's spans)
is the envelope's ``created_at`` appended to a list when it goes on with a run (the
same type, producer, tenant, depth and consumer count as the span before, and the next
id of its flow's counter), a marker and that when it opens one; another span is its
values appended to a list; nothing is converted, formatted or written there, and nothing
is kept alive for the garbage collector to walk. A writer thread takes what is queued
every ``buffer`` spans or ``interval`` seconds (and the flow when it goes idle or
closes, in a worker thread) and inserts it with one statement per table (Arrow tables
scanned by DuckDB): runs of publish spans into ``publish_runs`` (a row per run: its
first id and its spans' starts), the others into ``span_rows``; ``spans`` is the view
over both that users query. Measured on the development machine (2 shared cores, the
guide's payments flow, 20,000 transactions, ~6 us each untraced): a span written row by
row (``executemany``, long ago) cost ~2 ms; a publish span written as a row of its own
~1.3 us (DuckDB's checkpoint of its string columns, mostly); as runs, the tracing costs
~0.7 us a transaction on the event loop and ~0.6 us for the write (the rows are written
to the file once, no WAL; see ``_Session``).

This module holds the spans, the tracers and the DuckDB tracer's queues and writer
thread; the write itself (tables, Arrow conversion, the insert) is in
``_trace_store.py``, which imports nothing from here. ``_Writer`` calls ``_insert``
through this module's namespace (tests replace it here).
"""

from __future__ import annotations

import itertools
import logging
import operator
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from freight.flow import _trace_store
from freight.flow._trace_store import _SESSION, Columns, PublishRuns, Run, Spans, _count

__all__ = ["DuckDBTracer", "OpenTelemetryTracer", "Span", "SpanKind"]

# The write layer's names this module has always had (tests use them here; ``_Writer``
# calls ``_insert`` through this module, so a test may replace it here).
SpanRow = _trace_store.SpanRow
PublishRow = _trace_store.PublishRow
_insert = _trace_store._insert


SpanKind = Literal["flush", "handler", "publish", "dead_letter"]

_log = logging.getLogger("freight.flow")


@dataclass(frozen=True, slots=True)
class Span:
    """One traced step of a flow.

    Attributes:
        id: unique id; ``parent_id`` links a handler run to its flush.
        name: ``"flush"``, ``"handler"``, ``"publish"`` or ``"dead_letter"``.
        consumer: the consumer concerned (``None`` for an outside publish).
        started_at, ended_at: timezone-aware UTC.
        duration: seconds on the flow's clock.
        attributes: ``consumer`` and ``duration`` again, then ``batch_size``,
            ``flush_reason``, ``efficiency``, ``succeeded``, ``failed``, ``artifact_type``,
            ``reason``, ``tenant``… as they apply (``None`` values left out).
    """

    id: str
    name: SpanKind
    consumer: str | None
    started_at: datetime
    duration: float
    attributes: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    flow: str = "default"

    @property
    def ended_at(self) -> datetime:
        return self.started_at + timedelta(seconds=self.duration)


_S = TypeVar("_S", Columns, PublishRuns)

_KEEP = 200_000  # spans held at most: queued, or kept by a failed write for the next one
_COUNT_EVERY = 256  # spans queued in columns between two counts of them (writer.recorded)


class DuckDBTracer:
    """Writes spans to the table ``spans`` of a DuckDB file.

    Columns: ``span_id``, ``parent_id``, ``flow``, ``name`` (and its alias ``kind``:
    ``flush``, ``handler``, ``publish``, ``dead_letter``), ``consumer``, ``started_at``,
    ``ended_at`` (UTC), ``duration`` (s), ``batch_size``, ``flush_reason``, ``efficiency``,
    ``succeeded``, ``failed``, ``artifact_type``, ``reason``, ``tenant``, and
    ``attributes`` (JSON, the rest).

    Spans are queued in memory and written in bulk, one statement per write, by a
    writer thread: every ``buffer`` spans and every ``interval`` seconds, never on the
    caller's path. :meth:`flush` and :meth:`close` write what is queued at once (a flow
    closes its tracers when it closes; when it goes idle it writes what is queued too).
    Memory is bounded: past ``max_spans`` queued spans, recording waits
    for the writer; a write that fails (another process holds the file, the disk is
    full) is logged and keeps at most ``max_spans`` spans for the next one. The file is
    opened only while writing, so other processes can query it between writes.

    Args:
        path: the DuckDB file (default ``.freight/traces.duckdb``).
        buffer: spans queued before the writer thread writes them.
        interval: seconds between the writer thread's writes of what is queued.
        max_spans: most spans held in memory (backpressure beyond it).
    """

    def __init__(
        self,
        path: str | Path = ".freight/traces.duckdb",
        *,
        buffer: int = 50_000,
        interval: float = 5.0,
        max_spans: int = _KEEP,
    ) -> None:
        try:
            import duckdb  # noqa: F401, PLC0415 (extra freight[trace])
            import pyarrow  # noqa: F401, PLC0415 (extra freight[trace])
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError(
                "DuckDBTracer needs duckdb and pyarrow: pip install 'freight[trace]'"
            ) from exc
        self._writer = _Writer(
            Path(path), max(1, buffer), max(0.01, float(interval)), max(buffer, max_spans)
        )
        self.record = self._writer.record
        self.queues = self._writer.queues
        # Spans still queued when the tracer is dropped or the interpreter exits are
        # written then (and the thread stops): the thread holds the writer, not the tracer.
        weakref.finalize(self, self._writer.stop, quiet=True)

    @property
    def path(self) -> Path:
        """The DuckDB file (it may be changed: the next write goes there)."""
        return self._writer.path

    @path.setter
    def path(self, value: str | Path) -> None:
        self._writer.path = Path(value)

    def __repr__(self) -> str:
        return f"DuckDBTracer({str(self.path)!r})"

    def __call__(self, span: Span) -> None:
        """Queue ``span`` (written by the writer thread, or at the next flush)."""
        duration = span.duration
        self.record(
            (
                span.id,
                span.parent_id,
                span.flow,
                span.name,
                span.consumer,
                span.started_at.timestamp() + duration,
                duration,
                span.attributes,
            )
        )

    def flush(self) -> None:
        """Write the queued spans now, in the calling thread (raises if it cannot:
        the spans are then kept for the next write)."""
        self._writer.write()

    def due(self) -> bool:
        """Spans are queued (or kept by a failed write): :meth:`idle` would write."""
        writer = self._writer
        return bool(writer.queue or writer.kept or writer.kept_columns or writer.pending())

    def idle(self) -> None:
        """The flow went idle: write what is queued, if anything."""
        if self.due():
            self._writer.write()

    def close(self) -> None:
        """Stop the writer thread and write what is queued."""
        self._writer.stop()


class Issuer(Protocol):
    """What makes a flow's artifact ids (its router): ``id_prefix`` and a counter; the
    newest id made and its number (``issued``)."""

    newest: str | None
    issued: int
    id_prefix: str


class _Queues:
    """One flow's spans queued for a tracer: two lists the flow appends to and a write
    takes the head of (a copy of what it holds, then a delete of that many: what the
    flow appends meanwhile stays). Each span is one C call on the flow's side (whole,
    even against a write): no lock on the hottest path.

    ``runs`` holds flush and handler spans (``Columns.RUN`` values each). ``publishes``
    holds publish spans as runs (``PublishRuns``): a span's ``created_at`` on the flow's
    clock (the envelope's own float: nothing is made), after its run's marker when it
    opens one (:meth:`publish`; the marker holds the offset from the flow's clock to the
    wall clock then); a write reads them back into runs (:meth:`take`), the first of
    which may go on from the previous write's last run."""

    __slots__ = (
        "carried", "carry", "closed", "flow", "key", "limit", "number", "offset", "owner",
        "publishes", "runs", "uncounted", "writer",
    )  # fmt: skip

    def __init__(self, flow: str, writer: _Writer) -> None:
        self.flow = flow
        self.writer = writer
        self.publishes: list[Any] = []
        self.runs: list[Any] = []
        self.uncounted = 0  # spans queued here and not yet told to the writer
        # told every ``limit`` spans: ``_COUNT_EVERY``, or 0 while the writer has no
        # thread (the next span starts one)
        self.limit = 0 if writer.thread is None else _COUNT_EVERY
        # The open run (the flow's thread only): its key (type, producer, tenant, depth,
        # consumers), the issuer of its ids (``None``: not one a run can go on with),
        # its last id's number and its clock offset (a span whose offset differs by
        # ``_SKEW`` or more opens a new run: a fake clock advanced, the wall clock set).
        self.key: tuple[Any, ...] = ()
        self.owner: Issuer | None = None
        self.number = 0
        self.offset = 0.0  # the wall clock minus the flow's when the run opened
        self.closed = False  # its flow closed: dropped by the writer once written
        # The last run a write took (the writer's only), and how many of its spans: the
        # starts at the head of the next write's take go on with it.
        self.carry: tuple[Any, ...] | None = None
        self.carried = 0

    def publish(
        self, envelope: tuple[Any, ...], key: tuple[Any, ...], issuer: Issuer, offset: float
    ) -> None:
        """Queue the publish span of ``envelope`` (``key``: its type, producer, tenant,
        depth and how many subscriptions took it; ``issuer``: what makes its flow's ids;
        ``offset``: the wall clock minus the flow's, now). The flow's hot path inlines
        the first case (``Tracing.published``)."""
        span_id = envelope[0]
        if key == self.key and self.owner is issuer and -_SKEW < offset - self.offset < _SKEW:
            expected = self.number + 1
            if (span_id is issuer.newest and issuer.issued == expected) or span_id == (
                f"{issuer.id_prefix}{expected:x}"
            ):  # the next in the run
                self.publishes.append(envelope[4])
                self.number = expected
                return
        first: int | None
        owner: Issuer | None
        if span_id is issuer.newest:
            prefix, first, owner = issuer.id_prefix, issuer.issued, issuer
        else:
            prefix, first = _split_id(span_id)
            owner = issuer if first is not None and prefix == issuer.id_prefix else None
        # one call: the marker and the span's created_at (the flow's clock)
        self.publishes += ((prefix, first, *key, offset), envelope[4])
        self.key = key
        self.owner = owner
        self.number = first if first is not None else 0
        self.offset = offset

    def ran(self, values: tuple[Any, ...]) -> None:
        """Queue a flush or handler span (``Columns.RUN`` values)."""
        self.runs += values
        self.count(1)

    def count(self, spans: int) -> None:
        """``spans`` more were queued: tell the writer every ``_COUNT_EVERY`` (and the
        first time: it starts its thread), not at each publish."""
        uncounted = self.uncounted + spans
        if uncounted >= self.limit:
            self.uncounted = 0
            if self.closed:  # a span after its flow closed: written all the same
                self.writer.keep(self)
            self.writer.recorded(uncounted)
        else:
            self.uncounted = uncounted

    def take(self) -> list[Spans]:
        """What is queued (a write's): its other spans and its publish spans."""
        taken: list[Spans] = []
        if self.runs:
            taken.append(Columns(self.flow, Columns.RUN, _head(self.runs)))
        if self.publishes:
            taken.append(self._publish_runs(_head(self.publishes)))
        return taken

    def _publish_runs(self, values: list[Any]) -> PublishRuns:
        """``values`` (markers, each followed by its run's starts) as runs: the starts
        before the first marker go on with the run the previous take ended in."""
        markers = list(map(operator.is_, map(type, values), itertools.repeat(tuple)))
        at = list(itertools.compress(itertools.count(), markers))
        starts = list(itertools.compress(values, map(operator.not_, markers)))
        runs: list[Run] = []
        head = at[0] if at else len(values)
        if head:  # the previous take's last run goes on
            assert self.carry is not None, "a publish span queued before any run's marker"
            prefix, first, *rest = self.carry
            first = None if first is None else first + self.carried
            runs.append((prefix, first, *rest, head))
            self.carried += head
        for index, position in enumerate(at):
            end = at[index + 1] if index + 1 < len(at) else len(values)
            runs.append((*values[position], end - position - 1))
            self.carry, self.carried = values[position], end - position - 1
        return PublishRuns(self.flow, runs, starts)

    def __bool__(self) -> bool:
        return bool(self.publishes or self.runs)


_MAX_NUMBER = 2**62  # a run's numbers stay within the table's BIGINT
# Seconds a span's clock offset may differ from its run's (the microseconds between
# reading the two clocks): a run's spans start at their created_at plus the run's offset.
_SKEW = 1e-4


def _split_id(span_id: str) -> tuple[str, int | None]:
    """``span_id`` as a prefix and a number, ``prefix + f"{number:x}"`` being it (an
    artifact id: its flow's prefix and a counter); ``(span_id, None)`` if it is not one
    (a uuid's hex after a dash is not a counter: too big for the table)."""
    prefix, dash, tail = span_id.rpartition("-")
    if dash and tail and len(tail) <= 15:
        try:
            number = int(tail, 16)
        except ValueError:
            return span_id, None
        if number < _MAX_NUMBER and f"{number:x}" == tail:
            return prefix + dash, number
    return span_id, None


def _head(values: list[Any]) -> list[Any]:
    """Take what ``values`` holds (appended to meanwhile: what comes after stays)."""
    count = len(values)
    taken = values[:count]
    del values[:count]
    return taken


class _Writer:
    """The queue of one DuckDB tracer and the thread that empties it (module note)."""

    def __init__(self, path: Path, buffer: int, interval: float, max_spans: int) -> None:
        self.path = path
        self.buffer = buffer
        self.interval = interval
        self.max_spans = max_spans
        self.queue: deque[SpanRow] = deque()  # appended by callers, emptied by writes
        # spans in columns: one _Queues per flow using this tracer (two flows of one
        # name, in two threads, never share the state of a run)
        self.flows: list[_Queues] = []
        # Spans queued in columns: counted (by the recording thread) minus taken (by
        # writes); each counter has one writer, so neither needs a lock.
        self.counted = 0
        self.taken = 0
        self.kept: list[SpanRow] = []  # what a failed write could not write
        self.kept_columns: list[Spans] = []
        self.writing = threading.RLock()  # one write at a time (a finalizer may nest)
        self.starting = threading.Lock()
        self.wake = threading.Event()
        self.room = threading.Event()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()  # the running thread's: set to end it

    def record(self, row: SpanRow) -> None:
        """Queue one span; wake the writer every ``buffer`` spans (the hot path)."""
        queue = self.queue
        queue.append(row)
        if len(queue) + self.counted - self.taken >= self.buffer or self.thread is None:
            self.kick()

    def recorded(self, count: int) -> None:
        """``count`` spans were queued in columns: wake the writer every ``buffer``."""
        self.counted += count
        if len(self.queue) + self.counted - self.taken >= self.buffer or self.thread is None:
            self.kick()

    def queues(self, flow: str) -> _Queues:
        """New columns for a flow named ``flow`` to queue its spans in (kept until the
        flow closed and they were written)."""
        with self.starting:
            queues = _Queues(flow, self)
            self.flows.append(queues)
        return queues

    def keep(self, queues: _Queues) -> None:
        """Write ``queues`` again (its flow closed, and it was dropped once written)."""
        with self.starting:
            if queues not in self.flows:
                self.flows.append(queues)

    def pending(self) -> bool:
        """Spans are queued in columns."""
        return any(list(self.flows))

    def _queued(self) -> int:
        return len(self.queue) + self.counted - self.taken

    def kick(self) -> None:
        if self.thread is None:
            with self.starting:
                if self.thread is None:  # the first span, or the first after a close
                    self.stopping = threading.Event()
                    self.thread = threading.Thread(
                        target=self._run,
                        args=(self.stopping,),
                        name=f"freight-trace {self.path}",
                        daemon=True,
                    )
                    self.thread.start()
                    self._limit(_COUNT_EVERY)
        if self._queued() < self.buffer:
            return
        self.wake.set()
        # Bounded memory: past max_spans, wait for the writer (each write empties the
        # queue, a failing one included, so this ends).
        while self._queued() >= self.max_spans and self._alive():
            self.room.clear()
            self.wake.set()
            self.room.wait(0.1)

    def _limit(self, limit: int) -> None:
        """Have the flows tell this writer of their spans every ``limit`` (under
        ``starting``)."""
        for queues in list(self.flows):
            queues.limit = limit

    def _alive(self) -> bool:
        thread = self.thread
        return thread is not None and thread.is_alive()

    def _run(self, stopping: threading.Event) -> None:
        # Pay the first write's setup (~0.1 s: the in-memory DuckDB, pyarrow's import)
        # now, beside the flow, rather than in the write its close waits for.
        with _SESSION.lock:
            _SESSION.connection()
        import pyarrow  # noqa: F401, PLC0415 (extra freight[trace])

        while True:
            self.wake.wait(self.interval)
            self.wake.clear()
            if stopping.is_set():
                break
            try:
                self.write()
            except Exception as exc:
                _log.warning(
                    "DuckDBTracer(%r): cannot write spans (%s); %d kept for the next write",
                    str(self.path), exc, len(self.kept),
                )  # fmt: skip
            finally:
                self.room.set()

    def write(self) -> None:
        """Write what is queued (and what an earlier write kept), in one statement per
        table."""
        with self.writing:
            rows, self.kept = self.kept + _take(self.queue), []
            flows = list(self.flows)
            taken = [columns for queues in flows for columns in queues.take()]
            done = [q for q in flows if q.closed and not q]  # a closed flow's, written
            if done:
                with self.starting:
                    self.flows = [q for q in self.flows if q not in done]
            self.taken += _count(taken)
            columns, self.kept_columns = self.kept_columns + taken, []
            if not rows and not columns:
                return
            try:
                _insert(self.path, rows, columns)
            except BaseException:
                dropped = len(rows) + _count(columns) - self.max_spans
                if dropped > 0:
                    _log.warning(
                        "DuckDBTracer(%r): dropped the %d oldest spans it could not write",
                        str(self.path), dropped,
                    )  # fmt: skip
                self.kept = rows[-self.max_spans :]
                # then the newest run spans, then the newest publish spans, if room is left
                room = self.max_spans - len(self.kept)
                runs = _newest([c for c in columns if isinstance(c, Columns)], room)
                room -= _count(runs)
                publishes = _newest([c for c in columns if isinstance(c, PublishRuns)], room)
                self.kept_columns = runs + publishes
                raise

    def stop(self, *, quiet: bool = False) -> None:
        """Stop the thread, then write what is left (``quiet``: log a failure). A span
        recorded later starts a new thread (a tracer shared by flows outlives one)."""
        with self.starting:
            thread, self.thread = self.thread, None
            self._limit(0)  # the next span starts a thread
            self.stopping.set()
            self.wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        try:
            self.write()
        except Exception:
            if not quiet:
                raise
            _log.exception("DuckDBTracer(%r): spans lost at exit", str(self.path))


def _take(queue: deque[Any]) -> list[Any]:
    """Empty ``queue`` (appended by other threads meanwhile: take what it held)."""
    return [queue.popleft() for _ in range(len(queue))]


def _newest(columns: list[_S], room: int) -> list[_S]:
    """The newest ``room`` spans of ``columns`` (none if ``room`` <= 0)."""
    kept: list[_S] = []
    for chunk in reversed(columns):
        if room <= 0:
            break
        kept.append(chunk.tail(min(room, len(chunk))))
        room -= len(chunk)
    kept.reverse()
    return kept


class SpanIds:
    """Span ids: a random prefix per flow and a counter (unique across processes and
    restarts, ~10x cheaper than a uuid4 per span)."""

    __slots__ = ("_count", "_format")

    def __init__(self, prefix: str) -> None:
        self._format = prefix.replace("%", "%%") + "%x"
        self._count = itertools.count(1)

    def next(self) -> str:
        return self._format % next(self._count)


class OpenTelemetryTracer:
    """Hands spans to OpenTelemetry (``opentelemetry-api``; extra ``freight[otel]``).

    Args:
        tracer_provider: the provider to use; the global one by default.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace  # noqa: PLC0415 (extra freight[otel])
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError(
                "OpenTelemetryTracer needs opentelemetry-api: pip install 'freight[otel]'"
            ) from exc
        self._tracer = trace.get_tracer("freight.flow", tracer_provider=tracer_provider)

    def __call__(self, span: Span) -> None:
        start = int(span.started_at.timestamp() * 1e9)
        attributes = {
            f"freight.{k}": v
            for k, v in span.attributes.items()
            if isinstance(v, str | bool | int | float)
        }
        attributes["freight.flow"] = span.flow
        if span.consumer is not None:
            attributes["freight.consumer"] = span.consumer
        otel_span = self._tracer.start_span(
            f"freight.{span.name}", start_time=start, attributes=attributes
        )
        otel_span.end(end_time=start + int(span.duration * 1e9))
