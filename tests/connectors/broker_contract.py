"""The contract every broker source and every broker/Redis sink keeps, as plain async checks.

Each check takes a harness (a :class:`BrokerHarness` for sources, a :class:`SinkHarness`
for sinks) and asserts one rule of the port; a test module parametrizes them over its
backends (the in-memory twin, a real server)::

    @pytest.mark.parametrize("check", SOURCE_CHECKS, ids=lambda c: c.__name__)
    async def test_source_contract(check, harness): await check(harness)

Bodies are small JSON-able dicts ``{"n": i}``, so every broker can carry them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from freight import BatchSpec, PermanentError, Retry, TransientError
from freight.connectors import BrokerSource, ConsumeReport, Message, consume

__all__ = [
    "SINK_CHECKS",
    "SOURCE_CHECKS",
    "BrokerHarness",
    "SinkHarness",
    "drain",
]

NO_WAIT = Retry(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0)


class BrokerHarness(Protocol):
    """One broker under test: a place to publish to, consumers to read it, its dead letters."""

    async def publish(self, bodies: Sequence[dict[str, Any]]) -> None:
        """Put ``bodies`` on the broker, in order, under one key/stream/partition."""

    async def source(self) -> BrokerSource:
        """A new consumer of what :meth:`publish` put there (same group: shares the work).
        Messages a closed consumer left unsettled reach it within :attr:`redelivery` s."""

    async def dead_letters(self) -> list[tuple[dict[str, Any], str]]:
        """``(body, reason)`` of each message in the broker's dead-letter place."""

    async def drop_connection(self, source: BrokerSource) -> None:
        """Make the server drop ``source``'s connection (``CLIENT KILL``, closing the
        AMQP connection, …); the source must get over it on its own."""

    redelivery: float
    """Real seconds within which a closed consumer's unsettled messages are delivered
    again (0 for the twin; a claim idle time for Redis Streams)."""


class SinkHarness(Protocol):
    """One sink under test: valid items, one the server refuses alone, and a read-back."""

    def items(self, n: int) -> list[Any]:
        """``n`` distinct valid items."""

    def poison(self) -> Any:
        """An item the server refuses on its own while the others of its batch land."""

    async def write(self, items: list[Any]) -> list[Any] | None:
        """Write ``items`` through the sink (sync sinks in a thread); its outcomes."""

    async def landed(self, items: list[Any]) -> list[bool]:
        """Per item, whether it is on the server now."""


