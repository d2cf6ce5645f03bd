"""Bulk jobs: large datasets processed in checkpointed, resumable chunks."""

from freight._errors import JobAlreadyRunning, RecordError
from freight.jobs._job import Job
from freight.jobs._parquet import ParquetSource
from freight.jobs._printer import ProgressPrinter
from freight.jobs._progress import Progress
from freight.jobs._report import JobReport
from freight.jobs._sink import Sink, WriteContext
from freight.jobs._sources import (
    CsvSource,
    IterableSource,
    JsonlSource,
    Position,
    Record,
    Source,
    SourceSize,
    as_source,
    is_blank,
)

__all__ = [
    "CsvSource",
    "IterableSource",
    "Job",
    "JobAlreadyRunning",
    "JobReport",
    "JsonlSource",
    "ParquetSource",
    "Position",
    "Progress",
    "ProgressPrinter",
    "Record",
    "RecordError",
    "Sink",
    "Source",
    "SourceSize",
    "WriteContext",
    "as_source",
    "is_blank",
]
