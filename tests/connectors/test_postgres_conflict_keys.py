"""The keys an upsert touches (``PostgresSink.conflict_keys``): read as the server
reads them, or unknown; and a load with --key and two workers keeps, for every key
however it is spelled, the file's last value."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from typer.testing import CliRunner

from freight.cli import app
from freight.connectors._pgkeys import conflict_keys
from tests.services import POSTGRES_URL, require

INT = {"id": "bigint", "name": "text", "n": "integer"}


def keys(texts: list[str], key: list[str], types: dict[str, str] | None = INT) -> object:
    return conflict_keys(texts, csv_texts=True, columns=["id", "name", "n"], key=key,
                         types=types)  # fmt: skip


def test_integer_keys_are_read_as_the_server_reads_them() -> None:
    texts = ["7,a,1\n", " +07 ,b,2\n", "8,c,3"]
    assert keys(texts, ["id"]) == {7, 8}
    assert keys(["1,a,1\n", ",b,2\n"], ["id"]) == {1, None}  # NULL kept: it may clash


def test_text_keys_are_compared_as_written_and_quoted_fields_are_read() -> None:
    assert keys(["1,a,1\n", "2, a,2\n", "3,A,3\n"], ["name"]) == {"a", " a", "A"}
    texts = ['1,"x, ""y""",1\n', '2,"multi\nline",2\n', "3,,3\n", '4,"",4\n']
    assert keys(texts, ["name"]) == {"x, y", "multi\nline", ""}  # quotes left out
    assert keys(["1,a,5\n", "2,b,6\n"], ["id", "n"]) == {(1, 5), (2, 6)}


def test_text_keys_the_server_may_hold_equal_are_one_key() -> None:
    """Review findings: a varchar(n) cuts trailing spaces past n; a unique index with
    NULLS NOT DISTINCT holds NULLs equal, and a chunk with quotes reads NULL as '';
    PostgreSQL opens a quoted part at a quote inside a field (a"b" is ab)."""
    varchar = {"id": "bigint", "name": "character varying", "n": "integer"}
    assert keys(["1,abc,1\n"], ["name"], varchar) == keys(["1,abc  ,1\n"], ["name"], varchar)
    assert keys(["1,,1\n"], ["name"]) == {""}
    assert keys(["1,,1\n", '2,"q",2\n'], ["name"]) == {"", "q"}
    assert keys(['1,a"b",1\n'], ["name"]) == keys(["1,ab,1\n"], ["name"]) == {"ab"}
    # a quoted part swallowing a comma: PostgreSQL reads 2 fields where csv reads 3
    two = conflict_keys(['1,a"b,c"d\n'], csv_texts=True, columns=["id", "name"], key=["name"],
                        types={"id": "bigint", "name": "text"})  # fmt: skip
    assert two is None


@pytest.mark.parametrize(
    ("texts", "key", "types"),
    [
        (["0x1F,a,1\n"], ["id"], INT),  # PostgreSQL 16 reads it as 31; int() does not
        (["1,a\n"], ["n"], INT),  # too few fields
        (['1,"open\n', "2,b,2\n"], ["id"], INT),  # a quote left open: records unknown
        (["1,a,1\n"], ["id"], {"id": "numeric", "name": "text", "n": "integer"}),
        (["1,a,1\n"], ["name"], {"id": "bigint", "name": "character", "n": "integer"}),
        (["1,a,1\n"], ["id"], None),  # the table's types not read yet
        (["1,a,1\n"], ["missing"], INT),
    ],
)  # fmt: skip
def test_keys_freight_cannot_read_as_the_server_does_are_unknown(
    texts: list[str], key: list[str], types: dict[str, str] | None
) -> None:
    assert keys(texts, key, types) is None


