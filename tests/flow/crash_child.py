"""A durable flow for the crash test: ``python -m tests.flow.crash_child STORE publish FIRST N``
publishes Items FIRST..FIRST+N-1 (printing each n once published);
``... STORE drain`` restarts the flow and drains it."""

from __future__ import annotations

import asyncio
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


async def main(store: str, mode: str, first: int = 0, count: int = 0) -> None:
    flow = build(store)
    if mode == "drain":
        await flow.close()
        print("drained", flush=True)
        return
    for n in range(first, first + count):
        await flow.publish(Item(n=n))
        await asyncio.sleep(0)  # let handlers run between publishes
        print(n, flush=True)
    await flow.run_until_idle()
    print("published", flush=True)
    await asyncio.Event().wait()  # batches stay open: the parent kills this process


if __name__ == "__main__":
    store, mode, *numbers = sys.argv[1:]
    asyncio.run(main(store, mode, *map(int, numbers)))
