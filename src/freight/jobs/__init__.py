"""Bulk jobs: large datasets processed in checkpointed, resumable chunks.

This package holds the streaming sources so far; the ``Job`` runner builds on them
and on :mod:`freight.store`.
"""

from freight.jobs._sources import (
    CsvSource,
    IterableSource,
    JsonlSource,
    Position,
    Record,
    RecordError,
    Source,
    SourceSize,
    as_source,
    is_blank,
)

__all__ = [
    "CsvSource",
    "IterableSource",
    "JsonlSource",
    "Position",
    "Record",
    "RecordError",
    "Source",
    "SourceSize",
    "as_source",
    "is_blank",
]