def test_keys_of_mappings() -> None:
    def of(items: list[object], kind: str = "bigint") -> object:
        return conflict_keys(items, csv_texts=False, columns=None, key=["id"],
                             types={"id": kind})  # fmt: skip

    assert of([{"id": 1}, {"id": None}, {"id": "2"}]) == {1, None, 2}
    assert of([{"id": "a"}, {"id": None}], "text") == {"a", ""}
    bad_items: list[list[object]] = [[{"id": True}], [{"id": 1.0}], [{"other": 1}], [(1,)]]
    for bad in bad_items:
        assert of(bad) is None
    assert of([{"id": 1}], "text") is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**40), 2**40), st.sampled_from(["", "+", " ", "0", "00"])),
        min_size=1, max_size=30,
    )
)  # fmt: skip
def test_every_spelling_of_one_integer_is_one_key(values: list[tuple[int, str]]) -> None:
    """However a key is spelled (sign, spaces, leading zeros), its key is its number."""
    texts = []
    for number, spelling in values:
        digits = str(abs(number))
        sign = "-" if number < 0 else ("+" if spelling == "+" else "")
        pad = spelling if spelling in ("0", "00") else ""
        space = " " if spelling == " " else ""
        texts.append(f"{space}{sign}{pad}{digits}{space},x,1\n")
    assert keys(texts, ["id"]) == {number for number, _ in values}


