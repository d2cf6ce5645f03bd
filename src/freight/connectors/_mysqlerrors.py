"""How the MariaDB / MySQL connector meets its server: PyMySQL's errors mapped to
freight's classes in one place (:func:`classify`), and connection URLs read
(:func:`parse_url`) without ever showing the password."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from freight._errors import ConfigError, PermanentError, TargetError, TransientError

try:
    import pymysql  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "freight.connectors.mysql needs PyMySQL: pip install 'freight[mysql]'"
    ) from exc

__all__ = ["MysqlUrl", "classify", "parse_url", "raise_classified", "reason"]

# Server error codes that refuse the statement, not a row: whatever the rows hold, none
# can land, so the write is a TargetError for every row, never bisected.
_TARGET_CODES = frozenset({
    1036,  # ER_OPEN_AS_READONLY: the table is read only
    1044,  # ER_DBACCESS_DENIED_ERROR
    1045,  # ER_ACCESS_DENIED_ERROR
    1049,  # ER_BAD_DB_ERROR: no such database
    1054,  # ER_BAD_FIELD_ERROR: no such column
    1059,  # ER_TOO_LONG_IDENT: a name past 64 characters
    1064,  # ER_PARSE_ERROR
    1103,  # ER_WRONG_TABLE_NAME
    1110,  # ER_FIELD_SPECIFIED_TWICE
    1117,  # ER_TOO_MANY_FIELDS: more than 4,096 columns
    1118,  # ER_TOO_BIG_ROWSIZE: the table's row size limit
    1142,  # ER_TABLEACCESS_DENIED_ERROR: no privilege on the table
    1143,  # ER_COLUMNACCESS_DENIED_ERROR
    1146,  # ER_NO_SUCH_TABLE
    1166,  # ER_WRONG_COLUMN_NAME
    1290,  # ER_OPTION_PREVENTS_STATEMENT: --read-only
    1792,  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
})  # fmt: skip

# Server error codes that say the server (or the connection), not the rows, failed now.
_TRANSIENT_CODES = frozenset({
    1040,  # ER_CON_COUNT_ERROR: too many connections
    1053,  # ER_SERVER_SHUTDOWN
    1205,  # ER_LOCK_WAIT_TIMEOUT
    1213,  # ER_LOCK_DEADLOCK (the transaction was rolled back)
    1927,  # ER_CONNECTION_KILLED
})  # fmt: skip

_AT_ROW = re.compile(r" at row \d+$")


def classify(error: BaseException) -> BaseException:
    """Map a PyMySQL error to freight's classes (the original as ``__cause__``).

    - A statement the target refuses whatever the rows hold (no such database, table
      or column, no privilege, a read-only server, too many columns or a row size past
      the table's limit) is a :class:`~freight.TargetError`: never one dead letter per row.
    - A lost or refused connection (client errors 2000-2999, PyMySQL's
      ``InterfaceError``), a server shutting down, too many connections, a lock wait
      timeout or a deadlock are :class:`~freight.TransientError`: the job's ``Retry``
      tries again on a new connection.
    - Any other error the server gives (a value out of range or of the wrong type, a
      NULL in a ``NOT NULL`` column, a duplicate key, data too long) is the row's:
      a :class:`~freight.PermanentError` with the server's message (:func:`reason`).
    - Anything else (a freight error already, a client-side error) is returned as is.
    """
    mapped: BaseException
    if isinstance(error, pymysql.err.InterfaceError):
        mapped = TransientError(f"MariaDB connection lost: {reason(error)}")
    elif not isinstance(error, pymysql.err.MySQLError):
        return error
    else:
        code = _code(error)
        if code in _TARGET_CODES:
            mapped = TargetError(f"the target refuses the write: {reason(error)}")
        elif code in _TRANSIENT_CODES or 2000 <= code < 3000 or code == 0:
            mapped = TransientError(f"MariaDB unavailable: {reason(error)}")
        elif isinstance(error, pymysql.err.ProgrammingError | pymysql.err.NotSupportedError):
            mapped = TargetError(f"the target refuses the write: {reason(error)}")
        else:
            mapped = PermanentError(reason(error))
    mapped.__cause__ = error
    return mapped


def _code(error: BaseException) -> int:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def reason(error: BaseException) -> str:
    """``Class (code): message`` on one line, the server's words; without the statement's
    ``at row N`` (a row of one multi-row statement, not of the file: where a row came
    from is the job's to say)."""
    args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        message = _AT_ROW.sub("", " ".join(str(args[1]).split()))
        return f"{type(error).__name__} ({args[0]}): {message}"
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def raise_classified(error: BaseException) -> NoReturn:
    """Raise ``error`` as freight's class (:func:`classify`), the original as its cause."""
    mapped = classify(error)
    if mapped is error:
        raise error
    raise mapped from error


@dataclass(frozen=True, slots=True)
class MysqlUrl:
    """Where a MariaDB / MySQL database is: ``mysql://user[:password]@host[:port]/db``."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def __str__(self) -> str:  # never the password
        return f"{self.host}:{self.port}/{self.database}"


def parse_url(url: str) -> MysqlUrl:
    """Read ``mysql://user[:password]@host[:port]/db`` (``mariadb://`` too); a
    :class:`~freight.ConfigError` naming the expected form otherwise."""
    expected = "expected mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    try:
        parts = urlsplit(url)
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"bad MariaDB/MySQL URL: {exc}; {expected}") from exc
    database = unquote(parts.path.lstrip("/"))
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not database:
        raise ConfigError(f"bad MariaDB/MySQL URL {_shown(url)!r}; {expected}")
    return MysqlUrl(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
    )


def _shown(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)
