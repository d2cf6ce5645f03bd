"""The trace file's tables: ``spans`` is one view over the wide rows of flush, handler and
dead-letter spans and the narrow rows of publish spans, with the columns it always had."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from freight import BatchSpec, Flow
from freight.flow import DuckDBTracer, Span
from freight.testing import FakeClock

COLUMNS = [
    ("span_id", "VARCHAR"),
    ("parent_id", "VARCHAR"),
    ("flow", "VARCHAR"),
    ("name", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("consumer", "VARCHAR"),
    ("started_at", "TIMESTAMP WITH TIME ZONE"),
    ("ended_at", "TIMESTAMP WITH TIME ZONE"),
    ("duration", "DOUBLE"),
    ("batch_size", "INTEGER"),
    ("flush_reason", "VARCHAR"),
    ("efficiency", "DOUBLE"),
    ("succeeded", "INTEGER"),
    ("failed", "INTEGER"),
    ("artifact_type", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("tenant", "VARCHAR"),
    ("attributes", "JSON"),
]


@dataclass
class Tx:
    n: int


@dataclass
class Report:
    count: int


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(sql).fetchall()


async def traced_flow(path: Path, count: int) -> list[str]:
    flow = Flow(clock=FakeClock(), trace=path, name="pay")

    @flow.consumer("pay").consumes(Tx, batch=BatchSpec(size=10, timeout=30)).publishes(Report)
    async def pay(batch: list[Tx]) -> list[Report]:
        return [Report(len(batch))] * len(batch)

    ids = [(await flow.publish(Tx(n))).id for n in range(count)]
    await flow.close()
    return ids


async def test_spans_keeps_its_columns_and_holds_every_kind_of_span(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    ids = await traced_flow(path, 20)
    assert rows(path, "SELECT column_name, column_type FROM (DESCRIBE spans)") == COLUMNS
    assert rows(path, "SELECT name, count(*) FROM spans GROUP BY name ORDER BY name") == [
        ("flush", 2),
        ("handler", 2),
        ("publish", 40),  # 20 transactions, 20 reports
    ]
    published = rows(
        path,
        "SELECT span_id, kind, parent_id, duration, started_at = ended_at, attributes"
        " FROM spans WHERE name = 'publish' AND consumer IS NULL ORDER BY started_at, span_id",
    )
    assert sorted(str(r[0]) for r in published) == sorted(ids)
    assert {r[1:] for r in published} == {
        ("publish", None, 0.0, True, '{"consumers": 1, "depth": 0}')
    }


async def test_a_publish_span_starts_when_its_artifact_was_published(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    flow = Flow(trace=path)
    flow.consumer("echo").consumes(Tx).does(lambda tx: None)
    before = datetime.now(UTC)
    envelope = await flow.publish(Tx(1))
    after = datetime.now(UTC)
    await flow.close()
    [(started,)] = rows(path, f"SELECT started_at FROM spans WHERE span_id = '{envelope.id}'")
    assert isinstance(started, datetime)
    assert before - timedelta(milliseconds=1) <= started <= after + timedelta(milliseconds=1)
    assert abs(started - envelope.published_at) < timedelta(milliseconds=1)


async def test_a_trace_file_of_the_single_table_layout_keeps_its_spans(tmp_path: Path) -> None:
    """A file written when ``spans`` was a table: its rows stay queryable, new spans join
    them."""
    path = tmp_path / "traces.duckdb"
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    with duckdb.connect(str(path)) as db:
        db.execute(f"CREATE TABLE spans ({columns}, PRIMARY KEY (span_id))")
        db.execute(
            "INSERT INTO spans (span_id, flow, name, kind, consumer, started_at, ended_at,"
            " duration, artifact_type, attributes) VALUES ('old-1', 'pay', 'publish', 'publish',"
            " NULL, now(), now(), 0.0, 'Tx', '{\"consumers\": 1, \"depth\": 0}')"
        )
    await traced_flow(path, 10)
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'publish'") == [(1 + 20,)]
    assert rows(path, "SELECT count(*) FROM spans WHERE span_id = 'old-1'") == [(1,)]


async def test_publish_span_ids_are_unique_and_are_their_artifacts_ids(tmp_path: Path) -> None:
    """A publish span's id is its artifact's: unique, of one form (the flow's prefix and
    a counter in hex)."""
    path = tmp_path / "traces.duckdb"
    ids = await traced_flow(path, 300)
    published = rows(path, "SELECT span_id FROM spans WHERE name = 'publish'")
    span_ids = [str(r[0]) for r in published]
    assert len(span_ids) == 600 == len(set(span_ids))
    assert set(ids) <= set(span_ids)
    prefix = ids[0][:17]
    assert all(re.fullmatch(r"[0-9a-f]{16}-[1-9a-f][0-9a-f]*", i) for i in span_ids)
    assert {i[:17] for i in span_ids} == {prefix}
    assert rows(path, f"SELECT count(*) FROM spans WHERE span_id = '{ids[-1]}'") == [(1,)]


def test_a_publish_span_keeps_an_artifact_id_of_another_form(tmp_path: Path) -> None:
    from freight.flow._artifacts import Envelope
    from freight.flow._tracing import Tracing

    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path)
    tracing = Tracing("f", [tracer], False)
    now = datetime.now(UTC)
    odd = ["e0-1", "0123456789abcdef-01", "0123456789abcdef-zz", "0123456789abcdef-ff"]
    tracing.published([(Envelope(i, "Tx", Tx(0), None, 0.0, now), 1, ["pay"]) for i in odd], 0.0)
    tracer.close()
    assert sorted(str(r[0]) for r in rows(path, "SELECT span_id FROM spans")) == sorted(odd)


async def test_a_trace_file_replaced_between_writes_gets_its_tables_again(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    await traced_flow(path, 10)
    path.unlink()  # rotated away by the user: the next write finds a new, empty file
    await traced_flow(path, 10)
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'publish'") == [(20,)]


def test_an_attribute_its_number_column_cannot_hold_is_kept_in_the_json(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path)
    now = datetime.now(UTC)
    tracer(Span("a", "flush", "c", now, 0.0, {"batch_size": "many", "efficiency": 0.5}))
    tracer(Span("b", "handler", "c", now, 0.0, {"batch_size": 3, "tries": 2, "retried": True}))
    tracer.close()
    assert rows(path, "SELECT span_id, batch_size, efficiency, attributes FROM spans") == [
        ("a", None, 0.5, '{"batch_size": "many"}'),
        ("b", 3, None, '{"tries": 2, "retried": true}'),
    ]


def test_two_large_writes_keep_their_own_row_groups(tmp_path: Path) -> None:
    """A write of 10,000 rows or more is not merged into the row groups before it (the
    merge rewrote them at every write: 2-5x the cost of the write itself). Ids that do
    not count up by one make a run each: a row each."""
    from freight.flow._artifacts import Envelope
    from freight.flow._tracing import Tracing

    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path, buffer=100_000)
    tracing = Tracing("f", [tracer], False)
    now = datetime.now(UTC)
    for write in range(2):
        routed = [
            (Envelope(f"e{write}-{2 * i:x}", "Tx", Tx(i), None, 0.0, now), i, ["pay"])
            for i in range(10_000)
        ]
        tracing.published(routed, 0.0)
        tracer.flush()
    tracer.close()
    with duckdb.connect(str(path), read_only=True) as db:
        [(groups,)] = db.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('publish_runs')"
        ).fetchall()
        assert db.execute("SELECT count(*) FROM spans").fetchall() == [(20_000,)]
    assert groups == 2


WRITER = """
import sys
from datetime import UTC, datetime
from freight.flow import DuckDBTracer
from freight.flow._artifacts import Envelope
from freight.flow._tracing import Tracing

