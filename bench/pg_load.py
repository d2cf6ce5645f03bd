"""Loading a CSV into PostgreSQL: `freight load` (checkpointed) against psql's \\copy.

``python bench/pg_load.py [--rows 1000000] [--url postgresql://postgres@127.0.0.1:5432/test]``
in one run:
  1. a CSV of ROWS rows (bigint id, text, numeric, timestamptz, text);
  2. ``psql -c "\\copy …"`` into a fresh table: the floor;
  3. ``freight load`` (COPY sink, chunks of 50,000, checkpoints, typed conversion) into a
     fresh table, and its peak RSS; ratio to \\copy (target <= 1.25);
  4. upsert of all rows into the loaded table: ``freight load --key id`` against a
     hand-written psycopg ``executemany`` INSERT … ON CONFLICT;
  5. one-by-one INSERTs of 20,000 rows, to show what batching saves.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

DDL = "id bigint PRIMARY KEY, name text, amount numeric, booked_at timestamptz, note text"


def write_csv(path: Path, rows: int) -> None:
    with path.open("w") as f:
        f.write("id,name,amount,booked_at,note\n")
        for i in range(rows):
            f.write(
                f"{i},user {i},{i % 10_000}.25,2026-0{i % 9 + 1}-1{i % 9}T10:00:00+00:00,n{i}\n"
            )


def timed(argv: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return time.perf_counter() - started, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("psql") is None:
        print("psql is not installed: the \\copy baseline cannot run")
        return 1
    schema = f"freight_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table in ("copy_floor", "loaded"):
            conn.execute(
                sql.SQL("CREATE TABLE {} (" + DDL + ")").format(sql.Identifier(schema, table))
            )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            data = folder / "rows.csv"
            write_csv(data, args.rows)
            n = args.rows
            print(f"pg load: {n:,} rows, {data.stat().st_size / 1e6:.0f} MB CSV")
            copy_s, _ = timed([
                "psql", args.url, "-q", "-c",
                f"\\copy {schema}.copy_floor FROM '{data}' WITH (FORMAT csv, HEADER true)",
            ])  # fmt: skip
            print(f"  psql \\copy          {copy_s:6.2f} s  ({n / copy_s:,.0f} rows/s)")
            load = [sys.executable, "-m", "freight.cli", "load", str(data), "--into", args.url,
                    "--table", "loaded", "--schema", schema, "--chunk-size", "50000",
                    "--workers", str(args.workers),
                    "--store", str(folder / "f.db")]  # fmt: skip
            load_s, rss = timed([*load, "--name", "bench-copy"])
            ratio = load_s / copy_s
            print(f"  freight load (COPY) {load_s:6.2f} s  ({n / load_s:,.0f} rows/s), "
                  f"peak RSS {rss:.0f} MB")  # fmt: skip
            print(f"  ratio to \\copy      {ratio:6.2f}  (target <= 1.25)")
            upsert_s, _ = timed([*load, "--key", "id", "--name", "bench-upsert"])
            print(f"  freight upsert      {upsert_s:6.2f} s  ({n / upsert_s:,.0f} rows/s)")
            hand_s = hand_upsert(args.url, schema, data, n)
            print(
                f"  executemany upsert  {hand_s:6.2f} s  ({n / hand_s:,.0f} rows/s), "
                f"freight is {hand_s / upsert_s:.1f}x faster"
            )
            single = one_by_one(args.url, schema, 20_000)
            per_s = 20_000 / single
            print(f"  one-by-one INSERT   {single:6.2f} s for 20,000 rows ({per_s:,.0f} rows/s): "
                  f"{n / load_s / per_s:.0f}x slower than freight load")  # fmt: skip
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return 0 if ratio <= 1.25 else 1


def hand_upsert(url: str, schema: str, data: Path, rows: int) -> float:
    import csv

    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur, data.open() as f:
        reader = csv.reader(f)
        next(reader)
        query = sql.SQL(
            "INSERT INTO {} (id, name, amount, booked_at, note) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, amount = EXCLUDED.amount, "
            "booked_at = EXCLUDED.booked_at, note = EXCLUDED.note"
        ).format(sql.Identifier(schema, "loaded"))
        batch: list[list[str]] = []
        for row in reader:
            batch.append(row)
            if len(batch) == 10_000:
                cur.executemany(query, batch)
                conn.commit()
                batch = []
        if batch:
            cur.executemany(query, batch)
            conn.commit()
    return time.perf_counter() - started


def one_by_one(url: str, schema: str, rows: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (" + DDL + ")").format(sql.Identifier(schema, "single"))
        )
        started = time.perf_counter()
        query = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s)").format(
            sql.Identifier(schema, "single")
        )
        for i in range(rows):
            conn.execute(query, (i, f"user {i}", i % 10_000, "2026-01-01T00:00:00+00:00", "n"))
        return time.perf_counter() - started


if __name__ == "__main__":
    raise SystemExit(main())
