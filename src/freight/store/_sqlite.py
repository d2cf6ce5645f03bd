"""``SqliteStore``: the embedded default store (WAL mode, ``.freight/freight.db``)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from freight._errors import StoreError
from freight.store._dialect import SQLITE, Row, Transaction
from freight.store._sql import SqlStore, statements

__all__ = ["DEFAULT_PATH", "SqliteStore"]

DEFAULT_PATH = Path(".freight") / "freight.db"


class _SqliteTransaction:
    """The :class:`~freight.store._dialect.Transaction` primitive on a sqlite3 connection."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()


class SqliteStore(SqlStore):
    """The store in one SQLite file, safe for threads and for several processes.

    SQLite serialises writers itself (``BEGIN IMMEDIATE``), so a claim needs no row lock.

    Args:
        path: the database file (its folder is created), or ``":memory:"``.
        busy_timeout: seconds a writer waits for another process's transaction.
    """

    dialect = SQLITE
    sql = statements(SQLITE)

    def __init__(self, path: str | Path = DEFAULT_PATH, *, busy_timeout: float = 30.0) -> None:
        self.path = path if path == ":memory:" else Path(path)
        if isinstance(self.path, Path):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store folder {self.path.parent}: {exc}"
                ) from exc
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._tx = _SqliteTransaction(self._db)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as tx:
            self._apply_migrations(tx, self.schema_version, _bump)

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """Open ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a path."""
        if url.startswith("sqlite:///"):
            return cls(url.removeprefix("sqlite:///") or DEFAULT_PATH)
        if "://" in url:
            raise StoreError(
                f"unsupported store URL {url!r}: use sqlite:///path/to/file.db, or "
                "postgresql://user@host:5432/db for a PostgreSQL store"
            )
        return cls(url)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self.query("PRAGMA user_version")[0]["user_version"])

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``): committed when the block ends,
        rolled back if it raises. Statements use ``?`` placeholders."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; return its rows (``sqlite3.Row``, columns by name)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _bump(tx: Transaction, number: int) -> None:
    # PRAGMA takes no bound parameters; ``number`` is an int from the migration list.
    tx.execute(f"PRAGMA user_version = {number:d}")
