"""Batcher (asyncio): per-caller outcomes, timers on a FakeClock, limits, cancellation, drain."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from freight import (
    Batcher,
    BatcherClosed,
    BatchEvent,
    BatchSpec,
    ConfigError,
    HandlerContractError,
    QueueFull,
    Retry,
    Skipped,
    TransientError,
)
from freight.testing import FakeClock


class Recorder:
    """An async handler that doubles items and records every call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        return [i * 2 for i in items]


async def test_each_caller_gets_its_own_result() -> None:
    handler = Recorder()
    async with Batcher(handler, BatchSpec(size=4)) as b:
        results = await asyncio.gather(*(b.submit(i) for i in range(8)))
    assert results == [i * 2 for i in range(8)]
    assert handler.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_guide_timeline_on_a_fake_clock(clock: FakeClock) -> None:
    handler = Recorder()
    events: list[BatchEvent] = []
    b = Batcher(handler, BatchSpec(size=10, timeout=30), clock=clock, subscribers=[events.append])
    async with b:
        first = [b.submit_nowait(i) for i in range(5)]
        await clock.advance(10)
        first += [b.submit_nowait(i) for i in range(5, 8)]
        await clock.advance(10)
        first += [b.submit_nowait(i) for i in range(8, 10)]
        assert list(await asyncio.gather(*first)) == [i * 2 for i in range(10)]
        assert [(e.reason, e.size, clock.now()) for e in events] == [("size", 10, 20)]
        await clock.advance(5)
        late = [b.submit_nowait(i) for i in range(3)]
        await clock.advance(29.999)
        assert not any(f.done() for f in late)
        await clock.advance(0.001)
        assert list(await asyncio.gather(*late)) == [0, 2, 4]
    assert [(e.reason, e.size) for e in events] == [("size", 10), ("timeout", 3)]
    assert events[1].wait == pytest.approx(30)


async def test_item_error_goes_to_its_caller_only() -> None:
    async def handler(items: list[int]) -> list[int | Exception]:
        return [ValueError(f"bad {i}") if i == 3 else i for i in items]

    async with Batcher(handler, BatchSpec(size=5)) as b:
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(5)), return_exceptions=True)
    assert outcomes[:3] == [0, 1, 2]
    assert isinstance(outcomes[3], ValueError)
    assert outcomes[4] == 4


async def test_raising_handler_fails_every_item_without_retry_policy() -> None:
    async def handler(items: list[int]) -> list[int]:
        raise RuntimeError("down")

    async with Batcher(handler, BatchSpec(size=3)) as b:
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


@pytest.mark.parametrize("bad", [[1], [1, 2, 3, 4], {"a": 1}, 42])
async def test_contract_violation_fails_every_item_explaining_the_rule(bad: object) -> None:
    async def handler(items: list[int]) -> object:
        return bad

    b: Batcher[int, object] = Batcher(handler, BatchSpec(size=3))  # type: ignore[arg-type]
    async with b:
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, HandlerContractError) for o in outcomes)
    assert "same length" in str(outcomes[0]) or "must return a list" in str(outcomes[0])


async def test_none_return_means_success_with_none() -> None:
    seen: list[int] = []

    async def handler(items: list[int]) -> None:
        seen.extend(items)

    b: Batcher[int, None] = Batcher(handler, BatchSpec(size=2))
    async with b:
        assert list(await asyncio.gather(b.submit(1), b.submit(2))) == [None, None]
    assert seen == [1, 2]


async def test_sync_handler_runs_in_a_thread() -> None:
    import threading

    threads: set[int] = set()

    def handler(items: list[int]) -> list[int]:
        threads.add(threading.get_ident())
        return [i + 1 for i in items]

    async with Batcher(handler, BatchSpec(size=2)) as b:
        assert list(await asyncio.gather(b.submit(1), b.submit(2))) == [2, 3]
    assert threading.get_ident() not in threads


async def test_where_rejects_with_skipped(clock: FakeClock) -> None:
    async with Batcher(Recorder(), BatchSpec(size=2), where=lambda i: i >= 0, clock=clock) as b:
        with pytest.raises(Skipped):
            await b.submit(-1)
        with pytest.raises(Skipped):
            b.submit_nowait(-2)
        assert list(await asyncio.gather(b.submit(1), b.submit(2))) == [2, 4]
    assert b.stats().skipped == 2
    assert b.stats().submitted == 2


