"""Hypothesis: through the asyncio Batcher, every accepted item is handled exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from freight import Batcher, BatchSpec
from freight.testing import FakeClock

steps = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 200)),
        st.tuples(st.just("advance"), st.floats(0, 3)),
        st.tuples(st.just("flush"), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 8),
    timeout=st.one_of(st.none(), st.floats(0, 2)),
    concurrency=st.integers(1, 3),
    ordered=st.booleans(),
    program=steps,
)
def test_every_accepted_item_is_settled_exactly_once(
    size: int,
    timeout: float | None,
    concurrency: int,
    ordered: bool,
    program: list[tuple[str, float]],
) -> None:
    handled: Counter[int] = Counter()

    async def handler(items: list[tuple[int, int]]) -> list[int]:
        await asyncio.sleep(0)
        handled.update(n for _, n in items)
        return [n * 2 for _, n in items]

    async def scenario() -> None:
        clock = FakeClock()
        b = Batcher(
            handler,
            BatchSpec(size, timeout),
            key=lambda item: item[0],
            max_concurrent_batches=concurrency,
            ordered=ordered,
            clock=clock,
        )
        futures: list[asyncio.Future[int]] = []
        async with b:
            for op, arg in program:
                if op == "submit":
                    futures.append(b.submit_nowait((int(arg), len(futures))))
                elif op == "cancel" and futures:
                    futures[int(arg) % len(futures)].cancel()
                elif op == "advance":
                    await clock.advance(arg)
                elif op == "flush":
                    await b.flush()
                assert b.pending <= len(futures)
        assert b.pending == 0
        for n, future in enumerate(futures):
            assert future.done()
            if future.cancelled():
                assert handled[n] <= 1
            else:
                assert future.result() == n * 2
                assert handled[n] == 1
        stats = b.stats()
        assert stats.submitted == len(futures)
        assert stats.succeeded + stats.cancelled == len(futures)

    asyncio.run(scenario())
