"""Reading CSV records from a file's bytes: the reader behind :class:`CsvSource`.

This module finds where each record of a CSV file starts and ends, and its fields or
why it is bad. It makes no :class:`Record` itself: the caller hands it two functions
(one for a group of plain lines, one for a record read on its own) and gets back what
they make, so the parsed and the raw modes of ``CsvSource`` share one reader and read
the same records, good and bad, with the same reasons. It depends on nothing of
``freight.jobs`` (no import cycle with :mod:`freight.jobs._sources`).

Rules:

- A record is read as ``csv.reader(strict=True)`` reads it: a quote inside an unquoted
  field (``2,car"ol``) is a literal character.
- A record spanning several physical lines (a quoted field holding line breaks) is
  accepted only if it parses cleanly with the header's column count. Otherwise its
  first line alone is a bad record (``malformed CSV: unterminated quoted field``) and
  reading starts again at the next line: an unbalanced quote never swallows the rest
  of the file, and a file without multi-line fields gives one record per line.
- A record holds at most ``_MAX_RECORD_BYTES`` (64 MiB), one field as much (the csv
  module's own limit, 131,072 characters, is process-wide: it is left alone and a
  larger field is read by a slower reader of the same rules, :func:`_read_big`).
- A NUL byte is a bad record (PostgreSQL text cannot hold one, so no target takes it);
  so is a record without the expected column count, and a line with bytes invalid in
  the encoding (its extent is still found, so the record is refused whole).
- ``\\r\\n`` line endings are read like ``\\n``.
- Lines are read in groups of about ``_GROUP_BYTES`` (1 MiB). A group of plain lines
  (no quote, no NUL, the expected delimiters, one kind of line ending, valid text) is
  checked in one C pass and its lines become records with no parsing per line; any
  other group is looked at in pieces of ``_PIECE`` lines, plain pieces as plain groups,
  the others record by record (:class:`_Reader`). Whichever path a line takes, it gives
  the same record.
"""

from __future__ import annotations

import bisect
import csv
import itertools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import BinaryIO, NamedTuple, TypeVar

from freight._core._source import Position
from freight._csvrecord import CSV_EOF as _CSV_EOF
from freight._csvrecord import read_big as _read_big

__all__ = ["_Block", "_Dialect", "_Make", "_Parsed", "_Plain", "_Reader", "_groups"]

_R = TypeVar("_R")

_MAX_RECORD_BYTES = 64 << 20
"""The longest CSV record (and so field) a :class:`CsvSource` reads: 64 MiB. A longer
one is a bad record, and an unclosed quote is given up at this distance at the latest."""

_GROUP_BYTES = 1 << 20  # CSV lines are read in groups of about this many bytes
_PIECE = 64  # lines: a group that is not all plain is looked at in pieces of this size
_TOO_LONG = "record too long"  # the feed's csv.Error: a record grew past _MAX_RECORD_BYTES
_UNTERMINATED = "malformed CSV: unterminated quoted field"
# Bytes of an over-long line decoded for its excerpt: the 200 characters a dead letter
# keeps, at up to 4 bytes each.
_LONG_LINE_HEAD = 800


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n:,} bytes"


