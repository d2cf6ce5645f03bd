"""Cancel, expiry and lost leases: every request ends once, and the counts add up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from freight import (
    BatchManager,
    BatchRequest,
    BatchSpec,
    BatchStatus,
    IllegalTransition,
    Retry,
    TransientError,
)
from freight.manager import RequestState
from freight.store import BoardStore, SqliteStore
from freight.store._dialect import Row, Transaction
from freight.testing import FakeClock
from tests.services import POSTGRES_URL


def numbered(n: int) -> list[BatchRequest]:
    return [BatchRequest(id=f"r{i}", body=i) for i in range(n)]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll briefly (real time) for something another task does."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_cancel_during_processing_starts_nothing_after_it_returned(store: BoardStore) -> None:
    gate = asyncio.Event()
    calls: list[tuple[list[int], bool]] = []  # (bodies, was cancel done when the call began)
    cancel_done = False

    async def handler(bodies: list[int]) -> list[int]:
        calls.append((bodies, cancel_done))
        await gate.wait()
        return [b * 10 for b in bodies]

    manager = BatchManager(store=store, workers=2)
    manager.register("/x", handler, spec=BatchSpec(size=2))
    async with manager:
        job = await manager.submit(numbered(20), endpoint="/x")
        await until(lambda: len(calls) == 2, "two calls in flight")
        batch = await manager.cancel(job.id)
        cancel_done = True
        assert batch.status is BatchStatus.CANCELLING  # the calls in flight finish
        gate.set()
        final = await manager.wait(job.id, timeout=10)
    assert not any(after for _, after in calls), calls
    in_flight = sorted(b for bodies, _ in calls for b in bodies)
    assert len(in_flight) == 4
    assert final.status is BatchStatus.CANCELLED
    counts = final.request_counts
    assert (counts.completed, counts.cancelled, counts.failed) == (4, 16, 0)
    assert counts.finished == counts.total == 20
    assert final.cancelling_at is not None
    assert final.cancelled_at is not None
    results = await manager.get_results(job.id)
    assert [r.response for r in results if r.status is RequestState.COMPLETED] == [
        b * 10 for b in in_flight
    ]
    cancelled = [r for r in results if r.status is RequestState.CANCELLED]
    assert len(cancelled) == 16
    assert cancelled[0].error is not None
    assert (cancelled[0].error.type, cancelled[0].error.attempts) == ("cancelled", 0)


async def test_a_pending_batch_is_cancelled_at_once(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/x", lambda b: b)
    job = await manager.submit(numbered(3), endpoint="/x")
    await manager.cancel(job.id)
    assert await manager.get_status(job.id) == BatchStatus.CANCELLED
    await manager.run(burst=True)  # nothing left to run
    assert (await manager.get(job.id)).request_counts.cancelled == 3
    assert await manager.cancel(job.id) == await manager.get(job.id)  # again: no change


async def test_an_ended_batch_cannot_be_cancelled(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/x", lambda b: b)
    job = await manager.submit(numbered(3), endpoint="/x")
    await manager.run(burst=True)
    with pytest.raises(IllegalTransition, match="cannot go from completed to cancelling"):
        await manager.cancel(job.id)


async def test_expiry_keeps_finished_results_and_expires_the_rest(
    store: BoardStore, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def handler(bodies: list[int]) -> list[int]:
        calls.append(bodies)
        if len(calls) > 1:
            await gate.wait()
        return bodies

    manager = BatchManager(store=store, clock=clock)
    manager.register("/x", handler, spec=BatchSpec(size=2))
    async with manager:
        job = await manager.submit(numbered(5), endpoint="/x", completion_window="1h")
        await until(lambda: len(calls) == 2, "the second call")
        assert await manager.get_status(job.id) is BatchStatus.PROCESSING
        await clock.advance(3600.5)
        batch = await manager.get(job.id)
        gate.set()  # the late call's results are not written: the batch has expired
    assert batch.status is BatchStatus.EXPIRED
    assert batch.expired_at is not None
    assert batch.expired_at >= batch.expires_at
    assert (batch.request_counts.completed, batch.request_counts.expired) == (2, 3)
    results = await manager.get_results(job.id)
    assert [r.status for r in results] == [RequestState.COMPLETED] * 2 + [RequestState.EXPIRED] * 3
    assert (await manager.get(job.id)).request_counts == batch.request_counts


async def test_a_worker_sweeping_expires_batches_without_being_asked(
    store: BoardStore, clock: FakeClock
) -> None:
    manager = BatchManager(store=store, clock=clock)
    manager.register("/x", lambda b: b)
    job = await manager.submit(numbered(2), endpoint="/x", completion_window=60)
    await clock.advance(61)
    await manager.run(burst=True)
    [row] = store.query(f"SELECT status FROM manager_batches WHERE id = '{job.id}'")
    assert row["status"] == "expired"


async def test_a_lapsed_lease_is_reclaimed_and_the_late_results_dropped(
    store: BoardStore, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    hung_calls: list[list[int]] = []

    async def hung(bodies: list[int]) -> list[int]:
        hung_calls.append(bodies)
        await gate.wait()
        return [-1] * len(bodies)

    stuck = BatchManager(store=store, clock=clock, lease=30)
    stuck.register("/x", hung, spec=BatchSpec(size=3))
    healthy = BatchManager(store=store, clock=clock, lease=30)
    healthy.register("/x", lambda bodies: [b * 100 for b in bodies], spec=BatchSpec(size=3))
    job = await stuck.submit(numbered(6), endpoint="/x")
    task = asyncio.create_task(stuck.run())
    await until(lambda: len(hung_calls) == 1, "the stuck worker's call")
    await clock.advance(31)  # its lease lapses
    await healthy.run(burst=True)
    gate.set()
    await until(
        lambda: stuck.processed == 0 and not store.query("SELECT token FROM manager_claims"),
        "the stuck worker's write",
    )
    stuck.stop()
    await task
    results = await healthy.get_results(job.id)
    assert [r.response for r in results] == [i * 100 for i in range(6)]
    batch = await healthy.get(job.id)
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.request_counts.completed, batch.request_counts.total) == (6, 6)


async def test_a_heartbeat_keeps_a_long_call_s_lease_so_nothing_is_redone(
    store: BoardStore, clock: FakeClock
) -> None:
    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def slow(bodies: list[int]) -> list[int]:
        calls.append(bodies)
        await gate.wait()
        return bodies

    busy = BatchManager(store=store, clock=clock, lease=0.3)
    busy.register("/x", slow, spec=BatchSpec(size=10))
    other = BatchManager(store=store, clock=clock, lease=0.3)
    other.register("/x", slow, spec=BatchSpec(size=10))
    async with busy:
        job = await busy.submit(numbered(3), endpoint="/x")
        await until(lambda: len(calls) == 1, "the call")
        for _ in range(6):  # 0.6 s of the clock: twice the lease, heartbeats between
            await clock.advance(0.1)
            await asyncio.sleep(0.2)  # real time for a heartbeat (every lease / 3)
        await other.run(burst=True)  # a sweep finds the lease fresh: nothing to take back
        assert len(calls) == 1
        gate.set()
        batch = await busy.wait(job.id, timeout=10)
    assert batch.request_counts.completed == 3
    assert len(calls) == 1


async def test_a_worker_goes_on_after_losing_its_postgresql_connection(
    pg_store: BoardStore,
) -> None:
    import psycopg

    manager = BatchManager(store=pg_store, poll_interval=0.02)
    manager.register("/x", lambda bodies: bodies)
    async with manager:
        first = await manager.submit(numbered(3), endpoint="/x")
        await manager.wait(first.id, timeout=10)
        [row] = pg_store.query("SELECT pg_backend_pid() AS pid")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (int(row["pid"]),))
        await asyncio.sleep(0.1)  # the worker polls on the dead connection meanwhile
        second = await manager.submit(numbered(4), endpoint="/x")
        done = await manager.wait(second.id, timeout=20)
    assert done.request_counts.completed == 4
    [again] = pg_store.query("SELECT pg_backend_pid() AS pid")
    assert again["pid"] != row["pid"]  # it did reconnect


class FlakyStore:
    """A store whose next transaction fails once when told (a connection lost mid-write)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.fail_next = False

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        if self.fail_next:
            self.fail_next = False
            raise TransientError("lost the store's connection (a test)")
        with self.inner.transaction() as tx:
            yield tx

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.inner.query(sql, params)


