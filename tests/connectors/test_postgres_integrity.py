"""PostgreSQL target integrity: the last value of a key wins, bad rows are located from
the server's error (not bisected), a table-level refusal is one error, NaN is refused as
on SQLite, and a lost store connection is transient. Against the real server."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from freight import ConfigError, Job, PermanentError, TargetError, TransientError
from freight.connectors import pgtypes
from freight.connectors._isolate import Refused, Write, locate
from freight.connectors.postgres import AsyncPostgresSink, PostgresSink, create_table
from freight.jobs import CsvSource
from freight.store import SqliteStore
from freight.store._postgres import PostgresStore
from tests.services import POSTGRES_URL, require

COLUMNS = ["id", "amount", "note"]


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_integrity_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def create(schema: str, table: str, body: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (" + body + ")").format(sql.Identifier(schema, table))
        )


def rows(schema: str, table: str = "t") -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
        return conn.execute(query).fetchall()


def count_statements(schema: str, table: str = "t") -> None:
    """Count the statements that write into ``table`` (a BEFORE STATEMENT trigger
    bumps a sequence, which a rollback does not undo), refused ones included."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(schema, "statements")))
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "PERFORM nextval({}); RETURN NULL; END $$"
            ).format(sql.Identifier(schema, "count_it"), sql.Literal(f'"{schema}".statements'))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER count_it BEFORE INSERT ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
            ).format(sql.Identifier(schema, table), sql.Identifier(schema, "count_it"))
        )


def statements(schema: str) -> int:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}")
        row = conn.execute(query.format(sql.Identifier(schema, "statements"))).fetchone()
    assert row is not None
    return int(row[0])


# -- item 3: the last value of a key wins ---------------------------------------------


@pytest.mark.parametrize("form", ["csv", "rows"])
def test_an_upsert_keeps_the_last_value_of_a_key_within_one_write(schema: str, form: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id", columns=COLUMNS,
                        format=form)  # type: ignore[arg-type]  # fmt: skip
    written = [(1, 1, "first"), (2, 2, "only"), (1, 3, "second"), (3, 4, "x"), (1, 5, "last")]
    items = [f"{i},{a},{n}\n" for i, a, n in written] if form == "csv" else written
    assert sink.write(list(items)) is None
    sink.close()
    assert rows(schema) == [(1, 5, "last"), (2, 2, "only"), (3, 4, "x")]


def test_the_last_value_wins_when_bad_rows_split_the_write(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id", columns=COLUMNS,
                        format="csv")  # fmt: skip
    items = ["1,1,a\n", "2,x,bad\n", "1,2,b\n", "3,y,bad\n", "1,3,c\n", "2,4,d\n"]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [1, 3]
    assert rows(schema) == [(1, 3, "c"), (2, 4, "d")]


def test_rows_whose_key_is_null_never_conflict_and_are_all_kept(schema: str) -> None:
    create(schema, "t", "id bigint UNIQUE, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id", columns=COLUMNS)
    assert sink.write([(None, 1, "a"), (None, 2, "b"), (7, 3, "c"), (7, 4, "d")]) is None
    sink.close()
    assert sorted(rows(schema), key=str) == sorted(
        [(None, 1, "a"), (None, 2, "b"), (7, 4, "d")], key=str
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 6), st.one_of(st.integers(0, 99), st.just(-1))),
        min_size=1,
        max_size=40,
    )
)
def test_property_each_key_holds_its_last_good_value(
    schema: str, writes: list[tuple[int, int]]
) -> None:
    """-1 stands for an unparsable amount: that row is dead-lettered, the others of its
    key still land in the file's order."""
    table = f"p{uuid.uuid4().hex[:8]}"
    create(schema, table, "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, table, schema=schema, key="id", columns=COLUMNS,
                        format="csv")  # fmt: skip
    items = [f"{k},{'x' if v < 0 else v},n\n" for k, v in writes]
    outcomes = sink.write(items) or [None] * len(items)
    sink.close()
    assert [o is not None for o in outcomes] == [v < 0 for _, v in writes]
    expected = {k: v for k, v in writes if v >= 0}
    assert {r[0]: int(r[1]) for r in rows(schema, table)} == expected


