"""``SqliteStore``: the embedded default store (WAL mode, ``.freight/freight.db``).

A store that cannot serve is refused when it is opened, with one
:class:`~freight.StoreError` naming the file and what to do: a file that is not a
SQLite database, one truncated (shorter than its header says) or corrupt, a read-only
file, a folder where SQLite cannot create the WAL's ``-wal`` and ``-shm`` files, a
schema newer than this freight. The same errors met later (a page found corrupt by a
query) are raised the same way (:func:`store_error`). A store another process holds
is waited for (``busy_timeout``), then a :class:`~freight.TransientError`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from freight._core._time import to_seconds
from freight._errors import StoreError, TransientError
from freight.store._dialect import SQLITE, Row, Transaction
from freight.store._sql import SqlStore
from freight.store._statements import statements

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
        read_only: open an existing store only to read it (``status``, ``report``,
            ``list``): nothing is created, migrated or written, so a missing store is a
            :class:`~freight.StoreError` ("no store at …") and a read-only file or
            folder can still be shown.
    """

    dialect = SQLITE
    sql = statements(SQLITE)

    def __init__(
        self, path: str | Path = DEFAULT_PATH, *, busy_timeout: float = 30.0,
        read_only: bool = False,
    ) -> None:  # fmt: skip
        self.path = path if path == ":memory:" else Path(path)
        self.busy_timeout = to_seconds(busy_timeout, "busy_timeout")
        self.read_only = bool(read_only) and isinstance(self.path, Path)
        if self.read_only:
            self._db = self._connect_read_only()
        else:
            if isinstance(self.path, Path):
                _check_file(self.path)
            try:
                self._db = sqlite3.connect(
                    self.path, timeout=self.busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        self._db.row_factory = sqlite3.Row
        self._tx = _SqliteTransaction(self._db)
        self._lock = threading.RLock()
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _connect_read_only(self) -> sqlite3.Connection:
        """A read-only connection to the existing store (``mode=ro``); where SQLite cannot
        open it so (a WAL store in a read-only folder, without its ``-shm`` file), an
        ``immutable`` one, which reads the file as it is."""
        path = Path(self.path)
        if not path.is_file():
            raise StoreError(f"no store at {path}")
        _check_file(path, writable=False)
        uri = path.resolve().as_uri()
        last: sqlite3.Error | None = None
        for options in ("mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(
                    f"{uri}?{options}", uri=True, timeout=self.busy_timeout,
                    isolation_level=None, check_same_thread=False,
                )  # fmt: skip
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as exc:
                last = exc
                continue
            return db
        assert last is not None
        raise self._error(last) from last

    def _open(self) -> None:
        """Set the connection up and bring the schema to this freight's version."""
        if self.read_only:
            self._db.execute("PRAGMA query_only=ON")
            if self.schema_version == 0:  # made by a process killed before its tables were
                self._db.close()  # committed (migrations are one transaction): none yet
                raise StoreError(f"no store at {self.path} (the file holds no freight tables)")
            return
        with self._mapped():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as tx:
            version = self.schema_version
            self._apply_migrations(tx, version, _bump)
            # Writing the header now finds a read-only file at once, not at the
            # first checkpoint of a run that has started.
            _bump(tx, self.schema_version)

    def _error(self, error: sqlite3.Error) -> BaseException:
        return store_error(error, self.path, self.busy_timeout)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """sqlite3's errors about the store itself as freight's (:func:`store_error`)."""
        try:
            yield
        except sqlite3.Error as exc:
            mapped = self._error(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False) -> SqliteStore:
        """Open ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a path
        (``read_only``: see the class)."""
        if url.startswith("sqlite:///"):
            return cls(url.removeprefix("sqlite:///") or DEFAULT_PATH, read_only=read_only)
        if "://" in url:
            raise StoreError(
                f"unsupported store URL {url!r}: use sqlite:///path/to/file.db, or "
                "postgresql://user@host:5432/db for a PostgreSQL store"
            )
        return cls(url, read_only=read_only)

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
        with self._lock, self._mapped():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                if self._db.in_transaction:  # SQLite may have rolled back already
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; return its rows (``sqlite3.Row``, columns by name)."""
        with self._lock, self._mapped():
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _bump(tx: Transaction, number: int) -> None:
    # PRAGMA takes no bound parameters; ``number`` is an int from the migration list.
    tx.execute(f"PRAGMA user_version = {number:d}")


# -- what is wrong with a store file, said once ---------------------------------------------

_HEADER = b"SQLite format 3\x00"


def _check_writable(path: Path) -> None:
    """Refuse a store file this process cannot write (read-only, immutable), asked of
    the file itself: SQLite may otherwise take it through a descriptor another
    connection of this process opened before, and write into its WAL alone."""
    try:
        with path.open("r+b"):
            pass
    except PermissionError as exc:
        raise StoreError(
            f"the store {path} is read-only (attempt to write a readonly database); "
            "freight writes its runs "
            "there: make it writable or give another store path"
        ) from exc
    except OSError:
        pass  # anything else: SQLite says what it is when it opens the file


def _check_file(path: Path, *, writable: bool = True) -> None:
    """Refuse a store path that cannot be a store, before SQLite opens it: a folder, a
    folder that cannot be created, a file that is not a SQLite database, one truncated.

    An empty file is a new database to SQLite, and so to freight.
    """
    if path.is_dir():
        raise StoreError(
            f"the store {path} is a folder; give a file path such as {path / 'freight.db'}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of the store {path}: {exc}") from exc
    try:
        with path.open("rb") as file:
            header = file.read(100)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return  # a new store
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from exc
    if writable:
        _check_writable(path)
    if not header:
        return
    if header[: len(_HEADER)] != _HEADER[: len(header)]:
        raise StoreError(
            f"the store {path} is not a SQLite database (it holds something else); "
            "move it away or give another store path"
        )
    if len(header) < 100:
        raise StoreError(f"the store {path} is truncated ({size} bytes, not even its header)")
    pages = _expected_pages(header)
    page_size = int.from_bytes(header[16:18], "big") or 65536
    if pages and size < pages * page_size and not _journaled(path):
        raise StoreError(
            f"the store {path} is truncated: {size:,} bytes where its header says "
            f"{pages * page_size:,}; restore it from a backup or move it away"
        )


def _journaled(path: Path) -> bool:
    """Whether a WAL or rollback journal next to ``path`` may still hold pages the file
    lacks (a checkpoint under way writes the header before the pages after it)."""
    for suffix in ("-wal", "-journal"):
        journal = path.with_name(path.name + suffix)
        try:
            if journal.stat().st_size:
                return True
        except FileNotFoundError:
            continue
    return False


def _expected_pages(header: bytes) -> int:
    """The database size in pages the header gives, or 0 when SQLite would not trust it
    (written by an old library: its change counter and 'valid for' number differ)."""
    change_counter = header[24:28]
    valid_for = header[92:96]
    pages = int.from_bytes(header[28:32], "big")
    return pages if change_counter == valid_for else 0


def store_error(error: sqlite3.Error, path: Path | str, busy_timeout: float) -> BaseException:
    """Map a ``sqlite3`` error about the store file to freight's, naming the file.

    - locked by another writer past ``busy_timeout``: :class:`~freight.TransientError`;
    - not a database, corrupt, read-only, cannot be opened or written (its folder,
      a full disk): :class:`~freight.StoreError`, saying what to do.

    Anything else (a constraint, a statement of freight's) is returned as it is.
    """
    name = getattr(error, "sqlite_errorname", "") or ""
    message: str | None = None
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        mapped: BaseException = TransientError(
            f"the store {path} is locked by another writer (waited {busy_timeout:g} s): {error}"
        )
        mapped.__cause__ = error
        return mapped
    if name == "SQLITE_NOTADB":
        message = (
            f"the store {path} is not a SQLite database ({error}); "
            "move it away or give another store path"
        )
    elif name.startswith("SQLITE_CORRUPT"):
        message = f"the store {path} is corrupt ({error}); restore it from a backup or move it away"
    elif name.startswith("SQLITE_READONLY"):
        message = (
            f"the store {path} is read-only ({error}); freight writes its runs there: "
            "make it writable or give another store path"
        )
    elif name.startswith("SQLITE_CANTOPEN"):
        folder = Path(path).parent
        message = (
            f"cannot open the store {path} ({error}): SQLite must write it and create its "
            f"-wal and -shm files next to it, so {folder} must be writable"
        )
    elif name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PERM")):
        message = f"cannot read or write the store {path} ({error})"
    if message is None:
        return error
    mapped = StoreError(message)
    mapped.__cause__ = error
    return mapped
