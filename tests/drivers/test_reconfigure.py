"""reconfigure(): size, timeout and max_bytes changed at runtime (issue 13, item 2).

Ray Serve's setter tests (``set_max_batch_size``, ``set_batch_wait_timeout_s``) ported to
freight's API: ``reconfigure(size=..., timeout=...)`` on a Batcher, a ThreadBatcher, and
a batched function (``f.reconfigure``), with ``spec`` as Ray's getters. One rule differs
on purpose: in Ray a setter called while a batch accumulates leaves that batch on the old
values; in freight the open batch is judged by the new rule at once (flushed, whole, if it
is now due), so a smaller size or a shorter wait never leaves callers waiting on the old.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import freight
from freight import Batcher, BatchEvent, BatchSpec, ConfigError, ThreadBatcher
from freight.testing import FakeClock


class Recorder:
    """An async handler that records its batches and echoes the items."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    async def __call__(self, items: list[object]) -> list[object]:
        self.calls.append(list(items))
        return items


async def test_setters_port_new_size_and_wait_apply_to_the_next_batches(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, BatchSpec(size=2, timeout=1000), clock=clock)
    assert (batcher.spec.size, batcher.spec.timeout) == (2, 1000)
    # Batches of 2
    first = [batcher.submit_nowait(("hi1", "hi2")), batcher.submit_nowait(("hi3", "hi4"))]
    await clock.advance(0)
    assert [f.result() for f in first] == [("hi1", "hi2"), ("hi3", "hi4")]
    # When reconfigured to size 3, wait 15000 s
    batcher.reconfigure(size=3, timeout=15000)
    assert (batcher.spec.size, batcher.spec.timeout) == (3, 15000)
    second = [batcher.submit_nowait((f"hi{i}", f"hi{i + 1}")) for i in (1, 3)]
    await clock.advance(1000)  # the old wait has passed: the new one holds them
    assert not any(f.done() for f in second)
    second.append(batcher.submit_nowait(("hi5", "hi6")))
    await clock.advance(0)
    # Then the three calls are one batch
    assert [f.result() for f in second] == [("hi1", "hi2"), ("hi3", "hi4"), ("hi5", "hi6")]
    assert [len(c) for c in handler.calls] == [2, 3]
    await batcher.close()


async def test_earliest_setters_port_the_open_batch_is_judged_by_the_new_rule(
    clock: FakeClock,
) -> None:
    handler = Recorder()
    batcher = Batcher(handler, BatchSpec(size=2, timeout=1000), clock=clock)
    # Set before the first batch: the first batch is built by them
    batcher.reconfigure(size=3, timeout=15000)
    pending = [batcher.submit_nowait(("hi1", "hi2")), batcher.submit_nowait(("hi3", "hi4"))]
    await clock.advance(100)
    assert not any(f.done() for f in pending)  # waiting for a third call
    # When size 1 and wait 0 are set while it accumulates, it is due now: it leaves whole
    batcher.reconfigure(size=1, timeout=0)
    assert (batcher.spec.size, batcher.spec.timeout) == (1, 0)
    await clock.advance(0)
    assert [f.result() for f in pending] == [("hi1", "hi2"), ("hi3", "hi4")]
    assert handler.calls == [[("hi1", "hi2"), ("hi3", "hi4")]]
    # And the next batch uses the new values: one call, at once
    single = batcher.submit_nowait(("hi5", "hi6"))
    await clock.advance(0)
    assert single.result() == ("hi5", "hi6")
    assert handler.calls[-1] == [("hi5", "hi6")]
    await batcher.close()


