"""Streaming sources for bulk jobs: iterables, CSV and JSONL files.

A source yields :class:`Record` values, never the whole dataset. Each record
carries its *position* ``(offset, ordinal)``: ``offset`` is where reading can
restart (a byte offset in a file, an index in an iterable) and ``ordinal`` is the
record's number there (its line number in a file). ``read(start)`` restarts at a
chunk's recorded position, so a resumed job seeks instead of re-reading, and
``read_at(positions)`` reads the records at many positions (dead letters to replay)
in one pass.

A record that cannot be read or converted is still yielded, with ``error`` set
(and the item ``None``), so the job dead-letters it with its line number and
reason and goes on.

CSV rules (the same in both of :class:`CsvSource`'s modes, parsed and ``raw``):

- A record is read as ``csv.reader(strict=True)`` reads it: a quote inside an unquoted
  field (``2,car"ol``) is a literal character.
- A record spanning several physical lines (a quoted field holding line breaks) is
  accepted only if it parses cleanly with the header's column count. Otherwise its
  first line alone is a bad record (``malformed CSV: unterminated quoted field``) and
  reading starts again at the next line: an unbalanced quote never swallows the rest
  of the file, and a file without multi-line fields gives one record per line.
- A record holds at most 64 MiB, one field as much (the csv
  module's own limit, 131,072 characters, is process-wide: it is left alone and a
  larger field is read by a slower reader of the same rules).
- A NUL byte is a bad record (PostgreSQL text cannot hold one, so no target takes it).
- A UTF-8 byte-order mark opening the file is skipped; ``\\r\\n`` line endings are
  read like ``\\n``; a duplicate or empty column name in the header is a ConfigError.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol, runtime_checkable

from freight._core._source import Position, Record, SourceSize
from freight._errors import ConfigError, RecordError

__all__ = [
    "CsvSource",
    "IterableSource",
    "JsonlSource",
    "Position",
    "ReadAtSource",
    "Record",
    "RecordError",
    "Source",
    "SourceSize",
    "as_source",
]

_EXCERPT = 200  # characters of a bad record kept for its dead letter
_HASH_SPAN = 1 << 20  # bytes hashed at each end of a file for its fingerprint

_MAX_RECORD_BYTES = 64 << 20
"""The longest CSV record (and so field) a :class:`CsvSource` reads: 64 MiB. A longer
one is a bad record, and an unclosed quote is given up at this distance at the latest."""


@runtime_checkable
class Source(Protocol):
    """What a bulk job reads from.

    A source may also offer ``read_at(positions)`` (see :class:`ReadAtSource`): the
    records at many positions in one pass, which replaying dead letters uses when it is
    there. It is optional: without it, each position is read with ``read(position)``.
    """

    def fingerprint(self) -> str:
        """A short string that changes when the data changes (resume refuses a change)."""
        ...

    def size(self) -> SourceSize:
        """The total size, for progress and ETA, when cheap to know."""
        ...

    def read(self, start: Position | None = None) -> Iterator[Record]:
        """Records from ``start`` (a position this source yielded before) to the end."""
        ...


@runtime_checkable
class ReadAtSource(Protocol):
    """A source that reads the records at many positions in one pass (optional)."""

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The record starting at each of ``positions`` (ones this source yielded
        before), in ascending order, in one pass over the data. A position that no
        longer starts a record yields nothing; each position yields at most once."""
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


