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
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

__all__ = ["DuckDBTracer", "OpenTelemetryTracer", "Span", "SpanKind"]

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


SpanRow = tuple[str, str | None, str, str, str | None, float, float, Mapping[str, Any]]
"""A span as the DuckDB tracer queues it: ``(id, parent_id, flow, name, consumer,
ended (UTC epoch seconds), duration, attributes)``; ``None`` attributes are skipped
when it is written."""

_KEEP = 200_000  # spans held at most: queued, or kept by a failed write for the next one
_COUNT_EVERY = 256  # spans queued in columns between two counts of them (writer.recorded)

# The attributes with a column of their own, and its type; ``consumer`` and
# ``duration`` have theirs too. The others go to the JSON column ``attributes``.
_COLUMNS: dict[str, type] = {
    "batch_size": int,
    "flush_reason": str,
    "efficiency": float,
    "succeeded": int,
    "failed": int,
    "artifact_type": str,
    "reason": str,
    "tenant": str,
}
_NOT_EXTRA = frozenset({"consumer", "duration", *_COLUMNS})

# The table ``spans`` users query is a view over two tables: ``span_rows`` (flush,
# handler and dead-letter spans, every column) and ``publish_spans`` (one row per
# published artifact, only the columns a publish span fills: a third of the wide
# table's insert). No primary keys: span ids are unique by construction (a random
# prefix per flow and a counter), and a key's index cost a quarter of each insert.
# A file written before the view existed has ``spans`` as its wide table: it is renamed
# ``span_rows`` (its rows, and a primary key it may have, kept).
_SPAN_ROWS = """
CREATE TABLE IF NOT EXISTS span_rows (
    span_id VARCHAR,
    parent_id VARCHAR,
    flow VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    consumer VARCHAR,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ NOT NULL,
    duration DOUBLE NOT NULL,
    batch_size INTEGER,
    flush_reason VARCHAR,
    efficiency DOUBLE,
    succeeded INTEGER,
    failed INTEGER,
    artifact_type VARCHAR,
    reason VARCHAR,
    tenant VARCHAR,
    attributes JSON
)
"""
_PUBLISH_SPANS = """
CREATE TABLE IF NOT EXISTS publish_spans (
    flow VARCHAR NOT NULL,
    span_id VARCHAR NOT NULL,
    artifact_type VARCHAR NOT NULL,
    consumer VARCHAR,
    started_at TIMESTAMPTZ NOT NULL,
    tenant VARCHAR,
    depth INTEGER NOT NULL,
    consumers INTEGER NOT NULL
)
"""
# A publish span's attributes column: the same JSON text the wide table holds.
_SPANS_VIEW = """
CREATE VIEW IF NOT EXISTS spans AS
SELECT span_id, parent_id, flow, name, kind, consumer, started_at, ended_at, duration,
    batch_size, flush_reason, efficiency, succeeded, failed, artifact_type, reason, tenant,
    attributes
FROM span_rows
UNION ALL
SELECT span_id, NULL, flow, 'publish', 'publish', consumer, started_at, started_at,
    CAST(0 AS DOUBLE), NULL, NULL, NULL, NULL, NULL, artifact_type, NULL, tenant,
    CAST('{"consumers": ' || consumers || ', "depth": ' || depth || '}' AS JSON)
FROM publish_spans
"""
_LEGACY = (
    "SELECT 1 FROM duckdb_tables() WHERE database_name = 'freight_traces'"
    " AND schema_name = 'main' AND table_name = 'spans'"
)

# DuckDB merges small row groups into their neighbours at each checkpoint (a write
# detaching the file), rewriting them: past ~20,000 rows a write cost 2-5x more each
# time the table's last row group grew. A write of this many spans or more keeps its
# own row groups (no merge: measured 0.9 us per publish span, flat); a smaller one lets
# DuckDB merge (many tiny row groups would bloat the file: ~260 KB each).
_OWN_ROW_GROUPS = 10_000

_json = json.JSONEncoder(default=str).encode  # json.dumps(x, default=str), without its setup


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


