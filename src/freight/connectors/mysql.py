"""``MysqlSink``: insert or upsert job items (mappings) into a MariaDB / MySQL table
(extra ``freight[mysql]``, PyMySQL).

- Identifiers are quoted with backticks (a backtick inside doubled), whatever
  characters they hold; values go through PyMySQL's literal escaping (the client's
  binding: the server has no other for a multi-row statement), never formatted by hand.
- One transaction per write: rows are sent as multi-row ``INSERT … VALUES (…), (…)``
  statements (about 1 MB each); an upsert is ``INSERT … ON DUPLICATE KEY UPDATE``
  setting only the columns each item carries, rows in the file's order, so the last
  value of a key within a write wins.
- A write that fails on a bad row is taken apart inside the same transaction
  (savepoints) by the core's poison isolation (:func:`~freight.connectors._isolate.isolate`):
  the good rows are committed with the write, each bad row gets its own
  :class:`~freight.PermanentError` with the server's message.
- A statement the server refuses whatever the rows hold (no such table or column, no
  privilege, too many columns, a row size past the limit) is a
  :class:`~freight.TargetError` for every item, never one dead letter per row.
- A lost connection is a :class:`~freight.TransientError` (nothing of the write was
  committed; the job's ``Retry`` writes it again) and the next write reconnects.
  Errors are mapped in one place, :func:`~freight.connectors._mysqlerrors.classify`.

**Typed tables.** ``freight load`` infers column types
(:func:`freight.connectors.pgtypes.infer_types`); a MariaDB table gets them as:

============================  ======================  ====================================
freight type                  MariaDB column          why
============================  ======================  ====================================
bigint (integer, smallint)    ``BIGINT``              64-bit, as PostgreSQL's bigint
numeric                       ``DECIMAL(65,30)``      the widest DECIMAL: 35 digits before
                                                      the point, 30 after; a value with
                                                      more is refused, never rounded
double precision, real        ``DOUBLE``
boolean                       ``BOOLEAN``             TINYINT(1), 0/1
timestamptz                   ``DATETIME(6)``         in UTC (the session's time zone is
                                                      ``+00:00``; values converted to UTC)
date                          ``DATE``
text, json, jsonb             ``LONGTEXT``            a **key** text column is
                                                      ``VARCHAR(255)`` (an index needs a
                                                      length; 255 utf8mb4 characters fit
                                                      InnoDB's 3,072-byte key); a longer
                                                      key value is refused, not cut
============================  ======================  ====================================

**Nothing is altered silently.** The session runs with ``sql_mode`` STRICT_ALL_TABLES,
so the server refuses a value it would truncate or clip; and what it would still
change is refused before sending, with the same reasons as the SQLite and PostgreSQL
targets (:mod:`freight.connectors._sqltypes`): ``NaN`` and infinities (a DOUBLE holds
neither), a NUL byte in text, an integer beyond 64 bits, a ``numeric`` with more digits
than ``DECIMAL(65,30)`` keeps (the server would round its fraction with only a note).
The types and those value checks live in :mod:`freight.connectors._mysqltypes`; this
module connects, creates tables and writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from freight._errors import ConfigError, PermanentError, TargetError, TransientError
from freight.connectors import pgtypes
from freight.connectors._isolate import isolate, unsendable
from freight.connectors._mysqlerrors import (
    MysqlUrl,
    classify,
    parse_url,
    raise_classified,
)
from freight.connectors._mysqltypes import (
    DDL_TYPES,
    KEY_TEXT,
    ToLiteral,
    declared_type,
    freight_type,
    freight_types,
)
from freight.connectors._mysqltypes import bind as _bind
from freight.connectors._mysqltypes import literals as _literals
from freight.connectors._mysqltypes import row_literal as _row_literal

try:
    import pymysql  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.mysql needs PyMySQL: pip install 'freight[mysql]'"
    ) from exc

__all__ = [
    "MAX_COLUMNS",
    "MysqlSink",
    "classify",
    "create_table",
    "quote_identifier",
    "table_types",
]

MAX_COLUMNS = 4096
"""MariaDB's (and MySQL's) limit on the columns of a table; InnoDB's row size (65,535
bytes, a LONGTEXT counting a few) may refuse fewer: then the server's error is a
:class:`~freight.TargetError`."""

_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
# A multi-row statement's size: ~1 MB, PyMySQL's own executemany cut (larger gained
# nothing measurable; the server's max_allowed_packet is the hard limit).
_STATEMENT_BYTES = 1_000_000


def quote_identifier(name: str) -> str:
    """``name`` as a backtick-quoted identifier (backticks inside doubled)."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 64:
        raise ConfigError(
            "a MariaDB identifier must be a non-empty string of at most 64 characters "
            f"without NUL, got {name!r}"
        )
    return "`" + name.replace("`", "``") + "`"


