"""``retry-failed`` keeps the run's guarantee and reads its dead letters in one pass.

- With a shared transaction (the sink writes into the store's own PostgreSQL database),
  a replay killed at any point and run again writes no row twice, without a key.
- Without one, a replay killed mid-way writes again at most the batch in flight.
- Records are read in file order in one pass (``read_at``) and handled in batches.
- The report lists only current errors; what a replay fixed is listed as resolved.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from freight import Job
from freight.connectors.postgres import PostgresSink
from freight.jobs import CsvSource, JobReport, Position, Record, SourceSize, WriteContext
from freight.jobs._replay import ReadsAt
from freight.store import SqliteStore, Store
from tests.services import POSTGRES_URL, require


class Crash(BaseException):
    """The process dying: nothing catches it, the transaction in flight is rolled back."""


class CrashingSink(PostgresSink):
    """Crashes on its ``crash_on``-th write call, after the rows went in."""

    crash_on: int | None = None
    calls = 0

    def write(self, items: list[Any], context: Any = None) -> list[Any] | None:
        result = super().write(items, context)
        self.calls += 1
        if self.calls == self.crash_on:
            raise Crash
        return result


@pytest.fixture
def conninfo() -> Iterator[str]:
    require("127.0.0.1", 5432, "PostgreSQL")
    schema = f"freight_replay_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigint, CONSTRAINT no_fours CHECK (id % 4 <> 0))").format(
                sql.Identifier(schema, "t")
            )
        )
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def rows_in(conninfo: str) -> tuple[int, int]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone()
    assert row is not None
    return row[0], row[1]


def load_then_crash_a_replay(conninfo: str, store: Store) -> tuple[Job, CrashingSink, str]:
    """200 rows, the 50 multiples of 4 refused by the table; the cause is then fixed and
    a replay (batches of 10) crashes after writing its third batch."""
    sink = CrashingSink(conninfo, "t", columns=["id"])  # plain COPY, no key
    job = Job("replay", [{"id": i} for i in range(200)], sink, chunk_size=10, store=store)
    first = job.run()
    assert (first.status, first.summary["failed"]) == ("completed_with_errors", 50)
    assert rows_in(conninfo) == (150, 150)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ALTER TABLE t DROP CONSTRAINT no_fours")  # the cause is fixed
    sink.calls, sink.crash_on = 0, 3
    with pytest.raises(Crash):
        job.retry_failed()
    sink.crash_on = None
    return job, sink, first.job_id


def test_a_replay_killed_mid_way_writes_no_row_twice_in_a_shared_transaction(
    conninfo: str,
) -> None:
    from freight.store._postgres import PostgresStore

    store = PostgresStore(conninfo)
    job, sink, run_id = load_then_crash_a_replay(conninfo, store)
    # The third batch's rows and the marking of its letters were one transaction.
    assert rows_in(conninfo) == (170, 170)
    assert len(store.dead_letters(run_id)) == 30
    report = job.retry_failed()
    assert rows_in(conninfo) == (200, 200)
    assert (report.status, report.summary["succeeded"], report.summary["failed"]) == (
        "completed",
        200,
        0,
    )
    assert report["errors"] == []
    assert report["summary"]["resolved"] == 50
    sink.close()
    store.close()


def test_without_a_shared_transaction_a_killed_replay_rewrites_only_its_batch_in_flight(
    conninfo: str, tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "freight.db")
    job, sink, run_id = load_then_crash_a_replay(conninfo, store)
    assert rows_in(conninfo) == (180, 180)  # the sink committed batch 3, the store did not
    assert len(store.dead_letters(run_id)) == 30
    report = job.retry_failed()
    assert rows_in(conninfo) == (210, 200)  # at least once: batch 3 (10 rows) written twice
    assert (report.status, report.summary["failed"]) == ("completed", 0)
    sink.close()


class OnlyRead:
    """A source of ``n`` records that counts its reads; no ``read_at`` (the per-letter
    fallback)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read_calls = 0

    def fingerprint(self) -> str:
        return f"positioned:{self.n}"

    def size(self) -> SourceSize:
        return SourceSize(items=self.n)

    def read(self, start: Position | None = None) -> Iterator[Record]:
        self.read_calls += 1
        first = 0 if start is None else start[0]
        return (Record(i, i, {"id": i}, unit="item") for i in range(first, self.n))


