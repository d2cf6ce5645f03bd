"""Managed batches: submit many requests now, come back later for per-request results.

:class:`BatchManager` stores batches of requests (SQLite under ``.freight/`` by
default, or PostgreSQL for many worker processes), runs them through the registered
endpoints' handlers in workers that survive restarts, and answers status, results and
cancellation. See ``docs/managed.md``.
"""

from __future__ import annotations

from freight._errors import InvalidBatch, UnknownBatch, UnknownEndpoint
from freight.manager._lifecycle import BATCH_TRANSITIONS
from freight.manager._manager import BatchManager, Results
from freight.manager._models import (
    Batch,
    BatchChange,
    BatchRequest,
    BatchStatus,
    RequestCounts,
    RequestState,
    Result,
    ResultError,
)
from freight.manager._submit import MAX_BODY_BYTES, MAX_REQUESTS

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_REQUESTS",
    "BATCH_TRANSITIONS",
    "Batch",
    "BatchChange",
    "BatchManager",
    "BatchRequest",
    "BatchStatus",
    "InvalidBatch",
    "RequestCounts",
    "RequestState",
    "Result",
    "ResultError",
    "Results",
    "UnknownBatch",
    "UnknownEndpoint",
]