def _check_columns(table: str, columns: Sequence[str], key: Sequence[str]) -> None:
    """Refuse, before anything is created, columns a MariaDB table cannot have."""
    quote_identifier(table)
    if not columns:
        raise ConfigError(f"table {table!r} needs at least one column")
    for column in columns:
        quote_identifier(column)
    if len(columns) > MAX_COLUMNS:
        raise ConfigError(
            f"table {table!r} would have {len(columns):,} columns, more than MariaDB "
            f"allows ({MAX_COLUMNS:,}); load fewer columns"
        )
    missing = [k for k in key if k not in columns]
    if missing:
        raise ConfigError(f"key column(s) {missing} are not among the columns of {table!r}")


def _connect(where: MysqlUrl) -> Any:
    """A connection in strict mode and UTC, errors mapped (a server that does not answer
    is a :class:`~freight.TransientError` naming where it is)."""
    try:
        return pymysql.connect(
            host=where.host,
            port=where.port,
            user=where.user,
            password=where.password,
            database=where.database,
            charset="utf8mb4",
            autocommit=False,
            init_command=f"SET SESSION sql_mode='{_SQL_MODE}', time_zone='+00:00'",
        )
    except pymysql.err.MySQLError as exc:
        mapped = classify(exc)
        if isinstance(mapped, TransientError):
            raise TransientError(f"cannot reach MariaDB at {where}: {mapped}") from exc
        raise_classified(exc)


def _create_sql(table: str, declared: Mapping[str, str], key: Sequence[str]) -> str:
    body = ", ".join(
        f"{quote_identifier(c)} {KEY_TEXT if c in key and kind == 'LONGTEXT' else kind}"
        + (" NOT NULL" if c in key else "")
        for c, kind in declared.items()
    )
    if key:
        body += f", PRIMARY KEY ({', '.join(map(quote_identifier, key))})"
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} ({body}) "
        "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    )


def _run(conn: Any, statement: str, args: Sequence[Any] | None = None) -> list[Any]:
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())
    except pymysql.err.MySQLError as exc:
        raise_classified(exc)


def create_table(
    url: str, table: str, column_types: Mapping[str, str], key: Sequence[str] = ()
) -> None:
    """Create ``table`` (if missing) with these column types and ``key`` as primary key.

    ``column_types`` are freight's (PostgreSQL) type names, as
    :func:`~freight.connectors.pgtypes.infer_types` gives them, each made the MariaDB
    type of the module's table. Names, the column count and the key are checked before
    anything is created (a :class:`~freight.ConfigError`); a table the server refuses
    (its row size) is a :class:`~freight.TargetError` with the server's message.
    """
    kinds = freight_types(column_types)
    _check_columns(table, list(kinds), key)
    conn = _connect(parse_url(url))
    try:
        _run(conn, _create_sql(table, {c: DDL_TYPES[k] for c, k in kinds.items()}, key))
    finally:
        conn.close()


_COLUMNS_SQL = (
    "SELECT column_name, data_type, column_type FROM information_schema.columns"
    " WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position"
)


def table_types(url: str, table: str) -> dict[str, str] | None:
    """The columns of ``table`` and their freight types, or ``None`` when it does not
    exist. A column of a type freight does not parse is text (DOUBLE is numeric)."""
    quote_identifier(table)
    conn = _connect(parse_url(url))
    try:
        rows = _run(conn, _COLUMNS_SQL, (table,))
    finally:
        conn.close()
    return {str(r[0]): freight_type(str(r[1]), str(r[2])) for r in rows} or None


