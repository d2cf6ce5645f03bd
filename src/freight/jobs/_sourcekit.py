"""The helper layer every streaming source shares: fingerprints, converters, excerpts,
the blank marker, and :class:`_FileSource` (a file, plain or compressed).

Module rules: this module holds no source a user names (those are
:mod:`freight.jobs._sources` and :mod:`freight.jobs._parquet`); it imports from neither,
only from :mod:`freight._core`, :mod:`freight._errors` and
:mod:`freight.jobs._compression`, so both import it without a cycle. ``_sources``
re-exports what it used to define (``BLANK``, ``is_blank``, ``_converter`` ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Literal

from freight._core._source import Position, Record, SourceSize
from freight._errors import ConfigError, RecordError
from freight.jobs._compression import Marks, compression_of, open_stream

_EXCERPT = 200  # characters of a bad record kept for its dead letter
_HASH_SPAN = 1 << 20  # bytes hashed at each end of a file for its fingerprint


Converter = Callable[[Any], Any]


def _converter(convert: Any) -> Converter | None:
    """A callable, or a pydantic model class (its ``model_validate``)."""
    if convert is None:
        return None
    validate = getattr(convert, "model_validate", None)
    if isinstance(convert, type) and callable(validate):
        return validate  # type: ignore[no-any-return]
    if callable(convert):
        return convert  # type: ignore[no-any-return]
    raise ConfigError(f"convert must be a callable or a pydantic model class, got {convert!r}")


def _file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(_HASH_SPAN))
        if size > _HASH_SPAN:
            f.seek(max(_HASH_SPAN, size - _HASH_SPAN))
            digest.update(f.read(_HASH_SPAN))
    return digest.hexdigest()[:32]


def _existing_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: no such file {str(p)!r}; check the path")
    return p


def _wanted(positions: Iterable[Position]) -> list[Position]:
    """``positions`` in ascending order, each once."""
    return sorted({(int(offset), int(ordinal)) for offset, ordinal in positions})


CompressionArg = Literal["auto", "gzip", "zstd"] | None


class _FileSource:
    """What CsvSource and JsonlSource share: a file, plain or compressed (gzip, zstd),
    read through :func:`~freight.jobs._compression.open_stream`."""

    path: Path
    compression: Literal["gzip", "zstd"] | None
    _marks: Marks

    def _init_file(self, path: str | Path, what: str, compression: CompressionArg) -> None:
        self.path = _existing_file(path, what)
        self.compression = compression_of(self.path, compression)
        self._marks = Marks()

    def _open(self, buffering: int = -1) -> BinaryIO:
        if self.compression is None:
            return self.path.open("rb", buffering=buffering)
        return open_stream(self.path, self.compression, self._marks)

    def fingerprint(self) -> str:
        """Of the file's bytes as on disk (compressed bytes for a compressed file)."""
        return _file_fingerprint(self.path)

    def size(self) -> SourceSize:
        """The file's size on disk (compressed bytes for a compressed file)."""
        return SourceSize(bytes=self.path.stat().st_size)

    def bytes_read(self, position: Position) -> int | None:
        """The bytes of the file read to reach ``position`` (see :class:`SourceProgress`)."""
        if self.compression is None:
            return position[0]
        return self._marks.consumed_at(position[0])


def _line_starts_at(f: BinaryIO, offset: int, first: int) -> bool:
    """Whether a line of the file starts at ``offset`` (``first``: the first one's)."""
    if offset <= first:
        return offset == first
    f.seek(offset - 1)
    return f.read(1) == b"\n"


class _Blank:
    """Marker item of a skipped blank line."""

    def __repr__(self) -> str:
        return "BLANK"

    def __reduce__(self) -> str:
        return "BLANK"  # pickled by name: the one marker in a worker process too


BLANK = _Blank()


def is_blank(record: Record) -> bool:
    """True for a blank line a source was told to skip."""
    return record.item is BLANK


def _validation(exc: Exception) -> RecordError:
    error = RecordError(f"{type(exc).__name__}: {exc}".splitlines()[0][:_EXCERPT])
    error.__cause__ = exc
    return error
