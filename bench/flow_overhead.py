"""Flow's speed against its targets, in one run (``python bench/flow_overhead.py``).

The figures (medians of ``--rounds`` rounds, each variant run in turn within a round):

  tracing       the guide's payments consumer (pydantic ``Transaction``, ``where=``,
                batches of 25 or 30 s, one report per batch as ``ForBatch``):
                ``Flow()`` with its default DuckDB tracing (the file written when the
                flow closes, inside the timing) against ``Flow(trace=False)``.
                Target: at most 1.3x.
  trace=False   the same ``Flow(trace=False)`` against a hand-written asyncio pipeline
                doing the same work and batching (``where``, a batch of 25 or a 30 s
                timer from its first item, the handler as a task, a report per batch).
                Target: at most 3x.
  durable       two stages (``Order`` -> "price" -> ``Priced`` -> "ship", batches of 100)
                on a SQLite board: ``publish_many`` of 100 from one publisher, target at
                least 20,000 artifacts/s; ``publish`` from 50 concurrent publishers
                (group commit), target at least 5,000 artifacts/s.
  two stages    for reference, no target: the same two stages in memory against two
                ``asyncio.Queue`` workers that take what is queued (no timers).

Wall-clock times decide (what a user waits for); the CPU time of the whole process
(the DuckDB writer thread included) is printed beside them. Exits 1 if a target is
missed. ``--transactions`` (default 20,000) sets the in-memory runs' size, half of it
the durable ones'. Each time is of publishing and closing (a durable store is opened
and its board restored before).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from freight import BatchSpec, Flow
from freight.flow import ForBatch

SIZE = 100  # the two-stage pipelines' batch size
PUBLISHERS = 50  # concurrent publishers on the durable board

TRACING_TARGET = 1.3
UNTRACED_TARGET = 3.0
MANY_TARGET = 20_000
CONCURRENT_TARGET = 5_000


# -- the guide's payments consumer -----------------------------------------------------


class Transaction(BaseModel):
    id: int
    amount: float


class PaymentBatchReport(BaseModel):
    count: int
    total: float


async def process_payments(batch: list[Transaction]) -> ForBatch:
    return ForBatch(PaymentBatchReport(count=len(batch), total=sum(t.amount for t in batch)))


async def payments_flow(count: int, trace: bool | None) -> Clock:
    flow = Flow(trace=trace)
    reports = 0

    async def payments(batch: list[Transaction]) -> ForBatch:
        nonlocal reports
        reports += 1
        return await process_payments(batch)

    (flow.consumer("payments")
         .consumes(Transaction, where=lambda t: t.amount > 0,
                   batch=BatchSpec(size=25, timeout=timedelta(seconds=30)))
         .publishes(PaymentBatchReport)
         .does(payments))  # fmt: skip
    clock = Clock()
    async with flow:
        for i in range(count):
            await flow.publish(Transaction(id=i, amount=10.0))
    clock.stop()  # the flow closed: its trace file is written
    assert reports == -(-count // 25), reports
    return clock


async def payments_by_hand(count: int) -> Clock:
    """The same work without Flow: where, a batch of 25 or a 30 s timer from its first
    transaction, the handler run as a task, one report per batch."""
    loop = asyncio.get_running_loop()
    reports: list[PaymentBatchReport] = []
    tasks: set[asyncio.Task[None]] = set()
    batch: list[Transaction] = []
    timer: asyncio.TimerHandle | None = None

    async def handle(items: list[Transaction]) -> None:
        reports.append(PaymentBatchReport(count=len(items), total=sum(t.amount for t in items)))

    def flush() -> None:
        nonlocal batch, timer
        if timer is not None:
            timer.cancel()
            timer = None
        items, batch = batch, []
        task = loop.create_task(handle(items))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def publish(transaction: Transaction) -> None:
        nonlocal timer
        if not transaction.amount > 0:
            return
        batch.append(transaction)
        if len(batch) == 1:
            timer = loop.call_later(30, flush)
        if len(batch) >= 25:
            flush()

    clock = Clock()
    for i in range(count):
        await publish(Transaction(id=i, amount=10.0))
    if batch:
        flush()
    await asyncio.gather(*tasks)
    clock.stop()
    assert len(reports) == -(-count // 25)
    return clock


# -- two stages ----------------------------------------------------------------------


@dataclass
class Order:
    n: int


@dataclass
class Priced:
    n: int
    price: float


async def two_stages(
    count: int, store: str | None = None, *, group: int = 1, publishers: int = 1
) -> Clock:
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

    async def publisher(first: int) -> None:
        for n in range(first, count, publishers):
            await flow.publish(Order(n))

    await flow.run_until_idle()  # started: a durable board opened and restored
    clock = Clock()
    async with flow:
        if group > 1:
            for first in range(0, count, group):
                await flow.publish_many(Order(n) for n in range(first, min(count, first + group)))
        else:
            await asyncio.gather(*(publisher(p) for p in range(publishers)))
    clock.stop()
    assert shipped == count, shipped
    return clock


async def two_queues(count: int) -> Clock:
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

    clock = Clock()
    workers = [asyncio.create_task(price()), asyncio.create_task(ship())]
    for n in range(count):
        await q1.put(Order(n))
    q1.put_nowait(None)
    await asyncio.gather(*workers)
    clock.stop()
    assert shipped == count, shipped
    return clock


# -- measuring -----------------------------------------------------------------------


class Clock:
    """Wall-clock and process CPU time from its creation to ``stop()``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]

    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def timed(run: Callable[[], Coroutine[None, None, Clock]], timing: Timing) -> None:
    gc.collect()
    clock = asyncio.run(run())
    timing.wall.append(clock.wall)
    timing.cpu.append(clock.cpu)


