"""Flow batch consumers retry an item that failed transiently alone, as a Batcher does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from freight import BatchSpec, Flow, Retry, TransientError
from freight.testing import FakeClock


@dataclass(frozen=True)
class Job:
    n: int


@dataclass(frozen=True)
class Done:
    n: int


async def test_a_retry_backoff_holds_no_in_flight_slot_and_the_item_succeeds_later() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock, trace=False, max_in_flight=1)
    tries: dict[int, int] = {}

    def handle(jobs: list[Job]) -> list[object]:
        for job in jobs:
            tries[job.n] = tries.get(job.n, 0) + 1
        return [TransientError("busy") if tries[j.n] == 1 and j.n == 1 else Done(j.n) for j in jobs]

    flow.consumer("worker", consumes=Job, batch=BatchSpec(1), retry=Retry(3, backoff=30),
                  publishes=Done).does(handle)  # fmt: skip
    await flow.publish(Job(1))
    await flow.run_until_idle()  # job 1 waits 30 s for its retry
    await asyncio.wait_for(flow.publish(Job(2)), 1)  # not blocked by that wait
    await flow.run_until_idle()
    assert sorted(e.payload.n for e in flow.artifacts(Done)) == [2]
    await clock.advance(30)
    await flow.run_until_idle()
    assert sorted(e.payload.n for e in flow.artifacts(Done)) == [1, 2]
    assert tries == {1: 2, 2: 1}
    assert flow.dead_letters() == []
    await flow.close()
