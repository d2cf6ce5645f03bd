"""Per-item overhead of a bulk Job against a bare Python loop, in one run.

``python bench/job_overhead.py [--items 1000000] [--chunk-size 10000] [--rounds 3]``:
1M no-op items from a generator, through a ``Job`` that checkpoints every chunk of
10k into a SQLite store, against ``for item in generator: sink(item)``.
Prints µs per item for both, the overhead per item and the ratio. Target: overhead
≤ 1 µs per item.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from freight import Job
from freight.store import SqliteStore


def generate(n: int) -> Iterator[int]:
    return iter(range(n))


def bare(n: int) -> float:
    count = 0

    def sink(item: int) -> None:
        nonlocal count
        count += 1

    started = time.perf_counter()
    for item in generate(n):
        sink(item)
    return time.perf_counter() - started


def job(n: int, chunk_size: int, folder: Path, round_: int) -> float:
    store = SqliteStore(folder / f"bench-{round_}.db")
    count = 0

    def sink(items: list[int]) -> None:
        nonlocal count
        count += len(items)

    started = time.perf_counter()
    report = Job(
        f"overhead-{round_}", lambda: generate(n), sink, chunk_size=chunk_size, store=store
    ).run()
    elapsed = time.perf_counter() - started
    assert count == n
    assert report.summary["succeeded"] == n
    store.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory() as tmp:
        bare_s = [bare(n) for _ in range(args.rounds)]
        job_s = [job(n, args.chunk_size, Path(tmp), r) for r in range(args.rounds)]
    b, j = statistics.median(bare_s) / n * 1e6, statistics.median(job_s) / n * 1e6
    print(f"job overhead: {n:,} no-op items, chunks of {args.chunk_size:,}, {args.rounds} rounds")
    print(f"  bare loop   {b:6.3f} µs/item (min {min(bare_s) / n * 1e6:.3f})")
    print(f"  freight Job {j:6.3f} µs/item (min {min(job_s) / n * 1e6:.3f})")
    print(f"  overhead    {j - b:6.3f} µs/item (target <= 1.000), ratio {j / b:.1f}x")
    return 0 if j - b <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
