"""The CSV fast path's check (``_pgerrors.unreadable``): a value it lets through to COPY
is read by the server as the converter reads it, or refused by both; a value it
refuses gets the converter's reason (the one a SQLite target gives)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight.connectors import pgtypes
from freight.connectors._pgerrors import (
    _plain_records,
    non_finite,
    refused_before_copy,
    trusted_refusals,
    unreadable,
)
from tests.services import POSTGRES_URL, require

TIMESTAMPTZ = "timestamp with time zone"


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    require("127.0.0.1", 5432, "PostgreSQL")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute("SET TIME ZONE 'America/New_York'")  # not UTC: zones matter
        yield connection


def server_reads(conn: psycopg.Connection[Any], text: str, kind: str) -> object:
    """What the server stores for ``text`` in a column of ``kind``, or None: refused."""
    try:
        row = conn.execute(f"SELECT %s::text::{kind}", (text,)).fetchone()
    except psycopg.Error:
        return None
    except ValueError:  # psycopg cannot read it back (infinity)
        return "unreadable by psycopg"
    assert row is not None
    return row[0]


def converter_reads(text: str, kind: str) -> object:
    try:
        return pgtypes.TYPES[pgtypes.canonical(kind)](text)
    except ValueError:
        return None


digits = st.text("0123456789", min_size=1, max_size=3)
pieces = st.sampled_from(
    ["2024", "-", "01", "12", "31", "T", " ", "10", "23", "24", ":", "00", "59", "60", ".",
     "123456", "1234567", "Z", "+00", "+05:30", "-08", "PST", "now", "epoch", "infinity",
     "Jan", "1", "/", "allballs", "today"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(pieces, digits), min_size=1, max_size=12).map("".join))
def test_a_time_let_through_is_read_alike_or_refused_by_both(
    conn: psycopg.Connection[Any], text: str
) -> None:
    refused = unreadable(["at"], [f"{text}\n"], [TIMESTAMPTZ])
    mine = converter_reads(text, "timestamptz")
    if refused:
        assert mine is None
        assert str(refused[0]).startswith("column 'at': ")
        return
    theirs = server_reads(conn, text, "timestamptz")
    if mine is None:
        assert theirs is None, (text, theirs)
    else:
        assert isinstance(theirs, datetime)
        assert theirs == mine, text


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        (TIMESTAMPTZ, "now", "column 'at': Invalid isoformat string: 'now'"),
        (TIMESTAMPTZ, "epoch", "column 'at': Invalid isoformat string: 'epoch'"),
        (TIMESTAMPTZ, "2024-01-01T24:00:00+00:00", "column 'at': hour must be in 0..23"),
        ("bigint", "1_000", "column 'at': invalid literal for int() with base 10: '1_000'"),
        ("numeric", "NaN", "column 'at': NaN is not a finite number"),
        ("date", "epoch", "column 'at': 'epoch' is not a date (YYYY-MM-DD)"),
        ("date", "today", "column 'at': 'today' is not a date (YYYY-MM-DD)"),
    ],
)
def test_a_value_the_server_would_read_its_own_way_gets_the_converters_reason(
    kind: str, text: str, reason: str
) -> None:
    texts = ["1,2024-01-01T00:00:00Z\n", f'2,"{text}"\n', "3,\n"]
    types = ["bigint", kind if kind != "date" else "date"]
    if kind != TIMESTAMPTZ:
        texts = ["1,1\n", f"2,{text}\n", "3,\n"] if kind != "date" else [
            "1,2024-01-01\n", f"2,{text}\n", "3,\n"]  # fmt: skip
    refused = unreadable(["id", "at"], texts, types)
    assert list(refused) == [1]
    assert str(refused[1]) == reason


def test_a_clean_write_and_quoted_newlines_are_let_through() -> None:
    texts = ['1,"a\nb, ""c""",2024-01-01 10:00:00.5+05:30,t,1.5e3\n', "2,,,,\r\n"]
    types = ["bigint", "text", TIMESTAMPTZ, "boolean", "numeric"]
    assert unreadable(["id", "note", "at", "ok", "n"], texts, types) == {}