async def test_keys_batch_separately_with_their_own_timers(clock: FakeClock) -> None:
    handler = Recorder()
    b = Batcher(handler, BatchSpec(size=10, timeout=5), key=lambda i: i % 2, clock=clock)
    async with b:
        evens = [b.submit_nowait(0), b.submit_nowait(2)]
        await clock.advance(3)
        odds = [b.submit_nowait(1)]
        await clock.advance(2)
        assert list(await asyncio.gather(*evens)) == [0, 4]
        assert not odds[0].done()
        await clock.advance(3)
        assert await odds[0] == 2
    assert handler.calls == [[0, 2], [1]]


async def test_submit_after_close_raises_batcher_closed() -> None:
    b = Batcher(Recorder(), BatchSpec(size=2))
    async with b:
        pass
    with pytest.raises(BatcherClosed):
        await b.submit(1)
    with pytest.raises(BatcherClosed):
        b.submit_nowait(1)


async def test_reject_overflow_raises_queue_full() -> None:
    b = Batcher(Recorder(), BatchSpec(size=100, timeout=60), max_pending=3, overflow="reject")
    async with b:
        futures = [b.submit_nowait(i) for i in range(3)]
        with pytest.raises(QueueFull, match="max_pending=3"):
            b.submit_nowait(3)
        with pytest.raises(QueueFull):
            await b.submit(3)
        await b.flush()
        assert [f.result() for f in futures] == [0, 2, 4]
        again = b.submit_nowait(9)  # room again once the batch settled
    assert again.result() == 18


async def test_block_overflow_waits_for_room(clock: FakeClock) -> None:
    b = Batcher(Recorder(), BatchSpec(size=2, timeout=1), max_pending=2, clock=clock)
    async with b:
        first = [asyncio.ensure_future(b.submit(i)) for i in range(2)]
        third = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        assert b.pending <= 2
        assert list(await asyncio.gather(*first)) == [0, 2]
        await clock.advance(1)
        assert await third == 4


async def test_cancel_before_dispatch_removes_the_item(clock: FakeClock) -> None:
    handler = Recorder()
    async with Batcher(handler, BatchSpec(size=10, timeout=5), clock=clock) as b:
        keep = asyncio.ensure_future(b.submit(1))
        drop = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        assert b.pending == 2
        drop.cancel()
        await asyncio.sleep(0)
        assert b.pending == 1
        await clock.advance(5)
        assert await keep == 2
    assert handler.calls == [[1]]
    assert b.stats().cancelled == 1


async def test_cancelled_future_is_dropped_at_dispatch(clock: FakeClock) -> None:
    handler = Recorder()
    async with Batcher(handler, BatchSpec(size=3), clock=clock) as b:
        f1 = b.submit_nowait(1)
        f1.cancel()
        f2, f3 = b.submit_nowait(2), b.submit_nowait(3)
        assert list(await asyncio.gather(f2, f3)) == [4, 6]
    assert handler.calls == [[2, 3]]


async def test_cancel_after_dispatch_drops_only_that_result() -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    calls: list[list[int]] = []

    async def handler(items: list[int]) -> list[int]:
        calls.append(items)
        started.set()
        await gate.wait()
        return items

    async with Batcher(handler, BatchSpec(size=2)) as b:
        t1 = asyncio.ensure_future(b.submit(1))
        t2 = asyncio.ensure_future(b.submit(2))
        await started.wait()  # the batch is dispatched
        assert calls == [[1, 2]]
        t1.cancel()
        gate.set()
        assert await t2 == 2
        with pytest.raises(asyncio.CancelledError):
            await t1


async def test_flush_hands_partial_batches_over_and_waits() -> None:
    handler = Recorder()
    async with Batcher(handler, BatchSpec(size=100)) as b:
        futures = [b.submit_nowait(i) for i in range(3)]
        await b.flush()
        assert all(f.done() for f in futures)
    assert b.stats().flushes == {"manual": 1}


