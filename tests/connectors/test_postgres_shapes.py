"""PostgresSink and AsyncPostgresSink with items of different shapes (issue 11 follow-up).

Items without ``columns=`` are written in runs of the same fields, in order, each run
with its own column list, all in one transaction: no field is dropped, a column an item
does not carry keeps its value on an upsert and gets the table's default on a new row,
and the last value of a key still wins. A field the table lacks, or one outside
``columns=``, fails its item with a reason naming it; when every item carries it, the
target refuses the write (a TargetError), as it did before.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from freight import PermanentError, TargetError
from freight.connectors._isolate import Run, segments
from freight.connectors.postgres import AsyncPostgresSink, Mode, PostgresSink
from tests.services import POSTGRES_URL, require

PEOPLE = "id bigint PRIMARY KEY, name text DEFAULT 'anon', email text, tier text DEFAULT 'free'"
EXISTING = "INSERT INTO {} VALUES (1, 'ann', 'ann@x', 'gold'), (2, 'bob', 'bob@x', 'gold')"
MODES: list[Mode] = ["copy", "insert", "upsert"]
DEFAULTS: dict[str, Any] = {"name": "anon", "email": None, "tier": "free"}


@pytest.fixture
def schema() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    name = f"freight_shapes_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE TABLE {} (" + PEOPLE + ")").format(table(name)))
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def table(schema: str, name: str = "people") -> sql.Identifier:
    return sql.Identifier(schema, name)


def existing(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL(EXISTING).format(table(schema)))


def people(schema: str, name: str = "people") -> list[tuple[Any, ...]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT * FROM {} ORDER BY id").format(table(schema, name))
        return conn.execute(query).fetchall()


def sink(schema: str, mode: Mode, **options: Any) -> PostgresSink:
    key = "id" if mode == "upsert" else None
    return PostgresSink(POSTGRES_URL, "people", schema=schema, mode=mode, key=key, **options)


def failed(outcomes: list[Any] | None) -> dict[int, str]:
    """The failed items' places and reasons."""
    return {i: str(o) for i, o in enumerate(outcomes or []) if o is not None}


