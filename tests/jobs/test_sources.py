"""Streaming sources: positions, resumable reads, and bad records that never crash a read."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import ConfigError
from freight.jobs import (
    CsvSource,
    IterableSource,
    JsonlSource,
    Record,
    RecordError,
    Source,
    as_source,
    is_blank,
)


@dataclass
class Txn:
    id: int
    amount: float


def to_txn(row: dict[str, str]) -> Txn:
    return Txn(int(row["id"]), float(row["amount"]))


def good(records: list[Record]) -> list[object]:
    return [r.item for r in records if r.error is None and not is_blank(r)]


def test_iterable_source_positions_and_resume() -> None:
    source = IterableSource(["a", "b", "c", "d"])
    records = list(source.read())
    assert [(r.position, r.id, r.item) for r in records][:2] == [
        ((0, 0), "item 0", "a"),
        ((1, 1), "item 1", "b"),
    ]
    assert [r.item for r in source.read(records[2].position)] == ["c", "d"]
    assert source.size().items == 4
    assert source.fingerprint() == IterableSource(["a", "x", "y", "d"]).fingerprint()
    assert source.fingerprint() != IterableSource(["a", "b", "c"]).fingerprint()


def test_generator_factory_can_be_reread() -> None:
    source = IterableSource(lambda: (i * i for i in range(5)))
    assert [r.item for r in source.read((3, 3))] == [9, 16]
    assert source.size().items is None


def test_csv_records_keep_line_numbers_and_seek_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('id,amount\n1,2.5\n2,"3\n.5"\n3,4.0\n')
    source = CsvSource(path, convert=to_txn)
    records = list(source.read())
    assert [r.id for r in records] == ["line 2", "line 3", "line 5"]
    assert records[0].item == Txn(1, 2.5)
    assert isinstance(records[1].error, RecordError)  # "3\n.5" is not a number
    resumed = list(source.read(records[2].position))
    assert [(r.id, r.item) for r in resumed] == [("line 5", Txn(3, 4.0))]
    assert source.columns() == ["id", "amount"]
    assert source.size().bytes == path.stat().st_size


def test_malformed_csv_corpus_yields_every_bad_record_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    huge = "x" * (10 * 1024 * 1024)
    with path.open("wb") as f:
        f.write(b"id,amount\n")
        f.write(b"1,10\n")  # line 2 ok
        f.write(b"2,10,extra\n")  # line 3 wrong column count
        f.write(b"3,ten\n")  # line 4 unparsable number
        f.write(b"4,\xff\xfe\n")  # line 5 invalid UTF-8
        f.write(b"\n")  # line 6 blank
        f.write(f'5,"{huge}"\n'.encode())  # line 7 a 10 MB field: read, not a number
        f.write(b"6,20\n")  # line 8 ok
        f.write(b'7,"30')  # line 9 truncated (unterminated quote)
    records = list(CsvSource(path, convert=to_txn).read())
    by_line = {r.id: r for r in records}
    assert good(records) == [Txn(1, 10.0), Txn(6, 20.0)]
    assert "expected 2 columns, got 3" in str(by_line["line 3"].error)
    assert "ValueError" in str(by_line["line 4"].error)
    assert "invalid utf-8 bytes at line 5" in str(by_line["line 5"].error)
    assert is_blank(by_line["line 6"])
    assert "could not convert string to float: 'xxx" in str(by_line["line 7"].error)
    assert "malformed CSV" in str(by_line["line 9"].error)
    assert csv.field_size_limit() == 131072  # the process-wide limit is left alone


def test_csv_without_header_and_other_dialects(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("1;'a;b'\n2;c\n")
    records = list(CsvSource(path, delimiter=";", quotechar="'", header=False).read())
    assert [r.item for r in records] == [["1", "a;b"], ["2", "c"]]
    named = list(CsvSource(path, delimiter=";", quotechar="'", header=["n", "s"]).read())
    assert named[1].item == {"n": "2", "s": "c"}


def test_blank_lines_can_be_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n\n')
    records = list(JsonlSource(path, blank_lines="error").read())
    assert str(records[1].error) == "blank line"


def test_jsonl_source(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(
        b'{"id": 1, "amount": 2}\n{"id": 2,\n\n\xff\n'
        b'{"id": 3, "amount": "x"}\n{"id": 4, "amount": 1}'
    )
    source = JsonlSource(path, convert=lambda d: Txn(d["id"], float(d["amount"])))
    records = list(source.read())
    assert [r.id for r in records] == [f"line {n}" for n in range(1, 7)]
    assert good(records) == [Txn(1, 2.0), Txn(4, 1.0)]
    assert "invalid JSON" in str(records[1].error)
    assert is_blank(records[2])
    assert "invalid utf-8" in str(records[3].error)
    assert "ValueError" in str(records[4].error)
    assert [r.item for r in source.read(records[5].position)] == [Txn(4, 1.0)]


def test_pydantic_models_convert_records(tmp_path: Path) -> None:
    import pydantic

    class Row(pydantic.BaseModel):
        id: int
        amount: float

    path = tmp_path / "p.csv"
    path.write_text("id,amount\n1,2\nx,3\n")
    records = list(CsvSource(path, convert=Row).read())
    assert records[0].item == Row(id=1, amount=2.0)
    assert "ValidationError" in str(records[1].error)


def test_fingerprint_changes_with_the_content(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("a\n1\n")
    before = CsvSource(path).fingerprint()
    path.write_text("a\n2\n")
    assert CsvSource(path).fingerprint() != before


def test_bad_configuration_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        CsvSource(tmp_path / "missing.csv")
    path = tmp_path / "x.csv"
    path.write_text("")
    with pytest.raises(ConfigError, match="one character"):
        CsvSource(path, delimiter="::")
    with pytest.raises(ConfigError, match="encoding"):
        CsvSource(path, encoding="klingon")
    with pytest.raises(ConfigError, match="no header line"):
        list(CsvSource(path).read())
    with pytest.raises(ConfigError, match="convert"):
        CsvSource(path, convert=42)
    with pytest.raises(ConfigError, match="suffix"):
        as_source(tmp_path / "x.xlsx")


def test_as_source_picks_by_type(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "a.jsonl").write_text("1\n")
    assert isinstance(as_source(tmp_path / "a.csv"), CsvSource)
    assert isinstance(as_source(str(tmp_path / "a.jsonl")), JsonlSource)
    assert isinstance(as_source([1, 2]), IterableSource)
    src = IterableSource([1])
    assert as_source(src) is src
    assert isinstance(src, Source)
    with pytest.raises(ConfigError, match="source must be"):
        as_source(42)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.text(
                st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8
            ),
            min_size=2,
            max_size=2,
        ),
        max_size=30,
    ),
    cut=st.integers(0, 29),
)
def test_resuming_at_any_record_yields_the_same_tail(
    tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], cut: int
) -> None:
    path = tmp_path_factory.mktemp("csv") / "p.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b"])
        writer.writerows(rows)
    source = CsvSource(path)
    records = list(source.read())
    assert [r.item for r in records] == [{"a": a, "b": b} for a, b in rows]
    if records:
        k = min(cut, len(records) - 1)
        assert list(source.read(records[k].position)) == records[k:]


def write_parquet(path: Path, rows: int, group: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]})
    pq.write_table(table, path, row_group_size=group)


def test_parquet_source_streams_and_seeks_by_row_group(tmp_path: Path) -> None:
    from freight.jobs import ParquetSource

    path = tmp_path / "t.parquet"
    write_parquet(path, rows=25, group=10)
    source = ParquetSource(path, batch_size=4)
    records = list(source.read())
    assert [r.item for r in records] == [{"id": i, "name": f"n{i}"} for i in range(25)]
    assert records[7].id == "row 7"
    assert source.size().items == 25
    assert [r.item["id"] for r in source.read(records[13].position)] == list(range(13, 25))
    assert list(source.read((25, 25))) == []
    only = ParquetSource(path, columns=["id"], convert=lambda row: row["id"] * 2)
    assert [r.item for r in only.read((22, 22))] == [44, 46, 48]
    assert isinstance(as_source(path), ParquetSource)


def test_parquet_source_errors(tmp_path: Path) -> None:
    from freight.jobs import ParquetSource

    path = tmp_path / "t.parquet"
    write_parquet(path, rows=3, group=2)
    with pytest.raises(ConfigError, match=r"no column\(s\) \['nope'\]"):
        ParquetSource(path, columns=["nope"])
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a Parquet file"):
        ParquetSource(tmp_path / "fake.parquet")
    bad = list(ParquetSource(path, convert=lambda row: 1 / (row["id"] - 1)).read())
    assert isinstance(bad[1].error, RecordError)
    assert "ZeroDivisionError" in str(bad[1].error)


def test_raw_csv_records_are_their_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(b'id,note\n1,"two\nlines"\n2,x,extra\n\n3,last')
    source = CsvSource(path, raw=True)
    records = list(source.read())
    assert [(r.id, r.item) for r in records if r.error is None and not is_blank(r)] == [
        ("line 2", '1,"two\nlines"\n'),
        ("line 6", "3,last\n"),
    ]
    assert "expected 2 columns" in str(records[1].error)
    assert [r.item for r in source.read(records[3].position)] == ["3,last\n"]
    with pytest.raises(ConfigError, match="raw=True"):
        CsvSource(path, raw=True, convert=int)


def test_raw_mode_reports_every_malformed_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with path.open("wb") as f:
        f.write(b"id,amount\n1,10\n2,10,extra\n4,\xff\xfe\n\n")
        f.write(b'5,"' + b"x" * (200 * 1024) + b'"\n6,"a ""quoted"" one"\n7,"30')
    records = list(CsvSource(path, raw=True, blank_lines="error").read())
    by_line = {r.id: r for r in records}
    assert by_line["line 2"].item == "1,10\n"
    assert "expected 2 columns, got 3" in str(by_line["line 3"].error)
    assert "invalid utf-8 bytes at line 4" in str(by_line["line 4"].error)
    assert str(by_line["line 5"].error) == "blank line"
    assert by_line["line 6"].item == "5," + "x" * (200 * 1024) + "\n"  # a large field is read
    assert by_line["line 7"].item == '6,"a ""quoted"" one"\n'
    assert "malformed CSV" in str(by_line["line 8"].error)


_LINES = st.sampled_from(
    [b"1,a\n", b"22,bb\n", b'3,"q ""x"""\n', b'4,"two\nlines"\n', b"5\n", b"6,a,b\n", b"\n",
     b"  \n", b"7,\xff\n", b"8,\xc3\xa9\n", b'9,"open\n']
)  # fmt: skip