class Positioned(OnlyRead):
    """The same source with ``read_at``: the positions in one pass."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.read_at_calls = 0

    def read_at(self, positions: Iterable[Position]) -> Iterator[Record]:
        self.read_at_calls += 1
        last = -1
        for offset, ordinal in positions:
            assert offset > last, "positions come in ascending order"
            last = offset
            if offset < self.n:
                yield Record(offset, ordinal, {"id": offset}, unit="item")


def picky(refused: set[int], calls: list[int]) -> Any:
    def write(items: list[dict[str, int]], context: WriteContext) -> list[object]:
        calls.append(len(items))
        return [ValueError(f"refused {i['id']}") if i["id"] in refused else None for i in items]

    return write


def test_replay_reads_positions_in_one_pass_and_writes_in_batches(tmp_path: Path) -> None:
    source = Positioned(1_000)
    assert isinstance(source, ReadsAt)
    refused = set(range(0, 1_000, 3))
    calls: list[int] = []
    job = Job("batched", source, picky(refused, calls), chunk_size=100,
              store=SqliteStore(tmp_path / "f.db"))  # fmt: skip
    first = job.run()
    assert first.summary["failed"] == len(refused)
    source.read_calls = 0
    calls.clear()
    refused -= set(range(0, 1_000, 6))  # half of them are fixed
    report = job.retry_failed()
    assert (source.read_at_calls, source.read_calls) == (1, 0)
    assert calls[:4] == [100, 100, 100, 34]  # 334 records in batches of the chunk size
    assert report.summary["failed"] == len(refused)
    assert report.summary["succeeded"] == 1_000 - len(refused)
    assert {e["item"] for e in report["errors"]} <= {f"item {i}" for i in refused}
    assert report["summary"]["resolved"] == 167
    assert all(e["retry_attempts"] == 2 for e in report["errors"])


def test_a_source_without_read_at_is_read_at_each_position(tmp_path: Path) -> None:
    source = OnlyRead(50)
    assert not isinstance(source, ReadsAt)
    refused = {7, 21, 42}
    calls: list[int] = []
    job = Job("fallback", source, picky(refused, calls), chunk_size=10,
              store=SqliteStore(tmp_path / "f.db"))  # fmt: skip
    job.run()
    source.read_calls = 0
    refused.clear()
    report = job.retry_failed()
    assert source.read_calls == 3
    assert (report.status, report.summary["succeeded"], report["errors"]) == ("completed", 50, [])


def test_the_report_lists_current_errors_and_what_replays_resolved(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "f.db")
    broken = {3, 8, 11}
    written: Counter[int] = Counter()

    def sink(batch: list[int]) -> list[object]:
        written.update(i for i in batch if i not in broken)
        return [ValueError(f"rejected {i}") if i in broken else None for i in batch]

    job = Job("resolve", list(range(15)), sink, chunk_size=5, store=store)
    first = job.run()
    assert sorted(e["item"] for e in first["errors"]) == ["item 11", "item 3", "item 8"]
    broken -= {3, 8}
    again = job.retry_failed()
    assert [e["item"] for e in again["errors"]] == ["item 11"]  # the current error only
    assert again["error_categories"] == {"permanent": 1}
    assert sorted(r["item"] for r in again["resolved"]) == ["item 3", "item 8"]
    assert again["resolved"][0]["message"] == "rejected 3"  # the error it had
    assert again["resolved"][0]["resolved_at"] is not None
    assert (again.summary["failed"], again.summary["resolved"]) == (1, 2)
    broken.clear()
    final = job.retry_failed()
    assert (final.status, final["errors"], final.summary["resolved"]) == ("completed", [], 3)
    assert written == Counter(range(15))
    kinds = [e for e in store.events(first.job_id) if e.kind == "retried_failed"]
    assert [e.data["replayed"] for e in kinds] == [3, 1]


# A floor, not the bar: 20,000 rows/s is measured by ``bench/replay_rate.py``
# (~55,000 on a quiet machine, ~20,000 on a loaded one). An algorithmic regression
# (a pass per letter, a quadratic lookup) falls far under this floor; a slow day does not.
FLOOR = 5_000


def rows_per_cpu_second(rows: int, replay: Callable[[], JobReport]) -> tuple[float, JobReport]:
    """Rows replayed per second of this process's CPU time: what the replay costs,
    whatever else the machine runs meanwhile (its wall time is shared, its CPU is not)."""
    started = time.process_time()
    report = replay()
    return rows / (time.process_time() - started), report


def test_replay_handles_at_least_5_000_rows_a_second(tmp_path: Path) -> None:
    """The replay's own cost (read the letters, batch, write, mark, report) is far under
    the issue's bar of 20,000 rows/s: measured ~100,000/s."""
    n = 40_000
    source = Positioned(n)
    refused = set(range(n))
    job = Job("fast", source, picky(refused, []), chunk_size=10_000,
              store=SqliteStore(tmp_path / "f.db"))  # fmt: skip
    assert job.run().summary["failed"] == n
    refused.clear()
    rate, report = rows_per_cpu_second(n, job.retry_failed)
    assert (report.status, report.summary["succeeded"]) == ("completed", n)
    assert source.read_at_calls == 1
    assert rate >= FLOOR, f"{rate:,.0f} rows/s"


