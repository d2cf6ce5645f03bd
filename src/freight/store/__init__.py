"""Persistent state of bulk jobs: runs, chunk checkpoints, dead letters, events.

``SqliteStore`` (``.freight/freight.db``, WAL mode) is the embedded default; the
``Store`` protocol is what a PostgreSQL store implements for many workers.
"""

from freight.store._base import Store
from freight.store._records import (
    ChunkCheckpoint,
    ChunkStatus,
    Control,
    DeadLetter,
    Event,
    JobRecord,
    JobStatus,
)
from freight.store._sqlite import DEFAULT_PATH, SqliteStore, StoreError


def open_store(url: str) -> Store:
    """A store from a URL: ``postgresql://…`` (extra ``freight[postgres]``),
    ``sqlite:///path`` or a plain path."""
    if url.startswith(("postgresql://", "postgres://")):
        from freight.store._postgres import PostgresStore  # noqa: PLC0415 (optional extra)

        return PostgresStore(url)
    return SqliteStore.from_url(url)


__all__ = [
    "DEFAULT_PATH",
    "ChunkCheckpoint",
    "ChunkStatus",
    "Control",
    "DeadLetter",
    "Event",
    "JobRecord",
    "JobStatus",
    "SqliteStore",
    "Store",
    "StoreError",
    "open_store",
]

_: type[Store] = SqliteStore  # SqliteStore implements the Store port