async def test_a_shorter_timeout_counts_from_the_first_item(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    batcher = Batcher(
        Recorder(), BatchSpec(size=10, timeout=30), clock=clock, subscribers=[events.append]
    )
    future = batcher.submit_nowait(1)
    await clock.advance(10)
    batcher.reconfigure(timeout=15)  # due at 0 + 15, not at 10 + 15 nor at the old 30
    await clock.advance(4.9)
    assert not future.done()
    await clock.advance(0.1)
    assert future.result() == 1
    assert [(e.reason, e.wait) for e in events] == [("timeout", 15)]
    assert clock.pending_timers() == []  # the timer of the old deadline is gone
    # An open batch already older than the new timeout leaves at once
    late = batcher.submit_nowait(2)
    await clock.advance(5)
    batcher.reconfigure(timeout=1)
    await clock.advance(0)
    assert late.result() == 2
    await batcher.close()


async def test_without_a_timeout_a_batch_waits_for_its_size(clock: FakeClock) -> None:
    handler = Recorder()
    batcher = Batcher(handler, BatchSpec(size=3, timeout=5), clock=clock)
    futures = [batcher.submit_nowait(i) for i in range(2)]
    batcher.reconfigure(timeout=None)
    await clock.advance(1000)
    assert not any(f.done() for f in futures)
    futures.append(batcher.submit_nowait(2))
    await clock.advance(0)
    assert [f.result() for f in futures] == [0, 1, 2]
    await batcher.close()


async def test_max_bytes_set_later_weighs_the_open_batch(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    batcher = Batcher(
        Recorder(), BatchSpec(size=100, timeout=60), clock=clock, subscribers=[events.append]
    )
    futures = [batcher.submit_nowait(b"abcd") for _ in range(3)]
    batcher.reconfigure(max_bytes=10)  # 12 bytes open: due
    await clock.advance(0)
    assert all(f.done() for f in futures)
    futures = [batcher.submit_nowait(b"abcd") for _ in range(3)]  # 8 then 12: the third waits
    await clock.advance(0)
    assert [f.done() for f in futures] == [True, True, False]
    batcher.reconfigure(max_bytes=None)
    assert batcher.spec == BatchSpec(size=100, timeout=60)
    assert [e.reason for e in events] == ["bytes", "bytes"]
    await batcher.close()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"size": 0}, "BatchSpec.size must be >= 1, got 0"),
        ({"size": 1.5}, "BatchSpec.size must be an int"),
        ({"timeout": -1}, "BatchSpec.timeout must be >= 0 seconds, got -1"),
        ({"timeout": "1s"}, "BatchSpec.timeout must be a number of seconds"),
        ({"max_bytes": 0}, "BatchSpec.max_bytes must be >= 1"),
        ({"size": None}, "has no size"),
        ({"size": "auto"}, "pass latency_target=<seconds>"),
        ({"latency_target": 0.1}, "latency_target only applies to size='auto'"),
    ],
)
async def test_a_refused_value_raises_like_batchspec_and_changes_nothing(
    clock: FakeClock, changes: dict[str, object], fragment: str
) -> None:
    batcher = Batcher(Recorder(), BatchSpec(size=2, timeout=5), clock=clock)
    future = batcher.submit_nowait(1)
    with pytest.raises(ConfigError) as info:
        batcher.reconfigure(**changes)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert batcher.spec == BatchSpec(size=2, timeout=5)
    assert (batcher.stats().current_size, batcher.stats().current_timeout) == (2, 5)
    await clock.advance(5)
    assert future.result() == 1
    await batcher.close()


async def test_a_batch_already_flushed_keeps_the_rule_it_was_made_by(clock: FakeClock) -> None:
    release = asyncio.Event()
    calls: list[list[int]] = []

    async def slow(items: list[int]) -> list[int]:
        calls.append(list(items))
        await release.wait()
        return items

    batcher = Batcher(slow, BatchSpec(size=4), clock=clock)
    running = [batcher.submit_nowait(i) for i in range(4)]  # running, holds the slot
    queued = [batcher.submit_nowait(i) for i in range(4, 8)]  # flushed, waiting for the slot
    await clock.advance(0)
    batcher.reconfigure(size=2)
    later = [batcher.submit_nowait(i) for i in range(8, 10)]
    release.set()
    await asyncio.gather(*running, *queued, *later)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    await batcher.close()