@given(lines=st.lists(_LINES, max_size=40), group=st.integers(1, 64), tail=st.booleans())
@settings(max_examples=200, deadline=None)
def test_raw_groups_read_what_the_parsed_mode_reads(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], group: int, tail: bool
) -> None:
    """Lines read in groups (the fast path) give the records, positions and errors that
    the parsed mode gives, wherever the groups are cut (across quoted fields too), and
    each raw text parses back to the parsed mode's fields."""
    import freight.jobs._csvread as csvread

    body = b"id,v\n" + b"".join(lines)
    if tail and body.endswith(b"\n"):
        body = body[:-1]  # the last line without its newline
    path = tmp_path_factory.mktemp("g") / "g.csv"
    path.write_bytes(body)
    source = CsvSource(path, raw=True)
    parsed = list(CsvSource(path).read())
    saved = csvread._GROUP_BYTES
    csvread._GROUP_BYTES = group
    try:
        got = list(source.read())
    finally:
        csvread._GROUP_BYTES = saved

    def view(records: list[Record]) -> list[tuple[object, ...]]:
        return [(r.position, str(r.error) if r.error else None, is_blank(r)) for r in records]

    assert view(got) == view(parsed)
    for raw, record in zip(got, parsed, strict=True):
        if record.error is None and not is_blank(record):
            assert list(csv.reader([raw.item])) == [list(record.item.values())]
    for r in got:  # a resumed read at any record starts at that record
        assert next(iter(source.read(r.position))).position == r.position
