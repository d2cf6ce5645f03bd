"""freight: batch processing for Python.

Single calls from many callers grouped into batches by size, bytes or timeout,
each caller getting its own result or error; on one sans-I/O engine.
"""

from freight._batched import AsyncBatched, StreamBatched, SyncBatched, batched
from freight._core._buffer import BatchBuffer, Flush, FlushReason
from freight._core._clock import Clock
from freight._core._join import JoinSpec
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._core._stats import BatcherStats, BatchEvent, Percentiles
from freight._drivers._asyncio import Batcher
from freight._drivers._runner import END
from freight._drivers._threads import ThreadBatcher
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
from freight.flow import Flow
from freight.jobs import CsvSource, Job, JobReport, JsonlSource, ParquetSource, Sink
from freight.manager import Batch, BatchManager, BatchRequest, BatchStatus
from freight.store import SqliteStore

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
