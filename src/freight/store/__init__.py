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
]

_: type[Store] = SqliteStore  # SqliteStore implements the Store port
