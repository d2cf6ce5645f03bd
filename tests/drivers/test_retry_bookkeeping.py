"""Per-item retries leave nothing behind: counts and bookkeeping after cancels and aborts."""

from __future__ import annotations

import asyncio

from freight import Batcher, BatchSpec, Retry, TransientError
from freight.testing import FakeClock


async def busy(items: list[int]) -> list[object]:
    return [TransientError("busy") for _ in items]


async def test_abort_uncounts_an_item_whose_caller_gave_up_while_it_waited_to_retry() -> None:
    clock = FakeClock()
    batcher = Batcher(busy, BatchSpec(1), retry=Retry(attempts=3, backoff=10), clock=clock)
    future = batcher.submit_nowait(1)
    await clock.advance(0)  # the batch ran; the item waits 10 s for its retry
    assert batcher.pending == 1
    future.cancel()
    await batcher.close(drain=False)
    assert batcher.pending == 0
    await asyncio.wait_for(batcher.close(drain=True), 1)  # a second close returns at once


async def test_a_cancelled_caller_of_a_requeued_item_leaves_no_retry_record() -> None:
    async def busy_but_3(items: list[int]) -> list[object]:
        return [3 if i == 3 else TransientError("busy") for i in items]

    clock = FakeClock()
    batcher = Batcher(
        busy_but_3, BatchSpec(3, timeout=60), retry=Retry(attempts=3, backoff=1), clock=clock
    )
    task = asyncio.ensure_future(batcher.submit(1))
    batcher.submit_nowait(2)
    batcher.submit_nowait(3)  # due: 3 succeeds, 1 and 2 come back after 1 s
    await clock.advance(1)  # 1 and 2 wait in the buffer again (the batch is open, 60 s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(batcher._tried) == 1  # only item 2's record is left
    await batcher.close(drain=False)


def test_thread_batcher_closed_without_draining_does_not_retry_a_running_batchs_items() -> None:
    import threading

    from freight import BatcherClosed, ThreadBatcher

    started, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def slow_busy(items: list[int]) -> list[object]:
        calls.append(items)
        started.set()
        release.wait(5)
        return [TransientError("busy") for _ in items]

    clock = FakeClock()
    batcher = ThreadBatcher(slow_busy, BatchSpec(1), retry=Retry(attempts=3), clock=clock)
    future = batcher.submit(1)
    assert started.wait(5)
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    release.set()  # the running batch ends after the abort: its item must not come back
    closer.join(5)
    assert not closer.is_alive()
    assert isinstance(future.exception(timeout=5), BatcherClosed)
    assert calls == [[1]]
    assert batcher.pending == 0
