"""Typed records the store keeps: jobs, chunk checkpoints, dead letters, events.

Timestamps are timezone-aware UTC ``datetime``; positions are ``(offset, ordinal)``:
``offset`` is where a source can seek (a byte offset, a row index), ``ordinal`` the
record number there (a line number for files), so a resumed read keeps numbering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from freight.store._lifecycle import TERMINAL, JobStatus

__all__ = [
    "ChunkCheckpoint",
    "ChunkStatus",
    "Control",
    "DeadLetter",
    "ErrorSummary",
    "Event",
    "JobRecord",
    "JobStatus",
    "ReplayTarget",
    "utcnow",
]

ChunkStatus = Literal["running", "done", "failed"]
Control = Literal["pause", "resume", "cancel"]


def utcnow() -> datetime:
    """Now, timezone-aware UTC (what the store records)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One run of a job, as the store keeps it."""

    id: str
    name: str
    job_type: str
    fingerprint: str
    status: JobStatus
    config: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    total_items: int | None = None
    total_bytes: int | None = None
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    heartbeat_at: datetime | None = None
    control: Control | None = None

    @property
    def finished(self) -> bool:
        """True once an execution ended the run (see :data:`~freight.store.TERMINAL`)."""
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkCheckpoint:
    """Where a chunk starts and ends in its source, and how it went."""

    index: int
    start: tuple[int, int]
    end: tuple[int, int] | None = None
    status: ChunkStatus = "running"
    attempts: int = 1
    items: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    checksum: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An item that did not make it, with why.

    ``replayed_at`` is set once ``retry-failed`` replayed it: it is no longer a current
    error (it succeeded, or failed again as a new dead letter).
    """

    record_id: str
    payload: str
    error_type: str
    message: str
    category: str
    attempts: int = 1
    chunk_index: int | None = None
    position: tuple[int, int] | None = None
    created_at: datetime | None = None
    id: int | None = None
    replayed_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorSummary:
    """A run's dead letters as its report shows them, counted by the store.

    Attributes:
        current: the first current errors (open dead letters), oldest first.
        categories: how many current errors each category has.
        resolved: records that failed and then succeeded on a replay (every dead letter
            of the record replayed), first ones first: each record's first dead letter,
            with ``replayed_at`` the time of the replay that resolved it.
        resolved_count: how many records a replay resolved.
    """

    current: list[DeadLetter] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    resolved: list[DeadLetter] = field(default_factory=list)
    resolved_count: int = 0


class ReplayTarget(NamedTuple):
    """What ``retry-failed`` needs of an open dead letter (a tuple: a replay reads tens of
    thousands): its id, where its record is, its chunk and the attempts it cost."""

    id: int
    position: tuple[int, int]
    chunk_index: int | None
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened to a job (started, paused, resumed, taken over, ...)."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
