"""The DuckDB trace file: its tables, and spans made into Arrow tables and inserted.

The write layer of :class:`~freight.flow._trace.DuckDBTracer` (split out of
``_trace.py``, whose module note says how the tracer stays cheap). Its rules:

- Nothing here runs on the event loop: these functions run in the tracer's writer
  thread (or a flow's worker thread at idle and close), one write at a time per
  process (``_SESSION.lock``).
- A write is one statement per table in one transaction, in one call: the tables
  ``span_rows`` and ``publish_runs`` under the view ``spans`` users query (see
  ``_SPAN_ROWS``).
- ``duckdb`` and ``pyarrow`` (extra ``freight[trace]``) are imported inside the
  functions, never at module import.
- This module imports nothing from ``_trace.py`` (which imports it): no cycle.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SpanRow = tuple[str, str | None, str, str, str | None, float, float, Mapping[str, Any]]
"""A span as the DuckDB tracer queues it: ``(id, parent_id, flow, name, consumer,
ended (UTC epoch seconds), duration, attributes)``; ``None`` attributes are skipped
when it is written."""

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

# The table ``spans`` users query is a view over ``span_rows`` (flush, handler and
# dead-letter spans, every column) and ``publish_runs`` (runs of publish spans, below;
# ``publish_spans``, a row per publish span, holds what earlier files have). No primary
# keys: span ids are unique by construction (a random prefix per flow and a counter),
# and a key's index cost a quarter of each insert. A file written before the view
# existed has ``spans`` as its wide table: it is renamed ``span_rows`` (its rows, and a
# primary key it may have, kept).
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
# Publish spans as runs (see ``PublishRuns``): one row per run of consecutive publishes
# of one flow that share their type, producer, tenant, depth and consumer count and
# whose span ids count up by one: ``id_prefix || hex(first_no)``, then the next
# numbers (``first_no`` NULL: a run of one whose id is ``id_prefix``); ``started`` holds
# each span's start on the flow's clock, in order, and ``clock_offset`` what makes them
# UTC epoch seconds (the wall clock minus the flow's when the run began; added by the
# view, not by the insert: ~1 ms less a write). A write of the guide's payments flow
# (20,000 transactions) costs DuckDB about a third of one row per span (whose string
# columns each cost its checkpoint ~0.1 us per row, even constant or NULL ones).
# ``publish_spans`` (one row per span) holds what files written before the runs had.
_PUBLISH_RUNS = """
CREATE TABLE IF NOT EXISTS publish_runs (
    flow VARCHAR NOT NULL,
    id_prefix VARCHAR NOT NULL,
    first_no BIGINT,
    artifact_type VARCHAR NOT NULL,
    consumer VARCHAR,
    tenant VARCHAR,
    depth INTEGER NOT NULL,
    consumers INTEGER NOT NULL,
    clock_offset DOUBLE NOT NULL,
    started DOUBLE[] NOT NULL
)
"""
# A publish span's attributes column: the same JSON text the wide table holds.
_PUBLISH_ATTRIBUTES = (
    """CAST('{"consumers": ' || consumers || ', "depth": ' || depth || '}' AS JSON)"""
)
_SPANS_VIEW = f"""
CREATE OR REPLACE VIEW spans AS
SELECT span_id, parent_id, flow, name, kind, consumer, started_at, ended_at, duration,
    batch_size, flush_reason, efficiency, succeeded, failed, artifact_type, reason, tenant,
    attributes
FROM span_rows
UNION ALL
SELECT span_id, NULL, flow, 'publish', 'publish', consumer, started_at, started_at,
    CAST(0 AS DOUBLE), NULL, NULL, NULL, NULL, NULL, artifact_type, NULL, tenant,
    {_PUBLISH_ATTRIBUTES}
FROM publish_spans
UNION ALL
SELECT CASE WHEN first_no IS NULL THEN id_prefix
            ELSE id_prefix || format('{{:x}}', first_no + number - 1) END,
    NULL, flow, 'publish', 'publish', consumer, to_timestamp(clock_offset + start),
    to_timestamp(clock_offset + start),
    CAST(0 AS DOUBLE), NULL, NULL, NULL, NULL, NULL, artifact_type, NULL, tenant,
    {_PUBLISH_ATTRIBUTES}
FROM (SELECT *, unnest(started) AS start, generate_subscripts(started, 1) AS number
      FROM publish_runs)