async def test_a_failed_write_is_redone_once_the_claim_s_lease_lapses(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(SqliteStore(tmp_path / "freight.db"))
    calls: list[list[int]] = []

    def handler(bodies: list[int]) -> list[int]:
        calls.append(bodies)
        if len(calls) == 1:
            store.fail_next = True  # the write of this call's results fails
        return bodies

    manager = BatchManager(store=store, clock=clock, lease=1, poll_interval=0.01)
    manager.register("/x", handler, spec=BatchSpec(size=5))
    async with manager:
        job = await manager.submit(numbered(3), endpoint="/x")
        await until(lambda: "round failed" in caplog.text, "the failed write")
        assert (await manager.get(job.id)).request_counts.completed == 0
        await clock.advance(2)  # the claim's lease lapses: a sweep takes it back
        done = await manager.wait(job.id, timeout=10)
    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert done.request_counts.completed == 3
    assert [r.response for r in await manager.get_results(job.id)] == [0, 1, 2]
    store.inner.close()


async def test_a_retry_after_cancel_leaves_the_cancelled_batch_s_requests_out(
    store: BoardStore, clock: FakeClock
) -> None:
    calls: list[list[str]] = []

    def handler(bodies: list[str]) -> list[str]:
        calls.append(bodies)
        if len(calls) == 1:
            raise TransientError("busy")  # the whole call: retried after 1 s of the clock
        return [b.upper() for b in bodies]

    manager = BatchManager(store=store, clock=clock)
    manager.register(
        "/x", handler, spec=BatchSpec(size=4), retry=Retry(attempts=3, backoff=1, jitter=0)
    )
    a = await manager.submit([BatchRequest(id=i, body=f"a{i}") for i in "12"], endpoint="/x")
    b = await manager.submit([BatchRequest(id=i, body=f"b{i}") for i in "12"], endpoint="/x")
    async with manager:
        await until(lambda: len(calls) == 1, "the first call")
        await manager.cancel(a.id)
        await clock.advance(1)
        done_a, done_b = await manager.wait(a.id, timeout=10), await manager.wait(b.id, timeout=10)
    assert calls == [["a1", "a2", "b1", "b2"], ["b1", "b2"]]  # a's requests never start again
    assert done_a.status is BatchStatus.CANCELLED
    assert done_a.request_counts.cancelled == 2
    assert [r.response for r in await manager.get_results(b.id)] == ["B1", "B2"]
    assert done_b.request_counts.completed == 2


async def test_wait_gives_up_at_its_timeout_on_the_manager_s_clock(
    store: BoardStore, clock: FakeClock
) -> None:
    manager = BatchManager(store=store, clock=clock, poll_interval=0.01)
    manager.register("/x", lambda bodies: bodies)
    job = await manager.submit(numbered(2), endpoint="/x")  # no worker runs
    waiting = asyncio.create_task(manager.wait(job.id, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await clock.advance(5)
    with pytest.raises(TimeoutError, match=r"is still pending after 5 s \(0 of 2 requests"):
        await waiting
    clock.advance_sync(0)
    with pytest.raises(TimeoutError):
        manager.wait_sync(job.id, timeout=0)
