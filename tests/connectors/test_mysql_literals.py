"""The CSV fast path of MysqlSink (typed texts straight to SQL literals) writes what the
general path writes (the converter, the value checks, PyMySQL's escaping), and refuses
what it refuses with the same reason. Pure: no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import PermanentError
from freight.connectors import pgtypes

pymysql = pytest.importorskip("pymysql")

from freight.connectors._mysqltypes import bind as _bind  # noqa: E402
from freight.connectors._mysqltypes import literals as _literals  # noqa: E402
from freight.connectors._mysqltypes import row_literal as _row_literal  # noqa: E402

TYPES = {"n": "bigint", "d": "numeric", "b": "boolean", "t": "timestamptz", "s": "text"}
TEXTS = st.one_of(
    st.sampled_from([
        "", "0", " 7 ", "-12", "1.5", "+.5", "5.", "NaN", "inf", "1e3", "1e40", "x", "true",
        "off", "9223372036854775808", "1." + "0" * 40, "0." + "0" * 29 + "1",
        "0." + "0" * 30 + "1", "2024-01-01T00:00:00+02:00", "2024-01-01T00:00:00",
        "2024-06-30T23:59:59.123456-07:30", "a'b\\c", "nu\x00l", "é",
    ]),
    st.text(max_size=6),
)  # fmt: skip


def general(item: dict[str, str]) -> str:
    """The general path: the converter, the checks, PyMySQL's own literal of the row."""
    try:
        converted = pgtypes.converter(TYPES)(item)
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    row = tuple(_bind(converted[c], c) for c in item)
    return str(pymysql.converters.escape_item(row, "utf8mb4"))


def outcome(make: Any, item: dict[str, str]) -> str:
    try:
        return f"ok {make(item)}"
    except PermanentError as exc:
        return f"refused {exc}"


@settings(max_examples=400, deadline=None)
@given(values=st.fixed_dictionaries(dict.fromkeys(TYPES, TEXTS)))
def test_the_fast_path_writes_and_refuses_as_the_general_path(values: dict[str, str]) -> None:
    literals = _literals(TYPES)

    def fast(item: dict[str, str]) -> str:
        found = _row_literal(item, literals)  # None: the sink takes the general path
        return general(item) if found is None else found

    assert outcome(fast, values) == outcome(general, values)
    if _row_literal(values, literals) is None:  # only a refused row leaves the fast path
        assert outcome(general, values).startswith("refused")


def test_values_that_are_not_all_texts_take_the_general_path() -> None:
    literals = _literals(TYPES)
    assert _row_literal({"n": 1}, literals) is None
    assert _row_literal({"other": "1"}, literals) is None
    assert _row_literal({"n": "1", "s": "a"}, literals) == "(1,'a')"


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
    ),
    minutes=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    spelling=st.sampled_from(["T", " "]),
)
def test_a_time_is_written_as_pymysql_writes_it_in_utc(
    moment: datetime, minutes: int, spelling: str
) -> None:
    zone = timezone(timedelta(minutes=minutes))
    text = moment.replace(tzinfo=zone).isoformat(spelling)
    literal = _literals({"t": "timestamptz"})["t"]
    expected = pymysql.converters.escape_datetime(
        datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)
    )
    assert literal(text) == expected
