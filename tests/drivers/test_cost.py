"""Batch-level cost, BatchSpec(max_cost=, cost=), through the batchers (issue 13, item 3).

Ray Serve's ``batch_size_fn`` tests ported to freight's API: Ray's ``max_batch_size``
with a ``batch_size_fn`` is freight's ``max_cost`` with a ``cost``; the item that cannot
fit even alone is refused at submit with :class:`~freight.ItemTooLarge` (Ray fails its
future with a ``RuntimeError`` once the batch forms).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import freight
from freight import (
    Batcher,
    BatchEvent,
    BatchSpec,
    ItemTooLarge,
    Retry,
    ThreadBatcher,
    TransientError,
)
from freight.testing import FakeClock

Request = dict[str, Any]


def total_size(items: list[Request]) -> int:
    return sum(item["size"] for item in items)


def padded(items: list[str]) -> int:
    """A padded batch's cost: its longest item times its count."""
    return max(map(len, items)) * len(items)


class Values:
    """A handler that records each batch's values and answers each request's value."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def __call__(self, requests: list[Request]) -> list[str]:
        self.batches.append([r["value"] for r in requests])
        return [r["value"] for r in requests]


async def test_deferred_item_port_an_item_that_does_not_fit_starts_the_next_batch(
    clock: FakeClock,
) -> None:
    handler = Values()
    spec = BatchSpec(size=100, timeout=0.05, max_cost=10, cost=total_size)
    async with Batcher(handler, spec, clock=clock) as batcher:
        # 6 fits; 6 more would make 12 > 10: each is processed in its own batch
        first = batcher.submit_nowait({"size": 6, "value": "first"})
        second = batcher.submit_nowait({"size": 6, "value": "second"})
        await clock.advance(0.05)
        assert {first.result(), second.result()} == {"first", "second"}
    assert handler.batches == [["first"], ["second"]]


async def test_fail_to_fit_port_an_item_over_max_cost_alone_fails_at_submit(
    clock: FakeClock,
) -> None:
    handler = Values()
    spec = BatchSpec(size=100, timeout=0.05, max_cost=10, cost=total_size)
    async with Batcher(handler, spec, clock=clock) as batcher:
        first = asyncio.ensure_future(batcher.submit({"size": 6, "value": "first"}))
        with pytest.raises(ItemTooLarge, match=r"costs 12 alone, over max_cost=10"):
            await batcher.submit({"size": 12, "value": "second"})
        await clock.advance(0.05)
        assert await first == "first"
        assert batcher.pending == 0
    assert handler.batches == [["first"]]
    assert batcher.stats().submitted == 1  # the refused item was never accepted


async def test_multiple_items_fit_port_items_within_max_cost_share_a_batch(
    clock: FakeClock,
) -> None:
    handler = Values()
    spec = BatchSpec(size=100, timeout=0.1, max_cost=20, cost=total_size)
    async with Batcher(handler, spec, clock=clock) as batcher:
        # 5 + 6 + 7 = 18 <= 20
        futures = [
            batcher.submit_nowait({"size": n, "value": v})
            for n, v in zip((5, 6, 7), "abc", strict=True)
        ]
        await clock.advance(0.1)
        assert [f.result() for f in futures] == ["a", "b", "c"]
    assert handler.batches == [["a", "b", "c"]]


async def test_padded_batches_flush_by_cost_and_say_so(clock: FakeClock) -> None:
    events: list[BatchEvent] = []
    batches: list[list[str]] = []

    async def lengths(texts: list[str]) -> list[int]:
        batches.append(list(texts))
        return [len(t) for t in texts]

    spec = BatchSpec(size=64, timeout=1, max_cost=32, cost=padded)
    async with Batcher(lengths, spec, clock=clock, subscribers=[events.append]) as batcher:
        texts = ["a" * n for n in (4, 4, 4, 4, 4, 4, 4, 4, 16, 2)]
        futures = [batcher.submit_nowait(t) for t in texts]
        await clock.advance(1)
        assert [f.result() for f in futures] == [len(t) for t in texts]
    # 8 texts of 4 cost 32: full; 16 then 2 would pad to 16 * 2 = 32: full again
    assert [len(b) for b in batches] == [8, 2]
    assert [e.reason for e in events] == ["cost", "cost"]


async def test_an_item_sent_back_for_a_retry_is_priced_again(clock: FakeClock) -> None:
    tries: list[list[str]] = []

    async def flaky(texts: list[str]) -> list[object]:
        tries.append(list(texts))
        first = len(tries) == 1
        return [TransientError("busy") if first and t == "bb" else t for t in texts]

    spec = BatchSpec(size=10, timeout=1, max_cost=6, cost=padded)
    retry = Retry(attempts=3, backoff=0.5, jitter=0)
    async with Batcher(flaky, spec, clock=clock, retry=retry) as batcher:
        futures = [batcher.submit_nowait(t) for t in ("aa", "bb", "cc")]
        await clock.advance(1)  # 2 * 3 = 6: full at once; "bb" comes back after 0.5 s
        await clock.advance(1)  # and leaves by the timeout, alone
        assert [f.result() for f in futures] == ["aa", "bb", "cc"]
    assert tries == [["aa", "bb", "cc"], ["bb"]]


async def test_reconfigure_moves_max_cost(clock: FakeClock) -> None:
    handler = Values()
    spec = BatchSpec(size=100, timeout=1, max_cost=10, cost=total_size)
    async with Batcher(handler, spec, clock=clock) as batcher:
        batcher.submit_nowait({"size": 4, "value": "a"})
        batcher.submit_nowait({"size": 4, "value": "b"})
        batcher.reconfigure(max_cost=8)  # 8 open: exactly full, due now
        await clock.advance(0)
        assert handler.batches == [["a", "b"]]
        with pytest.raises(ItemTooLarge, match="max_cost=8"):
            batcher.submit_nowait({"size": 9, "value": "c"})
        batcher.reconfigure(max_cost=None)
        assert batcher.spec == BatchSpec(size=100, timeout=1)
        batcher.submit_nowait({"size": 9, "value": "c"})  # no cost limit any more
        await clock.advance(1)
    assert handler.batches == [["a", "b"], ["c"]]


def test_thread_batcher_refuses_an_item_too_large_in_the_callers_thread() -> None:
    clock = FakeClock()
    batches: list[list[str]] = []

    def record(texts: list[str]) -> list[str]:
        batches.append(list(texts))
        return texts

    spec = BatchSpec(size=100, timeout=1, max_cost=9, cost=padded)
    with ThreadBatcher(record, spec, clock=clock) as batcher:
        with pytest.raises(ItemTooLarge, match=r"costs 10 alone, over max_cost=9"):
            batcher.submit("x" * 10)
        futures = [batcher.submit(t) for t in ("aaa", "bbb", "ccc", "d")]
        assert [f.result(timeout=5) for f in futures[:3]] == ["aaa", "bbb", "ccc"]
        clock.advance_sync(1)
        assert futures[3].result(timeout=5) == "d"
        assert batcher.stats().flushes == {"cost": 1, "timeout": 1}
    assert batches == [["aaa", "bbb", "ccc"], ["d"]]


def test_thread_batcher_fails_a_retried_item_that_no_longer_fits() -> None:
    clock = FakeClock()
    tries: list[list[str]] = []

    def flaky(texts: list[str]) -> list[object]:
        tries.append(list(texts))
        return [TransientError("busy") if t == "aaaa" else t for t in texts]

    spec = BatchSpec(size=2, timeout=1, max_cost=8, cost=padded)
    retry = Retry(attempts=3, backoff=0.5, jitter=0)
    with ThreadBatcher(flaky, spec, clock=clock, retry=retry) as batcher:
        futures = [batcher.submit("aaaa"), batcher.submit("b")]
        assert futures[1].result(timeout=5) == "b"
        clock.wait_for_timers(1)  # "aaaa" waits for its retry
        batcher.reconfigure(max_cost=3)  # now "aaaa" alone costs 4 > 3
        clock.advance_sync(0.5)
        with pytest.raises(ItemTooLarge):
            futures[0].result(timeout=5)
        assert batcher.pending == 0
        assert batcher.stats().failed == 1


# -- Ray's batch_size_fn tests, through @freight.batched ---------------------------------------


def sized_handler(batches: list[list[str]], max_cost: int, timeout: float, clock: FakeClock) -> Any:
    @freight.batched(timeout=timeout, max_cost=max_cost, cost=total_size, clock=clock)
    async def batch_handler(requests: list[Request]) -> list[str]:
        batches.append([req["value"] for req in requests])
        return [req["value"] for req in requests]

    return batch_handler


async def test_batch_size_fn_deferred_item_early_break(clock: FakeClock) -> None:
    batches: list[list[str]] = []
    batch_handler = sized_handler(batches, 10, 0.05, clock)
    # Request 1: size 6 (fits); request 2: size 6 (would make 12 > 10: deferred)
    t1 = asyncio.ensure_future(batch_handler({"size": 6, "value": "first"}))
    t2 = asyncio.ensure_future(batch_handler({"size": 6, "value": "second"}))
    await clock.advance(1.0)
    assert t1.done()
    assert t2.done()
    assert {t1.result(), t2.result()} == {"first", "second"}
    assert len(batches) == 2, f"Expected 2 separate batches, got {batches}"


async def test_batch_size_fn_fail_to_fit(clock: FakeClock) -> None:
    batches: list[list[str]] = []
    batch_handler = sized_handler(batches, 10, 0.05, clock)
    t1 = asyncio.ensure_future(batch_handler({"size": 6, "value": "first"}))
    t2 = asyncio.ensure_future(batch_handler({"size": 12, "value": "second"}))
    await clock.advance(0.05)
    assert await t1 == "first"
    with pytest.raises(ItemTooLarge):
        await t2


async def test_batch_size_fn_multiple_items_fit(clock: FakeClock) -> None:
    batches: list[list[str]] = []
    batch_handler = sized_handler(batches, 20, 0.1, clock)
    # All three fit: 5 + 6 + 7 = 18 <= 20
    tasks = [
        asyncio.ensure_future(batch_handler({"size": n, "value": v}))
        for n, v in zip((5, 6, 7), "abc", strict=True)
    ]
    await clock.advance(1.0)
    assert all(t.done() for t in tasks)
    assert len(batches) == 1, f"Expected 1 batch, got {len(batches)}"
    assert set(batches[0]) == {"a", "b", "c"}


async def test_batcher_fails_a_retried_item_that_no_longer_fits(clock: FakeClock) -> None:
    # Given an item sent back for a retry, waiting on its backoff
    tries: list[list[str]] = []

    async def flaky(texts: list[str]) -> list[object]:
        tries.append(list(texts))
        return [TransientError("busy") if t == "aaaa" else t for t in texts]

    spec = BatchSpec(size=2, timeout=1, max_cost=8, cost=padded)
    retry = Retry(attempts=3, backoff=0.5, jitter=0)
    async with Batcher(flaky, spec, clock=clock, retry=retry) as batcher:
        futures = [batcher.submit_nowait("aaaa"), batcher.submit_nowait("b")]
        await clock.advance(0)
        assert futures[1].result() == "b"
        assert not futures[0].done()
        # When a reconfigure makes it cost more than max_cost alone (4 > 3)
        batcher.reconfigure(max_cost=3)
        await clock.advance(0.5)
        # Then its caller gets ItemTooLarge (it does not hang) and nothing is pending
        with pytest.raises(ItemTooLarge, match=r"costs 4 alone, over max_cost=3"):
            await asyncio.wait_for(futures[0], timeout=1)
        assert batcher.pending == 0
        assert batcher.stats().failed == 1
        # And the batcher goes on: a later item that fits is handled
        later = batcher.submit_nowait("c")
        await clock.advance(1)
        assert later.result() == "c"
    assert tries == [["aaaa", "b"], ["c"]]


async def test_a_waiting_submit_refuses_an_item_too_large_before_waiting_for_room(
    clock: FakeClock,
) -> None:
    # Given a full batcher (max_pending=1, overflow="block") with a cost limit
    gate = asyncio.Event()

    async def held(texts: list[str]) -> list[str]:
        await gate.wait()
        return texts

    spec = BatchSpec(size=5, timeout=1, max_cost=3, cost=padded)
    async with Batcher(held, spec, clock=clock, max_pending=1) as batcher:
        first = batcher.submit_nowait("a")
        # When an item over max_cost alone is submitted
        # Then it is refused at once, not after waiting for room
        with pytest.raises(ItemTooLarge, match=r"costs 4 alone, over max_cost=3"):
            await asyncio.wait_for(batcher.submit("long"), timeout=1)
        assert not first.done()
        gate.set()
        assert await first == "a"