# -- item 13: a bad row is located from the server's error ----------------------------


def simulate(n: int, bad: set[int]) -> int:
    """The statements :func:`locate` plans for ``n`` rows with these bad ones."""
    plan = locate(n)
    effect = next(plan)
    count = 0
    outcomes: list[object] = []
    while not outcomes:
        assert isinstance(effect, Write)
        count += 1
        at = next((j for j, i in enumerate(effect.rows) if i in bad), None)
        try:
            effect = plan.send(None if at is None else Refused(ValueError(), at))
        except StopIteration as stop:
            outcomes = stop.value
    assert {i for i, o in enumerate(outcomes) if o is not None} == bad
    return count


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    bad=st.sets(st.integers(0, 299)),
    refused=st.sets(st.integers(0, 299), max_size=5),
    silent=st.sets(st.integers(0, 299), max_size=3),
)
def test_property_located_writes_mark_each_bad_row_once_and_write_the_rest_once_in_order(
    n: int, bad: set[int], refused: set[int], silent: set[int]
) -> None:
    """Rows in ``silent`` fail without the server naming them (bisected); ``refused``
    are known bad before writing. Every other row goes in exactly once, and each write
    that goes in holds only rows after those of the writes before it (the last value
    of a key wins)."""
    bad = {b for b in bad if b < n}
    refused = {r for r in refused if r < n}
    silent = {s for s in silent if s < n} - refused
    plan = locate(n, {i: KeyError(i) for i in refused})
    written: list[list[int]] = []
    reply: Refused | list[Any] | None = None
    while True:  # every row refused before writing: the plan has no effect at all
        try:
            effect = plan.send(reply)
        except StopIteration as stop:
            outcomes = stop.value
            break
        if isinstance(effect, Write):
            assert not set(effect.rows) & refused
            assert effect.rows == sorted(effect.rows)
            failing = [j for j, i in enumerate(effect.rows) if i in bad | silent]
            if not failing:
                written.append(effect.rows)
                reply = None
            else:
                at = failing[0]
                reply = Refused(ValueError(), None if effect.rows[at] in silent else at)
        else:  # bisected: its good rows go in, in order
            written.append([i for i in effect.rows if i not in bad | silent])
            reply = [ValueError() if i in bad | silent else None for i in effect.rows]
    assert {i for i, o in enumerate(outcomes) if o is not None} == bad | silent | refused
    flat = [i for rows_ in written for i in rows_]
    assert flat == sorted(set(range(n)) - bad - silent - refused)  # once each, in order


def test_ten_bad_rows_in_10000_cost_a_few_statements_each_not_a_bisection(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    count_statements(schema)
    bad = {3, 999, 1000, 4_321, 5_000, 6_001, 7_777, 8_888, 9_998, 9_999}
    # '1e' has the form of a number: it reaches the server (the sink refuses 'x' first)
    items = [f"{i},{'1e' if i in bad else i},n{i}\n" for i in range(10_000)]
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert {i for i, o in enumerate(outcomes) if o is not None} == bad
    assert len(rows(schema)) == 10_000 - len(bad)
    # one failed statement per bad row, a few that go in; bisection took ~2*log2(n) each
    assert statements(schema) == simulate(10_000, bad) <= 3 * len(bad) + 5
    error = outcomes[999]
    assert isinstance(error, PermanentError)
    assert isinstance(error.__cause__, psycopg.errors.InvalidTextRepresentation)
    assert str(error) == "column 'amount': '1e' is not a number"  # as SQLite says it


def test_a_short_line_does_not_let_a_value_past_the_check(schema: str) -> None:
    """The check trusts each text to be one line of its fields and a COPY of them all
    proves it: here the COPY fails (the short line), and the check, run again without
    trusting, refuses the time the trusting one read out of line, as SQLite would."""
    create(schema, "t", "id bigint PRIMARY KEY, name text, amount numeric, "
                        "at timestamptz, note text")  # fmt: skip
    count_statements(schema)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, format="csv",
                        columns=["id", "name", "amount", "at", "note"])  # fmt: skip
    outcomes = sink.write(["7,a\n", "8,2.5,,now,z\n", "9,b,1,,c\n"])
    sink.close()
    assert outcomes is not None
    assert outcomes[2] is None
    assert str(outcomes[1]) == "column 'at': Invalid isoformat string: 'now'"
    assert "missing data for column" in str(outcomes[0])
    assert [r[0] for r in rows(schema)] == [9]
    # the trusting try, the write without the time (refused at the short line), then
    # the line after it
    assert statements(schema) == 3