# -- a real load -----------------------------------------------------------------------------


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_keys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_an_upsert_load_with_workers_keeps_the_last_value_of_every_key(
    schema: str, tmp_path: Path
) -> None:
    """3,000 rows in chunks of 50, two workers: most chunks hold new keys (written at
    once), and every 7th row repeats an earlier key in another spelling; the table
    holds each key's last value in the file."""
    data = tmp_path / "rows.csv"
    expected: dict[int, int] = {}
    lines = ["id,seq"]
    for seq in range(3_000):
        key = seq if seq % 7 else (seq * 13) % 600
        spelled = [f"{key}", f"+{key}", f" 0{key} "][seq % 3] if seq % 7 == 0 else str(key)
        lines.append(f"{spelled},{seq}")
        expected[key] = seq
    data.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        app,
        ["load", str(data), "--into", POSTGRES_URL, "--table", "t", "--schema", schema,
         "--key", "id", "--types", "id=bigint,seq=bigint", "--chunk-size", "50",
         "--workers", "2", "--store", str(tmp_path / "f.db"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["succeeded"] == 3_000
    with psycopg.connect(POSTGRES_URL) as conn:
        found: dict[int, int] = dict(
            conn.execute(sql.SQL("SELECT id, seq FROM {}").format(sql.Identifier(schema, "t")))
        )
    assert found == expected


def test_a_jsonl_upsert_load_with_workers_keeps_the_last_value_of_every_key(
    schema: str, tmp_path: Path
) -> None:
    """The same with JSONL records (typed before the sink: its keys are ints)."""
    data = tmp_path / "rows.jsonl"
    expected: dict[int, int] = {}
    with data.open("w") as f:
        for seq in range(2_000):
            key = seq if seq % 5 else (seq * 7) % 300
            f.write(json.dumps({"id": key, "seq": seq}) + "\n")
            expected[key] = seq
    result = CliRunner().invoke(
        app,
        ["load", str(data), "--into", POSTGRES_URL, "--table", "j", "--schema", schema,
         "--key", "id", "--chunk-size", "40", "--workers", "2",
         "--store", str(tmp_path / "f.db"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with psycopg.connect(POSTGRES_URL) as conn:
        found: dict[int, int] = dict(
            conn.execute(sql.SQL("SELECT id, seq FROM {}").format(sql.Identifier(schema, "j")))
        )
    assert found == expected


@pytest.mark.parametrize("form", ["csv", "rows"])
def test_a_chunk_sharing_a_key_however_spelled_never_overtakes_the_one_before(
    schema: str, tmp_path: Path, form: str
) -> None:
    """Each even chunk (after the first) stalls its write until the next chunk has
    written (at most 0.3 s): a next chunk let through as disjoint would write first and
    its newer values be overwritten. Every chunk holds keys 0-9, spelled anew in CSV."""
    from typing import Any

    from freight import Job
    from freight.connectors.postgres import PostgresSink
    from freight.jobs import WriteContext
    from freight.store import SqliteStore

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, seq bigint)").format(
                sql.Identifier(schema, "t")
            )
        )
    chunks = 8
    wrote = [threading.Event() for _ in range(chunks)]

    class Stalling(PostgresSink):
        def write(self, items: list[Any], context: object = None) -> list[Any] | None:
            assert isinstance(context, WriteContext)
            index = context.chunk_index
            if index % 2 == 0 and 0 < index < chunks - 1:
                wrote[index + 1].wait(0.3)
            try:
                return super().write(items, context)
            finally:
                wrote[index].set()

    spellings = ["{}", "+{}", " 0{} ", "{}"]
    items: list[Any] = []
    for seq in range(chunks * 10):
        key = seq % 10
        if form == "csv":
            items.append(spellings[seq // 10 % 4].format(key) + f",{seq}\n")
        else:
            items.append({"id": key, "seq": seq})
    sink = Stalling(POSTGRES_URL, "t", schema=schema, key="id", columns=["id", "seq"],
                    format="csv" if form == "csv" else "rows")  # fmt: skip
    job = Job("stall", items, sink, chunk_size=10, workers=2, ordered_writes=True,
              store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    try:
        assert job.run().status == "completed"
    finally:
        sink.close()
    with psycopg.connect(POSTGRES_URL) as conn:
        found: dict[int, int] = dict(
            conn.execute(sql.SQL("SELECT id, seq FROM {}").format(sql.Identifier(schema, "t")))
        )
    assert found == {k: (chunks - 1) * 10 + k for k in range(10)}


@pytest.mark.parametrize(
    ("ddl", "key", "commutes"),
    [
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text)", "id", True),
        ("CREATE TABLE t (id varchar(3) PRIMARY KEY, v text)", "id", True),
        ("CREATE TABLE t (id bigint, e text UNIQUE, v text, UNIQUE (e))", "e", True),
        # another unique index: which of two rows of one value lands depends on order
        ("CREATE TABLE t (id bigint PRIMARY KEY, e text UNIQUE)", "id", False),
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text); CREATE UNIQUE INDEX ON t (lower(v))",
         "id", False),
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text); CREATE UNIQUE INDEX ON t (id) "
         "WHERE v IS NOT NULL", "id", False),
        ("CREATE TABLE t (id int PRIMARY KEY, parent int REFERENCES t (id))", "id", False),
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text); CREATE FUNCTION f() RETURNS trigger "
         "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; CREATE TRIGGER g BEFORE INSERT ON t "
         "FOR EACH ROW EXECUTE FUNCTION f()", "id", False),
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text); CREATE RULE r AS ON INSERT TO t "
         "DO ALSO NOTIFY t", "id", False),
        ("CREATE TABLE t (id bigint PRIMARY KEY, v text) PARTITION BY RANGE (id)", "id", False),
        ("CREATE COLLATION IF NOT EXISTS freight_ci (provider = icu, locale = "
         "'und-u-ks-level2', deterministic = false); CREATE TABLE t (id text COLLATE "
         "freight_ci PRIMARY KEY, v text)", "id", False),
    ],
)  # fmt: skip
def test_distinct_keys_commute_only_where_nothing_else_relates_rows(
    schema: str, ddl: str, key: str, commutes: bool
) -> None:
    """Review findings: a unique index on other columns, a self-reference, a trigger, a
    rule, a partitioned table or a nondeterministic collation make upserts of distinct
    keys depend on their order: the sink names no keys there (every chunk in order)."""
    from freight.connectors.postgres import PostgresSink, table_types

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        conn.execute(ddl.encode())
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key=key, columns=[key],
                        format="csv")  # fmt: skip
    try:
        sink._table = table_types(POSTGRES_URL, "t", schema)  # as its first write reads them
        assert sink._commutes() is commutes
        assert (sink.conflict_keys(["1\n"]) is not None) is commutes
    finally:
        sink.close()
