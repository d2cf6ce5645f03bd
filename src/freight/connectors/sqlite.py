"""``SqliteSink``: insert or upsert job items (mappings) into a SQLite table (stdlib only).

Identifiers (table and column names) are quoted, whatever characters they hold;
values are always bound parameters, never formatted into SQL. One transaction per
write call: a failing call rolls back, and the job's retry policy bisects the
chunk to isolate the bad rows. Errors are mapped to freight's classes in one place,
:func:`classify`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from freight._errors import ConfigError, PermanentError, TransientError
from freight.connectors._isolate import isolate

__all__ = ["AsyncSqliteSink", "SqliteSink", "classify", "quote_identifier", "sqlite_path"]

_BUSY = {"SQLITE_BUSY", "SQLITE_LOCKED"}


def classify(error: BaseException) -> BaseException:
    """Map a ``sqlite3`` error to freight's transient or permanent class (original as cause).

    - A database another connection holds past the busy timeout (``SQLITE_BUSY``,
      ``SQLITE_LOCKED``) is :class:`~freight.TransientError`: the job's ``Retry`` tries again.
    - A row the database refuses (``sqlite3.IntegrityError``: a null in a ``NOT NULL``
      column, a unique or check violation) is :class:`~freight.PermanentError`.
    - Anything else (a freight error already, a broken statement) is returned as it is.
    """
    mapped: BaseException
    # sqlite_errorname is set on the errors sqlite3 raises, not on one made by hand
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorname", None) in _BUSY:
        mapped = TransientError(f"SQLite database busy: {error}")
    elif isinstance(error, sqlite3.IntegrityError):
        mapped = PermanentError(f"IntegrityError: {error}")
    else:
        return error
    mapped.__cause__ = error
    return mapped


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (double quotes doubled inside)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConfigError(f"an SQL identifier must be a non-empty string without NUL, got {name!r}")
    return '"' + name.replace('"', '""') + '"'


def sqlite_path(url: str) -> Path:
    """The file of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigError(f"expected a SQLite URL like sqlite:///path/to/file.db, got {url!r}")
    return Path(url.removeprefix("sqlite:///"))


def _affinity(value: Any) -> str:
    if isinstance(value, bool | int):
        return "INTEGER"
    if isinstance(value, float):
        return "REAL"
    if isinstance(value, bytes):
        return "BLOB"
    return "TEXT"


class SqliteSink:
    """Write mappings into ``table`` of the SQLite file at ``path``.

    Args:
        path: the database file (or a ``sqlite:///`` URL).
        table: the table, taken literally (quoted); created if missing, with the
            columns of the first item (types from its values).
        key: column(s) identifying a row; with ``mode="upsert"`` (the default when
            a key is given) a row with the same key is updated, which makes a
            replayed chunk harmless: exactly-once in effect.
        mode: ``"insert"`` or ``"upsert"``.
    """

    def __init__(
        self,
        path: str | Path,
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        mode: Literal["insert", "upsert"] | None = None,
    ) -> None:
        self.path = sqlite_path(path) if isinstance(path, str) and "://" in path else Path(path)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._lock = threading.Lock()
        self._columns: list[str] | None = self._existing_columns()

    def __repr__(self) -> str:
        return f"SqliteSink({str(self.path)!r}, {self.table!r}, key={self.key!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for worker processes): the connection is reopened on arrival."""
        state = self.__dict__.copy()
        del state["_db"], state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._db = self._connect()
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _existing_columns(self) -> list[str] | None:
        rows = self._db.execute(f"PRAGMA table_info({self._table})").fetchall()
        return [row[1] for row in rows] or None

    def _ensure_table(self, first: Mapping[str, Any]) -> list[str]:
        if self._columns is not None:
            return self._columns
        columns = list(first)
        missing = [k for k in self.key if k not in columns]
        if missing:
            raise ConfigError(f"key column(s) {missing} are not among the item's fields {columns}")
        body = ", ".join(f"{quote_identifier(c)} {_affinity(first[c])}" for c in columns)
        if self.key:
            body += f", PRIMARY KEY ({', '.join(map(quote_identifier, self.key))})"
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {self._table} ({body})")
        self._columns = self._existing_columns() or columns
        return self._columns

    def _statement(self, columns: list[str]) -> str:
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
        return sql

    def write(self, items: list[Mapping[str, Any]], context: object = None) -> list[Any] | None:
        """Write ``items`` in one transaction; return ``None``, or one outcome per item.

        When some rows fail (a constraint, an unknown field), the call is bisected: the
        good rows are committed and each bad row gets its own error.
        """
        if not items:
            return None
        with self._lock:
            columns = self._ensure_table(items[0])
            try:
                self._write_items(columns, items)
            except PermanentError:  # a bad row: find it (them) by bisection, keep the rest
                return isolate(items, lambda part: self._write_items(columns, part))
            return None

    def _write_items(self, columns: list[str], items: list[Mapping[str, Any]]) -> None:
        """One transaction; raises freight's classes (:func:`classify`)."""
        rows = []
        for item in items:
            unknown = set(item) - set(columns)
            if unknown:
                raise PermanentError(
                    f"fields {sorted(unknown)} are not columns of {self.table!r} "
                    f"(its columns: {columns}); drop them from the item or add the columns"
                )
            rows.append([item.get(c) for c in columns])
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(self._statement(columns), rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            mapped = classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


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
    ) -> None:
        self._args = (path, table, key, mode)
        self._sync: SqliteSink | None = SqliteSink(path, table, key=key, mode=mode)
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
            path, table, key, mode = self._args
            self._sync = SqliteSink(path, table, key=key, mode=mode)
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
