"""PostgreSQL for freight (extra ``freight[postgres]``): the sinks, the source, the tables.

- The public names live here: :class:`PostgresSink` and :data:`Mode` are defined in
  :mod:`freight.connectors._pgsink` (its docstring holds the rules of a write),
  :class:`PostgresSource` in :mod:`freight.connectors._pgsource`; both re-exported.
- :class:`AsyncPostgresSink` is the sync sink's asyncio twin: it plans with a
  :class:`PostgresSink` and only awaits what that one runs, so the two write the same.
- Table functions (:func:`table_types`, :func:`create_table`, :func:`where_tables`)
  open a connection of their own; identifiers are composed with ``psycopg.sql``,
  column types come from a fixed allow-list (``_DDL_TYPES``), never from user text.
- Errors are mapped to freight's classes in one place, :func:`classify`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from freight._errors import ConfigError, TargetError
from freight.connectors._isolate import Refused, aisolate, arun_located, locate, settled
from freight.connectors._pgerrors import (
    _connect,
    _reraise,
    aclassified,
    classify,
    met_twice,
    row_refusal,
    unsendable_error,
)
from freight.connectors._pgplan import ROLLBACK, _statements, _WritePlan
from freight.connectors._pgsink import COLUMNS_SQL, Mode, PostgresSink
from freight.connectors._pgsource import PostgresSource
from freight.connectors.pgtypes import check_row

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool
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

MAX_COLUMNS = 1600  # PostgreSQL's limit on the columns of a table


def where_tables(conninfo: str, schema: str | None = None) -> tuple[str, ...]:
    """Where a table of ``schema`` (default: the search path's) is, through
    ``conninfo``: the server's address and port, the database and the schema; two
    connection strings reach the same tables when these are equal."""
    with _connect(conninfo) as conn:
        row = conn.execute(
            "SELECT coalesce(inet_server_addr()::text, ''), coalesce(inet_server_port(), 0),"
            " current_database(), coalesce(%s, current_schema(), '')",
            (schema,),
        ).fetchone()
    assert row is not None
    return tuple(str(value) for value in row)


def table_types(conninfo: str, table: str, schema: str | None = None) -> dict[str, str] | None:
    """The columns of ``table`` and their types, or ``None`` when it does not exist."""
    with _connect(conninfo) as conn:
        rows = conn.execute(COLUMNS_SQL, (table, schema)).fetchall()
    return dict(rows) or None


def create_table(
    conninfo: str,
    table: str,
    types: Mapping[str, str],
    *,
    schema: str | None = None,
    key: Sequence[str] = (),
) -> None:
    """Create ``table`` (if missing) with these column types and ``key`` as primary key.

    Raises :class:`~freight.ConfigError` for more columns than PostgreSQL allows
    (1,600), or fixed-width columns a row cannot hold
    (:func:`~freight.connectors.pgtypes.check_row`), before anything is created, and
    :class:`~freight.TargetError` when the server refuses the table (no such schema, no
    privilege).
    """
    if len(types) > MAX_COLUMNS:
        raise ConfigError(
            f"cannot create {table!r} with {len(types):,} columns: PostgreSQL allows at "
            f"most {MAX_COLUMNS:,} columns in a table"
        )
    check_row(table, types)
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
        try:
            with conn.transaction():
                # Two loads creating the same table at once: CREATE TABLE IF NOT EXISTS
                # races in the catalog (duplicate pg_type key), so they take turns.
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [f"freight create table {target.as_string(conn)}"],
                )
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                        target, sql.SQL(", ").join(columns)
                    )
                )
        except psycopg.Error as exc:
            _reraise(exc)


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
        """Write ``items``; return ``None``, or one outcome per item when some failed
        (the same plan as :meth:`PostgresSink.write`)."""
        if not items:
            return None
        sink = self._sync
        planned, refused = sink._runs(items)
        outcomes: list[Any] = [None] * len(items)
        pool = await self._connections()
        try:
            async with pool.connection() as conn, conn.transaction():
                if sink._stale(planned):
                    async with conn.cursor() as cur:
                        await cur.execute(COLUMNS_SQL, (self.table, sink.schema))
                        sink._learn(await cur.fetchall())
                for index, (plan, columns, rows, places) in enumerate(
                    sink._parts(planned, refused)
                ):
                    written = await self._write_all(conn, plan, columns, rows, start=index == 0)
                    if written.count(None) == len(written):
                        continue  # the rule: every row went in
                    for place, outcome in zip(places, written, strict=True):
                        outcomes[place] = outcome
        except psycopg.Error as exc:
            mapped = sink._unstaged(classify(exc))
            if isinstance(mapped, TargetError):
                return [mapped] * len(items)
            _reraise(exc)
        return settled(outcomes, refused)

    async def _write_all(
        self,
        conn: psycopg.AsyncConnection[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        *,
        start: bool,
    ) -> list[Any]:
        """:meth:`PostgresSink._write_all`, awaited."""
        sink = self._sync
        sink._types_of(columns)  # and the binary COPY types
        async with conn.cursor() as cur:
            if start:
                await cur.execute(plan.start)

            async def write(indices: list[int]) -> Refused | None:
                part = rows if len(indices) == len(rows) else [rows[i] for i in indices]
                sent = [0]
                error = await self._try(cur, plan, columns, part, sent)
                if error is None:
                    return None
                return Refused(
                    sink._unstaged(classify(error)), sink._located(error, plan, part, sent[0])
                )

            async def run(part: list[Any]) -> None:
                error = await self._try(cur, plan, columns, part, [0])
                if error is not None:
                    raise error

            async def bisect(indices: list[int], error: BaseException) -> list[Any]:
                part = [rows[i] for i in indices]
                isolated = await aisolate(part, aclassified(run), failed=error)
                return list(map(sink._unstaged, isolated))

            return await arun_located(locate(len(rows)), write, bisect)

    async def _try(
        self,
        cur: psycopg.AsyncCursor[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        sent: list[int],
    ) -> psycopg.Error | None:
        """:meth:`PostgresSink._try`, awaited."""
        done, last_wins = plan.done, plan.done_last_wins
        while True:
            try:
                try:
                    await self._execute(cur, plan, columns, rows, sent)
                except UnicodeEncodeError as exc:  # a lone surrogate: psycopg cannot send it
                    raise unsendable_error(exc) from exc
                await cur.execute(done)
            except psycopg.Error as exc:
                if not cur.connection.broken:
                    await cur.execute(ROLLBACK)
                if last_wins is not None and met_twice(exc):  # again, the last of each key
                    done, last_wins = last_wins, None
                    continue
                if row_refusal(exc) is None:
                    raise
                return exc
            return None

    async def _execute(
        self,
        cur: psycopg.AsyncCursor[Any],
        plan: _WritePlan,
        columns: list[str],
        rows: list[Any],
        sent: list[int],
    ) -> None:
        if plan.insert is not None:
            await cur.executemany(plan.insert, rows)
            return
        if plan.pipelined:
            refused: psycopg.Error | None = None
            try:
                async with cur.connection.pipeline():
                    try:
                        for statement, values in _statements(rows, cur):
                            await cur.executemany(statement, values)
                    except psycopg.Error as exc:
                        refused = exc
            except psycopg.errors.PipelineAborted:  # the block's end: ``refused`` again
                if refused is None:
                    raise
            if refused is not None:
                raise refused
            return
        assert plan.copy is not None
        assert plan.copy_binary is not None
        binary = self._sync.binary_for(columns, rows)
        async with cur.copy(plan.copy if binary is None else plan.copy_binary) as copy:
            if binary is not None:
                copy.set_types(binary.names)
            at = 0
            try:
                for at, row in enumerate(rows):  # noqa: B007 (read in the handler)
                    await copy.write_row(row)
            except BaseException:
                sent[0] = at
                raise
