"""The broker source port on its in-memory twin, and the consume driver's rules.

The contract checks (``broker_contract``) run here on :class:`MemoryBroker`; the tests
below pin what :func:`consume` does with each kind of target and each outcome.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import Batcher, BatchSpec, Flow, PermanentError, Retry, TransientError
from freight._errors import ConfigError
from freight.connectors import BrokerSource, Message, consume
from freight.connectors._broker import reason
from freight.testing import FakeClock, MemoryBroker, MemorySink
from tests.connectors.broker_contract import (
    SINK_CHECKS,
    SOURCE_CHECKS,
    BrokerHarness,
    SinkHarness,
    settle_soon,
)

NO_WAIT = Retry(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0)


@dataclass
class MemoryHarness:
    """The contract's harness over one :class:`MemoryBroker` (a consumer is the broker)."""

    broker: MemoryBroker = field(default_factory=MemoryBroker)
    redelivery: float = 0.0

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        for body in bodies:
            self.broker.publish(body, key="k")

    async def source(self) -> BrokerSource:
        self.broker.reopen()
        return self.broker

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        return [(m.body, why) for m, why in self.broker.dead]

    async def drop_connection(self, source: BrokerSource) -> None:
        self.broker.crash()  # what a dropped connection does to unsettled deliveries


_: type[BrokerHarness] = MemoryHarness


@pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
async def test_memory_broker_keeps_the_source_contract(
    check: Callable[[BrokerHarness], Awaitable[None]],
) -> None:
    await settle_soon(check(MemoryHarness()))


class MemorySinkHarness:
    """The sink contract over :class:`MemorySink` (rows need an ``id``; ``v`` not null)."""

    def __init__(self) -> None:
        self.sink = MemorySink(key="id", required=("v",))

    def items(self, n: int) -> list[Any]:
        return [{"id": i, "v": f"v{i}"} for i in range(n)]

    def poison(self) -> Any:
        return {"id": "poison", "v": None}

    async def write(self, items: list[Any]) -> list[Any] | None:
        return self.sink.write(items)

    async def landed(self, items: list[Any]) -> list[bool]:
        rows = {row["id"]: row for row in self.sink.rows}
        return [rows.get(item["id"]) == item for item in items]


_sink: type[SinkHarness] = MemorySinkHarness


@pytest.mark.parametrize("check", SINK_CHECKS, ids=lambda c: c.__name__)
async def test_memory_sink_keeps_the_sink_contract(
    check: Callable[[SinkHarness], Awaitable[None]],
) -> None:
    await settle_soon(check(MemorySinkHarness()))


def test_the_twin_implements_the_port() -> None:
    assert isinstance(MemoryBroker(), BrokerSource)


async def test_a_sync_sink_gets_the_bodies_and_the_message_ids_as_keys() -> None:
    broker = MemoryBroker()
    ids = [broker.publish({"id": i, "v": None if i == 2 else i}) for i in range(5)]
    keys: list[Any] = []

    class Sink(MemorySink):
        def write(self, items: list[Any], context: Any = None) -> list[Any] | None:
            keys.extend(context.keys)
            return super().write(items, context)

    sink = Sink(required=("v",))
    report = await consume(broker, sink, spec=BatchSpec(size=10, timeout=0), until_idle=True)
    assert [r["id"] for r in sink.rows] == [0, 1, 3, 4]
    assert keys[:5] == ids
    assert report.acked == 4
    assert [why for _, why in broker.dead] == ["ValueError: null value in required column(s) ['v']"]


async def test_an_async_sink_is_awaited() -> None:
    broker = MemoryBroker()
    for i in range(3):
        broker.publish(i)
    written: list[int] = []

    class AsyncSink:
        async def write(self, items: list[int], context: object = None) -> None:
            written.extend(items)

    await consume(broker, AsyncSink(), spec=BatchSpec(size=2, timeout=0), until_idle=True)
    assert written == [0, 1, 2]
    assert broker.acked == ["1", "2", "3"]