"""  # noqa: S608 (constant parts only)
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


class Columns:
    """Flush and handler spans of one flow in columns: one flat list, ``RUN`` values per
    span.

    The spans of handler runs (a flush and a handler span per batch) are recorded this
    way: a span's values appended to one list, nothing else (an object per span that
    the tracer holds until the write, a tuple or the envelope itself, doubled the
    garbage collector's young collections; a dict of attributes per span cost a few
    microseconds to make and as many to take apart). A write takes each column with
    one slice (``values[k::width]``).

    ``RUN`` values: ``span_id``, ``parent_id``, ``name``, ``consumer``, the end (UTC epoch
    seconds), ``duration``, ``batch_size``, ``flush_reason``, ``efficiency``,
    ``succeeded``, ``failed``, ``tenant``, and the handler's ``tries``, ``published`` and
    ``retried`` (``None`` where they do not apply).
    """

    __slots__ = ("flow", "values", "width")

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


Run = tuple[str, int | None, str, str | None, str | None, int, int, float, int]
"""A run of publish spans: ``(id_prefix, first_no, artifact_type, producer, tenant,
depth, consumers, offset, count)``; its spans' ids are ``id_prefix`` followed by
``first_no``, ``first_no + 1``… in lowercase hex (``first_no`` ``None``: one span, id
``id_prefix``); ``offset`` turns its starts (the flow's clock) into UTC epoch seconds."""


class PublishRuns:
    """Publish spans of one flow (one per artifact, most of a flow's spans) as runs.

    The flow records a publish span as its start appended to one list, after a marker
    when it opens a run (``_Queues.publish``): consecutive artifacts of one type,
    producer, tenant, depth and consumer count, whose ids count up by one (an artifact's
    id is its flow's prefix and a counter), make one run, one row of ``publish_runs``.
    ``runs`` (:data:`Run`) and ``starts`` (the envelopes' ``created_at`` on the flow's
    clock, in the runs' order; each run's offset makes them UTC) are what a write took.
    """

    __slots__ = ("flow", "runs", "starts")

    def __init__(self, flow: str, runs: list[Run], starts: list[float]) -> None:
        self.flow = flow
        self.runs = runs
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def tail(self, count: int) -> PublishRuns:
        """Its newest ``count`` spans (the oldest run kept loses its first spans)."""
        kept: list[Run] = []
        left = count
        for run in reversed(self.runs):
            if left <= 0:
                break
            size = run[-1]
            if size > left:  # the oldest run kept: its newest ``left`` spans
                prefix, first, *key, _ = run
                first = None if first is None else first + size - left
                kept.append((prefix, first, *key, left))  # type: ignore[arg-type]
            else:
                kept.append(run)
            left -= size
        kept.reverse()
        starts = self.starts[len(self.starts) - count :] if count else []
        return PublishRuns(self.flow, kept, starts)


Spans = Columns | PublishRuns
"""Spans a write takes from a flow's queues besides the other spans' rows."""

PublishRow = PublishRuns  # the name this had when publish spans were one row each


def _count(columns: Sequence[Spans]) -> int:
    """The spans in ``columns``."""
    return sum(map(len, columns))


def _insert(path: Path, rows: list[SpanRow], columns: Sequence[Spans]) -> None:
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
            # a checkpoint (the insert's or the detach's) merges small row groups, or not
            _SESSION.vacuum(db, spans < _OWN_ROW_GROUPS)
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
            db.execute("DETACH freight_traces")


def _prepare(db: Any) -> None:
    """Make the tables and the view ``spans`` if the file lacks them (a file written
    before the view: its table ``spans`` becomes ``span_rows``)."""
    db.execute("USE freight_traces")  # the view's tables: the file's, unqualified
    try:
        if db.execute(_LEGACY).fetchone() is not None:
            db.execute("ALTER TABLE spans RENAME TO span_rows")
        db.execute(_SPAN_ROWS)
        db.execute(_PUBLISH_SPANS)
        db.execute(_PUBLISH_RUNS)
        db.execute(_SPANS_VIEW)
    finally:
        db.execute("USE memory")


_Tables = tuple[Any, Any]  # Arrow tables for span_rows and publish_runs (or None)


def _append(db: Any, tables: _Tables) -> None:
    """Insert the tables in one transaction, in one call (a commit of the file costs
    ~1.5 ms of CPU: one per write, not one per table; a call ~0.1 ms).

    DuckDB finds each Arrow table by the name of the local variable holding it (its
    replacement scan: ~0.4 ms less per table than ``register`` and ``unregister``)."""
    freight_span_batch, freight_publish_batch = tables  # the names the statements read
    statements = [
        statement
        for statement, table in (
            (_INSERT_SPAN_ROWS, freight_span_batch),
            (_INSERT_PUBLISH_RUNS, freight_publish_batch),
        )
        if table is not None
    ]
    if not statements:
        return
    try:
        db.execute(f"BEGIN; {'; '.join(statements)}; COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # none open if BEGIN itself failed
            db.execute("ROLLBACK")
        raise


def _tables(rows: list[SpanRow], columns: Sequence[Spans]) -> _Tables:
    """``rows`` and ``columns`` as Arrow tables (made before the file is attached: the
    columns are Python's work, the insert DuckDB's): one of the spans for
    ``span_rows``, one of the runs of publish spans for ``publish_runs`` (``None``
    where there is none)."""
    import pyarrow as pa  # noqa: PLC0415 (extra freight[trace])

    runs = [c for c in columns if isinstance(c, Columns)]
    parts = ([_span_table(pa, rows)] if rows else []) + ([_run_table(pa, runs)] if runs else [])
    spans = (parts[0] if len(parts) == 1 else pa.concat_tables(parts)) if parts else None
    publishes = [c for c in columns if isinstance(c, PublishRuns) and c.runs]
    return spans, _publish_table(pa, publishes) if publishes else None


_INSERT_SPAN_ROWS = (
    "INSERT INTO freight_traces.span_rows SELECT span_id, parent_id, flow, name, name, consumer,"  # noqa: S608 (constant names)
    " to_timestamp(ended - duration), to_timestamp(ended), duration,"
    f" {', '.join(_COLUMNS)}, attributes FROM freight_span_batch"
)
_INSERT_PUBLISH_RUNS = "INSERT INTO freight_traces.publish_runs SELECT * FROM freight_publish_batch"


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


def _flows(pa: Any, runs: list[PublishRuns]) -> Any:
    """The flow column of ``runs`` (one flow's or a few): dictionary-encoded, each name
    once (a repeated string cost DuckDB's insert ~0.1 us per row)."""
    names = list(dict.fromkeys(c.flow for c in runs))
    index = {name: i for i, name in enumerate(names)}
    indices = pa.array([index[c.flow] for c in runs for _ in c.runs], pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string()))


@functools.lru_cache(maxsize=4096)
def _run_extras(tries: int | None, published: int | None, retried: int | None) -> str:
    """A handler span's other attributes as JSON (``{}`` for a flush span's)."""
    extras = {"tries": tries, "published": published, "retried": retried}
    return _json({k: v for k, v in extras.items() if v is not None})


def _publish_table(pa: Any, publishes: list[PublishRuns]) -> Any:
    """Runs of publish spans as one table in ``publish_runs``' column order."""
    runs = publishes[0].runs if len(publishes) == 1 else [r for c in publishes for r in c.runs]
    starts = (
        publishes[0].starts if len(publishes) == 1 else [s for c in publishes for s in c.starts]
    )
    prefixes, numbers, types, producers, tenants, depths, consumers, offsets, counts = zip(
        *runs, strict=True
    )
    ends = [0, *itertools.accumulate(counts)]
    return pa.table({
        "flow": _flows(pa, publishes),
        "id_prefix": pa.array(prefixes, pa.string()),
        "first_no": pa.array(numbers, pa.int64()),
        "artifact_type": pa.array(types, pa.string()),
        "consumer": pa.array(producers, pa.string()),
        "tenant": pa.array(tenants, pa.string()),
        "depth": pa.array(depths, pa.int32()),
        "consumers": pa.array(consumers, pa.int32()),
        "clock_offset": pa.array(offsets, pa.float64()),
        "started": pa.ListArray.from_arrays(
            pa.array(ends, pa.int32()), pa.array(starts, pa.float64())
        ),
    })  # fmt: skip


class _Session:
    """The process's in-memory DuckDB that trace files are attached to, one at a time,
    and the files it has made the tables of."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prepared: set[str] = set()
        self._db: Any = None
        self._vacuum: bool | None = None  # DuckDB's default: True

    def vacuum(self, db: Any, merge: bool) -> None:
        """Let checkpoints merge small row groups, or not (set only when it changes)."""
        if merge is not self._vacuum:
            db.execute("RESET max_vacuum_tasks" if merge else "SET max_vacuum_tasks = 0")
            self._vacuum = merge

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
