"""Default tracing costs little: spans are queued on the flow's path and written in bulk
by a writer thread, and a traced flow writes its file when it closes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from freight import BatchSpec, Flow
from freight.flow import DuckDBTracer, Span
from freight.testing import FakeClock


@dataclass
class Tx:
    n: int


@dataclass
class Report:
    count: int


def declare(flow: Flow) -> None:
    @flow.consumer("pay").consumes(Tx, batch=BatchSpec(size=25, timeout=30)).publishes(Report)
    async def pay(batch: list[Tx]) -> list[Report]:
        return [Report(len(batch))] * len(batch)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(sql).fetchall()


async def test_publishing_writes_nothing_until_the_flow_closes(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path, buffer=10_000, interval=3600)
    flow = Flow(clock=FakeClock(), trace=False, subscribers=[tracer])
    declare(flow)
    for n in range(100):
        await flow.publish(Tx(n))
    assert not path.exists()  # publish queued its span; no file was touched
    await flow.close()
    counts = rows(path, "SELECT name, count(*) FROM spans GROUP BY name ORDER BY name")
    assert counts == [("flush", 4), ("handler", 4), ("publish", 200)]


async def test_a_traced_flow_writes_its_default_file_when_it_closes() -> None:
    flow = Flow(clock=FakeClock())  # duckdb is installed: traced by default
    declare(flow)
    for n in range(30):
        await flow.publish(Tx(n))
    await flow.close()
    [(flushes, reasons)] = rows(
        Path(".freight/traces.duckdb"),
        "SELECT count(*), string_agg(DISTINCT flush_reason, ',') FROM spans WHERE name = 'flush'",
    )
    assert (flushes, reasons) == (2, "close,size") or (flushes, reasons) == (2, "size,close")


async def test_publish_spans_carry_the_artifact_and_its_consumers(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    flow = Flow(clock=FakeClock(), trace=path, name="payments")
    declare(flow)
    envelope = await flow.publish(Tx(1))
    await flow.close()
    [row] = rows(
        path,
        "SELECT span_id, flow, consumer, artifact_type, tenant, attributes, kind FROM spans"
        " WHERE name = 'publish' AND consumer IS NULL",
    )
    assert row == (
        envelope.id,
        "payments",
        None,
        "Tx",
        None,
        '{"consumers": 1, "depth": 0}',
        "publish",
    )
    [(producer, depth)] = rows(
        path, "SELECT consumer, attributes->>'depth' FROM spans WHERE artifact_type = 'Report'"
    )
    assert (producer, depth) == ("pay", "1")


def test_the_writer_thread_writes_every_buffer_spans(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path, buffer=50, interval=3600)
    now = datetime.now(UTC)
    for i in range(120):
        tracer(Span(f"s{i}", "flush", "c", now, 0.1, {"batch_size": i}))
    tracer.close()  # joins the writer thread, then writes the rest
    assert rows(path, "SELECT count(*), sum(batch_size) FROM spans") == [(120, sum(range(120)))]


def test_attributes_of_mixed_kinds_are_still_written(tmp_path: Path) -> None:
    """A tenant key that is a number for one span and text for another cannot make one
    typed column: those spans take the slow path, and none is lost."""
    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path)
    now = datetime.now(UTC)
    tracer(Span("a", "flush", "c", now, 0.0, {"tenant": 7, "note": "x"}))
    tracer(Span("b", "flush", "c", now, 0.0, {"tenant": "t", "note": 2}))
    tracer.close()
    assert rows(path, "SELECT span_id, tenant, attributes FROM spans ORDER BY span_id") == [
        ("a", "7", '{"note": "x"}'),
        ("b", "t", '{"note": 2}'),
    ]


def test_a_failed_write_keeps_at_most_max_spans(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where the folder should be")
    tracer = DuckDBTracer(tmp_path / "blocked" / "t.duckdb", buffer=10, max_spans=10)
    now = datetime.now(UTC)
    for i in range(10):
        tracer(Span(f"s{i}", "flush", "c", now, 0.0, {}))
    with pytest.raises(FileExistsError):
        tracer.flush()
    for i in range(10, 15):
        tracer(Span(f"s{i}", "flush", "c", now, 0.0, {}))
    tracer.path = tmp_path / "t.duckdb"
    tracer.close()
    kept = [r[0] for r in rows(tracer.path, "SELECT span_id FROM spans")]
    assert len(kept) <= 15
    assert {f"s{i}" for i in range(10, 15)} <= set(kept)  # the newest are never dropped


def test_default_tracing_costs_a_fraction_of_the_flow() -> None:
    """A guard against the old cost (a row written per span inside publish: ~100x);
    bench/flow_overhead.py measures the 1.3x target itself."""

    async def run(trace: bool) -> float:
        flow = Flow(trace=trace)
        declare(flow)
        started = time.process_time()
        async with flow:
            for n in range(3000):
                await flow.publish(Tx(n))
        return time.process_time() - started

    untraced = min(asyncio.run(run(False)) for _ in range(3))
    traced = min(asyncio.run(run(True)) for _ in range(3))
    assert traced < 3 * untraced + 0.05, (traced, untraced)


async def test_a_tracer_shared_by_two_flows_outlives_the_first_close(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    tracer = DuckDBTracer(path)
    first = Flow(clock=FakeClock(), trace=False, subscribers=[tracer], name="first")
    second = Flow(clock=FakeClock(), trace=False, subscribers=[tracer], name="second")
    for flow in (first, second):
        declare(flow)
    await first.publish(Tx(1))
    await first.close()  # closes the tracer: written, its thread ended
    await second.publish(Tx(2))
    await second.close()  # spans after the first close start a new writer thread
    assert rows(path, "SELECT flow, count(*) FROM spans GROUP BY flow ORDER BY flow") == [
        ("first", 4),
        ("second", 4),
    ]


async def test_the_trace_file_is_written_off_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle and close write the file in a worker thread, which the flow awaits."""
    import threading

    import freight.flow._trace as trace

    writers: list[str] = []
    insert = trace._insert

    def spy(path: Path, rows: list[trace.SpanRow], publishes: list[trace.PublishRow]) -> None:
        writers.append(threading.current_thread().name)
        insert(path, rows, publishes)

    monkeypatch.setattr(trace, "_insert", spy)
    path = tmp_path / "traces.duckdb"
    flow = Flow(clock=FakeClock(), trace=path)
    declare(flow)
    for n in range(30):
        await flow.publish(Tx(n))
    await flow.run_until_idle()  # the first idle writes what is queued
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'publish'") == [(30 + 25,)]
    await flow.close()
    assert writers
    assert threading.main_thread().name not in writers
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'publish'") == [(60,)]


