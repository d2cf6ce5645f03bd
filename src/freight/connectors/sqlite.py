"""``SqliteSink``: insert or upsert job items (mappings) into a SQLite table (stdlib only).

Identifiers (table and column names) are quoted, whatever characters they hold;
values are always bound parameters, never formatted into SQL. One transaction per
write call: a failing call rolls back, and the bad rows are isolated by bisection.
Errors are mapped to freight's classes in one place, :func:`classify`.

**Typed tables.** ``freight load`` infers PostgreSQL column types
(:func:`freight.connectors.pgtypes.infer_types`); a SQLite target gets the same types
(:func:`create_table`, ``SqliteSink(types=…)``), declared so that SQLite's own column
affinity keeps every value as it was converted (the mapping and the value checks live
in ``freight.connectors._sqltypes``):

============================  ===============  ==========================================
freight type                  declared as      stored
============================  ===============  ==========================================
bigint (integer, smallint)    ``BIGINT``       INTEGER (``BIGINT``, not ``INTEGER``: a
                                               lone ``INTEGER PRIMARY KEY`` would be the
                                               rowid, and NULL would become a new id)
numeric                       ``NUMERIC``      INTEGER or REAL, exactly (see below)
double precision, real        ``REAL``         REAL
boolean                       ``BOOLEAN``      INTEGER 0/1
timestamptz                   ``TIMESTAMPTZ``  TEXT, ISO 8601 with its UTC offset
date                          ``DATE``         TEXT, ISO 8601
text, jsonb, json             ``TEXT``         TEXT
============================  ===============  ==========================================

**Nothing is altered silently.** What SQLite would change on the way in is refused,
so the row is dead-lettered with the reason instead: ``NaN`` (SQLite stores it as
NULL), a NUL byte in text (PostgreSQL refuses it, and the targets must agree), an
integer beyond 64 bits, and a ``numeric`` with more significant digits than a REAL
keeps (SQLite's ``NUMERIC`` affinity would round ``12345678901234567.89``).

**Locks.** A database another connection holds is waited for (``busy_timeout``); past
that it is a :class:`~freight.TransientError`, retried by the job's ``Retry`` and never
a dead letter of a row. The target keeps its journal mode (rollback journal or WAL);
only a database the sink creates is made WAL.

**Layout.** The sinks live here; the layer under them (:func:`classify`, identifiers,
URLs, connections, table checks and creation) is ``freight.connectors._sqlitetables``,
which never imports this module; its public names are exported from here. How a
``format="csv"`` sink reads CSV record texts is ``freight.connectors._sqlitecsv``.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from freight._core._time import to_seconds
from freight._errors import ConfigError, PermanentError, TargetError
from freight.connectors import pgtypes
from freight.connectors._isolate import isolate, unsendable
from freight.connectors._sqlitecsv import CsvTexts, csv_kinds
from freight.connectors._sqlitetables import (
    SQLITE_MAX_COLUMN,
    _check_columns,
    _check_table,
    _connect,
    _create,
    _declared_types,
    _file,
    _target_error,
    classify,
    create_table,
    quote_identifier,
    sqlite_path,
    table_types,
)
from freight.connectors._sqltypes import (
    DDL_TYPES,
    TYPED_BINDERS,
    Binder,
    bind_column,
    canonical_types,
    declared_type,
)
from freight.connectors._sqltypes import bind as _bind

__all__ = [
    "SQLITE_MAX_COLUMN",
    "AsyncSqliteSink",
    "SqliteSink",
    "classify",
    "create_table",
    "quote_identifier",
    "sqlite_path",
    "table_types",
]


# -- the sinks -------------------------------------------------------------------------------


class SqliteSink:
    """Write mappings into ``table`` of the SQLite file at ``path``.

    Args:
        path: the database file (or a ``sqlite:///`` URL).
        table: the table, taken literally (quoted); created if missing. A name SQLite
            reserves (``sqlite_…``) or an empty one is a :class:`~freight.ConfigError`.
        key: column(s) identifying a row; with ``mode="upsert"`` (the default when
            a key is given) a row with the same key is updated (the last one written
            wins), which makes a replayed chunk harmless: exactly-once in effect.
            Only the columns an item carries are set: an item (a file) with fewer
            columns than the table leaves the others of an existing row as they are,
            and a new row gets their defaults (never a silent NULL).
        mode: ``"insert"`` or ``"upsert"``.
        types: freight's (PostgreSQL) type of each column, as
            :func:`~freight.connectors.pgtypes.infer_types` gives them. A missing table
            is created with them (:func:`create_table`) when the sink is made, and each
            item is converted with :func:`~freight.connectors.pgtypes.converter`: a value
            that does not fit its column fails that row alone (a dead letter with the
            reason), as on PostgreSQL. Without ``types``, values are written as they are
            and a missing table takes the columns and types of the first item.
        busy_timeout: seconds a write waits for another connection's transaction
            before it fails with a :class:`~freight.TransientError` (retried by the job).
        format: ``"rows"`` (mappings) or ``"csv"``: items are CSV record texts, each
            ending in ``\\n`` (``CsvSource(raw=True)``), of the columns ``columns``, in
            ``delimiter`` and ``quotechar``; needs ``types``. Each write takes its texts
            a whole column at a time when they are plain (no quote, no empty field,
            each value in its type's plain form: split in C, no dict per row), and
            reads them as ``CsvSource`` reads a record otherwise (the same rows, the
            same dead letters, as a load of the file's mappings). This is the fast path
            of ``freight load`` into SQLite.
        columns: the columns of a ``"csv"`` item, in order (the file's header).
        lines_checked: each ``"csv"`` item is known to be one line of ``columns`` (as
            ``CsvSource(raw=True)`` hands a plain line over, having counted its fields):
            the whole-column path skips its own check of that (~0.14 s a million rows).
            Texts that are not would be split into the wrong rows.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        mode: Literal["insert", "upsert"] | None = None,
        types: Mapping[str, str] | None = None,
        busy_timeout: float = 30.0,
        format: Literal["rows", "csv"] = "rows",
        columns: Sequence[str] | None = None,
        delimiter: str = ",",
        quotechar: str = '"',
        lines_checked: bool = False,
    ) -> None:
        self.path = _file(path)
        if format not in ("rows", "csv"):
            raise ConfigError(f"format must be 'rows' or 'csv', got {format!r}")
        if format == "csv" and (types is None or not columns):
            raise ConfigError("format='csv' needs types= and columns= (the file's header)")
        if len(delimiter) != 1 or len(quotechar) != 1 or delimiter == quotechar:
            raise ConfigError(
                f"delimiter and quotechar must be two different characters, got "
                f"{delimiter!r} and {quotechar!r}"
            )
        self.format = format
        self.csv_columns = list(columns or [])
        self.lines_checked = lines_checked
        self.delimiter, self.quotechar = delimiter, quotechar
        _check_table(table)
        self.table = table
        self._table = quote_identifier(table)
        self.key = [key] if isinstance(key, str) else list(key or [])
        for column in self.key:
            quote_identifier(column)
        mode = mode or ("upsert" if self.key else "insert")
        if mode not in ("insert", "upsert"):
            raise ConfigError(f"mode must be 'insert' or 'upsert', got {mode!r}")
        if mode == "upsert" and not self.key:
            raise ConfigError("mode='upsert' needs key= (the column(s) that identify a row)")
        self.mode = mode
        self.types = None if types is None else canonical_types(types)
        if self.types is not None:
            _check_columns(table, list(self.types), self.key)
            unknown = [c for c in self.csv_columns if c not in self.types]
            if unknown:
                raise ConfigError(f"columns= names column(s) {unknown} that types= lacks")
        self.busy_timeout = to_seconds(busy_timeout, "busy_timeout")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        if self.types is not None:
            self._typed_table(self.types)

    def _open(self) -> None:
        self._db = _connect(self.path, self.busy_timeout)
        self._lock = threading.Lock()
        self._convert: Callable[[Mapping[str, Any]], dict[str, Any]] | None = (
            None if self.types is None else pgtypes.converter(self.types)
        )
        self._statements: dict[tuple[str, ...], str] = {}
        self._columns: list[str] | None = None
        self._binders: _Binders | None = None
        self._fast: list[tuple[str, Callable[[Any], Any]]] | None = None
        self._csv: CsvTexts | None = None
        declared = _declared_types(self._db, self.table)
        if declared is not None:
            self._columns = list(declared)
            self._fast = self._fast_columns(declared)
            self._csv = self._csv_texts(declared)

    def _typed_table(self, types: dict[str, str]) -> None:
        """Create the table with ``types`` if missing; else check that it has their columns."""
        if self._columns is None:
            declared = {c: DDL_TYPES[k] for c, k in types.items()}
            _create(self._db, self.table, declared, self.key)
            self._columns = list(types)
            self._fast = self._fast_columns(declared)
            self._csv = self._csv_texts(declared)
            return
        missing = [c for c in types if c not in self._columns]
        if missing:
            raise ConfigError(
                f"types= names column(s) {missing} that table {self.table!r} lacks "
                f"(its columns: {self._columns})"
            )

    def __repr__(self) -> str:
        return f"SqliteSink({str(self.path)!r}, {self.table!r}, key={self.key!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): the connection is reopened on arrival."""
        state = self.__dict__.copy()
        for name in (
            "_db", "_lock", "_convert", "_statements", "_columns", "_binders", "_fast",
            "_csv",
        ):  # fmt: skip
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def _fast_columns(
        self, declared: Mapping[str, str]
    ) -> list[tuple[str, Callable[[Any], Any]]] | None:
        """Each column's freight type and value getter, when whole columns may be bound at
        once (:meth:`_fast_rows`): every column of the table is typed and declared as
        freight declares its type (the affinity :func:`bind_column` counts on)."""
        types = self.types
        if types is None or set(types) != set(declared):
            return None
        if any(" ".join(declared[c].upper().split()) != DDL_TYPES[k] for c, k in types.items()):
            return None
        return [(types[c], operator.itemgetter(c)) for c in declared]

    def _csv_texts(self, declared: Mapping[str, str]) -> CsvTexts | None:
        """How a ``"csv"`` sink reads its texts, once the table's declared types are
        known (``None`` for a ``"rows"`` sink)."""
        if self.format != "csv" or self.types is None:
            return None
        kinds = csv_kinds(declared, self.types, self.csv_columns)
        return CsvTexts(self.csv_columns, kinds, self.delimiter, self.quotechar, self.lines_checked)

    def _fast_rows(self, items: list[Mapping[str, Any]]) -> list[tuple[Any, ...]] | None:
        """The rows of ``items`` bound a whole column at a time, or ``None`` when a value
        needs the per-item path (:meth:`_row`: to be converted, or refused with a reason).

        The rule of a CSV load: each item is a mapping with every column of the table, as
        text in its type's plain form. Each column is checked and bound in C
        (:func:`~freight.connectors._sqltypes.bind_column`), and SQLite stores exactly
        what the per-item path stores; 1M rows of 5 columns went from about 4 µs a row in
        Python to well under 1 µs.
        """
        fast, columns = self._fast, self._columns
        if fast is None or columns is None:
            return None
        try:
            if set(map(len, items)) != {len(columns)}:  # some columns only, or others too
                return None
            bound = []
            for kind, get in fast:
                values = bind_column(kind, list(map(get, items)))
                if values is None:
                    return None
                bound.append(values)
        except (KeyError, TypeError, IndexError):  # not a mapping of the table's columns
            return None
        return list(zip(*bound, strict=True))

    def _ensure_table(self, first: Mapping[str, Any]) -> list[str]:
        if self._columns is not None:
            return self._columns
        if not isinstance(first, Mapping):
            raise PermanentError(f"SqliteSink needs mappings, got {type(first).__name__}")
        columns = list(first)
        missing = [k for k in self.key if k not in columns]
        if missing:
            raise ConfigError(f"key column(s) {missing} are not among the item's fields {columns}")
        _check_columns(self.table, columns, self.key)
        _create(self._db, self.table, {c: declared_type(first[c]) for c in columns}, self.key)
        self._columns = list(_declared_types(self._db, self.table) or columns)
        return self._columns

    def _statement(self, columns: Sequence[str]) -> str:
        """The INSERT (or upsert) of these columns: only they are set, so a row keeps
        (or, when new, gets the defaults of) the columns an item does not carry."""
        cached = self._statements.get(tuple(columns))
        if cached is not None:
            return cached
        if not columns:  # an empty item: a row of defaults (no key, so never a conflict)
            sql = f"INSERT INTO {self._table} DEFAULT VALUES"
            self._statements[()] = sql
            return sql
        names = ", ".join(map(quote_identifier, columns))
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {self._table} ({names}) VALUES ({marks})"  # noqa: S608 (quoted)
        if self.mode == "upsert":
            updates = ", ".join(
                f"{quote_identifier(c)} = excluded.{quote_identifier(c)}"
                for c in columns
                if c not in self.key
            )
            target = ", ".join(map(quote_identifier, self.key))
            sql += f" ON CONFLICT ({target}) " + (
                f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
            )
        self._statements[tuple(columns)] = sql
        return sql

    def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Write ``items`` in one transaction; return ``None``, or one outcome per item.

        A row that cannot be stored as it is (a value that does not fit its column, a
        field the table lacks, a constraint) gets its own
        :class:`~freight.PermanentError`; the other rows are committed. A table that
        refuses every row (gone, read-only, too many columns, no key the upsert can
        use) is a :class:`~freight.TargetError`, every item's outcome, never bisected.
        A database locked past ``busy_timeout`` raises :class:`~freight.TransientError`:
        the whole call is retried, no row fails for it.
        """
        if not items:
            return None
        with self._lock:
            try:
                columns = self._ensure_table(items[0])
            except (ConfigError, TargetError) as exc:  # the table, not a row
                return [_target_error(exc)] * len(items)
            csv_texts = self._csv
            rows = self._fast_rows(items) if csv_texts is None else csv_texts.rows(items)
            if rows is not None:
                written = columns if csv_texts is None else self.csv_columns
                try:
                    self._write_rows([(self._statement(written), rows)])
                except TargetError as refused:
                    return [refused] * len(items)
                except PermanentError:
                    pass  # a row the table refuses (a constraint): found by the path below
                else:
                    return None
            if csv_texts is not None:
                items = csv_texts.items(items)
            return self._write_items(items, columns)

    def _write_lines(self, text: bytes, context: object = None) -> bool:
        """Write plain CSV lines given as one UTF-8 text (each ending in ``\\n``, no
        quote: lines :class:`~freight.jobs.CsvSource` read as plain), a whole column
        bound at a time, if every value binds as its column's type and every row goes in
        (one transaction); ``False``: none was written, and :meth:`write` of their texts
        sorts them out. The job engine's fast path
        (:class:`~freight.jobs._sink.LinesSink`): no string per line."""
        csv_texts = self._csv
        if csv_texts is None:
            return False
        with self._lock:
            rows = csv_texts.rows_of(text.decode())
            if rows is None:
                return False
            try:
                self._write_rows([(self._statement(self.csv_columns), rows)])
            except (TargetError, PermanentError):
                return False
        return True

    def _write_items(self, items: list[Mapping[str, Any]], columns: list[str]) -> list[Any] | None:
        """:meth:`write` item by item: each converted and bound on its own, a row that
        cannot be written refused with its reason, the others written (under the lock)."""
        outcomes: list[Any] = [None] * len(items)
        statements: list[str] = []
        rows: list[list[Any]] = []
        places: list[int] = []
        for place, item in enumerate(items):
            try:
                statement, row = self._row(item, columns)
            except PermanentError as refused:
                outcomes[place] = refused
            else:
                statements.append(statement)
                rows.append(row)
                places.append(place)
        if rows:
            try:
                self._write_rows(_runs(statements, rows))
            except TargetError as refused:  # every row: the job stops with this reason
                return [refused] * len(items)
            except PermanentError:  # a refused row: find it (them) by bisection
                found = isolate(list(zip(statements, rows, strict=True)), self._write_pairs)
                for place, outcome in zip(places, found, strict=True):
                    outcomes[place] = outcome
        return None if all(o is None for o in outcomes) else outcomes

    def _row(self, item: Mapping[str, Any], columns: list[str]) -> tuple[str, list[Any]]:
        """The statement that writes ``item`` (the columns it carries) and its bound
        values, or a PermanentError saying why it cannot be written."""
        if not isinstance(item, Mapping):
            raise PermanentError(f"SqliteSink needs mappings, got {type(item).__name__}")
        binders = self._binders
        if binders is None or binders.columns is not columns:
            binders = self._binders = _Binders(
                columns, self._column_binders(columns), self._statement
            )
        if not binders.names.issuperset(item):
            unknown = [f for f in item if f not in binders.names]
            raise PermanentError(
                f"fields {sorted(unknown)} are not columns of {self.table!r} "
                f"(its columns: {columns}); drop them from the item or add the columns"
            )
        # An item with every column (the rule) or some: only its own columns are written.
        shape = binders.every if len(item) == len(columns) else binders.shape(item)
        if self._convert is not None:
            try:
                converted = self._convert(item)
            except ValueError as exc:  # "column 'amount': 'abc' is not a number"
                raise PermanentError(str(exc)) from exc
            # The converter gives the typed columns only: the others keep their values.
            item = converted if len(converted) == len(columns) else {**item, **converted}
        return shape[0], [bind(item.get(c), c) for c, bind in shape[1]]

    def _column_binders(self, columns: list[str]) -> list[tuple[str, Binder]]:
        """How each column's value is bound: by its type when ``types`` converts it (the
        converter's value is of that type or None), else by the value's own type."""
        types = self.types or {}
        return [(c, TYPED_BINDERS.get(types.get(c, ""), _bind)) for c in columns]

    def _write_pairs(self, pairs: list[tuple[str, list[Any]]]) -> None:
        """:meth:`_write_rows` of (statement, row) pairs, in their order (bisection)."""
        statements = [statement for statement, _ in pairs]
        self._write_rows(_runs(statements, [row for _, row in pairs]))

    def _write_rows(self, runs: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Each run's statement over its rows, in order, in one transaction; raises
        freight's classes (:func:`classify`)."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement, rows in runs:
                    db.executemany(statement, rows)
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            mapped = classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        except UnicodeEncodeError as exc:  # a lone surrogate: the driver cannot send it
            raise PermanentError(unsendable(exc)) from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


_Shape = tuple[str, list[tuple[str, Binder]]]
"""How an item carrying these columns is written: the statement, each column's binder."""


class _Binders:
    """The binders of a table's ``columns`` and the :data:`_Shape` of an item carrying
    all of them (:attr:`every`) or some (:meth:`shape`: the same few over a load)."""

    __slots__ = ("_shapes", "_statement", "columns", "every", "names")

    def __init__(
        self,
        columns: list[str],
        binders: list[tuple[str, Binder]],
        statement: Callable[[Sequence[str]], str],
    ) -> None:
        self.columns = columns
        self.names = set(columns)
        self.every: _Shape = (statement(columns), binders)
        self._statement = statement
        self._shapes: dict[tuple[str, ...], _Shape] = {}

    def shape(self, item: Mapping[str, Any]) -> _Shape:
        """The shape of an item whose fields are some of the columns, in table order."""
        fields = tuple(item)
        found = self._shapes.get(fields)
        if found is None:
            binders = [(c, bind) for c, bind in self.every[1] if c in item]
            found = self._shapes[fields] = (self._statement([c for c, _ in binders]), binders)
        return found


def _runs(statements: list[str], rows: list[list[Any]]) -> list[tuple[str, list[list[Any]]]]:
    """``rows`` cut where the statement changes: one ``executemany`` per run, in order
    (so the last value of a key's column wins, whichever columns the items carry)."""
    if statements.count(statements[0]) == len(statements):  # one statement (the rule)
        return [(statements[0], rows)]
    runs: list[tuple[str, list[list[Any]]]] = []
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or statements[end] != statements[start]:
            runs.append((statements[start], rows[start:end]))
            start = end
    return runs


class AsyncSqliteSink:
    """The asyncio twin of :class:`SqliteSink` (``Job(executor="async")``, a ``Batcher``).

    The same arguments and outcomes. SQLite has no asynchronous driver of its own: each
    write runs in a worker thread, so the event loop never waits on the disk.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        mode: Literal["insert", "upsert"] | None = None,
        types: Mapping[str, str] | None = None,
        busy_timeout: float = 30.0,
    ) -> None:
        self._make = functools.partial(
            SqliteSink, path, table, key=key, mode=mode, types=types, busy_timeout=busy_timeout
        )
        self._sync: SqliteSink | None = self._make()
        self.path, self.table, self.key, self.mode = (
            self._sync.path,
            table,
            self._sync.key,
            self._sync.mode,
        )

    def __repr__(self) -> str:
        return f"AsyncSqliteSink({str(self.path)!r}, {self.table!r}, key={self.key!r})"

    async def write(
        self, items: list[Mapping[str, Any]], context: object = None
    ) -> list[Any] | None:
        """Write ``items`` in one transaction; return ``None``, or one outcome per item."""
        if not items:
            return None
        if self._sync is None:  # closed by aclose(): open again
            self._sync = self._make()
        return await asyncio.to_thread(self._sync.write, items, context)

    async def aclose(self) -> None:
        """Close the connection (a later write opens a new one).

        A job with ``executor="async"`` calls it when its run ends.
        """
        sink, self._sync = self._sync, None
        if sink is not None:
            await asyncio.to_thread(sink.close)

    def close(self) -> None:
        """Close the connection, from synchronous code."""
        sink, self._sync = self._sync, None
        if sink is not None:
            sink.close()
