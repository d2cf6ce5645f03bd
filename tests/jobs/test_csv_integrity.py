"""CSV integrity: a bad-input corpus read in both modes of CsvSource (parsed, and ``raw``
for PostgreSQL COPY) gives the same records, good and bad, one per data line.

For every file of the corpus: the same positions, errors and blank lines in both modes;
each raw text, parsed back by ``csv.reader``, is the parsed mode's fields; each bad record
names its line and a readable reason; and a file without multi-line fields yields as
many records as it has data lines, at positions found independently (by counting bytes).
"""

from __future__ import annotations

import ast
import csv
import io
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import freight.jobs._csvread as csvread
from freight import ConfigError
from freight._csvrecord import read_big
from freight.jobs import CsvSource, IterableSource, JsonlSource, Record, is_blank
from tests.services import POSTGRES_URL, require

# -- helpers ------------------------------------------------------------------------------


def both(path: Path, **options: Any) -> tuple[list[Record], list[Record]]:
    """The records of ``path`` in the parsed mode and in the raw mode, checked for parity."""
    parsed = list(CsvSource(path, **options).read())
    raw = list(CsvSource(path, raw=True, **options).read())
    assert view(parsed) == view(raw)
    for p, r in zip(parsed, raw, strict=True):
        if p.error is None and not is_blank(p):
            assert isinstance(r.item, str)
            assert r.item.endswith("\n")
            assert "\r\n" not in r.item.rstrip("\n") or '"' in r.item  # one line ending
            fields = list(p.item.values()) if isinstance(p.item, dict) else p.item
            assert reparse(r.item, **options) == [fields]
    return parsed, raw


def reparse(text: str, delimiter: str = ",", quotechar: str = '"', **_: Any) -> list[list[str]]:
    """``text`` read by ``csv.reader`` (its field limit raised for a moment if need be)."""
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(max(limit, len(text)))
        lines = io.StringIO(text, newline="")
        return list(csv.reader(lines, delimiter=delimiter, quotechar=quotechar, strict=True))
    finally:
        csv.field_size_limit(limit)


def view(records: list[Record]) -> list[tuple[object, ...]]:
    return [(r.position, str(r.error) if r.error else None, is_blank(r)) for r in records]


def full(records: list[Record]) -> list[tuple[object, ...]]:
    """Records as comparable values (an error compares by its message)."""
    return [(r.position, r.item, str(r.error) if r.error else None, r.raw) for r in records]


def line_starts(body: bytes, header: bool = True) -> list[tuple[int, int]]:
    """The position of every data line of ``body``, found by counting bytes."""
    starts, offset = [], 0
    for number, line in enumerate(body.splitlines(keepends=True), 1):
        if not (header and number == 1):
            starts.append((offset, number))
        offset += len(line)
    return starts