def _wanted(positions: Iterable[Position]) -> list[Position]:
    """``positions`` in ascending order, each once."""
    return sorted({(int(offset), int(ordinal)) for offset, ordinal in positions})


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

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The items at ``positions`` (index, index), in order, iterating once."""
        wanted = [index for index, ordinal in _wanted(positions) if index == ordinal >= 0]
        if not wanted:
            return
        targets = iter(wanted)
        target = next(targets)
        for index, item in enumerate(self._iterable()):
            if index == target:
                yield Record(index, index, item, None, "", "item")
                target = next(targets, -1)
                if target < 0:
                    return


# -- CSV ------------------------------------------------------------------------------

_GROUP_BYTES = 1 << 20  # CSV lines are read in groups of about this many bytes
_PIECE = 64  # lines: a group that is not all plain is looked at in pieces of this size
_CSV_EOF = "unexpected end of data"  # csv.reader's reason for a quote open at the end
_TOO_LONG = "record too long"  # the feed's csv.Error: a record grew past _MAX_RECORD_BYTES
_UNTERMINATED = "malformed CSV: unterminated quoted field"


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n:,} bytes"


class _Parsed(NamedTuple):
    """One CSV record as read: its fields or why it is bad, and where the next starts."""

    start: Position
    end: Position
    fields: list[str] | None  # [] for a blank line, None for a bad record
    error: str | None
    text: str  # without its line ending (of a bad multi-line candidate: its first line)
    quoted: bool = False  # the text holds the quote character


class _Feed:
    """The physical lines of one CSV record, handed to ``csv.reader`` one by one: the
    first, then more from the file while a quoted field runs on, never more than
    ``_MAX_RECORD_BYTES`` in all. A line with invalid bytes is decoded with U+FFFD and
    noted, so the record's extent is still found (and the record refused whole)."""

    def __init__(
        self,
        f: BinaryIO,
        first: tuple[int, bytes, str, str | None],
        line: int,
        decode: Callable[[bytes, int], tuple[str, str | None]],
    ) -> None:
        offset, raw, text, problem = first
        self._f, self._line, self._decode = f, line, decode
        self._resume = offset + len(raw)  # where the second line starts
        self._first = (len(raw), text, problem)
        self._reset()

    def _reset(self) -> None:
        self.size, text, problem = self._first
        self.texts, self.problems, self.lines = [text], [problem] if problem else [], 0

    def rewind(self) -> None:
        """Back to the first line (the file too), to read the record again."""
        self._f.seek(self._resume)
        self._reset()

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if self.lines:
            room = _MAX_RECORD_BYTES - self.size
            raw = self._f.readline(room + 1) if room > 0 else b""
            if room <= 0 or len(raw) > room:
                raise csv.Error(_TOO_LONG)  # csv.reader passes it on
            if not raw:
                raise StopIteration
            text, problem = self._decode(raw, self._line + self.lines)
            self.size += len(raw)
            self.texts.append(text)
            if problem:
                self.problems.append(problem)
        self.lines += 1
        return self.texts[-1]