# -- the sink ---------------------------------------------------------------------------------

_Part = tuple[tuple[str, ...], str]
"""One row to write: the columns it sets and its ``(v1, v2, …)`` literal."""


class MysqlSink:
    """Write mappings into ``table`` of a MariaDB / MySQL database.

    Args:
        url: ``mysql://user[:password]@host[:port]/database`` (``mariadb://`` too).
        table: the table, taken literally (backtick-quoted); created if missing.
        key: column(s) identifying a row: writes are upserts (``INSERT … ON DUPLICATE
            KEY UPDATE``, the table's primary or unique key), each setting only the
            columns its item carries; the last value of a key within a write wins. A
            replayed chunk is then harmless: exactly-once in effect.
        columns: the columns written, each item's value or NULL (a field outside them
            fails its item, naming it). By default each item's own fields.
        types: freight's (PostgreSQL) type of each column, as
            :func:`~freight.connectors.pgtypes.infer_types` gives them. A missing table
            is created with them (:func:`create_table`), and each item is converted
            (:func:`~freight.connectors.pgtypes.converter`): a value that does not fit
            its column fails that row alone, with the same reason as on the other
            targets. Without ``types``, values are written as they are and a missing
            table takes the columns of the first item.
    """

    def __init__(
        self,
        url: str,
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        types: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self._where = parse_url(url)
        self.table = table
        self._table = quote_identifier(table)
        self.key = [key] if isinstance(key, str) else list(key or [])
        for column in self.key:
            quote_identifier(column)
        self.columns = list(columns) if columns is not None else None
        for column in self.columns or ():
            quote_identifier(column)
        self.types = None if types is None else freight_types(types)
        if self.types is not None:
            _check_columns(table, list(self.types), self.key)
        self._open()
        if self.types is not None:
            self._typed_table(self.types)

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._packet = 16 * 2**20  # the server's max_allowed_packet, read on connecting
        self._known: list[str] | None = None  # the table's columns, once read
        self._prefixes: dict[tuple[str, ...], tuple[str, str]] = {}
        self._convert: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
        self._literals: dict[str, ToLiteral] | None = None
        if self.types is not None:
            self._literals = _literals(self.types)
            parsed = {c: t for c, t in self.types.items() if t in pgtypes.TYPES}
            self._convert = pgtypes.converter(parsed)

    def __repr__(self) -> str:
        return f"MysqlSink({str(self._where)!r}, {self.table!r}, key={self.key!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): the connection is opened on arrival."""
        state = self.__dict__.copy()
        for name in ("_lock", "_conn", "_packet", "_known", "_prefixes", "_convert", "_literals"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def _connection(self) -> Any:
        if self._conn is None:
            conn = _connect(self._where)
            found = _run(conn, "SELECT @@max_allowed_packet")
            self._packet = int(found[0][0]) - 1024  # room for the statement's text
            self._conn, self._known = conn, None
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 (already broken: nothing to tell)
                pass

    def _table_columns(self) -> list[str] | None:
        if self._known is None:
            rows = _run(self._connection(), _COLUMNS_SQL, (self.table,))
            self._known = [str(r[0]) for r in rows] or None
        return self._known

    def _typed_table(self, types: dict[str, str]) -> None:
        """Create the table with ``types`` if missing; else check that it has their columns."""
        with self._lock:
            known = self._table_columns()
            if known is None:
                declared = {c: DDL_TYPES[k] for c, k in types.items()}
                _run(self._connection(), _create_sql(self.table, declared, self.key))
                self._known = list(types)
                return
        missing = [c for c in types if c not in known]
        if missing:
            raise ConfigError(
                f"types= names column(s) {missing} that table {self.table!r} lacks "
                f"(its columns: {known})"
            )

    def _ensure_table(self, first: Any) -> list[str]:
        known = self._table_columns()
        if known is not None:
            return known
        if not isinstance(first, Mapping):
            raise PermanentError(f"MysqlSink needs mappings, got {type(first).__name__}")
        columns = self.columns or list(first)
        _check_columns(self.table, columns, self.key)
        declared = {c: declared_type(first.get(c), c in self.key) for c in columns}
        _run(self._connection(), _create_sql(self.table, declared, self.key))
        self._known = list(columns)
        return self._known

    def close(self) -> None:
        """Close the connection (a later write opens a new one)."""
        with self._lock:
            self._drop_connection()

    # -- the Sink port ------------------------------------------------------------------

    def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Write ``items`` in one transaction; return ``None``, or one outcome per item.

        A row the server (or the value checks) refuses gets its own
        :class:`~freight.PermanentError`; the others are committed. A table that
        refuses every row is a :class:`~freight.TargetError`, every item's outcome.
        A lost connection raises :class:`~freight.TransientError` (nothing committed).
        """
        if not items:
            return None
        with self._lock:
            try:
                return self._write(items)
            except TransientError:
                self._drop_connection()
                raise
            except pymysql.err.MySQLError as exc:
                mapped = classify(exc)
                if isinstance(mapped, TransientError):
                    self._drop_connection()
                if isinstance(mapped, TargetError):
                    return [mapped] * len(items)
                raise_classified(exc)

    def _write(self, items: list[Any]) -> list[Any] | None:
        try:
            table = self._ensure_table(items[0])
        except (ConfigError, TargetError) as exc:  # the table, not a row
            return [_target_error(exc)] * len(items)
        allowed = set(self.columns or table)
        outcomes: list[Any] = [None] * len(items)
        parts: list[_Part] = []
        places: list[int] = []
        conn = self._connection()
        for place, item in enumerate(items):
            try:
                parts.append(self._part(conn, item, allowed, table))
            except PermanentError as refused:
                outcomes[place] = refused
            else:
                places.append(place)
        if not parts:
            return self._refused_all(items, outcomes, allowed)
        conn.begin()
        try:
            error = self._try(conn, parts)
            if error is not None:
                found = isolate(parts, self._savepointed(conn), failed=error)
                self._settle(found, places, outcomes)
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # noqa: S110 (the connection is gone: the error says why)
                pass
            raise
        return None if outcomes.count(None) == len(outcomes) else outcomes

    def _refused_all(self, items: list[Any], outcomes: list[Any], allowed: set[str]) -> list[Any]:
        """Every item was refused before writing: when they all carry a field the table
        lacks, the table is what is wrong (a :class:`~freight.TargetError` for every
        item, as the server gives PostgreSQL's sink), else each keeps its own reason."""
        if self.columns is None and all(isinstance(item, Mapping) for item in items):
            common = set(items[0]).intersection(*items[1:]) - allowed
            if common:
                refused = TargetError(
                    f"the target refuses the write: table {self.table!r} has no column(s) "
                    f"{sorted(common)} (its columns: {sorted(allowed)}); add them or drop "
                    "the fields"
                )
                return [refused] * len(items)
        return outcomes

    @staticmethod
    def _settle(found: list[Any], places: list[int], outcomes: list[Any]) -> None:
        """Put the isolated outcomes in their places; an outage or a refusing target
        found while isolating ends the whole write."""
        for outcome in found:
            if isinstance(outcome, TransientError | TargetError):
                raise outcome
        for place, outcome in zip(places, found, strict=True):
            outcomes[place] = outcome

    def _part(self, conn: Any, item: Any, allowed: set[str], table: list[str]) -> _Part:
        """The columns ``item`` sets and its escaped values, or its PermanentError."""
        if not isinstance(item, Mapping):
            raise PermanentError(f"MysqlSink needs mappings, got {type(item).__name__}")
        if not allowed.issuperset(item):
            unknown = sorted(str(f) for f in item if f not in allowed)
            where = "columns=" if self.columns is not None else f"the columns of {self.table!r}"
            raise PermanentError(
                f"fields {unknown} are not among {where} ({sorted(allowed)}); drop them "
                "from the item or add the columns"
            )
        if self._literals is not None and self.columns is None:
            fast = _row_literal(item, self._literals)
            if fast is not None:
                return self._sized(tuple(item), fast)
        columns = tuple(self.columns) if self.columns is not None else tuple(item)
        values = item
        if self._convert is not None:
            try:
                converted = self._convert(item)
            except ValueError as exc:  # "column 'amount': 'abc' is not a number"
                raise PermanentError(str(exc)) from exc
            values = {**item, **{c: v for c, v in converted.items() if c in item}}
        row = tuple(_bind(values.get(c), c) for c in columns)
        return self._sized(columns, conn.escape(row) if row else "()")

    def _sized(self, columns: tuple[str, ...], text: str) -> _Part:
        """The part, or its PermanentError when the server could not take it."""
        if len(text) > self._packet:  # the server would drop the connection, every retry
            raise PermanentError(
                f"the row is {len(text):,} bytes as SQL, more than the server's "
                f"max_allowed_packet allows ({self._packet + 1024:,}); raise it to load this row"
            )
        return columns, text

    def _prefix(self, columns: tuple[str, ...]) -> tuple[str, str]:
        """The statement's start and end for rows setting ``columns``."""
        found = self._prefixes.get(columns)
        if found is None:
            names = ", ".join(map(quote_identifier, columns))
            start = f"INSERT INTO {self._table} ({names}) VALUES "  # noqa: S608 (quoted)
            end = ""
            if self.key:
                updates = [
                    f"{quote_identifier(c)} = VALUES({quote_identifier(c)})"
                    for c in columns
                    if c not in self.key
                ] or [f"{quote_identifier(self.key[0])} = {quote_identifier(self.key[0])}"]
                end = " ON DUPLICATE KEY UPDATE " + ", ".join(updates)
            found = self._prefixes[columns] = (start, end)
        return found

    def _statements(self, parts: list[_Part]) -> list[str]:
        """``parts`` as multi-row INSERTs, in order: cut where the columns change or a
        statement reaches ``_STATEMENT_BYTES``."""
        out: list[str] = []
        at = 0
        while at < len(parts):
            columns = parts[at][0]
            start, end = self._prefix(columns)
            size = len(start) + len(end)
            rows: list[str] = []
            while at < len(parts) and parts[at][0] == columns:
                text = parts[at][1]
                if rows and size + len(text) > _STATEMENT_BYTES:
                    break
                rows.append(text)
                size += len(text) + 1
                at += 1
            out.append(start + ",".join(rows) + end)
        return out

    def _execute(self, conn: Any, parts: list[_Part]) -> None:
        with conn.cursor() as cur:
            for statement in self._statements(parts):
                cur.execute(statement)

    def _try(self, conn: Any, parts: list[_Part]) -> BaseException | None:
        """Write ``parts`` after a savepoint; ``None``, or the row-level error that undid
        them (an outage or a refusing target is raised)."""
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT freight_part")
        try:
            self._execute(conn, parts)
        except pymysql.err.MySQLError as exc:
            mapped = classify(exc)
            if isinstance(mapped, TransientError | TargetError):
                raise mapped from exc
            with conn.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT freight_part")
            return mapped
        except UnicodeEncodeError as exc:  # a lone surrogate: the statement cannot be sent
            with conn.cursor() as cur:
                cur.execute("ROLLBACK TO SAVEPOINT freight_part")
            refused = PermanentError(unsendable(exc))
            refused.__cause__ = exc
            return refused
        return None

    def _savepointed(self, conn: Any) -> Callable[[list[_Part]], None]:
        """A write of some parts for :func:`isolate`: raising the row's error, else kept."""

        def write(parts: list[_Part]) -> None:
            error = self._try(conn, parts)
            if error is not None:
                raise error

        return write


def _target_error(error: ConfigError | TargetError) -> TargetError:
    """A table-level refusal met while writing, as the TargetError every row gets."""
    if isinstance(error, TargetError):
        return error
    refused = TargetError(str(error))
    refused.__cause__ = error
    return refused
