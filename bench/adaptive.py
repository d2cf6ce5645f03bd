"""Adaptive batch sizing (``BatchSpec(size="auto")``) against every fixed size, per load.

One command: ``python bench/adaptive.py [--seconds 2] [--target 0.05] [--seed 0]``.

A simulated handler costs 2 ms + 20 µs per item (``await clock.sleep(...)``) and runs one
batch at a time. Callers arrive as a Poisson process at three rates, each replayed
identically (same seed) through:
  auto:   ``Batcher(handler, BatchSpec(size="auto", latency_target=target))``;
  fixed:  ``Batcher(handler, BatchSpec(size=s, timeout=w))`` for every s in 1, 2, 4, …,
          1024 and w in target/8, target/4, target/2 (33 configurations per rate).
Everything runs on a :class:`~freight.testing.FakeClock`: virtual time, so the figures
are deterministic and the run takes seconds, whatever the simulated duration. The
batcher, its buffer, its timers and the tuner are freight's own; only time is simulated.

Per run: each caller's latency (arrival to result), its p99, the throughput
(callers served / from the first arrival to the last result) and, for information, the
share of the run the handler was busy (what a larger batch saves). The best fixed
configuration at a rate is the one of highest throughput among those whose p99 meets
the target (ties: the lower p99).
Targets, at every rate: auto's p99 <= target, and auto's throughput >= 90 % of the best
fixed configuration's. Exit 1 on a miss.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from freight import Batcher, BatchSpec
from freight.testing import FakeClock

FIXED, PER_ITEM = 0.002, 0.000_02
RATES = (500, 5_000, 30_000)
SIZES = tuple(2**i for i in range(11))
WAITS = (1 / 8, 1 / 4, 1 / 2)  # shares of the target
THROUGHPUT_RATIO = 0.9


@dataclass(frozen=True)
class Run:
    """One configuration at one rate."""

    label: str
    p99: float
    throughput: float
    batches: int
    mean_size: float
    final_size: int
    busy: float


def arrivals(rate: float, seconds: float, seed: int) -> list[float]:
    """Poisson arrival times over ``seconds`` (seeded: every configuration sees the same)."""
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < seconds:
        times.append(t)
        t += rng.expovariate(rate)
    return times


async def run(label: str, spec: BatchSpec, times: list[float]) -> Run:
    """Replay ``times`` through a Batcher with ``spec``, on virtual time."""
    clock = FakeClock()

    busy = 0.0

    async def handler(items: list[int]) -> list[int]:
        nonlocal busy
        busy += FIXED + PER_ITEM * len(items)
        await clock.sleep(FIXED + PER_ITEM * len(items))
        return items

    batcher: Batcher[int, int] = Batcher(handler, spec, clock=clock, max_pending=len(times) + 1)
    latencies: list[float] = []
    done: list[float] = []

    def settled(at: float) -> Callable[[object], None]:
        def record(_: object) -> None:
            done.append(clock.now())
            latencies.append(clock.now() - at)

        return record

    for i, at in enumerate(times):
        await clock.advance(at - clock.now())
        batcher.submit_nowait(i).add_done_callback(settled(at))
    while len(latencies) < len(times):
        await clock.advance(0.01)
    last_result = max(done)
    await batcher.close()
    stats = batcher.stats()
    latencies.sort()
    return Run(
        label=label,
        p99=latencies[math.ceil(0.99 * len(latencies)) - 1],
        throughput=len(times) / (last_result - times[0]),
        batches=stats.batches,
        mean_size=stats.mean_batch_size,
        final_size=stats.current_size,
        busy=busy / (last_result - times[0]),
    )


async def bench_rate(
    rate: int, seconds: float, target: float, seed: int
) -> tuple[Run, Run | None, int]:
    times = arrivals(rate, seconds, seed=rate + seed)
    auto = await run("auto", BatchSpec(size="auto", latency_target=target), times)
    fixed = [
        await run(f"size={size} timeout={share * target * 1000:g}ms", spec, times)
        for size in SIZES
        for share in WAITS
        for spec in [BatchSpec(size, share * target)]
    ]
    meeting = [r for r in fixed if r.p99 <= target]
    best = max(meeting, key=lambda r: (r.throughput, -r.p99), default=None)
    return auto, best, len(meeting)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="simulated seconds per run")
    parser.add_argument("--seed", type=int, default=0, help="added to each rate's seed")
    parser.add_argument("--target", type=float, default=0.05, help="p99 latency target, seconds")
    args = parser.parse_args()
    target: float = args.target
    print(
        f"handler {FIXED * 1000:g} ms + {PER_ITEM * 1e6:g} µs/item, Poisson arrivals, "
        f"{args.seconds:g} s simulated per run, p99 target {target * 1000:g} ms"
    )
    started = time.perf_counter()
    ok = True
    for rate in RATES:
        auto, best, meeting = asyncio.run(bench_rate(rate, args.seconds, target, args.seed))
        configs = len(SIZES) * len(WAITS)
        print(f"\n{rate:,} callers/s ({meeting} of {configs} fixed configs meet the target)")
        rows = [auto] if best is None else [auto, best]
        for r in rows:
            name = "auto" if r is auto else f"best fixed: {r.label}"
            print(
                f"  {name:<38} p99 {r.p99 * 1000:7.2f} ms   throughput {r.throughput:9,.0f}/s   "
                f"{r.batches:6,} batches, mean size {r.mean_size:6.1f}, size at end "
                f"{r.final_size:4}, handler busy {r.busy:4.0%}"
            )
        p99_ok = auto.p99 <= target
        ratio = math.inf if best is None else auto.throughput / best.throughput
        tp_ok = ratio >= THROUGHPUT_RATIO
        print(
            f"  auto p99 / target = {auto.p99 / target:.2f} (<= 1: {'ok' if p99_ok else 'MISS'});"
            f" auto / best fixed throughput = {ratio:.3f} (>= {THROUGHPUT_RATIO}: "
            f"{'ok' if tp_ok else 'MISS'})"
        )
        ok = ok and p99_ok and tp_ok
    print(
        f"\n{'all targets met' if ok else 'TARGET MISSED'} ({time.perf_counter() - started:.1f} s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
