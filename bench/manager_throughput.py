"""Managed batches: requests per second and store overhead per request, in one run.

``python bench/manager_throughput.py [--requests 100000] [--size 500] [--url postgresql://…]``:

1. the handler alone: a trivial handler (``{"n": body["n"]}`` per request) called on the
   100k request bodies in calls of ``--size``: the floor;
2. ``BatchManager`` on the SQLite store (a temp file), one ``freight worker`` process;
3. the PostgreSQL store (a fresh schema), one ``freight worker`` process, then two.

For each store: the time to submit the batch (stored whole, one transaction), and from
the submit's start until the batch is ``completed`` with a result per request (the
workers are started and idle before the submit, so their start-up is not counted).
Prints requests/second, the store's overhead per request (µs, against the handler
alone) and the ratios. No target is set: the figures are printed, the exit status is 0
(PostgreSQL unreachable: its rows say so).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from freight.manager import BatchManager

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "/v1/echo"

APP = """\
import os

from freight import BatchSpec
from freight.manager import BatchManager

manager = BatchManager(os.environ["BENCH_STORE"], poll_interval=0.02, max_requests={n})


def echo(bodies):
    return [{{"n": body["n"]}} for body in bodies]


manager.register("{endpoint}", echo, spec=BatchSpec(size={size}))
"""


def echo(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"n": body["n"]} for body in bodies]


def handler_alone(n: int, size: int) -> float:
    """Seconds for the handler on ``n`` bodies in calls of ``size`` (best of 3)."""
    bodies = [{"n": i} for i in range(n)]
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for at in range(0, n, size):
            echo(bodies[at : at + size])
        best = min(best, time.perf_counter() - started)
    return best


def start_workers(folder: Path, store: str, count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` ``freight worker`` processes, returned once each serves."""
    env = {**os.environ, "BENCH_STORE": store, "PYTHONPATH": str(ROOT / "src")}
    logs = [folder / f"worker-{uuid.uuid4().hex[:6]}.log" for _ in range(count)]
    workers = []
    for log in logs:
        with log.open("wb") as err:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "freight.cli", "worker", "--app", "benchapp:manager"],
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                )
            )
    deadline = time.monotonic() + 60
    while not all("serving" in log.read_text() for log in logs):
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise SystemExit(f"a worker did not start: {[log.read_text() for log in logs]}")
        time.sleep(0.05)
    return workers


def run(folder: Path, store: str, n: int, count: int) -> tuple[float, float]:
    """(submit seconds, submit start → completed seconds) with ``count`` workers."""
    manager = BatchManager(store, max_requests=n, poll_interval=0.01)
    manager.register(ENDPOINT, echo)  # submit checks the endpoint; the workers serve it
    manager.list_sync()  # the store's tables exist before the workers start
    workers = start_workers(folder, store, count)
    try:
        started = time.perf_counter()
        batch = manager.submit_sync(
            [{"custom_id": f"r{i}", "body": {"n": i}} for i in range(n)], endpoint=ENDPOINT
        )
        submitted = time.perf_counter() - started
        done = manager.wait_sync(batch.id, timeout=600)
        elapsed = time.perf_counter() - started
        assert done.status == "completed", done
        assert done.request_counts.completed == n, done.request_counts
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        manager.close()
    return submitted, elapsed


def postgres_schema(url: str) -> tuple[str, str] | str:
    """``(URL of a fresh schema, its name)``, or why PostgreSQL cannot be used."""
    schema = f"freight_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except (OSError, psycopg.Error) as exc:
        where = url.rsplit("@", maxsplit=1)[-1]
        return f"PostgreSQL unreachable at {where}: {str(exc).splitlines()[0]}"
    return f"{url}?options=-csearch_path%3D{schema}", schema


def empty(url: str, schema: str | None = None) -> None:
    """Empty the manager's tables (``schema``: drop the whole schema)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if schema is None:
            conn.execute("TRUNCATE manager_requests, manager_batches, manager_claims")
        else:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


Row = tuple[str, float, float] | tuple[str, str]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=500, help="requests per handler call")
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "FREIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    n, size = args.requests, args.size
    alone = handler_alone(n, size)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "benchapp.py").write_text(APP.format(n=n, endpoint=ENDPOINT, size=size))
        rows.append(("SQLite, 1 worker", *run(folder, str(folder / "batches.db"), n, 1)))
        pg = postgres_schema(args.url)
        for count in (1, 2):
            label = f"PostgreSQL, {count} worker{'s' if count > 1 else ''}"
            if isinstance(pg, str):
                rows.append((label, pg))
                continue
            try:
                rows.append((label, *run(folder, pg[0], n, count)))
            finally:
                empty(pg[0])
        if not isinstance(pg, str):
            empty(args.url, pg[1])
    report(n, size, alone, rows)
    return 0


def report(n: int, size: int, alone: float, rows: list[Row]) -> None:
    print(f"managed batches: {n:,} requests, trivial handler, {size} requests per call")
    per = alone / n * 1e6
    print(f"  handler alone          {n / alone:>12,.0f} req/s   {per:8.2f} µs/request")
    for row in rows:
        if len(row) == 2:
            print(f"  {row[0]:<22} skipped: {row[1]}")
            continue
        label, submitted, elapsed = row
        over = elapsed / n * 1e6 - per
        print(
            f"  {label:<22} {n / elapsed:>12,.0f} req/s   {over:8.2f} µs/request of store "
            f"overhead, {elapsed / alone:6.0f}x the handler alone"
        )
        print(
            f"  {'':<22} submit {submitted:.2f} s ({n / submitted:,.0f} req/s), then "
            f"processing {elapsed - submitted:.2f} s ({n / (elapsed - submitted):,.0f} req/s)"
        )
    timed = {row[0]: row[2] for row in rows if len(row) == 3}
    one, two = timed.get("PostgreSQL, 1 worker"), timed.get("PostgreSQL, 2 workers")
    if one and two:
        print(f"  PostgreSQL 2 workers vs 1: {one / two:.2f}x the requests/second "
              f"(on {os.cpu_count()} cores, shared)")  # fmt: skip
    sqlite = timed.get("SQLite, 1 worker")
    if sqlite and one:
        print(f"  SQLite vs PostgreSQL, 1 worker each: {one / sqlite:.2f}x the requests/second")


if __name__ == "__main__":
    raise SystemExit(main())