class _Dialect:
    """How a file's CSV is written, and what follows from it for reading its lines.

    Args:
        delimiter, quotechar: one character each (checked by the caller).
        encoding: as the user named it (for messages).
        codec: the codec lines are decoded with (``utf-8`` for ``utf-8-sig``: a
            byte-order mark is skipped once, at the start of the file, not per line).
    """

    __slots__ = ("codec", "delimiter", "drop", "encoding", "quotechar")

    def __init__(self, delimiter: str, quotechar: str, encoding: str, codec: str) -> None:
        self.delimiter, self.quotechar, self.encoding, self.codec = (
            delimiter,
            quotechar,
            encoding,
            codec,
        )
        try:
            special = {*delimiter.encode(codec), *quotechar.encode(codec)}
        except UnicodeEncodeError:
            special = set()
        # The bytes the fast path deletes from a group of lines before comparing what is
        # left with the pattern of plain lines (None: no fast path for this dialect).
        self.drop = (
            bytes(sorted(set(range(256)) - special - {0, 10, 13})) if len(special) == 2 else None
        )

    def decode(self, raw: bytes, line: int) -> tuple[str, str | None]:
        """The text of a line, and what was wrong with its bytes (replaced)."""
        try:
            return raw.decode(self.codec), None
        except UnicodeDecodeError as exc:
            problem = f"invalid {self.encoding} bytes at line {line}: {exc.reason}"
            return raw.decode(self.codec, errors="replace"), problem

    def plain(self, data: bytes, cols: bytes) -> _Block | None:
        """The group of lines ``data`` (whole lines, as read) if they are all plain, else
        ``None``. What is left of them once every byte but the delimiter, the quote, NUL,
        ``\\r`` and ``\\n`` is deleted must be the pattern of plain lines (``,,,,\\n``
        repeated): one C pass checks every line at once. Their bytes must be valid in
        the encoding: checked here, in one pass for UTF-8 (none in plain ASCII); the
        texts of another encoding are made now, line by line."""
        assert self.drop is not None
        if len(data) > _MAX_RECORD_BYTES:
            return None
        kept = data.translate(None, self.drop)  # ~5 bytes a line: counted there
        open_end = not data.endswith(b"\n")
        n = kept.count(b"\n") + open_end
        for ending in (b"\n", b"\r\n"):
            plain = cols + ending
            if kept == plain * n or (open_end and kept == plain * (n - 1) + cols):
                break
        else:
            return None
        crlf = ending == b"\r\n"
        if crlf and data.count(b"\r\n") != n - open_end:  # a \r alone before a field's end
            return None  # ("1,a\rb\n" leaves ",\r\n" too): read on its own, a bad record
        block = _Block(data, n, crlf, open_end, None)
        try:
            if self.codec != "utf-8":
                return block._replace(texts=self._texts(block))
            if not data.isascii():
                data.decode()  # a line's bytes invalid: that line is read on its own
        except UnicodeDecodeError:
            return None
        return block

    def lines(self, block: _Block) -> tuple[list[bytes], list[str]]:
        """Each line of a group of plain lines as read, and its text ending in ``\\n``."""
        lines = block.lines()
        return lines, block.texts if block.texts is not None else self._texts(block, lines)

    def _texts(self, block: _Block, lines: list[bytes] | None = None) -> list[str]:
        if lines is None:
            lines = block.lines()
        if self.codec == "utf-8":
            texts = list(map(bytes.decode, lines))
        else:
            texts = list(map(bytes.decode, lines, itertools.repeat(self.codec)))
        if block.open_end:  # the file's last line, without its line ending
            texts[-1] += "\r\n" if block.crlf else "\n"
        if block.crlf:  # every text ends in \n, as COPY wants one line ending
            texts = [text[:-2] + "\n" for text in texts]
        return texts


class _Block(NamedTuple):
    """A group of plain lines as read (:meth:`_Dialect.plain`): their bytes, how many,
    whether each ends in ``\\r\\n`` and whether the last one has no ending (the
    file's last line); ``texts``: made at once where the file is not UTF-8."""

    data: bytes
    n: int  # lines
    crlf: bool
    open_end: bool
    texts: list[str] | None

    def lines(self) -> list[bytes]:
        """Each line's bytes, as read (no \\r but in a \\r\\n ending: plain lines)."""
        return self.data.splitlines(keepends=True)


