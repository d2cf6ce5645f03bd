"""Column type inference, overrides and typed conversion for PostgreSQL loads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from freight import ConfigError
from freight.connectors.pgtypes import converter, infer_types, parse_types


def test_inference_picks_the_most_specific_type_tolerating_a_few_bad_values() -> None:
    rows = [
        {"id": str(i), "amount": f"{i}.5", "ok": "true" if i % 2 else "false",
         "at": f"2026-01-0{i % 9 + 1}T10:00:00+00:00", "note": f"n{i}", "empty": ""}
        for i in range(200)
    ]  # fmt: skip
    rows.append({"id": "201", "amount": "oops", "ok": "true", "at": "2026-01-01T00:00:00+00:00",
                 "note": "x", "empty": ""})  # fmt: skip
    types = infer_types(["id", "amount", "ok", "at", "note", "empty"], rows)
    assert types == {
        "id": "bigint", "amount": "numeric", "ok": "boolean", "at": "timestamptz",
        "note": "text", "empty": "text",
    }  # fmt: skip
    assert infer_types(["n"], [{"n": str(2**70)}]) == {"n": "numeric"}
    assert infer_types(["d"], [{"d": "2026-01-01T00:00:00"}]) == {"d": "text"}  # no time zone
    assert infer_types(["j"], [{"j": True}, {"j": 3}]) == {"j": "text"}


def test_converter_types_values_and_names_the_bad_column() -> None:
    convert = converter({"id": "bigint", "amount": "numeric", "at": "timestamptz", "ok": "bool"})
    assert convert({"id": "7", "amount": "1.25", "at": "2026-05-01T00:00:00+00:00", "ok": "f"}) == {
        "id": 7, "amount": Decimal("1.25"), "at": datetime(2026, 5, 1, tzinfo=UTC), "ok": False,
    }  # fmt: skip
    assert convert({"id": "", "amount": None, "at": "", "ok": ""})["id"] is None
    with pytest.raises(ValueError, match="column 'amount'"):
        convert({"id": "1", "amount": "NaN", "at": "", "ok": ""})
    with pytest.raises(ValueError, match="out of range for bigint"):
        convert({"id": str(2**64), "amount": "", "at": "", "ok": ""})


def test_type_overrides_are_validated() -> None:
    assert parse_types("amount=numeric, seen = timestamptz,n=int") == {
        "amount": "numeric", "seen": "timestamptz", "n": "bigint",
    }  # fmt: skip
    assert parse_types(None) == {}
    with pytest.raises(ConfigError, match="unsupported column type"):
        parse_types("a=money")
    with pytest.raises(ConfigError, match="COLUMN=TYPE"):
        parse_types("a")
