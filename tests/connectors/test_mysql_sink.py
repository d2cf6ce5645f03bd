"""MysqlSink against the real MariaDB server: types, upserts, bad rows, table-level refusals."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freight import ConfigError, PermanentError, TargetError, TransientError
from tests.services import require

pymysql = pytest.importorskip("pymysql")

from freight.connectors.mysql import (  # noqa: E402 (after the extra's check)
    MAX_COLUMNS,
    MysqlSink,
    classify,
    create_table,
    quote_identifier,
    table_types,
)

SERVER = "mysql://root@127.0.0.1:3306"


def admin(database: str | None = None) -> Any:
    return pymysql.connect(
        host="127.0.0.1", port=3306, user="root", database=database, autocommit=True
    )


@pytest.fixture
def url() -> Iterator[str]:
    """A database of its own for the test, dropped after it."""
    require("127.0.0.1", 3306, "MariaDB")
    database = f"freight_mysql_{uuid.uuid4().hex[:10]}"
    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
    yield f"{SERVER}/{database}"
    with admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{database}`")


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with admin(url.rsplit("/", 1)[1]) as conn, conn.cursor() as cur:
        cur.execute(query)
        return list(cur.fetchall())


TYPES = {"id": "bigint", "amount": "numeric", "ok": "boolean", "at": "timestamptz", "note": "text"}


def test_typed_table_round_trips_its_freight_types(url: str) -> None:
    create_table(url, "typed", TYPES, key=("id",))
    assert table_types(url, "typed") == TYPES
    assert table_types(url, "missing") is None
    declared = rows(url, "SELECT column_name, column_type FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND table_name = 'typed' "
                    "ORDER BY ordinal_position")  # fmt: skip
    assert declared == [
        ("id", "bigint(20)"),
        ("amount", "decimal(65,30)"),
        ("ok", "tinyint(1)"),
        ("at", "datetime(6)"),
        ("note", "longtext"),
    ]


def test_a_text_key_column_is_a_varchar_and_a_longer_key_value_is_refused_not_cut(
    url: str,
) -> None:
    sink = MysqlSink(url, "tk", key="name", types={"name": "text", "n": "bigint"})
    outcomes = sink.write([{"name": "a" * 255, "n": "1"}, {"name": "b" * 256, "n": "2"}])
    assert outcomes is not None
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PermanentError)
    assert "Data too long for column 'name'" in str(outcomes[1])
    assert "at row" not in str(outcomes[1])  # a row of one statement, not of the file
    assert rows(url, "SELECT name FROM tk") == [("a" * 255,)]


def test_timestamptz_is_stored_in_utc(url: str) -> None:
    sink = MysqlSink(url, "ts", types={"at": "timestamptz"})
    assert sink.write([{"at": "2024-03-01T12:00:00+02:00"}]) is None
    assert rows(url, "SELECT at FROM ts") == [(datetime(2024, 3, 1, 10, 0),)]


def test_upsert_sets_only_the_columns_each_item_carries_and_the_last_value_wins(
    url: str,
) -> None:
    sink = MysqlSink(url, "up", key="id", types={"id": "bigint", "a": "text", "b": "text"})
    items = [
        {"id": "1", "a": "first", "b": "kept"},
        {"id": "2", "a": "x", "b": "y"},
        {"id": "1", "a": "second"},
        {"id": "1", "a": "last"},
    ]
    assert sink.write(items) is None
    assert rows(url, "SELECT id, a, b FROM up ORDER BY id") == [(1, "last", "kept"), (2, "x", "y")]


def test_identifiers_with_backticks_and_percent_signs_are_quoted(url: str) -> None:
    assert quote_identifier("a`b") == "`a``b`"
    sink = MysqlSink(url, "odd`name %s", key="k`ey")
    assert sink.write([{"k`ey": 1, "v%s": "x"}, {"k`ey": 1, "v%s": "y"}]) is None
    assert rows(url, "SELECT `k``ey`, `v%s` FROM `odd``name %s`") == [(1, "y")]


@pytest.mark.parametrize(
    ("value", "kind", "reason"),
    [
        ("NaN", "numeric", "column 'v': NaN is not a finite number"),
        ("inf", "numeric", "column 'v': Infinity is not a finite number"),
        ("a\x00b", "text", "column 'v': text fields cannot contain NUL (0x00) bytes"),
        ("9223372036854775808", "bigint", "column 'v': 9223372036854775808 is out of range"),
        ("1.0000000000000000000000000000001", "numeric", "has more digits than MariaDB's"),
        ("1e36", "numeric", "has more digits than MariaDB's DECIMAL(65,30)"),
        ("1." + "0" * 40, "numeric", None),  # trailing zeros: kept exactly
    ],
)
def test_a_value_the_target_would_alter_is_refused_with_the_same_reason_as_elsewhere(
    url: str, value: str, kind: str, reason: str | None
) -> None:
    sink = MysqlSink(url, "vals", types={"id": "bigint", "v": kind})
    outcomes = sink.write([{"id": "1", "v": value}, {"id": "2", "v": ""}])
    if reason is None:
        assert outcomes is None
        assert rows(url, "SELECT v = 1 FROM vals ORDER BY id") == [(1,), (None,)]
        return
    assert outcomes is not None
    assert isinstance(outcomes[0], PermanentError)
    assert reason in str(outcomes[0])
    assert outcomes[1] is None
    assert rows(url, "SELECT id FROM vals") == [(2,)]


def test_python_values_are_checked_too(url: str) -> None:
    sink = MysqlSink(url, "py")
    items = [
        {"f": 1.5, "d": Decimal("12345678901234567.89"), "t": datetime(2024, 1, 1, tzinfo=UTC)},
        {"f": float("nan"), "d": Decimal(1), "t": None},
        {"f": 2.5, "d": Decimal("1e-31"), "t": None},
    ]
    outcomes = sink.write(items)
    assert outcomes is not None
    assert outcomes[0] is None
    assert str(outcomes[1]) == "column 'f': NaN is not a finite number"
    assert "has more digits" in str(outcomes[2])
    assert rows(url, "SELECT f, d FROM py") == [(1.5, Decimal("12345678901234567.89"))]


def test_bad_rows_among_many_are_isolated_and_the_rest_commit(url: str) -> None:
    with admin(url.rsplit("/", 1)[1]) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE many (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
    sink = MysqlSink(url, "many")
    bad = {5, 77, 500, 999}
    items = [{"id": i, "n": None if i in bad else i} for i in range(1000)]
    outcomes = sink.write(items)
    assert outcomes is not None
    failed = {i for i, o in enumerate(outcomes) if o is not None}
    assert failed == bad
    assert all("cannot be null" in str(outcomes[i]) for i in bad)
    assert rows(url, "SELECT count(*), sum(n) FROM many") == [
        (996, Decimal(sum(range(1000)) - sum(bad)))
    ]


def test_a_field_every_item_carries_that_the_table_lacks_is_a_target_error(url: str) -> None:
    create_table(url, "narrow", {"a": "bigint"})
    sink = MysqlSink(url, "narrow")
    outcomes = sink.write([{"a": 1, "b": 2}, {"a": 2, "b": 3}])
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert "has no column(s) ['b']" in str(outcomes[0])
    mixed = sink.write([{"a": 1}, {"a": 2, "c": 3}])
    assert mixed is not None
    assert mixed[0] is None
    assert isinstance(mixed[1], PermanentError)
    assert not isinstance(mixed[1], TargetError)


def test_a_missing_database_is_a_target_error_for_every_item_never_dead_letters() -> None:
    require("127.0.0.1", 3306, "MariaDB")
    sink = MysqlSink(f"{SERVER}/freight_no_such_db_{uuid.uuid4().hex[:8]}", "t")
    outcomes = sink.write([{"a": 1}, {"a": 2}, {"a": 3}])
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert "Unknown database" in str(outcomes[0])


def test_too_many_columns_are_refused_before_creating(url: str) -> None:
    with pytest.raises(ConfigError, match="more than MariaDB allows"):
        create_table(url, "wide", {f"c{i}": "bigint" for i in range(MAX_COLUMNS + 1)})
    assert table_types(url, "wide") is None


def test_a_row_size_the_table_refuses_is_a_target_error(url: str) -> None:
    columns = {f"c{i}": "bigint" for i in range(MAX_COLUMNS)}  # 4,096 x 8 bytes: too big a row
    with pytest.raises(TargetError, match=r"Row size too large|Table definition is too large"):
        create_table(url, "wide", columns)


def test_an_unreachable_server_is_transient_and_a_bad_url_a_config_error() -> None:
    sink = MysqlSink("mysql://root@127.0.0.1:1/test", "t")
    with pytest.raises(TransientError, match=r"cannot reach MariaDB at 127\.0\.0\.1:1/test"):
        sink.write([{"a": 1}])
    with pytest.raises(ConfigError, match="expected mysql://"):
        MysqlSink("postgresql://root@127.0.0.1/test", "t")


def test_classify_maps_pymysql_errors() -> None:
    err = pymysql.err
    assert isinstance(classify(err.InterfaceError(0, "")), TransientError)
    assert isinstance(classify(err.OperationalError(2013, "Lost connection")), TransientError)
    assert isinstance(classify(err.OperationalError(1213, "Deadlock")), TransientError)
    assert isinstance(classify(err.ProgrammingError(1146, "Table 't' doesn't exist")), TargetError)
    assert isinstance(classify(err.OperationalError(1142, "denied")), TargetError)
    refused = classify(err.DataError(1406, "Data too long for column 'a' at row 3"))
    assert type(refused) is PermanentError
    assert str(refused) == "DataError (1406): Data too long for column 'a'"
    assert refused.__cause__ is not None
    plain = ValueError("x")
    assert classify(plain) is plain


def test_a_pickled_sink_writes_on_a_new_connection(url: str) -> None:
    sink = MysqlSink(url, "pk", key="id")
    assert sink.write([{"id": 1, "v": "a"}]) is None
    copy = pickle.loads(pickle.dumps(sink))
    assert copy.write([{"id": 1, "v": "b"}]) is None
    assert rows(url, "SELECT id, v FROM pk") == [(1, "b")]


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.text(max_size=3)), max_size=8), max_size=4
    )
)
def test_upserts_leave_the_last_value_of_each_key(url: str, writes: list[list[Any]]) -> None:
    table = f"h_{uuid.uuid4().hex[:8]}"
    sink = MysqlSink(url, table, key="k", types={"k": "bigint", "v": "text"})
    expected: dict[int, str | None] = {}
    for write in writes:
        items = [{"k": str(k), "v": v.replace("\x00", "")} for k, v in write]
        assert sink.write(items) is None
        expected.update((int(i["k"]), i["v"] or None) for i in items)  # "" is NULL
    sink.close()
    assert dict(rows(url, f"SELECT k, v FROM `{table}`")) == expected


def test_a_text_with_a_lone_surrogate_fails_its_row_alone(url: str) -> None:
    """A text UTF-8 cannot encode (a lone surrogate) cannot be sent: that row alone
    fails, saying so; the rows around it are written."""
    sink = MysqlSink(url, "t", key="id")
    items = [{"id": 1, "v": "ok"}, {"id": 2, "v": "bad \ud800"}, {"id": 3, "v": "fine"}]
    try:
        outcomes = sink.write(items)
    finally:
        sink.close()
    assert outcomes is not None
    assert [o is None for o in outcomes] == [True, False, True]
    assert isinstance(outcomes[1], PermanentError)
    assert "cannot be sent" in str(outcomes[1])
    assert rows(url, "SELECT id, v FROM t ORDER BY id") == [(1, "ok"), (3, "fine")]