tracer = DuckDBTracer(sys.argv[1], buffer=1_000_000)
tracing = Tracing("f", [tracer], False)
now = datetime.now(UTC)
for write in range(1_000):
    routed = [(Envelope(f"e{write}-{i}", "Tx", None, None, 0.0, now), i, ["pay"])
              for i in range(int(sys.argv[2]))]
    tracing.published(routed, 0.0)
    tracer.flush()
    print(write, flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_6_random_points_while_writing_loses_at_most_that_write(
    tmp_path: Path,
) -> None:
    """A write's commit is its checkpoint (no WAL): a process killed mid-write leaves a
    file that opens, holding every finished write whole and nothing of the killed one."""
    path = tmp_path / "traces.duckdb"
    size = 3_000
    rng = random.Random(20261130)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    finished = 0
    for _ in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert process.stdout is not None
        wanted = rng.randint(1, 4)
        lines = [process.stdout.readline() for _ in range(wanted)]
        assert all(line.strip().isdigit() for line in lines), process.communicate()[1][-2000:]
        process.send_signal(signal.SIGKILL)
        process.communicate()
        finished += wanted
        [(count,)] = rows(path, "SELECT count(*) FROM spans")
        assert isinstance(count, int)
        assert count % size == 0
        assert finished * size <= count <= (finished + 1) * size
        finished = count // size
