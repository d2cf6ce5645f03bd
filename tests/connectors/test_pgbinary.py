"""Which rows may go by binary COPY: a pure check, no server needed."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest

from freight.connectors._pgbinary import binary_columns, fits

TABLE = [
    ("i2", "smallint"), ("i4", "integer"), ("i8", "bigint"), ("n", "numeric"),
    ("f", "double precision"), ("b", "boolean"), ("s", "text"), ("v", "character varying"),
    ("tz", "timestamp with time zone"), ("ts", "timestamp without time zone"), ("d", "date"),
    ("u", "uuid"), ("raw", "bytea"), ("j", "jsonb"),
]  # fmt: skip
ALL = [name for name, _ in TABLE if name != "j"]
GOOD = (1, 2, 3, Decimal("1.5"), 0.5, True, "s", "v", datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1), date(2026, 1, 1), uuid4(), b"x")  # fmt: skip


def test_names_for_set_types_and_columns_without_a_binary_form() -> None:
    columns = binary_columns(TABLE, ALL)
    assert columns is not None
    assert columns.names[:4] == ["int2", "int4", "int8", "numeric"]
    assert binary_columns(TABLE, ["i8", "j"]) is None  # jsonb: text COPY
    assert binary_columns(TABLE, ["missing"]) is None


@pytest.mark.parametrize(
    ("column", "value", "ok"),
    [
        ("i2", 2**15, False), ("i2", -(2**15), True), ("i4", 2**31, False),
        ("i8", 2**63, False), ("i8", True, False), ("n", 5, True), ("n", Decimal("NaN"), False),
        ("n", 2**70, False), ("n", 1.5, False), ("f", 1, False), ("s", 1, False),
        ("tz", datetime(2026, 1, 1), False), ("ts", datetime(2026, 1, 1, tzinfo=UTC), False),
        ("d", datetime(2026, 1, 1), False), ("tz", "2026-01-01T00:00:00Z", False),
        ("u", str(uuid4()), False), ("raw", "x", False), ("s", None, True),
    ],
)  # fmt: skip
def test_a_value_that_does_not_fit_sends_the_rows_by_text(
    column: str, value: Any, ok: bool
) -> None:
    columns = binary_columns(TABLE, ALL)
    assert columns is not None
    row = list(GOOD)
    row[ALL.index(column)] = value
    assert fits([GOOD, tuple(row), GOOD], columns) is ok


def test_mixed_numeric_and_row_shapes() -> None:
    columns = binary_columns(TABLE, ["n", "s"])
    assert columns is not None
    assert fits([(Decimal(1), "a"), (2, None), (None, "c")], columns)
    assert not fits([(Decimal(1), "a"), (Decimal("Infinity"), "b"), (3, "c")], columns)
    assert not fits([(1, "a", "extra")], columns)
    assert not fits([], columns)
    assert fits([(None, None)], columns)
