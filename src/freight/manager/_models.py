"""The records of managed batches: what a user submits and what they read back.

Plain frozen values (no I/O): :class:`BatchRequest` (one request, submitted),
:class:`Batch` (a batch's status, counts, timestamps), :class:`Result` (one request's
response or error) and :class:`ResultError`. Field names follow the OpenAI Batch API
(``request_counts``, ``created_at``, ``in_progress_at``, …) and nagents' ``BatchManager``
(``job.id``, ``result.id``, ``result.response``, ``result.error``), so code written for
either reads the same here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Batch",
    "BatchChange",
    "BatchRequest",
    "BatchStatus",
    "RequestCounts",
    "RequestState",
    "Result",
    "ResultError",
]


class BatchStatus(enum.StrEnum):
    """Where a managed batch is in its lifecycle (the values are the stored strings).

    ``pending`` → ``processing`` → ``completed``; ``cancel()`` goes through
    ``cancelling`` (requests in flight finish) to ``cancelled``; a batch past its
    completion window is ``expired``; ``failed`` means the batch as a whole could not
    run (a request's failure never fails its batch: it is reported in its result).
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """True when the batch will not change any more."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED, BatchStatus.EXPIRED}
)


class RequestState(enum.StrEnum):
    """Where one request of a managed batch is (the values are the stored strings)."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a managed batch: an ``id`` unique in its batch and a JSON ``body``.

    A plain ``dict`` with ``custom_id`` (or ``id``) and ``body`` is taken too, as in the
    OpenAI batch input format.
    """

    id: str
    body: Any


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """How many requests of a batch are in each final state, and in all.

    ``completed + failed + cancelled + expired == total`` once the batch has ended.
    """

    total: int
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0

    @property
    def finished(self) -> int:
        """Requests that have their final result."""
        return self.completed + self.failed + self.cancelled + self.expired


@dataclass(frozen=True, slots=True)
class Batch:
    """A managed batch as stored: status, request counts, timestamps, metadata, errors.

    Timestamps are timezone-aware UTC, ``None`` until the batch reaches that status.
    ``errors`` says why a ``failed`` batch could not run.
    """

    id: str
    endpoint: str
    status: BatchStatus
    request_counts: RequestCounts
    created_at: datetime
    expires_at: datetime
    completion_window: str = "24h"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    in_progress_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    cancelling_at: datetime | None = None
    cancelled_at: datetime | None = None
    expired_at: datetime | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResultError:
    """Why one request failed: the error's type name, its message, and the attempts made.

    ``type`` is ``"cancelled"`` or ``"expired"`` for a request that never ran because
    its batch was cancelled or expired (``attempts`` 0).
    """

    type: str
    message: str
    attempts: int

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass(frozen=True, slots=True)
class Result:
    """One request's outcome: its ``response`` (JSON) or its ``error``, never both.

    ``status`` is the request's final state: ``completed``, ``failed``, ``cancelled`` or
    ``expired``.
    """

    id: str
    status: RequestState
    response: Any = None
    error: ResultError | None = None

    @property
    def custom_id(self) -> str:
        """The request's id (the OpenAI batch format's name for it)."""
        return self.id

    def to_json(self, batch_id: str) -> dict[str, Any]:
        """The OpenAI batch output line: ``{"id", "custom_id", "response", "error"}``."""
        response = None
        if self.error is None:
            response = {"status_code": 200, "body": self.response}
        error = None
        if self.error is not None:
            error = {
                "type": self.error.type,
                "message": self.error.message,
                "attempts": self.error.attempts,
            }
        return {
            "id": f"{batch_id}:{self.id}",
            "custom_id": self.id,
            "response": response,
            "error": error,
        }


@dataclass(frozen=True, slots=True)
class BatchChange:
    """A managed batch was submitted (``pending``) or reached a new status: what a
    :class:`~freight.manager.BatchManager`'s ``on_change`` callables receive
    (:class:`freight.metrics.PrometheusSubscriber` counts them by endpoint and status,
    and times the ended ones).

    Attributes:
        batch_id: the batch.
        endpoint: the endpoint it was submitted to.
        status: the status it reached.
        request_counts: its counts then.
        elapsed: seconds from its submit to this change (0 at submit).
    """

    batch_id: str
    endpoint: str
    status: BatchStatus
    request_counts: RequestCounts
    elapsed: float

    @classmethod
    def of(cls, batch: Batch) -> BatchChange:
        """The change that left ``batch`` as it is now."""
        stamps = (batch.completed_at, batch.failed_at, batch.cancelled_at,
                  batch.expired_at, batch.cancelling_at, batch.in_progress_at)  # fmt: skip
        at = max((t for t in stamps if t is not None), default=batch.created_at)
        return cls(
            batch.id, batch.endpoint, batch.status, batch.request_counts,
            (at - batch.created_at).total_seconds(),
        )  # fmt: skip