async def test_close_without_drain_fails_pending_items() -> None:
    b = Batcher(Recorder(), BatchSpec(size=100))
    async with b:
        futures = [b.submit_nowait(i) for i in range(3)]
        await b.close(drain=False)
    for f in futures:
        with pytest.raises(BatcherClosed):
            f.result()
    assert b.pending == 0


async def test_drain_settles_1000_items_over_10_keys_within_limits(clock: FakeClock) -> None:
    running = 0
    peak_running = 0
    peak_pending = 0
    b: Batcher[int, int]

    async def handler(items: list[int]) -> list[int]:
        nonlocal running, peak_running, peak_pending
        running += 1
        peak_running = max(peak_running, running)
        peak_pending = max(peak_pending, b.pending)
        await asyncio.sleep(0)
        running -= 1
        return [i + 1 for i in items]

    b = Batcher(
        handler,
        BatchSpec(size=64, timeout=1000),
        key=lambda i: i % 10,
        max_concurrent_batches=3,
        max_pending=1000,
        clock=clock,
    )
    futures = []
    async with b:
        futures = [b.submit_nowait(i) for i in range(1000)]
        with pytest.raises(QueueFull):
            b.submit_nowait(1000)
        assert b.pending == 1000
    outcomes = [f.result() for f in futures]
    assert outcomes == [i + 1 for i in range(1000)]
    assert peak_running <= 3
    assert peak_pending <= 1000
    assert b.pending == 0
    stats = b.stats()
    assert stats.succeeded == 1000
    assert stats.flushes == {"size": 10, "pending": 10}


async def test_ordered_keeps_order_per_key() -> None:
    log: list[tuple[int, int]] = []
    in_flight: set[int] = set()

    async def handler(items: list[tuple[int, int]]) -> None:
        key = items[0][0]
        assert key not in in_flight  # one batch per key at a time
        in_flight.add(key)
        for _ in range(3 - key):  # keys finish in a different order than they started
            await asyncio.sleep(0)
        log.extend(items)
        in_flight.discard(key)

    b: Batcher[tuple[int, int], None] = Batcher(
        handler,
        BatchSpec(size=2),
        key=lambda kv: kv[0],
        ordered=True,
        max_concurrent_batches=4,
    )
    async with b:
        await asyncio.gather(*(b.submit((k, n)) for n in range(6) for k in range(3)))
    for key in range(3):
        assert [n for k, n in log if k == key] == list(range(6))