def write(tmp_path: Path, body: bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def good(records: list[Record]) -> list[Any]:
    return [r.item for r in records if r.error is None and not is_blank(r)]


def errors(records: list[Record]) -> dict[str, str]:
    return {r.id: str(r.error) for r in records if r.error is not None}


# -- the corpus -----------------------------------------------------------------------------


def test_wrong_column_counts_are_bad_records_in_both_modes(tmp_path: Path) -> None:
    # a short line beside a long one: their delimiters add up to the right count
    body = b"id,name\n1,a\n2,b,extra\n3\n4,d\n"
    parsed, raw = both(write(tmp_path, body))
    assert [r.position for r in parsed] == line_starts(body)
    assert errors(parsed) == {
        "line 3": "expected 2 columns, got 3",
        "line 4": "expected 2 columns, got 1",
    }
    assert good(raw) == ["1,a\n", "4,d\n"]
    assert parsed[1].raw == "2,b,extra"  # the excerpt a dead letter shows


def test_invalid_utf8_is_a_bad_record_naming_its_line(tmp_path: Path) -> None:
    body = b'id,name\n1,ok\n2,\xff\xfe\n3,"q\xc3\x28"\n4,\xc3\xa9\n'
    parsed, raw = both(write(tmp_path, body))
    assert len(parsed) == 4
    assert errors(raw) == {
        "line 3": "invalid utf-8 bytes at line 3: invalid start byte",
        "line 4": "invalid utf-8 bytes at line 4: invalid continuation byte",
    }
    assert good(parsed) == [{"id": "1", "name": "ok"}, {"id": "4", "name": "é"}]


def test_a_10_mb_field_loads_in_both_modes(tmp_path: Path) -> None:
    huge = "x" * (10 * 1024 * 1024)
    tricky = 'a "quoted" part, a comma\nand a line ' + "y" * (300 * 1024)
    body = f'id,note\n1,"{huge}"\n2,{huge}\n3,"{tricky.replace(chr(34), 2 * chr(34))}"\n4,"b\n'
    path = write(tmp_path, body.encode())
    parsed, raw = both(path)
    assert [r.item for r in parsed[:3]] == [
        {"id": "1", "note": huge},
        {"id": "2", "note": huge},
        {"id": "3", "note": tricky},
    ]
    assert raw[0].item == f"1,{huge}\n"  # quotes only where needed
    assert errors(parsed) == {"line 6": "malformed CSV: unterminated quoted field"}
    assert csv.field_size_limit() == 131072  # the process-wide limit is left alone


def test_a_field_over_the_record_bound_is_a_bad_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvread, "_MAX_RECORD_BYTES", 1000)
    big = "z" * 1200
    body = f'id,note\n1,a\n2,"{big}"\n3,{big}\n4,"open\n5,e\n6,"{big}\n7,g\n'.encode()
    parsed, raw = both(write(tmp_path, body))
    assert [r.position for r in parsed] == line_starts(body)
    assert errors(parsed) == {
        "line 3": "a line longer than 1,000 bytes, the most a record holds",
        "line 4": "a line longer than 1,000 bytes, the most a record holds",
        "line 5": "malformed CSV: unterminated quoted field (none closed within 1,000 bytes)",
        "line 7": "a line longer than 1,000 bytes, the most a record holds",
    }
    assert good(raw) == ["1,a\n", "5,e\n", "7,g\n"]


def test_an_open_quote_is_given_up_at_the_record_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvread, "_MAX_RECORD_BYTES", 200)
    body = b'id,note\n1,"never closed\n' + b"".join(b"%d,x\n" % i for i in range(2, 80))
    parsed, _ = both(write(tmp_path, body))
    assert [r.position for r in parsed] == line_starts(body)
    assert errors(parsed) == {
        "line 2": "malformed CSV: unterminated quoted field (none closed within 200 bytes)"
    }


def test_a_truncated_last_line_has_one_outcome_in_both_modes(tmp_path: Path) -> None:
    parsed, raw = both(write(tmp_path, b"id,n\n1,a\n2,b"))
    assert good(raw) == ["1,a\n", "2,b\n"]
    assert good(parsed) == [{"id": "1", "n": "a"}, {"id": "2", "n": "b"}]
    parsed, raw = both(write(tmp_path, b'id,n\n1,a\n2,"b'))
    assert errors(raw) == {"line 3": "malformed CSV: unterminated quoted field"}
    parsed, raw = both(write(tmp_path, b"id,n\n1,a\n2"))
    assert errors(raw) == {"line 3": "expected 2 columns, got 1"}


def test_a_stray_quote_in_an_unquoted_field_is_a_literal_character(tmp_path: Path) -> None:
    """2 of 10 rows landed when COPY read the quote as the start of a quoted field."""
    rows = [f"{i},name{i}" for i in range(1, 11)]
    rows[1] = '2,car"ol'
    rows[6] = '7,say "hi" twice'
    body = ("id,name\n" + "\n".join(rows) + "\n").encode()
    parsed, raw = both(write(tmp_path, body))
    assert len(good(parsed)) == 10
    assert parsed[1].item == {"id": "2", "name": 'car"ol'}
    assert raw[1].item == '2,"car""ol"\n'  # what COPY reads as csv.reader does
    assert raw[6].item == '7,"say ""hi"" twice"\n'
    assert [r.position for r in raw] == line_starts(body)


