"""A clean write of plain CSV lines goes to PostgreSQL as COPY's text format with CSV's
delimiter and NULL (less server CPU): it must load exactly what the CSV format loads,
and refuse exactly what it refuses. Against the real server."""

from __future__ import annotations

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

from freight.connectors.postgres import PostgresSink
from freight.jobs import CsvSource, Job
from freight.jobs._sink import WriteContext
from freight.store import SqliteStore
from tests.connectors.test_postgres_integrity import count_statements, statements
from tests.services import POSTGRES_URL, require

BODY = "id bigint PRIMARY KEY, name text, amount numeric, note text"
COLUMNS = ["id", "name", "amount", "note"]


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_lines_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        for table in ("ours", "csv"):
            conn.execute(
                sql.SQL("CREATE TABLE {} (" + BODY + ")").format(sql.Identifier(name, table))
            )
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def emptied(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}, {}").format(
            sql.Identifier(schema, "ours"), sql.Identifier(schema, "csv")
        ))  # fmt: skip


def rows(schema: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(schema, table))
        return conn.execute(query).fetchall()


def csv_copy(schema: str, text: str) -> None:
    """The same text by COPY's CSV format, as before (the reference)."""
    with psycopg.connect(POSTGRES_URL) as conn, conn.cursor() as cur:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(schema, "csv"), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )
        with cur.copy(statement) as copy:
            copy.write(text)


# Fields without a quote (plain CSV), with what the text format would read its own way:
# backslashes (escapes, \N), spaces, tabs, empty fields (NULL), non-ASCII.
FIELD = st.text(alphabet=st.sampled_from(list("ab \\N\tt.é7")), max_size=6)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(FIELD, st.integers(0, 99), FIELD), min_size=1, max_size=8))
def test_property_plain_lines_load_as_the_csv_format_loads_them(
    schema: str, fields: list[tuple[str, int, str]]
) -> None:
    emptied(schema)
    texts = [f"{i},{name},{amount},{note}\n" for i, (name, amount, note) in enumerate(fields)]
    sink = PostgresSink(POSTGRES_URL, "ours", schema=schema, format="csv", columns=COLUMNS)
    try:
        assert sink.write(texts) is None
    finally:
        sink.close()
    csv_copy(schema, "".join(texts))
    assert rows(schema, "ours") == rows(schema, "csv")


def copies_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The COPY statements psycopg sends from now on, as text (kept as they are sent)."""
    sent: list[str] = []
    copy = psycopg.Cursor.copy

    def spy(self: psycopg.Cursor[Any], statement: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(statement.as_string(self.connection))
        return copy(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy)
    return sent


def test_a_clean_write_without_backslashes_is_sent_in_text_format(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast form is used where it may be, and only there."""
    emptied(schema)
    sent = copies_sent(monkeypatch)
    sink = PostgresSink(POSTGRES_URL, "ours", schema=schema, format="csv", columns=COLUMNS)
    try:
        assert sink.write(["1,a,1,\n", "2,,2,b\n"]) is None
        assert sink.write(["3,a\\b,3,\n"]) is None  # a backslash: the CSV format
        assert sink.write(['4,"q",4,\n']) is None  # a quote: the CSV format
    finally:
        sink.close()
    assert ["FORMAT text" in s for s in sent] == [True, False, False]
    assert all("DELIMITER ','" in s and "NULL ''" in s for s in sent[:1])
    assert rows(schema, "ours") == [
        (1, "a", 1, None), (2, None, 2, "b"), (3, "a\\b", 3, None), (4, "q", 4, None)
    ]  # fmt: skip


def csv_refusal(schema: str, text: str) -> str:
    """What the CSV format says of ``text``."""
    with pytest.raises(psycopg.Error) as caught:
        csv_copy(schema, text)
    return str(caught.value).splitlines()[0]


TYPED = "column 'amount': '1e' is not a number"  # the converter's reason, as on SQLite


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,a\rb,1,x\n", None),  # None: the CSV format's own
        ("1,a,1\n", None),
        ("1,a,1,x,y\n", None),
        ("1,a,1e,x\n", TYPED),
        ("1,a\\,1e,x\n", TYPED),
    ],
)
def test_a_refused_line_has_the_csv_formats_reason(
    schema: str, line: str, reason: str | None
) -> None:
    emptied(schema)
    sink = PostgresSink(POSTGRES_URL, "ours", schema=schema, format="csv", columns=COLUMNS)
    try:
        outcomes = sink.write([line, "2,b,2,y\n"])
    finally:
        sink.close()
    assert outcomes is not None
    assert outcomes[1] is None
    assert (reason or csv_refusal(schema, line)) in str(outcomes[0])
    assert [r[0] for r in rows(schema, "ours")] == [2]


