"""The report of a bulk job run, in the batch-operations guide's result shape."""

from __future__ import annotations

import json
from typing import Any

from freight._errors import ConfigError
from freight.store import STOPPED, ChunkCheckpoint, DeadLetter, JobRecord, Store
from freight.store._records import ErrorSummary

SUPERSEDED = "superseded"
"""The event a replay records for the letters a later line of their key superseded
(:mod:`freight.jobs._replay`): ``{"letters": [[offset, ordinal, later, unit], ...]}``."""

__all__ = ["JobReport", "build_report", "load_report"]

ERROR_SAMPLE = 50  # errors listed in a report; the store keeps all of them
ALL = 2**62  # a sample that lists every error


class JobReport(dict[str, Any]):
    """The result of a run: a plain ``dict`` in the documented shape, JSON-ready.

    Keys: job_id, job_type, started_at, completed_at, status, summary (total_items,
    processed, succeeded, failed, skipped, resolved, duration_seconds,
    items_per_second), errors (the current errors, a bounded sample: item_id,
    error_type, message, timestamp, chunk_index, retry_attempts, category),
    errors_omitted (current errors beyond the sample: ``freight report JOB --json
    --all`` lists all of them),
    error_categories (of the current errors), resolved (items that failed and then
    succeeded on a replay, a bounded sample: the same keys, resolved_at and reason:
    "written on a replay", or "superseded by line N" for a record of a key a later
    line set),
    last_checkpoint, metadata (chunk_size, num_chunks, workers, retry_attempts) and
    remediation (can_retry, strategy). The properties are shortcuts for the common keys.
    """

    @property
    def job_id(self) -> str:
        """The run's id."""
        return str(self["job_id"])

    @property
    def status(self) -> str:
        """Where the run stands: after ``job.run()`` one of the ending statuses
        (``completed``, ``completed_with_errors``, ``failed``, ``cancelled``; see
        :data:`~freight.store.TERMINAL`)."""
        return str(self["status"])

    @property
    def summary(self) -> dict[str, Any]:
        """The counters, duration and throughput."""
        return dict(self["summary"])

    def to_dict(self) -> dict[str, Any]:
        """The report as a plain ``dict`` of JSON values."""
        return json.loads(self.to_json())  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON."""
        return json.dumps(self, indent=indent, default=str)


RETRY_FAILED = (
    "fix the cause of the errors (all of them: `freight report JOB --json --all`), then "
    "`freight retry-failed JOB` (library: `job.retry_failed()`): it replays only the dead "
    "letters, each written once"
)
"""What a report advises for dead letters: replaying them writes each once, whereas a
fresh run writes every row again (duplicates, without a key). ``--fresh`` is for a
changed source, and the run refuses one with that advice."""


def _remediation(status: str, failed: int) -> dict[str, Any]:
    if status in STOPPED:  # ended early: the lifecycle lets it start again
        resume = "run the job again: it resumes from its checkpoints"
        if failed:
            resume += "; for its dead letters, " + RETRY_FAILED
        return {"can_retry": True, "strategy": resume}
    if status in ("completed_with_errors", "failed") and failed:
        return {"can_retry": True, "strategy": RETRY_FAILED}
    return {"can_retry": False, "strategy": None}


def build_report(
    job: JobRecord,
    chunks: list[ChunkCheckpoint],
    errors: ErrorSummary,
    *,
    retry_attempts: int,
    reasons: dict[tuple[int, int], str] | None = None,
) -> JobReport:
    """Assemble the report of ``job`` from what the store holds (``errors``: its
    :meth:`~freight.store.Store.error_summary`; ``reasons``: why a resolved letter, by
    its position, was resolved other than by being written, see :func:`resolved_reasons`)."""
    reasons = reasons or {}
    started, completed = job.started_at, job.completed_at
    duration = (completed - started).total_seconds() if started and completed else None
    done = [c for c in chunks if c.status == "done"]
    last = max(done, key=lambda c: c.index, default=None)
    data: dict[str, Any] = {
        "job_id": job.id,
        "job_name": job.name,
        "job_type": job.job_type,
        "started_at": started.isoformat() if started else None,
        "completed_at": completed.isoformat() if completed else None,
        "status": job.status,
        "reason": job.reason,
        "summary": {
            "total_items": job.total_items if job.total_items is not None else job.processed,
            "processed": job.processed,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "skipped": job.skipped,
            "resolved": errors.resolved_count,
            "duration_seconds": duration,
            "items_per_second": (job.processed / duration) if duration else None,
        },
        "errors": [_error(d) for d in errors.current],
        "errors_omitted": max(0, sum(errors.categories.values()) - len(errors.current)),
        "error_categories": dict(errors.categories),
        "resolved": [
            {
                **_error(d),
                "resolved_at": d.replayed_at.isoformat() if d.replayed_at else None,
                "reason": reasons.get(d.position, WRITTEN) if d.position else WRITTEN,
            }
            for d in errors.resolved
        ],
        "last_checkpoint": None
        if last is None
        else {"chunk_index": last.index, "position": list(last.end or last.start)},
        "metadata": {
            "chunk_size": job.config.get("chunk_size"),
            "num_chunks": len(done),
            "workers": job.config.get("workers"),
            "retry_attempts": retry_attempts,
        },
        "remediation": _remediation(job.status, job.failed),
    }
    return JobReport(data)


def _error(d: DeadLetter) -> dict[str, Any]:
    return {
        "item_id": d.record_id,
        "item": d.record_id,
        "error_type": d.error_type,
        "message": d.message,
        "category": d.category,
        "timestamp": d.created_at.isoformat() if d.created_at else None,
        "chunk_index": d.chunk_index,
        "retry_attempts": d.attempts,
    }


WRITTEN = "written on a replay"
"""The reason of a resolved error whose record a replay wrote."""


def resolved_reasons(store: Store, job_id: str) -> dict[tuple[int, int], str]:
    """Why replays resolved letters without writing them, by position: "superseded by
    line N" for a record a later line of its key superseded (the replay's events)."""
    reasons = {}
    for event in store.events(job_id):
        if event.kind == SUPERSEDED:
            for offset, ordinal, later, unit in event.data.get("letters", []):
                reasons[(int(offset), int(ordinal))] = f"superseded by {unit} {later}"
    return reasons


def load_report(store: Store, job_id: str, *, errors: int | None = ERROR_SAMPLE) -> JobReport:
    """The report of run ``job_id`` as the store holds it now.

    ``errors``: how many of its current errors (and resolved ones) to list (``None``:
    all of them); the report's ``errors_omitted`` says how many more there are."""
    job = store.get_job(job_id)
    if job is None:
        raise ConfigError(f"no run with id {job_id!r} in {store!r}")
    sample = errors if errors is not None else ALL
    return build_report(
        job,
        store.chunks(job_id),
        store.error_summary(job_id, sample=sample),
        retry_attempts=int(job.config.get("retry_attempts", 1)),
        reasons=resolved_reasons(store, job_id),
    )