def test_an_unterminated_quote_never_swallows_the_lines_after_it(tmp_path: Path) -> None:
    lines = [f"{i},row {i}" for i in range(1, 101)]
    lines[10] = '11,"opened and never closed'
    lines[40] = '41,"opened, closed" then text'
    lines[70] = '71,"a, "b'
    body = ("id,name\n" + "\n".join(lines) + "\n").encode()
    parsed, raw = both(write(tmp_path, body))
    assert len(parsed) == 100  # one record per data line
    assert [r.position for r in parsed] == line_starts(body)
    assert errors(parsed) == {
        "line 12": "malformed CSV: unterminated quoted field",
        "line 42": "malformed CSV: ',' expected after '\"'",
        "line 72": "malformed CSV: ',' expected after '\"'",
    }
    assert len(good(raw)) == 97
    assert parsed[11].raw == "12,row 12"
    assert parsed[11].error is None


def test_an_unterminated_quote_that_closes_lines_later_is_still_one_bad_line(
    tmp_path: Path,
) -> None:
    """Joined with the lines up to the next quote, the record has 2 columns, not 3:
    its first line is bad and reading goes on at the next line."""
    body = b'id,name,n\n1,"open,1\n2,b,2\n3,"c",3\n'
    parsed, _ = both(write(tmp_path, body))
    assert errors(parsed) == {"line 2": "malformed CSV: unterminated quoted field"}
    assert good(parsed) == [{"id": "2", "name": "b", "n": "2"}, {"id": "3", "name": "c", "n": "3"}]


def test_multi_line_quoted_fields_that_parse_cleanly_are_one_record(tmp_path: Path) -> None:
    body = b'id,note\n1,"two\nlines"\n2,"three\r\n\r\nlines, ""quoted"""\n3,plain\n'
    parsed, raw = both(write(tmp_path, body))
    assert [(r.id, r.item) for r in parsed] == [
        ("line 2", {"id": "1", "note": "two\nlines"}),
        ("line 4", {"id": "2", "note": 'three\r\n\r\nlines, "quoted"'}),
        ("line 7", {"id": "3", "note": "plain"}),
    ]
    assert raw[1].item == '2,"three\r\n\r\nlines, ""quoted"""\n'
    resumed = list(CsvSource(path := tmp_path / "data.csv", raw=True).read(raw[2].position))
    assert [r.item for r in resumed] == ["3,plain\n"]
    assert path.exists()


def test_a_bom_is_stripped_and_positions_stay_right(tmp_path: Path) -> None:
    body = b"\xef\xbb\xbfid,name\n1,a\n2,b\n"
    path = write(tmp_path, body)
    assert CsvSource(path).columns() == ["id", "name"]
    parsed, raw = both(path)
    assert [r.position for r in raw] == line_starts(body)
    assert next(iter(CsvSource(path).read(parsed[1].position))).item == {"id": "2", "name": "b"}
    no_header = write(tmp_path, b"\xef\xbb\xbf1,a\n2,b\n", "plain.csv")
    records = list(CsvSource(no_header, header=False).read())
    assert [(r.position, r.item) for r in records] == [((3, 1), ["1", "a"]), ((7, 2), ["2", "b"])]
    raw = list(CsvSource(no_header, header=["id", "name"], raw=True).read())
    assert [r.item for r in raw] == ["1,a\n", "2,b\n"]


