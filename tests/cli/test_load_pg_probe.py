"""`freight load` probe findings (issue 11) on the PostgreSQL target, each checked on
SQLite too: a sample with blank or non-object records, timestamps the server would read
its own way, rows too big for a table, and names that collide with freight's own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from freight.cli import app
from tests.services import POSTGRES_URL, require


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of this test's own, dropped afterwards."""
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_probe_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def targets(schema: str, tmp_path: Path) -> list[list[str]]:
    """The --into (and --schema) options of each target: PostgreSQL, then SQLite."""
    return [
        ["--into", POSTGRES_URL, "--schema", schema],
        ["--into", f"sqlite:///{tmp_path / 'target.db'}"],
    ]


def load(tmp_path: Path, data: Path, target: list[str], *options: str) -> tuple[int, str]:
    """Run ``freight load`` with a store of its own; its exit code and output."""
    store = tmp_path / f"store-{uuid.uuid4().hex[:8]}.db"
    result = CliRunner().invoke(
        app, ["load", str(data), *target, "--store", str(store), "--json", *options]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout if result.exit_code in (0, 3) else result.output


def rows_of(schema: str | None, tmp_path: Path, table: str, columns: str = "*") -> list[tuple]:  # type: ignore[type-arg]
    """The rows of ``table`` on PostgreSQL (``schema``) or SQLite (``None``), sorted."""
    import sqlite3

    if schema is None:
        with sqlite3.connect(tmp_path / "target.db") as db:
            return sorted(db.execute(f'SELECT {columns} FROM "{table}"').fetchall())
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT " + columns + " FROM {}").format(sql.Identifier(schema, table))
        return sorted(conn.execute(query).fetchall())


# -- 1. the inference sample leaves blank and bad records out ---------------------------


def test_a_blank_line_among_the_sampled_rows_is_left_out_of_inference(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "b.csv"
    data.write_text("id,v\n1,a\n\n2,b\n")
    for target, where in zip(targets(schema, tmp_path), (schema, None), strict=True):
        code, output = load(tmp_path, data, target, "--table", "blank")
        assert code == 0, output
        assert rows_of(where, tmp_path, "blank") == [(1, "a"), (2, "b")]


def test_a_jsonl_record_that_is_not_an_object_is_a_dead_letter_not_a_traceback(
    schema: str, tmp_path: Path
) -> None:
    for name, text in (("j", '{"id":1}\n[1,2,3]\n{"id":2}\n'), ("k", '[1,2,3]\n{"id":2}\n')):
        data = tmp_path / f"{name}.jsonl"
        data.write_text(text)
        for target, where in zip(targets(schema, tmp_path), (schema, None), strict=True):
            code, output = load(tmp_path, data, target, "--table", name)
            assert code == 3, output  # finished with a dead letter
            report = json.loads(output)
            line = 2 if name == "j" else 1
            assert [e["item"] for e in report["errors"]] == [f"line {line}"]
            assert "JSON object" in report["errors"][0]["message"]
            expected = [(1,), (2,)] if name == "j" else [(2,)]
            assert rows_of(where, tmp_path, name, '"id"') == expected


# -- 2. the PostgreSQL fast path reads values as the converter does ---------------------

ODD_TIMES = [
    "now",
    "2024-01-01 10:00:00",  # no zone: the server would read it in its own
    "epoch",
    "infinity",
    "2024-01-01 10:00:00 PST",
    "Jan 1 2024 10:00+00",
    "2024-01-01T24:00:00+00:00",
]


def test_times_the_converter_refuses_are_dead_lettered_on_postgresql_as_on_sqlite(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "times.csv"
    good = [f"{i},2024-01-{i % 28 + 1:02d}T10:00:00+00:00" for i in range(1000)]
    odd = [f"{1000 + i},{value}" for i, value in enumerate(ODD_TIMES)]
    data.write_text("id,at\n" + "\n".join([*good, *odd, "2000,2024-02-01T00:00:00Z"]) + "\n")
    reports = []
    for target, where in zip(targets(schema, tmp_path), (schema, None), strict=True):
        code, output = load(tmp_path, data, target, "--table", "times")
        assert code == 3, output
        reports.append(json.loads(output))
        assert [row[0] for row in rows_of(where, tmp_path, "times", "id")] == [
            *range(1000),
            2000,
        ]
    lines = [f"line {1002 + i}" for i in range(len(ODD_TIMES))]
    on_pg, on_sqlite = ({e["item"]: e["message"] for e in r["errors"]} for r in reports)
    assert sorted(on_pg) == sorted(lines)
    assert on_pg == on_sqlite  # the same reasons, the converter's
    assert on_pg["line 1003"] == (
        "column 'at': '2024-01-01 10:00:00' has no time zone (timestamptz needs one, e.g. +00:00)"
    )


def test_booleans_and_numbers_the_converter_refuses_are_dead_lettered_alike(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "kinds.csv"
    good = [f"{i},{i}.5,{'true' if i % 2 else 'f'}" for i in range(200)]
    # (PostgreSQL 16 reads 1_000 and 0x10 as numbers; the converter does not)
    odd = ["200,1.5,maybe", "201,1_000,true", "202, 3 ,on", "203,.5,  yes ", "0x10,1,t"]
    data.write_text("id,amount,paid\n" + "\n".join([*good, *odd]) + "\n")
    reports = []
    for target in targets(schema, tmp_path):
        code, output = load(tmp_path, data, target, "--table", "kinds")
        assert code == 3, output
        reports.append({e["item"]: e["message"] for e in json.loads(output)["errors"]})
    assert sorted(reports[0]) == ["line 202", "line 203", "line 206"]
    assert reports[0] == reports[1]


# -- 3. a row too big is the table's error, not each row's ------------------------------


def wide_csv(path: Path, columns: int, rows: int, value: str) -> None:
    header = ",".join(f"c{i}" for i in range(columns))
    path.write_text(
        header + "\n" + "".join(",".join([value] * columns) + "\n" for _ in range(rows))
    )


def test_fixed_width_columns_that_cannot_fit_a_row_are_refused_before_creating(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "wide.csv"
    wide_csv(data, 1100, 3, "1")
    code, output = load(
        tmp_path, data, ["--into", POSTGRES_URL, "--schema", schema], "--table", "wide"
    )
    assert code == 2, output
    assert output.count("\n") == 1
    assert "Traceback" not in output
    assert "1,100 bigint" in output, output
    assert "8,160" in output
    with psycopg.connect(POSTGRES_URL) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
    assert found == (0,)


def test_a_row_too_big_stops_the_load_with_one_reason_not_one_dead_letter_per_row(
    schema: str, tmp_path: Path
) -> None:
    data = tmp_path / "texts.csv"
    wide_csv(data, 1500, 40, "x" * 200)
    code, output = load(
        tmp_path, data, ["--into", POSTGRES_URL, "--schema", schema], "--table", "texts"
    )
    assert code not in (0, 3), output
    assert "row is too big" in output
    assert "Traceback" not in output
    assert rows_of(schema, tmp_path, "texts", "count(*)") == [(0,)]


# -- 4. names that collide with freight's own -------------------------------------------


def test_a_table_named_like_the_upsert_staging_table_loads_and_reasons_name_the_target(
    tmp_path: Path,
) -> None:
    require("127.0.0.1", 5432, "PostgreSQL")
    drop = sql.SQL("DROP TABLE IF EXISTS public.freight_upsert")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(drop)
    data = tmp_path / "up.csv"
    data.write_text("id,v\n1,a\n2,b\n1,c\n,d\n")
    try:
        code, output = load(
            tmp_path, data, ["--into", POSTGRES_URL], "--table", "freight_upsert", "--key", "id"
        )
        assert code == 3, output  # the row without a key is dead-lettered
        [error] = json.loads(output)["errors"]
        assert error["item"] == "line 5"
        assert "freight_stage" not in error["message"]
        with psycopg.connect(POSTGRES_URL) as conn:
            found = conn.execute("SELECT id, v FROM public.freight_upsert ORDER BY id").fetchall()
        assert found == [(1, "c"), (2, "b")]
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(drop)


@pytest.mark.parametrize("explicit", [False, True])
def test_a_load_into_a_table_of_the_postgresql_store_is_refused_before_anything_is_written(
    schema: str, tmp_path: Path, explicit: bool
) -> None:
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    data = tmp_path / "jobs.csv"
    data.write_text("id,v\n1,a\n")
    target = ["--into", url, "--schema", schema] if explicit else ["--into", url]
    result = CliRunner().invoke(
        app, ["load", str(data), *target, "--table", "jobs", "--store", url]
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1, result.output
    assert "jobs" in result.output
    assert "store" in result.output
    with psycopg.connect(url) as conn:
        runs = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "jobs"))
        ).fetchone()
    assert runs == (0,)  # the store's own table, untouched
