"""Progress of a bulk job: counts, rate and ETA, handed to a callback per chunk."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Progress"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """Where a run stands after a chunk.

    ``fraction`` is measured in items when the source knows its item count, else
    in bytes read when it knows its size in bytes, else ``None`` (and so is the ETA).
    """

    job_id: str
    processed: int
    succeeded: int
    failed: int
    skipped: int
    chunks_done: int
    elapsed_seconds: float
    items_per_second: float
    fraction: float | None
    eta_seconds: float | None
