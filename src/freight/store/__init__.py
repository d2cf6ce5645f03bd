"""Persistent state of bulk jobs: runs, chunk checkpoints, dead letters, events.

``SqliteStore`` (``.freight/freight.db``, WAL mode) is the embedded default;
``PostgresStore`` (extra ``freight[postgres]``) holds the same schema for runners on
many machines. Both implement the ``Store`` port (and ``BoardStore``, for the flow
board's tables) over the same SQL logic. A run's status moves only along the lifecycle
table, ``TRANSITIONS``.

``PostgresStore`` is imported on first use, so this package imports without psycopg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight._errors import IllegalTransition, StoreError, UnknownJob
from freight.store._base import BoardStore, SharedTransactionStore, Store, TransactionalSink
from freight.store._lifecycle import (
    DONE,
    LIVE,
    RESUMABLE,
    STATUSES,
    STOPPED,
    TERMINAL,
    TRANSITIONS,
    JobStatus,
    Move,
)
from freight.store._records import (
    ChunkCheckpoint,
    ChunkStatus,
    Control,
    DeadLetter,
    Event,
    JobRecord,
)
from freight.store._sqlite import DEFAULT_PATH, SqliteStore

if TYPE_CHECKING:
    from freight.store._postgres import PostgresStore


def __getattr__(name: str) -> Any:
    """``PostgresStore``, imported when first asked for (it needs psycopg)."""
    if name == "PostgresStore":
        from freight.store._postgres import PostgresStore  # noqa: PLC0415 (optional extra)

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url: str, *, read_only: bool = False) -> Store:
    """A store from a URL: ``postgresql://…`` (extra ``freight[postgres]``),
    ``sqlite:///path`` or a plain path.

    ``read_only``: to show what a store holds (``status``, ``report``, ``list``): a
    SQLite store is never created (a missing one is a :class:`StoreError`, "no store at
    PATH") nor written, and a read-only file or folder can still be read.

    Raises :class:`StoreError` naming the store when it cannot serve: a SQLite file that
    is not a database, truncated, corrupt or read-only, a folder where SQLite cannot
    create its WAL files, a schema newer than this freight.
    """
    if url.startswith(("postgresql://", "postgres://")):
        from freight.store._postgres import PostgresStore  # noqa: PLC0415 (optional extra)

        return PostgresStore(url)
    return SqliteStore.from_url(url, read_only=read_only)


__all__ = [
    "DEFAULT_PATH",
    "DONE",
    "LIVE",
    "RESUMABLE",
    "STATUSES",
    "STOPPED",
    "TERMINAL",
    "TRANSITIONS",
    "BoardStore",
    "ChunkCheckpoint",
    "ChunkStatus",
    "Control",
    "DeadLetter",
    "Event",
    "IllegalTransition",
    "UnknownJob",
    "JobRecord",
    "JobStatus",
    "Move",
    "PostgresStore",
    "SharedTransactionStore",
    "SqliteStore",
    "Store",
    "StoreError",
    "TransactionalSink",
    "open_store",
]

_: type[Store] = SqliteStore  # SqliteStore implements the Store port
_board: type[BoardStore] = SqliteStore  # and the flow board's