def bodies(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``{"n": start}``, … ``{"n": start + n - 1}``."""
    return [{"n": i} for i in range(start, start + n)]


async def drain(
    harness: BrokerHarness,
    source: BrokerSource,
    handler: Callable[[list[Any]], Any],
    *,
    size: int = 10,
    retry: Retry = NO_WAIT,
    expect: int,
    settle_timeout: float = 10.0,
) -> ConsumeReport:
    """Consume until ``expect`` messages are settled (or ``settle_timeout`` real seconds).

    A real broker may hand an empty fetch while messages wait to be redelivered, so
    ``until_idle`` alone is not enough: consume in rounds until the count is reached.
    """
    total = ConsumeReport()
    deadline = time.monotonic() + settle_timeout
    while total.acked + total.dead_lettered < expect and time.monotonic() < deadline:
        report = await consume(
            source,
            handler,
            spec=BatchSpec(size=size, timeout=0.05),
            retry=retry,
            until_idle=True,
        )
        for name in ("batches", "messages", "acked", "retried", "dead_lettered"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.reasons.extend(report.reasons)
    return total


def collector() -> tuple[list[int], Callable[[list[Any]], Awaitable[None]]]:
    seen: list[int] = []

    async def handle(items: list[Any]) -> None:
        seen.extend(item["n"] for item in items)

    return seen, handle


async def round_trip(harness: BrokerHarness) -> None:
    """A batch published is handled once, each message acknowledged, nothing left over."""
    await harness.publish(bodies(25))
    source = await harness.source()
    seen, handle = collector()
    report = await drain(harness, source, handle, expect=25)
    assert sorted(seen) == list(range(25))
    assert report.acked == 25
    assert report.dead_lettered == report.retried == 0
    again = await consume(source, handle, spec=BatchSpec(size=10, timeout=0.05), until_idle=True)
    assert again.messages == 0
    await source.close()


async def per_item_outcome(harness: BrokerHarness) -> None:
    """In a partial failure each message is settled by its own outcome: the refused one
    is dead-lettered with its reason, one failing transiently once is retried and
    acknowledged, the rest acknowledged."""
    await harness.publish(bodies(10))
    source = await harness.source()
    calls: list[list[int]] = []

    async def handle(items: list[Any]) -> list[Any]:
        calls.append([i["n"] for i in items])
        first = len(calls) == 1
        return [
            PermanentError("refused: n=4")
            if i["n"] == 4
            else TransientError("busy")
            if i["n"] == 7 and first
            else i["n"]
            for i in items
        ]

    report = await drain(harness, source, handle, expect=10)
    assert report.acked == 9
    assert report.dead_lettered == 1
    dead = await harness.dead_letters()
    assert [(b, r) for b, r in dead] == [({"n": 4}, "PermanentError: refused: n=4")]
    assert calls[1] == [7]  # the transient one alone, in process
    await source.close()


async def poison_flows_around(harness: BrokerHarness) -> None:
    """A message that makes the whole handler raise is bisected out and dead-lettered
    with its reason; every other message is handled and acknowledged."""
    await harness.publish(bodies(16))
    source = await harness.source()
    seen: list[int] = []

    async def handle(items: list[Any]) -> None:
        if any(i["n"] == 11 for i in items):
            raise ValueError("cannot parse n=11")
        seen.extend(i["n"] for i in items)

    report = await drain(harness, source, handle, size=8, expect=16)
    assert sorted(seen) == [n for n in range(16) if n != 11]
    assert report.dead_lettered == 1
    assert await harness.dead_letters() == [({"n": 11}, "ValueError: cannot parse n=11")]
    await source.close()


async def unsettled_comes_back(harness: BrokerHarness) -> None:
    """A consumer that fetched and died (closed without settling) loses nothing: another
    consumer gets those messages, counted as a further delivery."""
    await harness.publish(bodies(6))
    first = await harness.source()
    taken: list[Message] = []
    deadline = time.monotonic() + 5
    while len(taken) < 6 and time.monotonic() < deadline:
        taken += await first.fetch(6 - len(taken), 0.2)
    assert sorted(m.body["n"] for m in taken) == list(range(6))
    await first.close()
    second = await harness.source()
    again: list[Message] = []
    deadline = time.monotonic() + harness.redelivery + 5
    while len(again) < 6 and time.monotonic() < deadline:
        again += await second.fetch(6, 0.2)
    assert sorted(m.body["n"] for m in again) == list(range(6))
    assert all(m.attempts >= 2 for m in again)
    await second.ack(again)
    await second.close()


async def reconnects_after_drop(harness: BrokerHarness) -> None:
    """The server drops the consumer's connection mid-run; consuming goes on, nothing lost."""
    await harness.publish(bodies(20))
    source = await harness.source()
    seen, handle = collector()
    first = await consume(
        source, handle, spec=BatchSpec(size=5, timeout=0.05), retry=NO_WAIT, max_batches=1
    )
    assert first.acked == 5
    await harness.drop_connection(source)
    await drain(harness, source, handle, size=5, expect=15)
    assert sorted(set(seen)) == list(range(20))
    await source.close()


async def order_kept(harness: BrokerHarness) -> None:
    """Messages of one stream/partition reach the handler in publish order."""
    await harness.publish(bodies(40))
    source = await harness.source()
    seen, handle = collector()
    await drain(harness, source, handle, size=7, expect=40)
    assert seen == list(range(40))
    await source.close()


SOURCE_CHECKS: list[Callable[[BrokerHarness], Awaitable[None]]] = [
    round_trip,
    per_item_outcome,
    poison_flows_around,
    unsettled_comes_back,
    reconnects_after_drop,
    order_kept,
]


async def sink_round_trip(harness: SinkHarness) -> None:
    """A batch written lands whole; the sink reports success for every item."""
    items = harness.items(50)
    outcomes = await harness.write(items)
    assert outcomes is None or not any(isinstance(o, BaseException) for o in outcomes)
    assert await harness.landed(items) == [True] * 50


async def sink_per_item_outcome(harness: SinkHarness) -> None:
    """One item the server refuses fails alone, at its index; the others land."""
    items = harness.items(9)
    items.insert(4, harness.poison())
    outcomes = await harness.write(items)
    assert outcomes is not None
    assert [isinstance(o, Exception) for o in outcomes] == [i == 4 for i in range(10)]
    landed = await harness.landed(items[:4] + items[5:])
    assert landed == [True] * 9


SINK_CHECKS: list[Callable[[SinkHarness], Awaitable[None]]] = [
    sink_round_trip,
    sink_per_item_outcome,
]


async def settle_soon(check: Awaitable[None], seconds: float = 30.0) -> None:
    """Run one check with an upper bound, so a hung broker fails the test, not the run."""
    await asyncio.wait_for(check, seconds)