def test_crlf_files_give_texts_with_one_line_ending(tmp_path: Path) -> None:
    body = b'id,name\r\n1,a\r\n2,"b\r\nc"\r\n3,car"ol\r\n4,d'
    parsed, raw = both(write(tmp_path, body))
    assert [r.item for r in raw] == ["1,a\n", '2,"b\r\nc"\n', '3,"car""ol"\n', "4,d\n"]
    assert [r.id for r in parsed] == ["line 2", "line 3", "line 5", "line 6"]
    mixed = b"id,name\r\n1,a\n2,b\r\n3,c\r\n"  # mixed endings: each line still its own
    parsed, raw = both(write(tmp_path, mixed, "mixed.csv"))
    assert "".join(good(raw)) == "1,a\n2,b\n3,c\n"
    bare = b"id,name\n1,a\rb\n2,c\n"  # a carriage return alone ends no line
    parsed, _ = both(write(tmp_path, bare, "bare.csv"))
    assert errors(parsed) == {"line 2": "malformed CSV: a carriage return inside an unquoted field"}


def test_the_plain_fast_path_handles_crlf_groups(tmp_path: Path) -> None:
    body = b"id,name\r\n" + b"".join(b"%d,n%d\r\n" % (i, i) for i in range(5000)) + b"5000,x"
    _, raw = both(write(tmp_path, body))
    assert len(raw) == 5001
    assert raw[0].item == "0,n0\n"
    assert raw[-1].item == "5000,x\n"
    assert [r.position for r in raw] == line_starts(body)


def test_a_few_bad_lines_leave_their_neighbours_on_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [f"{i},n{i}" for i in range(1000)]
    lines[100] = "100"  # a wrong column count
    lines[127] = '127,"two\nlines"'  # a record across the end of a piece of 64 lines
    lines[600] = "600,\x00"
    body = ("id,name\n" + "\n".join(lines) + "\n").encode()
    path = write(tmp_path, body)
    parses = 0
    parse = csvread._Reader.parse

    def counted(reader: csvread._Reader, start: tuple[int, int]) -> Any:
        nonlocal parses
        parses += 1
        return parse(reader, start)

    monkeypatch.setattr(csvread._Reader, "parse", counted)
    parsed, raw = both(path)
    assert parses <= 2 * 3 * 64 + 2  # the header; 3 pieces of 64 lines read one by one
    assert len(parsed) == 1000
    assert errors(raw) == {
        "line 102": "expected 2 columns, got 1",
        "line 603": "NUL byte in field 2 ('name'): databases' text cannot hold it",
    }
    assert raw[127].item == '127,"two\nlines"\n'
    assert raw[128].position == (raw[127].offset + len(b'127,"two\nlines"\n'), 131)
    starts = line_starts(body)
    assert [r.position for r in raw] == starts[:128] + starts[129:]


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = write(tmp_path, b"", "empty.csv")
    for raw in (False, True):
        with pytest.raises(ConfigError, match="is empty; it has no header line"):
            list(CsvSource(empty, raw=raw).read())
        assert list(CsvSource(empty, raw=raw, header=False).read()) == []
        for body in (b"id,name\n", b"id,name", b"\xef\xbb\xbfid,name\r\n"):
            only = write(tmp_path, body, "header.csv")
            assert list(CsvSource(only, raw=raw).read()) == []
            assert CsvSource(only, raw=raw).columns() == ["id", "name"]


