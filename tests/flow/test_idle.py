"""run_until_idle waits on the flow's count of runs, not on event-loop turns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from freight import BatchSpec, Flow, RateLimiter, Retry
from freight.testing import FakeClock


@dataclass
class Hop:
    n: int
    left: int


async def test_run_until_idle_waits_for_a_long_chain_of_handlers_that_yield_often() -> None:
    flow = Flow(clock=FakeClock(), trace=False, allow_cycles=True, max_depth=100)
    seen: list[int] = []

    @flow.consumer("hop", consumes=Hop, publishes=Hop, prevent_self_trigger=False)
    async def hop(h: Hop) -> Hop | None:
        for _ in range(20):  # far more loop turns than any fixed number of them
            await asyncio.sleep(0)
        seen.append(h.left)
        return Hop(h.n, h.left - 1) if h.left else None

    await flow.publish(Hop(0, 30))
    await flow.run_until_idle()
    assert seen == list(range(30, -1, -1))
    await flow.close()


async def test_run_until_idle_waits_for_a_run_blocked_on_something_else_than_the_clock() -> None:
    flow = Flow(clock=FakeClock(), trace=False)
    gate = asyncio.Event()
    done: list[int] = []

    @flow.consumer("waits", consumes=Hop)
    async def waits(h: Hop) -> None:
        await gate.wait()
        done.append(h.n)

    async def open_gate_later() -> None:
        for _ in range(50):
            await asyncio.sleep(0)
        gate.set()

    await flow.publish(Hop(1, 0))
    opener = asyncio.create_task(open_gate_later())
    await flow.run_until_idle()  # a run that waits for an event is busy, not idle
    assert done == [1]
    await opener
    await flow.close()


async def test_runs_waiting_for_a_slot_behind_a_sleeping_run_count_as_waiting_on_the_clock() -> (
    None
):
    clock = FakeClock()
    flow = Flow(clock=clock, trace=False)
    tries: list[tuple[int, float]] = []

    @flow.consumer(
        "one-at-a-time",
        consumes=Hop,
        retry=Retry(attempts=2, backoff=10, jitter=0),
        max_concurrent=1,
    )
    async def flaky(h: Hop) -> None:
        tries.append((h.n, clock.now()))
        if len(tries) == 1:
            raise TimeoutError("slow service")  # transient: retried after 10 s

    await flow.publish(Hop(1, 0))
    await flow.publish(Hop(2, 0))  # waits for the slot the sleeping run holds
    await flow.run_until_idle()  # returns: everything left waits for the clock
    assert tries == [(1, 0)]
    await clock.advance(10)
    await flow.run_until_idle()
    assert tries == [(1, 0), (1, 10), (2, 10)]
    await flow.close()


async def test_a_run_the_clock_woke_is_busy_until_it_ends() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, per=5, burst=1, clock=clock)
    flow = Flow(clock=clock, trace=False)
    handled: list[float] = []

    @flow.consumer("paced", consumes=Hop, batch=BatchSpec(size=1), rate_limit=limiter)
    async def paced(items: list[Hop]) -> None:
        for _ in range(20):
            await asyncio.sleep(0)
        handled.append(clock.now())

    await flow.publish_many([Hop(1, 0), Hop(2, 0)])
    await flow.run_until_idle()
    assert handled == [0]  # the second call waits 5 s for the rate limit
    clock.advance_sync(5)  # the clock reaches it; nothing has run on the loop yet
    await flow.run_until_idle()  # the woken run is busy: this waits for it to end
    assert handled == [0, 5]
    await flow.close()


async def test_close_waits_for_runs_sleeping_on_the_clock() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock, trace=False)
    tries: list[float] = []

    @flow.consumer("flaky", consumes=Hop, retry=Retry(attempts=2, backoff=1, jitter=0))
    async def flaky(h: Hop) -> None:
        tries.append(clock.now())
        if len(tries) == 1:
            raise TimeoutError("slow")

    await flow.publish(Hop(1, 0))
    closing = asyncio.create_task(flow.close())
    await flow.run_until_idle()
    assert not closing.done()  # the retry waits for the clock; close waits for the retry
    await clock.advance(1)
    await closing
    assert tries == [0, 1]


async def test_a_publisher_that_never_waits_lets_handler_runs_go_past_eight_in_flight() -> None:
    """Runs do not pile up to max_in_flight behind a publisher that never awaits anything
    else: past 8 in flight, a publish gives the loop one turn (they run) first."""
    flow = Flow(clock=FakeClock(), trace=False)
    handled: list[int] = []
    in_flight: list[int] = []

    @flow.consumer("each", consumes=Hop)
    async def each(h: Hop) -> None:
        handled.append(h.n)

    for n in range(200):
        await flow.publish(Hop(n, 0))
        in_flight.append(n + 1 - len(handled))
    assert max(in_flight) <= 9
    await flow.run_until_idle()
    assert handled == list(range(200))
