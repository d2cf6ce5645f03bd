"""Invariants of managed batches, over random batches, failures, cancels and expiries.

Whatever is submitted, cancelled, expired or failed, once the workers are idle: every
batch has ended, every request has exactly one final state, each batch's counts are
its requests' states (and add up to its total), and every completed request holds its
own handler's response.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from freight import BatchManager, BatchRequest, BatchSpec, BatchStatus
from freight.manager import RequestState
from freight.store import SqliteStore
from freight.testing import FakeClock


@dataclass(frozen=True)
class Plan:
    sizes: list[int]
    cancel: list[bool]
    short_window: list[bool]
    poison: frozenset[int]
    chunk: int
    advance_first: bool


plans = st.integers(1, 5).flatmap(
    lambda n: st.builds(
        Plan,
        sizes=st.lists(st.integers(1, 30), min_size=n, max_size=n),
        cancel=st.lists(st.booleans(), min_size=n, max_size=n),
        short_window=st.lists(st.booleans(), min_size=n, max_size=n),
        poison=st.frozensets(st.integers(0, 29), max_size=5),
        chunk=st.integers(1, 8),
        advance_first=st.booleans(),
    )
)


async def play(plan: Plan) -> None:
    clock = FakeClock()
    store = SqliteStore(":memory:")

    def handler(bodies: list[int]) -> list[object]:
        return [ValueError(f"poison {b}") if b in plan.poison else b + 1000 for b in bodies]

    manager = BatchManager(store=store, clock=clock)
    manager.register("/e", handler, spec=BatchSpec(size=plan.chunk))
    ids = []
    for size, cancel, short in zip(plan.sizes, plan.cancel, plan.short_window, strict=True):
        window = "1m" if short else "24h"
        batch = await manager.submit(
            [BatchRequest(id=f"r{i}", body=i) for i in range(size)],
            endpoint="/e",
            completion_window=window,
        )
        ids.append(batch.id)
        if cancel:
            await manager.cancel(batch.id)
    if plan.advance_first:
        await clock.advance(61)  # the short windows end before any work
    await manager.run(burst=True)
    for batch_id, size, cancel, short in zip(
        ids, plan.sizes, plan.cancel, plan.short_window, strict=True
    ):
        batch = await manager.get(batch_id)
        results = await manager.get_results(batch_id)
        assert batch.status.terminal
        assert [r.id for r in results] == [f"r{i}" for i in range(size)]
        states = [r.status for r in results]
        counts = batch.request_counts
        assert counts.total == size == counts.finished
        assert counts.completed == states.count(RequestState.COMPLETED)
        assert counts.failed == states.count(RequestState.FAILED)
        assert counts.cancelled == states.count(RequestState.CANCELLED)
        assert counts.expired == states.count(RequestState.EXPIRED)
        for i, r in enumerate(results):
            if r.status is RequestState.COMPLETED:
                assert r.response == i + 1000
            elif r.status is RequestState.FAILED:
                assert r.error is not None
                assert (r.error.type, r.error.message) == ("ValueError", f"poison {i}")
        if cancel:
            assert batch.status is BatchStatus.CANCELLED
            assert counts.cancelled == size
        elif short and plan.advance_first:
            assert batch.status is BatchStatus.EXPIRED
            assert counts.expired == size
        else:
            assert batch.status is BatchStatus.COMPLETED
            assert counts.failed == len([i for i in range(size) if i in plan.poison])
    store.close()


@settings(max_examples=40, deadline=None)
@given(plans)
def test_every_request_ends_once_and_the_counts_are_its_states(plan: Plan) -> None:
    asyncio.run(play(plan))