def test_nul_bytes_are_bad_records_in_both_modes(tmp_path: Path) -> None:
    body = b'id,name\n1,a\x00b\n2,"q\x00"\n3,ok\n\x00,x\n'
    parsed, raw = both(write(tmp_path, body))
    assert errors(parsed) == {
        "line 2": "NUL byte in field 2 ('name'): databases' text cannot hold it",
        "line 3": "NUL byte in field 2 ('name'): databases' text cannot hold it",
        "line 5": "NUL byte in field 1 ('id'): databases' text cannot hold it",
    }
    assert good(raw) == ["3,ok\n"]
    lots = b"id,name\n" + b"".join(b"%d,n\n" % i for i in range(3000)) + b"7,\x00\n"
    _, raw = both(write(tmp_path, lots, "lots.csv"))  # through the fast path's check
    assert list(errors(raw)) == ["line 3002"]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"id,name,id\n", "duplicate column name 'id' in the header of data.csv"),
        (b"\xef\xbb\xbfid,name,id\n", "duplicate column name 'id' in the header of data.csv"),
        (
            b"id,,name\n",
            re.escape("empty column name in the header of data.csv, line 1 (column 2)"),
        ),
        (b'id," ",name\n', r"empty column name .*\(column 2\)"),
        (b"\n", "cannot read the header of data.csv, line 1: it is blank"),
        (b'id,"name\n', "cannot read the header of data.csv, line 1: malformed CSV"),
    ],
)
def test_the_header_refuses_duplicate_and_empty_names(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = write(tmp_path, header + b"1,2,3\n")
    for raw in (False, True):
        with pytest.raises(ConfigError, match=message):
            CsvSource(path, raw=raw).columns()
        with pytest.raises(ConfigError, match=message):
            list(CsvSource(path, raw=raw).read())


def test_given_names_are_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, b"1,2\n")
    with pytest.raises(
        ConfigError, match=r"duplicate column name 'a' in header= \(columns 1 and 2"
    ):
        CsvSource(path, header=["a", "a"])


def test_five_thousand_columns(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(5000)]
    rows = [[f"{r}.{i}" for i in range(5000)] for r in range(3)]
    rows[1][17] = 'he said "hi"'
    body = "\n".join(",".join(row) for row in [names, rows[0]]).encode() + b"\n"
    body += b'"' + b'","'.join(v.replace('"', '""').encode() for v in rows[1]) + b'"\n'
    body += ",".join(rows[2]).encode() + b"\n"
    parsed, raw = both(write(tmp_path, body))
    assert [list(r.item.values()) for r in parsed] == rows
    assert len(raw) == 3
    assert raw[0].item == ",".join(rows[0]) + "\n"


def test_blank_lines_are_skipped_or_errors_alike(tmp_path: Path) -> None:
    body = b"id,n\n1,a\n\n\r\n2,b\n"
    _, raw = both(write(tmp_path, body))
    assert [is_blank(r) for r in raw] == [False, True, True, False]
    _, raw = both(write(tmp_path, body), blank_lines="error")
    assert errors(raw) == {"line 3": "blank line", "line 4": "blank line"}


def test_a_lone_backslash_dot_is_quoted_for_copy(tmp_path: Path) -> None:
    """Alone on a line, ``\\.`` ends COPY's data: the rows after it were dropped."""
    _, raw = both(write(tmp_path, b'v\na\n\\.\n"\\."\nb\n'))
    assert [r.item for r in raw] == ["a\n", '"\\."\n', '"\\."\n', "b\n"]


def test_other_dialects_keep_their_quote_and_delimiter(tmp_path: Path) -> None:
    body = b"id;name\n1;car'ol\n2;'a;b'\n3;'x''y'\n"
    _, raw = both(write(tmp_path, body), delimiter=";", quotechar="'")
    assert [r.item for r in raw] == ["1;'car''ol'\n", "2;'a;b'\n", "3;'x''y'\n"]
    latin = write(tmp_path, b"id,name\n1,caf\xe9\n", "latin.csv")
    _, raw = both(latin, encoding="latin-1")
    assert raw[0].item == "1,café\n"


# -- reading many positions in one pass ---------------------------------------------------


def test_read_at_reads_the_records_at_positions_in_file_order(tmp_path: Path) -> None:
    body = b'id,name\n1,a\n2,"b\nb"\n3,\xff\n4,d\n5,e\n'
    path = write(tmp_path, body)
    for raw in (False, True):
        source = CsvSource(path, raw=raw)
        records = list(source.read())
        wanted = [records[3].position, records[0].position, records[2].position]
        got = list(source.read_at([*wanted, records[0].position]))  # a duplicate, once
        assert full(got) == full([records[0], records[2], records[3]])
        bogus = [(5, 1), (0, 1), (1, 2), (len(body) + 10, 99), (13, 3)]  # mid-line, header, …
        assert list(source.read_at(bogus)) == []  # (13, 3): inside the quoted field
        assert list(source.read_at([])) == []


