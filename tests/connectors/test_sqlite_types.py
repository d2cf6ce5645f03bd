"""Typed SQLite tables: the PostgreSQL types freight infers, stored without silent change.

A value SQLite would alter on the way in (NaN becomes NULL, NUMERIC rounds past 15
digits, a NUL byte in text) is refused: that row is dead-lettered with the reason, the
others land.
"""

from __future__ import annotations

import math
import pickle
import sqlite3
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import ConfigError, Job, PermanentError, Retry, TargetError
from freight.connectors import pgtypes
from freight.connectors._sqltypes import bind
from freight.connectors.sqlite import (
    SQLITE_MAX_COLUMN,
    AsyncSqliteSink,
    SqliteSink,
    create_table,
    quote_identifier,
    table_types,
)
from freight.store import SqliteStore

CSV_ROWS: list[Mapping[str, Any]] = [
    {"id": "1", "amount": "12.50", "active": "true", "seen": "2024-05-01T10:00:00+02:00",
     "name": "ann"},
    {"id": "2", "amount": "0.1", "active": "no", "seen": "2024-05-02 08:30:00+00:00",
     "name": "bob"},
    {"id": "3", "amount": "-7", "active": "F", "seen": "", "name": ""},
]  # fmt: skip


def select(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def declared(path: Path, table: str) -> dict[str, str]:
    return {r[1]: r[2] for r in select(path, f"PRAGMA table_info({quote_identifier(table)})")}


def test_a_table_gets_the_types_inferred_for_postgresql_not_all_text(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    types = pgtypes.infer_types(list(CSV_ROWS[0]), CSV_ROWS)
    assert types == {"id": "bigint", "amount": "numeric", "active": "boolean",
                     "seen": "timestamptz", "name": "text"}  # fmt: skip
    create_table(path, "people", types, key=["id"])
    assert declared(path, "people") == {"id": "BIGINT", "amount": "NUMERIC",
                                        "active": "BOOLEAN", "seen": "TIMESTAMPTZ",
                                        "name": "TEXT"}  # fmt: skip
    assert table_types(path, "people") == types  # read back for a resumed load
    assert table_types(path, "absent") is None
    assert table_types(tmp_path / "no-such.db", "people") is None
    assert not (tmp_path / "no-such.db").exists()


def test_typed_sink_converts_each_value_and_stores_it_exactly(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    types = pgtypes.infer_types(list(CSV_ROWS[0]), CSV_ROWS)
    sink = SqliteSink(path, "people", key="id", types=types)
    assert declared(path, "people")["amount"] == "NUMERIC"  # created with the sink
    assert sink.write(CSV_ROWS) is None
    sink.close()
    got = select(
        path,
        "SELECT id, typeof(id), amount, typeof(amount), active, typeof(active), seen, name"
        " FROM people ORDER BY id",
    )
    assert got == [
        (1, "integer", 12.5, "real", 1, "integer", "2024-05-01T10:00:00+02:00", "ann"),
        (2, "integer", 0.1, "real", 0, "integer", "2024-05-02T08:30:00+00:00", "bob"),
        (3, "integer", -7, "integer", 0, "integer", None, None),  # empty: NULL, as COPY
    ]


def test_a_value_that_does_not_fit_its_column_fails_its_row_alone(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    types = {"id": "bigint", "amount": "numeric", "active": "boolean", "seen": "timestamptz"}
    sink = SqliteSink(path, "t", key="id", types=types)
    outcomes = sink.write([
        {"id": "1", "amount": "1.5", "active": "t", "seen": ""},
        {"id": "x2", "amount": "2", "active": "t", "seen": ""},
        {"id": "3", "amount": "abc", "active": "t", "seen": ""},
        {"id": "4", "amount": "4", "active": "maybe", "seen": ""},
        {"id": "5", "amount": "5", "active": "t", "seen": "2024-01-01 10:00"},
        {"id": "6", "amount": "6", "active": "f", "seen": "2024-01-01T10:00Z"},
    ])  # fmt: skip
    sink.close()
    assert outcomes is not None
    assert [None if o is None else str(o) for o in outcomes] == [
        None,
        "column 'id': invalid literal for int() with base 10: 'x2'",
        "column 'amount': 'abc' is not a number",
        "column 'active': 'maybe' is not a boolean (true/false)",
        "column 'seen': '2024-01-01 10:00' has no time zone (timestamptz needs one, e.g. +00:00)",
        None,
    ]
    assert all(isinstance(o, PermanentError) for o in outcomes if o is not None)
    assert select(path, "SELECT id, seen FROM t ORDER BY id") == [
        (1, None),
        (6, "2024-01-01T10:00:00+00:00"),
    ]


def test_a_job_dead_letters_the_rows_that_do_not_fit_and_loads_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    rows = [{"id": str(i), "amount": f"{i}.25"} for i in range(1, 21)]
    rows[4]["amount"] = "NaN"  # item 4
    rows[9]["id"] = "ten"  # item 9
    rows[14]["amount"] = "Infinity"  # item 14
    sink = SqliteSink(path, "t", key="id", types={"id": "bigint", "amount": "numeric"})
    report = Job(
        "typed", rows, sink, chunk_size=8, retry=Retry(attempts=1),
        store=SqliteStore(tmp_path / "s.db"),
    ).run()  # fmt: skip
    sink.close()
    assert report.summary["succeeded"] == 17
    assert [(e["item"], e["category"]) for e in report["errors"]] == [
        ("item 4", "permanent"), ("item 9", "permanent"), ("item 14", "permanent"),
    ]  # fmt: skip
    assert "is not a finite number" in report["errors"][0]["message"]
    assert "is not a finite number" in report["errors"][2]["message"]
    assert select(path, "SELECT count(*), count(amount) FROM t") == [(17, 17)]  # no NULLs


def test_nan_never_becomes_null(tmp_path: Path) -> None:
    """sqlite3 binds float('nan') as NULL: the row is refused instead."""
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "m")
    outcomes = sink.write([
        {"k": 1, "x": 1.5}, {"k": 2, "x": math.nan}, {"k": 3, "x": math.inf},
        {"k": 4, "x": Decimal("NaN")}, {"k": 5, "x": Decimal("sNaN")},
        {"k": 6, "x": Decimal("-Infinity")},
    ])  # fmt: skip
    sink.close()
    assert outcomes is not None
    assert [None if o is None else str(o) for o in outcomes] == [
        None,
        "column 'x': NaN is not a finite number",
        None,  # SQLite stores infinity as it is (so does PostgreSQL's double precision)
        "column 'x': NaN is not a finite number",
        "column 'x': NaN is not a finite number",
        "column 'x': -Infinity is not a finite number",
    ]
    assert select(path, "SELECT k, x FROM m ORDER BY k") == [(1, 1.5), (3, math.inf)]


def test_nan_alone_does_not_make_a_column_numeric_and_is_then_kept_as_text(
    tmp_path: Path,
) -> None:
    rows: list[Mapping[str, Any]] = [{"v": "NaN"}, {"v": "NaN"}]
    types = pgtypes.infer_types(["v"], rows)
    assert types == {"v": "text"}
    sink = SqliteSink(tmp_path / "d.db", "t", types=types)
    assert sink.write(rows) is None
    sink.close()
    assert select(tmp_path / "d.db", "SELECT v FROM t") == [("NaN",), ("NaN",)]


@pytest.mark.parametrize("types", [None, {"id": "bigint", "note": "text"}])
def test_a_nul_byte_in_text_is_refused_with_the_reason(
    tmp_path: Path, types: dict[str, str] | None
) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t", types=types)
    outcomes = sink.write([{"id": 1, "note": "ok"}, {"id": 2, "note": "a\x00b"}])
    sink.close()
    assert outcomes is not None
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PermanentError)
    assert str(outcomes[1]) == "column 'note': text fields cannot contain NUL (0x00) bytes"
    assert select(tmp_path / "d.db", "SELECT id, note FROM t") == [(1, "ok")]


def test_numeric_keeps_exact_decimals_or_refuses_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "n", types={"k": "bigint", "x": "numeric"})
    outcomes = sink.write([
        {"k": 1, "x": "0.1"},
        {"k": 2, "x": "1.10"},
        {"k": 3, "x": "9223372036854775807"},
        {"k": 4, "x": "12345678901234567.89"},  # SQLite's NUMERIC would round it
        {"k": 5, "x": "123456789012345678901234567890"},
    ])  # fmt: skip
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, True, True, False, False]
    assert "more significant digits than SQLite keeps" in str(outcomes[3])
    assert select(path, "SELECT k, x, typeof(x) FROM n ORDER BY k") == [
        (1, 0.1, "real"),
        (2, 1.1, "real"),
        (3, 9223372036854775807, "integer"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_stored_numeric_reads_back_as_the_same_number(value: Decimal) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE n (x NUMERIC)")
    sink_row = _bound(value)
    if sink_row is None:  # refused: not silently rounded
        return
    db.execute("INSERT INTO n VALUES (?)", (sink_row,))
    [(back,)] = db.execute("SELECT x FROM n").fetchall()
    db.close()
    assert Decimal(repr(back)) == value


def _bound(value: Decimal) -> Any:
    """The sink's binding of ``value``, or ``None`` when it refuses it."""
    try:
        return bind(value, "x")
    except PermanentError:
        return None


def test_an_integer_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t")
    outcomes = sink.write([{"v": 1}, {"v": 2**63}])
    sink.close()
    assert outcomes is not None
    assert str(outcomes[1]) == (
        "column 'v': 9223372036854775808 is out of range for SQLite's 64-bit integers"
    )


def test_json_values_are_stored_as_json_text(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t")
    assert sink.write([{"k": 1, "doc": {"a": [1, "é"]}}]) is None
    sink.close()
    assert select(tmp_path / "d.db", "SELECT doc FROM t") == [('{"a": [1, "é"]}',)]


def test_a_key_column_refuses_null_instead_of_inventing_a_rowid(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id", types={"id": "bigint", "v": "text"})
    outcomes = sink.write([{"id": "1", "v": "a"}, {"id": "", "v": "b"}])
    sink.close()
    assert outcomes is not None
    assert str(outcomes[1]) == "IntegrityError: NOT NULL constraint failed: t.id"
    assert select(path, "SELECT id, v FROM t") == [(1, "a")]


def test_upsert_within_one_write_keeps_the_last_value(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "t", key="id", types={"id": "bigint", "v": "text"})
    sink.write([{"id": "1", "v": "first"}, {"id": "2", "v": "x"}, {"id": "1", "v": "last"}])
    sink.close()
    assert select(path, "SELECT id, v FROM t ORDER BY id") == [(1, "last"), (2, "x")]


def test_an_existing_table_keeps_its_columns_and_types_must_name_them(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    create_table(path, "t", {"id": "bigint"})
    with pytest.raises(ConfigError, match=r"types= names column\(s\) \['v'\] that table 't'"):
        SqliteSink(path, "t", types={"id": "bigint", "v": "text"})
    with pytest.raises(ConfigError, match="unsupported column type 'money'"):
        SqliteSink(path, "t", types={"id": "money"})


def test_columns_that_types_leaves_out_keep_their_values(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "t" (id BIGINT, note TEXT, extra TEXT)')
    db.close()
    sink = SqliteSink(path, "t", types={"id": "bigint"})
    assert sink.write([{"id": "1", "note": "kept", "extra": "too"}, {"id": "2"}]) is None
    sink.close()
    assert select(path, "SELECT id, note, extra FROM t ORDER BY id") == [
        (1, "kept", "too"),
        (2, None, None),
    ]


def test_a_typed_sink_survives_pickling_for_worker_processes(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "d.db", "t", types={"id": "bigint"})
    copy = pickle.loads(pickle.dumps(sink))
    assert copy.write([{"id": "7"}, {"id": "x"}]) is not None
    copy.close()
    sink.close()
    assert select(tmp_path / "d.db", "SELECT id FROM t") == [(7,)]


async def test_the_async_twin_takes_the_same_types(tmp_path: Path) -> None:
    sink = AsyncSqliteSink(tmp_path / "d.db", "t", key="id", types={"id": "bigint", "b": "boolean"})
    outcomes = await sink.write([{"id": "1", "b": "yes"}, {"id": "2", "b": "?"}])
    await sink.aclose()
    assert outcomes is not None
    assert outcomes[0] is None
    assert str(outcomes[1]) == "column 'b': '?' is not a boolean (true/false)"
    assert select(tmp_path / "d.db", "SELECT id, b FROM t") == [(1, 1)]


# -- names and limits: refused before anything is created ------------------------------------


@pytest.mark.parametrize("table", ["sqlite_master", "sqlite_stat1", "SQLite_mine", "sqlite_"])
def test_a_table_name_sqlite_reserves_is_refused_naming_it(tmp_path: Path, table: str) -> None:
    path = tmp_path / "d.db"
    with pytest.raises(ConfigError, match=f"the table name '{table}' is reserved by SQLite"):
        SqliteSink(path, table)
    with pytest.raises(ConfigError, match="reserved by SQLite"):
        create_table(path, table, {"id": "bigint"})
    with pytest.raises(ConfigError, match="reserved by SQLite"):
        table_types(path, table)
    assert not path.exists()


@pytest.mark.parametrize("table", ["", "   "])
def test_an_empty_table_name_is_refused(tmp_path: Path, table: str) -> None:
    with pytest.raises(ConfigError, match="the SQLite table name must not be empty"):
        SqliteSink(tmp_path / "d.db", table)
    with pytest.raises(ConfigError, match="the SQLite table name must not be empty"):
        create_table(tmp_path / "d.db", table, {"id": "bigint"})


def test_more_columns_than_sqlite_allows_are_refused_before_anything_is_created(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.db"
    wide = {f"c{i}": "text" for i in range(5000)}
    message = (
        "table 'wide' would have 5,000 columns, more than SQLite allows "
        f"({SQLITE_MAX_COLUMN:,}, SQLITE_MAX_COLUMN); load fewer columns"
    )
    with pytest.raises(ConfigError) as caught:
        create_table(path, "wide", wide)
    assert str(caught.value) == message
    assert not path.exists()
    with pytest.raises(ConfigError, match="SQLITE_MAX_COLUMN"):
        SqliteSink(path, "wide", types=wide)
    assert not path.exists()
    at_limit = {f"c{i}": "text" for i in range(SQLITE_MAX_COLUMN)}
    create_table(path, "widest", at_limit)  # exactly the limit is fine
    assert len(declared(path, "widest")) == SQLITE_MAX_COLUMN


def test_an_untyped_sink_refuses_every_row_of_a_table_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    sink = SqliteSink(path, "wide")
    wide = {f"c{i}": i for i in range(SQLITE_MAX_COLUMN + 1)}
    outcomes = sink.write([wide, wide])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)  # the table's, not a row's
    assert "SQLITE_MAX_COLUMN" in str(outcomes[0])
    assert select(path, "SELECT name FROM sqlite_master") == []


def test_an_empty_column_name_or_a_missing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with pytest.raises(ConfigError, match="column 2 of table 't' has an empty name"):
        create_table(path, "t", {"a": "text", "": "text"})
    with pytest.raises(ConfigError, match=r"key column\(s\) \['id'\] are not among"):
        create_table(path, "t", {"a": "text"}, key=["id"])
    with pytest.raises(ConfigError, match="at least one column"):
        create_table(path, "t", {})
