"""How the PostgreSQL connector meets its server: errors mapped to freight's classes in
one place (:func:`classify`), and connections opened with freight's errors."""

from __future__ import annotations

from typing import Any, NoReturn

from freight._errors import ConfigError, PermanentError, TransientError

try:
    import psycopg
    import psycopg.conninfo
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.postgres needs psycopg 3: pip install 'freight[postgres]'"
    ) from exc

__all__ = ["_connect", "_reraise", "_where", "classify"]


def classify(error: BaseException) -> BaseException:
    """Map a psycopg error to freight's transient or permanent class (original as cause).

    - Connection and server-availability problems (``OperationalError``,
      ``InterfaceError``: a dropped connection, a restart, a lock timeout, a deadlock)
      are :class:`~freight.TransientError`: the job's ``Retry`` tries again.
    - Data the server refuses (``DataError``, ``IntegrityError``: a value of the wrong
      type or out of range, a null in a ``NOT NULL`` column, a unique or check
      violation) is :class:`~freight.PermanentError`: retrying the same row cannot fix
      it. The message starts with the server's error class and keeps its text, which
      names the value and the column.
    - Anything else (a freight error already, a statement the schema does not fit) is
      returned as it is.
    """
    mapped: BaseException
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        mapped = TransientError(f"PostgreSQL unavailable: {error}")
    elif isinstance(error, psycopg.DataError | psycopg.IntegrityError):
        mapped = PermanentError(f"{type(error).__name__}: {error}")
    else:
        return error
    mapped.__cause__ = error
    return mapped


def _reraise(error: psycopg.Error) -> NoReturn:
    """Raise ``error`` as freight's class (:func:`classify`), the original as its cause."""
    mapped = classify(error)
    if mapped is error:
        raise error
    raise mapped from error


def _connect(conninfo: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """``psycopg.connect`` with freight's errors: a connection string psycopg cannot
    parse is a :class:`~freight.ConfigError`, a server that does not answer (or refuses
    the user or the database) a :class:`~freight.TransientError` naming where it is."""
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"bad PostgreSQL connection string: {str(exc).strip()}; "
            "expected postgresql://USER@HOST:PORT/DB"
        ) from exc
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise TransientError(f"cannot reach PostgreSQL at {_where(conninfo)}: {reason}") from exc


def _where(conninfo: str) -> str:
    """``host:port/db`` of a connection string that psycopg parsed (never the password)."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    host, port, db = parts.get("host"), parts.get("port"), parts.get("dbname")
    return f"{host or 'localhost'}:{port or 5432}/{db or '(default database)'}"
