"""Streaming sources for bulk jobs: iterables, CSV and JSONL files.

A source yields :class:`Record` values, never the whole dataset. Each record
carries its *position* ``(offset, ordinal)``: ``offset`` is where reading can
restart (a byte offset in a file, an index in an iterable) and ``ordinal`` is the
record's number there (its line number in a file). ``read(start)`` restarts at a
chunk's recorded position, so a resumed job seeks instead of re-reading, and
``read_at(positions)`` reads the records at many positions (dead letters to replay)
in one pass.

CSV and JSONL files may be gzip- or zstd-compressed (``compression="auto"``: from the
suffix or the file's header); they are read as a stream through
:mod:`freight.jobs._compression`, positions being offsets in the decompressed stream, and
their fingerprint and size those of the compressed bytes (``bytes_read`` maps a position
back to them, for progress).

A record that cannot be read or converted is still yielded, with ``error`` set
(and the item ``None``), so the job dead-letters it with its line number and
reason and goes on.

CSV: :class:`CsvSource` holds the options, the header and what makes a record of each
mode (a dict, converted, or the text ``COPY`` must read); how a file's bytes become
records, good and bad, is :mod:`freight.jobs._csvread`, whose rules (``csv.reader``'s
strict reading, multi-line records only whole and clean, at most 64 MiB a record, no
NUL byte) are the same in both modes. The header is CsvSource's: a UTF-8 byte-order mark
opening the file is skipped, and a duplicate or empty column name is a ConfigError.

Module rules: this module depends on :mod:`freight.jobs._csvread`, never the other way
round; the helpers shared by every source (fingerprints, converters, excerpts, the
blank marker, the file base) live in :mod:`freight.jobs._sourcekit`, and are re-exported
here (:mod:`freight.jobs._parquet` imports them from here). :class:`IterableSource` lives
in :mod:`freight.jobs._iterable` and is re-exported here.
"""

from __future__ import annotations

import codecs
import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

from freight._core._source import Position, Record, SourceSize
from freight._errors import ConfigError, RecordError
from freight.jobs._csvread import _Block, _Dialect, _groups, _Make, _Parsed, _Plain, _Reader
from freight.jobs._iterable import IterableSource
from freight.jobs._lines import Lines
from freight.jobs._sourcekit import (
    _EXCERPT,
    BLANK,
    CompressionArg,
    _converter,
    _existing_file,
    _file_fingerprint,
    _FileSource,
    _line_starts_at,
    _validation,
    _wanted,
    is_blank,
)

__all__ = [
    # the shared helpers' old home: re-exported for those that import them from here
    "BLANK",
    "_EXCERPT",
    "_converter",
    "_existing_file",
    "_file_fingerprint",
    "_validation",
    "_wanted",
    "is_blank",
    # this module's own
    "CsvSource",
    "IterableSource",
    "JsonlSource",
    "Position",
    "ReadAtSource",
    "Record",
    "RecordError",
    "Source",
    "SourceProgress",
    "SourceSize",
    "as_source",
    "file_format",
]


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


@runtime_checkable
class SourceProgress(Protocol):
    """A source that measures how far a position is into its file (optional).

    Progress is measured in bytes of the file as it is on disk (``size().bytes``). A
    plain file's position is such an offset already; a compressed file's position is an
    offset in its decompressed stream, which this maps back to compressed bytes.
    """

    def bytes_read(self, position: Position) -> int | None:
        """The bytes of the file read to reach ``position`` (``None``: not known yet,
        as for a compressed file's position not read to in this process)."""
        ...


# -- CSV ------------------------------------------------------------------------------


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


