"""Streaming sources for bulk jobs: iterables, CSV and JSONL files.

A source yields :class:`Record` values, never the whole dataset. Each record
carries its *position* ``(offset, ordinal)``: ``offset`` is where reading can
restart (a byte offset in a file, an index in an iterable) and ``ordinal`` is the
record's number there (its line number in a file). ``read(start)`` restarts at a
chunk's recorded position, so a resumed job seeks instead of re-reading.

A record that cannot be read or converted is still yielded, with ``error`` set
(and the item ``None``), so the job dead-letters it with its line number and
reason and goes on.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from freight._core._source import Position, Record, SourceSize
from freight._errors import ConfigError, RecordError

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
]

_EXCERPT = 200  # characters of a bad record kept for its dead letter
_HASH_SPAN = 1 << 20  # bytes hashed at each end of a file for its fingerprint


@runtime_checkable
class Source(Protocol):
    """What a bulk job reads from."""

    def fingerprint(self) -> str:
        """A short string that changes when the data changes (resume refuses a change)."""
        ...

    def size(self) -> SourceSize:
        """The total size, for progress and ETA, when cheap to know."""
        ...

    def read(self, start: Position | None = None) -> Iterator[Record]:
        """Records from ``start`` (a position this source yielded before) to the end."""
        ...


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


class IterableSource:
    """Any iterable (a list, a generator, a query result), read once, item by item.

    Positions are item indexes; a resume re-iterates and skips what is done, so
    pass a re-iterable (a list) or a factory (``lambda: gen()``) to resume.
    """

    def __init__(
        self, items: Iterable[Any] | Callable[[], Iterable[Any]], *, fingerprint: str | None = None
    ) -> None:
        self._items = items
        self._fingerprint = fingerprint

    def _iterable(self) -> Iterable[Any]:
        if callable(self._items) and not isinstance(self._items, Iterable):
            return self._items()
        return self._items

    def fingerprint(self) -> str:
        if self._fingerprint is not None:
            return self._fingerprint
        items = self._items
        if isinstance(items, Sequence):
            digest = hashlib.sha256(f"{type(items).__name__}:{len(items)}".encode())
            for item in (items[0], items[-1]) if items else ():
                digest.update(repr(item).encode())
            return digest.hexdigest()[:32]
        return f"iterable:{type(items).__name__}"

    def size(self) -> SourceSize:
        items = self._items
        return SourceSize(items=len(items) if isinstance(items, Sequence) else None)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        skip = 0 if start is None else start[0]
        items = iter(self._iterable())
        if skip:
            next(itertools.islice(items, skip, skip), None)  # consume what is done
        # Records are built in C and returned as a map, not yielded: no Python frame per
        # item on this hot path.
        make = functools.partial(tuple.__new__, Record)
        return map(
            make,
            zip(
                itertools.count(skip),
                itertools.count(skip),
                items,
                itertools.repeat(None),
                itertools.repeat(""),
                itertools.repeat("item"),
            ),
        )


class _LineReader:
    """Physical lines of a binary file with the offset and number of each."""

    def __init__(self, f: io.BufferedReader, offset: int, line: int, encoding: str) -> None:
        self._f = f
        self.offset = offset
        self.line = line
        self._encoding = encoding
        self.started: list[tuple[int, int]] = []  # lines consumed by the current record
        self.bad: list[str] = []

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self._f.readline()
            if not raw:
                return
            self.started.append((self.offset, self.line))
            try:
                text = raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                self.bad.append(f"invalid {self._encoding} bytes at line {self.line}: {exc.reason}")
                text = raw.decode(self._encoding, errors="replace")
            self.offset += len(raw)
            self.line += 1
            yield text

    def take(self) -> tuple[Position, list[str]]:
        """The position of the record just read, and its decoding problems."""
        start = self.started[0] if self.started else (self.offset, self.line)
        bad = self.bad
        self.started, self.bad = [], []
        return start, bad


class CsvSource:
    """A CSV file, streamed, every record keeping its line number.

    Args:
        path: the file.
        delimiter, quotechar: the dialect.
        header: ``True`` to read column names from the first line, or the names.
        encoding: of the file (``utf-8-sig`` skips a byte-order mark).
        convert: ``dict[str, str] -> item`` or a pydantic model class; a failing
            conversion makes that record a validation error, not a crash.
        blank_lines: ``"skip"`` (counted as skipped) or ``"error"``.
        raw: items are each record's exact CSV text (checked for its column count,
            not converted), for sinks that hand CSV to a database as it is (COPY).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        delimiter: str = ",",
        quotechar: str = '"',
        header: bool | Sequence[str] = True,
        encoding: str = "utf-8",
        convert: Any = None,
        blank_lines: Literal["skip", "error"] = "skip",
        raw: bool = False,
    ) -> None:
        self.path = _existing_file(path, "CsvSource")
        if raw and convert is not None:
            raise ConfigError("CsvSource: raw=True hands records over as text; drop convert=")
        self.raw = raw
        if len(delimiter) != 1 or len(quotechar) != 1:
            raise ConfigError(
                f"CsvSource delimiter and quotechar must be one character each, got "
                f"{delimiter!r} and {quotechar!r}"
            )
        if blank_lines not in ("skip", "error"):
            raise ConfigError(f"blank_lines must be 'skip' or 'error', got {blank_lines!r}")
        try:
            "".encode(encoding)
        except LookupError as exc:
            raise ConfigError(f"CsvSource encoding {encoding!r} is unknown") from exc
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.encoding = encoding
        self.blank_lines = blank_lines
        self._convert = _converter(convert)
        self._names: list[str] | None = (
            None if header is True else (None if header is False else list(header))
        )
        self._header_in_file = header is True

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def size(self) -> SourceSize:
        return SourceSize(bytes=self.path.stat().st_size)

    def columns(self) -> list[str] | None:
        """The column names (read from the header line when ``header=True``)."""
        if self._header_in_file and self._names is None:
            with self.path.open("rb") as f:
                lines = _LineReader(f, 0, 1, self.encoding)
                row = next(self._reader(lines), None)
            if row is None:
                raise ConfigError(f"CsvSource: {str(self.path)!r} is empty; it has no header line")
            self._names = row
        return self._names

    def _reader(self, lines: _LineReader) -> Iterator[list[str]]:
        return csv.reader(
            iter(lines), delimiter=self.delimiter, quotechar=self.quotechar, strict=True
        )

    def read(self, start: Position | None = None) -> Iterator[Record]:
        if self.raw:  # groups of records, chained in C: no Python frame per record
            return itertools.chain.from_iterable(self._read(start))
        return self._read(start)

    def _read(self, start: Position | None) -> Iterator[Any]:
        names = self.columns()
        with self.path.open("rb") as f:
            if start is None:
                lines = _LineReader(f, 0, 1, self.encoding)
                if self._header_in_file:
                    next(self._reader(lines), None)
                    lines.take()
            else:
                f.seek(start[0])
                lines = _LineReader(f, start[0], start[1], self.encoding)
            if self.raw:
                yield from self._raw_groups(f, lines.offset, lines.line, names)
            else:
                yield from self._records(lines, names)

    def _raw_groups(
        self, f: io.BufferedReader, offset: int, line: int, names: list[str] | None
    ) -> Iterator[Iterable[Record]]:
        """``raw=True``: records are lines as they are (no csv parsing: the fast path of
        COPY loads). Lines are read in groups of about 1 MB; a group whose lines are all
        plain (no quote, the expected column count, valid text) becomes records without a
        Python loop per line; any other group goes line by line (:meth:`_raw_lines`)."""
        quote, delimiter = self.quotechar.encode(), self.delimiter.encode()
        expected = len(names) if names is not None else 0
        new, repeat = tuple.__new__, itertools.repeat
        utf8 = codecs.lookup(self.encoding).name == "utf-8"
        while group := f.readlines(_GROUP_BYTES):
            n = len(group)
            joined = b"".join(group)
            # Plain: no quote, no empty line, the delimiters of `expected` columns per line
            # (counted over the group: a line short of columns beside one with too many
            # passes here and is refused by the server, then isolated like any bad row).
            plain = (
                expected >= 2
                and quote not in joined
                and b"\n\n" not in joined
                and joined.count(delimiter) == n * (expected - 1)
            )
            if plain:
                try:
                    texts = list(
                        map(bytes.decode, group) if utf8 else map(str, group, repeat(self.encoding))
                    )
                except UnicodeDecodeError:
                    plain = False
            if not plain:
                pending = iter(group)
                readline = functools.partial(_next_or_readline, pending, f.readline)
                records, offset, line = self._raw_lines(readline, offset, line, expected)
                yield records
                continue
            starts = list(itertools.accumulate(map(len, group), initial=offset))
            offset = starts.pop()
            if not texts[-1].endswith("\n"):  # the file's last line, without its newline
                texts[-1] += "\n"
            ordinals = range(line, line + n)
            line += n
            # tuple.__new__ builds each record in C: the per-line hot path of COPY loads
            fields = zip(starts, ordinals, texts, repeat(None), repeat(""), repeat("line"))  # noqa: B905 (repeat is endless)
            yield map(new, repeat(Record), fields)

    def _raw_lines(
        self, readline: Callable[[], bytes], offset: int, line: int, expected: int
    ) -> tuple[list[Record], int, int]:
        """Records line by line until ``readline`` runs dry, and where it stopped.

        A line with quotes may open a multi-line field: lines are joined until the
        quotes balance, then parsed to count the columns."""
        quote, delimiter = self.quotechar.encode(), self.delimiter.encode()
        encoding = self.encoding
        records: list[Record] = []
        add = records.append
        while raw := readline():
            start, lines = (offset, line), 1
            offset += len(raw)
            if quote in raw:
                while raw.count(quote) % 2 and (more := readline()):
                    raw += more
                    offset += len(more)
                    lines += 1
            line += lines
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                add(_bad(start, f"invalid {encoding} bytes at line {start[1]}: {exc.reason}"))
                continue
            if not text.strip():
                if self.blank_lines == "skip":
                    add(Record(*start, BLANK, None, ""))
                else:
                    add(_bad(start, "blank line"))
                continue
            if quote in raw:
                parsed = csv.reader(
                    [text], delimiter=self.delimiter, quotechar=self.quotechar, strict=True
                )
                try:
                    columns = len(next(parsed))
                except (csv.Error, StopIteration) as exc:
                    add(Record(*start, None, RecordError(f"malformed CSV: {exc}"), text[:_EXCERPT]))
                    continue
            else:
                columns = raw.count(delimiter) + 1
            if expected and columns != expected:
                error = RecordError(f"expected {expected} columns, got {columns}")
                add(Record(*start, None, error, text[:_EXCERPT]))
                continue
            text = text if text.endswith("\n") else text + "\n"
            add(Record(*start, text, None, "", "line"))
        return records, offset, line

    def _records(self, lines: _LineReader, names: list[str] | None) -> Iterator[Record]:
        reader = self._reader(lines)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                position, _ = lines.take()
                yield _bad(position, f"malformed CSV: {exc}")
                reader = self._reader(lines)  # a csv.reader is done after an error
                continue
            position, bad = lines.take()
            yield self._record(position, row, names, bad)

    def _record(
        self, position: Position, row: list[str], names: list[str] | None, bad: list[str]
    ) -> Record:
        raw = self.delimiter.join(row)[:_EXCERPT]
        if bad:
            return Record(*position, None, RecordError("; ".join(bad)), raw)
        if not row:
            if self.blank_lines == "skip":
                return Record(*position, BLANK, None, "")
            return Record(*position, None, RecordError("blank line"), "")
        if names is not None and len(row) != len(names):
            error = RecordError(f"expected {len(names)} columns, got {len(row)}")
            return Record(*position, None, error, raw)
        value: Any = dict(zip(names, row, strict=True)) if names is not None else row
        if self._convert is not None:
            try:
                value = self._convert(value)
            except Exception as exc:
                return Record(*position, None, _validation(exc), raw)
        return Record(*position, value, None, raw)


