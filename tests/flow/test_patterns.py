"""The BatchSpec guide's patterns, with their numbers, on a fake clock."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from pydantic import BaseModel

from freight import BatchSpec, Flow, RateLimiter
from freight.flow import ForBatch, Span
from freight.testing import FakeClock


class Transaction(BaseModel):
    id: int
    amount: float


class PaymentBatchReport(BaseModel):
    count: int
    total: float


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_payments_25_per_call_or_30_seconds(clock: FakeClock) -> None:
    spans: list[Span] = []
    flow = Flow(clock=clock, subscribers=[spans.append])
    calls: list[list[int]] = []

    async def process_payments(batch: list[Transaction]) -> ForBatch:
        calls.append([t.id for t in batch])
        return ForBatch(PaymentBatchReport(count=len(batch), total=sum(t.amount for t in batch)))

    (flow.consumer("payments")
         .consumes(Transaction, where=lambda t: t.amount > 0,
                   batch=BatchSpec(size=25, timeout=timedelta(seconds=30)))
         .publishes(PaymentBatchReport)
         .does(process_payments))  # fmt: skip

    for i in range(60):
        await flow.publish(Transaction(id=i, amount=-1.0 if i % 10 == 9 else 10.0))
    await flow.run_until_idle()
    # 54 positive transactions: two full batches at once, 4 wait for the timeout
    assert [len(c) for c in calls] == [25, 25]
    assert all(i % 10 != 9 for c in calls for i in c)  # `where` ran before batching
    [open_] = flow.pending()
    assert (open_.consumer, open_.kind, open_.items, open_.deadline) == ("payments", "batch", 4, 30)
    await clock.advance(29.999)
    await flow.run_until_idle()
    assert len(calls) == 2
    await clock.advance(0.001)
    await flow.run_until_idle()
    assert [len(c) for c in calls] == [25, 25, 4]
    assert flow.pending() == []
    reports = [e.payload for e in flow.artifacts(PaymentBatchReport)]
    assert [r.count for r in reports] == [25, 25, 4]
    assert [e.producer for e in flow.artifacts(PaymentBatchReport)] == ["payments"] * 3
    flushes = [s for s in spans if s.name == "flush"]
    assert [(s.attributes["flush_reason"], s.attributes["efficiency"]) for s in flushes] == [
        ("size", 1.0),
        ("size", 1.0),
        ("timeout", 4 / 25),
    ]
    await flow.close()


async def test_guide_timeline_size_at_20_timeout_at_55(clock: FakeClock) -> None:
    spans: list[Span] = []
    flow = Flow(clock=clock, subscribers=[spans.append])
    flushed: list[tuple[float, int]] = []

    @flow.consumer("t").consumes(Transaction, batch=BatchSpec(size=10, timeout=30))
    async def handle(batch: list[Transaction]) -> None:
        flushed.append((clock.now(), len(batch)))

    for t, n in ((0, 5), (10, 3), (20, 2)):
        await clock.advance(t - clock.now())
        for i in range(n):
            await flow.publish(Transaction(id=i, amount=1))
    await flow.run_until_idle()
    assert flushed == [(20, 10)]
    await clock.advance(5)
    for i in range(3):
        await flow.publish(Transaction(id=100 + i, amount=1))
    await clock.advance(29.999)
    await flow.run_until_idle()
    assert flushed == [(20, 10)]
    await clock.advance(0.001)
    await flow.run_until_idle()
    assert flushed == [(20, 10), (55, 3)]
    reasons = [s.attributes["flush_reason"] for s in spans if s.name == "flush"]
    assert reasons == ["size", "timeout"]
    await flow.close()


class Review(BaseModel):
    id: int
    text: str


class Sentiment(BaseModel):
    review_id: int
    score: float


async def test_sentiment_batches_one_outcome_per_review(clock: FakeClock) -> None:
    flow = Flow(clock=clock)
    calls: list[int] = []

    async def classify(batch: list[Review]) -> list[Sentiment | Exception]:
        calls.append(len(batch))
        return [
            ValueError("unreadable") if "\x00" in r.text
            else Sentiment(review_id=r.id, score=1.0 if "good" in r.text else -1.0)
            for r in batch
        ]  # fmt: skip

    (flow.consumer("sentiment")
         .consumes(Review, batch=BatchSpec(size=10, timeout=5))
         .publishes(Sentiment)
         .does(classify))  # fmt: skip
    for i in range(23):
        await flow.publish(Review(id=i, text="\x00" if i == 7 else ("good" if i % 2 else "bad")))
    await clock.advance(5)
    await flow.run_until_idle()
    assert calls == [10, 10, 3]
    scores = {e.payload.review_id: e.payload.score for e in flow.artifacts(Sentiment)}
    assert sorted(scores) == [i for i in range(23) if i != 7]
    [dead] = flow.dead_letters()
    assert (dead.consumer, dead.reason, dead.artifacts[0].id) == ("sentiment", "handler_error", 7)
    assert isinstance(dead.error, ValueError)
    await flow.close()


class ApiRequest(BaseModel):
    id: int


class ApiResult(BaseModel):
    ids: list[int]
    at: float


async def test_rate_limited_api_10_per_request_stays_under_the_limit(clock: FakeClock) -> None:
    limiter = RateLimiter(2, per=1, burst=1, clock=clock)  # 2 requests a second
    flow = Flow(clock=clock)

    @(flow.consumer("api")
          .consumes(ApiRequest, batch=BatchSpec(size=10, timeout=1), rate_limit=limiter)
          .publishes(ApiResult))  # fmt: skip
    async def call_api(batch: list[ApiRequest]) -> ForBatch:
        return ForBatch(ApiResult(ids=[r.id for r in batch], at=clock.now()))

    for i in range(100):
        await flow.publish(ApiRequest(id=i))
    for _ in range(10):
        await clock.advance(0.5)
    await flow.run_until_idle()
    results = [e.payload for e in flow.artifacts(ApiResult)]
    assert [len(r.ids) for r in results] == [10] * 10
    assert sorted(i for r in results for i in r.ids) == list(range(100))
    times = sorted(r.at for r in results)
    # 10 requests for 100 items; never more than 2 in any one-second window
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(times))
    await flow.close()