async def test_a_sync_handler_runs_in_a_thread_and_its_results_settle_each_message() -> None:
    broker = MemoryBroker()
    for i in range(4):
        broker.publish(i)

    def handler(items: list[int]) -> list[Any]:
        return [PermanentError("odd") if i % 2 else i for i in items]

    report = await consume(broker, handler, spec=BatchSpec(size=4, timeout=0), until_idle=True)
    assert (report.acked, report.dead_lettered, report.batches) == (2, 2, 1)
    assert broker.acked == ["1", "3"]
    assert report.reasons == [("2", "PermanentError: odd"), ("4", "PermanentError: odd")]


async def test_a_batcher_target_maps_each_callers_outcome_to_its_message() -> None:
    broker = MemoryBroker()
    for i in range(6):
        broker.publish(i)
    handled: list[list[int]] = []

    async def handler(items: list[int]) -> list[Any]:
        handled.append(items)
        return [ValueError("three") if i == 3 else i * 2 for i in items]

    async with Batcher(handler, BatchSpec(size=6, timeout=0.01)) as batcher:
        report = await consume(broker, batcher, spec=BatchSpec(size=6, timeout=0), until_idle=True)
    assert handled == [[0, 1, 2, 3, 4, 5]]
    assert report.acked == 5
    assert [(m.body, why) for m, why in broker.dead] == [(3, "ValueError: three")]


async def test_a_closed_batcher_leaves_the_messages_to_the_broker_and_stops() -> None:
    broker = MemoryBroker()
    broker.publish(1)
    batcher: Batcher[int, int] = Batcher(lambda xs: xs, BatchSpec(size=1))
    await batcher.close()
    with pytest.raises(Exception, match="closed"):
        await consume(broker, batcher, spec=BatchSpec(size=5, timeout=0), until_idle=True)
    assert broker.dead == []
    assert broker.waiting == 1  # handed back, not lost


async def test_a_flow_target_publishes_each_body_and_acks_once_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the flow's trace file

    @dataclass
    class Reading:
        value: int

    broker = MemoryBroker()
    for i in range(5):
        broker.publish(Reading(i))
    flow = Flow("readings")
    got: list[int] = []

    @flow.consumer("store", consumes=Reading, batch=BatchSpec(size=5, timeout=0))
    async def store(readings: list[Reading]) -> None:
        got.extend(r.value for r in readings)

    async with flow:
        report = await consume(broker, flow, spec=BatchSpec(size=5, timeout=0), until_idle=True)
        await flow.run_until_idle()
    assert report.acked == 5
    assert got == [0, 1, 2, 3, 4]


async def test_a_transient_failure_past_the_attempts_is_handed_back_after_the_backoff() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    broker.publish("x")
    calls: list[float] = []

    async def always_busy(items: list[str]) -> None:
        calls.append(clock.now())
        raise TransientError("busy")

    retry = Retry(attempts=2, backoff=1.0, multiplier=2, jitter=0)
    task = asyncio.create_task(
        consume(
            broker,
            always_busy,
            spec=BatchSpec(size=1, timeout=0),
            retry=retry,
            max_batches=1,
            clock=clock,
        )
    )
    await clock.advance(1.0)  # the in-process retry after the backoff
    report = await task
    assert calls == [0.0, 1.0]
    assert (report.retried, broker.handed_back, broker.waiting) == (1, 1, 1)
    assert await broker.fetch(1, 0) == []
    await clock.advance(1.0)
    [again] = await broker.fetch(1, 0)
    assert again.attempts == 2


async def test_an_error_asking_for_a_longer_wait_delays_the_redelivery() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    broker.publish("x")

    async def rate_limited(items: list[str]) -> list[Any]:
        return [TransientError("429", retry_after=30.0)]

    await consume(
        broker,
        rate_limited,
        spec=BatchSpec(size=1, timeout=0),
        retry=Retry(attempts=1, backoff=1.0, jitter=0),
        max_batches=1,
        clock=clock,
    )
    await clock.advance(29.0)
    assert await broker.fetch(1, 0) == []
    await clock.advance(1.0)
    assert len(await broker.fetch(1, 0)) == 1


