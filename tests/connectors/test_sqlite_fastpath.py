"""A typed SQLite load binds whole columns at once when their text is plain, and stores
exactly what the per-item path (convert, then bind each value) stores, refusing the same
rows for the same reasons.

The whole-column path (:func:`freight.connectors._sqltypes.bind_column`) is what makes
``freight load`` into SQLite close to a hand-written ``executemany`` loop; these tests
pin that it is taken for a plain CSV chunk and that it never changes what lands.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from freight import Job
from freight.connectors._sqlitecsv import CsvTexts
from freight.connectors._sqltypes import bind_column
from freight.connectors.sqlite import SqliteSink
from freight.jobs import CsvSource
from freight.store import SqliteStore

TYPES = {
    "id": "bigint",
    "amount": "numeric",
    "seen": "timestamptz",
    "active": "boolean",
    "name": "text",
}


def _stored(path: Path) -> list[tuple[Any, ...]]:
    """Every row of table ``t``, each value with its SQLite storage class."""
    with closing(sqlite3.connect(path)) as db:
        select = ", ".join(f'typeof("{c}"), "{c}"' for c in TYPES)
        return db.execute(f"SELECT {select} FROM t ORDER BY rowid").fetchall()


def _outcomes(outcomes: list[Any] | None) -> list[tuple[str, str] | None] | None:
    if outcomes is None:
        return None
    return [None if o is None else (type(o).__name__, str(o)) for o in outcomes]


def _write_both(folder: Path, items: Sequence[Mapping[str, Any]], key: str | None = None) -> None:
    """Write ``items`` through the sink as it is, and item by item (the whole-column path
    switched off); both must refuse the same rows and store the same values."""
    fast = SqliteSink(folder / "fast.db", "t", types=TYPES, key=key)
    slow = SqliteSink(folder / "slow.db", "t", types=TYPES, key=key)
    slow._fast = None  # the per-item path only: the reference
    try:
        assert _outcomes(fast.write(list(items))) == _outcomes(slow.write(list(items)))
    finally:
        fast.close()
        slow.close()
    assert _stored(folder / "fast.db") == _stored(folder / "slow.db")


_OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=_OFFSETS
)
INTEGERS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["0", "-0", "007", "+5", " 5", "1_000", "٣", "-", "1-2", "", "9" * 19]),
    st.text(alphabet="0123456789-+ ", max_size=20),
)
NUMBERS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=2, max_value=10**9).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(10**16), 10**16).map(str),
    st.sampled_from(
        [
            "5.00",
            "-0.0",
            "-0",
            "0.1",
            "123456789.123456",
            "1.",
            ".5",
            "-.5",
            "nan",
            "1e3",
            "1.2.3",
            "",
            "99999999999999.9",
            "999999999999999",
            "0000000000001.5",
            "12345678901234567.89",
        ]
    ),
    st.text(alphabet="0123456789.-+eE ", max_size=18),
)
TIMESTAMPS = st.one_of(
    _DATETIMES.map(datetime.isoformat),
    _DATETIMES.map(lambda d: d.isoformat(sep=" ")),
    _DATETIMES.map(lambda d: d.replace(microsecond=0).isoformat()),
    st.sampled_from(
        [
            "2026-02-30T10:00:00+00:00",
            "2026-01-01T10:00:00-00:00",
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:00:00.000000+00:00",
            "2026-01-01T25:00:00+00:00",
            "2026-01-01T10:00:00",
            "2026-13-01T10:00:00+00:00",
            "2026-01-01T10:00:00+24:00",
            "",
            "2026-01-01",
        ]
    ),
)
BOOLEANS = st.sampled_from(["t", "true", "f", "false", "yes", "no", "on", "off", "1", "0", "y",
                            "n", "TRUE", " t", "maybe", "", "tr", "of"])  # fmt: skip
# (A lone surrogate cannot be encoded for SQLite on either path: not a row's reason yet.)
TEXTS = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_PLAIN_TEXT = st.characters(exclude_characters="\x00\n", exclude_categories=["Cs"])


def _rows(value: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[dict[str, str]]]:
    return st.lists(st.fixed_dictionaries(value), min_size=1, max_size=12)


ROWS = _rows({"id": INTEGERS, "amount": NUMBERS, "seen": TIMESTAMPS, "active": BOOLEANS,
              "name": TEXTS})  # fmt: skip
# Columns drawn from their plain forms only: the whole-column path is taken, and must
# still store what the per-item path stores.
PLAIN_ROWS = _rows({
    "id": st.integers(-(10**17) + 1, 10**18 - 1).map(str),
    "amount": st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**8),
                    max_value=10**8).map(str),
        st.integers(-(10**14) + 1, 10**15 - 1).map(str),  # at most 15 characters
    ),
    "seen": _DATETIMES.map(datetime.isoformat),
    "active": st.sampled_from(["t", "true", "f", "false", "yes", "no", "on", "off", "1", "0"]),
    "name": st.text(_PLAIN_TEXT, min_size=1, max_size=12),
})  # fmt: skip


@given(rows=ROWS)
@settings(max_examples=150, deadline=None)
def test_any_chunk_lands_as_the_per_item_path_lands_it(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]]
) -> None:
    _write_both(tmp_path_factory.mktemp("any"), rows)


@given(rows=PLAIN_ROWS)
@settings(max_examples=150, deadline=None)
def test_plain_columns_are_bound_whole_and_store_what_the_per_item_path_stores(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]]
) -> None:
    for column, kind in TYPES.items():  # every column of the chunk is bound whole
        assert bind_column(kind, [row[column] for row in rows]) is not None, column
    _write_both(tmp_path_factory.mktemp("plain"), rows)


@given(rows=PLAIN_ROWS)
@settings(max_examples=50, deadline=None)
def test_an_upsert_of_plain_columns_keeps_each_keys_last_row_as_the_per_item_path(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]]
) -> None:
    keyed = [{**row, "id": str(i % 3)} for i, row in enumerate(rows)]
    _write_both(tmp_path_factory.mktemp("upsert"), keyed, key="id")


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("bigint", ["1", "007"]),  # a leading zero: converted by the per-item path
        ("bigint", ["1", "+2"]),
        ("bigint", ["1", "--2"]),
        ("bigint", ["1", "0-2"]),
        ("bigint", ["1", "-"]),
        ("bigint", ["-", "1"]),
        ("bigint", ["1", "-0"]),
        ("bigint", ["1", "9223372036854775808"]),  # past 64 bits: refused there, with why
        ("numeric", ["1.5", "1e3"]),
        ("numeric", ["1.5", "12345678901234567.89"]),  # more digits than a REAL keeps
        ("timestamptz", ["2026-01-01T10:00:00+00:00", "2026-02-30T10:00:00+00:00"]),
        ("timestamptz", ["2026-01-01T10:00:00-00:00"]),  # stored as +00:00
        ("boolean", ["true", "TRUE"]),
        ("text", ["a", "b\x00"]),  # NUL: refused there
        ("text", ["a", ""]),  # empty: NULL
        ("bigint", ["1", 2]),  # not text
    ],
)
def test_a_column_not_all_plain_takes_the_per_item_path(kind: str, values: list[Any]) -> None:
    assert bind_column(kind, values) is None


def test_plain_columns_are_bound_as_sqlite_stores_them() -> None:
    assert bind_column("bigint", ["1", "-20", "0"]) == ["1", "-20", "0"]  # BIGINT affinity
    assert bind_column("numeric", ["1.25", "3", "-0.5"]) == [1.25, 3.0, -0.5]
    assert bind_column("boolean", ["true", "no", "1"]) == [1, 0, 1]
    stamps = ["2026-01-10T10:00:00+00:00", "2026-01-10T10:00:00.250000-05:30"]
    assert bind_column("timestamptz", stamps) == stamps


def test_a_csv_load_with_a_bad_row_dead_letters_it_and_lands_the_rest(tmp_path: Path) -> None:
    """A chunk whose values are all plain but that the table refuses one row of (a
    duplicate key) falls back to the per-item path: that row alone is dead-lettered."""
    data = tmp_path / "rows.csv"
    lines = [f"{i},{i}.5,2026-01-0{i % 9 + 1}T10:00:00+00:00,true,n{i}" for i in range(50)]
    lines.insert(20, "3,9.5,2026-01-01T10:00:00+00:00,false,again")
    data.write_text("id,amount,seen,active,name\n" + "\n".join(lines) + "\n")
    sink = SqliteSink(tmp_path / "t.db", "t", types=TYPES)
    with closing(sqlite3.connect(tmp_path / "t.db")) as db:
        db.execute('CREATE UNIQUE INDEX one_id ON t ("id")')
    store = SqliteStore(tmp_path / "s.db")
    report = Job("fast-dead", CsvSource(data), sink, chunk_size=25, store=store).run()
    sink.close()
    assert report.summary["succeeded"] == 50
    assert report.summary["failed"] == 1
    (letter,) = store.dead_letters(report.job_id)
    store.close()
    assert letter.record_id == "line 22"
    assert "UNIQUE" in letter.message
    stored = _stored(tmp_path / "t.db")
    assert len(stored) == 50
    assert stored[0] == ("integer", 0, "real", 0.5, "text", "2026-01-01T10:00:00+00:00",
                         "integer", 1, "text", "n0")  # fmt: skip


# -- format="csv": CSV record texts (``CsvSource(raw=True)``), as ``freight load`` writes ---


def _csv_text(row: Mapping[str, str]) -> str:
    """``row`` as ``CsvSource(raw=True)`` hands a record over: one line ending in ``\\n``,
    a field holding a quote, a comma, ``\\r`` or ``\\n`` quoted (its quotes doubled)."""
    fields = [row[c] for c in TYPES]
    if fields == [""]:
        return '""\n'
    quoted = [
        '"' + f.replace('"', '""') + '"' if any(ch in f for ch in '\n\r,"') else f for f in fields
    ]
    return ",".join(quoted) + "\n"


def _texts(sink: SqliteSink) -> CsvTexts:
    """How ``sink`` (``format="csv"``) reads its texts."""
    assert sink._csv is not None
    return sink._csv


def _write_texts(folder: Path, rows: Sequence[Mapping[str, str]], key: str | None = None) -> None:
    """Write ``rows`` as CSV texts (``format="csv"``) and as mappings item by item (the
    reference): the same rows refused for the same reasons, the same values stored."""
    texts = SqliteSink(folder / "fast.db", "t", types=TYPES, key=key, format="csv",
                       columns=list(TYPES))  # fmt: skip
    slow = SqliteSink(folder / "slow.db", "t", types=TYPES, key=key)
    slow._fast = None
    try:
        got = texts.write([_csv_text(row) for row in rows])
        assert _outcomes(got) == _outcomes(slow.write([dict(row) for row in rows]))
    finally:
        texts.close()
        slow.close()
    assert _stored(folder / "fast.db") == _stored(folder / "slow.db")


@given(rows=ROWS)
@settings(max_examples=150, deadline=None)
def test_any_chunk_of_csv_texts_lands_as_its_mappings_land(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]]
) -> None:
    _write_texts(tmp_path_factory.mktemp("csv-any"), rows)


@given(rows=PLAIN_ROWS, key=st.sampled_from([None, "id"]))
@settings(max_examples=100, deadline=None)
def test_plain_csv_texts_are_split_in_columns_and_land_as_their_mappings_land(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]], key: str | None
) -> None:
    sink = SqliteSink(tmp_path_factory.mktemp("probe") / "p.db", "t", types=TYPES,
                      format="csv", columns=list(TYPES))  # fmt: skip
    texts = [_csv_text(row) for row in rows]
    if not any('"' in t or "\r" in t for t in texts):
        assert _texts(sink).rows(texts) is not None  # the whole-column path is taken
    sink.close()
    keyed = rows if key is None else [{**row, "id": str(i % 3)} for i, row in enumerate(rows)]
    _write_texts(tmp_path_factory.mktemp("csv-plain"), keyed, key=key)


@given(rows=ROWS, key=st.sampled_from([None, "id"]))
@settings(max_examples=150, deadline=None)
def test_lines_given_as_one_text_land_as_their_texts_land_or_not_at_all(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, str]], key: str | None
) -> None:
    """The job engine's fast path (a chunk of plain lines as one text): all of it, as
    the texts one by one would land, or none of it (the texts then go one by one)."""
    texts = [_csv_text(row) for row in rows]
    assume(texts and not any('"' in t for t in texts))  # the reader's plain lines only
    folder = tmp_path_factory.mktemp("lines")
    lines = SqliteSink(folder / "lines.db", "t", types=TYPES, key=key, format="csv",
                       columns=list(TYPES))  # fmt: skip
    reference = SqliteSink(folder / "ref.db", "t", types=TYPES, key=key, format="csv",
                           columns=list(TYPES))  # fmt: skip
    try:
        took = lines._write_lines("".join(texts).encode(), None)
        if took:
            assert reference.write(texts) is None
    finally:
        lines.close()
        reference.close()
    assert _stored(folder / "lines.db") == (_stored(folder / "ref.db") if took else [])


def test_clean_lines_given_as_one_text_are_taken_and_a_refused_row_takes_none(
    tmp_path: Path,
) -> None:
    sink = SqliteSink(tmp_path / "t.db", "t", types=TYPES, key=None, format="csv",
                      columns=list(TYPES))  # fmt: skip
    good = "1,2.5,2026-01-01T10:00:00+00:00,t,a\n2,3,2026-01-02T10:00:00+00:00,f,b\n"
    try:
        assert sink._write_lines(good.encode(), None)
        assert not sink._write_lines(b"3,x,,t,c\n", None)  # not a number: per line
        assert not sink._write_lines(b"4,1,,t,c\n5,1\n", None)  # a short line
    finally:
        sink.close()
    assert [row[1] for row in _stored(tmp_path / "t.db")] == [1, 2]


def test_a_text_that_is_not_one_record_of_the_columns_fails_alone(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "t.db", "t", types=TYPES, format="csv", columns=list(TYPES))
    good = "1,2.5,2026-01-01T10:00:00+00:00,t,a\n"
    outcomes = sink.write([good, "1,2\n", '"unclosed\n', 7, good])
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, False, False, True]
    assert "SqliteSink needs mappings" in str(outcomes[1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "json"}, "format must be 'rows' or 'csv'"),
        ({"format": "csv"}, "needs types= and columns="),
        ({"format": "csv", "types": TYPES}, "needs types= and columns="),
        ({"format": "csv", "types": TYPES, "columns": ["id", "nope"]}, "'nope'"),
        ({"delimiter": ";;"}, "two different characters"),
        ({"delimiter": '"'}, "two different characters"),
    ],
)
def test_a_csv_sink_declared_wrong_is_refused_by_name(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    from freight import ConfigError

    with pytest.raises(ConfigError, match=message):
        SqliteSink(tmp_path / "t.db", "t", **kwargs)


def test_texts_of_other_field_counts_never_line_up_as_rows(tmp_path: Path) -> None:
    """Three fields then one make two rows of two only by accident: each text is one
    record of the columns, or it fails alone."""
    sink = SqliteSink(tmp_path / "t.db", "t", types={"a": "text", "b": "text"}, format="csv",
                      columns=["a", "b"])  # fmt: skip
    outcomes = sink.write(["x,y,z\n", "w\n", "a,b\nc", "d,e\n"])
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [False, False, False, True]
    with closing(sqlite3.connect(tmp_path / "t.db")) as db:
        assert db.execute("SELECT a, b FROM t").fetchall() == [("d", "e")]


def test_a_field_past_the_csv_modules_limit_is_read_as_the_source_reads_it(
    tmp_path: Path,
) -> None:
    """A chunk off the whole-column path (a quoted field) with a 200,000-character field
    in another row: that row is read as ``CsvSource`` reads it, not refused."""
    sink = SqliteSink(tmp_path / "t.db", "t", types={"id": "bigint", "name": "text"},
                      format="csv", columns=["id", "name"])  # fmt: skip
    big = "x" * 200_000
    assert sink.write([f"1,{big}\n", '2,"a,b"\n', f'3,"{big}"\n']) is None
    sink.close()
    with closing(sqlite3.connect(tmp_path / "t.db")) as db:
        rows = db.execute("SELECT id, length(name) FROM t ORDER BY id").fetchall()
    assert rows == [(1, 200_000), (2, 3), (3, 200_000)]


def test_a_refused_line_is_dead_lettered_with_its_text(tmp_path: Path) -> None:
    """A load of CSV texts (what ``freight load`` does into SQLite): the dead letter shows
    the line as it is in the file, as a load of mappings showed it."""
    data = tmp_path / "data.csv"
    data.write_text('id,name\n1,a\n2,"b,c"\nabc,d\n')
    store = SqliteStore(tmp_path / "store.db")
    sink = SqliteSink(tmp_path / "t.db", "t", types={"id": "bigint", "name": "text"},
                      format="csv", columns=["id", "name"])  # fmt: skip
    report = Job("load", CsvSource(data, raw=True), sink, store=store).run()
    assert report.summary["failed"] == 1
    [letter] = store.dead_letters(report.job_id)
    assert letter.payload == "abc,d"


def test_lines_known_to_be_checked_take_the_whole_column_path_unchecked(tmp_path: Path) -> None:
    """``lines_checked=True`` (what ``freight load`` passes: its source counted each
    line's fields) skips the per-text check; the rows still land as their mappings."""
    rows = [{"id": str(i), "amount": "1.5", "seen": "2026-01-01T10:00:00+00:00",
             "active": "t", "name": f"n{i}"} for i in range(5)]  # fmt: skip
    sink = SqliteSink(tmp_path / "t.db", "t", types=TYPES, format="csv",
                      columns=list(TYPES), lines_checked=True)  # fmt: skip
    texts = [_csv_text(row) for row in rows]
    assert _texts(sink).rows(texts) is not None
    assert _texts(sink).rows([*texts[:-1], texts[-1].rstrip("\n")]) is None  # the count
    assert sink.write(texts) is None
    sink.close()
    assert [r[1] for r in _stored(tmp_path / "t.db")] == [0, 1, 2, 3, 4]