def _read_big(lines: Iterator[str], delimiter: str, quote: str) -> list[str]:
    """One record read as ``csv.reader(strict=True)`` reads it, but without the csv
    module's field size limit (131,072 characters, process-wide, so not raised here):
    the reader of a record holding a huge field. Regular expressions skip over the
    field's text, so a 10 MB field costs milliseconds."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*")
    inside = re.compile(f"[^{re.escape(quote)}]*")
    fields: list[str] = []
    parts: list[str] = []
    quoted = False
    for line in lines:
        pos, end = 0, len(line)
        if not fields and not quoted and not line.strip("\r\n"):
            return []
        while True:
            if quoted:
                found = inside.match(line, pos)
                assert found is not None  # a starred class always matches
                parts.append(found.group())
                pos = found.end() + 1  # past the quote
                if pos > end:
                    break  # the quoted field runs on to the next line
                if line.startswith(quote, pos):
                    parts.append(quote)  # a doubled quote
                    pos += 1
                    continue
                quoted = False
                fields.append("".join(parts))
                parts = []
                if pos == end or line[pos] in "\r\n":
                    return _record_end(fields, line, pos)
                if line[pos] != delimiter:
                    raise csv.Error(f"'{delimiter}' expected after '{quote}'")
                pos += 1
            if line.startswith(quote, pos):
                quoted = True
                pos += 1
                continue
            found = unquoted.match(line, pos)
            assert found is not None
            fields.append(found.group())
            pos = found.end()
            if pos == end or line[pos] != delimiter:
                return _record_end(fields, line, pos)
            pos += 1
    raise csv.Error(_CSV_EOF)


def _record_end(fields: list[str], line: str, pos: int) -> list[str]:
    """``fields``, when the rest of ``line`` is only its line ending."""
    if line[pos:].strip("\r\n"):
        raise csv.Error("new-line character seen in unquoted field")
    return fields


def _skip_line(f: BinaryIO) -> int:
    """Read to the end of the current line, a block at a time; the bytes skipped."""
    skipped = 0
    while block := f.readline(1 << 20):
        skipped += len(block)
        if block.endswith(b"\n"):
            break
    return skipped


def _line_starts_at(f: BinaryIO, offset: int, first: int) -> bool:
    """Whether a line of the file starts at ``offset`` (``first``: the first one's)."""
    if offset <= first:
        return offset == first
    f.seek(offset - 1)
    return f.read(1) == b"\n"


def _check_names(names: Sequence[str], where: str) -> None:
    """Refuse empty and duplicate column names: a table cannot have them."""
    seen: dict[str, int] = {}
    for column, name in enumerate(names, 1):
        if not name.strip():
            raise ConfigError(
                f"CsvSource: empty column name in {where} (column {column}); "
                "give every column a name"
            )
        if name in seen:
            raise ConfigError(
                f"CsvSource: duplicate column name {name!r} in {where} "
                f"(columns {seen[name]} and {column}); rename one"
            )
        seen[name] = column


class _Reader:
    """Reads the records of an open CSV file one by one, by the rules at the top."""

    def __init__(self, source: CsvSource, f: BinaryIO, expected: int) -> None:
        self._source, self._f, self._expected = source, f, expected  # expected 0: unknown
        self._quote, self._delimiter = source.quotechar, source.delimiter
        # One csv.reader for all the one-line records (it goes on after an error): making
        # one per record costs more than reading the record.
        self._pending = _Pending()
        self._csv = self._reader(self._pending)

    def _reader(self, lines: Iterable[str]) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self._delimiter, quotechar=self._quote, strict=True)

    def seek(self, offset: int) -> None:
        self._f.seek(offset)

    def parse(self, start: Position) -> _Parsed | None:
        """The record at ``start`` (where the file is), leaving the file where the next
        starts; ``None`` at the end of the file."""
        f, source = self._f, self._source
        first = f.readline(_MAX_RECORD_BYTES + 1)
        if not first:
            return None
        offset, line = start
        end = (offset + len(first), line + 1)
        if len(first) > _MAX_RECORD_BYTES:
            end = (end[0] + _skip_line(f), end[1])
            text = first[: _EXCERPT * 4].decode(source._codec, errors="replace")
            reason = f"a line longer than {_size(_MAX_RECORD_BYTES)}, the most a record holds"
            return _Parsed(start, end, None, reason, text)
        text, problem = source._decode(first, line)
        if self._quote in text:
            return self._quoted((offset, first, text, problem), line)
        body = text.rstrip("\r\n")
        error: str | None
        if "\r" in body:
            error = "malformed CSV: a carriage return inside an unquoted field"
        elif problem is not None:
            error = problem
        elif not body:
            return _Parsed(start, end, [], None, "")
        else:
            fields = body.split(self._delimiter)
            error = source._check(fields, body, self._expected)
            if error is None:
                return _Parsed(start, end, fields, None, body)
        return _Parsed(start, end, None, error, body)

    def _quoted(self, first: tuple[int, bytes, str, str | None], line: int) -> _Parsed:
        """A record whose first line holds the quote character, read by ``csv.reader``
        with lines added while a quoted field stays open. Over several lines it is taken
        only with the expected column count: otherwise its first line alone is bad (an
        unclosed quote) and the next record starts at the next line."""
        offset, raw, text, problem = first
        row, feed = self._split(first, line)
        if feed is None:  # read as one line
            lines, size, texts, problems = 1, len(raw), [text], [problem] if problem else []
        else:
            lines, size, texts, problems = feed.lines or 1, feed.size, feed.texts, feed.problems
        start, expected = (offset, line), self._expected
        if isinstance(row, list) and (lines == 1 or not expected or len(row) == expected):
            end = (offset + size, line + lines)
            record = "".join(texts).rstrip("\r\n")
            error = "; ".join(problems) or self._source._check(row, record, expected)
            return _Parsed(start, end, row if error is None else None, error, record, True)
        self._f.seek(offset + len(raw))  # the next record starts at the next line
        if row == _TOO_LONG:
            error = f"{_UNTERMINATED} (none closed within {_size(_MAX_RECORD_BYTES)})"
        elif isinstance(row, list) or lines > 1 or row == _CSV_EOF:
            error = _UNTERMINATED
        else:
            error = f"malformed CSV: {row}"
        return _Parsed(start, (offset + len(raw), line + 1), None, error, text.rstrip("\r\n"))

    def _split(
        self, first: tuple[int, bytes, str, str | None], line: int
    ) -> tuple[list[str] | str, _Feed | None]:
        """The fields of the record (or why it is malformed), and the feed of its lines
        when one line was not enough (``None``: most records)."""
        self._pending.lines.append(first[2])
        try:
            return next(self._csv), None
        except csv.Error as exc:
            error = exc
        feed = _Feed(self._f, first, line, self._source._decode)
        if str(error) == _CSV_EOF:  # a quoted field runs on past the line
            try:
                return next(self._reader(feed)), feed
            except csv.Error as exc:
                error = exc
        return self._split_big(feed, error), feed

    def _split_big(self, feed: _Feed, error: csv.Error) -> list[str] | str:
        """The fields of a record with a field past the csv module's limit, or why the
        record is malformed (``error``, when that was not the reason)."""
        if not str(error).startswith("field larger than field limit"):
            return str(error)
        feed.rewind()
        try:
            return _read_big(feed, self._delimiter, self._quote)
        except csv.Error as exc:
            return str(exc)