class CsvSource(_FileSource):
    """A CSV file, streamed, every record keeping its line number.

    Records are read by one reader (the rules at the top of ``freight.jobs._csvread``),
    the same in both modes: the same records, good and bad, with the same reasons. A
    record holds at most 64 MiB (a field as much); a malformed record or an unclosed
    quote costs one bad record (its first line), never the lines after it.

    Args:
        path: the file.
        delimiter, quotechar: the dialect.
        header: ``True`` to read column names from the first line, or the names.
            Empty or duplicate names are refused (:class:`ConfigError`).
        encoding: of the file (a UTF-8 byte-order mark is skipped).
        convert: ``dict[str, str] -> item`` or a pydantic model class; a failing
            conversion makes that record a validation error, not a crash.
        blank_lines: ``"skip"`` (counted as skipped) or ``"error"``.
        compression: ``"auto"`` (from the suffix: ``.gz`` gzip, ``.zst`` zstd),
            ``"gzip"``, ``"zstd"`` (extra ``freight[zstd]``) or ``None`` (plain). A
            compressed file is read as a stream; positions are offsets in the
            decompressed data, and a resume decompresses again up to its checkpoint.
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
        compression: CompressionArg = "auto",
    ) -> None:
        self._init_file(path, "CsvSource", compression)
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
        codec = "utf-8" if codec in ("utf-8", "utf-8-sig") else codec
        self._dialect = _Dialect(delimiter, quotechar, encoding, codec)

    def columns(self) -> list[str] | None:
        """The column names (read from the header line when ``header=True``).

        Raises:
            ConfigError: the file is empty, or its header cannot be read, is blank, or
                has an empty or a duplicate column name.
        """
        if self._header_in_file and self._names is None:
            with self._open() as f:
                start = (self._skip_bom(f), 1)
                f.seek(start[0])
                parsed = _Reader(self._dialect, f, 0, None).parse(start)
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
        utf8 = self._dialect.codec == "utf-8"
        return 3 if utf8 and f.read(3) == codecs.BOM_UTF8 else 0

    def _start(self, start: Position | None) -> tuple[list[str] | None, int, Position]:
        """The column names, their count (0: unknown), and where reading starts."""
        names = self.columns()
        if self._data is None:  # no header line: the data starts the file
            with self._open() as f:
                self._data = (self._skip_bom(f), 1)
        return names, len(names) if names else 0, start or self._data

    def read(self, start: Position | None = None) -> Iterator[Record]:
        # groups of records, chained in C: no Python frame per record of a plain group
        return itertools.chain.from_iterable(self._groups(start))

    def _read_grouped(self, start: Position | None = None) -> Iterator[Iterable[Record]]:
        """The records of :meth:`read`, in the groups the reader reads: plain lines of
        the raw mode as :class:`~freight.jobs._lines.Lines` (a job's chunks of them stay
        lines, :class:`~freight.jobs._chunking.Feed`). A subclass's own ``read`` is
        kept: its records in one group."""
        if type(self).read is not CsvSource.read:
            return iter((self.read(start),))
        return self._groups(start)

    def _groups(self, start: Position | None) -> Iterator[Iterable[Record]]:
        """The records from ``start``, in the groups the reader reads (about 1 MiB of
        lines each; see :mod:`freight.jobs._csvread`)."""
        names, expected, position = self._start(start)
        plain, make = self._makers()
        with self._open() as f:
            f.seek(position[0])
            reader = _Reader(self._dialect, f, expected, names)
            yield from _groups(f, reader, position, plain, make)

    def _makers(self) -> tuple[_Plain[Record], _Make[Record]]:
        """What makes the records of this mode: of plain lines, and of one parsed record."""
        if self.raw:
            return self._raw_plain, self._raw_record
        return self._plain_records, self._record

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        """The records starting at ``positions``, in file order, in one pass: the file is
        opened once and read forward from one position to the next (dead letters to
        replay). A position that does not start a line after the header, or that falls
        inside the record read before it, yields nothing."""
        names, expected, data = self._start(None)
        reached = data[0]  # the records before this offset were read (or are the header)
        _, make = self._makers()
        with self._open(buffering=1 << 16) as f:
            reader = _Reader(self._dialect, f, expected, names)
            for position in _wanted(positions):
                if position[0] < reached or not _line_starts_at(f, position[0], data[0]):
                    continue
                f.seek(position[0])
                parsed = reader.parse(position)
                if parsed is None:
                    break  # past the end of the file
                reached = parsed.end[0]
                yield make(parsed)

    def _raw_plain(self, offset: int, line: int, block: _Block) -> Lines:
        """Raw records of plain lines, kept as lines (:class:`~freight.jobs._lines.Lines`:
        a tuple per line only when asked for); of a UTF-8 file, as their one text."""
        if block.texts is not None:  # another encoding: the texts are made
            return Lines(offset, line, list(map(len, block.lines())), block.texts)
        data = block.data
        if block.crlf:
            data = data.replace(b"\r\n", b"\n")
        if block.open_end:
            data += b"\n"
        return Lines.of_block(offset, line, data, block.n, crlf=block.crlf,
                              open_end=block.open_end)  # fmt: skip

    def _plain_records(self, offset: int, line: int, block: _Block) -> Iterable[Record]:
        """Parsed records of plain lines: split at the delimiter, no csv parsing."""
        group, texts = self._dialect.lines(block)
        names, convert, delimiter = self._names, self._convert, self.delimiter
        if convert is None and names is not None:
            return _plain_dicts(offset, line, group, texts, names=names, delimiter=delimiter)
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


def _plain_dicts(
    offset: int,
    line: int,
    group: list[bytes],
    texts: list[str],
    *,
    names: list[str],
    delimiter: str,
) -> Iterator[Record]:
    """Records of plain lines as dicts of ``names``, made in C: the lines' texts split at
    the delimiter (a plain line has exactly the header's fields, one ``\\n`` at its end and
    none inside), no Python frame per line. The records the per-line loop of
    :meth:`CsvSource._plain_records` makes; 200,000 lines of 5 fields read in 0.55 s of
    CPU instead of 0.66 s (same machine, same run): what is left is making the dicts
    and their strings, as ``csv.reader`` makes its lists."""
    repeat = itertools.repeat
    bodies = "".join(texts).split("\n")
    bodies.pop()  # what follows the last line's \n
    values = map(dict, map(zip, repeat(names), map(str.split, bodies, repeat(delimiter))))
    excerpts = map(operator.getitem, bodies, repeat(slice(None, _EXCERPT)))
    starts = itertools.accumulate(map(len, group), initial=offset)
    fields = zip(starts, itertools.count(line), values, repeat(None), excerpts, repeat("line"))
    return map(tuple.__new__, repeat(Record), fields)


class JsonlSource(_FileSource):
    """A JSON Lines file, one JSON value per line, streamed with line numbers.

    Args:
        path: the file.
        compression: as for :class:`CsvSource` (``"auto"``: from the suffix).
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
        compression: CompressionArg = "auto",
    ) -> None:
        self._init_file(path, "JsonlSource", compression)
        if blank_lines not in ("skip", "error"):
            raise ConfigError(f"blank_lines must be 'skip' or 'error', got {blank_lines!r}")
        self.encoding = encoding
        self.blank_lines = blank_lines
        self._convert = _converter(convert)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        offset, line = start or (0, 1)
        with self._open() as f:
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
        with self._open(buffering=1 << 16) as f:
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