async def test_max_deliveries_dead_letters_a_message_that_keeps_failing_transiently() -> None:
    broker = MemoryBroker()
    broker.publish("flaky")

    async def busy(items: list[str]) -> list[Any]:
        return [TransientError("still busy")]

    report = await consume(
        broker,
        busy,
        spec=BatchSpec(size=1, timeout=0.001),
        retry=Retry(attempts=1, backoff=0.001, max_backoff=0.001, jitter=0),
        max_deliveries=3,
        max_batches=3,
    )
    assert report.retried == 2
    assert broker.deliveries == {"1": 3}
    [(_, why)] = broker.dead
    assert why.startswith("PermanentError: delivered 3 times (max_deliveries=3)")
    assert "TransientError: still busy" in why


async def test_a_message_whose_consumers_kept_dying_is_dead_lettered_unhandled() -> None:
    broker = MemoryBroker()
    broker.publish("kills the process")
    for _ in range(3):
        await broker.fetch(1, 0)
        broker.crash()
    handled: list[str] = []

    async def handler(items: list[str]) -> None:
        handled.extend(items)

    report = await consume(
        broker, handler, spec=BatchSpec(size=1, timeout=0), until_idle=True, max_deliveries=3
    )
    assert handled == []
    assert report.dead_lettered == 1
    assert "delivered 4 times" in broker.dead[0][1]


@pytest.mark.parametrize(
    "options",
    [{"max_deliveries": 0}, {"max_batches": 0}, {"max_batches": 1.5}],
)
async def test_bad_options_are_refused_with_their_name(options: dict[str, Any]) -> None:
    name = next(iter(options))
    with pytest.raises(ConfigError, match=name):
        await consume(MemoryBroker(), lambda xs: xs, **options)


async def test_a_target_of_no_known_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="target must be"):
        await consume(MemoryBroker(), 42, until_idle=True)


async def test_a_fetch_waits_for_a_publish_then_returns_it() -> None:
    broker = MemoryBroker()
    waiting = asyncio.create_task(broker.fetch(5, 10.0))
    await asyncio.sleep(0)
    broker.publish("late")
    [message] = await waiting
    assert message.body == "late"


async def test_a_fetch_returns_empty_after_its_timeout_on_the_clock() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    waiting = asyncio.create_task(broker.fetch(5, 2.0))
    await clock.advance(2.0)
    assert await waiting == []


async def test_a_closed_twin_refuses_until_reopened() -> None:
    broker = MemoryBroker()
    await broker.close()
    with pytest.raises(ConnectionError, match="reopen"):
        await broker.fetch(1, 0)


def test_reason_is_one_line_with_the_type() -> None:
    assert reason(ValueError("bad\n  value")) == "ValueError: bad value"
    assert reason(KeyError()) == "KeyError"


def test_a_message_has_empty_headers_of_its_own() -> None:
    a, b = Message(1, "1"), Message(2, "2")
    assert a.headers == {}
    assert a.headers is not b.headers
    assert (a.attempts, a.key, a.raw) == (1, None, None)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    size=st.integers(1, 9),
    crashes=st.lists(st.integers(0, 6), max_size=4),
)
def test_consumer_deaths_lose_nothing_and_duplicate_at_most_a_batch_each(
    n: int, size: int, crashes: list[int]
) -> None:
    """At-least-once: a consumer dying after handling a batch but before its ack
    (``crashes`` says after how many batches each dies) loses no message, and each death
    costs at most one batch of duplicates."""

    async def scenario() -> None:
        broker = MemoryBroker()
        for i in range(n):
            broker.publish(i)
        handled: Counter[int] = Counter()

        async def handler(items: list[int]) -> None:
            handled.update(items)

        for batches in crashes:
            if batches:
                await consume(
                    broker,
                    handler,
                    spec=BatchSpec(size=size, timeout=0),
                    max_batches=batches,
                    until_idle=True,
                )
            handled.update(m.body for m in await broker.fetch(size, 0))  # handled, then died
            broker.crash()
        await consume(broker, handler, spec=BatchSpec(size=size, timeout=0), until_idle=True)
        assert set(handled) == set(range(n))
        assert sum(handled.values()) - n <= size * len(crashes)
        assert sorted(int(i) for i in broker.acked) == list(range(1, n + 1))

    asyncio.run(scenario())