async def test_each_idle_writes_the_spans_recorded_since_the_last(tmp_path: Path) -> None:
    path = tmp_path / "traces.duckdb"
    clock = FakeClock()
    flow = Flow(clock=clock, trace=path)
    declare(flow)
    for n in range(25):
        await flow.publish(Tx(n))
    await flow.run_until_idle()
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'handler'") == [(1,)]
    for n in range(5):
        await flow.publish(Tx(n))
    await clock.advance(30)  # the second batch's timeout
    await flow.run_until_idle()
    assert rows(path, "SELECT count(*) FROM spans WHERE name = 'handler'") == [(2,)]
    await flow.close()


def test_a_failed_write_with_no_room_left_keeps_no_publish_span(tmp_path: Path) -> None:
    """max_spans generic spans kept leave no room: the publish spans of that write are
    dropped (logged), not all kept."""
    from freight.flow._artifacts import Envelope
    from freight.flow._tracing import Tracing

    (tmp_path / "blocked").write_text("a file where the folder should be")
    tracer = DuckDBTracer(tmp_path / "blocked" / "t.duckdb", buffer=10, max_spans=10)
    tracing = Tracing("f", [tracer], False)
    now = datetime.now(UTC)
    for i in range(10):
        tracer(Span(f"s{i}", "flush", "c", now, 0.0, {}))
    for i in range(3):
        tracing.published([(Envelope(f"e{i}", "Tx", Tx(i), None, 0.0, now), i, ["pay"])], 0.0)
    with pytest.raises(FileExistsError):
        tracer.flush()
    tracer.path = tmp_path / "t.duckdb"
    tracer.close()
    assert rows(tracer.path, "SELECT count(*), count(*) FILTER (name = 'publish') FROM spans") == [
        (10, 0)
    ]


def test_a_one_artifact_route_is_traced_as_in_a_longer_route(tmp_path: Path) -> None:
    """The one-tracer, one-artifact path (an outside publish) writes the same publish
    span as a route of several artifacts, and counts it for the writer thread."""
    from freight.flow._artifacts import Envelope
    from freight.flow._tracing import Tracing

    path = tmp_path / "t.duckdb"
    tracer = DuckDBTracer(path, interval=3600)
    tracing = Tracing("f", [tracer], False)
    now = datetime.now(UTC)

    def envelope(i: int) -> Envelope:
        return Envelope(f"e{i}", "Tx", Tx(i), "src", 5.0, now, tenant="t", depth=2)

    tracing.published([(envelope(0), 0, ["pay"])], 7.0)
    assert tracer._writer.thread is not None  # the first span counted: the writer started
    tracing.published([(envelope(1), 1, ["pay", "audit"]), (envelope(2), 2, ["pay"])], 7.0)
    for i in range(3, 600):
        tracing.published([(envelope(i), i, ["pay"])], 7.0)
    assert tracer._writer.counted >= 512  # told every 256 spans (the buffer's count)
    tracer.close()
    got = rows(
        path,
        "SELECT span_id, artifact_type, consumer, tenant, attributes, started_at FROM spans"
        " WHERE span_id IN ('e0', 'e1', 'e2') ORDER BY span_id",
    )
    assert [r[:5] for r in got] == [
        ("e0", "Tx", "src", "t", '{"consumers": 1, "depth": 2}'),
        ("e1", "Tx", "src", "t", '{"consumers": 2, "depth": 2}'),
        ("e2", "Tx", "src", "t", '{"consumers": 1, "depth": 2}'),
    ]
    started = [r[5] for r in got if isinstance(r[5], datetime)]
    assert len(started) == 3
    assert max(started) - min(started) < timedelta(seconds=1)
    assert abs(started[0] - (now - timedelta(seconds=2))) < timedelta(seconds=1)
    assert rows(path, "SELECT count(*) FROM spans") == [(600,)]