# -- lines as one text: the job engine's fast path -------------------------------------


def write_lines(schema: str, text: bytes, **options: Any) -> bool:
    sink = PostgresSink(POSTGRES_URL, "ours", schema=schema, format="csv", columns=COLUMNS,
                        **options)  # fmt: skip
    try:
        return sink._write_lines(text, WriteContext("job", 0))
    finally:
        sink.close()


def test_clean_lines_given_as_one_text_go_in_by_one_copy(schema: str) -> None:
    emptied(schema)
    assert write_lines(schema, "1,a,1.5,\n2,é,,x\n".encode())
    assert rows(schema, "ours") == [(1, "a", Decimal("1.5"), None), (2, "é", None, "x")]


@pytest.mark.parametrize(
    "text",
    [
        b"1,a,1,x\n2,b,NaN,y\n",  # refused by the check (as on SQLite)
        b"1,a,1,x\n2,b,1e,y\n",  # refused by the server
        b"1,a,1,x\n1,b,2,y\n",  # a key twice
        b"1,a,1,x\n2,b\n",  # a short line
        b'1,"a",1,x\n',  # a quote: not plain lines
    ],
)
def test_lines_given_as_one_text_go_in_all_or_none(schema: str, text: bytes) -> None:
    emptied(schema)
    assert not write_lines(schema, text)
    assert rows(schema, "ours") == []


def test_an_upsert_takes_no_lines_as_one_text(schema: str) -> None:
    emptied(schema)
    assert not write_lines(schema, b"1,a,1,x\n", mode="upsert", key=["id"])
    assert rows(schema, "ours") == []


def test_lines_reach_a_connection_of_another_client_encoding_as_their_text(
    schema: str, tmp_path: Path
) -> None:
    """Found by review: the one text is UTF-8 bytes, and went to COPY as they are where
    the connection's client encoding was LATIN1 (``café`` stored as ``cafÃ©``)."""
    emptied(schema)
    path = tmp_path / "enc.csv"
    path.write_text("id,name,amount,note\n1,café,1,naïve\n2,b,2,c\n", encoding="utf-8")
    url = POSTGRES_URL + ("&" if "?" in POSTGRES_URL else "?") + "client_encoding=LATIN1"
    sink = PostgresSink(url, "ours", schema=schema, format="csv", columns=COLUMNS)
    report = Job("enc", CsvSource(path, raw=True), sink, store=SqliteStore(tmp_path / "s.db")).run()
    assert report.summary["succeeded"] == 2
    assert rows(schema, "ours") == [(1, "café", 1, "naïve"), (2, "b", 2, "c")]


def test_a_chunk_with_a_row_only_the_server_refuses_is_not_sent_twice(
    schema: str, tmp_path: Path
) -> None:
    """Found by review: the one text's COPY failed (a name too long for its column, which
    no check before COPY sees), then the chunk's texts were sent again whole before the
    bad row was looked for. The failed COPY is the texts' first try: 2 statements."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, name varchar(3), "
                             "amount numeric, note text)").format(
            sql.Identifier(schema, "short")))  # fmt: skip
    count_statements(schema, "short")
    path = tmp_path / "long.csv"
    names = ["abc"] * 10
    names[4] = "too long"
    path.write_text(
        "id,name,amount,note\n" + "".join(f"{i},{n},{i},x\n" for i, n in enumerate(names))
    )
    sink = PostgresSink(POSTGRES_URL, "short", schema=schema, format="csv", columns=COLUMNS)
    report = Job(
        "long", CsvSource(path, raw=True), sink, store=SqliteStore(tmp_path / "s.db")
    ).run()
    assert (report.summary["succeeded"], report.summary["failed"]) == (9, 1)
    assert [r[0] for r in rows(schema, "short")] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    # the one text's COPY (refused at the 5th row), then the other rows
    assert statements(schema) == 2
