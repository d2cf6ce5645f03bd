"""ThreadBatcher: the same semantics for threads, driven by the same BatchBuffer."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from freight import (
    Batcher,
    BatcherClosed,
    BatchEvent,
    BatchSpec,
    ConfigError,
    QueueFull,
    Retry,
    Skipped,
    ThreadBatcher,
    TransientError,
)
from freight.testing import FakeClock


def double(items: list[int]) -> list[int]:
    return [i * 2 for i in items]


def test_submit_returns_a_concurrent_future_with_its_own_result() -> None:
    with ThreadBatcher(double, BatchSpec(size=3)) as b:
        futures = [b.submit(i) for i in range(6)]
        assert all(isinstance(f, Future) for f in futures)
        assert [f.result(timeout=5) for f in futures] == [0, 2, 4, 6, 8, 10]


def test_call_blocks_for_the_result() -> None:
    with ThreadBatcher(double, BatchSpec(size=1)) as b:
        assert b.call(21) == 42
        assert b(4) == 8


def test_timeout_flushes_on_the_fake_clock(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    with ThreadBatcher(
        double, BatchSpec(size=10, timeout=30), clock=clock, subscribers=[events.append]
    ) as b:
        futures = [b.submit(i) for i in range(3)]
        clock.advance_sync(29.5)
        assert not any(f.done() for f in futures)
        clock.advance_sync(0.5)
        assert [f.result(timeout=5) for f in futures] == [0, 2, 4]
    assert [(e.reason, e.size) for e in events] == [("timeout", 3)]


def test_many_threads_each_get_their_own_results() -> None:
    results: dict[int, int] = {}
    lock = threading.Lock()

    def handler(items: list[int]) -> list[int]:
        return [i + 1 for i in items]

    with ThreadBatcher(handler, BatchSpec(size=50, timeout=0.005), max_pending=100_000) as b:

        def produce(base: int) -> None:
            futures = {base + i: b.submit(base + i) for i in range(2000)}
            got = {k: f.result(timeout=10) for k, f in futures.items()}
            with lock:
                results.update(got)

        threads = [threading.Thread(target=produce, args=(n * 10_000,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 16_000
    assert all(v == k + 1 for k, v in results.items())
    assert b.stats().succeeded == 16_000
    assert b.pending == 0


def test_errors_per_item_and_where(clock: FakeClock) -> None:
    def handler(items: list[int]) -> list[int | Exception]:
        return [ValueError("odd") if i % 2 else i for i in items]

    with ThreadBatcher(handler, BatchSpec(size=2), where=lambda i: i >= 0, clock=clock) as b:
        with pytest.raises(Skipped):
            b.submit(-1)
        f0, f1 = b.submit(0), b.submit(1)
        assert f0.result(timeout=5) == 0
        with pytest.raises(ValueError, match="odd"):
            f1.result(timeout=5)
    assert b.stats().skipped == 1


def test_reject_and_block_overflow(clock: FakeClock) -> None:
    gate = threading.Event()

    def held(items: list[int]) -> list[int]:
        gate.wait(5)
        return double(items)

    with ThreadBatcher(
        held, BatchSpec(size=10, timeout=1), max_pending=2, overflow="reject", clock=clock
    ) as b:
        b.submit(1)
        b.submit(2)  # max_pending reached: flushed at once, held in the handler
        with pytest.raises(QueueFull):
            b.submit(3)
        with pytest.raises(QueueFull):
            b.submit_nowait(3)
        gate.set()
        b.flush()
        assert b.submit(3) is not None  # room again

    gate.clear()
    with ThreadBatcher(held, BatchSpec(size=10, timeout=1), max_pending=2, clock=clock) as b:
        b.submit(1)
        b.submit(2)
        started = threading.Event()
        third: list[Future[int]] = []

        def blocked() -> None:
            started.set()
            third.append(b.submit(3))

        t = threading.Thread(target=blocked)
        t.start()
        started.wait(5)
        t.join(0.05)
        assert t.is_alive()  # waiting for room
        assert b.pending == 2
        gate.set()
        t.join(5)
        assert not t.is_alive()
        b.flush()
        assert third[0].result(timeout=5) == 6


def test_cancelled_before_dispatch_is_removed(clock: FakeClock) -> None:
    calls: list[list[int]] = []

    def handler(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    with ThreadBatcher(handler, BatchSpec(size=10, timeout=1), clock=clock) as b:
        keep, drop = b.submit(1), b.submit(2)
        assert drop.cancel()
        clock.advance_sync(1)
        assert keep.result(timeout=5) == 1
        with pytest.raises(CancelledError):
            drop.result()
    assert calls == [[1]]
    assert b.stats().cancelled == 1


def test_close_drains_and_refuses_new_items() -> None:
    b = ThreadBatcher(double, BatchSpec(size=100))
    futures = [b.submit(i) for i in range(5)]
    b.close()
    assert [f.result(timeout=5) for f in futures] == [0, 2, 4, 6, 8]
    assert b.stats().flushes == {"close": 1}
    with pytest.raises(BatcherClosed):
        b.submit(1)


def test_close_without_drain_fails_what_did_not_start() -> None:
    b = ThreadBatcher(double, BatchSpec(size=100))
    futures = [b.submit(i) for i in range(3)]
    b.close(drain=False)
    for f in futures:
        with pytest.raises(BatcherClosed):
            f.result(timeout=5)
    assert b.pending == 0


def test_poison_isolation_and_item_retries(clock: FakeClock) -> None:
    flaky = Counter({7: 1})

    def handler(items: list[int]) -> list[int | Exception]:
        if 3 in items:
            raise ValueError("poison 3")
        out: list[int | Exception] = []
        for i in items:
            if flaky[i]:
                flaky[i] -= 1
                out.append(TransientError("busy"))
            else:
                out.append(i)
        return out

    retry = Retry(attempts=2, backoff=1, jitter=0)
    first_batch_done = threading.Event()
    with ThreadBatcher(
        handler,
        BatchSpec(size=10, timeout=2),
        retry=retry,
        clock=clock,
        subscribers=[lambda event: first_batch_done.set()],
    ) as b:
        futures = [b.submit(i) for i in range(10)]
        assert first_batch_done.wait(5)
        for f in futures[:3]:
            assert f.result(timeout=5) in range(3)
        with pytest.raises(ValueError, match="poison 3"):
            futures[3].result(timeout=5)
        # item 7 went back for a later batch: 1 s backoff, then the batch timeout
        clock.advance_sync(1)
        clock.advance_sync(2)
        assert futures[7].result(timeout=5) == 7


def test_ordered_runs_one_batch_per_key_at_a_time() -> None:
    active: set[int] = set()
    log: list[tuple[int, int]] = []
    guard = threading.Lock()

    def handler(items: list[tuple[int, int]]) -> None:
        key = items[0][0]
        with guard:
            assert key not in active
            active.add(key)
        log.extend(items)
        with guard:
            active.discard(key)

    b: ThreadBatcher[tuple[int, int], None] = ThreadBatcher(
        handler, BatchSpec(size=3), key=lambda kv: kv[0], ordered=True, max_concurrent_batches=4
    )
    with b:
        for n in range(30):
            for k in range(3):
                b.submit((k, n))
    for key in range(3):
        assert [n for k, n in log if k == key] == list(range(30))


def test_async_handler_is_refused_with_a_pointer_to_batcher() -> None:
    async def handler(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ConfigError, match=r"freight\.Batcher"):
        ThreadBatcher(handler, BatchSpec(size=1))  # type: ignore[arg-type]


class _Steps:
    """A callable object whose ``__call__`` is an async generator (a streaming handler)."""

    async def __call__(self, items: list[int]) -> AsyncIterator[list[int]]:
        yield items


async def _steps(items: list[int]) -> AsyncIterator[list[int]]:
    yield items


@pytest.mark.parametrize("handler", [_steps, _Steps()], ids=["function", "callable object"])
def test_a_streaming_handler_is_refused_with_a_pointer_to_batcher_stream(handler: Any) -> None:
    # Given an async generator handler (a streaming batch), which threads cannot drive
    # When a ThreadBatcher is made with it
    # Then it is refused at once (not with a HandlerContractError on every batch)
    with pytest.raises(ConfigError) as refused:
        ThreadBatcher(handler, BatchSpec(size=1))
    message = str(refused.value)
    assert "async generator" in message
    assert "Batcher.stream" in message
    assert "@freight.batched" in message


def _rows(items: list[int]) -> Iterator[list[int]]:
    yield items


async def test_a_sync_generator_handler_is_refused_by_both_batchers() -> None:
    # Given a plain generator function (it returns a generator, never a list)
    # When either batcher is made with it
    # Then it is refused at once, as @batched refuses it, not on every batch
    makers: list[Any] = [ThreadBatcher, Batcher]  # mypy refuses the handler already
    for make in makers:
        with pytest.raises(ConfigError, match=r"'_rows' is a generator function") as refused:
            make(_rows, BatchSpec(size=1))
        assert "async def" in str(refused.value)


def test_key_function_error_goes_to_that_caller() -> None:
    def key(item: int) -> int:
        if item == 2:
            raise KeyError("no key for 2")
        return 0

    with ThreadBatcher(double, BatchSpec(size=2), key=key) as b:
        bad = b.submit(2)
        with pytest.raises(KeyError):
            bad.result(timeout=5)
        good = [b.submit(1), b.submit(3)]
        assert [f.result(timeout=5) for f in good] == [2, 6]


def test_drain_1000_items_over_10_keys_within_limits() -> None:
    running = 0
    peak_running = 0
    peak_pending = 0
    guard = threading.Lock()
    gate = threading.Event()
    b: ThreadBatcher[int, int]

    def handler(items: list[int]) -> list[int]:
        nonlocal running, peak_running, peak_pending
        gate.wait(5)
        with guard:
            running += 1
            peak_running = max(peak_running, running)
            peak_pending = max(peak_pending, b.pending)
        with guard:
            running -= 1
        return [i + 1 for i in items]

    b = ThreadBatcher(
        handler,
        BatchSpec(size=64, timeout=1000),
        key=lambda i: i % 10,
        max_concurrent_batches=3,
        max_pending=1000,
        clock=FakeClock(),
    )
    futures = [b.submit(i) for i in range(1000)]
    with pytest.raises(QueueFull):
        b.submit_nowait(1000)  # the handler is held: all 1000 are still pending
    gate.set()
    b.close()
    assert [f.result(timeout=5) for f in futures] == [i + 1 for i in range(1000)]
    assert peak_running <= 3
    assert peak_pending <= 1000
    assert b.pending == 0
    assert b.stats().succeeded == 1000


def test_close_times_out_while_a_handler_is_stuck() -> None:
    release = threading.Event()

    def stuck(items: list[int]) -> list[int]:
        release.wait(10)
        return items

    b = ThreadBatcher(stuck, BatchSpec(size=1))
    future = b.submit(1)
    with pytest.raises(TimeoutError, match="still had 1 pending"):
        b.close(timeout=0.05)
    release.set()
    assert future.result(timeout=5) == 1
    b.close()
    assert "closed" in repr(b)


def test_close_without_drain_fails_items_waiting_for_retry(clock: FakeClock) -> None:
    done = threading.Event()

    def handler(items: list[int]) -> list[Exception]:
        return [TransientError("busy") for _ in items]

    b: ThreadBatcher[int, int] = ThreadBatcher(
        handler,
        BatchSpec(size=1),
        retry=Retry(attempts=3, backoff=10, jitter=0),
        clock=clock,
        subscribers=[lambda e: done.set()],
    )
    future = b.submit(1)
    assert done.wait(5)
    b.close(drain=False)
    with pytest.raises(BatcherClosed):
        future.result(timeout=5)
    assert b.pending == 0


def test_closed_batcher_refuses_blocked_and_new_submitters(clock: FakeClock) -> None:
    gate = threading.Event()

    def held(items: list[int]) -> list[int]:
        gate.wait(5)
        return double(items)

    b = ThreadBatcher(held, BatchSpec(size=10, timeout=5), max_pending=1, clock=clock)
    first = b.submit(1)  # max_pending reached: flushed at once, held in the handler
    refused: list[BaseException] = []

    def blocked() -> None:
        try:
            b.submit(2)
        except BatcherClosed as exc:
            refused.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    t.join(0.05)
    closing = threading.Thread(target=b.close)
    closing.start()
    t.join(5)  # close() refused the blocked submitter while the batch still ran
    assert len(refused) == 1
    gate.set()
    closing.join(5)
    assert first.result(timeout=5) == 2


def test_whole_batch_transient_failure_backs_off_on_the_fake_clock(clock: FakeClock) -> None:
    calls: list[float] = []
    first_call = threading.Event()

    def handler(items: list[int]) -> list[int]:
        calls.append(clock.now())
        first_call.set()
        if len(calls) == 1:
            raise ConnectionError("reset")
        return items

    b: ThreadBatcher[int, int] = ThreadBatcher(
        handler, BatchSpec(size=1), retry=Retry(attempts=2, backoff=4, jitter=0), clock=clock
    )
    future = b.submit(7)
    assert first_call.wait(5)
    assert clock.wait_for_timers() == [4]  # the worker sleeps in virtual time
    clock.advance_sync(4)
    assert future.result(timeout=5) == 7
    assert calls == [0, 4]
    b.close()


def test_rate_limited_thread_batcher_waits_in_virtual_time(clock: FakeClock) -> None:
    from freight import RateLimiter

    starts: list[float] = []
    called = threading.Semaphore(0)

    def handler(items: list[int]) -> list[int]:
        starts.append(clock.now())
        called.release()
        return items

    limiter = RateLimiter(2, per=1, burst=2, unit="items")
    b: ThreadBatcher[int, int] = ThreadBatcher(
        handler, BatchSpec(size=2), rate_limit=limiter, clock=clock
    )
    first = [b.submit(1), b.submit(2)]  # 2 items: the whole burst
    assert called.acquire(timeout=5)
    second = [b.submit(3), b.submit(4)]
    assert clock.wait_for_timers() == [1]  # 2 more tokens at 2 per second
    clock.advance_sync(1)
    assert called.acquire(timeout=5)
    assert [f.result(timeout=5) for f in first + second] == [1, 2, 3, 4]
    assert starts == [0, 1]
    b.close()
