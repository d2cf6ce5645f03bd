"""Stream demo: many concurrent callers, one batched handler, each caller its own result.

Simulates a service call that costs 2 ms per request plus 10 µs per item (a typical
shape for database inserts, broker publishes or model inference), called:

1. one item at a time (what code does without batching), and
2. through a freight ``Batcher`` (size 100, timeout 10 ms), with one poison item
   that the Retry policy isolates so that only its own caller fails.

Run with ``make demo``; no server needed.
"""

from __future__ import annotations

import asyncio
import time

import freight

CALL_COST = 0.002
ITEM_COST = 0.00001
POISON = 4242


async def service(items: list[int]) -> list[int]:
    """The expensive downstream call: fixed cost per call, small cost per item."""
    await asyncio.sleep(CALL_COST + ITEM_COST * len(items))
    if POISON in items:
        raise ValueError(f"cannot process item {POISON}")
    return [item * item for item in items]


async def one_by_one(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await service([i])
    return (time.perf_counter() - started) / n


async def batched(n: int) -> tuple[float, freight.BatcherStats, list[object]]:
    events: list[freight.BatchEvent] = []
    batcher = freight.Batcher(
        service,
        freight.BatchSpec(size=100, timeout=0.01),
        max_concurrent_batches=4,
        retry=freight.Retry(attempts=2, backoff=0.001),
        name="squares",
        subscribers=[events.append],
    )
    started = time.perf_counter()
    async with batcher:
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(n)), return_exceptions=True
        )
    elapsed = time.perf_counter() - started
    return elapsed / n, batcher.stats(), [o for o in outcomes if isinstance(o, Exception)]


async def main() -> None:
    n_single, n_batched = 300, 10_000
    single = await one_by_one(n_single)
    per_item, stats, errors = await batched(n_batched)
    print(f"one item per call : {single * 1e6:9.1f} µs per item ({n_single} items)")
    print(f"freight Batcher   : {per_item * 1e6:9.1f} µs per item ({n_batched} callers)")
    print(f"speed-up          : {single / per_item:9.1f}x")
    print(
        f"batches: {stats.batches}, flushes by reason: {stats.flushes}, "
        f"efficiency: {stats.efficiency:.2f}, handler calls: {stats.handler_calls}"
    )
    print(f"succeeded: {stats.succeeded}, failed: {stats.failed} -> {errors!r}")
    print(f"latency p50/p99: {stats.latency.p50 * 1e3:.1f} / {stats.latency.p99 * 1e3:.1f} ms")
    assert stats.succeeded == n_batched - 1
    assert len(errors) == 1


if __name__ == "__main__":
    asyncio.run(main())
