"""The ``Store`` port: what the job engine needs from persistent storage.

SQLite (embedded default) implements it here; PostgreSQL will implement the same
port with the same schema. Every method is one transaction; ``commit_chunk``
records a chunk's checkpoint, its dead letters and the job's counters together,
so a crash leaves either all of them or none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from freight.store._records import (
    ChunkCheckpoint,
    Control,
    DeadLetter,
    Event,
    JobRecord,
    JobStatus,
)

__all__ = ["Store"]


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

    def get_job(self, job_id: str) -> JobRecord | None:
        """The run with this id, or ``None``."""
        ...

    def latest_job(self, name: str) -> JobRecord | None:
        """The most recent run of the job called ``name``, or ``None``."""
        ...

    def list_jobs(self, limit: int = 50) -> list[JobRecord]:
        """The most recent runs, newest first."""
        ...

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set fields of a run (status, reason, totals, timestamps, owner...)."""
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

    def request(self, job_id: str, control: Control | None) -> None:
        """Ask the running owner of a run to pause, resume or cancel (or clear the ask)."""
        ...

    def set_status(self, job_id: str, status: JobStatus, reason: str | None = None) -> JobRecord:
        """Set a run's status (and the reason, for failures)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