class JsonlSource:
    """A JSON Lines file, one JSON value per line, streamed with line numbers.

    Args:
        path: the file.
        encoding: of the file.
        convert: ``value -> item`` or a pydantic model class.
        blank_lines: ``"skip"`` (counted as skipped) or ``"error"``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        encoding: str = "utf-8",
        convert: Any = None,
        blank_lines: Literal["skip", "error"] = "skip",
    ) -> None:
        self.path = _existing_file(path, "JsonlSource")
        if blank_lines not in ("skip", "error"):
            raise ConfigError(f"blank_lines must be 'skip' or 'error', got {blank_lines!r}")
        self.encoding = encoding
        self.blank_lines = blank_lines
        self._convert = _converter(convert)

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def size(self) -> SourceSize:
        return SourceSize(bytes=self.path.stat().st_size)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        offset, line = start or (0, 1)
        with self.path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                position = (offset, line)
                offset += len(raw)
                line += 1
                yield self._record(position, raw)

    def _record(self, position: Position, raw: bytes) -> Record:
        excerpt = raw[:_EXCERPT].decode(self.encoding, errors="replace").rstrip("\r\n")
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            error = RecordError(f"invalid {self.encoding}: {exc.reason}")
            return Record(*position, None, error, excerpt)
        if not text.strip():
            if self.blank_lines == "skip":
                return Record(*position, BLANK, None, "")
            return Record(*position, None, RecordError("blank line"), "")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return Record(*position, None, RecordError(f"invalid JSON: {exc.msg}"), excerpt)
        if self._convert is not None:
            try:
                value = self._convert(value)
            except Exception as exc:
                return Record(*position, None, _validation(exc), excerpt)
        return Record(*position, value, None, excerpt)


class _Blank:
    """Marker item of a skipped blank line."""

    def __repr__(self) -> str:
        return "BLANK"


BLANK = _Blank()


def is_blank(record: Record) -> bool:
    """True for a blank line a source was told to skip."""
    return record.item is BLANK


_GROUP_BYTES = 1 << 20  # raw CSV lines are read in groups of about this many bytes


def _next_or_readline(pending: Iterator[bytes], readline: Callable[[], bytes]) -> bytes:
    """The next line of ``pending``, then of the file (a quoted field may run past it)."""
    return next(pending, None) or readline()


def _bad(position: Position, message: str) -> Record:
    return Record(*position, None, RecordError(message), "")


def _validation(exc: Exception) -> RecordError:
    error = RecordError(f"{type(exc).__name__}: {exc}".splitlines()[0][:_EXCERPT])
    error.__cause__ = exc
    return error


def as_source(source: Any) -> Source:
    """``source`` if it is a :class:`Source`; a path ending .csv/.jsonl; else an iterable."""
    if isinstance(source, Source):
        return source
    if isinstance(source, str | Path):
        suffix = Path(source).suffix.lower()
        if suffix == ".csv":
            return CsvSource(source)
        if suffix in (".jsonl", ".ndjson"):
            return JsonlSource(source)
        if suffix == ".parquet":
            from freight.jobs._parquet import ParquetSource  # noqa: PLC0415 (it imports this)

            return ParquetSource(source)
        raise ConfigError(
            f"cannot tell the format of {str(source)!r} from its suffix; use CsvSource or "
            "JsonlSource explicitly"
        )
    if isinstance(source, Iterable) or callable(source):
        return IterableSource(source)
    raise ConfigError(f"source must be an iterable, a file path or a Source, got {source!r}")
