"""Spans: every flush, handler run, publish and dead letter of a flow, to subscribers.

A subscriber is any callable taking a :class:`Span`. Two ship with freight:

- :class:`DuckDBTracer` writes spans to a DuckDB file (extra ``freight[trace]``,
  ``.freight/traces.duckdb``, table ``spans``), so a question such as "which batches
  flushed by timeout last hour and how full were they" is one SQL query.
- :class:`OpenTelemetryTracer` hands them to OpenTelemetry (extra ``freight[otel]``),
  for whatever exporter the application configured.

How the DuckDB tracer stays cheap (a flow traces by default, so its cost is every
flow's): on the event loop, a publish span (one per artifact, most of a flow's spans)
is seven values appended to a list, another span one tuple appended to a deque;
nothing is converted, formatted or written there, and nothing is kept alive for the
garbage collector to walk (see :class:`PublishRow`). A writer thread takes what is
queued every ``buffer`` spans or ``interval`` seconds (and the flow when it goes idle
or closes, in a worker thread) and inserts it with one statement per table (Arrow
tables scanned by DuckDB): publish spans into the narrow ``publish_spans``, the
others into ``span_rows``; ``spans`` is the view over both that users query.
Measured on the development machine (2 shared cores, the guide's payments flow,
20,000 transactions): a span written row by row (``executemany``, long ago) cost
~2 ms; now a publish span costs ~0.4 us on the event loop and ~1.5 us in the writer
(~0.4 us of Python making its columns, the rest DuckDB's insert and the checkpoint its
commit makes: the rows are written to the file once, no WAL; see ``_Session``).

This module holds the spans, the tracers and the DuckDB tracer's queues and writer
thread; the write itself (tables, Arrow conversion, the insert) is in
``_trace_store.py``, which imports nothing from here. ``_Writer`` calls ``_insert``
through this module's namespace (tests replace it here).
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from freight.flow import _trace_store
from freight.flow._trace_store import _SESSION, Columns, _count

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


class _Queues:
    """One flow's spans queued in columns for a tracer: two lists (``Columns.PUBLISH``
    and ``Columns.RUN`` values) the flow appends each span's values to (one C call:
    whole, even against a write; ``Tracing.published`` appends to ``publishes`` itself,
    then calls ``writer.recorded``) and a write takes the head of (a copy of what it
    holds, then a delete of that many: what the flow appends meanwhile stays). No lock
    on the hottest path."""

    __slots__ = ("flow", "publishes", "runs", "uncounted", "writer")

    def __init__(self, flow: str, writer: _Writer) -> None:
        self.flow = flow
        self.writer = writer
        self.publishes: list[Any] = []
        self.runs: list[Any] = []
        self.uncounted = 0  # spans queued here and not yet told to the writer

    def ran(self, values: tuple[Any, ...]) -> None:
        """Queue a flush or handler span (``Columns.RUN`` values)."""
        self.runs += values
        self.count(1)

    def count(self, spans: int) -> None:
        """``spans`` more were queued: tell the writer every ``_COUNT_EVERY`` (and the
        first time: it starts its thread), not at each publish."""
        uncounted = self.uncounted + spans
        if uncounted >= _COUNT_EVERY or self.writer.thread is None:
            self.uncounted = 0
            self.writer.recorded(uncounted)
        else:
            self.uncounted = uncounted

    def take(self) -> list[Columns]:
        """What is queued (a write's): its publish spans and its other spans."""
        return [
            Columns(self.flow, width, _head(values))
            for width, values in ((Columns.RUN, self.runs), (Columns.PUBLISH, self.publishes))
            if values
        ]

    def __bool__(self) -> bool:
        return bool(self.publishes or self.runs)


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
        self.flows: dict[str, _Queues] = {}  # spans in columns, per flow name
        # Spans queued in columns: counted (by the recording thread) minus taken (by
        # writes); each counter has one writer, so neither needs a lock.
        self.counted = 0
        self.taken = 0
        self.kept: list[SpanRow] = []  # what a failed write could not write
        self.kept_columns: list[Columns] = []
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
        """The columns the flow named ``flow`` queues its spans in."""
        with self.starting:
            queues = self.flows.get(flow)
            if queues is None:
                queues = self.flows[flow] = _Queues(flow, self)
        return queues

    def pending(self) -> bool:
        """Spans are queued in columns."""
        return any(list(self.flows.values()))

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
        if self._queued() < self.buffer:
            return
        self.wake.set()
        # Bounded memory: past max_spans, wait for the writer (each write empties the
        # queue, a failing one included, so this ends).
        while self._queued() >= self.max_spans and self._alive():
            self.room.clear()
            self.wake.set()
            self.room.wait(0.1)

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
            taken = [columns for queues in list(self.flows.values()) for columns in queues.take()]
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
                runs = _newest([c for c in columns if c.width == Columns.RUN], room)
                room -= _count(runs)
                publishes = _newest([c for c in columns if c.width == Columns.PUBLISH], room)
                self.kept_columns = runs + publishes
                raise

    def stop(self, *, quiet: bool = False) -> None:
        """Stop the thread, then write what is left (``quiet``: log a failure). A span
        recorded later starts a new thread (a tracer shared by flows outlives one)."""
        with self.starting:
            thread, self.thread = self.thread, None
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


def _newest(columns: list[Columns], room: int) -> list[Columns]:
    """The newest ``room`` spans of ``columns`` (none if ``room`` <= 0)."""
    kept: list[Columns] = []
    for chunk in reversed(columns):
        if room <= 0:
            break
        kept.append(chunk.tail(room))
        room -= len(chunk)
    kept.reverse()
    return kept


class SpanIds:
    """Span ids: a random prefix per flow and a counter (unique across processes and
    restarts, ~10x cheaper than a uuid4 per span)."""

    __slots__ = ("_count", "_prefix")

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


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
