"""Per-item overhead of freight's stream batchers against their floors and aiodataloader.

One command, one run, several rounds; prints min and median µs per item and the
ratios. ``python bench/stream_overhead.py [--callers 200000] [--rounds 5]``.

asyncio, 200,000 concurrent callers, a trivial handler, ``size=100``, two forms:
  futures: every caller's future is created (``submit_nowait``), then all are gathered;
  tasks:   one task per caller awaiting ``submit``.
Compared with:
  floor:        create, resolve and await one future per item (and one task per caller);
  hand-written: a minimal batcher (list + future per item, flush at size or on a timer);
  aiodataloader: ``DataLoader(batch_load_fn, max_batch_size=100, cache=False)``.
Target: freight / aiodataloader <= 1.0 in both forms.

Threads: 8 producer threads, each submitting its share and waiting for the results,
against a ``concurrent.futures.Future`` floor (create, resolve, wait per item).
Target: freight / floor <= 1.5.

@batched: the same trivial handler decorated, one task per caller awaiting ``f(i)``,
against one task per caller awaiting ``Batcher.submit(i)``; rounds alternate and each
is timed in CPU time (``time.process_time``: the process's own work, so other load on
the machine weighs less). Target: @batched / Batcher.submit <= 1.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import freight

SIZE = 100

Run = Callable[[int], Coroutine[Any, Any, None]]


async def handler(items: list[int]) -> list[int]:
    return items


# -- floors ------------------------------------------------------------------------


async def floor_futures(n: int) -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]

    def resolve() -> None:
        for i, f in enumerate(futures):
            f.set_result(i)

    loop.call_soon(resolve)
    await asyncio.gather(*futures)


async def floor_tasks(n: int) -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]

    async def caller(f: asyncio.Future[int]) -> int:
        return await f

    tasks = [loop.create_task(caller(f)) for f in futures]

    def resolve() -> None:
        for i, f in enumerate(futures):
            f.set_result(i)

    loop.call_soon(resolve)
    await asyncio.gather(*tasks)


# -- a minimal hand-written batcher ------------------------------------------------


class HandBatcher:
    """What people write by hand: a list of (item, future), flush at size or timeout."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self.items: list[int] = []
        self.futures: list[asyncio.Future[int]] = []
        self.timer: asyncio.TimerHandle | None = None

    def submit_nowait(self, item: int) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.items.append(item)
        self.futures.append(future)
        if len(self.items) >= self.size:
            self.flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.timeout, self.flush)
        return future

    async def submit(self, item: int) -> int:
        return await self.submit_nowait(item)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        items, futures = self.items, self.futures
        self.items, self.futures = [], []
        if items:
            asyncio.get_running_loop().create_task(self._run(items, futures))

    async def _run(self, items: list[int], futures: list[asyncio.Future[int]]) -> None:
        for f, r in zip(futures, await handler(items), strict=True):
            f.set_result(r)


# -- the contenders, in both forms ----------------------------------------------------


def futures_form(
    make: Callable[[], Any], submit: str
) -> Callable[[int], Coroutine[Any, Any, None]]:
    async def run(n: int) -> None:
        b = make()
        fn = getattr(b, submit)
        await asyncio.gather(*[fn(i) for i in range(n)])
        if isinstance(b, freight.Batcher):
            await b.close()

    return run


def tasks_form(make: Callable[[], Any], submit: str) -> Run:
    async def run(n: int) -> None:
        b = make()
        fn = getattr(b, submit)

        async def caller(i: int) -> Any:
            return await fn(i)

        loop = asyncio.get_running_loop()
        await asyncio.gather(*[loop.create_task(caller(i)) for i in range(n)])
        if isinstance(b, freight.Batcher):
            await b.close()

    return run


def make_freight(n: int) -> Callable[[], freight.Batcher[int, int]]:
    return lambda: freight.Batcher(
        handler, freight.BatchSpec(size=SIZE, timeout=0.01), max_pending=n
    )


def make_dataloader() -> Any:
    from aiodataloader import DataLoader

    return DataLoader(handler, max_batch_size=SIZE, cache=False)


def measure_async(
    fn: Callable[[int], Coroutine[Any, Any, None]], n: int, rounds: int
) -> list[float]:
    samples = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        asyncio.run(fn(n))
        samples.append((time.perf_counter() - started) / n * 1e6)
    return samples


# -- threads ----------------------------------------------------------------------------


def thread_floor(n: int, producers: int) -> None:
    def produce(count: int) -> None:
        futures: list[Future[int]] = []
        for i in range(count):
            f: Future[int] = Future()
            f.set_running_or_notify_cancel()
            f.set_result(i)
            futures.append(f)
        for f in futures:
            f.result()

    run_threads(produce, n, producers)


