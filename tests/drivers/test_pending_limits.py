"""``max_pending`` below ``size``: a batcher holding ``max_pending`` items flushes at once.

No further item can join the open batches until some pending ones settle, so waiting
for ``size`` (or ``max_bytes``) would wait for the timeout each time (20,000 items took
over 120 s), or forever without one. Both batchers, on virtual time: the clock is never
advanced, so any wait for a timeout would show as a test that never finishes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import Future

from hypothesis import given, settings
from hypothesis import strategies as st

from freight import Batcher, BatchEvent, BatchSpec, Retry, ThreadBatcher, TransientError
from freight.testing import FakeClock

GUARD = 30.0  # real seconds before a stalled test fails instead of hanging


def plus_one(items: list[int]) -> list[int]:
    return [i + 1 for i in items]


async def aplus_one(items: list[int]) -> list[int]:
    return [i + 1 for i in items]


def produce(batcher: ThreadBatcher[int, int], items: range) -> list[Future[int]]:
    """Submit ``items`` (blocking for room) from a daemon thread; fail if it stalls."""
    futures: list[Future[int]] = []
    producer = threading.Thread(target=lambda: futures.extend(map(batcher.submit, items)))
    producer.daemon = True
    producer.start()
    producer.join(GUARD)
    assert not producer.is_alive(), f"stalled after {len(futures)} of {len(items)} items"
    return futures


# -- asyncio Batcher ----------------------------------------------------------------


async def test_batcher_20000_items_with_max_pending_below_size_never_wait_for_the_timeout(
    clock: FakeClock,
) -> None:
    events: list[BatchEvent] = []
    b = Batcher(
        aplus_one,
        BatchSpec(size=100, timeout=60),
        max_pending=8,
        clock=clock,
        subscribers=[events.append],
    )
    async with b:
        results = await asyncio.wait_for(
            asyncio.gather(*(b.submit(i) for i in range(20_000))), GUARD
        )
    assert results == [i + 1 for i in range(20_000)]
    assert clock.now() == 0.0  # no batch waited for its 60 s timeout
    assert b.stats().flushes == {"pending": 2_500}
    assert {e.size for e in events} == {8}


async def test_batcher_without_a_timeout_does_not_hang_at_max_pending(clock: FakeClock) -> None:
    b = Batcher(plus_one, BatchSpec(size=50), max_pending=5, clock=clock)
    results = await asyncio.wait_for(asyncio.gather(*(b.submit(i) for i in range(1_000))), GUARD)
    assert results == [i + 1 for i in range(1_000)]
    assert b.pending == 0
    await b.close()


async def test_batcher_below_max_pending_a_partial_batch_still_waits_for_its_timeout(
    clock: FakeClock,
) -> None:
    async with Batcher(aplus_one, BatchSpec(size=10, timeout=60), max_pending=5, clock=clock) as b:
        futures = [b.submit_nowait(i) for i in range(4)]
        await clock.advance(59.9)
        assert not any(f.done() for f in futures)  # 4 < max_pending: room to grow
        future = b.submit_nowait(4)  # the 5th: the batcher is full
        await clock.advance(0)
        assert [await f for f in [*futures, future]] == [1, 2, 3, 4, 5]
        assert clock.now() < 60
    assert b.stats().flushes == {"pending": 1}


async def test_batcher_at_max_pending_flushes_every_key(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    async with Batcher(
        aplus_one,
        BatchSpec(size=10, timeout=60),
        key=lambda i: i % 3,
        max_pending=6,
        clock=clock,
        subscribers=[events.append],
    ) as b:
        futures = [b.submit_nowait(i) for i in range(6)]
        await clock.advance(0)
        assert [f.result() for f in futures] == [1, 2, 3, 4, 5, 6]
    assert sorted((e.key, e.size, e.reason) for e in events) == [
        (0, 2, "pending"),
        (1, 2, "pending"),
        (2, 2, "pending"),
    ]


async def test_batcher_with_max_bytes_above_what_max_pending_items_weigh_flushes_at_once(
    clock: FakeClock,
) -> None:
    async def echo(items: list[bytes]) -> list[bytes]:
        return items

    spec = BatchSpec(size=1_000, timeout=60, max_bytes=10_000)
    async with Batcher(echo, spec, max_pending=4, clock=clock) as b:
        results = await asyncio.wait_for(
            asyncio.gather(*(b.submit(b"x" * 10) for _ in range(400))), GUARD
        )
    assert len(results) == 400
    assert clock.now() == 0.0
    assert b.stats().flushes == {"pending": 100}


async def test_batcher_items_back_from_a_retry_into_a_full_batcher_flush_at_once(
    clock: FakeClock,
) -> None:
    calls: list[list[int]] = []

    async def busy_once(items: list[int]) -> list[int | Exception]:
        calls.append(items)
        if len(calls) == 1:
            return [TransientError("busy") for _ in items]
        return [i + 1 for i in items]

    retry = Retry(attempts=2, backoff=1, jitter=0)
    spec = BatchSpec(size=10, timeout=60)
    async with Batcher(busy_once, spec, max_pending=4, retry=retry, clock=clock) as b:
        futures = [b.submit_nowait(i) for i in range(4)]
        await clock.advance(1)  # the backoff: all four come back, the batcher is still full
        assert [f.result() for f in futures] == [1, 2, 3, 4]
        assert calls == [[0, 1, 2, 3], [0, 1, 2, 3]]
        assert clock.now() == 1.0


# -- ThreadBatcher ------------------------------------------------------------------


def test_thread_batcher_20000_items_with_max_pending_below_size_never_wait_for_the_timeout(
    clock: FakeClock,
) -> None:
    events: list[BatchEvent] = []
    b = ThreadBatcher(
        plus_one,
        BatchSpec(size=100, timeout=60),
        max_pending=8,
        clock=clock,
        subscribers=[events.append],
    )
    futures = produce(b, range(20_000))
    b.close(timeout=GUARD)
    assert [f.result(0) for f in futures] == [i + 1 for i in range(20_000)]
    assert clock.now() == 0.0
    assert b.stats().flushes == {"pending": 2_500}
    assert {e.size for e in events} == {8}


def test_thread_batcher_from_4_threads_at_max_pending_settles_every_item(
    clock: FakeClock,
) -> None:
    b = ThreadBatcher(plus_one, BatchSpec(size=100), max_pending=8, clock=clock)
    results: dict[int, int] = {}
    lock = threading.Lock()

    def run(base: int) -> None:
        futures = {base + i: b.submit(base + i) for i in range(2_000)}
        got = {k: f.result(GUARD) for k, f in futures.items()}
        with lock:
            results.update(got)

    threads = [threading.Thread(target=run, args=(n * 10_000,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
    assert not any(t.is_alive() for t in threads)
    b.close(timeout=GUARD)
    assert len(results) == 8_000
    assert all(v == k + 1 for k, v in results.items())
    assert set(b.stats().flushes) == {"pending"}


def test_thread_batcher_without_a_timeout_does_not_hang_at_max_pending(clock: FakeClock) -> None:
    b = ThreadBatcher(plus_one, BatchSpec(size=50), max_pending=5, clock=clock)
    futures = produce(b, range(1_000))
    assert [f.result(GUARD) for f in futures] == [i + 1 for i in range(1_000)]
    b.close(timeout=GUARD)
    assert b.pending == 0


def test_thread_batcher_below_max_pending_a_partial_batch_still_waits_for_its_timeout(
    clock: FakeClock,
) -> None:
    with ThreadBatcher(plus_one, BatchSpec(size=10, timeout=60), max_pending=5, clock=clock) as b:
        futures = [b.submit(i) for i in range(4)]
        clock.advance_sync(59.9)
        assert not any(f.done() for f in futures)
        futures.append(b.submit(4))
        assert [f.result(GUARD) for f in futures] == [1, 2, 3, 4, 5]
        assert clock.now() < 60
    assert b.stats().flushes == {"pending": 1}


def test_thread_batcher_with_max_bytes_flushes_at_max_pending(clock: FakeClock) -> None:
    def echo(items: list[bytes]) -> list[bytes]:
        return items

    spec = BatchSpec(size=1_000, timeout=60, max_bytes=10_000)
    b = ThreadBatcher(echo, spec, max_pending=4, clock=clock)
    futures = [b.submit(b"x" * 10) for _ in range(400)]
    b.close(timeout=GUARD)
    assert [f.result(0) for f in futures] == [b"x" * 10] * 400
    assert b.stats().flushes == {"pending": 100}


def test_thread_batcher_items_back_from_a_retry_into_a_full_batcher_flush_at_once(
    clock: FakeClock,
) -> None:
    calls: list[list[int]] = []

    def busy_once(items: list[int]) -> list[int | Exception]:
        calls.append(items)
        if len(calls) == 1:
            return [TransientError("busy") for _ in items]
        return [i + 1 for i in items]

    retry = Retry(attempts=2, backoff=1, jitter=0)
    spec = BatchSpec(size=10, timeout=60)
    first_batch = threading.Event()  # set once its items wait out their backoff
    with ThreadBatcher(
        busy_once,
        spec,
        max_pending=4,
        retry=retry,
        clock=clock,
        subscribers=[lambda event: first_batch.set()],
    ) as b:
        futures = [b.submit(i) for i in range(4)]
        assert first_batch.wait(GUARD)
        clock.advance_sync(1)  # the backoff: all four come back, the batcher is still full
        assert [f.result(GUARD) for f in futures] == [1, 2, 3, 4]
        assert calls == [[0, 1, 2, 3], [0, 1, 2, 3]]
        assert clock.now() == 1.0


def test_thread_batcher_done_callback_may_submit_at_max_pending(clock: FakeClock) -> None:
    """A done-callback runs in the worker thread that settled the item; the item's room
    is given back first, so a callback that submits the next item finds it."""
    b = ThreadBatcher(plus_one, BatchSpec(size=10), max_pending=1, clock=clock)
    results: list[int] = []
    finished = threading.Event()

    def chain(future: Future[int]) -> None:
        results.append(future.result())
        if len(results) < 50:
            b.submit(len(results)).add_done_callback(chain)
        else:
            finished.set()

    b.submit(0).add_done_callback(chain)
    assert finished.wait(GUARD), f"stalled after {len(results)} items"
    b.close(timeout=GUARD)
    assert results == list(range(1, 51))


# -- the invariant, with random limits -------------------------------------------------

limits = {
    "size": st.integers(1, 12),
    "max_pending": st.integers(1, 12),
    "timeout": st.one_of(st.none(), st.sampled_from([0.0, 0.5, 3.0])),
    "keys": st.integers(1, 3),
    "concurrency": st.integers(1, 3),
}
program = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 15)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 0.25, 1.0])),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(program=program, **limits)
def test_batcher_flushes_every_submitted_item_exactly_once(
    *,
    size: int,
    max_pending: int,
    timeout: float | None,
    keys: int,
    concurrency: int,
    program: list[tuple[str, float]],
) -> None:
    handled: Counter[int] = Counter()

    async def handler(items: list[int]) -> list[int]:
        await asyncio.sleep(0)
        handled.update(items)
        return [i + 1 for i in items]

    async def scenario() -> None:
        clock = FakeClock()
        b = Batcher(
            handler,
            BatchSpec(size, timeout),
            key=lambda i: i % keys,
            max_pending=max_pending,
            max_concurrent_batches=concurrency,
            clock=clock,
        )
        calls: list[asyncio.Future[int]] = []
        async with b:
            for op, arg in program:
                if op == "submit":
                    start = len(calls)
                    calls += [asyncio.ensure_future(b.submit(start + i)) for i in range(int(arg))]
                await clock.advance(arg if op == "advance" else 0)
                # At rest no batcher holds max_pending items: a full one has flushed.
                assert b.pending < max_pending
                assert b.stats().submitted == len(calls)  # nobody still waits for room
        assert all(c.done() for c in calls)
        assert [c.result() for c in calls] == [n + 1 for n in range(len(calls))]
        assert handled == Counter(range(len(calls)))

    asyncio.run(scenario())


@settings(max_examples=80, deadline=None)
@given(program=program, **limits)
def test_thread_batcher_flushes_every_submitted_item_exactly_once(
    *,
    size: int,
    max_pending: int,
    timeout: float | None,
    keys: int,
    concurrency: int,
    program: list[tuple[str, float]],
) -> None:
    handled: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(items: list[int]) -> list[int]:
        with lock:
            handled.update(items)
        return [i + 1 for i in items]

    clock = FakeClock()
    b = ThreadBatcher(
        handler,
        BatchSpec(size, timeout),
        key=lambda i: i % keys,
        max_pending=max_pending,
        max_concurrent_batches=concurrency,
        clock=clock,
    )
    futures: list[Future[int]] = []
    for op, arg in program:
        if op == "submit":
            futures += produce(b, range(len(futures), len(futures) + int(arg)))
        else:
            clock.advance_sync(arg)
    b.close(timeout=GUARD)
    assert [f.result(0) for f in futures] == [n + 1 for n in range(len(futures))]
    assert handled == Counter(range(len(futures)))


def test_thread_batcher_a_submitter_waiting_for_room_drains_the_item_that_filled_it(
    clock: FakeClock,
) -> None:
    """Flat combining: an item inboxed while another thread held the lock is drained
    by that thread; one about to wait for room must drain it first (its wait releases
    the lock without draining), or the item that fills the batcher is never flushed."""
    b = ThreadBatcher(plus_one, BatchSpec(size=10), max_pending=2, clock=clock)
    first = b.submit(0)
    b._lock.acquire()  # stands for another submitter holding the lock a moment
    second = b.submit(1)  # inboxed: the lock is taken, so its drain is left to the holder
    third: list[Future[int]] = []
    waiter = threading.Thread(target=lambda: third.append(b.submit(2)), daemon=True)
    waiter.start()  # no room (two pending): it queues for the lock, then waits for room
    b._lock.release()
    waiter.join(GUARD)
    assert not waiter.is_alive()
    assert [first.result(GUARD), second.result(GUARD)] == [1, 2]
    b.close(timeout=GUARD)
    assert third[0].result(0) == 3
