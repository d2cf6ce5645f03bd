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

A lost connection (the server restarted, the backend was terminated, the network
dropped it) is transient, as for the sink: the next transaction or query reconnects
and goes on. A connection found dead when a transaction begins or a query runs is
replaced and the statement sent again (it never ran); one lost in the middle of a
transaction raises :class:`~freight.TransientError` (the server rolled it back) and
the next call reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from freight._errors import StoreError, TransientError
from freight.store._dialect import POSTGRES, Row, Transaction
from freight.store._records import ChunkCheckpoint, DeadLetter
from freight.store._sql import SqlStore
from freight.store._statements import statements

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
        self._depth = 0  # transactions open in this thread (nested ones are savepoints)
        self._migrate()

    def _reconnect(self) -> None:
        """Replace a lost connection (the caller holds the lock)."""
        self._pg.close()
        try:
            self._pg = psycopg.connect(self.path, autocommit=True)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise TransientError(f"the PostgreSQL store is unreachable: {reason}") from exc
        self._tx = _PgTransaction(self._pg)

    def _live(self) -> psycopg.Connection[Any]:
        """The connection, replaced first if it is known to be lost."""
        if self._pg.broken or self._pg.closed:
            self._reconnect()
        return self._pg

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
            # Two processes opening a new store at once: CREATE TABLE IF NOT EXISTS races
            # in the catalog (duplicate pg_type key), so the first statement serialises them.
            tx.execute("SELECT pg_advisory_xact_lock(hashtextextended('freight schema', 0))")
            tx.execute("CREATE TABLE IF NOT EXISTS freight_schema (version integer NOT NULL)")
            tx.execute("LOCK TABLE freight_schema IN EXCLUSIVE MODE")  # one migrator at a time
            [row] = tx.query("SELECT coalesce(max(version), 0) AS version FROM freight_schema")
            self._apply_migrations(tx, int(row["version"]), _bump)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises.
        Statements use ``%s`` placeholders."""
        with self._lock, ExitStack() as stack:
            if self._depth:  # a savepoint of the transaction in progress
                stack.enter_context(self._pg.transaction())
            else:
                self._begin(stack)
            self._depth += 1
            try:
                yield self._tx
            except psycopg.OperationalError as exc:
                if not self._pg.broken:
                    raise
                raise TransientError(
                    f"lost the PostgreSQL store's connection in a transaction (rolled "
                    f"back; the next call reconnects): {' '.join(str(exc).split())}"
                ) from exc
            finally:
                self._depth -= 1

    def _begin(self, stack: ExitStack) -> None:
        """Begin a transaction; a connection found lost by ``BEGIN`` is replaced (the
        block has not run yet, so nothing is sent twice)."""
        try:
            stack.enter_context(self._live().transaction())
        except psycopg.OperationalError:
            if not self._pg.broken:
                raise
            self._reconnect()
            stack.enter_context(self._pg.transaction())

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; return its rows (dicts, columns by name). A query is a read:
        one that met a lost connection is sent again on a new one."""
        with self._lock:
            live = self._live()
            try:
                return self._tx.query(sql, params)
            except psycopg.OperationalError:
                if self._depth or not live.broken:
                    raise
                self._reconnect()
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
