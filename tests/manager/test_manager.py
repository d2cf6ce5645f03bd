"""BatchManager as users of nagents' BatchManager and the OpenAI Batch API use it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import freight
from freight import (
    BatchEvent,
    BatchManager,
    BatchRequest,
    BatchSpec,
    BatchStatus,
    Retry,
    TransientError,
)
from freight.manager import BatchChange, RequestState, Result, UnknownBatch
from freight.store import BoardStore
from freight.testing import FakeClock
from tests.manager.test_cancel_expire_reclaim import until


async def summarise(bodies: list[dict[str, Any]]) -> list[object]:
    """A handler: one summary per body; a body asking for it fails alone."""
    return [
        ValueError(f"cannot summarise {b['text']!r}")
        if b["text"] == "boom"
        else {"summary": b["text"][:3]}
        for b in bodies
    ]


def three() -> list[BatchRequest]:
    return [
        BatchRequest(id="req-1", body={"text": "AI is transforming"}),
        BatchRequest(id="req-2", body={"text": "boom"}),
        BatchRequest(id="req-3", body={"text": "Neural networks"}),
    ]


async def test_nagents_usage_three_requests_one_fails_with_its_error(store: BoardStore) -> None:
    batch_manager = BatchManager(store=store)
    batch_manager.register("/v1/summaries", summarise)
    async with batch_manager:
        job = await batch_manager.submit(three(), endpoint="/v1/summaries")
        assert job.status is BatchStatus.PENDING
        while True:
            status = await batch_manager.get_status(job.id)
            if status in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED):
                break
            await asyncio.sleep(0.01)
        assert str(status) == "completed"
        results = await batch_manager.get_results(job.id)
    assert [r.id for r in results] == ["req-1", "req-2", "req-3"]
    ok = [r for r in results if not r.error]
    assert [r.response for r in ok] == [{"summary": "AI "}, {"summary": "Neu"}]
    [failed] = [r for r in results if r.error]
    assert failed.id == "req-2"
    assert failed.response is None
    assert failed.error is not None
    assert (failed.error.type, failed.error.attempts) == ("ValueError", 1)
    assert failed.error.message == "cannot summarise 'boom'"
    batch = await batch_manager.get(job.id)
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (3, 2, 1)
    assert batch.created_at <= batch.in_progress_at <= batch.completed_at  # type: ignore[operator]
    assert batch.created_at.tzinfo is not None
    assert (batch.cancelled_at, batch.failed_at, batch.expired_at) == (None, None, None)


async def test_requests_as_openai_dicts_and_metadata_are_kept(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/v1/summaries", summarise)
    requests = [
        {"custom_id": "a", "method": "POST", "url": "/v1/summaries", "body": {"text": "alpha"}},
        {"custom_id": "b", "method": "POST", "url": "/v1/summaries", "body": {"text": "beta"}},
    ]
    job = await manager.submit(requests, endpoint="/v1/summaries", metadata={"owner": "ana"})
    await manager.run(burst=True)
    batch = await manager.get(job.id)
    assert batch.metadata == {"owner": "ana"}
    assert batch.status is BatchStatus.COMPLETED
    assert [r.response for r in await manager.get_results(job.id)] == [
        {"summary": "alp"},
        {"summary": "bet"},
    ]


async def test_small_batches_of_one_endpoint_share_full_handler_calls(store: BoardStore) -> None:
    calls: list[list[int]] = []

    def handler(bodies: list[int]) -> list[int]:
        calls.append(bodies)
        return [b * 2 for b in bodies]

    manager = BatchManager(store=store)
    manager.register("/double", handler, spec=BatchSpec(size=4))
    jobs = [
        await manager.submit(
            [BatchRequest(id=str(i), body=10 * k + i) for i in range(2)], endpoint="/double"
        )
        for k in range(4)
    ]
    await manager.run(burst=True)
    assert calls == [[0, 1, 10, 11], [20, 21, 30, 31]]  # two full calls, oldest batch first
    for k, job in enumerate(jobs):
        assert [r.response for r in await manager.get_results(job.id)] == [20 * k, 20 * k + 2]


async def test_a_transient_item_is_retried_by_the_engine_and_its_attempts_reported(
    store: BoardStore,
) -> None:
    seen: list[str] = []

    def handler(bodies: list[str]) -> list[object]:
        seen.extend(bodies)
        return [
            TransientError("busy") if b == "flaky" and seen.count(b) < 3 else b.upper()
            for b in bodies
        ]

    manager = BatchManager(store=store)
    manager.register("/up", handler, retry=Retry(attempts=3, jitter=0, backoff=0.0))
    job = await manager.submit(
        [BatchRequest(id="x", body="ok"), BatchRequest(id="y", body="flaky")], endpoint="/up"
    )
    await manager.run(burst=True)
    x, y = await manager.get_results(job.id)
    assert (x.response, y.response) == ("OK", "FLAKY")
    assert seen == ["ok", "flaky", "flaky", "flaky"]


async def test_a_response_that_is_not_json_fails_that_request_alone(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/bad", lambda bodies: [b if b else object() for b in bodies])
    job = await manager.submit(
        [BatchRequest(id="good", body=1), BatchRequest(id="bad", body=0)], endpoint="/bad"
    )
    await manager.run(burst=True)
    good, bad = await manager.get_results(job.id)
    assert good.response == 1
    assert bad.error is not None
    assert bad.error.type == "HandlerContractError"
    assert "not JSON" in bad.error.message
    assert (await manager.get(job.id)).request_counts.failed == 1


async def test_results_stream_in_submission_order_past_one_page(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/id", lambda bodies: bodies, spec=BatchSpec(size=500))
    n = 2_345
    job = await manager.submit(
        [BatchRequest(id=f"r{i:05d}", body=i) for i in range(n)], endpoint="/id"
    )
    await manager.run(burst=True)
    streamed: list[Result] = [r async for r in manager.get_results(job.id)]
    assert [r.response for r in streamed] == list(range(n))
    assert [r.id for r in streamed][:2] == ["r00000", "r00001"]
    assert len(await manager.get_results(job.id)) == n


async def test_export_results_writes_openai_output_lines(store: BoardStore, tmp_path: Path) -> None:
    manager = BatchManager(store=store)
    manager.register("/v1/summaries", summarise)
    job = await manager.submit(three(), endpoint="/v1/summaries")
    await manager.run(burst=True)
    out = tmp_path / "out.jsonl"
    assert await manager.export_results(job.id, out) == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-1", "req-2", "req-3"]
    assert lines[0]["response"] == {"status_code": 200, "body": {"summary": "AI "}}
    assert lines[0]["error"] is None
    assert lines[1]["response"] is None
    assert lines[1]["error"] == {
        "type": "ValueError",
        "message": "cannot summarise 'boom'",
        "attempts": 1,
    }
    assert len({line["id"] for line in lines}) == 3


async def test_list_pages_newest_first_and_filters_by_status(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/v1/summaries", summarise)
    ids = [(await manager.submit(three(), endpoint="/v1/summaries")).id for _ in range(5)]
    await manager.cancel(ids[1])
    first = await manager.list(limit=2)
    assert [b.id for b in first] == [ids[4], ids[3]]
    rest = await manager.list(after=first[-1].id)
    assert [b.id for b in rest] == [ids[2], ids[1], ids[0]]
    cancelled = await manager.list(status="cancelled")
    assert [b.id for b in cancelled] == [ids[1]]
    assert [b.id for b in await manager.list(status=BatchStatus.PENDING)] == [
        ids[4],
        ids[3],
        ids[2],
        ids[0],
    ]


async def test_an_unknown_batch_id_is_a_clear_error(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    for call in (manager.get, manager.get_status, manager.cancel, manager.wait):
        with pytest.raises(UnknownBatch, match="no managed batch 'batch_nope'"):
            await call("batch_nope")
    with pytest.raises(UnknownBatch):
        await manager.get_results("batch_nope")
    with pytest.raises(KeyError):  # UnknownBatch is a KeyError too
        manager.get_sync("batch_nope")


def test_sync_twins_read_the_same(store: BoardStore) -> None:
    manager = BatchManager(store=store)
    manager.register("/v1/summaries", summarise)
    job = manager.submit_sync(three(), endpoint="/v1/summaries")
    assert manager.get_status_sync(job.id) is BatchStatus.PENDING
    manager.run_sync(burst=True)
    assert manager.wait_sync(job.id, timeout=5).status is BatchStatus.COMPLETED
    results = manager.get_results_sync(job.id)
    assert [r.status for r in results] == [
        RequestState.COMPLETED,
        RequestState.FAILED,
        RequestState.COMPLETED,
    ]
    assert [b.id for b in manager.list_sync()] == [job.id]


async def test_max_concurrent_batches_keeps_the_others_pending(store: BoardStore) -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def handler(bodies: list[str]) -> list[str]:
        seen.extend(bodies)
        await release.wait()
        return bodies

    manager = BatchManager(store=store, workers=2)
    manager.register("/slow", handler, spec=BatchSpec(size=1), max_concurrent_batches=1)
    a = await manager.submit(
        [BatchRequest(id="1", body="a1"), BatchRequest(id="2", body="a2")], endpoint="/slow"
    )
    b = await manager.submit([BatchRequest(id="1", body="b1")], endpoint="/slow")
    async with manager:
        await until(lambda: len(seen) == 2, "two calls")
        assert await manager.get_status(b.id) is BatchStatus.PENDING
        assert sorted(seen) == ["a1", "a2"]
        release.set()
        await manager.wait(b.id, timeout=10)
    assert seen == sorted(seen)
    assert (await manager.get(a.id)).completed_at <= (await manager.get(b.id)).in_progress_at  # type: ignore[operator]


def test_the_top_level_exports_the_manager() -> None:
    assert freight.BatchManager is BatchManager
    assert [s.value for s in BatchStatus] == [
        "pending",
        "processing",
        "completed",
        "failed",
        "cancelling",
        "cancelled",
        "expired",
    ]
    assert str(BatchStatus.COMPLETED) == "completed"
    assert BatchStatus("cancelled") is BatchStatus.CANCELLED


def test_with_no_argument_the_store_is_sqlite_under_dot_freight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manager = BatchManager()
    manager.register("/v1/summaries", summarise)
    job = manager.submit_sync(three(), endpoint="/v1/summaries")
    manager.close()
    assert (tmp_path / ".freight" / "freight.db").is_file()
    again = BatchManager()
    assert again.get_sync(job.id).request_counts.total == 3
    again.close()


async def test_each_chunk_reaches_the_subscribers_and_prometheus(store: BoardStore) -> None:
    from prometheus_client import CollectorRegistry

    from freight.metrics import PrometheusSubscriber

    events: list[BatchEvent] = []
    registry = CollectorRegistry()

    manager = BatchManager(store=store, subscribers=[events.append, PrometheusSubscriber(registry)])
    manager.register("/v1/summaries", summarise, spec=BatchSpec(size=2))
    await manager.submit(three(), endpoint="/v1/summaries")
    await manager.run(burst=True)
    assert [(e.batcher, e.size, e.reason, e.succeeded, e.failed) for e in events] == [
        ("/v1/summaries", 2, "size", 1, 1),
        ("/v1/summaries", 1, "pending", 1, 0),
    ]
    assert all(e.calls == 1 and e.wait >= 0 for e in events)
    labels = {"batcher": "/v1/summaries", "outcome": "succeeded"}
    assert registry.get_sample_value("freight_items_total", labels) == 2


async def test_a_spec_timeout_holds_a_partial_call_until_the_oldest_request_waited_it(
    store: BoardStore, clock: FakeClock
) -> None:
    calls: list[list[int]] = []

    def handler(bodies: list[int]) -> list[int]:
        calls.append(bodies)
        return bodies

    manager = BatchManager(store=store, clock=clock)
    manager.register("/x", handler, spec=BatchSpec(size=4, timeout=10))
    first = await manager.submit(
        [BatchRequest(id="a", body=1), BatchRequest(id="b", body=2)], endpoint="/x"
    )
    await manager.run(burst=True)
    assert calls == []  # 2 of 4, submitted 0 s ago: wait for more
    await clock.advance(6)
    await manager.submit([BatchRequest(id="c", body=3)], endpoint="/x")
    await manager.run(burst=True)
    assert calls == []
    assert await manager.get_status(first.id) is BatchStatus.PENDING
    await clock.advance(4)  # the oldest has waited 10 s: a partial call is due
    await manager.run(burst=True)
    assert calls == [[1, 2, 3]]
    await manager.submit([BatchRequest(id=str(i), body=i) for i in range(4)], endpoint="/x")
    await manager.run(burst=True)  # a full call never waits
    assert calls == [[1, 2, 3], [0, 1, 2, 3]]


async def test_batch_changes_reach_on_change_and_prometheus(
    store: BoardStore, clock: FakeClock
) -> None:
    from prometheus_client import CollectorRegistry

    from freight.metrics import PrometheusSubscriber

    changes: list[BatchChange] = []
    registry = CollectorRegistry()

    metrics = PrometheusSubscriber(registry)
    manager = BatchManager(store=store, clock=clock, on_change=[changes.append, metrics])
    manager.register("/v1/summaries", summarise)
    done = await manager.submit(three(), endpoint="/v1/summaries")
    await clock.advance(2)
    await manager.run(burst=True)
    stopped = await manager.submit(three(), endpoint="/v1/summaries")
    await manager.cancel(stopped.id)
    late = await manager.submit(three(), endpoint="/v1/summaries", completion_window=60)
    await clock.advance(61)
    assert await manager.get_status(late.id) is BatchStatus.EXPIRED
    assert [(c.batch_id, c.status) for c in changes] == [
        (done.id, "pending"),
        (done.id, "completed"),
        (stopped.id, "pending"),
        (stopped.id, "cancelled"),
        (late.id, "pending"),
        (late.id, "expired"),
    ]
    assert changes[1].request_counts.failed == 1
    assert changes[1].elapsed == pytest.approx(2, abs=0.01)
    assert changes[-1].elapsed == pytest.approx(61, abs=0.01)

    def sample(name: str, status: str) -> float | None:
        labels = {"batcher": "/v1/summaries", "status": status}
        return registry.get_sample_value(name, labels)

    assert sample("freight_managed_batches_total", "pending") == 3
    assert sample("freight_managed_batches_total", "completed") == 1
    assert sample("freight_managed_batch_seconds_count", "expired") == 1
    assert sample("freight_managed_batch_seconds_sum", "expired") == pytest.approx(61, abs=0.01)