def check(label: str, value: float, target: float, *, most: bool, unit: str) -> bool:
    met = value <= target if most else value >= target
    bound = "at most" if most else "at least"
    print(f"  {label:<44} {value:>10,.2f}{unit}  target {bound} {target:,}{unit}  "
          f"{'ok' if met else 'MISSED'}")  # fmt: skip
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n, d = args.transactions, args.transactions // 2
    names = ("by hand", "untraced", "traced", "queues", "stages", "many", "concurrent")
    t = {name: Timing([], []) for name in names}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the default trace file: .freight/traces.duckdb in here
        for r in range(args.rounds):
            timed(lambda: payments_by_hand(n), t["by hand"])
            timed(lambda: payments_flow(n, False), t["untraced"])
            timed(lambda: payments_flow(n, None), t["traced"])
            timed(lambda: two_queues(n), t["queues"])
            timed(lambda: two_stages(n), t["stages"])
            many, concurrent = f"many{r}.db", f"concurrent{r}.db"
            timed(lambda db=many: two_stages(d, db, group=SIZE), t["many"])  # type: ignore[misc]
            timed(lambda db=concurrent: two_stages(d, db, publishers=PUBLISHERS), t["concurrent"])  # type: ignore[misc]
            Path(many).unlink()
            Path(concurrent).unlink()
        os.chdir(Path(__file__).parent)
    m = {name: timing.median() for name, timing in t.items()}

    def us(name: str, count: int) -> str:
        wall, cpu = m[name]
        return f"{wall / count * 1e6:7.2f} µs wall {cpu / count * 1e6:7.2f} µs cpu"

    print(f"flow overhead: {n:,} payments, {d:,} durable artifacts, "
          f"medians of {args.rounds} rounds")  # fmt: skip
    print(f"  payments by hand (asyncio)       {us('by hand', n)} per transaction")
    print(f"  payments Flow(trace=False)       {us('untraced', n)}")
    print(f"  payments Flow() default tracing  {us('traced', n)}")
    print(f"  two stages, asyncio.Queue        {us('queues', n)} per artifact")
    print(f"  two stages, Flow(trace=False)    {us('stages', n)}"
          f"  ratio {m['stages'][0] / m['queues'][0]:.1f}x (reference, no target)")  # fmt: skip
    print(f"  durable publish_many(100)        {us('many', d)}")
    print(f"  durable publish, {PUBLISHERS} publishers   {us('concurrent', d)}")
    cpu_tracing = m["traced"][1] / m["untraced"][1]
    cpu_untraced = m["untraced"][1] / m["by hand"][1]
    print(f"targets (wall clock; cpu ratios: tracing {cpu_tracing:.2f}x, "
          f"trace=False {cpu_untraced:.2f}x):")  # fmt: skip
    results = [
        check("default tracing / trace=False", m["traced"][0] / m["untraced"][0],
              TRACING_TARGET, most=True, unit="x"),
        check("trace=False / hand-written", m["untraced"][0] / m["by hand"][0],
              UNTRACED_TARGET, most=True, unit="x"),
        check("durable publish_many, artifacts/s", d / m["many"][0],
              MANY_TARGET, most=False, unit=""),
        check(f"durable publish x{PUBLISHERS} publishers, artifacts/s", d / m["concurrent"][0],
              CONCURRENT_TARGET, most=False, unit=""),
    ]  # fmt: skip
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
