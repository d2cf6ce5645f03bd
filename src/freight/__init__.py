"""freight: batch processing for Python.

Single calls from many callers grouped into batches by size, bytes or timeout,
each caller getting its own result or error; on one sans-I/O engine.
"""

from typing import TYPE_CHECKING, Any

from freight._core._buffer import BatchBuffer, Flush, FlushReason
from freight._core._clock import Clock
from freight._core._join import JoinSpec
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._core._stats import BatcherStats, BatchEvent, Percentiles
from freight._errors import (
    BatcherClosed,
    ConfigError,
    ConfigTypeError,
    FreightError,
    HandlerContractError,
    IllegalTransition,
    InvalidBatch,
    ItemTooLarge,
    JobAlreadyRunning,
    PermanentError,
    QueueFull,
    RecordError,
    Skipped,
    StoreError,
    TargetError,
    TransientError,
    UnknownBatch,
    UnknownEndpoint,
    UnknownJob,
)
from freight._ratelimit import RateLimiter

if TYPE_CHECKING:
    from freight._batched import AsyncBatched, StreamBatched, SyncBatched, batched
    from freight._drivers._asyncio import Batcher
    from freight._drivers._runner import END
    from freight._drivers._threads import ThreadBatcher
    from freight.flow import Flow
    from freight.jobs import CsvSource, Job, JobReport, JsonlSource, ParquetSource, Sink
    from freight.manager import Batch, BatchManager, BatchRequest, BatchStatus
    from freight.store import SqliteStore

# The names whose modules import asyncio, the flow, the job engine or the manager: each
# is imported when first used (PEP 562), so that ``freight load`` does not pay for the
# flow and the manager at every start (~0.1 s here).
_LAZY = {
    "AsyncBatched": "freight._batched",
    "StreamBatched": "freight._batched",
    "SyncBatched": "freight._batched",
    "batched": "freight._batched",
    "Batcher": "freight._drivers._asyncio",
    "END": "freight._drivers._runner",
    "ThreadBatcher": "freight._drivers._threads",
    "Flow": "freight.flow",
    "CsvSource": "freight.jobs",
    "Job": "freight.jobs",
    "JobReport": "freight.jobs",
    "JsonlSource": "freight.jobs",
    "ParquetSource": "freight.jobs",
    "Sink": "freight.jobs",
    "Batch": "freight.manager",
    "BatchManager": "freight.manager",
    "BatchRequest": "freight.manager",
    "BatchStatus": "freight.manager",
    "SqliteStore": "freight.store",
}


# The subpackages ``import freight`` made reachable as attributes before the names were
# lazy (``freight.store.TRANSITIONS`` after a bare ``import freight``): still so.
_SUBPACKAGES = frozenset({"flow", "jobs", "manager", "store"})

if not TYPE_CHECKING:  # a type checker sees the names above, and flags any other

    def __getattr__(name: str) -> Any:
        import importlib  # noqa: PLC0415 (only for a lazy name)

        if name in _SUBPACKAGES:
            return importlib.import_module(f"freight.{name}")
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'freight' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})


__version__ = "0.1.0.dev0"

__all__ = [
    # errors
    "BatcherClosed",
    "ConfigError",
    "ConfigTypeError",
    "FreightError",
    "HandlerContractError",
    "IllegalTransition",
    "InvalidBatch",
    "ItemTooLarge",
    "UnknownJob",
    "JobAlreadyRunning",
    "PermanentError",
    "QueueFull",
    "RecordError",
    "Skipped",
    "StoreError",
    "TargetError",
    "TransientError",
    "UnknownBatch",
    "UnknownEndpoint",
    # core
    "BatchBuffer",
    "BatchEvent",
    "BatchSpec",
    "BatcherStats",
    "Clock",
    "Flush",
    "FlushReason",
    "JoinSpec",
    "Percentiles",
    "RateLimiter",
    "Retry",
    # bulk jobs
    "CsvSource",
    "Job",
    "JobReport",
    "JsonlSource",
    "ParquetSource",
    "Sink",
    "SqliteStore",
    # flow
    "Flow",
    # managed batches
    "Batch",
    "BatchManager",
    "BatchRequest",
    "BatchStatus",
    # drivers
    "END",
    "AsyncBatched",
    "Batcher",
    "StreamBatched",
    "SyncBatched",
    "ThreadBatcher",
    "batched",
]