async def test_empty_fetches_that_do_not_wait_are_spaced_on_the_clock() -> None:
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    seen: list[int] = []

    async def handle(items: list[int]) -> None:
        seen.extend(items)

    task = asyncio.create_task(
        consume(broker, handle, spec=BatchSpec(size=5, timeout=0), max_batches=1, clock=clock)
    )
    await clock.advance(0)
    assert clock.pending_timers() == [0.05]  # paused, not spinning
    broker.publish(1)
    await clock.advance(0.05)
    report = await task
    assert (seen, report.acked) == ([1], 1)


@pytest.mark.parametrize("kind", ["async", "thread"])
async def test_consume_cancelled_mid_batch_acknowledges_none_of_it(kind: str) -> None:
    """Ctrl-C or ``task.cancel()`` while a batch is being handled: nothing of that batch
    is settled (the handler may not have finished it), so a consumer death after it
    (:meth:`MemoryBroker.crash`) delivers every one of them again; the batches before it
    stay acknowledged."""
    broker = MemoryBroker()
    for n in range(9):
        broker.publish(n)
    loop = asyncio.get_running_loop()
    holding = asyncio.Event()
    release = asyncio.Event()
    seen: list[int] = []

    async def handle_async(items: list[int]) -> None:
        seen.extend(items)
        if 3 in items:
            holding.set()
            await release.wait()

    def handle_thread(items: list[int]) -> None:
        seen.extend(items)
        if 3 in items:
            loop.call_soon_threadsafe(holding.set)

    handler: Any = handle_async if kind == "async" else handle_thread
    if kind == "thread":
        # the thread returns at once, but the task is cancelled before it can settle
        real_ack = broker.ack

        async def ack_then_hold(messages: Sequence[Message]) -> None:
            if any(m.body == 3 for m in messages):
                await release.wait()
            await real_ack(messages)

        broker.ack = ack_then_hold  # type: ignore[method-assign]
    task = asyncio.create_task(consume(broker, handler, spec=BatchSpec(size=3, timeout=0)))
    await holding.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert broker.acked == ["1", "2", "3"]
    assert broker.in_flight == ["4", "5", "6"]
    broker.crash()
    again = await broker.fetch(10, 0)
    assert [(m.body, m.attempts) for m in again] == [(3, 2), (4, 2), (5, 2), (6, 1), (7, 1), (8, 1)]


async def test_an_ack_that_fails_raises_and_the_batch_is_delivered_again() -> None:
    """The broker refuses the ``ack`` (a dropped connection): ``consume`` raises, and the
    handled batch is not lost: it is delivered again (handled twice: at least once)."""

    class AckFails(MemoryBroker):
        async def ack(self, messages: Sequence[Message]) -> None:
            raise ConnectionError("connection lost during ack")

    broker = AckFails()
    for n in range(4):
        broker.publish(n)
    seen: list[int] = []

    async def handle(items: list[int]) -> None:
        seen.extend(items)

    with pytest.raises(ConnectionError, match="during ack"):
        await consume(broker, handle, spec=BatchSpec(size=2, timeout=0), until_idle=True)
    assert seen == [0, 1]
    broker.crash()
    assert [(m.body, m.attempts) for m in await broker.fetch(10, 0)] == [
        (0, 2), (1, 2), (2, 1), (3, 1),
    ]  # fmt: skip


async def test_until_idle_waits_for_the_messages_it_handed_back() -> None:
    """Found in review: ``until_idle`` stopped at the first empty fetch while a message it
    had handed back (transient, redelivered after the policy's wait) was still to come."""
    clock = FakeClock()
    broker = MemoryBroker(clock=clock)
    for n in range(3):
        broker.publish(n)
    failed: set[int] = set()

    async def handler(items: list[int]) -> list[object]:
        out: list[object] = []
        for n in items:
            if n == 1 and n not in failed:
                failed.add(n)
                out.append(TransientError("busy"))
            else:
                out.append(n)
        return out

    task = asyncio.create_task(
        consume(
            broker,
            handler,
            spec=BatchSpec(size=10, timeout=0),
            until_idle=True,
            clock=clock,
            retry=Retry(attempts=1, backoff=5.0, jitter=0.0),
        )
    )
    for _ in range(40):  # the flow's time moves on only when told
        await asyncio.sleep(0)
        if task.done():
            break
        await clock.advance(0.5)
    report = await task
    assert report.acked == 3  # the handed-back message came back and was handled
    assert report.retried == 1
    assert broker.waiting == 0
