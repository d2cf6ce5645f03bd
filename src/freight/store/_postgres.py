"""``PostgresStore``: the store in PostgreSQL, for jobs that run on many machines.

The same schema, statements and migrations as :class:`~freight.store.SqliteStore`,
rendered in PostgreSQL's dialect (``%s`` parameters, identity keys, row locks) and run
through psycopg 3; schema versions are recorded in ``freight_schema``.

A claim is a lease: the owner (host, pid) holds the run while its heartbeat is fresher
than ``stale_after``; a runner whose lease lapsed loses it to the next claimer. Claims
lock the run's row with ``SELECT … FOR UPDATE SKIP LOCKED``: two runners never both take
a run, and a claimer never queues behind another one: it is told "owned" at once.

It is a :class:`~freight.store.SharedTransactionStore`: a ``PostgresSink`` writing into
this same database commits each chunk's rows and checkpoint in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from freight._errors import StoreError
from freight.store._dialect import POSTGRES, Row, Transaction
from freight.store._records import ChunkCheckpoint, DeadLetter
from freight.store._sql import SqlStore, statements

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.rows
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("PostgresStore needs psycopg 3: pip install 'freight[postgres]'") from exc

__all__ = ["PostgresStore"]


class _PgTransaction:
    """The :class:`~freight.store._dialect.Transaction` primitive on a psycopg connection
    (the store's own, or a sink's for a shared transaction); rows come back as dicts."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:  # psycopg refuses an empty executemany
            with self._conn.cursor() as cur:
                cur.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())


class PostgresStore(SqlStore):
    """The store in a PostgreSQL database (``postgresql://user@host:5432/db``).

    Args:
        conninfo: a libpq connection string or URL; ``options=-csearch_path=…`` picks
            the schema holding freight's tables.
    """

    dialect = POSTGRES
    sql = statements(POSTGRES)

    def __init__(self, conninfo: str) -> None:
        self.path = conninfo
        try:
            self._pg = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store at {conninfo}: {exc}") from exc
        self._tx = _PgTransaction(self._pg)
        self._lock = threading.RLock()
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresStore({self.path!r})"

    @property
    def schema_version(self) -> int:
        """The schema version of the database (0 before freight created its tables)."""
        [present] = self.query("SELECT to_regclass('freight_schema') IS NOT NULL AS present")
        if not present["present"]:
            return 0
        [row] = self.query("SELECT coalesce(max(version), 0) AS version FROM freight_schema")
        return int(row["version"])

    def _migrate(self) -> None:
        with self.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS freight_schema (version integer NOT NULL)")
            tx.execute("LOCK TABLE freight_schema IN EXCLUSIVE MODE")  # one migrator at a time
            [row] = tx.query("SELECT coalesce(max(version), 0) AS version FROM freight_schema")
            self._apply_migrations(tx, int(row["version"]), _bump)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises.
        Statements use ``%s`` placeholders."""
        with self._lock, self._pg.transaction():
            yield self._tx

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; return its rows (dicts, columns by name)."""
        with self._lock:
            return self._tx.query(sql, params)

    def commit_chunk_on(
        self,
        conn: psycopg.Connection[Any],
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Record a chunk on ``conn``, inside the caller's transaction.

        A sink writing to this same database calls it in the transaction that holds the
        chunk's rows: rows and checkpoint commit together (exactly once, no key needed).
        """
        self._commit_chunk_in(_PgTransaction(conn), job_id, checkpoint, dead_letters)

    def same_database(self, conninfo: str) -> bool:
        """True if ``conninfo`` connects like this store (same database, user and options,
        so the same tables): then rows and checkpoints can share a transaction."""
        parse = psycopg.conninfo.conninfo_to_dict
        return parse(conninfo) == parse(self.path)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._pg.close()


def _bump(tx: Transaction, number: int) -> None:
    tx.execute("INSERT INTO freight_schema (version) VALUES (%s)", (number,))
