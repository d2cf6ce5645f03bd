"""A COPY refused for a key the table (or the write) has already: the rows that index
refuses are found in one query (``_pgdups``), with the server's own reasons, instead of
one failed statement each. Each row must end exactly as the rule of a write ends it: the
same rows in the table, the same refusals. Against the real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from freight.connectors import _pgdups
from freight.connectors.postgres import PostgresSink
from tests.connectors.test_postgres_lines_copy import copies_sent
from tests.services import POSTGRES_URL, require

# Tables a write's duplicates are found for in one query, and tables they are not
# (another unique index, a trigger): both must end as the rule of a write ends them.
TABLES = {
    "key": "a int PRIMARY KEY, b text, c varchar(3)",
    "pair": "a int, b text, c varchar(3), UNIQUE (a, b)",
    "checked": "a int PRIMARY KEY, b text, c varchar(3) CHECK (c <> 'no')",
    "two unique": "a int PRIMARY KEY, b text UNIQUE, c varchar(3)",
    "text key": "a int, b text PRIMARY KEY, c varchar(3)",
}
COLUMNS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_dups_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def fresh(schema: str, table: str, body: str, existing: list[str]) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        target = sql.Identifier(schema, table)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        conn.execute(sql.SQL("CREATE TABLE {} (" + body + ")").format(target))
        with (
            conn.cursor() as cur,
            cur.copy(sql.SQL("COPY {} (a, b, c) FROM STDIN (FORMAT csv)").format(target)) as copy,
        ):
            copy.write("".join(existing))


def rows(schema: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT a, b, c FROM {} ORDER BY a, b, c").format(
            sql.Identifier(schema, table)
        )
        return conn.execute(query).fetchall()


def written(schema: str, table: str, texts: list[str]) -> list[str | None]:
    sink = PostgresSink(POSTGRES_URL, table, schema=schema, format="csv", columns=COLUMNS)
    try:
        outcomes = sink.write(list(texts))
    finally:
        sink.close()
    if outcomes is None:
        return [None] * len(texts)
    # the table's and its indexes' names: the same in both tables' refusals
    return [o and str(o).replace(f'"{table}', '"t') for o in outcomes]


def _rule_only(*args: Any, **kwargs: Any) -> None:
    """The rule of a write alone: no duplicates found in one query."""


LINE = st.builds(
    lambda a, b, c: f"{a},{b},{c}\n",
    st.integers(0, 6), st.sampled_from(["x", "y", ""]), st.sampled_from(["ok", "no", "long"]),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(sorted(TABLES)),
    existing=st.lists(LINE, max_size=4),
    texts=st.lists(LINE, min_size=1, max_size=12),
)
@example(kind="checked", existing=["0,x,ok\n"], texts=["0,x,ok\n", "0,y,no\n", "1,z,ok\n"])
@example(kind="pair", existing=["0,x,ok\n"], texts=["0,x,ok\n", "0,,ok\n", "0,,ok\n"])
@example(kind="key", existing=["0,x,ok\n"], texts=["0,x,ok\n", "2,y,long\n", "0,y,ok\n"])
def test_property_a_write_meeting_keys_again_ends_as_the_rule_of_a_write_ends_it(
    schema: str, monkeypatch: pytest.MonkeyPatch, kind: str, existing: list[str], texts: list[str]
) -> None:
    body = TABLES[kind]
    try:
        fresh(schema, "found", body, existing)
    except psycopg.Error:
        return  # rows the table itself refuses: no starting state
    fresh(schema, "rule", body, existing)
    found = written(schema, "found", texts)
    with monkeypatch.context() as patched:
        patched.setattr(_pgdups, "found_duplicates", _rule_only)
        rule = written(schema, "rule", texts)
    assert found == rule
    assert rows(schema, "found") == rows(schema, "rule")


def test_a_write_of_keys_the_table_has_is_refused_in_a_few_statements(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the same rows again: 250 refusals found by one query, not 250 statements
    (COPYs are counted as sent: a counting trigger would make the table not eligible)."""
    lines = [f"{i},b{i},ok\n" for i in range(500)]
    fresh(schema, "again", TABLES["key"], lines[::2])
    sent = copies_sent(monkeypatch)
    outcomes = written(schema, "again", lines)
    assert [o is None for o in outcomes] == [i % 2 == 1 for i in range(500)]
    assert outcomes[0] == (
        'UniqueViolation: duplicate key value violates unique constraint "t_pkey"; '
        "Key (a)=(0) already exists."
    )
    assert len(rows(schema, "again")) == 500
    # the refused COPY, the one into the temporary table, then the other rows
    assert len(sent) == 3
    assert "freight_dups_" in sent[1]