def test_replay_from_a_csv_file_reads_it_once_at_5_000_rows_a_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.csv"
    n = 40_000
    path.write_text("id,note\n" + "".join(f"{i},{'x' * 40}\n" for i in range(n)))
    if not isinstance(CsvSource(path), ReadsAt):
        pytest.skip("CsvSource.read_at is not there yet (issue 11, item 14, sources side)")
    store = SqliteStore(tmp_path / "f.db")

    def odd(batch: list[dict[str, str]]) -> list[object]:
        return [ValueError("odd") if int(row["id"]) % 2 else None for row in batch]

    first = Job("csv", CsvSource(path), odd, chunk_size=10_000, store=store).run()
    assert first.summary["failed"] == n // 2
    fixed = Job("csv", CsvSource(path), lambda batch: None, chunk_size=10_000, store=store)
    rate, report = rows_per_cpu_second(n // 2, fixed.retry_failed)
    assert (report.status, report.summary["succeeded"]) == ("completed", n)
    assert rate >= FLOOR, f"{rate:,.0f} rows/s"  # measured ~55,000/s


# -- a keyed replay never puts an older line over a newer one (probe of issue 11) -------


def keyed_csv(path: Path, rows: list[tuple[int, str]]) -> Path:
    path.write_text("k,v\n" + "".join(f"{k},{v}\n" for k, v in rows))
    return path


class Table:
    """An upsert sink on ``k`` that refuses the values in ``refused`` (the 'trigger')."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.refused: set[str] = set()

    def write(self, batch: list[dict[str, str]]) -> list[object]:
        out: list[object] = []
        for row in batch:
            if row["v"] in self.refused:
                out.append(ValueError(f"no {row['v']}"))
            else:
                self.rows[row["k"]] = row["v"]
                out.append(None)
        return out


def test_a_keyed_replay_resolves_a_line_a_later_line_of_its_key_superseded(
    tmp_path: Path,
) -> None:
    path = keyed_csv(tmp_path / "d.csv", [(1, "x"), (1, "y"), (2, "a")])
    table = Table()
    table.refused = {"x"}
    job = Job("keyed", CsvSource(path), table.write, key=lambda row: row["k"],
              ordered_writes=True, store=SqliteStore(tmp_path / "s.db"))  # fmt: skip
    assert job.run().summary["failed"] == 1
    table.refused.clear()
    report = job.retry_failed()
    assert table.rows == {"1": "y", "2": "a"}
    assert report.status == "completed"
    assert report.summary["failed"] == 0
    assert [(r["item"], r["reason"]) for r in report["resolved"]] == [
        ("line 2", "superseded by line 3")
    ]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 4), st.sampled_from("abcx")), min_size=1, max_size=30),
    refused=st.sets(st.sampled_from("abcx"), min_size=1),
    chunk_size=st.integers(1, 7),
)
def test_after_a_keyed_replay_each_key_holds_the_files_last_value(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int, str]],
    refused: set[str],
    chunk_size: int,
) -> None:
    """Whatever the run refused, once the cause is fixed and the dead letters replayed,
    the table is what writing the file in order gives: the last value of each key."""
    folder = tmp_path_factory.mktemp("keyed")
    path = keyed_csv(folder / "d.csv", rows)
    table = Table()
    table.refused = set(refused)
    job = Job("model", CsvSource(path), table.write, key=lambda row: row["k"],
              ordered_writes=True, chunk_size=chunk_size,
              store=SqliteStore(folder / "s.db"))  # fmt: skip
    job.run()
    table.refused.clear()
    report = job.retry_failed()
    assert table.rows == {str(k): v for k, v in rows}
    assert report.summary["failed"] == 0
    assert report.status == "completed"


def test_a_keyed_replay_from_a_csv_file_runs_at_5_000_rows_a_second(
    tmp_path: Path,
) -> None:
    """One pass from the earliest dead letter, noting each key's last line: measured
    ~55,000 letters/s (half of them superseded)."""
    n = 40_000
    # every key twice: first at i, then again n/2 lines later
    rows = [(i % (n // 2), "x" if i % 2 else "ok") for i in range(n)]
    path = keyed_csv(tmp_path / "big.csv", rows)
    table = Table()
    table.refused = {"x"}
    store = SqliteStore(tmp_path / "s.db")
    job = Job("fast keyed", CsvSource(path), table.write, key=lambda row: row["k"],
              ordered_writes=True, chunk_size=10_000, store=store)  # fmt: skip
    assert job.run().summary["failed"] == n // 2
    table.refused.clear()
    rate, report = rows_per_cpu_second(n // 2, job.retry_failed)
    assert report.status == "completed"
    assert table.rows == {str(k): v for k, v in rows}
    assert report.summary["resolved"] == n // 2
    assert rate >= FLOOR, f"{rate:,.0f} rows/s"