def test_numbers_are_checked_from_postgresql_16_which_reads_1_000_as_a_number() -> None:
    texts = ["1,1.5\n", "2,1_000\n"]
    assert unreadable(["id", "n"], texts, ["bigint", "numeric"], server_version=150020) == {}
    refused = unreadable(["id", "n"], texts, ["bigint", "numeric"], server_version=160004)
    assert str(refused[1]) == "column 'n': '1_000' is not a number"


def test_without_quotes_the_fields_after_the_last_time_are_not_read() -> None:
    types = [TIMESTAMPTZ, "text", "numeric"]
    clean = ["2024-01-01T00:00:00Z,a,x\n", "2024-01-01 10:00+01,b,1\n"]
    assert unreadable(["at", "note", "n"], clean, types, server_version=150020) == {}
    odd = [*clean, 'now,"c\nd",2\n']
    refused = unreadable(["at", "note", "n"], odd, types, server_version=150020)
    assert list(refused) == [2]


# -- both checks in one pass (refused_before_copy) ------------------------------------------

KINDS = ["bigint", "text", "numeric", "double precision", "date", TIMESTAMPTZ, "boolean"]
fields = st.one_of(
    st.sampled_from(
        ["", "1", "-2.5e3", "1_000", "NaN", "nan", "Infinity", "-inf", "x", "2024-01-31",
         "2024-01-31T10:00:00Z", "2024-01-31 10:00", "now", "epoch", '"1.5"', '"NaN"',
         '"a,\nb"', "t", " 1"]
    ),
    st.text("0123456789.-+eE", max_size=4),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4).flatmap(
        lambda types: st.tuples(
            st.just(types),
            st.lists(
                st.lists(fields, min_size=len(types), max_size=len(types)).map(",".join),
                min_size=1,
                max_size=5,
            ),
            st.sampled_from([150020, 160004]),
            st.sampled_from(["\n", "\r\n"]),
        )
    )
)
def test_one_pass_refuses_exactly_what_unreadable_and_non_finite_refuse(
    case: tuple[list[str], list[str], int, str],
) -> None:
    types, records, version, end = case
    columns = [f"c{i}" for i in range(len(types))]
    texts = [record + end for record in records]
    one_pass = _plain_records(
        tuple(types), numbers=version >= 160000, quotes='"' in "".join(texts), finite=True
    )
    if one_pass is None or one_pass.fullmatch("".join(texts)):
        both: dict[int, Exception] = {}  # nothing to check here, or proved clean in one pass
        assert unreadable(columns, texts, types, server_version=version) == {}
        assert non_finite(columns, texts, types) == {}
    else:  # read record by record, with PostgreSQL 16's rules on any server
        both = {
            **unreadable(columns, texts, types, server_version=160004),
            **non_finite(columns, texts, types),
        }
    one = refused_before_copy(columns, texts, types, server_version=version)
    assert {i: str(e) for i, e in one.items()} == {i: str(e) for i, e in both.items()}


def test_a_nan_in_a_numeric_column_is_refused_before_postgresql_16_too() -> None:
    texts = ["1,1.5,2024-01-01T00:00:00Z\n", "2,NaN,2024-01-01T00:00:00Z\n", "3,2,now\n"]
    types = ["bigint", "numeric", TIMESTAMPTZ]
    refused = refused_before_copy(["id", "n", "at"], texts, types, server_version=150020)
    assert {i: str(e) for i, e in refused.items()} == {
        1: "column 'n': NaN is not a finite number",
        2: "column 'at': Invalid isoformat string: 'now'",
    }


def test_an_infinity_in_a_float_column_goes_in_and_a_clean_write_is_let_through() -> None:
    types = ["bigint", "double precision", "numeric"]
    texts = ["1,-Infinity,1e3\n", "2,2.5,-0.5\n"]
    assert refused_before_copy(["id", "f", "n"], texts, types, server_version=150020) == {}
    assert refused_before_copy(["id", "f", "n"], texts[1:], types) == {}