class Columns:
    """Spans of one flow in columns: one flat list of ``width`` values per span.

    Publish spans (``PUBLISH``: one per artifact, most of a flow's spans) and the spans
    of handler runs (``RUN``: a flush and a handler span per batch) are recorded this
    way: a span's values appended to one list, nothing else (an object per span that
    the tracer holds until the write, a tuple or the envelope itself, doubled the
    garbage collector's young collections; a dict of attributes per span cost a few
    microseconds to make and as many to take apart). A write takes each column with
    one slice (``values[k::width]``).

    ``PUBLISH`` values: the envelope's ``id``, ``type``, ``producer``, the span's start
    (UTC epoch seconds), the envelope's ``tenant`` and ``depth``, and how many
    subscriptions took it. ``RUN`` values: ``span_id``, ``parent_id``, ``name``,
    ``consumer``, the end (UTC epoch seconds), ``duration``, ``batch_size``,
    ``flush_reason``, ``efficiency``, ``succeeded``, ``failed``, ``tenant``, and the
    handler's ``tries``, ``published`` and ``retried`` (``None`` where they do not
    apply).
    """

    __slots__ = ("flow", "values", "width")

    PUBLISH = 7
    RUN = 15

    def __init__(self, flow: str, width: int, values: list[Any] | None = None) -> None:
        self.flow = flow
        self.width = width
        self.values: list[Any] = [] if values is None else values

    def __len__(self) -> int:
        return len(self.values) // self.width

    def tail(self, count: int) -> Columns:
        """Its newest ``count`` spans."""
        return Columns(self.flow, self.width, self.values[len(self.values) - count * self.width :])

    def column(self, index: int) -> list[Any]:
        """Its values of column ``index``."""
        return self.values[index :: self.width]


PublishRow = Columns  # what a write takes besides the other spans' rows (its columns)


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


def _count(columns: list[Columns]) -> int:
    """The spans in ``columns``."""
    return sum(map(len, columns))


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


def _insert(path: Path, rows: list[SpanRow], columns: list[Columns]) -> None:
    """Insert ``rows`` and ``columns`` into ``path``'s tables, one statement each.

    The file is attached to one in-memory DuckDB of this process for the write and
    detached after it (so other processes can open it between writes): a database of
    its own per write cost ~20 ms of CPU to make, an attach ~1 ms. The tables are
    made the first time this process writes the file, or when an insert finds them
    missing (the file was replaced meanwhile)."""
    import duckdb  # noqa: PLC0415 (extra freight[trace])

    path.parent.mkdir(parents=True, exist_ok=True)
    tables = _tables(rows, columns)
    spans = len(rows) + _count(columns)
    with _SESSION.lock:
        db = _SESSION.connection()
        db.execute(f"ATTACH {_text(str(path))} AS freight_traces")
        try:
            db.execute("USE freight_traces")
            # a checkpoint (the insert's or the detach's) merges small row groups, or not
            db.execute(
                "SET max_vacuum_tasks = 0" if spans >= _OWN_ROW_GROUPS else "RESET max_vacuum_tasks"
            )
            key = str(path.resolve())
            if key not in _SESSION.prepared:
                _prepare(db)
                _SESSION.prepared.add(key)
            try:
                _append(db, tables)
            except duckdb.CatalogException:  # replaced by a file without the tables
                _prepare(db)
                _append(db, tables)
        finally:
            db.execute("USE memory")
            db.execute("DETACH freight_traces")


def _prepare(db: Any) -> None:
    """Make the tables and the view ``spans`` if the file lacks them (a file written
    before the view: its table ``spans`` becomes ``span_rows``)."""
    if db.execute(_LEGACY).fetchone() is not None:
        db.execute("ALTER TABLE spans RENAME TO span_rows")
    db.execute(_SPAN_ROWS)
    db.execute(_PUBLISH_SPANS)
    db.execute(_SPANS_VIEW)


_Tables = list[tuple[str, Any, str]]  # (registered name, Arrow table, insert statement)


