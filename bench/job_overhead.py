"""Per-item overhead of a bulk Job against a bare Python loop, in one run.

``python bench/job_overhead.py [--items 1000000] [--chunk-size 10000] [--rounds 3]``:
1M no-op items from a generator, through a ``Job`` that checkpoints every chunk of
10k into a SQLite store, against ``for item in generator: sink(item)``.
Prints µs per item for both (wall, and the process's CPU time: the machine may be
shared), the overhead per item and the ratio. Target: overhead ≤ 1 µs per item (wall).
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


def bare(n: int) -> tuple[float, float]:
    count = 0

    def sink(item: int) -> None:
        nonlocal count
        count += 1

    cpu, started = time.process_time(), time.perf_counter()
    for item in generate(n):
        sink(item)
    return time.perf_counter() - started, time.process_time() - cpu


def job(n: int, chunk_size: int, folder: Path, round_: int) -> tuple[float, float]:
    store = SqliteStore(folder / f"bench-{round_}.db")
    count = 0

    def sink(items: list[int]) -> None:
        nonlocal count
        count += len(items)

    cpu, started = time.process_time(), time.perf_counter()
    report = Job(
        f"overhead-{round_}", lambda: generate(n), sink, chunk_size=chunk_size, store=store
    ).run()
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    assert count == n
    assert report.summary["succeeded"] == n
    store.close()
    return elapsed, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.items
    with tempfile.TemporaryDirectory() as tmp:
        bare_runs = [bare(n) for _ in range(args.rounds)]
        job_runs = [job(n, args.chunk_size, Path(tmp), r) for r in range(args.rounds)]
    bare_s, job_s = [w for w, _ in bare_runs], [w for w, _ in job_runs]
    b, j = statistics.median(bare_s) / n * 1e6, statistics.median(job_s) / n * 1e6
    b_cpu = statistics.median(c for _, c in bare_runs) / n * 1e6
    j_cpu = statistics.median(c for _, c in job_runs) / n * 1e6
    print(f"job overhead: {n:,} no-op items, chunks of {args.chunk_size:,}, {args.rounds} rounds")
    print(f"  bare loop   {b:6.3f} µs/item (min {min(bare_s) / n * 1e6:.3f})")
    print(f"  freight Job {j:6.3f} µs/item (min {min(job_s) / n * 1e6:.3f})")
    print(f"  overhead    {j - b:6.3f} µs/item (target <= 1.000), ratio {j / b:.1f}x")
    print(f"  CPU time    bare {b_cpu:.3f}, Job {j_cpu:.3f}: overhead {j_cpu - b_cpu:.3f} µs/item")
    return 0 if j - b <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