def test_a_row_a_check_refuses_keeps_that_reason_past_copys_first_batch(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COPY checks a row's constraints as it reads it and its keys a batch (~1,000 rows)
    at a time: a duplicate key early and a row breaking a check in a later batch fail on
    the key first. That row must still be refused for the check, as the rule says."""
    lines = ["0,x,ok\n", *(f"{i},x,ok\n" for i in range(1, 1_500))]
    lines[1_200] = "0,y,no\n"  # its key again, and a value the check refuses
    fresh(schema, "found", TABLES["checked"], ["0,x,ok\n"])
    fresh(schema, "rule", TABLES["checked"], ["0,x,ok\n"])
    found = written(schema, "found", lines)
    with monkeypatch.context() as patched:
        patched.setattr(_pgdups, "found_duplicates", _rule_only)
        rule = written(schema, "rule", lines)
    assert found == rule
    assert (found[1_200] or "").startswith("CheckViolation")
    assert rows(schema, "found") == rows(schema, "rule")


def _same(schema: str, monkeypatch: pytest.MonkeyPatch, setup: str, texts: list[str]) -> None:
    """``texts`` written into ``found`` and ``rule`` (each made by ``setup``, ``{t}`` its
    name): the same refusals and rows either way."""
    ends = []
    for table, rule in (("found", False), ("rule", True)):
        target, child = sql.Identifier(schema, table), sql.Identifier(schema, f"{table}_child")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(target))
            conn.execute(setup.format(t=target.as_string(conn), c=child.as_string(conn)))
        with monkeypatch.context() as patched:
            if rule:
                patched.setattr(_pgdups, "found_duplicates", _rule_only)
            ends.append((written(schema, table, texts), rows(schema, table)))
    assert ends[0] == ends[1]


@pytest.mark.parametrize(
    ("setup", "texts"),
    [
        # found by the second review: each ended otherwise than the rule of a write
        ("CREATE TABLE {t} (a int, b boolean, c text, UNIQUE (a, b));"
         "INSERT INTO {t} VALUES (1, true, 'x')", ["1,t,y\n", "1,true,z\n"]),  # t, not true
        ("CREATE TABLE {t} (a char(5) PRIMARY KEY, b text, c text);"
         "INSERT INTO {t} VALUES ('ab', 'x', 'y')", ["ab,y,z\n", "ab,w,z\n"]),  # padded
        ("CREATE TABLE {t} (a inet PRIMARY KEY, b text, c text);"
         "INSERT INTO {t} VALUES ('10.0.0.1', 'x', 'y')", ["10.0.0.1,y,z\n", "10.0.0.1/32,w,z\n"]),
        ("CREATE TABLE {t} (a int PRIMARY KEY, b text, c text);"  # a child's row: not a key
         "CREATE TABLE {c} () INHERITS ({t}); INSERT INTO {c} VALUES (5, 'c', 'c');"
         "INSERT INTO {t} VALUES (1, 'x', 'x')", ["1,y,y\n", "5,z,z\n"]),
        ("CREATE TABLE {t} (a text PRIMARY KEY, b text, c text);"  # a key too long to index
         "INSERT INTO {t} VALUES ('k', 'x', 'x')", ["k,y,y\n", f"{'v' * 9000},m,m\n", "m,2,2\n",
                                                     f"{'v' * 9000},n,n\n"]),
        ("CREATE TABLE {t} (a int PRIMARY KEY, b numeric, c text);"  # refused before COPY
         "INSERT INTO {t} VALUES (1, 1, 'x'), (2, 2, 'x')",
         ["1,1,y\n", "3,NaN,y\n", "2,2,y\n", "4,4,y\n", "4,5,y\n"]),
        ("CREATE TABLE {t} (a int PRIMARY KEY, b text, c text);"  # a text of two records
         "INSERT INTO {t} VALUES (1, 'x', 'x')",
         ["1,y,y\n", "3,a,a\n4,b,b\n", "4,c,c\n", "5,d,d\n"]),
    ],
)  # fmt: skip
def test_a_write_meeting_keys_again_ends_as_the_rule_ends_it_for_these_tables(
    schema: str, monkeypatch: pytest.MonkeyPatch, setup: str, texts: list[str]
) -> None:
    _same(schema, monkeypatch, setup, texts)
