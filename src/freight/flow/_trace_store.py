"""The DuckDB trace file: its tables, and spans made into Arrow tables and inserted.

The write layer of :class:`~freight.flow._trace.DuckDBTracer` (split out of
``_trace.py``, whose module note says how the tracer stays cheap). Its rules:

- Nothing here runs on the event loop: these functions run in the tracer's writer
  thread (or a flow's worker thread at idle and close), one write at a time per
  process (``_SESSION.lock``).
- A write is one statement per table in one transaction: the tables ``span_rows`` and
  ``publish_spans`` under the view ``spans`` users query (see ``_SPAN_ROWS``).
- ``duckdb`` and ``pyarrow`` (extra ``freight[trace]``) are imported inside the
  functions, never at module import.
- This module imports nothing from ``_trace.py`` (which imports it): no cycle.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping
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


def _count(columns: list[Columns]) -> int:
    """The spans in ``columns``."""
    return sum(map(len, columns))


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