# -- lines trusted to hold their fields (lines=True), proved by the COPY ------------------

unquoted = fields.filter(lambda f: '"' not in f and "\n" not in f)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=5).flatmap(
        lambda types: st.tuples(
            st.just(types),
            st.lists(
                st.lists(unquoted, min_size=len(types), max_size=len(types)).map(",".join),
                min_size=1,
                max_size=6,
            ),
            st.sampled_from([150020, 160004]),
        )
    )
)
def test_lines_of_their_fields_are_refused_alike_trusted_or_not(
    case: tuple[list[str], list[str], int],
) -> None:
    types, records, version = case
    columns = [f"c{i}" for i in range(len(types))]
    texts = [record + "\n" for record in records]
    trusted = refused_before_copy(columns, texts, types, server_version=version, lines=True)
    checked = refused_before_copy(columns, texts, types, server_version=version)
    assert {i: str(e) for i, e in trusted.items()} == {i: str(e) for i, e in checked.items()}


def test_a_short_line_can_hide_a_value_from_the_trusting_check() -> None:
    """Why the sink proves the lines by a COPY: read as if each line held its five
    fields, '7,a' and the next line make one record, and 'now' falls outside the
    checked columns."""
    texts = ["7,a\n", "8,2.5,,now,z\n"]
    types = ["bigint", "text", "numeric", TIMESTAMPTZ, "text"]
    columns = ["id", "name", "amount", "at", "note"]
    assert refused_before_copy(columns, texts, types, server_version=150020, lines=True) == {}
    refused = refused_before_copy(columns, texts, types, server_version=150020)
    assert {i: str(e) for i, e in refused.items()} == {
        1: "column 'at': Invalid isoformat string: 'now'"
    }


def test_only_a_clean_answer_of_the_one_pass_pattern_rests_on_trust() -> None:
    """The sink tries a COPY to prove the lines, and checks again if it fails, only
    when the answer rests on trust: a write the pattern stops short on is read record
    by record (exact), and is not checked twice."""
    columns, types = ["id", "n", "at"], ["bigint", "numeric", TIMESTAMPTZ]
    clean = ["1,1.5,2024-01-01T00:00:00Z\n", "2,2,\n"]
    assert trusted_refusals(columns, clean, types, server_version=150020) == ({}, True)
    # 'x' stops the pattern; read record by record, it is refused before COPY on any
    # server (PostgreSQL 15 refuses it too, with a failed COPY for each such row)
    odd = [*clean, "3,x,\n"]
    refused, trusted = trusted_refusals(columns, odd, types, server_version=150020)
    assert ({i: str(e) for i, e in refused.items()}, trusted) == (
        {2: "column 'n': 'x' is not a number"},
        False,
    )
    now = [*clean, "3,1,now\n"]
    refused, trusted = trusted_refusals(columns, now, types, server_version=150020)
    assert (list(refused), trusted) == ([2], False)
    quoted = [*clean, '3,"1",\n']  # with quotes, fields are read as COPY splits them
    assert trusted_refusals(columns, quoted, types, server_version=150020) == ({}, False)
    assert trusted_refusals(["a"], ["x\n"], ["text"]) == ({}, False)  # nothing to check
    assert trusted_refusals(columns, clean, types, lines=False) == ({}, False)


def test_an_integer_with_thousands_of_leading_zeros_is_read_as_the_server_reads_it(
    conn: psycopg.Connection[Any],
) -> None:
    """Python's int() refuses more than 4,300 digits; the server reads 00…07 as 7."""
    padded = "0" * 5_000 + "7"
    assert converter_reads(padded, "bigint") == server_reads(conn, padded, "bigint") == 7
    assert converter_reads("-" + padded, "bigint") == -7
    assert converter_reads("1" + "0" * 19, "bigint") is None  # out of range, as there
    assert server_reads(conn, "1" + "0" * 19, "bigint") is None