# -- no field is dropped ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_items_of_two_shapes_keep_every_field_in_every_mode(schema: str, mode: Mode) -> None:
    writer = sink(schema, mode)
    outcomes = writer.write([{"id": 1, "name": "Ann"}, {"id": 2, "email": "b@y"}])
    writer.close()
    assert outcomes is None
    assert people(schema) == [
        (1, "Ann", None, "free"),
        (2, "anon", "b@y", "free"),  # 'b@y' kept; name and tier: the table's defaults
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_the_async_sink_keeps_every_field_in_every_mode(schema: str, mode: Mode) -> None:
    key = "id" if mode == "upsert" else None
    writer = AsyncPostgresSink(POSTGRES_URL, "people", schema=schema, mode=mode, key=key)
    outcomes = await writer.write(
        [{"id": 1, "name": "Ann"}, {"id": 2, "email": "b@y"}, {"id": 3, "name": "c"}]
    )
    await writer.aclose()
    assert outcomes is None
    assert people(schema) == [
        (1, "Ann", None, "free"),
        (2, "anon", "b@y", "free"),
        (3, "c", None, "free"),
    ]


def test_an_upsert_sets_only_the_columns_each_item_carries(schema: str) -> None:
    existing(schema)
    writer = sink(schema, "upsert")
    assert writer.write([{"id": 1, "name": "Ann"}, {"id": 2, "email": "b@y"}, {"id": 7}]) is None
    writer.close()
    assert people(schema) == [
        (1, "Ann", "ann@x", "gold"),  # email and tier kept
        (2, "bob", "b@y", "gold"),  # name and tier kept
        (7, "anon", None, "free"),  # a new row: the defaults
    ]


async def test_an_async_upsert_sets_only_the_columns_each_item_carries(schema: str) -> None:
    existing(schema)
    writer = AsyncPostgresSink(POSTGRES_URL, "people", schema=schema, key="id")
    assert await writer.write([{"id": 1, "tier": "free"}, {"id": 2, "name": "B"}]) is None
    await writer.aclose()
    assert people(schema) == [(1, "ann", "ann@x", "free"), (2, "B", "bob@x", "gold")]


def test_the_last_value_of_a_key_wins_across_shapes(schema: str) -> None:
    writer = sink(schema, "upsert")
    items = [
        {"id": 1, "name": "a", "email": "first"},
        {"id": 1, "email": "e"},
        {"id": 1, "name": "b"},
        {"id": 1, "name": "c"},  # the same key twice in one run: the last one wins
    ]
    assert writer.write(items) is None
    writer.close()
    assert people(schema) == [(1, "c", "e", "free")]


def test_many_alternating_shapes_go_in_one_transaction(schema: str) -> None:
    """200 runs of one item: each is its own statement, in order; nothing piles up."""
    writer = sink(schema, "copy")
    items = [
        {"id": i, "name": f"n{i}"} if i % 2 else {"id": i, "email": f"e{i}"} for i in range(200)
    ]
    assert writer.write(items) is None
    writer.close()
    assert people(schema) == [
        (i, f"n{i}", None, "free") if i % 2 else (i, "anon", f"e{i}", "free") for i in range(200)
    ]


def test_runs_of_many_shapes_share_the_held_transaction(schema: str) -> None:
    writer = sink(schema, "upsert")
    with writer.transaction():
        assert writer.write([{"id": 1, "name": "a"}, {"id": 2, "email": "b"}]) is None
        assert writer.write([{"id": 1, "email": "x"}, {"id": 2, "name": "y"}]) is None
    writer.close()
    assert people(schema) == [(1, "a", "x", "free"), (2, "y", "b", "free")]


@pytest.mark.parametrize("mode", MODES)
def test_a_bad_row_in_a_later_run_fails_alone(schema: str, mode: Mode) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CHECK (email <> 'bad')").format(table(schema)))
    writer = sink(schema, mode)
    outcomes = writer.write(
        [{"id": 1, "name": "a"}, {"id": 2, "email": "ok"}, {"id": 3, "email": "bad"},
         {"id": 4, "email": "ok"}, {"id": 5, "name": "e"}]
    )  # fmt: skip
    writer.close()
    assert outcomes is not None
    assert list(failed(outcomes)) == [2]
    assert isinstance(outcomes[2], PermanentError)
    assert isinstance(outcomes[2].__cause__, psycopg.errors.CheckViolation)
    assert [row[0] for row in people(schema)] == [1, 2, 4, 5]


@pytest.mark.parametrize("mode", MODES)
async def test_the_async_sink_fails_a_bad_row_of_a_later_run_alone(schema: str, mode: Mode) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CHECK (email <> 'bad')").format(table(schema)))
    key = "id" if mode == "upsert" else None
    writer = AsyncPostgresSink(POSTGRES_URL, "people", schema=schema, mode=mode, key=key)
    outcomes = await writer.write(
        [{"id": 1, "name": "a"}, {"id": 2, "email": "bad"}, {"id": 3, "email": "ok"}]
        + [{"id": i, "name": "n", "email": "bad" if i == 80 else "e"} for i in range(4, 1104)]
    )
    await writer.aclose()
    assert outcomes is not None
    assert list(failed(outcomes)) == [1, 79]
    assert isinstance(outcomes[79].__cause__, psycopg.errors.CheckViolation)
    assert len(people(schema)) == 1101


@pytest.mark.parametrize("mode", MODES)
def test_long_runs_and_short_ones_each_isolate_their_bad_rows(schema: str, mode: Mode) -> None:
    """Long runs are a COPY each (an upsert's through its staging table), the short ones
    between them pipelined INSERTs: a bad row fails alone in both."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CHECK (email <> 'bad')").format(table(schema)))
    full = [{"id": i, "name": f"n{i}", "email": "bad" if i == 600 else "e"} for i in range(1200)]
    short = [{"id": 1200, "email": "s"}, {"id": 1201, "email": "bad"}, {"id": 1202}]
    more = [{"id": i, "name": "m", "email": "bad" if i == 2000 else "e"} for i in range(1203, 2303)]
    writer = sink(schema, mode)
    outcomes = writer.write(full + short + more)
    writer.close()
    assert outcomes is not None
    assert list(failed(outcomes)) == [600, 1201, 2000]
    assert all(isinstance(outcomes[i], PermanentError) for i in (600, 1201, 2000))
    landed = {row[0]: row for row in people(schema)}
    assert len(landed) == 2300
    assert [landed[i] for i in (599, 601, 1199, 1200, 1202, 2302)] == [
        (599, "n599", "e", "free"),
        (601, "n601", "e", "free"),
        (1199, "n1199", "e", "free"),
        (1200, "anon", "s", "free"),
        (1202, "anon", None, "free"),
        (2302, "m", "e", "free"),
    ]


@pytest.mark.parametrize("alone", [True, False], ids=["long runs", "short runs"])
def test_an_upsert_of_long_and_short_runs_sets_each_items_columns_in_order(
    schema: str, alone: bool
) -> None:
    existing(schema)
    size = 1100 if alone else 3
    items: list[dict[str, Any]] = [{"id": i, "name": f"a{i}"} for i in range(size)]
    items += [{"id": 1, "email": "x"}, {"id": 7, "email": "y", "tier": "t"}]
    items += [{"id": i, "name": "b"} for i in range(1, size + 1)] + [{"id": 1, "name": "b2"}]
    model = {1: {"name": "ann", "email": "ann@x", "tier": "gold"},
             2: {"name": "bob", "email": "bob@x", "tier": "gold"}}  # fmt: skip
    for item in items:
        model.setdefault(item["id"], dict(DEFAULTS)).update(item)
    writer = sink(schema, "upsert")
    assert writer.write(items) is None
    writer.close()
    assert people(schema) == [
        (key, row["name"], row["email"], row["tier"]) for key, row in sorted(model.items())
    ]
    assert people(schema)[1] == (1, "b2", "x", "gold")


def test_an_empty_item_is_a_row_of_defaults(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, name text DEFAULT 'anon')").format(
                table(schema, "serial")
            )
        )
    writer = PostgresSink(POSTGRES_URL, "serial", schema=schema)
    assert writer.write([{"name": "a"}, {}, {"name": "c"}]) is None
    writer.close()
    assert people(schema, "serial") == [(1, "a"), (2, "anon"), (3, "c")]


# -- a field that cannot be written fails its item, never silently ----------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_field_the_table_lacks_fails_its_item_naming_the_field(schema: str, mode: Mode) -> None:
    writer = sink(schema, mode)
    outcomes = writer.write(
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "phone": "555"}, {"id": 3, "email": "c"}]
    )
    writer.close()
    assert outcomes is not None
    assert list(failed(outcomes)) == [1]
    assert isinstance(outcomes[1], PermanentError)
    assert "fields ['phone'] are not columns of 'people'" in str(outcomes[1])
    assert [row[:3] for row in people(schema)] == [(1, "a", None), (3, "anon", "c")]


async def test_the_async_sink_fails_an_item_with_a_field_the_table_lacks(schema: str) -> None:
    writer = AsyncPostgresSink(POSTGRES_URL, "people", schema=schema, key="id")
    outcomes = await writer.write([{"id": 1, "phone": "555"}, {"id": 2, "name": "b"}])
    await writer.aclose()
    assert outcomes is not None
    assert list(failed(outcomes)) == [0]
    assert isinstance(outcomes[0], PermanentError)
    assert "['phone']" in str(outcomes[0])
    assert people(schema) == [(2, "b", None, "free")]


def test_a_column_added_after_the_first_write_is_written(schema: str) -> None:
    writer = sink(schema, "upsert")
    assert writer.write([{"id": 1, "name": "a"}, {"id": 2, "email": "b"}]) is None
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN phone text").format(table(schema)))
    assert writer.write([{"id": 1, "phone": "555"}, {"id": 2, "name": "B"}]) is None
    writer.close()
    assert people(schema) == [(1, "a", None, "free", "555"), (2, "B", "b", "free", None)]


@pytest.mark.parametrize("mode", MODES)
def test_a_field_the_table_lacks_in_every_item_is_a_target_error(schema: str, mode: Mode) -> None:
    writer = sink(schema, mode)
    outcomes = writer.write([{"id": 1, "nope": 1}, {"id": 2, "name": "b", "nope": 2}])
    writer.close()
    assert outcomes is not None
    assert all(isinstance(o, TargetError) for o in outcomes)
    assert 'column "nope"' in str(outcomes[0])
    assert people(schema) == []  # nothing of the write committed


@pytest.mark.parametrize("mode", MODES)
def test_a_field_outside_columns_fails_its_item_naming_it(schema: str, mode: Mode) -> None:
    writer = sink(schema, mode, columns=["id", "name"])
    outcomes = writer.write(
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "email": "b@y"}, {"id": 3}]
    )
    writer.close()
    assert outcomes is not None
    assert list(failed(outcomes)) == [1]
    assert isinstance(outcomes[1], PermanentError)
    assert "fields ['email'] are not among columns=" in str(outcomes[1])
    assert people(schema) == [
        (1, "a", None, "free"),
        (3, None, None, "free"),
    ]  # columns= writes NULL


async def test_the_async_sink_fails_an_item_with_a_field_outside_columns(schema: str) -> None:
    writer = AsyncPostgresSink(POSTGRES_URL, "people", schema=schema, columns=["id", "name"])
    outcomes = await writer.write([{"id": 1, "tier": "x"}, {"id": 2, "name": "b"}])
    await writer.aclose()
    assert outcomes is not None
    assert list(failed(outcomes)) == [0]
    assert "['tier']" in str(outcomes[0])
    assert people(schema) == [(2, "b", None, "free")]


def test_an_item_that_is_not_a_mapping_among_mappings_fails_alone(schema: str) -> None:
    writer = sink(schema, "copy")
    outcomes = writer.write([{"id": 1}, (2, "b"), {"id": 3}])
    writer.close()
    assert outcomes is not None
    assert list(failed(outcomes)) == [1]
    assert "PostgresSink needs mappings (or columns= for sequences), got tuple" in str(outcomes[1])
    assert [row[0] for row in people(schema)] == [1, 3]


# -- the rules as properties ---------------------------------------------------------------


@given(sizes=st.lists(st.integers(1, 12), max_size=12), alone=st.integers(1, 12))
def test_segments_keep_the_runs_in_order_and_put_only_short_ones_together(
    sizes: list[int], alone: int
) -> None:
    planned = [Run([f"c{i}"], [()] * size, []) for i, size in enumerate(sizes)]
    found = segments(planned, alone)
    assert [run for _, group in found for run in group] == planned
    for (pipelined, group), after in zip(found, [*found[1:], None], strict=False):
        if pipelined:
            assert all(len(run.rows) < alone for run in group)
            assert after is None or not after[0]  # short runs in a row are one segment
        else:
            assert [len(run.rows) >= alone for run in group] == [True]


FIELDS = ("name", "email", "tier")
partial_rows = st.fixed_dictionaries(
    {"id": st.integers(1, 4)},
    optional={c: st.sampled_from(["a", "b", None]) for c in FIELDS},
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=st.lists(st.lists(partial_rows, min_size=1, max_size=8), max_size=3))
def test_an_upsert_equals_setting_each_items_own_columns_in_order(
    schema: str, writes: list[list[dict[str, Any]]]
) -> None:
    """The table equals a model where each item, in order, sets its own columns on its
    key's row, and a new row starts from the defaults (as SqliteSink does)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(table(schema)))
    model: dict[int, dict[str, Any]] = {}
    writer = sink(schema, "upsert")
    for items in writes:
        assert writer.write(list(items)) is None
        for item in items:
            model.setdefault(item["id"], dict(DEFAULTS)).update(item)
    writer.close()
    assert people(schema) == [
        (key, row["name"], row["email"], row["tier"]) for key, row in sorted(model.items())
    ]