class _Pending:
    """The lines put in ``lines``, one at a time; it stops (for now) when there is none,
    and a ``csv.reader`` over it takes the next line put in."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __iter__(self) -> _Pending:
        return self

    def __next__(self) -> str:
        if self.lines:
            return self.lines.pop()
        raise StopIteration


class CsvSource:
    """A CSV file, streamed, every record keeping its line number.

    Records are read by the rules at the top of this module, the same in both modes:
    the same records, good and bad, with the same reasons. A record holds at most
    64 MiB (a field as much); a malformed record or an unclosed quote costs one bad
    record (its first line), never the lines after it.

    Args:
        path: the file.
        delimiter, quotechar: the dialect.
        header: ``True`` to read column names from the first line, or the names.
            Empty or duplicate names are refused (:class:`ConfigError`).
        encoding: of the file (a UTF-8 byte-order mark is skipped).
        convert: ``dict[str, str] -> item`` or a pydantic model class; a failing
            conversion makes that record a validation error, not a crash.
        blank_lines: ``"skip"`` (counted as skipped) or ``"error"``.
        raw: items are each record's CSV text ending in ``\\n`` (checked for its column
            count, not converted), for sinks that hand CSV to a database as it is
            (PostgreSQL ``COPY … (FORMAT csv)``). A line without the quote character is
            its own text; a record with it is written again by ``csv.writer`` (fields
            holding a quote, a delimiter or a line break quoted), so the server reads
            every field as ``csv.reader`` does (``2,car"ol`` is handed over as
            ``2,"car""ol"``).
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
            codec = codecs.lookup(encoding).name
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
        if self._names is not None:
            _check_names(self._names, "header=")
        self._header_in_file = header is True
        self._data: Position | None = None  # where the first record starts
        # the byte-order mark is skipped once, at the start, not on every line
        self._codec = "utf-8" if codec in ("utf-8", "utf-8-sig") else codec
        try:
            special = {*delimiter.encode(self._codec), *quotechar.encode(self._codec)}
        except UnicodeEncodeError:
            special = set()
        # The bytes the raw fast path deletes from a group of lines before comparing what
        # is left with the pattern of plain lines (None: no fast path for this dialect).
        self._drop = (
            bytes(sorted(set(range(256)) - special - {0, 10, 13})) if len(special) == 2 else None
        )

    def fingerprint(self) -> str:
        return _file_fingerprint(self.path)

    def size(self) -> SourceSize:
        return SourceSize(bytes=self.path.stat().st_size)

    def columns(self) -> list[str] | None:
        """The column names (read from the header line when ``header=True``).

        Raises:
            ConfigError: the file is empty, or its header cannot be read, is blank, or
                has an empty or a duplicate column name.
        """
        if self._header_in_file and self._names is None:
            with self.path.open("rb") as f:
                start = (self._skip_bom(f), 1)
                f.seek(start[0])
                parsed = _Reader(self, f, 0).parse(start)
            where = f"the header of {self.path.name}, line 1"
            if parsed is None:
                raise ConfigError(f"CsvSource: {str(self.path)!r} is empty; it has no header line")
            if parsed.error is not None or not parsed.fields:
                reason = parsed.error or "it is blank"
                raise ConfigError(f"CsvSource: cannot read {where}: {reason}")
            _check_names(parsed.fields, where)
            self._names, self._data = parsed.fields, parsed.end
        return self._names

    def _skip_bom(self, f: BinaryIO) -> int:
        return 3 if self._codec == "utf-8" and f.read(3) == codecs.BOM_UTF8 else 0

    def _start(self, start: Position | None) -> tuple[list[str] | None, int, Position]:
        """The column names, their count (0: unknown), and where reading starts."""
        names = self.columns()
        if self._data is None:  # no header line: the data starts the file
            with self.path.open("rb") as f:
                self._data = (self._skip_bom(f), 1)
        return names, len(names) if names else 0, start or self._data

    def read(self, start: Position | None = None) -> Iterator[Record]:
        # groups of records, chained in C: no Python frame per record of a plain group
        return itertools.chain.from_iterable(self._groups(start))

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The records starting at ``positions``, in file order, in one pass: the file is
        opened once and read forward from one position to the next (dead letters to
        replay). A position that does not start a line after the header, or that falls
        inside the record read before it, yields nothing."""
        _, expected, data = self._start(None)
        reached = data[0]  # the records before this offset were read (or are the header)
        make = self._raw_record if self.raw else self._record
        with self.path.open("rb", buffering=1 << 16) as f:
            reader = _Reader(self, f, expected)
            for position in _wanted(positions):
                if position[0] < reached or not _line_starts_at(f, position[0], data[0]):
                    continue
                f.seek(position[0])
                parsed = reader.parse(position)
                if parsed is None:
                    break  # past the end of the file
                reached = parsed.end[0]
                yield make(parsed)

    def _groups(self, start: Position | None) -> Iterator[Iterable[Record]]:
        """Records in groups of about 1 MB of lines. A group of plain lines (no quote, no
        NUL, the expected delimiters, one kind of line ending, valid text) becomes records
        with no parsing per line (the hot path of COPY loads); any other group is taken
        in pieces (:meth:`_pieces`)."""
        _, expected, position = self._start(start)
        cols = self.delimiter.encode(self._codec) * (expected - 1)
        plain = self._raw_plain if self.raw else self._plain_records
        with self.path.open("rb") as f:
            f.seek(position[0])
            reader = _Reader(self, f, expected)
            if expected < 2 or self._drop is None:  # no cheap check of a line: read each
                while True:
                    until = position[0] + _GROUP_BYTES
                    records, position = self._careful(reader, position, until)
                    if not records:
                        return
                    yield records
            while group := f.readlines(_GROUP_BYTES):
                texts = self._plain(group, cols)
                if texts is None:
                    position = yield from self._pieces(reader, group, position, cols)
                    f.seek(position[0])
                else:
                    yield plain(*position, group, texts)
                    position = (f.tell(), position[1] + len(group))

    def _pieces(
        self, reader: _Reader, group: list[bytes], position: Position, cols: bytes
    ) -> Generator[Iterable[Record], None, Position]:
        """Records of a group with a line that is not plain, taken in pieces of 64 lines:
        plain pieces as plain groups, the others record by record (so that a few bad
        lines do not slow their neighbours down). Returns where the next record starts
        (a record may end past the group)."""
        plain = self._raw_plain if self.raw else self._plain_records
        starts = list(itertools.accumulate(map(len, group), initial=position[0]))
        while position[0] < starts[-1]:
            first = bisect.bisect_left(starts, position[0])  # a record may end past a piece
            piece = group[first : first + _PIECE]
            texts = self._plain(piece, cols)
            if texts is None:
                records, position = self._careful(reader, position, starts[first + len(piece)])
                yield records
            else:
                yield plain(*position, piece, texts)
                position = (starts[first + len(piece)], position[1] + len(piece))
        return position

    def _careful(
        self, reader: _Reader, position: Position, until: int
    ) -> tuple[list[Record], Position]:
        """The records read one by one from ``position`` to offset ``until``, and where
        the next one starts."""
        reader.seek(position[0])
        make = self._raw_record if self.raw else self._record
        records: list[Record] = []
        while position[0] < until and (parsed := reader.parse(position)):
            records.append(make(parsed))
            position = parsed.end
        return records, position

    def _raw_plain(self, offset: int, line: int, group: list[bytes], texts: list[str]) -> Any:
        """Raw records of plain lines, made in C (a map of ``tuple.__new__``)."""
        repeat = itertools.repeat
        starts = itertools.accumulate(map(len, group), initial=offset)
        ordinals = itertools.count(line)
        fields = zip(starts, ordinals, texts, repeat(None), repeat(""), repeat("line"))  # noqa: B905 (the shortest, texts, ends it)
        return map(tuple.__new__, repeat(Record), fields)

    def _plain_records(
        self, offset: int, line: int, group: list[bytes], texts: list[str]
    ) -> list[Record]:
        """Parsed records of plain lines: split at the delimiter, no csv parsing."""
        names, convert, delimiter = self._names, self._convert, self.delimiter
        records = []
        for raw, text in zip(group, texts, strict=True):
            body = text[:-1]
            value: Any = dict(zip(names or (), body.split(delimiter), strict=True))
            if convert is None:
                records.append(Record(offset, line, value, None, body[:_EXCERPT]))
            else:
                try:
                    records.append(Record(offset, line, convert(value), None, body[:_EXCERPT]))
                except Exception as exc:
                    records.append(Record(offset, line, None, _validation(exc), body[:_EXCERPT]))
            offset += len(raw)
            line += 1
        return records

    def _record(self, parsed: _Parsed) -> Record:
        """A record of the parsed mode: a dict (or a list without names), converted."""
        start, excerpt = parsed.start, parsed.text[:_EXCERPT]
        fields = parsed.fields
        if fields is None:
            return Record(*start, None, RecordError(parsed.error), excerpt)
        if not fields:
            return self._blank(start)
        names = self._names
        value: Any = dict(zip(names, fields, strict=True)) if names is not None else fields
        if self._convert is not None:
            try:
                value = self._convert(value)
            except Exception as exc:
                return Record(*start, None, _validation(exc), excerpt)
        return Record(*start, value, None, excerpt)

    def _raw_record(self, parsed: _Parsed) -> Record:
        """A record of the raw mode: its text as the server must read it."""
        start, fields = parsed.start, parsed.fields
        if fields is None:
            return Record(*start, None, RecordError(parsed.error), parsed.text[:_EXCERPT])
        if not fields:
            return self._blank(start)
        text = self._canonical(fields) if parsed.quoted else parsed.text + "\n"
        if text == "\\.\n":  # alone on a line, COPY reads it as the end of the data
            text = f"{self.quotechar}\\.{self.quotechar}\n"
        return Record(*start, text, None, "", "line")

    def _blank(self, start: Position) -> Record:
        if self.blank_lines == "skip":
            return Record(*start, BLANK, None, "")
        return Record(*start, None, RecordError("blank line"), "")

    def _canonical(self, fields: list[str]) -> str:
        """``fields`` as ``csv.writer`` writes them (QUOTE_MINIMAL) on one line ending in
        ``\\n``: a field holding the quote, the delimiter, ``\\r`` or ``\\n`` is quoted,
        its quotes doubled. (``csv.writer`` itself would leave a lone ``\\r`` unquoted.)"""
        quote, delimiter = self.quotechar, self.delimiter
        if fields == [""]:
            return quote * 2 + "\n"  # not a blank line
        out = [
            quote + field.replace(quote, quote * 2) + quote
            if quote in field
            else (
                quote + field + quote
                if delimiter in field or "\n" in field or "\r" in field
                else field
            )
            for field in fields
        ]
        return delimiter.join(out) + "\n"

    def _decode(self, raw: bytes, line: int) -> tuple[str, str | None]:
        """The text of a line, and what was wrong with its bytes (replaced)."""
        try:
            return raw.decode(self._codec), None
        except UnicodeDecodeError as exc:
            problem = f"invalid {self.encoding} bytes at line {line}: {exc.reason}"
            return raw.decode(self._codec, errors="replace"), problem

    def _check(self, fields: list[str], text: str, expected: int) -> str | None:
        """Why a well-formed record is still bad (a NUL byte, its column count), if it is."""
        if "\x00" in text:
            column = next((i for i, v in enumerate(fields, 1) if "\x00" in v), 0)
            names = self._names or ()
            name = f" ({names[column - 1]!r})" if 0 < column <= len(names) else ""
            return f"NUL byte in field {column}{name}: databases' text cannot hold it"
        if expected and len(fields) != expected:
            return f"expected {expected} columns, got {len(fields)}"
        return None

    def _plain(self, group: list[bytes], cols: bytes) -> list[str] | None:
        """The texts of a group of plain lines, each ending in ``\\n``; ``None`` if a
        line is not plain. What is left of the group once every byte but the delimiter,
        the quote, NUL, ``\\r`` and ``\\n`` is deleted must be the pattern of plain lines
        (``,,,,\\n`` repeated): one C pass checks every line at once."""
        assert self._drop is not None
        joined = b"".join(group)
        if len(joined) > _MAX_RECORD_BYTES:
            return None
        kept = joined.translate(None, self._drop)
        n, open_end = len(group), not group[-1].endswith(b"\n")
        for ending in (b"\n", b"\r\n"):
            plain = cols + ending
            if kept == plain * n or (open_end and kept == plain * (n - 1) + cols):
                break
        else:
            return None
        try:
            if self._codec == "utf-8":
                texts = list(map(bytes.decode, group))
            else:
                texts = list(map(bytes.decode, group, itertools.repeat(self._codec)))
        except UnicodeDecodeError:
            return None
        if open_end:  # the file's last line, without its line ending
            texts[-1] += ending.decode()
        if ending == b"\r\n":  # every text ends in \n, as COPY wants one line ending
            texts = [text[:-2] + "\n" for text in texts]
        return texts


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

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The records starting at ``positions``, in file order, in one pass (see
        :meth:`CsvSource.read_at`); a position that does not start a line yields nothing."""
        reached = 0
        with self.path.open("rb", buffering=1 << 16) as f:
            for position in _wanted(positions):
                if position[0] < reached or not _line_starts_at(f, position[0], 0):
                    continue
                f.seek(position[0])
                raw = f.readline()
                if not raw:
                    break
                reached = position[0] + len(raw)
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