def test_a_refused_smallint_has_the_same_reason_whatever_the_other_rows(schema: str) -> None:
    """Found by review: refused by the server (the rest of the write clean), a smallint
    kept the server's reason; read record by record (another row dirty), it got the
    converter's. Both now give the converter's, as SQLite does."""
    create(schema, "t", "id bigint PRIMARY KEY, s smallint, n numeric")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, format="csv",
                        columns=["id", "s", "n"])  # fmt: skip
    alone = sink.write(["1,x,1\n", "2,2,2\n"])
    beside = sink.write(["3,x,1\n", "4,2,abc\n"])
    sink.close()
    assert alone is not None
    assert beside is not None
    reason = "column 's': invalid literal for int() with base 10: 'x'"
    assert (str(alone[0]), str(beside[0])) == (reason, reason)
    assert str(beside[1]) == "column 'n': 'abc' is not a number"
    assert [r[0] for r in rows(schema)] == [2]


def test_a_failed_write_is_not_sent_twice_before_its_bad_row_is_found(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    count_statements(schema)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    outcomes = sink.write(["1,1e,bad\n", "2,2,good\n"])  # 1e: refused by the server
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [False, True]
    assert statements(schema) == 2  # the refused write, then the row after the bad one


def test_lines_are_counted_as_the_server_counts_them_across_quoted_newlines(
    schema: str,
) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    items = ['1,1,"two\nlines"\n', '2,2,"three\nmore\nlines"\n', "3,x,bad\n", "4,4,ok\n"]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, True, False, True]
    assert [r[0] for r in rows(schema)] == [1, 2, 4]


@pytest.mark.parametrize("form", ["rows", "binary"])
def test_typed_rows_are_located_by_line_too(schema: str, form: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    count_statements(schema)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS)
    amount: object = Decimal(1) if form == "binary" else "1"  # a str: text COPY
    items = [(i, None if i in (5, 70) else amount, "multi\nline") for i in range(100)]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [5, 70]
    assert statements(schema) == simulate(100, {5, 70})


def test_a_nul_byte_the_server_refuses_is_that_row_alone(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS)
    outcomes = sink.write([(1, 1, "fine"), (2, 2, "nul \x00 byte"), (3, 3, "fine")])
    sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    assert str(outcomes[1]) == (
        'CharacterNotInRepertoire: invalid byte sequence for encoding "UTF8": 0x00 (column note)'
    )
    assert [r[0] for r in rows(schema)] == [1, 3]


def test_a_value_psycopg_cannot_send_is_located_without_the_server(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    count_statements(schema)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS)
    items = [(i, object() if i == 40 else i, "n") for i in range(50)]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [40]
    assert "cannot adapt type 'object'" in str(outcomes[40])
    assert len(rows(schema)) == 49
    assert statements(schema) == simulate(50, {40})