def test_read_at_on_jsonl_and_iterables(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": 1}\n{"a": 2}\nnot json\n{"a": 4}', "t.jsonl")
    source = JsonlSource(path)
    records = list(source.read())
    got = list(source.read_at([records[3].position, records[2].position, (3, 1)]))
    assert full(got) == full([records[2], records[3]])
    items = IterableSource(lambda: iter("abcdef"))
    assert [r.item for r in items.read_at([(4, 4), (1, 1), (2, 3), (9, 9), (-1, -1)])] == [
        "b",
        "e",
    ]
    assert list(items.read_at([])) == []


def test_read_at_on_parquet_reads_only_the_groups_it_needs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from freight.jobs import ParquetSource

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": list(range(25))}), path, row_group_size=10)
    source = ParquetSource(path, batch_size=3, convert=lambda row: 100 // (row["id"] - 7))
    records = list(source.read())
    got = list(source.read_at([(23, 23), (3, 3), (7, 7), (4, 5), (25, 25), (-2, -2)]))
    assert full(got) == full([records[3], records[7], records[23]])
    assert got[1].error is not None  # a bad row stays bad
    assert list(source.read_at([])) == []


def test_read_at_replays_20000_records_fast(tmp_path: Path) -> None:
    """Item 14: replaying positions is one forward pass, not a block read per record."""
    lines = [f"{i},name {i},{i * 3}" for i in range(60_000)]
    path = write(tmp_path, ("id,name,n\n" + "\n".join(lines) + "\n").encode())
    source = CsvSource(path, raw=True)
    positions = [r.position for r in source.read()][::3]
    started = time.perf_counter()
    got = list(source.read_at(reversed(positions)))
    elapsed = time.perf_counter() - started
    assert [r.position for r in got] == positions
    assert elapsed < 2.0, f"{len(got)} records in {elapsed:.2f} s"  # ≈ 0.1 s when idle


# -- properties ------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=6)
_QUOTED = _TEXT.map(lambda s: '"' + s.replace('"', '""') + '"')  # anything, newlines too
_UNQUOTED = st.text(  # a stray quote may sit anywhere but first
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00,\r\n"), max_size=6
).filter(lambda s: not s.startswith('"'))
_ROWS = st.lists(st.lists(_QUOTED | _UNQUOTED, min_size=3, max_size=3), max_size=20)


@given(rows=_ROWS, crlf=st.booleans(), tail=st.booleans())
@settings(max_examples=150, deadline=None)
def test_well_formed_files_read_as_csv_reader_reads_them(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], crlf: bool, tail: bool
) -> None:
    ending = "\r\n" if crlf else "\n"
    text = ending.join(",".join(row) for row in [["a", "b", "c"], *rows])
    text += ending if tail or not rows else ""
    path = tmp_path_factory.mktemp("p") / "p.csv"
    path.write_bytes(text.encode())
    expected = list(csv.reader(io.StringIO(text, newline=""), strict=True))[1:]
    parsed, _ = both(path)
    assert [list(r.item.values()) for r in parsed if not is_blank(r)] == [
        row for row in expected if row
    ]
    body = text.encode()
    for record in parsed:  # every position is where its record's line starts
        assert body[: record.offset].count(b"\n") + 1 == record.ordinal
        assert record.offset == 0 or body[record.offset - 1 : record.offset] == b"\n"
    assert full(list(CsvSource(path).read_at(r.position for r in parsed))) == full(parsed)


_LINE = st.lists(
    _QUOTED | _UNQUOTED | st.sampled_from(['"open', 'x"', '"a"b', '"', '""', "\\.", "\r"]),
    min_size=1,
    max_size=4,
).map(",".join)


@given(lines=st.lists(_LINE, max_size=25), group=st.sampled_from([1, 7, 64, 1 << 20]))
@settings(max_examples=200, deadline=None)
def test_every_line_is_read_once_and_both_modes_agree(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], group: int
) -> None:
    """Random lines, stray and unterminated quotes among them: every physical line is in
    exactly one record, records come in file order, the two modes agree whatever the size
    of the groups the fast path reads, and a record over several lines has 3 columns."""
    text = "a,b,c\n" + "".join(line + "\n" for line in lines)
    path = tmp_path_factory.mktemp("q") / "q.csv"
    path.write_bytes(text.encode())
    saved = csvread._GROUP_BYTES
    csvread._GROUP_BYTES = group
    try:
        parsed, _ = both(path)
    finally:
        csvread._GROUP_BYTES = saved
    ordinals = [r.ordinal for r in parsed]
    assert ordinals == sorted(set(ordinals))
    spans = [*ordinals[1:], text.count("\n") + 1][: len(ordinals)]
    covered = [n for r, stop in zip(parsed, spans, strict=True) for n in range(r.ordinal, stop)]
    assert covered == list(range(2, text.count("\n") + 1))  # each line once
    for r, stop in zip(parsed, spans, strict=True):
        if stop - r.ordinal > 1:  # a multi-line record is taken only whole and clean
            assert r.error is None
            assert len(r.item) == 3


