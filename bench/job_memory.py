"""Peak memory of a bulk Job over a large CSV: flat in the file's size.

``python bench/job_memory.py [--rows 5000000]``: writes a CSV of that many rows
(5 columns) to a temporary folder, runs a checkpointed ``Job`` over it (typed
conversion, chunks of 10,000, a counting sink) in a child process, and prints the
child's peak RSS, for 1/5 of the rows and for all of them. Target: < 150 MB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys
from freight import Job
from freight.jobs import CsvSource
from freight.store import SqliteStore

path, store = sys.argv[1], sys.argv[2]
count = 0

def sink(items):
    global count
    count += len(items)

def convert(row):
    return (int(row["id"]), float(row["amount"]), row["currency"], row["note"], row["day"])

report = Job("memory", CsvSource(path, convert=convert), sink, chunk_size=10_000,
             store=SqliteStore(store)).run()
assert report.summary["succeeded"] == count, report.summary
print(count)
"""


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,amount,currency,note,day\n")
        for i in range(rows):
            f.write(f"{i},{i % 100_000 / 100},EUR,note number {i},2026-11-{i % 28 + 1:02d}\n")


def run_child(path: Path, store: Path) -> tuple[float, float, int]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kib / 1024, elapsed, int(result.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"job memory: CSV of {args.rows:,} rows, chunks of 10,000, counting sink")
        peak = 0.0
        for rows in (args.rows // 5, args.rows):
            path = folder / f"rows-{rows}.csv"
            write_csv(path, rows)
            size_mb = path.stat().st_size / 1e6
            peak, elapsed, count = run_child(path, folder / f"store-{rows}.db")
            assert count == rows
            print(
                f"  {rows:>10,} rows ({size_mb:7.1f} MB): peak RSS {peak:6.1f} MB "
                f"(max over the runs so far), {elapsed:5.1f} s, {rows / elapsed:,.0f} rows/s"
            )
    print(f"  target: < 150 MB -> {'met' if peak < 150 else 'MISSED'}")
    return 0 if peak < 150 else 1


if __name__ == "__main__":
    raise SystemExit(main())