def test_where_the_server_does_not_name_the_row_the_write_is_bisected(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    create(schema, "parent", "id numeric PRIMARY KEY")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (amount) REFERENCES {} (id)").format(
                sql.Identifier(schema, "t"), sql.Identifier(schema, "parent")
            )
        )
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT generate_series(0, 99)").format(
                sql.Identifier(schema, "parent")
            )
        )
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, mode="insert")
    outcomes = sink.write([(i, 500 if i == 6 else i, "n") for i in range(10)])
    sink.close()
    assert outcomes is not None
    assert [i for i, o in enumerate(outcomes) if o is not None] == [6]
    assert len(rows(schema)) == 9


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("id,amount,note\n" + "".join(lines))
    return path


def test_each_dead_letter_cites_the_file_line_and_the_typed_reason(
    schema: str, tmp_path: Path
) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    lines = [f"{i},{'x' if i % 97 == 5 else i},n{i}\n" for i in range(1_000)]
    data = write_csv(tmp_path / "d.csv", lines)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    job = Job("pg-lines", CsvSource(data, raw=True), sink, chunk_size=300,
              store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    report = job.run()
    sink.close()
    bad = [i for i in range(1_000) if i % 97 == 5]
    assert report.summary["failed"] == len(bad)
    assert report.summary["succeeded"] == 1_000 - len(bad)
    assert [e["item"] for e in report["errors"]] == [f"line {i + 2}" for i in bad]
    for error in report["errors"]:
        assert error["message"] == "column 'amount': 'x' is not a number"
        assert error["category"] == "permanent"


def test_a_row_a_constraint_refuses_keeps_the_server_reason_without_the_copy_context(
    schema: str,
) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric CHECK (amount < 100), note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    outcomes = sink.write(["1,1,a\n", "2,500,too much\n", "1,2,again\n", "3,3,c\n"])
    sink.close()
    assert outcomes is not None
    assert [None if o is None else str(o) for o in outcomes] == [
        None,
        'CheckViolation: new row for relation "t" violates check constraint "t_amount_check"; '
        "Failing row contains (2, 500, too much).",
        'UniqueViolation: duplicate key value violates unique constraint "t_pkey"; '
        "Key (id)=(1) already exists.",
        None,
    ]


def test_the_typed_reason_is_given_only_for_the_value_the_server_refused(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    outcomes = sink.write(["1,1,a\n", "2,2,b,extra\n", "x,3,c\n", "4,4,d\n"])
    sink.close()
    assert outcomes is not None
    assert [None if o is None else str(o) for o in outcomes] == [
        None,
        "BadCopyFileFormat: extra data after last expected column",  # not a value's
        "column 'id': invalid literal for int() with base 10: 'x'",
        None,
    ]


def test_the_typed_parsers_refuse_what_postgresql_refuses() -> None:
    for text in ("1_000", "\u0661\u0662", "1.0", "x"):
        with pytest.raises(ValueError, match="invalid literal for int"):
            pgtypes.TYPES["bigint"](text)
    assert pgtypes.TYPES["bigint"](" -12 ") == -12
    for text in ("1_0.5", "1,5", "\u0661"):
        with pytest.raises(ValueError, match="is not a number"):
            pgtypes.TYPES["numeric"](text)
    assert [pgtypes.TYPES["numeric"](t) for t in (".5", "5.", "1e3", " 2 ")] == [
        Decimal("0.5"), Decimal(5), Decimal(1000), Decimal(2),
    ]  # fmt: skip
    assert [pgtypes.TYPES["boolean"](t) for t in ("on", "OFF", "1", "0", "tru", "n")] == [
        True, False, True, False, True, False,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="is not a boolean"):
        pgtypes.TYPES["boolean"]("o")  # on or off: PostgreSQL refuses it too


# -- item 4: a table-level refusal is one error, not a dead letter per row -------------


def test_a_missing_column_or_table_is_a_target_error_in_one_statement(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    count_statements(schema)
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=["id", "nope"])
    outcomes = sink.write([(i, i) for i in range(64)])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert 'column "nope" of relation "t" does not exist' in str(outcomes[0])
    assert statements(schema) == 0  # refused before a row was read; never bisected
    missing = PostgresSink(POSTGRES_URL, "gone", schema=schema, columns=COLUMNS, format="csv")
    outcomes = missing.write(["1,1,a\n", "2,2,b\n"])
    missing.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert "does not exist" in str(outcomes[0])


def test_no_privilege_is_a_target_error(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    role = f"freight_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
    try:
        url = POSTGRES_URL.replace("postgres@", f"{role}@", 1)
        for mode in ("copy", "upsert"):
            sink = PostgresSink(url, "t", schema=schema, columns=COLUMNS, format="csv",
                                mode=mode, key="id")  # fmt: skip
            outcomes = sink.write(["1,1,a\n", "2,2,b\n", "3,3,c\n"])
            sink.close()
            assert outcomes is not None
            assert all(isinstance(o, TargetError) for o in outcomes), mode
            assert "permission denied" in str(outcomes[0])
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert rows(schema) == []


def test_an_upsert_key_without_a_unique_index_is_a_target_error(schema: str) -> None:
    create(schema, "t", "id bigint, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, key="id", columns=COLUMNS)
    outcomes = sink.write([(1, 1, "a"), (2, 2, "b")])
    sink.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert "ON CONFLICT" in str(outcomes[0])


async def test_the_async_sink_reports_a_target_error_and_locates_bad_rows(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    sink = AsyncPostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, key="id")
    outcomes = await sink.write([(1, 1, "a"), (2, None, "b"), (1, 3, "c")])
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    wrong = AsyncPostgresSink(POSTGRES_URL, "t", schema=schema, columns=["id", "nope"])
    refused = await wrong.write([(5, 5)])
    await sink.aclose()
    await wrong.aclose()
    assert refused is not None
    assert isinstance(refused[0], TargetError)
    assert rows(schema) == [(1, 3, "c")]


def test_create_table_refuses_more_columns_than_postgresql_allows_before_creating(
    schema: str,
) -> None:
    types = {f"c{i}": "text" for i in range(1_601)}
    with pytest.raises(ConfigError, match=r"1,601 columns: PostgreSQL allows at most 1,600"):
        create_table(POSTGRES_URL, "wide", types, schema=schema)
    with psycopg.connect(POSTGRES_URL) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".wide',)).fetchone()
    assert found == (None,)
    with pytest.raises(TargetError, match='schema "no_such_schema_here" does not exist'):
        create_table(POSTGRES_URL, "t", {"id": "bigint"}, schema="no_such_schema_here")


# -- item 5: NaN and big fields, as on SQLite -----------------------------------------


def test_nan_is_refused_in_numeric_and_float_columns_with_the_sqlite_reason(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, ratio double precision, note text")
    columns = ["id", "amount", "ratio", "note"]
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=columns, format="csv")
    items = [
        "1,1.5,0.5,fine\n",
        "2,NaN,0.5,nan in numeric\n",
        "3,1,nan,nan in double\n",
        "4,-Infinity,1,infinite numeric\n",
        "5,2,inf,infinite double: kept\n",
        '6,2,2,"NaN"\n',  # text keeps it
        '7," nan ",1,spaced and quoted\n',
        "8,3,3,Nancy infers nothing\n",
    ]
    outcomes = sink.write(items)
    sink.close()
    assert outcomes is not None
    reasons = [None if o is None else str(o) for o in outcomes]
    assert reasons == [
        None,
        "column 'amount': NaN is not a finite number",
        "column 'ratio': NaN is not a finite number",
        "column 'amount': -Infinity is not a finite number",
        None,
        None,
        "column 'amount': NaN is not a finite number",
        None,
    ]
    stored = rows(schema)
    assert [r[0] for r in stored] == [1, 5, 6, 8]
    assert math.isinf(stored[1][2])
    assert stored[2][3] == "NaN"


def test_nan_alone_never_makes_a_column_numeric_and_the_converter_agrees() -> None:
    assert pgtypes.infer_types(["v"], [{"v": "NaN"}, {"v": "1"}, {"v": "inf"}]) == {"v": "text"}
    many = [{"v": str(i)} for i in range(200)] + [{"v": "NaN"}]
    assert pgtypes.infer_types(["v"], many) == {"v": "bigint"}
    convert = pgtypes.converter({"v": "numeric"})
    with pytest.raises(ValueError, match=r"^column 'v': NaN is not a finite number$"):
        convert({"v": "nan"})
    with pytest.raises(ValueError, match=r"^column 'v': -Infinity is not a finite number$"):
        convert({"v": "-inf"})


def test_a_10_mb_field_loads_by_csv_copy(schema: str) -> None:
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric, note text")
    sink = PostgresSink(POSTGRES_URL, "t", schema=schema, columns=COLUMNS, format="csv")
    big = "y" * 10_000_000
    assert sink.write([f'1,1,"{big}"\n', "2,2,small\n"]) is None
    sink.close()
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT id, length(note) FROM {} ORDER BY id")
        found = conn.execute(query.format(sql.Identifier(schema, "t"))).fetchall()
    assert found == [(1, 10_000_000), (2, 5)]


# -- item 11: a lost store connection is transient ------------------------------------


def terminate(application_name: str) -> int:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s",
            (application_name,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_job_goes_on_when_its_postgres_store_connection_is_terminated(schema: str) -> None:
    name = f"store_{schema}"
    store = PostgresStore(
        f"{POSTGRES_URL}?options=-csearch_path%3D{schema}&application_name={name}"
    )
    written: list[int] = []
    killed: list[int] = []

    def sink(items: list[int], context: Any) -> None:
        if context.chunk_index in (2, 5):  # the store is idle between its calls
            killed.append(terminate(name))
        written.extend(items)

    report = Job("pg-store-lost", list(range(100)), sink, chunk_size=10, store=store).run()
    assert killed == [1, 1]
    assert report.status == "completed"
    assert report.summary["succeeded"] == 100
    assert sorted(written) == list(range(100))
    assert len(store.chunks(report.job_id)) == 10
    assert terminate(name) == 1  # it reconnected, and is connected now
    assert store.get_job(report.job_id) is not None  # a query after the loss reconnects
    store.close()


@pytest.mark.parametrize("key", [None, "id"])
def test_bad_rows_are_located_inside_the_jobs_shared_transaction(
    schema: str, key: str | None
) -> None:
    """The store in the sink's database: each chunk's rows and checkpoint commit in one
    transaction; locating bad rows runs in savepoints inside it."""
    create(schema, "t", "id bigint PRIMARY KEY, amount numeric NOT NULL, note text")
    conninfo = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    store = PostgresStore(conninfo)
    sink = PostgresSink(conninfo, "t", columns=COLUMNS, key=key)
    items = [(i, None if i % 7 == 3 else i, "n") for i in range(100)]
    report = Job("pg-shared", items, sink, chunk_size=30, store=store).run()
    sink.close()
    store.close()
    bad = [i for i in range(100) if i % 7 == 3]
    assert report.summary["failed"] == len(bad)
    assert [e["item"] for e in report["errors"]] == [f"item {i}" for i in bad]
    assert [r[0] for r in rows(schema)] == [i for i in range(100) if i % 7 != 3]


def test_a_store_connection_lost_inside_a_transaction_is_transient_then_reconnects(
    schema: str,
) -> None:
    name = f"store_tx_{schema}"
    store = PostgresStore(
        f"{POSTGRES_URL}?options=-csearch_path%3D{schema}&application_name={name}"
    )
    lost = pytest.raises(TransientError, match="lost the PostgreSQL store's connection")
    with lost, store.transaction() as tx:
        tx.query("SELECT 1 AS one")
        assert terminate(name) == 1
        tx.query("SELECT 1 AS one")  # the server rolled the transaction back
    assert store.query("SELECT 2 AS two") == [{"two": 2}]  # a new connection
    with store.transaction() as tx:
        assert tx.query("SELECT 3 AS three") == [{"three": 3}]
    store.close()
