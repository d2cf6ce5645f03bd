"""Spans: every flush, handler run, publish and dead letter of a flow, to subscribers.

A subscriber is any callable taking a :class:`Span`. Two ship with freight:

- :class:`DuckDBTracer` writes spans to a DuckDB file (extra ``freight[trace]``,
  ``.freight/traces.duckdb``, table ``spans``), so a question such as "which batches
  flushed by timeout last hour and how full were they" is one SQL query.
- :class:`OpenTelemetryTracer` hands them to OpenTelemetry (extra ``freight[otel]``),
  for whatever exporter the application configured.

How the DuckDB tracer stays cheap (a flow traces by default, so its cost is every
flow's): recording a span appends one tuple to a deque, nothing else, on the event
loop. A writer thread takes what the deque holds every ``buffer`` spans or
``interval`` seconds and inserts it with one statement (an Arrow table scanned by
DuckDB, or DuckDB's appender without pyarrow): timestamps, the JSON of the extra
attributes and the column values are made there, never per publish. Measured on the
development machine (2 shared cores): a span written row by row (``executemany``, as
before) cost ~2 ms; queuing one costs ~0.5 µs, and writing it in bulk ~2.5-5 µs of
CPU, most of it DuckDB's insert (which releases the GIL).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import threading
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

PublishRow = tuple[str, str, str, str | None, datetime, str | None, int, int]
"""A publish span as the DuckDB tracer queues it, taken from the envelope: ``(flow,
artifact id (the span's id), type, producer, published_at, tenant, depth, consumers
that took it)``. One per artifact: the bulk of a flow's spans, so the narrowest."""

_FIELDS = frozenset({"consumer", "duration"})  # columns of their own, also in the attributes
_KEEP = 200_000  # spans held at most: queued, or kept by a failed write for the next one

_NAMES = (
    "batch_size",
    "flush_reason",
    "efficiency",
    "succeeded",
    "failed",
    "artifact_type",
    "reason",
    "tenant",
)
_NOT_EXTRA = _FIELDS | frozenset(_NAMES)

# No primary key: span ids are unique by construction (a random prefix per flow and a
# counter), and the key's index cost a quarter of each insert. Files written by earlier
# versions keep theirs; the columns are the same.
_DDL = """
CREATE TABLE IF NOT EXISTS spans (
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
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError("DuckDBTracer needs duckdb: pip install 'freight[trace]'") from exc
        self._writer = _Writer(
            Path(path), max(1, buffer), max(0.01, float(interval)), max(buffer, max_spans)
        )
        self.record = self._writer.record
        self.record_publish = self._writer.record_publish
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
        return bool(writer.queue or writer.publishes or writer.kept or writer.kept_publishes)

    def idle(self) -> None:
        """The flow went idle: write what is queued, if anything."""
        if self.due():
            self._writer.write()

    def close(self) -> None:
        """Stop the writer thread and write what is queued."""
        self._writer.stop()


class _Writer:
    """The queue of one DuckDB tracer and the thread that empties it (module note)."""

    def __init__(self, path: Path, buffer: int, interval: float, max_spans: int) -> None:
        self.path = path
        self.buffer = buffer
        self.interval = interval
        self.max_spans = max_spans
        self.queue: deque[SpanRow] = deque()  # appended by callers, emptied by writes
        self.publishes: deque[PublishRow] = deque()
        self.kept: list[SpanRow] = []  # what a failed write could not write
        self.kept_publishes: list[PublishRow] = []
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
        if len(queue) >= self.buffer or self.thread is None:
            self._kick()

    def record_publish(self, row: PublishRow) -> None:
        """Queue one publish span (the hottest path: one per artifact)."""
        publishes = self.publishes
        publishes.append(row)
        if len(publishes) >= self.buffer or self.thread is None:
            self._kick()

    def _queued(self) -> int:
        return len(self.queue) + len(self.publishes)

    def _kick(self) -> None:
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
        with contextlib.suppress(ImportError):
            import pyarrow  # noqa: F401, PLC0415 (optional: the appender path works without)
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
        kind of row."""
        with self.writing:
            rows, self.kept = self.kept + _take(self.queue), []
            publishes, self.kept_publishes = self.kept_publishes + _take(self.publishes), []
            if not rows and not publishes:
                return
            try:
                _insert(self.path, rows, publishes)
            except BaseException:
                dropped = len(rows) + len(publishes) - self.max_spans
                if dropped > 0:
                    _log.warning(
                        "DuckDBTracer(%r): dropped the %d oldest spans it could not write",
                        str(self.path), dropped,
                    )  # fmt: skip
                self.kept = rows[-self.max_spans :]
                room = self.max_spans - len(self.kept)  # the newest publishes, if room is left
                self.kept_publishes = publishes[len(publishes) - room :] if room > 0 else []
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


def _insert(path: Path, rows: list[SpanRow], publishes: list[PublishRow]) -> None:
    """Insert ``rows`` into ``path``'s ``spans`` table, in one statement.

    The file is attached to one in-memory DuckDB of this process for the write and
    detached after it (so other processes can open it between writes): a database of
    its own per write cost ~20 ms of CPU to make, an attach ~1 ms."""
    import duckdb  # noqa: PLC0415 (extra freight[trace])

    path.parent.mkdir(parents=True, exist_ok=True)
    with _SESSION.lock:
        db = _SESSION.connection()
        db.execute(f"ATTACH {_text(str(path))} AS freight_traces")
        try:
            db.execute("USE freight_traces")
            db.execute(_DDL)
            if rows:
                _append(db, rows, duckdb.Error)
            if publishes:
                _append_publishes(db, publishes)
        finally:
            db.execute("USE memory")
            db.execute("DETACH freight_traces")


def _append(db: Any, rows: list[SpanRow], error: type[Exception]) -> None:
    arrow = _arrow(rows)
    if arrow is not None:
        table, statement = arrow
        db.register("freight_span_batch", table)
        try:
            db.execute(statement)
            return
        except error:  # a value DuckDB cannot cast to its column: the slow path below
            pass
        finally:
            db.unregister("freight_span_batch")
    with db.appender("spans") if hasattr(db, "appender") else _Many(db) as appender:
        appender.append_rows([_values(row) for row in rows])


class _Session:
    """The process's in-memory DuckDB that trace files are attached to, one at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._db: Any = None

    def connection(self) -> Any:
        if self._db is None:
            import duckdb  # noqa: PLC0415 (extra freight[trace])

            self._db = duckdb.connect(":memory:", config={"threads": 1})
        return self._db


_SESSION = _Session()


def _append_publishes(db: Any, rows: list[PublishRow]) -> None:
    try:
        import pyarrow as pa  # noqa: PLC0415 (optional: the appender path works without it)
    except ImportError:  # pragma: no cover - pyarrow is in the dev extras
        table = None
    else:
        flows, ids, types, producers, published, tenants, depths, consumers = zip(
            *rows, strict=True
        )
        table = pa.table({
            "flow": pa.array(flows, pa.string()),
            "id": pa.array(ids, pa.string()),
            "type": pa.array(types, pa.string()),
            "producer": pa.array(producers, pa.string()),
            "published_at": pa.array(published, pa.timestamp("us", tz="UTC")),
            "tenant": pa.array(tenants, pa.string()),
            "attributes": pa.array(list(map(_publish_json, consumers, depths)), pa.string()),
        })  # fmt: skip
    if table is None:  # pragma: no cover - pyarrow is in the dev extras
        _append(db, [_publish_span(row) for row in rows], Exception)
        return
    db.register("freight_publish_batch", table)
    try:
        db.execute(_INSERT_PUBLISHES)
    finally:
        db.unregister("freight_publish_batch")


def _publish_span(row: PublishRow) -> SpanRow:
    flow, span_id, kind, producer, published_at, tenant, depth, consumers = row
    attributes = {"artifact_type": kind, "consumers": consumers, "tenant": tenant, "depth": depth}
    return (span_id, None, flow, "publish", producer, published_at.timestamp(), 0.0, attributes)


_INSERT_PUBLISHES = """
INSERT INTO spans SELECT id, NULL, flow, 'publish', 'publish', producer, published_at,
    published_at, 0.0, NULL, NULL, NULL, NULL, NULL, type, NULL, tenant, attributes
FROM freight_publish_batch
"""


@functools.lru_cache(maxsize=1024)
def _publish_json(consumers: int, depth: int) -> str:
    """A publish span's other attributes (few distinct values: made once each; the
    same JSON text as the other spans')."""
    return _json({"consumers": consumers, "depth": depth})


def _arrow(rows: list[SpanRow]) -> tuple[Any, str] | None:
    """``rows`` as an Arrow table and the statement inserting it; ``None`` without
    pyarrow, or when an attribute holds values of several kinds (numbers and text).

    The attributes become one struct column (pyarrow types the union of their keys in
    C); the statement picks the columns out of it and writes the JSON of the others,
    ``None`` left out, in SQL: no Python work per span beyond the tuple."""
    try:
        import pyarrow as pa  # noqa: PLC0415 (optional: the appender path works without it)
    except ImportError:  # pragma: no cover - pyarrow is in the dev extras
        return None
    ids, parents, flows, names, consumers, ended, durations, attributes = zip(*rows, strict=True)
    try:
        struct = pa.array(attributes) if any(attributes) else None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    columns: dict[str, Any] = {
        "span_id": pa.array(ids, pa.string()),
        "parent_id": pa.array(parents, pa.string()),
        "flow": pa.array(flows, pa.string()),
        "name": pa.array(names, pa.string()),
        "consumer": pa.array(consumers, pa.string()),
        "ended": pa.array(ended, pa.float64()),
        "duration": pa.array(durations, pa.float64()),
    }
    keys: list[str] = []
    if struct is not None:
        columns["a"] = struct
        keys = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    return pa.table(columns), _statement(tuple(keys))


@functools.lru_cache(maxsize=64)
def _statement(keys: tuple[str, ...]) -> str:
    """The insert of a batch whose attribute struct has ``keys``."""
    picked = [f"a.{_ident(n)}" if n in keys else "NULL" for n in _NAMES]
    extras = [
        f"CASE WHEN a.{_ident(k)} IS NULL THEN NULL"
        f" ELSE {_text(json.dumps(k) + ': ')} || to_json(a.{_ident(k)}) END"
        for k in keys
        if k not in _NOT_EXTRA
    ]
    attributes = f"'{{' || concat_ws(', ', {', '.join(extras)}) || '}}'" if extras else "'{}'"
    # The keys are quoted (_ident, _text); the values stay in the registered table.
    insert = "INSERT INTO spans SELECT span_id, parent_id, flow, name, name, consumer,"
    return (
        f"{insert} to_timestamp(ended - duration), to_timestamp(ended), duration,"
        f" {', '.join(picked)}, {attributes} FROM freight_span_batch"
    )


def _ident(name: str) -> str:
    """A quoted SQL identifier (an attribute's key)."""
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _extras(attributes: Mapping[str, Any]) -> str:
    return _json({k: v for k, v in attributes.items() if k not in _NOT_EXTRA and v is not None})


def _values(row: SpanRow) -> tuple[Any, ...]:
    """One row of the table, in its column order (the appender's path)."""
    span_id, parent_id, flow, name, consumer, ended, duration, attributes = row
    texts = {"flush_reason", "artifact_type", "reason", "tenant"}
    return (
        span_id, parent_id, flow, name, name, consumer,
        datetime.fromtimestamp(ended - duration, UTC), datetime.fromtimestamp(ended, UTC),
        duration,
        *(
            None if (v := attributes.get(c)) is None else str(v) if c in texts else v
            for c in _NAMES
        ),
        _extras(attributes),
    )  # fmt: skip


class _Many:
    """DuckDB's ``executemany`` as an appender, for duckdb versions without one."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def __enter__(self) -> _Many:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def append_rows(self, rows: list[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(rows[0]))
        self._db.executemany(f"INSERT INTO spans VALUES ({marks})", rows)  # noqa: S608


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