def _append(db: Any, tables: _Tables) -> None:
    """Insert each table with its statement, in one transaction (a commit of the file
    costs ~1.5 ms of CPU: one per write, not one per table)."""
    for name, table, _ in tables:
        db.register(name, table)
    try:
        db.execute("BEGIN")
        try:
            for _, _, statement in tables:
                db.execute(statement)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        for name, _, _ in tables:
            db.unregister(name)


def _tables(rows: list[SpanRow], columns: list[Columns]) -> _Tables:
    """``rows`` and ``columns`` as Arrow tables (made before the file is attached: the
    columns are Python's work, the insert DuckDB's): one of the spans for
    ``span_rows``, one of the publish spans for ``publish_spans``."""
    import pyarrow as pa  # noqa: PLC0415 (extra freight[trace])

    tables: _Tables = []
    runs = [c for c in columns if c.width == Columns.RUN]
    parts = ([_span_table(pa, rows)] if rows else []) + ([_run_table(pa, runs)] if runs else [])
    if parts:
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        tables.append(("freight_span_batch", table, _INSERT_SPAN_ROWS))
    publishes = [c for c in columns if c.width == Columns.PUBLISH]
    if publishes:
        tables.append((
            "freight_publish_batch", _publish_table(pa, publishes),
            "INSERT INTO publish_spans SELECT flow, span_id, artifact_type, consumer,"
            " to_timestamp(started), tenant, depth, consumers FROM freight_publish_batch",
        ))  # fmt: skip
    return tables


_INSERT_SPAN_ROWS = (
    "INSERT INTO span_rows SELECT span_id, parent_id, flow, name, name, consumer,"  # noqa: S608 (constant names)
    " to_timestamp(ended - duration), to_timestamp(ended), duration,"
    f" {', '.join(_COLUMNS)}, attributes FROM freight_span_batch"
)


def _span_schema(pa: Any) -> Any:
    """The columns of a table for ``span_rows`` (``ended``: epoch seconds)."""
    text, integer, double = pa.string(), pa.int32(), pa.float64()
    return pa.schema([
        ("span_id", text), ("parent_id", text), ("flow", text), ("name", text),
        ("consumer", text), ("ended", double), ("duration", double),
        *((name, text if kind is str else integer if kind is int else double)
          for name, kind in _COLUMNS.items()),
        ("attributes", text),
    ])  # fmt: skip


def _span_table(pa: Any, rows: list[SpanRow]) -> Any:
    """Spans recorded one by one (dead letters, a subscriber's ``Span``) as columns:
    the attributes of their own columns picked out (text ones as text), the others as
    JSON."""
    ids, parents, flows, names, consumers, ended, durations, attributes = zip(*rows, strict=True)
    columns: list[Any] = [ids, parents, flows, names, consumers, ended, durations]
    misfits: dict[int, dict[str, Any]] = {}  # a number column's value of another kind
    for name, kind in _COLUMNS.items():
        values = [a.get(name) for a in attributes]
        if kind is str:
            values = [None if v is None else str(v) for v in values]
        else:
            fits = int if kind is int else (int, float)
            for i, value in enumerate(values):
                if value is not None and not isinstance(value, fits):
                    misfits.setdefault(i, {})[name] = value  # kept in the JSON instead
                    values[i] = None
        columns.append(values)
    columns.append([_extras(a, misfits.get(i)) for i, a in enumerate(attributes)])
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, _span_schema(pa), strict=True)],
        schema=_span_schema(pa),
    )


def _run_table(pa: Any, runs: list[Columns]) -> Any:
    """Flush and handler spans (``Columns.RUN``) as a table for ``span_rows``."""
    whole = (
        runs[0] if len(runs) == 1 else Columns("", Columns.RUN, [v for c in runs for v in c.values])
    )
    (ids, parents, names, consumers, ended, durations, sizes, reasons, efficiency,
     succeeded, failed, tenants, tries, published, retried) = map(
        whole.column, range(Columns.RUN)
    )  # fmt: skip
    flows = [flow for c in runs for flow in [c.flow] * len(c)]
    tenants = [t if t is None or type(t) is str else str(t) for t in tenants]
    extras = list(map(_run_extras, tries, published, retried))
    columns = [
        ids,
        parents,
        flows,
        names,
        consumers,
        ended,
        durations,
        sizes,
        reasons,
        efficiency,
        succeeded,
        failed,
        [None] * len(ids),
        [None] * len(ids),
        tenants,
        extras,
    ]  # fmt: skip  (in _span_schema's order: batch_size ... tenant, attributes)
    schema = _span_schema(pa)
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )


def _flows(pa: Any, columns: list[Columns]) -> Any:
    """The flow column of ``columns`` (one flow's or a few): dictionary-encoded, each
    name once (a repeated string cost DuckDB's insert ~0.1 us per row)."""
    names = list(dict.fromkeys(c.flow for c in columns))
    if len(names) == 1:  # all zeros: a zeroed buffer, no list
        count = _count(columns)
        indices = pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(bytes(4 * count))])
    else:
        index = {name: i for i, name in enumerate(names)}
        indices = pa.array([index[c.flow] for c in columns for _ in range(len(c))], pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string()))


@functools.lru_cache(maxsize=4096)
def _run_extras(tries: int | None, published: int | None, retried: int | None) -> str:
    """A handler span's other attributes as JSON (``{}`` for a flush span's)."""
    extras = {"tries": tries, "published": published, "retried": retried}
    return _json({k: v for k, v in extras.items() if v is not None})


def _publish_table(pa: Any, publishes: list[Columns]) -> Any:
    """Publish spans as one table in ``publish_spans``' column order (``started_at``
    as epoch seconds: the insert makes it a timestamp)."""
    if len(publishes) == 1:
        whole = publishes[0]
    else:
        whole = Columns("", Columns.PUBLISH, [v for c in publishes for v in c.values])
    ids, types, producers, started, tenants, depths, consumers = map(
        whole.column, range(Columns.PUBLISH)
    )
    return pa.table({
        "flow": _flows(pa, publishes),
        "span_id": pa.array(ids, pa.string()),
        "artifact_type": pa.array(types, pa.string()),
        "consumer": pa.array(producers, pa.string()),
        "started": pa.array(started, pa.float64()),
        "tenant": pa.array(tenants, pa.string()),
        "depth": pa.array(depths, pa.int32()),
        "consumers": pa.array(consumers, pa.int32()),
    })  # fmt: skip


class _Session:
    """The process's in-memory DuckDB that trace files are attached to, one at a time,
    and the files it has made the tables of."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prepared: set[str] = set()
        self._db: Any = None

    def connection(self) -> Any:
        if self._db is None:
            import duckdb  # noqa: PLC0415 (extra freight[trace])

            # A checkpoint threshold this low makes each write's commit a checkpoint:
            # its rows go to the file once, not to the WAL and then again at the
            # detach's checkpoint (measured: a write of the guide's 20,000 payments,
            # ~22,000 spans, 1.73 -> 1.37 us per transaction, interleaved runs). Safe
            # against a crash: a checkpoint switches the file's header last, so one
            # killed mid-write loses that write's spans, never the file.
            self._db = duckdb.connect(
                ":memory:", config={"threads": 1, "checkpoint_threshold": "1KB"}
            )
        return self._db


_SESSION = _Session()


def _text(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _extras(attributes: Mapping[str, Any], misfits: dict[str, Any] | None = None) -> str:
    """The JSON of the attributes without a column of their own (``None`` left out),
    and of ``misfits`` (values their number column cannot hold)."""
    extras = tuple(
        (k, type(v), v) for k, v in attributes.items() if k not in _NOT_EXTRA and v is not None
    )
    if misfits:
        extras += tuple((k, type(v), v) for k, v in misfits.items())
    try:
        return _extras_json(extras)
    except TypeError:  # an unhashable value
        return _json({k: v for k, _, v in extras})


@functools.lru_cache(maxsize=4096)
def _extras_json(extras: tuple[tuple[str, type, Any], ...]) -> str:
    """The JSON of ``extras`` (few distinct ones, a handler span's counts: made once;
    the key holds each value's type: 1, 1.0 and True are equal keys, not equal JSON)."""
    return _json({k: v for k, _, v in extras})


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