def _split_lines(data: bytes) -> list[bytes]:
    """The lines of ``data``, each with its ending (cut at ``\\n`` alone, as
    ``readlines`` cuts), the last one without if it has none."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    last = lines.pop()  # what follows the last \n, with one more
    if last != b"\n":
        lines.append(last[:-1])
    return lines


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


def _skip_line(f: BinaryIO) -> int:
    """Read to the end of the current line, a block at a time; the bytes skipped."""
    skipped = 0
    while block := f.readline(1 << 20):
        skipped += len(block)
        if block.endswith(b"\n"):
            break
    return skipped


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


class _Reader:
    """Reads the records of an open CSV file one by one, by the rules at the top.

    Args:
        dialect: how the file is written.
        f: the file, opened in binary mode.
        expected: the column count (0: unknown, as while reading the header).
        names: the column names (named in the reason of a record with a NUL byte).
    """

    def __init__(
        self, dialect: _Dialect, f: BinaryIO, expected: int, names: Sequence[str] | None
    ) -> None:
        self._dialect, self._f, self._expected = dialect, f, expected
        self._names = names or ()
        self._quote, self._delimiter = dialect.quotechar, dialect.delimiter
        # One csv.reader for all the one-line records (it goes on after an error): making
        # one per record costs more than reading the record.
        self._pending = _Pending()
        self._csv = self._reader(self._pending)

    @property
    def dialect(self) -> _Dialect:
        """How the file is written."""
        return self._dialect

    @property
    def expected(self) -> int:
        """The column count of a record (0: unknown)."""
        return self._expected

    def _reader(self, lines: Iterable[str]) -> Iterator[list[str]]:
        return csv.reader(lines, delimiter=self._delimiter, quotechar=self._quote, strict=True)

    def seek(self, offset: int) -> None:
        """Go to ``offset``, where a record starts, to :meth:`parse` it."""
        self._f.seek(offset)

    def parse(self, start: Position) -> _Parsed | None:
        """The record at ``start`` (where the file is), leaving the file where the next
        starts; ``None`` at the end of the file."""
        f, dialect = self._f, self._dialect
        first = f.readline(_MAX_RECORD_BYTES + 1)
        if not first:
            return None
        offset, line = start
        end = (offset + len(first), line + 1)
        if len(first) > _MAX_RECORD_BYTES:
            end = (end[0] + _skip_line(f), end[1])
            text = first[:_LONG_LINE_HEAD].decode(dialect.codec, errors="replace")
            reason = f"a line longer than {_size(_MAX_RECORD_BYTES)}, the most a record holds"
            return _Parsed(start, end, None, reason, text)
        text, problem = dialect.decode(first, line)
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
            error = self._check(fields, body)
            if error is None:
                return _Parsed(start, end, fields, None, body)
        return _Parsed(start, end, None, error, body)

    def _check(self, fields: list[str], text: str) -> str | None:
        """Why a well-formed record is still bad (a NUL byte, its column count), if it is."""
        if "\x00" in text:
            column = next((i for i, v in enumerate(fields, 1) if "\x00" in v), 0)
            names = self._names
            name = f" ({names[column - 1]!r})" if 0 < column <= len(names) else ""
            return f"NUL byte in field {column}{name}: databases' text cannot hold it"
        expected = self._expected
        if expected and len(fields) != expected:
            return f"expected {expected} columns, got {len(fields)}"
        return None

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
            error = "; ".join(problems) or self._check(row, record)
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
        feed = _Feed(self._f, first, line, self._dialect.decode)
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


# -- groups of lines ----------------------------------------------------------------------

_Plain = Callable[[int, int, _Block], Iterable[_R]]
"""Makes the records of plain lines: ``(offset, line, the group of lines)``."""

_Make = Callable[[_Parsed], _R]
"""Makes the record of one record read on its own."""


def _groups(
    f: BinaryIO, reader: _Reader, position: Position, plain: _Plain[_R], make: _Make[_R]
) -> Iterator[Iterable[_R]]:
    """Records from ``position`` (where ``f`` is) to the end, in groups of about
    ``_GROUP_BYTES`` of lines. A group of plain lines becomes records with no parsing
    per line (``plain``: the hot path of COPY loads); any other group is taken in pieces
    (:func:`_pieces`)."""
    expected, dialect = reader.expected, reader.dialect
    cols = dialect.delimiter.encode(dialect.codec) * (expected - 1)
    if expected < 2 or dialect.drop is None:  # no cheap check of a line: read each
        while True:
            until = position[0] + _GROUP_BYTES
            records, position = _careful(reader, position, until, make)
            if not records:
                return
            yield records
    while data := _read_group(f):
        block = dialect.plain(data, cols)
        if block is None:
            group = _split_lines(data)
            position = yield from _pieces(reader, group, position, cols, (plain, make))
            f.seek(position[0])
        else:
            yield plain(*position, block)
            position = (f.tell(), position[1] + block.n)


def _read_group(f: BinaryIO) -> bytes:
    """The next lines of ``f``, about ``_GROUP_BYTES`` of them, whole (one read, and
    the rest of the last line): no object per line (``readlines`` made one, ~0.07 s per
    1M lines)."""
    data = f.read(_GROUP_BYTES)
    if data and not data.endswith(b"\n"):
        data += f.readline()
    return data


def _pieces(
    reader: _Reader,
    group: list[bytes],
    position: Position,
    cols: bytes,
    makers: tuple[_Plain[_R], _Make[_R]],
) -> Generator[Iterable[_R], None, Position]:
    """Records of a group with a line that is not plain, taken in pieces of ``_PIECE``
    lines: plain pieces as plain groups, the others record by record (so that a few bad
    lines do not slow their neighbours down). Returns where the next record starts (a
    record may end past the group)."""
    plain, make = makers
    starts = list(itertools.accumulate(map(len, group), initial=position[0]))
    while position[0] < starts[-1]:
        first = bisect.bisect_left(starts, position[0])  # a record may end past a piece
        piece = group[first : first + _PIECE]
        block = reader.dialect.plain(b"".join(piece), cols)
        if block is None:
            records, position = _careful(reader, position, starts[first + len(piece)], make)
            yield records
        else:
            yield plain(*position, block)
            position = (starts[first + len(piece)], position[1] + len(piece))
    return position


def _careful(
    reader: _Reader, position: Position, until: int, make: _Make[_R]
) -> tuple[list[_R], Position]:
    """The records read one by one from ``position`` to offset ``until``, and where the
    next one starts."""
    reader.seek(position[0])
    records: list[_R] = []
    while position[0] < until and (parsed := reader.parse(position)):
        records.append(make(parsed))
        position = parsed.end
    return records, position
