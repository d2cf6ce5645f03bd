"""Smaller contracts of the core values: reprs, equality, sizes, percentiles, the fake clock."""

from __future__ import annotations

import asyncio
import math

import pytest

from freight import BatchBuffer, BatchSpec, Flush, FlushReason, Retry
from freight._core._dispatch import DispatchQueue
from freight._core._spec import default_sizer
from freight._core._stats import StatsRecorder
from freight.testing import FakeClock


def test_default_sizer_measures_bytes_like_and_text() -> None:
    assert default_sizer(b"abc") == 3
    assert default_sizer(bytearray(b"ab")) == 2
    assert default_sizer(memoryview(b"abcd")) == 4
    assert default_sizer("é") == 2


def test_spec_value_semantics() -> None:
    spec = BatchSpec(5, 1.5, max_bytes=10, sizer=len)
    assert repr(spec) == f"BatchSpec(size=5, timeout=1.5, max_bytes=10, sizer={len!r})"
    assert spec != "BatchSpec"
    with pytest.raises(AttributeError, match="immutable"):
        del spec.size


def test_sizer_must_return_a_non_negative_int() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(10, max_bytes=5, sizer=lambda s: -1))
    with pytest.raises(TypeError, match="sizer must return an int"):
        buf.add("x", 0)


def test_dispatch_queue_length_counts_waiting_batches() -> None:
    queue: DispatchQueue[int] = DispatchQueue(1)
    assert queue.push(Flush(0, [1], "size", 0)) != []
    assert queue.push(Flush(0, [2], "size", 0)) == []
    assert len(queue) == 1
    assert [f.items for f in queue.take_all()] == [[2]]


def test_retry_repr_and_empty_stats() -> None:
    assert repr(Retry(attempts=2, jitter=0)).startswith("Retry(attempts=2, backoff=0.1")
    stats = StatsRecorder(10).snapshot(pending=0)
    assert math.isnan(stats.latency.p50)
    assert stats.efficiency == 0


async def test_fake_clock_runs_timers_in_order_and_sleeps_virtually() -> None:
    clock = FakeClock(start=100)
    fired: list[tuple[str, float]] = []
    clock.call_at(103, lambda: fired.append(("b", clock.now())))
    clock.call_at(101, lambda: fired.append(("a", clock.now())))
    cancelled = clock.call_at(102, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    assert clock.pending_timers() == [101, 103]
    sleeper = asyncio.ensure_future(clock.sleep(2.5))
    await clock.advance(5)
    assert fired == [("a", 101), ("b", 103)]
    assert sleeper.done()
    assert clock.now() == 105
    await clock.sleep(0)
    with pytest.raises(ValueError, match="forward"):
        await clock.advance(-1)


def test_fake_clock_wait_for_timers_fails_instead_of_hanging() -> None:
    clock = FakeClock()
    with pytest.raises(TimeoutError, match="1 pending timer"):
        clock.wait_for_timers(timeout=0.01)
    clock.call_at(3, lambda: None)
    assert clock.wait_for_timers() == [3]


def test_stats_recorder_folds_events() -> None:
    from freight import BatchEvent

    recorder = StatsRecorder(size=4)
    rows: list[tuple[float, int, FlushReason]] = [
        (1.0, 4, "size"),
        (3.0, 2, "timeout"),
        (2.0, 4, "size"),
    ]
    for wait, size, reason in rows:
        recorder.record(
            BatchEvent(
                batcher="b",
                key=None,
                size=size,
                reason=reason,
                wait=wait,
                duration=0.5,
                succeeded=size - 1,
                failed=1,
                calls=2,
            )
        )
    stats = recorder.snapshot(pending=5)
    assert stats.flushes == {"size": 2, "timeout": 1}
    assert (stats.batches, stats.succeeded, stats.failed, stats.handler_calls) == (3, 7, 3, 6)
    assert stats.submitted == 7 + 3 + 5
    assert stats.mean_batch_size == 10 / 3
    assert stats.efficiency == 10 / 12
    assert (stats.latency.p50, stats.latency.p99, stats.latency.max) == (2.5, 3.5, 3.5)


def test_spec_repr_without_timeout() -> None:
    assert repr(BatchSpec(2, max_bytes=8)) == "BatchSpec(size=2, max_bytes=8)"


def test_raising_handler_without_policy_fails_every_item() -> None:
    from freight._core._plan import Call, Reply, plan_batch

    plan = plan_batch([1, 2], None, lambda: 0.0)
    assert isinstance(next(plan), Call)
    error = RuntimeError("down")
    with pytest.raises(StopIteration) as stop:
        plan.send(Reply(error=error))
    assert stop.value.value.outcomes == [error, error]


def test_records_know_their_position_and_name() -> None:
    from freight._core._source import Record, SourceSize
    from freight._errors import RecordError

    record = Record(120, 7, {"a": 1})
    assert (record.position, record.id, record.error, record.raw) == ((120, 7), "line 7", None, "")
    assert Record(3, 3, "x", None, "", "item").id == "item 3"
    assert isinstance(RecordError("bad"), ValueError)
    assert SourceSize() == SourceSize(items=None, bytes=None)


def test_batch_event_names_its_wait_and_duration_both_ways() -> None:
    from freight import BatchEvent

    event = BatchEvent(
        batcher="b", key=None, size=1, reason="size", wait=0.25, duration=0.5,
        succeeded=1, failed=0,
    )  # fmt: skip
    assert (event.wait_time, event.handler_duration) == (0.25, 0.5)