def thread_freight(n: int, producers: int) -> None:
    def sync_handler(items: list[int]) -> list[int]:
        return items

    with freight.ThreadBatcher(
        sync_handler, freight.BatchSpec(size=SIZE, timeout=0.01), max_pending=n
    ) as batcher:

        def produce(count: int) -> None:
            futures = [batcher.submit(i) for i in range(count)]
            for f in futures:
                f.result()

        run_threads(produce, n, producers)


def run_threads(target: Callable[[int], None], n: int, producers: int) -> None:
    threads = [threading.Thread(target=target, args=(n // producers,)) for _ in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure_threads(fn: Callable[[int, int], None], n: int, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        fn(n, 8)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return samples


# -- @batched against Batcher.submit ------------------------------------------------------


async def via_submit(n: int) -> None:
    batcher = freight.Batcher(handler, freight.BatchSpec(size=SIZE, timeout=0.01), max_pending=n)

    async def caller(i: int) -> int:
        return await batcher.submit(i)

    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.create_task(caller(i)) for i in range(n)])
    await batcher.close()


async def via_decorator(n: int) -> None:
    @freight.batched(size=SIZE, timeout=0.01, max_pending=n)
    async def decorated(items: list[int]) -> list[int]:
        return items

    async def caller(i: int) -> int:
        return await decorated(i)

    loop = asyncio.get_running_loop()
    await asyncio.gather(*[loop.create_task(caller(i)) for i in range(n)])
    await decorated.close()


def measure_pair(n: int, rounds: int) -> tuple[list[float], list[float]]:
    """CPU µs per item of Batcher.submit and of @batched, in alternating rounds."""
    submit: list[float] = []
    decorated: list[float] = []
    pairs: list[tuple[Run, list[float]]] = [
        (via_submit, submit),
        (via_decorator, decorated),
    ]
    for _ in range(rounds):
        for fn, samples in pairs:
            gc.collect()
            started = time.process_time()
            asyncio.run(fn(n))
            samples.append((time.process_time() - started) / n * 1e6)
    return submit, decorated


def report(label: str, samples: list[float]) -> float:
    low, median = min(samples), statistics.median(samples)
    print(f"  {label:<28} min {low:7.2f} µs/item   median {median:7.2f} µs/item")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    n, rounds = args.callers, args.rounds
    version = sys.version.split()[0]
    print(f"stream overhead: {n:,} callers, size={SIZE}, {rounds} rounds, Python {version}")
    ok = True
    for form, floor, wrap in (
        ("futures", floor_futures, futures_form),
        ("tasks", floor_tasks, tasks_form),
    ):
        print(f"\n[{form}]")
        results = {
            "floor": report("floor", measure_async(floor, n, rounds)),
            "hand-written": report(
                "hand-written batcher",
                measure_async(
                    wrap(
                        lambda: HandBatcher(SIZE, 0.01),
                        "submit_nowait" if form == "futures" else "submit",
                    ),
                    n,
                    rounds,
                ),
            ),
            "aiodataloader": report(
                "aiodataloader", measure_async(wrap(make_dataloader, "load"), n, rounds)
            ),
            "freight": report(
                "freight Batcher",
                measure_async(
                    wrap(make_freight(n), "submit_nowait" if form == "futures" else "submit"),
                    n,
                    rounds,
                ),
            ),
        }
        f = results["freight"]
        print(
            f"  ratios (median): freight/floor {f / results['floor']:.2f}  "
            f"freight/hand-written {f / results['hand-written']:.2f}  "
            f"aiodataloader/floor {results['aiodataloader'] / results['floor']:.2f}  "
            f"freight/aiodataloader {f / results['aiodataloader']:.2f}  (target <= 1.00)"
        )
        ok &= f / results["aiodataloader"] <= 1.0
    print("\n[threads: 8 producers]")
    floor_t = report("concurrent.futures floor", measure_threads(thread_floor, n, rounds))
    freight_t = report("freight ThreadBatcher", measure_threads(thread_freight, n, rounds))
    print(f"  ratio (median): freight/floor {freight_t / floor_t:.2f}  (target <= 1.50)")
    ok &= freight_t / floor_t <= 1.5
    print("\n[@batched: tasks, CPU time]")
    submit, decorated = measure_pair(n, max(rounds, 5))
    base = report("Batcher.submit", submit)
    deco = report("@batched", decorated)
    print(f"  ratio (median): @batched/Batcher.submit {deco / base:.2f}  (target <= 1.10)")
    ok &= deco / base <= 1.1
    print("\nall targets met" if ok else "\nSOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