async def test_poison_item_isolated_in_few_calls() -> None:
    calls = 0

    async def handler(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if 57 in items:
            raise ValueError("poison 57")
        return items

    retry = Retry(attempts=1)
    async with Batcher(handler, BatchSpec(size=100), retry=retry) as b:
        outcomes = await asyncio.gather(*(b.submit(i) for i in range(100)), return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1
    assert str(errors[0]) == "poison 57"
    assert outcomes[57] is errors[0]
    assert sum(1 for o in outcomes if not isinstance(o, Exception)) == 99
    assert calls - 1 <= 2 * math.ceil(math.log2(100)) + 1


async def test_transient_batch_failure_is_retried_after_backoff(clock: FakeClock) -> None:
    attempts = 0

    async def handler(items: list[int]) -> list[int]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("reset")
        return items

    retry = Retry(attempts=3, backoff=1, jitter=0)
    async with Batcher(handler, BatchSpec(size=2), retry=retry, clock=clock) as b:
        futures = [b.submit_nowait(1), b.submit_nowait(2)]
        await clock.advance(0.5)
        assert attempts == 1
        await clock.advance(0.5)  # first backoff (1 s) over
        assert attempts == 2
        await clock.advance(2)  # second backoff (2 s) over
        assert list(await asyncio.gather(*futures)) == [1, 2]
    assert attempts == 3


async def test_transient_item_failure_is_retried_in_a_later_batch(clock: FakeClock) -> None:
    calls: list[list[int]] = []
    flaky = {2: 2}  # item 2 fails transiently twice

    async def handler(items: list[int]) -> list[int | Exception]:
        calls.append(list(items))
        out: list[int | Exception] = []
        for i in items:
            if flaky.get(i, 0) > 0:
                flaky[i] -= 1
                out.append(TransientError(f"busy {i}"))
            else:
                out.append(i * 10)
        return out

    retry = Retry(attempts=3, backoff=1, jitter=0)
    b = Batcher(handler, BatchSpec(size=3, timeout=5), retry=retry, clock=clock)
    async with b:
        futures = [b.submit_nowait(i) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert futures[0].result() == 10
        assert not futures[1].done()
        await clock.advance(1 + 5)  # backoff, then the retry batch's timeout
        await clock.advance(2 + 5)
        assert await futures[1] == 20
    assert calls[0] == [1, 2, 3]
    assert calls[1:] == [[2], [2]]


async def test_transient_item_failure_exhausts_attempts(clock: FakeClock) -> None:
    async def handler(items: list[int]) -> list[Exception]:
        return [TransientError("always busy") for _ in items]

    retry = Retry(attempts=2, backoff=1, jitter=0)
    b: Batcher[int, int] = Batcher(handler, BatchSpec(size=1), retry=retry, clock=clock)
    async with b:
        future = b.submit_nowait(1)
        await clock.advance(1)
        with pytest.raises(TransientError):
            await future
    assert b.stats().handler_calls == 2


async def test_stats_report_reasons_efficiency_and_latency(clock: FakeClock) -> None:
    async with Batcher(Recorder(), BatchSpec(size=4, timeout=2), clock=clock) as b:
        await asyncio.gather(*(b.submit(i) for i in range(4)))
        pending = [b.submit_nowait(i) for i in range(2)]
        await clock.advance(2)
        await asyncio.gather(*pending)
    stats = b.stats()
    assert stats.flushes == {"size": 1, "timeout": 1}
    assert stats.mean_batch_size == 3
    assert stats.efficiency == 0.75
    assert stats.latency.max == pytest.approx(2)
    assert stats.submitted == stats.succeeded == 6


async def test_rate_limit_paces_handler_calls(clock: FakeClock) -> None:
    from freight import RateLimiter

    starts: list[float] = []

    async def handler(items: list[int]) -> list[int]:
        starts.append(clock.now())
        return items

    limiter = RateLimiter(1, per=10, burst=1)
    b = Batcher(handler, BatchSpec(size=1), rate_limit=limiter, clock=clock, max_pending=10)
    async with b:
        futures = [b.submit_nowait(i) for i in range(3)]
        await clock.advance(25)
        await asyncio.gather(*futures)
    assert starts == [0, 10, 20]


async def test_subscriber_errors_do_not_fail_items(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: BatchEvent) -> None:
        raise RuntimeError("exporter down")

    async with Batcher(Recorder(), BatchSpec(size=1), subscribers=[broken]) as b:
        assert await b.submit(1) == 2
    assert "exporter down" in caplog.text


async def test_subscribe_and_unsubscribe() -> None:
    seen: Counter[str] = Counter()
    async with Batcher(Recorder(), BatchSpec(size=1)) as b:
        stop = b.subscribe(lambda e: seen.update([e.reason]))
        await b.submit(1)
        stop()
        await b.submit(2)
    assert seen == {"size": 1}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_concurrent_batches": 0}, "max_concurrent_batches"),
        ({"max_pending": -1}, "max_pending"),
        ({"overflow": "drop"}, "overflow"),
        ({"ordered": "yes"}, "ordered"),
        ({"retry": 3}, "retry"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"clock": object()}, "clock"),
        ({"key": 5}, "key"),
        ({"where": 5}, "where"),
    ],
)
def test_bad_configuration_fails_at_construction(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Batcher(Recorder(), BatchSpec(size=1), **kwargs)  # type: ignore[arg-type]


def test_handler_must_be_callable() -> None:
    with pytest.raises(ConfigError, match="handler"):
        Batcher(42, BatchSpec(size=1))  # type: ignore[arg-type]


async def test_timeout_zero_batches_one_loop_iteration() -> None:
    handler = Recorder()
    async with Batcher(handler, BatchSpec(size=100, timeout=0)) as b:
        await asyncio.gather(*(b.submit(i) for i in range(5)))
    assert handler.calls == [[0, 1, 2, 3, 4]]


async def test_max_pending_below_size_flushes_on_demand() -> None:
    # No timeout and max_pending < size: batches leave only by flush() or close().
    b = Batcher(Recorder(), BatchSpec(size=10), max_pending=3, overflow="reject")
    futures = [b.submit_nowait(i) for i in range(3)]
    with pytest.raises(QueueFull):
        b.submit_nowait(3)
    await b.flush()
    assert [f.result() for f in futures] == [0, 2, 4]
    await b.close()


async def test_close_without_drain_cancels_running_batches() -> None:
    started = asyncio.Event()

    async def stuck(items: list[int]) -> list[int]:
        started.set()
        await asyncio.Event().wait()
        return items

    b = Batcher(stuck, BatchSpec(size=1))
    running = b.submit_nowait(1)
    await started.wait()
    await b.close(drain=False)
    with pytest.raises(BatcherClosed, match="without draining"):
        running.result()
    assert b.pending == 0
    assert b.closed
    assert "closed" in repr(b)


async def test_waiting_for_room_can_be_cancelled(clock: FakeClock) -> None:
    b = Batcher(Recorder(), BatchSpec(size=10, timeout=5), max_pending=1, clock=clock)
    async with b:
        first = b.submit_nowait(1)
        waiting = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await clock.advance(5)
        assert await first == 2
        assert b.pending == 0


async def test_close_wakes_callers_waiting_for_room(clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        await gate.wait()
        return [i * 2 for i in items]

    b = Batcher(held, BatchSpec(size=10, timeout=5), max_pending=1, clock=clock)
    first = b.submit_nowait(1)  # max_pending reached: flushed at once, held in the handler
    waiting = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(b.close())
    await asyncio.sleep(0)
    gate.set()
    await closing
    assert first.result() == 2
    with pytest.raises(BatcherClosed):
        await waiting


async def test_caller_gone_while_its_item_waits_for_a_retry(clock: FakeClock) -> None:
    calls: list[list[int]] = []

    async def handler(items: list[int]) -> list[Exception]:
        calls.append(items)
        return [TransientError("busy") for _ in items]

    retry = Retry(attempts=3, backoff=1, jitter=0)
    b: Batcher[int, int] = Batcher(handler, BatchSpec(size=1), retry=retry, clock=clock)
    async with b:
        task = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert calls == [[1]]
        task.cancel()
        await clock.advance(1)
    assert calls == [[1]]  # not retried for nobody
    assert b.stats().cancelled == 1
    assert b.pending == 0


async def test_close_without_drain_fails_items_waiting_for_retry(clock: FakeClock) -> None:
    async def handler(items: list[int]) -> list[Exception]:
        return [TransientError("busy") for _ in items]

    retry = Retry(attempts=3, backoff=10, jitter=0)
    b: Batcher[int, int] = Batcher(handler, BatchSpec(size=1), retry=retry, clock=clock)
    future = b.submit_nowait(1)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await b.close(drain=False)
    with pytest.raises(BatcherClosed):
        future.result()
    assert clock.pending_timers() == []


async def test_draining_close_still_retries_transient_items(clock: FakeClock) -> None:
    flaky = {"left": 1}

    async def handler(items: list[int]) -> Sequence[int | Exception]:
        if flaky["left"]:
            flaky["left"] -= 1
            return [TransientError("busy") for _ in items]
        return items

    retry = Retry(attempts=2, backoff=1, jitter=0)
    b: Batcher[int, int] = Batcher(handler, BatchSpec(size=10), retry=retry, clock=clock)
    future = b.submit_nowait(5)
    closing = asyncio.ensure_future(b.close())
    await clock.advance(1)
    await closing
    assert future.result() == 5


async def test_a_batcher_belongs_to_one_event_loop() -> None:
    b = Batcher(Recorder(), BatchSpec(size=1))
    async with Batcher(Recorder(), BatchSpec(size=1)) as entered:
        assert entered.closed is False
    assert await b.submit(1) == 2

    def elsewhere() -> None:
        async def use() -> None:
            await b.submit(2)

        asyncio.run(use())

    import threading

    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(elsewhere, errors))
    t.start()
    t.join()
    assert isinstance(errors[0], RuntimeError)
    assert "loop" in str(errors[0])
    await b.close()


def _catch(fn: Callable[[], None], errors: list[BaseException]) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)
