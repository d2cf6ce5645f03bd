"""A durable flow for the crash test: ``python -m tests.flow.crash_child STORE publish FIRST N``
publishes Items FIRST..FIRST+N-1 (printing each n once its publish returned);
``... publish FIRST N CONCURRENT`` publishes them from up to CONCURRENT publishers at
once (group commit: the publishes of a turn share one transaction);
``... STORE drain`` restarts the flow and drains it."""

from __future__ import annotations

import asyncio
import random
import sys

from pydantic import BaseModel

from freight import BatchSpec, Flow


class Item(BaseModel):
    n: int


class Done(BaseModel):
    n: int


class Seen(BaseModel):
    n: int


def build(store: str) -> Flow:
    flow = Flow(store=store, name="crash")

    @flow.consumer("batcher").consumes(Item, batch=BatchSpec(size=7, timeout=3600)).publishes(Done)
    async def batcher(items: list[Item]) -> list[Done]:
        return [Done(n=i.n) for i in items]

    @flow.consumer("single").consumes(Item).publishes(Seen)
    async def single(item: Item) -> Seen:
        return Seen(n=item.n)

    return flow


async def main(store: str, mode: str, first: int = 0, count: int = 0, concurrent: int = 1) -> None:
    flow = build(store)
    if mode == "drain":
        await flow.close()
        print("drained", flush=True)
        return

    async def publish(n: int) -> None:
        await flow.publish(Item(n=n))
        print(n, flush=True)  # acknowledged: it must be on the board after any kill

    numbers = list(range(first, first + count))
    rng = random.Random(first)
    while numbers:
        at_once = rng.randint(1, concurrent)  # groups of varying size
        group, numbers = numbers[:at_once], numbers[at_once:]
        await asyncio.gather(*(publish(n) for n in group))
        await asyncio.sleep(0)  # let handlers run between publishes
    await flow.run_until_idle()
    print("published", flush=True)
    await asyncio.Event().wait()  # batches stay open: the parent kills this process


if __name__ == "__main__":
    store, mode, *numbers = sys.argv[1:]
    asyncio.run(main(store, mode, *map(int, numbers)))
