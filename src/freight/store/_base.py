"""The store's ports: what the job engine, the flow board and exactly-once commits need.

- :class:`Store`: runs, chunk checkpoints, dead letters and events of bulk jobs. Every
  method is one transaction; ``commit_chunk`` records a chunk's checkpoint, its dead
  letters and the run's counters together, so a crash leaves all of them or none.
  Status changes are :meth:`Store.transition` calls, checked against the lifecycle
  table (:data:`~freight.store.TRANSITIONS`).
- :class:`BoardStore`: transactions of the store's own database, for the flow board's
  tables (statements in the store's :class:`~freight.store._dialect.Dialect`).
- :class:`TransactionalSink` and :class:`SharedTransactionStore`: the two halves of
  exactly-once chunk commits. A sink that writes inside a transaction it opens on a
  database it names, and a store that can record a chunk inside that transaction when
  it lives in the same database: then rows and checkpoint (or, for a replay, rows and
  the marking of their dead letters) commit together.

``SqliteStore`` and ``PostgresStore`` implement ``Store`` and ``BoardStore``;
``PostgresStore`` is also a ``SharedTransactionStore``, ``PostgresSink`` a
``TransactionalSink``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from freight.store._dialect import Dialect, Row, Transaction
from freight.store._lifecycle import JobStatus
from freight.store._records import (
    ChunkCheckpoint,
    Control,
    DeadLetter,
    ErrorSummary,
    Event,
    JobRecord,
    ReplayTarget,
)

__all__ = ["BoardStore", "SharedTransactionStore", "Store", "TransactionalSink"]


@runtime_checkable
class Store(Protocol):
    """Jobs, chunk checkpoints, dead letters and events of bulk jobs."""

    def create_job(
        self,
        *,
        name: str,
        job_type: str,
        fingerprint: str,
        config: dict[str, Any],
        total_items: int | None = None,
        total_bytes: int | None = None,
    ) -> JobRecord:
        """Record a new run (status ``pending``) and return it."""
        ...

    def claim_new(
        self,
        *,
        name: str,
        job_type: str,
        fingerprint: str,
        config: dict[str, Any],
        total_items: int | None = None,
        total_bytes: int | None = None,
        replacing: str | None,
        host: str,
        pid: int,
        now: datetime,
        stale_before: datetime,
    ) -> JobRecord | None:
        """Atomically create a run of ``name`` (status ``pending``) owned by ``(host, pid)``.

        Refused (``None``) when another runner was first: the latest run of ``name`` is
        no longer ``replacing`` (the id of the latest run the caller saw, ``None`` for
        none), or another owner holds it with a heartbeat newer than ``stale_before``.
        Reading the latest run and creating the new one are one step, so of two runners
        starting the same job at the same instant exactly one gets a run.
        """
        ...

    def get_job(self, job_id: str) -> JobRecord | None:
        """The run with this id, or ``None``."""
        ...

    def latest_job(self, name: str) -> JobRecord | None:
        """The most recent run of the job called ``name``, or ``None``."""
        ...

    def list_jobs(self, limit: int = 50) -> list[JobRecord]:
        """The most recent runs, newest first."""
        ...

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> JobRecord:
        """Move a run to status ``to`` and return it.

        The move is checked against the lifecycle table in the transaction that makes
        it (:class:`~freight.IllegalTransition` if it is not legal; ``KeyError`` for an
        unknown run) and writes what that move writes: starting stamps ``started_at``
        (unless set) and clears the reason and any control request; ending stamps
        ``completed_at`` (``now``, default: the current UTC time) and records
        ``reason``.
        """
        ...

    def claim(
        self, job_id: str, *, host: str, pid: int, now: datetime, stale_before: datetime
    ) -> JobRecord | None:
        """Make ``(host, pid)`` the owner of a run, unless a live owner holds it.

        An owner is live when its heartbeat is newer than ``stale_before``. Returns
        the claimed run, or ``None`` when another live owner holds it.
        """
        ...

    def heartbeat(self, job_id: str, *, now: datetime) -> None:
        """Record that the owner of the run is alive."""
        ...

    def release(self, job_id: str) -> None:
        """Drop the run's owner: any runner may claim it at once."""
        ...

    def request(self, job_id: str, control: Control | None) -> None:
        """Ask the running owner of a run to pause, resume or cancel (or clear the ask)."""
        ...

    def chunks(self, job_id: str) -> list[ChunkCheckpoint]:
        """Every chunk checkpoint of a run, by index."""
        ...

    def start_chunk(self, job_id: str, checkpoint: ChunkCheckpoint) -> None:
        """Record that a chunk is being processed (status ``running``, attempts counted)."""
        ...

    def commit_chunk(
        self,
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> JobRecord:
        """Atomically: store the finished chunk, its dead letters, and add its counts."""
        ...

    def dead_letters(self, job_id: str, *, include_replayed: bool = False) -> list[DeadLetter]:
        """The dead letters of a run, oldest first."""
        ...

    def error_summary(self, job_id: str, *, sample: int = 50) -> ErrorSummary:
        """What a run's report shows of its dead letters: the first ``sample`` current
        errors, the current errors per category, and the records a replay resolved
        (the first ``sample`` of them, and how many)."""
        ...

    def replay_targets(self, job_id: str) -> list[ReplayTarget]:
        """The open dead letters of a run that have a position, in position order: what
        ``retry-failed`` reads again."""
        ...

    def mark_replayed(self, job_id: str, ids: Sequence[int]) -> None:
        """Mark dead letters as replayed (by ``retry-failed``)."""
        ...

    def commit_replay(
        self,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> JobRecord:
        """Atomically: mark dead letters replayed, record the new failures, fix counters."""
        ...

    def add_event(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append an event to a run's history."""
        ...

    def events(self, job_id: str) -> list[Event]:
        """A run's events, oldest first."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class BoardStore(Protocol):
    """A store whose database other freight parts keep their own tables in (the flow board).

    Statements are written in :attr:`dialect` (render templates once with
    ``store.dialect.render(...)``); values are always bound parameters.
    """

    @property
    def dialect(self) -> Dialect:
        """The SQL dialect of the store's statements."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query outside any transaction of the caller's; return its rows."""
        ...


@runtime_checkable
class TransactionalSink(Protocol):
    """A sink that can hold every write of the current thread in one transaction.

    ``transaction()`` opens it on the database ``conninfo`` names and yields the
    connection; writes made in the block join it, and it commits when the block ends.
    """

    @property
    def conninfo(self) -> str:
        """The libpq connection string of the database the sink writes to."""
        ...

    def transaction(self) -> AbstractContextManager[Any]:
        """Hold one transaction for this thread's writes; yield its connection."""
        ...


@runtime_checkable
class SharedTransactionStore(Protocol):
    """A store that can record a chunk inside a transaction a sink opened on its database."""

    def same_database(self, conninfo: str) -> bool:
        """True if ``conninfo`` reaches this store's own tables (then they may share a
        transaction)."""
        ...

    def commit_chunk_on(
        self,
        conn: Any,
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """:meth:`Store.commit_chunk` on ``conn``, the connection of a
        :class:`TransactionalSink`'s open transaction (committed with it)."""
        ...

    def commit_replay_on(
        self,
        conn: Any,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> None:
        """:meth:`Store.commit_replay` on ``conn``, the connection of a
        :class:`TransactionalSink`'s open transaction (committed with it): rows replayed
        by ``retry-failed`` and the marking of their dead letters commit together."""
        ...
