"""The handler contract of Flow batch consumers: one outcome per item, or ForBatch."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from freight import BatchSpec, Flow, HandlerContractError
from freight.flow import ForBatch, Tenant
from freight.testing import FakeClock


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


@dataclass
class Report:
    ns: list[int]


def _flow() -> Flow:
    return Flow(clock=FakeClock(), trace=False)


async def test_a_list_of_the_wrong_length_is_a_contract_dead_letter_per_item() -> None:
    flow = _flow()
    calls: list[int] = []

    @flow.consumer("short", consumes=Ping, batch=BatchSpec(size=4), publishes=Pong)
    async def short(items: list[Ping]) -> list[Pong]:
        calls.append(len(items))
        return [Pong(p.n) for p in items[:3]]  # one outcome missing

    for i in range(4):
        await flow.publish(Ping(i))
    await flow.run_until_idle()
    assert calls == [4]  # called once: a broken contract is not retried or bisected
    assert flow.artifacts(Pong) == []  # nothing guessed, nothing published
    dead = flow.dead_letters("short")
    assert [(d.reason, d.artifacts) for d in dead] == [("contract", [Ping(i)]) for i in range(4)]
    error = dead[0].error
    assert isinstance(error, HandlerContractError)
    assert "returned a list of 3 outcomes for 4 items" in str(error)
    assert "one outcome per item" in str(error)
    assert "ForBatch(*artifacts)" in str(error)
    await flow.close()


async def test_a_bare_artifact_from_a_batch_handler_is_a_contract_error() -> None:
    flow = _flow()

    @flow.consumer("bare", consumes=Ping, batch=BatchSpec(size=2), publishes=Report)
    async def bare(items: list[Ping]) -> Report:
        return Report([p.n for p in items])  # meant for the batch, but not said so

    await flow.publish_many([Ping(1), Ping(2)])
    await flow.run_until_idle()
    assert flow.artifacts(Report) == []
    dead = flow.dead_letters()
    assert [(d.reason, d.artifacts) for d in dead] == [
        ("contract", [Ping(1)]),
        ("contract", [Ping(2)]),
    ]
    message = str(dead[0].error)
    assert "consumer 'bare' (batch=) returned a Report" in message
    assert "ForBatch(*artifacts) to publish for the batch as a whole" in message
    await flow.close()


async def test_a_tuple_of_one_outcome_per_item_is_accepted() -> None:
    flow = _flow()

    @flow.consumer("t", consumes=Ping, batch=BatchSpec(size=3), publishes=Pong)
    async def t(items: list[Ping]) -> tuple[Pong | None, ...]:
        return tuple(Pong(p.n) if p.n else None for p in items)

    await flow.publish_many(Ping(i) for i in range(3))
    await flow.close()
    assert [e.payload for e in flow.artifacts(Pong)] == [Pong(1), Pong(2)]
    assert flow.dead_letters() == []


async def test_for_batch_publishes_once_with_every_batch_member_as_a_source() -> None:
    flow = _flow()
    seen_by_other: list[Report] = []

    # consumers without a tenant see no tenant's artifacts: these serve all tenants
    @flow.consumer("echo", all_tenants=True, consumes=Pong, publishes=Ping)
    async def echo(p: Pong) -> Ping:
        return Ping(p.n)  # depth 0 in, depth 1 out

    @(flow.consumer("summary", consumes=Ping, batch=BatchSpec(size=3), publishes=Report)
          .all_tenants())  # fmt: skip
    async def summary(items: list[Ping]) -> ForBatch:
        return ForBatch(Report(sorted(p.n for p in items)), Report([]))

    @flow.consumer("other-tenant", tenant="other", consumes=Report)
    async def other(report: Report) -> None:
        seen_by_other.append(report)

    acme = Tenant("acme")
    await flow.publish(Ping(1), visibility=acme, correlation_id="order-7")
    await flow.publish(Ping(2), visibility=acme, correlation_id="order-7")
    await flow.publish(Pong(3), visibility=acme, correlation_id="order-7")  # echo: Ping(3)
    await flow.run_until_idle()
    reports = flow.artifacts(Report)
    assert [r.payload for r in reports] == [Report([1, 2, 3]), Report([])]  # one call, once
    for report in reports:
        assert report.producer == "summary"
        assert report.tenant == "acme"  # the batch's tenant: the report stays acme's
        assert report.correlation_id == "order-7"  # shared by every source
        assert report.depth == 2  # one more than the deepest source (the echoed Ping)
    assert seen_by_other == []
    await flow.close()


async def test_for_batch_from_sources_of_several_correlations_has_none() -> None:
    flow = _flow()

    @flow.consumer("summary", consumes=Ping, batch=BatchSpec(size=2), publishes=Report)
    async def summary(items: list[Ping]) -> ForBatch:
        return ForBatch(Report([p.n for p in items]))

    await flow.publish(Ping(1), correlation_id="a")
    await flow.publish(Ping(2), correlation_id="b")
    await flow.close()
    [report] = flow.artifacts(Report)
    assert (report.correlation_id, report.tenant, report.depth) == (None, None, 1)


async def test_for_batch_of_an_undeclared_type_dead_letters_every_source_once() -> None:
    flow = _flow()

    @flow.consumer("liar", consumes=Ping, batch=BatchSpec(size=2), publishes=Report)
    async def liar(items: list[Ping]) -> ForBatch:
        return ForBatch(Pong(0))

    await flow.publish_many([Ping(1), Ping(2)])
    await flow.close()
    [dead] = flow.dead_letters()
    assert (dead.reason, dead.artifacts) == ("contract", [Ping(1), Ping(2)])
    assert "declares .publishes(['Report'])" in str(dead.error)


async def test_for_batch_under_bisection_publishes_per_successful_call() -> None:
    flow = _flow()
    calls: list[list[int]] = []

    @flow.consumer("bulk", consumes=Ping, batch=BatchSpec(size=8), publishes=Report)
    async def bulk(items: list[Ping]) -> ForBatch:
        calls.append([p.n for p in items])
        if any(p.n == 3 for p in items):
            raise ValueError("poison")
        return ForBatch(Report([p.n for p in items]))

    await flow.publish_many(Ping(i) for i in range(8))
    await flow.close()
    # [0..7] raises; [0..3] raises, [4..7] ok; [0, 1] ok, [2, 3] raises; [2] ok, [3] raises
    assert sorted(r.payload.ns for r in flow.artifacts(Report)) == [[0, 1], [2], [4, 5, 6, 7]]
    assert all(r.depth == 1 for r in flow.artifacts(Report))
    [dead] = flow.dead_letters()
    assert (dead.reason, dead.artifacts, str(dead.error)) == ("handler_error", [Ping(3)], "poison")
    assert len(calls) == 7


async def test_for_batch_inside_a_list_or_from_a_single_consumer_is_a_contract_error() -> None:
    flow = _flow()

    @flow.consumer("nested", consumes=Ping, batch=BatchSpec(size=1), publishes=Report)
    async def nested(items: list[Ping]) -> list[ForBatch]:
        return [ForBatch(Report([]))]

    @flow.consumer("single", consumes=Ping, publishes=Report)
    async def single(item: Ping) -> ForBatch:
        return ForBatch(Report([]))

    await flow.publish(Ping(1))
    await flow.close()
    assert flow.artifacts(Report) == []
    errors = {d.consumer: str(d.error) for d in flow.dead_letters()}
    assert {d.reason for d in flow.dead_letters()} == {"contract"}
    assert "not a list holding it" in errors["nested"]
    assert "which is for batch handlers" in errors["single"]


def test_for_batch_is_a_frozen_value() -> None:
    batch = ForBatch(Report([1]), Report([2]))
    assert batch.artifacts == (Report([1]), Report([2]))
    assert batch == ForBatch(Report([1]), Report([2]))
    assert repr(batch) == "ForBatch(Report(ns=[1]), Report(ns=[2]))"
    with pytest.raises(AttributeError):
        batch.artifacts = ()  # type: ignore[misc]
