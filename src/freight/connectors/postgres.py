"""``PostgresSink``: COPY, insert or upsert job items into PostgreSQL (extra ``freight[postgres]``).

- Identifiers are composed with ``psycopg.sql.Identifier``, never by string formatting.
- A call that fails on a bad row (COPY aborts the whole statement) is bisected with the
  core's poison isolation: the good rows are committed, each bad row gets its own
  :class:`~freight.PermanentError` (the server's error as its ``__cause__``), and the job
  dead-letters it.
- Lost connections are transient (retried by the job's ``Retry``); the pool replaces
  broken connections. Errors are mapped to freight's classes in one place, :func:`classify`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from freight._errors import ConfigError, PermanentError, TransientError
from freight.connectors._isolate import aisolate, isolate
from freight.connectors._pgbinary import TYPES_SQL, BinaryColumns, binary_columns, fits
from freight.connectors._pgerrors import _connect, _reraise, classify
from freight.connectors._pgsource import PostgresSource

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.rows
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = [
    "AsyncPostgresSink",
    "Mode",
    "PostgresSink",
    "PostgresSource",
    "classify",
    "create_table",
    "table_types",
]

Mode = Literal["copy", "insert", "upsert"]
"""How :class:`PostgresSink` writes: ``COPY``, an ``INSERT`` per row (pipelined), or
``COPY`` into a staging table then ``INSERT … ON CONFLICT`` (an upsert on ``key``)."""


def _classified(write: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
    """``write`` raising freight's classes, so that isolating bad rows stops bisecting
    when both halves of a part meet an outage, and splits on to the bad row otherwise."""

    def call(rows: list[Any]) -> None:
        try:
            write(rows)
        except psycopg.Error as exc:
            _reraise(exc)

    return call


def _aclassified(
    write: Callable[[list[Any]], Awaitable[None]],
) -> Callable[[list[Any]], Awaitable[None]]:
    """:func:`_classified` for an ``async`` write."""

    async def call(rows: list[Any]) -> None:
        try:
            await write(rows)
        except psycopg.Error as exc:
            _reraise(exc)

    return call


class PostgresSink:
    """Write mappings (or sequences in ``columns`` order) into a PostgreSQL table.

    Args:
        conninfo: a libpq connection string or URL (``postgresql://user@host:5432/db``).
        table: the table, taken literally (quoted), whatever characters it holds.
        schema: its schema (default: the search path).
        columns: the columns written (default: the keys of the first item).
        mode: ``"copy"`` (COPY FROM STDIN), ``"insert"`` (executemany, pipelined) or
            ``"upsert"`` (COPY into a temporary table, then INSERT … ON CONFLICT).
        key: the conflict columns of ``"upsert"`` (required there).
        pool_size: connections kept (one per job worker is enough).
        format: ``"rows"`` (mappings or sequences) or ``"csv"``: items are CSV record
            texts (``CsvSource(raw=True)``), copied as they are and parsed by the
            server, which is the fast path for loading files (not with ``"insert"``).
    """

    def __init__(
        self,
        conninfo: str,
        table: str,
        *,
        schema: str | None = None,
        columns: Sequence[str] | None = None,
        mode: Mode | None = None,
        key: str | Sequence[str] | None = None,
        pool_size: int = 2,
        format: Literal["rows", "csv"] = "rows",
    ) -> None:
        self.key = [key] if isinstance(key, str) else list(key or [])
        if format not in ("rows", "csv"):
            raise ConfigError(f"format must be 'rows' or 'csv', got {format!r}")
        self.format = format
        mode = mode or ("upsert" if self.key else "copy")
        if mode not in ("copy", "insert", "upsert"):
            raise ConfigError(f"mode must be 'copy', 'insert' or 'upsert', got {mode!r}")
        if mode == "upsert" and not self.key:
            raise ConfigError("mode='upsert' needs key= (the conflict column(s))")
        if format == "csv" and (mode == "insert" or columns is None):
            raise ConfigError("format='csv' needs columns= and mode 'copy' or 'upsert'")
        if not table:
            raise ConfigError("table must be a non-empty name")
        self.mode: Mode = mode
        self.conninfo = conninfo
        self.table = table
        self.schema = schema
        self.columns = list(columns) if columns is not None else None
        self._target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            check=ConnectionPool.check_connection,
        )
        self._opened = False
        self._lock = threading.Lock()
        self._local = threading.local()
        # Binary COPY types per written column list (None: text COPY), read once.
        self._binary: dict[tuple[str, ...], BinaryColumns | None] = {}

    def __repr__(self) -> str:
        return f"PostgresSink({self.table!r}, schema={self.schema!r}, mode={self.mode!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_pool", "_lock", "_opened", "_local", "_binary"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["conninfo"], state["table"], schema=state["schema"], columns=state["columns"],
            mode=state["mode"], key=state["key"] or None, format=state["format"],
        )  # fmt: skip

    def _ensure_open(self) -> None:
        with self._lock:
            if not self._opened:
                try:
                    self._pool.open(wait=True, timeout=30)
                except psycopg.Error as exc:  # PoolTimeout: no connection in 30 s
                    _reraise(exc)
                self._opened = True

    def close(self) -> None:
        """Close the pool."""
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False

    # -- the Sink port --------------------------------------------------------------

    def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Write ``items``; return ``None``, or one outcome per item after isolating bad rows.

        Raises :class:`~freight.TransientError` when the server is unreachable (the job
        retries); a bad row never fails the good ones.
        """
        if not items:
            return None
        self._ensure_open()
        columns, rows = self._rows(items)
        try:
            self._write_rows(columns, rows)
        except psycopg.Error as exc:
            mapped = classify(exc)
            if isinstance(mapped, TransientError):
                raise mapped from exc
        else:
            return None
        # A bad row aborted the statement: find it (them) by bisection, keep the rest.
        return isolate(rows, _classified(lambda part: self._write_rows(columns, part)))

    def _rows(self, items: list[Any]) -> tuple[list[str], list[Any]]:
        """The columns written and the items as rows (CSV texts stay as they are)."""
        columns = self.columns or list(_mapping(items[0]))
        return columns, items if self.format == "csv" else [_row(i, columns) for i in items]

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Hold one transaction for every write of this thread until the block ends.

        A job whose store is this same database records each chunk's checkpoint in it,
        so the rows and the checkpoint commit together. Each write inside runs in a
        savepoint, so isolating a bad row does not abort the transaction.
        """
        self._ensure_open()
        with self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    def _write_rows(self, columns: list[str], rows: list[Sequence[Any]]) -> None:
        held = getattr(self._local, "conn", None)
        if held is not None:
            with held.transaction(), held.cursor() as cur:  # a savepoint in the held transaction
                self._execute_write(cur, columns, rows)
            return
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            self._execute_write(cur, columns, rows)

    def _execute_write(
        self, cur: psycopg.Cursor[Any], columns: list[str], rows: list[Sequence[Any]]
    ) -> None:
        plan = self._plan(columns)
        if plan.insert is not None:
            cur.executemany(plan.insert, rows)
            return
        for statement in plan.before:
            cur.execute(statement)
        assert plan.copy is not None
        assert plan.copy_binary is not None
        binary = None
        if self.format == "rows":
            key = tuple(columns)
            if key not in self._binary:
                found = cur.execute(TYPES_SQL, (self.table, self.schema)).fetchall()
                self._binary[key] = binary_columns(found, columns)
            binary = self.binary_for(columns, rows)
        with cur.copy(plan.copy if binary is None else plan.copy_binary) as copy:
            if self.format == "csv":
                copy.write("".join(rows))  # type: ignore[arg-type]
            else:
                if binary is not None:
                    copy.set_types(binary.names)
                for row in rows:
                    copy.write_row(row)
        for statement in plan.after:
            cur.execute(statement)

    def binary_for(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> BinaryColumns | None:
        """The binary COPY types for these rows, or ``None``: text COPY (the types are
        unknown, a column has no binary form, or a value does not fit its column)."""
        binary = self._binary.get(tuple(columns))
        return binary if binary is not None and fits(rows, binary) else None

    def _plan(self, columns: list[str]) -> _WritePlan:
        """The statements of one write of ``columns`` in this sink's mode (shared with the
        async twin, which runs the same statements on its own connections)."""
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        if self.mode == "insert":
            marks = sql.SQL(", ").join(sql.Placeholder() * len(columns))
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(self._target, names, marks)
            return _WritePlan(insert=insert)
        options = sql.SQL(" (FORMAT csv)" if self.format == "csv" else "")
        binary = sql.SQL(" (FORMAT BINARY)")
        copy = sql.SQL("COPY {} ({}) FROM STDIN{}")
        if self.mode == "copy":
            return _WritePlan(
                copy=copy.format(self._target, names, options),
                copy_binary=copy.format(self._target, names, binary),
            )
        staging = sql.Identifier("freight_upsert")
        create = sql.SQL(
            "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        ).format(staging, self._target)
        keys = sql.SQL(", ").join(map(sql.Identifier, self.key))
        updates = [c for c in columns if c not in self.key]
        action = (
            sql.SQL("DO UPDATE SET ")
            + sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                for c in updates
            )
            if updates
            else sql.SQL("DO NOTHING")
        )
        upsert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
            self._target, names, names, staging, keys, action
        )
        # The staging rows are deleted at once: several writes may share one transaction.
        return _WritePlan(
            before=[create],
            copy=copy.format(staging, names, options),
            copy_binary=copy.format(staging, names, binary),
            after=[upsert, sql.SQL("DELETE FROM {}").format(staging)],
        )


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """The statements of one write: an executemany INSERT, or COPY between setup steps."""

    insert: sql.Composed | None = None
    before: list[sql.Composed] = field(default_factory=list)
    copy: sql.Composed | None = None
    copy_binary: sql.Composed | None = None  # the same COPY in binary format
    after: list[sql.Composed] = field(default_factory=list)


def _mapping(item: Any) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    raise PermanentError(
        f"PostgresSink needs mappings (or columns= for sequences), got {type(item).__name__}"
    )


def _row(item: Any, columns: list[str]) -> Sequence[Any]:
    if isinstance(item, Mapping):
        return [item.get(c) for c in columns]
    return item  # type: ignore[no-any-return]


def table_types(conninfo: str, table: str, schema: str | None = None) -> dict[str, str] | None:
    """The columns of ``table`` and their types, or ``None`` when it does not exist."""
    with _connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = coalesce(%s, current_schema()) "
            "ORDER BY ordinal_position",
            (table, schema),
        ).fetchall()
    return dict(rows) or None


def create_table(
    conninfo: str,
    table: str,
    types: Mapping[str, str],
    *,
    schema: str | None = None,
    key: Sequence[str] = (),
) -> None:
    """Create ``table`` (if missing) with these column types and ``key`` as primary key."""
    target = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_DDL_TYPES[kind]))
        for name, kind in types.items()
    ]
    if key:
        columns.append(
            sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, key)))
        )
    with _connect(conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                target, sql.SQL(", ").join(columns)
            )
        )


# The DDL of the types freight.connectors.pgtypes knows (a fixed allow-list, never user text).
_DDL_TYPES = {
    "bigint": "bigint",
    "numeric": "numeric",
    "boolean": "boolean",
    "timestamptz": "timestamptz",
    "text": "text",
}


class AsyncPostgresSink:
    """The asyncio twin of :class:`PostgresSink` (``Job(executor="async")``, a ``Batcher``).

    The same arguments and outcomes: COPY, insert or upsert; a bad row fails alone;
    a lost connection is a :class:`~freight.TransientError`.
    """

    def __init__(
        self,
        conninfo: str,
        table: str,
        *,
        schema: str | None = None,
        columns: Sequence[str] | None = None,
        mode: Mode | None = None,
        key: str | Sequence[str] | None = None,
        pool_size: int = 2,
    ) -> None:
        # The sync sink validates and composes; its statements are reused here.
        self._sync = PostgresSink(
            conninfo, table, schema=schema, columns=columns, mode=mode, key=key, pool_size=1
        )
        self.conninfo, self.table, self.mode = conninfo, table, self._sync.mode
        self._pool_size = max(1, pool_size)
        self._pool: AsyncConnectionPool[Any] | None = None

    def __repr__(self) -> str:
        return f"AsyncPostgresSink({self.table!r}, mode={self.mode!r})"

    async def aclose(self) -> None:
        """Close the pool (a later write opens a new one, on the running event loop).

        A job with ``executor="async"`` calls it when its run ends, before its loop stops.
        """
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _connections(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self.conninfo, min_size=1, max_size=self._pool_size, open=False
            )
            try:
                await self._pool.open(wait=True, timeout=30)
            except psycopg.Error as exc:  # PoolTimeout: no connection in 30 s
                _reraise(exc)
        return self._pool

    async def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Write ``items``; return ``None``, or one outcome per item after isolating bad rows."""
        if not items:
            return None
        columns, rows = self._sync._rows(items)
        try:
            await self._write_rows(columns, rows)
        except psycopg.Error as exc:
            mapped = classify(exc)
            if isinstance(mapped, TransientError):
                raise mapped from exc
        else:
            return None
        return await aisolate(rows, _aclassified(lambda part: self._write_rows(columns, part)))

    async def _write_rows(self, columns: list[str], rows: list[Sequence[Any]]) -> None:
        plan = self._sync._plan(columns)
        pool = await self._connections()
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if plan.insert is not None:
                await cur.executemany(plan.insert, rows)
                return
            for statement in plan.before:
                await cur.execute(statement)
            assert plan.copy is not None
            assert plan.copy_binary is not None
            key = tuple(columns)
            if key not in self._sync._binary:
                await cur.execute(TYPES_SQL, (self.table, self._sync.schema))
                self._sync._binary[key] = binary_columns(await cur.fetchall(), columns)
            binary = self._sync.binary_for(columns, rows)
            async with cur.copy(plan.copy if binary is None else plan.copy_binary) as copy:
                if binary is not None:
                    copy.set_types(binary.names)
                for row in rows:
                    await copy.write_row(row)
            for statement in plan.after:
                await cur.execute(statement)
