"""``PostgresSource``: rows of a PostgreSQL table or query for bulk jobs, read in key order
and resumed by key (keyset reads), never the whole table at once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

from freight._core._source import Record, SourceSize
from freight._errors import ConfigError
from freight.connectors._pgerrors import _connect

try:
    import psycopg.rows
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = ["PostgresSource"]


class PostgresSource:
    """Rows of a PostgreSQL table or query, streamed by a server-side cursor in key order.

    Reading is keyset-paginated on ``key`` (an integer column, unique and indexed):
    a record's position is its key, so a resumed job asks the server for
    ``key >= position`` instead of reading what is done again.

    Args:
        conninfo: a libpq connection string or URL.
        table: the table, taken literally (quoted).
        key: the integer key column to order and resume by.
        schema: the table's schema (default: the search path).
        columns: the columns to read (default: all).
        batch_size: rows fetched from the server at a time.
        query: instead of ``table``, a ``SELECT`` whose rows include ``key``; it is
            wrapped as ``SELECT * FROM (query) WHERE key >= %s ORDER BY key``. It is
            code, like the argument of ``cursor.execute``: never build it from end-user
            text (pass values as a view's or the query's own literals you control).
    """

    def __init__(
        self,
        conninfo: str,
        table: str | None = None,
        *,
        key: str,
        schema: str | None = None,
        columns: Sequence[str] | None = None,
        batch_size: int = 10_000,
        query: str | None = None,
    ) -> None:
        if (table is None) == (query is None) or not (table or query):
            raise ConfigError("PostgresSource needs a table or a query= (one of them)")
        if not key:
            raise ConfigError("PostgresSource needs a key column (key=...) to order and resume by")
        self.conninfo = conninfo
        self.table = table
        self.query = query
        self.key = key
        self.schema = schema
        self.columns = list(columns) if columns is not None else None
        self.batch_size = batch_size
        if query is not None:
            # Taken as it is: a '%' in it is SQL (modulo, LIKE), not a placeholder.
            text = query.strip().rstrip(";").replace("%", "%%")
            self._target: sql.Composable = sql.SQL("({}) AS freight_source").format(sql.SQL(text))
        else:
            assert table is not None
            self._target = sql.Identifier(schema, table) if schema else sql.Identifier(table)

    def fingerprint(self) -> str:
        """The source's identity (table or query, and key): rows change, identity does not."""
        if self.query is not None:
            digest = hashlib.sha256(self.query.encode()).hexdigest()[:16]
            return f"postgres-query:{digest}:{self.key}"
        return f"postgres:{self.schema or ''}.{self.table}:{self.key}"

    def size(self) -> SourceSize:
        """The planner's row estimate (``pg_class.reltuples``, or the query plan's rows):
        cheap, approximate."""
        with _connect(self.conninfo) as conn:
            if self.query is not None:
                plan = conn.execute(
                    sql.SQL("EXPLAIN (FORMAT JSON) SELECT * FROM {}").format(self._target), ()
                ).fetchone()
                rows = plan[0][0]["Plan"]["Plan Rows"] if plan else None
                return SourceSize(items=int(rows) if rows is not None else None)
            row = conn.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                (self._target.as_string(conn),),
            ).fetchone()
        estimate = row[0] if row and row[0] is not None and row[0] >= 0 else None
        return SourceSize(items=estimate)

    def read(self, start: tuple[int, int] | None = None) -> Iterator[Record]:
        """Records in key order from ``start`` (a key) to the end."""
        names = (
            sql.SQL(", ").join(map(sql.Identifier, self.columns)) if self.columns else sql.SQL("*")
        )
        query = sql.SQL("SELECT {} FROM {} WHERE {} >= %s ORDER BY {}").format(
            names, self._target, sql.Identifier(self.key), sql.Identifier(self.key)
        )
        low = start[0] if start is not None else -(2**63)
        with (
            _connect(self.conninfo) as conn,
            conn.transaction(),
            conn.cursor(name="freight_source", row_factory=psycopg.rows.dict_row) as cursor,
        ):
            cursor.itersize = self.batch_size
            cursor.execute(query, (low,))
            for row in cursor:
                value = row[self.key]
                yield Record(value, value, row, None, "", self.key)