FileFormat = Literal["csv", "jsonl", "parquet"]
_FORMATS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}


def file_format(path: str | Path, format: str | None = None) -> FileFormat:
    """The format of the file at ``path``: ``format`` when given (``csv``, ``jsonl``,
    ``parquet``), else the one its suffix names, a compression suffix (``.gz``,
    ``.gzip``, ``.zst``, ``.zstd``) looked through: ``a.csv.gz`` is CSV.

    Raises:
        ConfigError: an unknown ``format``, or a suffix that names none.
    """
    if format is not None:
        if format not in ("csv", "jsonl", "parquet"):
            raise ConfigError(f"format must be 'csv', 'jsonl' or 'parquet', got {format!r}")
        return format  # type: ignore[return-value]
    p = Path(path)
    suffixes = [suffix.lower() for suffix in p.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".gzip", ".zst", ".zstd"):
        suffixes.pop()
    found = _FORMATS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its suffix (.csv, .jsonl, "
            ".ndjson, .parquet, each maybe followed by .gz or .zst); name the format "
            "(format='csv', the CLI's --format csv) or use CsvSource, JsonlSource or "
            "ParquetSource explicitly"
        )
    return found


def as_source(source: Any, *, format: str | None = None) -> Source:
    """``source`` if it is a :class:`Source`; a file path (its format from
    :func:`file_format`: the suffix, or ``format``; gzip and zstd files decompressed as
    a stream); else an iterable."""
    if isinstance(source, Source):
        return source
    if isinstance(source, str | Path):
        kind = file_format(source, format)
        if kind == "csv":
            return CsvSource(source)
        if kind == "jsonl":
            return JsonlSource(source)
        from freight.jobs._parquet import ParquetSource  # noqa: PLC0415 (it imports this)

        return ParquetSource(source)
    if isinstance(source, Iterable) or callable(source):
        return IterableSource(source)
    raise ConfigError(f"source must be an iterable, a file path or a Source, got {source!r}")