async def test_stats_and_events_report_the_size_in_force(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    batcher = Batcher(
        Recorder(), BatchSpec(size=4, timeout=1), clock=clock, subscribers=[events.append]
    )
    assert (batcher.stats().current_size, batcher.stats().current_timeout) == (4, 1)
    batcher.reconfigure(size=2, timeout=0.5)
    await asyncio.gather(*(batcher.submit(i) for i in range(2)))
    stats = batcher.stats()
    assert (stats.current_size, stats.current_timeout, stats.efficiency) == (2, 0.5, 1.0)
    assert events[-1].current_size == 2
    assert "size=2" in repr(batcher)
    await batcher.close()


async def test_a_batcher_not_yet_used_takes_the_new_spec() -> None:
    handler = Recorder()
    batcher = Batcher(handler, BatchSpec(size=5, timeout=30))
    batcher.reconfigure(size=2)
    assert list(await asyncio.gather(batcher.submit(1), batcher.submit(2))) == [1, 2]
    assert handler.calls == [[1, 2]]
    await batcher.close()


async def test_size_auto_hands_the_size_to_the_tuner_and_a_number_takes_it_back(
    clock: FakeClock,
) -> None:
    batcher = Batcher(Recorder(), BatchSpec(size=8, timeout=1), clock=clock)
    batcher.reconfigure(size="auto", latency_target=0.05, max_size=64)
    assert batcher.spec.auto
    assert batcher.stats().current_size == 64  # the tuner starts at its cap
    assert batcher.stats().current_timeout == pytest.approx(0.005)  # and a tenth of the target
    batcher.reconfigure(latency_target=0.1, max_size=32, timeout=0.002)  # the tuner is kept
    assert (batcher.stats().current_size, batcher.stats().current_timeout) == (32, 0.002)
    batcher.reconfigure(latency_target=0.1)  # without a wait cap now: the tuner's wait stays
    assert batcher.stats().current_timeout == 0.002
    batcher.reconfigure(size=8)
    assert batcher.spec == BatchSpec(size=8, timeout=0.002)
    assert (batcher.stats().current_size, batcher.stats().current_timeout) == (8, 0.002)
    await batcher.close()


# -- ThreadBatcher -------------------------------------------------------------------


def echo(items: list[int]) -> list[int]:
    return items


def test_thread_batcher_reconfigure_flushes_the_open_batch_now_due() -> None:
    clock = FakeClock()
    calls: list[list[int]] = []

    def record(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    with ThreadBatcher(record, BatchSpec(size=100, timeout=30), clock=clock) as batcher:
        futures = [batcher.submit(i) for i in range(3)]
        batcher.reconfigure(size=3)
        assert [f.result(timeout=5) for f in futures] == [0, 1, 2]
        batcher.reconfigure(size=2, timeout=None)
        assert batcher.spec == BatchSpec(size=2)
        assert [batcher.submit(i) for i in (3, 4)][1].result(timeout=5) == 4
        assert batcher.stats().current_size == 2
    assert calls == [[0, 1, 2], [3, 4]]


def test_thread_batcher_reconfigured_from_another_thread_while_producers_submit() -> None:
    # Given 4 producers, and a thread moving the size between 1 and 50 meanwhile
    batcher = ThreadBatcher(echo, BatchSpec(size=7, timeout=0.001))
    stop = threading.Event()

    def reconfigurer() -> None:
        n = 0
        while not stop.is_set():
            batcher.reconfigure(size=1 + n % 50)
            n += 1

    results: list[list[int]] = [[] for _ in range(4)]

    def producer(k: int) -> None:
        futures = [batcher.submit(k * 1000 + i) for i in range(500)]
        results[k] = [f.result(timeout=10) for f in futures]

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    mover = threading.Thread(target=reconfigurer)
    mover.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    mover.join()
    batcher.close()
    # Then every caller got its own item back, once
    assert results == [[k * 1000 + i for i in range(500)] for k in range(4)]
    assert batcher.stats().succeeded == 2000


# -- Ray's setter tests, through @freight.batched -------------------------------------------


def two_keys(use_class: bool, clock: FakeClock) -> Any:
    """Ray's batched function of two parameters, as a function or a method."""
    if use_class:

        class C:
            @freight.batched(size=2, timeout=1000, clock=clock)
            async def method(self, key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
                return [(key1[i], key2[i]) for i in range(len(key1))]

        return C().method

    @freight.batched(size=2, timeout=1000, clock=clock)
    async def func(key1: list[str], key2: list[str]) -> list[tuple[str, str]]:
        return [(key1[i], key2[i]) for i in range(len(key1))]

    return func


@pytest.mark.parametrize("use_class", [True, False])
async def test_batch_setters(use_class: bool, clock: FakeClock) -> None:
    func = two_keys(use_class, clock)
    assert (func.spec.size, func.spec.timeout) == (2, 1000)
    # Batches of 2
    tasks = [asyncio.ensure_future(func("hi1", "hi2")), asyncio.ensure_future(func("hi3", "hi4"))]
    await clock.advance(0)
    assert all(t.done() for t in tasks)
    assert {t.result() for t in tasks} == {("hi1", "hi2"), ("hi3", "hi4")}
    # Set new values
    func.reconfigure(size=3, timeout=15000)
    assert (func.spec.size, func.spec.timeout) == (3, 15000)
    # Batches of 3
    tasks = [asyncio.ensure_future(func(f"hi{i}", f"hi{i + 1}")) for i in (1, 3, 5)]
    await clock.advance(0)
    assert all(t.done() for t in tasks)
    assert {t.result() for t in tasks} == {("hi1", "hi2"), ("hi3", "hi4"), ("hi5", "hi6")}


async def test_batch_use_earliest_setters(clock: FakeClock) -> None:
    """Set before a batch accumulates: that batch uses the new values. Set while it
    accumulates: freight judges it by the new rule at once (Ray keeps the old values
    for that batch, and would wait for a third call here)."""
    func = two_keys(False, clock)
    func.reconfigure(size=3, timeout=15000)
    assert (func.spec.size, func.spec.timeout) == (3, 15000)
    tasks = [asyncio.ensure_future(func("hi1", "hi2")), asyncio.ensure_future(func("hi3", "hi4"))]
    await clock.advance(100)
    assert not any(t.done() for t in tasks)  # waiting for the last request
    func.reconfigure(size=1, timeout=0)
    assert (func.spec.size, func.spec.timeout) == (1, 0)
    await clock.advance(0)
    assert [t.result() for t in tasks] == [("hi1", "hi2"), ("hi3", "hi4")]
    assert func.batcher().stats().flushes == {"size": 1}  # one batch of both, whole
    # The next batch uses the updated values: one call, at once
    single = asyncio.ensure_future(func("hi1", "hi2"))
    await clock.advance(0)
    assert single.result() == ("hi1", "hi2")


def test_a_sync_batched_function_is_reconfigured_like_its_thread_batcher() -> None:
    clock = FakeClock()
    calls: list[list[int]] = []

    @freight.batched(size=4, timeout=30, clock=clock)
    def echo(items: list[int]) -> list[int]:
        calls.append(list(items))
        return items

    futures = [echo.submit(i) for i in range(2)]
    echo.reconfigure(size=2)  # the open batch of 2 is due now
    assert [f.result(timeout=5) for f in futures] == [0, 1]
    assert echo.spec == BatchSpec(size=2, timeout=30)
    echo.close()
    assert calls == [[0, 1]]


# -- a refused reconfigure changes nothing (review of issue 13, finding 1) ------------


async def test_a_reconfigure_refused_by_the_open_items_changes_nothing(clock: FakeClock) -> None:
    # The new max_bytes cannot weigh the open dict items: refused, and the open batch
    # keeps its deadline (its callers are served on time) and the spec its values.
    batcher = Batcher(Recorder(), BatchSpec(size=10, timeout=0.05), clock=clock)
    first = [batcher.submit_nowait({"a": 1}), batcher.submit_nowait({"a": 2})]
    with pytest.raises(TypeError, match="no default size"):
        batcher.reconfigure(max_bytes=100)
    assert batcher.spec == BatchSpec(size=10, timeout=0.05)
    later = batcher.submit_nowait({"a": 3})  # still accepted under the old spec
    await clock.advance(0.05)
    assert [f.result() for f in [*first, later]] == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert batcher.pending == 0
    await batcher.close()


def test_a_thread_batcher_reconfigure_refused_by_the_open_items_changes_nothing() -> None:
    clock = FakeClock()

    def echo(items: list[dict[str, int]]) -> list[dict[str, int]]:
        return items

    with ThreadBatcher(echo, BatchSpec(size=10, timeout=0.05), clock=clock) as batcher:
        future = batcher.submit({"a": 1})
        with pytest.raises(TypeError, match="no default size"):
            batcher.reconfigure(max_bytes=100)
        assert batcher.spec == BatchSpec(size=10, timeout=0.05)
        clock.advance_sync(0.05)
        assert future.result(timeout=5) == {"a": 1}
        second = batcher.submit({"a": 2})  # accepted under the old spec
        clock.advance_sync(0.05)
        assert second.result(timeout=5) == {"a": 2}


async def test_a_batched_function_of_several_lists_refused_changes_nothing(
    clock: FakeClock,
) -> None:
    @freight.batched(size=10, timeout=0.05, clock=clock)
    async def add(a: list[int], b: list[int]) -> list[int]:
        return [x + y for x, y in zip(a, b, strict=True)]

    call = asyncio.ensure_future(add(1, 2))
    await asyncio.sleep(0)
    with pytest.raises(TypeError, match="no default size"):  # a call is a dict of its args
        add.reconfigure(max_bytes=1000)
    assert add.spec == add.batcher().spec == BatchSpec(size=10, timeout=0.05)
    await clock.advance(0.05)
    assert call.result() == 3
    await add.close()
