"""Bulk-job demo: 200,000 transactions from CSV into SQLite, stopped part-way, resumed.

1. Generates ``.freight/demo/transactions.csv`` (200k rows, a few of them malformed).
2. Runs a checkpointed ``freight.Job`` into ``.freight/demo/app.db`` (upsert on id)
   with a progress display, and stops it at about 40 % (as Ctrl-C or
   ``freight cancel`` from another terminal would).
3. Runs the same job again: it resumes from its checkpoints, does not redo the
   done chunks, dead-letters the malformed rows with their line numbers, and
   prints the report.

Run with ``make demo``; no server needed. ``freight report demo-transactions``
shows the report again afterwards (``--store .freight/demo/freight.db``).
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from freight import Job, Retry
from freight.connectors.sqlite import SqliteSink
from freight.jobs import CsvSource, Progress, ProgressPrinter
from freight.store import SqliteStore

FOLDER = Path(".freight") / "demo"
ROWS = 200_000
MALFORMED = {1_234: "9,999,x", 50_000: "oops", 123_456: "42,not-a-number,EUR,2026-01-01"}


def generate(path: Path) -> None:
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with path.open("w") as f:
        f.write("id,amount,currency,booked_at\n")
        for i in range(ROWS):
            if i in MALFORMED:
                f.write(MALFORMED[i] + "\n")
                continue
            amount = rng.randrange(1, 1_000_000) / 100
            booked = start + timedelta(seconds=rng.randrange(0, 365 * 86_400))
            f.write(f"{i},{amount},{rng.choice(['EUR', 'USD', 'GBP'])},{booked.isoformat()}\n")


def transaction(row: dict[str, str]) -> dict[str, object]:
    """Typed conversion: a row that does not convert is dead-lettered, not loaded as text."""
    return {
        "id": int(row["id"]),
        "amount": float(row["amount"]),
        "currency": row["currency"],
        "booked_at": datetime.fromisoformat(row["booked_at"]).isoformat(),
    }


def make_job(store: SqliteStore, stop_at: float | None, printer: ProgressPrinter) -> Job:
    def on_progress(progress: Progress) -> None:
        printer(progress)
        if stop_at is not None and (progress.fraction or 0) >= stop_at:
            store.request(progress.job_id, "cancel")  # what `freight cancel` does

    return Job(
        "demo-transactions",
        CsvSource(FOLDER / "transactions.csv", convert=transaction),
        SqliteSink(FOLDER / "app.db", "transactions", key="id"),
        chunk_size=10_000,
        retry=Retry(attempts=3, backoff=0.05),
        store=store,
        on_progress=on_progress,
    )


def main() -> None:
    shutil.rmtree(FOLDER, ignore_errors=True)
    FOLDER.mkdir(parents=True)
    generate(FOLDER / "transactions.csv")
    store = SqliteStore(FOLDER / "freight.db")
    print(f"generated {ROWS:,} transactions ({len(MALFORMED)} malformed) in {FOLDER}")

    with ProgressPrinter(every=2.0) as printer:
        first = make_job(store, stop_at=0.4, printer=printer).run()
    print(
        f"first run: {first.status} after {first.summary['processed']:,} rows ({first['reason']})"
    )

    with ProgressPrinter(every=2.0) as printer:
        report = make_job(store, stop_at=None, printer=printer).run()
    with sqlite3.connect(FOLDER / "app.db") as db:
        loaded = db.execute('SELECT count(*) FROM "transactions"').fetchone()[0]
    print(f"second run resumed run {report.job_id[:8]}: {report.status}, {loaded:,} rows loaded")
    shown = {k: report[k] for k in ("status", "summary", "error_categories", "remediation")}
    shown["errors"] = [{k: e[k] for k in ("item", "message")} for e in report["errors"]]
    print(json.dumps(shown, indent=2))
    assert loaded == ROWS - len(MALFORMED)
    assert report.summary["failed"] == len(MALFORMED)


if __name__ == "__main__":
    main()
