"""Artifacts per second through a two-stage Flow, against a hand-written asyncio pipeline.

``python bench/flow_overhead.py [--artifacts 100000] [--rounds 3]``, one run:

  Flow:        ``Order`` published one by one → consumer "price" (batches of 100,
               one ``Priced`` per order) → consumer "ship" (batches of 100, no-op).
  hand-written: the same two stages over two ``asyncio.Queue``s, each worker taking up
               to 100 items per batch (no routing, no envelopes, no per-item outcomes).

Prints artifacts/s through both stages, µs per artifact, and the per-artifact overhead
of Flow over the hand-written pipeline. Both use dataclass artifacts and no tracing.
Then the same Flow with a durable board (SQLite store), on a tenth of the artifacts,
published one by one and 100 at a time (``publish_many``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from freight import BatchSpec, Flow

SIZE = 100


@dataclass
class Order:
    n: int


@dataclass
class Priced:
    n: int
    price: float


async def flow_run(count: int, store: str | None = None, group: int = 1) -> float:
    flow = Flow(store=store, trace=False)
    shipped = 0

    @(
        flow.consumer("price")
        .consumes(Order, batch=BatchSpec(size=SIZE, timeout=0.05))
        .publishes(Priced)
    )
    async def price(orders: list[Order]) -> list[Priced]:
        return [Priced(o.n, o.n * 1.5) for o in orders]

    @flow.consumer("ship").consumes(Priced, batch=BatchSpec(size=SIZE, timeout=0.05))
    async def ship(items: list[Priced]) -> None:
        nonlocal shipped
        shipped += len(items)

    started = time.perf_counter()
    async with flow:
        if group == 1:
            for n in range(count):
                await flow.publish(Order(n))
        else:
            for first in range(0, count, group):
                await flow.publish_many(Order(n) for n in range(first, min(count, first + group)))
    elapsed = time.perf_counter() - started
    assert shipped == count, shipped
    return elapsed


async def queue_run(count: int) -> float:
    q1: asyncio.Queue[Order | None] = asyncio.Queue()
    q2: asyncio.Queue[Priced | None] = asyncio.Queue()
    shipped = 0

    async def price() -> None:
        done = False
        while not done:
            batch = [await q1.get()]
            while len(batch) < SIZE and not q1.empty():
                batch.append(q1.get_nowait())
            if batch[-1] is None:
                batch.pop()
                done = True
            for p in [Priced(o.n, o.n * 1.5) for o in batch if o is not None]:
                q2.put_nowait(p)
        q2.put_nowait(None)

    async def ship() -> None:
        nonlocal shipped
        done = False
        while not done:
            batch = [await q2.get()]
            while len(batch) < SIZE and not q2.empty():
                batch.append(q2.get_nowait())
            if batch[-1] is None:
                batch.pop()
                done = True
            shipped += len(batch)

    started = time.perf_counter()
    workers = [asyncio.create_task(price()), asyncio.create_task(ship())]
    for n in range(count):
        await q1.put(Order(n))
    q1.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - started
    assert shipped == count, shipped
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.artifacts
    flow_times, queue_times = [], []
    for _ in range(args.rounds):
        gc.collect()
        flow_times.append(asyncio.run(flow_run(n)))
        gc.collect()
        queue_times.append(asyncio.run(queue_run(n)))
    f, q = statistics.median(flow_times), statistics.median(queue_times)
    print(f"flow overhead: {n:,} artifacts through two batched stages (size {SIZE}), "
          f"{args.rounds} rounds, medians")  # fmt: skip
    print(f"  hand-written queues {n / q:>10,.0f} artifacts/s  {q / n * 1e6:6.2f} µs/artifact")
    print(f"  freight Flow        {n / f:>10,.0f} artifacts/s  {f / n * 1e6:6.2f} µs/artifact")
    print(f"  Flow overhead       {(f - q) / n * 1e6:6.2f} µs/artifact, ratio {f / q:.1f}x")
    with tempfile.TemporaryDirectory() as folder:
        d = n // 10
        durable = asyncio.run(flow_run(d, str(Path(folder) / "board.db")))
        grouped = asyncio.run(flow_run(d, str(Path(folder) / "grouped.db"), group=SIZE))
    print(f"  durable Flow, SQLite board ({d:,} artifacts):")
    print(f"    publish           {d / durable:>10,.0f} artifacts/s  "
          f"{durable / d * 1e6:6.1f} µs/artifact (a transaction per publish)")  # fmt: skip
    print(f"    publish_many(100) {d / grouped:>10,.0f} artifacts/s  "
          f"{grouped / d * 1e6:6.1f} µs/artifact (a transaction per 100)")  # fmt: skip


if __name__ == "__main__":
    main()
