"""The SQLite layer under :mod:`freight.connectors.sqlite`: errors, identifiers, tables.

Rules of this module (the sinks in ``sqlite.py`` build on it, never the reverse):

- every ``sqlite3`` error is mapped to freight's classes in one place, :func:`classify`;
  a statement run here goes through :func:`_run`, which applies it;
- identifiers (table and column names) are quoted by :func:`quote_identifier`, whatever
  characters they hold; values are never formatted into SQL;
- a table name, its columns and its key are checked (:func:`_check_table`,
  :func:`_check_columns`) before anything is created: a :class:`~freight.ConfigError`
  names what is wrong;
- a connection is opened by :func:`_connect` alone (busy timeout first; only a database
  it creates is made WAL).

The public names here are exported by :mod:`freight.connectors.sqlite`, and documented
as its own.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from freight._core._time import to_seconds
from freight._errors import ConfigError, PermanentError, TargetError, TransientError
from freight.connectors._sqltypes import DDL_TYPES, canonical_types, freight_type

SQLITE_MAX_COLUMN = 2000
"""SQLite's default limit on the columns of a table (``SQLITE_MAX_COLUMN``); the limit
actually checked is the one the linked SQLite library reports."""

_BUSY = {"SQLITE_BUSY", "SQLITE_LOCKED"}
# Error codes (and their extended forms) that refuse the statement, not a row.
_TARGET = (
    "SQLITE_ERROR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB",
    "SQLITE_FULL", "SQLITE_PERM", "SQLITE_AUTH", "SQLITE_IOERR",
)  # fmt: skip


def classify(error: BaseException) -> BaseException:
    """Map a ``sqlite3`` error to freight's transient or permanent class (original as cause).

    - A database another connection holds past the busy timeout (``SQLITE_BUSY``,
      ``SQLITE_LOCKED``) is :class:`~freight.TransientError`: the job's ``Retry`` tries again.
    - A statement the database refuses whatever the rows hold (no such table or column,
      an upsert key the table has no unique index for: ``SQLITE_ERROR``; a read-only,
      corrupt, full or unopenable file) is a :class:`~freight.TargetError`: not any
      row's fault, so it is never bisected into one dead letter per row.
    - A row the database refuses (``sqlite3.IntegrityError``: a null in a ``NOT NULL``
      column, a unique or check violation, a datatype mismatch; a value too big, or
      one sqlite3 cannot bind) is :class:`~freight.PermanentError`.
    - Anything else (a freight error already, a closed connection) is returned as it is.
    """
    mapped: BaseException
    # sqlite_errorname is set on the errors sqlite3 raises, not on one made by hand
    name = getattr(error, "sqlite_errorname", None) or ""
    if isinstance(error, sqlite3.Error) and name in _BUSY:
        mapped = TransientError(f"SQLite database busy: {error}")
    elif isinstance(error, sqlite3.OperationalError) and name.startswith(_TARGET):
        mapped = TargetError(f"the target refuses the write: {error}")
    elif isinstance(error, sqlite3.IntegrityError):
        mapped = PermanentError(f"IntegrityError: {error}")
    elif name == "SQLITE_TOOBIG" or (
        isinstance(error, sqlite3.ProgrammingError) and str(error).startswith("Error binding")
    ):
        mapped = PermanentError(str(error))
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


# -- tables: names, limits, creation -----------------------------------------------------


def _check_table(table: str) -> None:
    """Refuse a table name SQLite cannot take: empty, or reserved (``sqlite_…``)."""
    if not isinstance(table, str) or not table.strip():
        raise ConfigError(f"the SQLite table name must not be empty, got {table!r}")
    if table.lower().startswith("sqlite_"):
        raise ConfigError(
            f"the table name {table!r} is reserved by SQLite (names starting with "
            "'sqlite_' are its own); choose another table name"
        )
    quote_identifier(table)  # no NUL


@functools.cache
def _column_limit() -> int:
    """The most columns a table may have in the linked SQLite (``SQLITE_MAX_COLUMN``)."""
    with closing(sqlite3.connect(":memory:")) as db:
        return int(db.getlimit(sqlite3.SQLITE_LIMIT_COLUMN))


def _check_columns(table: str, columns: Sequence[str], key: Sequence[str]) -> None:
    """Refuse, before anything is created, columns a SQLite table cannot have."""
    if not columns:
        raise ConfigError(f"table {table!r} needs at least one column")
    for position, column in enumerate(columns, start=1):
        if not isinstance(column, str) or not column:
            raise ConfigError(f"column {position} of table {table!r} has an empty name")
        quote_identifier(column)
    limit = _column_limit()
    if len(columns) > limit:
        raise ConfigError(
            f"table {table!r} would have {len(columns):,} columns, more than SQLite allows "
            f"({limit:,}, SQLITE_MAX_COLUMN); load fewer columns"
        )
    missing = [k for k in key if k not in columns]
    if missing:
        raise ConfigError(f"key column(s) {missing} are not among the columns of {table!r}")


def _create(
    db: sqlite3.Connection, table: str, declared: Mapping[str, str], key: Sequence[str]
) -> None:
    """``CREATE TABLE IF NOT EXISTS`` with these declared types; key columns NOT NULL
    (SQLite would otherwise accept NULL in a primary key, and an upsert never matches it)."""
    body = ", ".join(
        f"{quote_identifier(c)} {kind}" + (" NOT NULL" if c in key else "")
        for c, kind in declared.items()
    )
    if key:
        body += f", PRIMARY KEY ({', '.join(map(quote_identifier, key))})"
    _run(db, f"CREATE TABLE IF NOT EXISTS {quote_identifier(table)} ({body})")


def _run(db: sqlite3.Connection, statement: str) -> list[Any]:
    """One statement, sqlite3's errors mapped (:func:`classify`)."""
    try:
        return db.execute(statement).fetchall()
    except sqlite3.Error as exc:
        mapped = classify(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the target, its busy timeout set before any statement.

    The user's database keeps its journal mode: switching it (to WAL) is a change of
    their file nobody asked for, and a statement the busy timeout does not cover (it
    failed at once, "database is locked", while another connection held the lock). Only
    a database this sink creates (no file, or an empty one) is made WAL, which readers
    of a long load prefer; a lock met there is left as it is.
    """
    new = not path.exists() or path.stat().st_size == 0
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    if new:
        try:
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # another connection got there first: its mode stays
        except BaseException:
            db.close()
            raise
    return db


def _declared_types(db: sqlite3.Connection, table: str) -> dict[str, str] | None:
    rows = _run(db, f"PRAGMA table_info({quote_identifier(table)})")
    return {row[1]: row[2] for row in rows} or None


def create_table(
    path: str | Path,
    table: str,
    types: Mapping[str, str],
    *,
    key: Sequence[str] = (),
    busy_timeout: float = 30.0,
) -> None:
    """Create ``table`` (if missing) with these column types and ``key`` as primary key.

    ``types`` are freight's (PostgreSQL) type names, as
    :func:`~freight.connectors.pgtypes.infer_types` gives them; each becomes the SQLite
    type of the module's table. The name (empty, reserved ``sqlite_…``), the columns
    (empty names, more than SQLite allows) and the key are checked before anything is
    created: a :class:`~freight.ConfigError` names what is wrong.
    """
    _check_table(table)
    kinds = canonical_types(types)
    _check_columns(table, list(kinds), key)
    target = _file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(_connect(target, to_seconds(busy_timeout, "busy_timeout"))) as db:
        _create(db, table, {c: DDL_TYPES[k] for c, k in kinds.items()}, key)


def table_types(path: str | Path, table: str) -> dict[str, str] | None:
    """The columns of ``table`` and their freight types, or ``None`` when it does not exist
    (nor the file). A column SQLite declares with a type freight does not know is text."""
    _check_table(table)
    target = _file(path)
    if not target.exists():
        return None
    with closing(sqlite3.connect(target, timeout=30)) as db:
        declared = _declared_types(db, table)
    return None if declared is None else {c: freight_type(d) for c, d in declared.items()}


def _file(path: str | Path) -> Path:
    return sqlite_path(path) if isinstance(path, str) and "://" in path else Path(path)


def _target_error(error: ConfigError | TargetError) -> TargetError:
    """A table-level refusal met while writing, as the TargetError every row gets."""
    if isinstance(error, TargetError):
        return error
    refused = TargetError(str(error))
    refused.__cause__ = error
    return refused