@given(
    record=st.lists(_QUOTED | _UNQUOTED, min_size=1, max_size=4).map(",".join),
    big=st.integers(0, 3),
)
@settings(max_examples=200, deadline=None)
def test_the_big_field_reader_reads_as_csv_reader(record: str, big: int) -> None:
    """The reader of records with a field over csv's limit follows csv.reader's rules."""
    text = record.replace("x", "x" * 50) * big + record + "\n"
    lines = io.StringIO(text, newline="").readlines()
    try:
        expected: list[str] | str = next(csv.reader(iter(lines), strict=True))
    except csv.Error:
        expected = "error"
    try:
        got: list[str] | str = read_big(iter(lines), ",", '"')
    except csv.Error:
        got = "error"
    assert got == expected


def test_the_csv_reader_sits_below_the_sources_and_makes_no_records() -> None:
    """``_csvread`` imports nothing of ``freight.jobs`` (no import cycle with
    ``_sources``, which imports it) and builds no Record: its callers make them."""
    tree = ast.parse(Path(csvread.__file__).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith("freight.jobs")}
    assert "Record" not in vars(csvread)
    assert ast.get_docstring(tree)


# -- PostgreSQL reads the raw texts as csv.reader does ---------------------------------------


@pytest.fixture
def pg_table() -> Iterator[tuple[Any, str]]:
    require("127.0.0.1", 5432, "PostgreSQL")
    import psycopg

    table = f"csv_integrity_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n integer, a text, b text)")
        try:
            yield conn, table
        finally:
            conn.execute(f"DROP TABLE {table}")


@pytest.mark.service
def test_postgres_copy_reads_the_raw_texts_as_the_parser_does(
    tmp_path: Path, pg_table: tuple[Any, str]
) -> None:
    conn, table = pg_table
    body = (
        b"n,a,b\r\n"
        b'1,car"ol,x\r\n'  # a stray quote
        b'2,"say ""hi""",y\r\n'
        b'3,"two\r\nlines","a\rb"\r\n'  # line breaks inside quotes
        b'4,"",\r\n'  # empty quoted and unquoted: NULL both, as the parsed mode's ""
        b"5,\\.,\\\r\n"  # backslashes are text in CSV
        b'6,"a,b",q"\r\n'
        b"7,plain,last"
    )
    path = write(tmp_path, body)
    parsed, raw = both(path)
    with conn.cursor() as cur, cur.copy(f"COPY {table} (n, a, b) FROM STDIN (FORMAT csv)") as copy:
        copy.write("".join(good(raw)))
    landed = conn.execute(f"SELECT n, a, b FROM {table} ORDER BY n").fetchall()
    assert landed == [(int(r["n"]), r["a"] or None, r["b"] or None) for r in good(parsed)]
    assert len(landed) == 7
    assert landed[0] == (1, 'car"ol', "x")
