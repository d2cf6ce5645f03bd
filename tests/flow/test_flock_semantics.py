"""Flock's subscription semantics on freight's Flow (issue 12, items 1-7).

The cases are ported from Flock's own suite (whiteducksoftware/flock, flock-core 0.5.7):

- ``tests/test_orchestrator_and_gate.py``: AND gates, OR chaining, count-based gates;
- ``tests/test_orchestrator_joinspec.py``: JoinSpec correlation, time and count windows;
- ``tests/test_orchestrator_batchspec.py``: BatchSpec size, timeout, time-only batches;
- ``tests/test_subscription.py``: matching by type, producer (``from_agents``), predicates;
- ``tests/test_visibility.py``: Public, Private, Labelled, Tenant, After.

Adapted to freight's API: an ``EngineComponent`` becomes a handler; ``inputs.artifacts``
is the :class:`~freight.flow.Group` a gate hands over (or the list a batch does);
``asyncio.sleep`` becomes ``FakeClock.advance`` (no real time passes); Flock's
``_check_batch_timeouts()`` and ``_flush_all_batches()`` are the flow's timers and
``close()``. Where freight keeps what Flock drops (an expired join, a poison
predicate), the test says what freight does instead: a dead letter with its reason.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from freight import BatchSpec, ConfigError, Flow, JoinSpec
from freight.flow import After, ForBatch, Group, Labelled, Private, Public, Tenant, Visibility
from freight.store import SqliteStore
from freight.testing import FakeClock


class TypeA(BaseModel):
    value: str
    correlation_id: str = "default"


class TypeB(BaseModel):
    value: str
    correlation_id: str = "default"


class TypeC(BaseModel):
    value: str


class SignalA(BaseModel):
    correlation_id: str
    data: str


class SignalB(BaseModel):
    correlation_id: str
    data: str


class SignalC(BaseModel):
    correlation_id: str
    data: str


class Event(BaseModel):
    id: int
    data: str = ""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def flow(clock: FakeClock) -> Flow:
    return Flow(clock=clock, trace=False)


def names(group: Group | list[Any]) -> list[str]:
    return [type(a).__name__ for a in group]


def values(group: Group) -> list[str]:
    return [a.value for a in group]


# -- AND gates (test_orchestrator_and_gate.py) -------------------------------------------


async def test_simple_and_gate_waits_for_both_types(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("and_gate_agent").consumes(TypeA, TypeB).does(executed.append)
    await flow.publish(TypeA(value="a1", correlation_id="test"))
    await flow.run_until_idle()
    assert executed == []  # waiting for TypeB
    await flow.publish(TypeB(value="b1", correlation_id="test"))
    await flow.run_until_idle()
    [group] = executed
    assert len(group) == 2
    assert names(group) == ["TypeA", "TypeB"]
    assert group[TypeA].value == "a1"
    assert group[TypeB].value == "b1"
    assert group.complete
    assert group.key is None
    await flow.close()


async def test_and_gate_order_independence(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("order_test").consumes(TypeA, TypeB).does(executed.append)
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(TypeA(value="a1"))
    await flow.run_until_idle()
    assert [len(g) for g in executed] == [2]
    assert values(executed[0]) == ["a1", "b1"]  # in declared order, whatever the arrival
    await flow.close()


async def test_three_way_and_gate(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("three_way").consumes(TypeA, TypeB, TypeC).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(TypeC(value="c1"))
    await flow.run_until_idle()
    assert [names(g) for g in executed] == [["TypeA", "TypeB", "TypeC"]]
    await flow.close()


async def test_multiple_agents_same_types_independent_waiting(flow: Flow) -> None:
    first: list[Group] = []
    second: list[Group] = []
    flow.consumer("agent1").consumes(TypeA, TypeB).does(first.append)
    flow.consumer("agent2").consumes(TypeA, TypeB).does(second.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert [len(g) for g in first] == [2]
    assert [len(g) for g in second] == [2]
    await flow.close()


async def test_partial_match_does_not_trigger(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("partial_test").consumes(TypeA, TypeB).does(executed.append)
    for value in ("a1", "a2", "a3"):
        await flow.publish(TypeA(value=value))
    await flow.run_until_idle()
    assert executed == []
    # freight keeps the three As waiting (Flock keeps the last ones); none is dropped
    [pending] = {p.kind for p in flow.pending()}
    assert pending == "join"
    assert sum(p.items for p in flow.pending()) == 3
    await flow.close()
    assert [d.reason for d in flow.dead_letters()] == ["join_incomplete"] * 3


async def test_and_gate_with_single_type_triggers_immediately(flow: Flow) -> None:
    executed: list[TypeA] = []
    flow.consumer("single_type").consumes(TypeA).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.run_until_idle()
    assert executed == [TypeA(value="a1")]  # one artifact, not a group
    await flow.close()


async def test_and_gate_does_not_accumulate_across_completions(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("repeat_test").consumes(TypeA, TypeB).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert len(executed) == 1
    await flow.publish(TypeA(value="a2"))
    await flow.publish(TypeB(value="b2"))
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["a1", "b1"], ["a2", "b2"]]
    await flow.close()


# -- OR gates by chaining ----------------------------------------------------------------


async def test_or_gate_via_chaining(flow: Flow) -> None:
    executed: list[Any] = []
    flow.consumer("or_gate_agent").consumes(TypeA).consumes(TypeB).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.run_until_idle()
    assert executed == [TypeA(value="a1")]
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert executed == [TypeA(value="a1"), TypeB(value="b1")]  # the second call did not replace
    await flow.close()


async def test_mixed_and_or_subscriptions(flow: Flow) -> None:
    executed: list[Any] = []
    flow.consumer("mixed_agent").consumes(TypeA, TypeB).consumes(TypeC).does(executed.append)
    await flow.publish(TypeC(value="c1"))
    await flow.run_until_idle()
    assert executed == [TypeC(value="c1")]
    await flow.publish(TypeA(value="a1"))
    await flow.run_until_idle()
    assert len(executed) == 1  # the AND gate waits for TypeB
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert len(executed) == 2
    assert names(executed[1]) == ["TypeA", "TypeB"]
    await flow.close()


async def test_or_gate_does_not_accumulate(flow: Flow) -> None:
    executed: list[Any] = []
    flow.consumer("or_test").consumes(TypeA).consumes(TypeB).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeA(value="a2"))
    await flow.run_until_idle()
    assert executed == [TypeA(value="a1"), TypeA(value="a2")]
    await flow.close()


async def test_three_way_or_gate(flow: Flow) -> None:
    executed: list[Any] = []
    (flow.consumer("three_or")
         .consumes(TypeA).consumes(TypeB).consumes(TypeC)
         .does(executed.append))  # fmt: skip
    for artifact in (TypeA(value="a1"), TypeB(value="b1"), TypeC(value="c1")):
        await flow.publish(artifact)
        await flow.run_until_idle()
    assert names(executed) == ["TypeA", "TypeB", "TypeC"]
    await flow.close()


# -- count-based AND gates ---------------------------------------------------------------


async def test_count_based_and_gate_waits_for_three_as(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("count_gate").consumes(TypeA, TypeA, TypeA).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeA(value="a2"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(TypeA(value="a3"))
    await flow.run_until_idle()
    [group] = executed
    assert names(group) == ["TypeA"] * 3
    assert values(group) == ["a1", "a2", "a3"]
    await flow.close()


async def test_count_based_and_gate_order_independence(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("count_order").consumes(TypeA, TypeA).does(executed.append)
    await flow.publish(TypeA(value="first"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(TypeA(value="second"))
    await flow.run_until_idle()
    assert [len(g) for g in executed] == [2]
    await flow.close()


async def test_mixed_count_and_type_gate(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("mixed_count").consumes(TypeA, TypeA, TypeB).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert executed == []  # two As needed
    await flow.publish(TypeA(value="a2"))
    await flow.run_until_idle()
    [group] = executed
    assert names(group) == ["TypeA", "TypeA", "TypeB"]
    assert values(group) == ["a1", "a2", "b1"]
    await flow.close()


async def test_count_based_gates_take_artifacts_in_arrival_order(flow: Flow) -> None:
    """Flock: test_count_based_latest_artifacts_win (first two, then the next two)."""
    executed: list[Group] = []
    flow.consumer("latest_wins").consumes(TypeA, TypeA).does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeA(value="a2"))
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["a1", "a2"]]
    await flow.publish(TypeA(value="a3"))
    await flow.publish(TypeA(value="a4"))
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["a1", "a2"], ["a3", "a4"]]
    await flow.close()


async def test_a_gate_hands_over_every_artifact_as_a_group(flow: Flow) -> None:
    """Flock: test_agent_receives_list_of_artifacts_for_and_gate,
    test_agent_can_access_artifact_payloads_in_and_gate,
    test_count_based_gate_provides_all_instances_to_agent."""
    pairs: list[Group] = []
    triples: list[Group] = []
    flow.consumer("signature_test").consumes(TypeA, TypeB).does(pairs.append)
    flow.consumer("count_signature").consumes(TypeC, TypeC, TypeC).does(triples.append)
    await flow.publish(TypeA(value="test_a"))
    await flow.publish(TypeB(value="test_b"))
    for value in ("first", "second", "third"):
        await flow.publish(TypeC(value=value))
    await flow.run_until_idle()
    [pair] = pairs
    assert isinstance(pair, Group)
    assert [(type(a).__name__, a.value) for a in pair] == [("TypeA", "test_a"), ("TypeB", "test_b")]
    assert pair[0] is pair[TypeA]
    assert pair[1] is pair[TypeB]
    [triple] = triples
    assert sorted(values(triple)) == ["first", "second", "third"]
    await flow.close()


async def test_and_gate_with_visibility_filter(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("visibility_test").consumes(TypeA, TypeB).does(executed.append)
    await flow.publish(TypeA(value="public_a"), visibility=Public())
    await flow.publish(TypeB(value="hidden_b"), visibility=Private(agents={"someone_else"}))
    await flow.run_until_idle()
    assert executed == []  # the private B is not for it
    await flow.publish(TypeB(value="public_b"), visibility=Public())
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["public_a", "public_b"]]
    await flow.close()


async def test_and_gate_with_where_predicate(flow: Flow) -> None:
    executed: list[Group] = []

    def predicate(payload: TypeA | TypeB) -> bool:
        return payload.value.startswith("x") if isinstance(payload, TypeA) else True

    flow.consumer("where_test").consumes(TypeA, TypeB, where=predicate).does(executed.append)
    await flow.publish(TypeA(value="a1"))  # refused by the predicate
    await flow.publish(TypeB(value="b1"))  # waits
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(TypeA(value="x1"))
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["x1", "b1"]]
    await flow.close()


async def test_and_gate_with_prevent_self_trigger(clock: FakeClock) -> None:
    """Flock: test_and_gate_with_prevent_self_trigger. As in Flock, a consumer skips its
    own artifacts by default: the A it publishes does not open a second gate."""
    flow = Flow(clock=clock, trace=False)
    runs: list[Group] = []

    @flow.consumer("self_trigger_test").consumes(TypeA, TypeB).publishes(TypeA)
    async def engine(group: Group) -> TypeA:
        runs.append(group)
        return TypeA(value="self_published")

    await flow.publish(TypeA(value="external_a"))
    await flow.publish(TypeB(value="external_b"))
    await flow.run_until_idle()
    await flow.publish(TypeB(value="second_b"))  # would pair with self_published
    await flow.run_until_idle()
    assert [values(g) for g in runs] == [["external_a", "external_b"]]
    await flow.close()


async def test_a_consumer_let_feed_itself_is_refused_as_a_cycle(clock: FakeClock) -> None:
    """``.prevent_self_trigger(False)`` opts into a feedback loop: refused unless the
    flow allows cycles (then max_depth bounds it)."""
    flow = Flow(clock=clock, trace=False)

    @flow.consumer("loop").consumes(TypeA, TypeB).publishes(TypeA).prevent_self_trigger(False)
    async def engine(group: Group) -> TypeA:
        return TypeA(value="self_published")

    with pytest.raises(ConfigError, match=r"loop -> loop.*prevent_self_trigger\(False\)"):
        await flow.publish(TypeA(value="external_a"))


async def test_and_gate_with_multiple_subscriptions_same_agent(flow: Flow) -> None:
    executed: list[Group] = []
    builder = flow.consumer("multi_sub")
    builder.consumes(TypeA, TypeB)  # first AND gate
    builder.consumes(TypeA, TypeC)  # second AND gate
    builder.does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.publish(TypeB(value="b1"))
    await flow.run_until_idle()
    assert [names(g) for g in executed] == [["TypeA", "TypeB"]]
    await flow.publish(TypeA(value="a2"))
    await flow.publish(TypeC(value="c1"))
    await flow.run_until_idle()
    # every subscription that takes an artifact gets it: a1 also waited in the second gate
    assert [names(g) for g in executed] == [["TypeA", "TypeB"], ["TypeA", "TypeC"]]
    assert values(executed[1]) == ["a1", "c1"]
    await flow.close()


async def test_and_gate_many_pairs(flow: Flow) -> None:
    """Flock: test_and_gate_performance_many_artifacts (ten pairs, one run each)."""
    executed: list[Group] = []
    flow.consumer("perf_many").consumes(TypeA, TypeB).does(executed.append)
    for i in range(10):
        await flow.publish(TypeA(value=f"a{i}"))
        await flow.publish(TypeB(value=f"b{i}"))
        await flow.run_until_idle()
    assert [values(g) for g in executed] == [[f"a{i}", f"b{i}"] for i in range(10)]
    await flow.close()


# -- freight's additions to gates --------------------------------------------------------


async def test_gates_are_per_tenant(clock: FakeClock) -> None:
    flow = Flow(clock=clock, trace=False)
    executed: list[Group] = []
    flow.consumer("pairs", all_tenants=True).consumes(TypeA, TypeB).does(executed.append)
    await flow.publish(TypeA(value="a-acme"), visibility=Tenant("acme"))
    await flow.publish(TypeB(value="b-other"), visibility=Tenant("other"))
    await flow.run_until_idle()
    assert executed == []  # one tenant's A never pairs with another's B
    await flow.publish(TypeB(value="b-acme"), visibility=Tenant("acme"))
    await flow.run_until_idle()
    assert [values(g) for g in executed] == [["a-acme", "b-acme"]]
    await flow.close()


async def test_a_gate_with_a_batch_counts_groups(flow: Flow) -> None:
    calls: list[list[Group]] = []
    (flow.consumer("pairs")
         .consumes(TypeA, TypeB, batch=BatchSpec(size=2))
         .does(calls.append))  # fmt: skip
    for i in range(3):
        await flow.publish(TypeA(value=f"a{i}"))
        await flow.publish(TypeB(value=f"b{i}"))
    await flow.run_until_idle()
    assert [[values(g) for g in call] for call in calls] == [[["a0", "b0"], ["a1", "b1"]]]
    await flow.close()  # the third pair flushes at close
    assert [len(call) for call in calls] == [2, 1]


async def test_a_gate_group_open_at_close_can_be_emitted(flow: Flow) -> None:
    executed: list[Group] = []
    flow.consumer("p").consumes(TypeA, TypeB, on_partial="emit").does(executed.append)
    await flow.publish(TypeA(value="a1"))
    await flow.close()
    [group] = executed
    assert not group.complete
    assert group.missing == [TypeB]
    assert flow.dead_letters() == []


# -- JoinSpec (test_orchestrator_joinspec.py) --------------------------------------------


def correlator(flow: Flow, name: str, *types: type, within: Any, **kw: Any) -> list[Group]:
    executed: list[Group] = []
    join = JoinSpec(by=lambda x: x.correlation_id, within=within)
    flow.consumer(name).consumes(*types, join=join, **kw).does(executed.append)
    return executed


def keys(executed: list[Group]) -> list[set[str]]:
    return [{a.correlation_id for a in g} for g in executed]


async def test_joinspec_correlates_artifacts_by_same_key(flow: Flow) -> None:
    executed = correlator(flow, "correlator", SignalA, SignalB, within=timedelta(minutes=5))
    await flow.publish(SignalA(correlation_id="patient-123", data="xray"))
    await flow.publish(SignalB(correlation_id="patient-123", data="labs"))
    await flow.run_until_idle()
    assert keys(executed) == [{"patient-123"}]
    assert executed[0].key == "patient-123"
    await flow.publish(SignalA(correlation_id="patient-456", data="xray2"))
    await flow.publish(SignalB(correlation_id="patient-789", data="labs2"))
    await flow.run_until_idle()
    assert len(executed) == 1  # no cross-correlation
    await flow.close()


async def test_joinspec_multiple_correlation_keys_independent(flow: Flow) -> None:
    executed = correlator(flow, "multi", SignalA, SignalB, within=timedelta(minutes=5))
    for stock in ("stock-AAPL", "stock-MSFT", "stock-TSLA"):
        await flow.publish(SignalA(correlation_id=stock, data="volatility"))
        await flow.publish(SignalB(correlation_id=stock, data="sentiment"))
    await flow.run_until_idle()
    assert keys(executed) == [{"stock-AAPL"}, {"stock-MSFT"}, {"stock-TSLA"}]
    assert all(len(g) == 2 for g in executed)
    await flow.close()


async def test_joinspec_partial_correlation_waits(flow: Flow) -> None:
    executed = correlator(flow, "partial", SignalA, SignalB, within=timedelta(minutes=5))
    await flow.publish(SignalA(correlation_id="session-abc", data="text-input"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(SignalB(correlation_id="session-abc", data="image-upload"))
    await flow.run_until_idle()
    assert keys(executed) == [{"session-abc"}]
    await flow.close()


async def test_joinspec_three_way_correlation(flow: Flow) -> None:
    executed = correlator(flow, "three", SignalA, SignalB, SignalC, within=timedelta(minutes=5))
    await flow.publish(SignalA(correlation_id="batch-001", data="temperature-ok"))
    await flow.publish(SignalB(correlation_id="batch-001", data="pressure-ok"))
    await flow.publish(SignalC(correlation_id="batch-001", data="viscosity-ok"))
    await flow.run_until_idle()
    assert [names(g) for g in executed] == [["SignalA", "SignalB", "SignalC"]]
    await flow.close()


async def test_joinspec_order_independence(flow: Flow) -> None:
    executed = correlator(flow, "order_test", SignalA, SignalB, within=timedelta(minutes=5))
    await flow.publish(SignalA(correlation_id="order-1", data="a1"))
    await flow.publish(SignalB(correlation_id="order-1", data="b1"))
    await flow.run_until_idle()
    assert len(executed) == 1
    await flow.publish(SignalB(correlation_id="order-2", data="b2"))
    await flow.publish(SignalA(correlation_id="order-2", data="a2"))
    await flow.run_until_idle()
    assert keys(executed) == [{"order-1"}, {"order-2"}]
    await flow.close()


class NestedSignalA(BaseModel):
    metadata: dict[str, str]
    data: str


class NestedSignalB(BaseModel):
    metadata: dict[str, str]
    data: str


async def test_joinspec_key_extraction_with_nested_fields(flow: Flow) -> None:
    executed: list[Group] = []
    join = JoinSpec(by=lambda x: x.metadata["request_id"], within=timedelta(minutes=5))
    flow.consumer("nested").consumes(NestedSignalA, NestedSignalB, join=join).does(executed.append)
    await flow.publish(NestedSignalA(metadata={"request_id": "req-xyz", "source": "api"}, data="q"))
    await flow.publish(NestedSignalB(metadata={"request_id": "req-xyz", "source": "db"}, data="r"))
    await flow.run_until_idle()
    assert [g.key for g in executed] == ["req-xyz"]
    await flow.close()


async def test_joinspec_count_based_window(flow: Flow) -> None:
    """``within=10``: the pair must complete within the next 10 artifacts."""
    executed = correlator(flow, "count_window_test", SignalA, SignalB, within=10)
    await flow.publish(SignalA(correlation_id="batch-1", data="a1"))
    for i in range(8):  # noise
        await flow.publish(SignalA(correlation_id=f"noise-{i}", data="noise"))
    await flow.publish(SignalB(correlation_id="batch-1", data="b1"))  # the 9th after it
    await flow.run_until_idle()
    assert keys(executed) == [{"batch-1"}]
    await flow.publish(SignalA(correlation_id="batch-2", data="a2"))
    for i in range(11):  # more than the window
        await flow.publish(SignalA(correlation_id=f"noise2-{i}", data="noise"))
    await flow.publish(SignalB(correlation_id="batch-2", data="b2"))
    await flow.run_until_idle()
    assert len(executed) == 1  # batch-2 expired
    # freight dead-letters what expired (Flock discards it)
    expired = [d.artifacts[0] for d in flow.dead_letters() if d.reason == "join_timeout"]
    assert SignalA(correlation_id="batch-2", data="a2") in expired
    await flow.close()


async def test_joinspec_count_window_with_multiple_correlations(flow: Flow) -> None:
    executed = correlator(flow, "multi_count_window", SignalA, SignalB, within=5)
    await flow.publish(SignalA(correlation_id="req-1", data="a1"))
    await flow.publish(SignalA(correlation_id="req-2", data="a2"))
    await flow.publish(SignalB(correlation_id="req-1", data="b1"))  # req-1 completes
    await flow.publish(SignalA(correlation_id="req-3", data="a3"))
    await flow.publish(SignalB(correlation_id="req-2", data="b2"))  # req-2 completes
    await flow.run_until_idle()
    assert keys(executed) == [{"req-1"}, {"req-2"}]
    await flow.close()


async def test_joinspec_with_visibility_controls(flow: Flow) -> None:
    executed: list[Group] = []
    join = JoinSpec(by=lambda x: x.correlation_id, within=timedelta(minutes=5))
    (flow.consumer("visibility_correlator", labels={"team_a"})
         .consumes(SignalA, SignalB, join=join)
         .does(executed.append))  # fmt: skip
    await flow.publish(SignalA(correlation_id="pub-1", data="a1"), visibility=Public())
    await flow.publish(SignalB(correlation_id="pub-1", data="b1"), visibility=Public())
    await flow.run_until_idle()
    assert len(executed) == 1
    hidden = Labelled(required_labels={"team_b"})  # not visible to team_a
    await flow.publish(SignalA(correlation_id="mixed-1", data="a2"), visibility=hidden)
    await flow.publish(SignalB(correlation_id="mixed-1", data="b2"), visibility=Public())
    await flow.run_until_idle()
    assert len(executed) == 1
    await flow.close()


async def test_joinspec_with_where_predicate_filters_before_correlation(flow: Flow) -> None:
    def completed_labs(payload: SignalA | SignalB) -> bool:
        return payload.data.startswith("completed") if isinstance(payload, SignalB) else True

    executed = correlator(
        flow, "predicate", SignalA, SignalB, within=timedelta(minutes=5), where=completed_labs
    )
    await flow.publish(SignalA(correlation_id="lab-1", data="xray"))
    await flow.publish(SignalB(correlation_id="lab-1", data="pending"))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(SignalB(correlation_id="lab-1", data="completed-results"))
    await flow.run_until_idle()
    assert [[a.data for a in g] for g in executed] == [["xray", "completed-results"]]
    await flow.close()


async def test_joinspec_correlation_state_isolation_per_agent(flow: Flow) -> None:
    first = correlator(flow, "agent1", SignalA, SignalB, within=timedelta(minutes=5))
    second = correlator(flow, "agent2", SignalA, SignalB, within=timedelta(minutes=5))
    await flow.publish(SignalA(correlation_id="shared-1", data="a"))
    await flow.publish(SignalB(correlation_id="shared-1", data="b"))
    await flow.run_until_idle()
    assert keys(first) == keys(second) == [{"shared-1"}]
    await flow.close()


async def test_joinspec_time_based_expiry_discards_partial_correlation(
    flow: Flow, clock: FakeClock
) -> None:
    executed = correlator(flow, "time_expiry", SignalA, SignalB, within=timedelta(seconds=1.0))
    await flow.publish(SignalA(correlation_id="incomplete-1", data="a"))
    await flow.run_until_idle()
    await clock.advance(1.2)  # Flock sleeps 1.2 s; the flow's clock moves instead
    await flow.run_until_idle()
    assert executed == []  # never run with incomplete data...
    [dead] = flow.dead_letters()  # ...and, in freight, never dropped silently
    assert (dead.reason, dead.artifacts) == (
        "join_timeout",
        [SignalA(correlation_id="incomplete-1", data="a")],
    )
    await flow.publish(SignalA(correlation_id="incomplete-1", data="a2"))
    await flow.publish(SignalB(correlation_id="incomplete-1", data="b2"))
    await flow.run_until_idle()
    assert [[a.data for a in g] for g in executed] == [["a2", "b2"]]  # started fresh
    await flow.close()


async def test_joinspec_time_expiry_vs_batch_timeout_behavior(flow: Flow, clock: FakeClock) -> None:
    correlated = correlator(flow, "correlation_agent", SignalA, SignalB, within=1.0)
    batches: list[list[SignalC]] = []
    (flow.consumer("batch_agent")
         .consumes(SignalC, batch=BatchSpec(size=10, timeout=timedelta(seconds=1.0)))
         .does(batches.append))  # fmt: skip
    await flow.publish(SignalA(correlation_id="test", data="a"))
    await flow.publish(SignalC(correlation_id="test", data="c1"))
    await flow.run_until_idle()
    assert correlated == []
    assert batches == []
    await clock.advance(3.5)
    await flow.run_until_idle()
    assert correlated == []  # a partial join expires (a dead letter in freight)
    assert [len(b) for b in batches] == [1]  # a partial batch flushes
    assert [d.reason for d in flow.dead_letters()] == ["join_timeout"]
    await flow.close()


async def test_two_artifacts_of_one_type_join_by_key(flow: Flow, clock: FakeClock) -> None:
    """``.consumes(T, T, join=...)`` pairs two Ts of one key (issue 12, item 1)."""
    executed = correlator(flow, "pairs", SignalA, SignalA, within=timedelta(seconds=30))
    await flow.publish(SignalA(correlation_id="k1", data="first"))
    await flow.publish(SignalA(correlation_id="k2", data="other"))
    await flow.publish(SignalA(correlation_id="k1", data="second"))
    await flow.run_until_idle()
    assert [[a.data for a in g] for g in executed] == [["first", "second"]]
    assert [(p.key, p.items) for p in flow.pending()] == [("k2", 1)]
    await clock.advance(30.001)  # strictly after the window (Flock)
    await flow.run_until_idle()
    assert [d.reason for d in flow.dead_letters()] == ["join_timeout"]
    await flow.close()


# -- BatchSpec (test_orchestrator_batchspec.py) ------------------------------------------


def batcher(flow: Flow, name: str, batch: BatchSpec, **kw: Any) -> list[list[int]]:
    executed: list[list[int]] = []

    async def handle(items: list[Event]) -> None:
        executed.append([e.id for e in items])

    flow.consumer(name, **kw).consumes(Event, batch=batch).does(handle)
    return executed


async def test_batchspec_flushes_on_size_threshold(flow: Flow) -> None:
    executed = batcher(flow, "batch_processor", BatchSpec(size=3))
    await flow.publish(Event(id=1))
    await flow.publish(Event(id=2))
    await flow.run_until_idle()
    assert executed == []
    await flow.publish(Event(id=3))
    await flow.run_until_idle()
    assert executed == [[1, 2, 3]]
    await flow.close()


async def test_batchspec_continues_batching_after_flush(flow: Flow) -> None:
    executed = batcher(flow, "batch_processor", BatchSpec(size=3))
    for i in range(1, 7):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert executed == [[1, 2, 3], [4, 5, 6]]
    await flow.close()


async def test_batchspec_partial_batch_stays_pending(flow: Flow) -> None:
    executed = batcher(flow, "batch_processor", BatchSpec(size=5))
    for i in range(1, 4):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert executed == []
    assert [(p.kind, p.items, p.deadline) for p in flow.pending()] == [("batch", 3, None)]
    await flow.close()


async def test_batchspec_multiple_agents_independent_batches(flow: Flow) -> None:
    first = batcher(flow, "batch_agent1", BatchSpec(size=2))
    second = batcher(flow, "batch_agent2", BatchSpec(size=3))
    for i in range(1, 7):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert [len(b) for b in first] == [2, 2, 2]
    assert [len(b) for b in second] == [3, 3]
    await flow.close()


async def test_batchspec_flushes_on_timeout_without_a_size(flow: Flow, clock: FakeClock) -> None:
    """``BatchSpec(timeout=...)`` without a size is a time-only batch (issue 12, item 4)."""
    executed = batcher(flow, "timeout_batch", BatchSpec(timeout=timedelta(milliseconds=100)))
    await flow.publish(Event(id=1))
    await flow.run_until_idle()
    assert executed == []
    await clock.advance(0.15)
    await flow.run_until_idle()
    assert executed == [[1]]
    for i in range(2, 502):  # no size: however many arrive, one batch per window
        await flow.publish(Event(id=i))
    await clock.advance(0.1)
    await flow.run_until_idle()
    assert [len(b) for b in executed] == [1, 500]
    await flow.close()


async def test_batchspec_size_or_timeout_whichever_first(flow: Flow, clock: FakeClock) -> None:
    executed = batcher(flow, "hybrid", BatchSpec(size=5, timeout=timedelta(milliseconds=200)))
    for i in range(1, 4):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert executed == []
    await clock.advance(0.25)
    await flow.run_until_idle()
    assert [len(b) for b in executed] == [3]
    for i in range(4, 9):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert [len(b) for b in executed] == [3, 5]
    await flow.close()


async def test_batchspec_timeout_resets_after_flush(flow: Flow, clock: FakeClock) -> None:
    executed = batcher(flow, "reset", BatchSpec(size=2, timeout=timedelta(milliseconds=100)))
    await flow.publish(Event(id=1))
    await flow.publish(Event(id=2))
    await flow.run_until_idle()
    assert len(executed) == 1
    await clock.advance(0.15)
    await flow.run_until_idle()
    assert len(executed) == 1  # no spurious flush of an empty batch
    await flow.publish(Event(id=3))
    await clock.advance(0.15)
    await flow.run_until_idle()
    assert executed == [[1, 2], [3]]
    await flow.close()


async def test_batchspec_shutdown_flushes_partial_batch(flow: Flow) -> None:
    executed = batcher(flow, "shutdown_test", BatchSpec(size=5))
    for i in range(1, 4):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert executed == []
    await flow.close()
    assert executed == [[1, 2, 3]]


async def test_batchspec_with_visibility_filters_before_batching(flow: Flow) -> None:
    executed = batcher(flow, "visibility_batch", BatchSpec(size=2), labels={"team_a"})
    team_b = Labelled({"team_b"})
    await flow.publish(Event(id=1), visibility=Public())
    await flow.publish(Event(id=2), visibility=team_b)
    await flow.publish(Event(id=3), visibility=Public())
    await flow.publish(Event(id=4), visibility=team_b)
    await flow.run_until_idle()
    assert executed == [[1, 3]]
    await flow.close()


async def test_batchspec_with_where_predicate_filters_before_batching(flow: Flow) -> None:
    executed: list[list[int]] = []

    async def handle(items: list[Event]) -> None:
        executed.append([e.id for e in items])

    (flow.consumer("predicate_batch")
         .consumes(Event, where=lambda e: e.id % 2 == 0, batch=BatchSpec(size=2))
         .does(handle))  # fmt: skip
    for i in range(1, 6):
        await flow.publish(Event(id=i))
    await flow.run_until_idle()
    assert executed == [[2, 4]]
    await flow.close()


async def test_batchspec_hundred_artifacts_in_ten_batches(flow: Flow) -> None:
    executed = batcher(flow, "performance_batch", BatchSpec(size=10))
    await flow.publish_many(Event(id=i) for i in range(1, 101))
    await flow.run_until_idle()
    assert [len(b) for b in executed] == [10] * 10
    await flow.close()


async def test_a_time_only_batch_never_mixes_tenants(clock: FakeClock) -> None:
    flow = Flow(clock=clock, trace=False)
    executed = batcher(flow, "per_tenant", BatchSpec(timeout=5), all_tenants=True)
    for i in range(6):
        await flow.publish(Event(id=i), visibility=Tenant("ab"[i % 2]))
    await clock.advance(5)
    await flow.run_until_idle()
    assert sorted(executed) == [[0, 2, 4], [1, 3, 5]]
    await flow.close()


async def test_a_batch_handler_publishes_for_a_time_only_batch(clock: FakeClock) -> None:
    class Summary(BaseModel):
        ids: list[int]

    flow = Flow(clock=clock, trace=False)

    @flow.consumer("summary", consumes=Event, batch=BatchSpec(timeout=1), publishes=Summary)
    async def summary(items: list[Event]) -> ForBatch:
        return ForBatch(Summary(ids=[e.id for e in items]))

    await flow.publish_many(Event(id=i) for i in range(3))
    await clock.advance(1)
    await flow.run_until_idle()
    assert [e.payload.ids for e in flow.artifacts(Summary)] == [[0, 1, 2]]
    await flow.close()


# -- subscription matching (test_subscription.py) -----------------------------------------


class Movie(BaseModel):
    title: str
    runtime: int


class Idea(BaseModel):
    topic: str


async def test_subscription_matches_correct_type_and_rejects_wrong_type(flow: Flow) -> None:
    movies: list[Movie] = []
    flow.consumer("test_agent").consumes(Movie).does(movies.append)
    flow.consumer("ideas").consumes(Idea).does(lambda idea: None)
    await flow.publish(Movie(title="TEST MOVIE", runtime=120))
    await flow.publish(Idea(topic="test"))
    await flow.run_until_idle()
    assert movies == [Movie(title="TEST MOVIE", runtime=120)]
    await flow.close()


async def test_subscription_matches_from_agents_and_rejects_wrong_producer(flow: Flow) -> None:
    """``from_=["movie_agent"]`` (Flock: ``from_agents=``): only what that consumer
    published."""
    seen: list[Movie] = []
    seen_flock: list[Movie] = []
    flow.consumer("movie_agent").consumes(Idea).publishes(Movie).does(
        lambda idea: Movie(title=idea.topic, runtime=120)
    )
    flow.consumer("other_agent").consumes(Idea).publishes(Movie).does(
        lambda idea: Movie(title=f"other {idea.topic}", runtime=90)
    )
    flow.consumer("test_agent").consumes(Movie, from_=["movie_agent"]).does(seen.append)
    flow.consumer("flock_spelling").consumes(Movie, from_agents={"movie_agent"}).does(
        seen_flock.append
    )
    await flow.publish(Idea(topic="TEST"))
    await flow.publish(Movie(title="from outside", runtime=1))  # no producer
    await flow.run_until_idle()
    assert seen == seen_flock == [Movie(title="TEST", runtime=120)]
    await flow.close()


async def test_a_producer_filter_naming_no_consumer_matches_nothing_with_a_warning(
    flow: Flow, caplog: pytest.LogCaptureFixture
) -> None:
    """Flock: test_subscription_rejects_wrong_producer. A name no consumer has is
    accepted (an outside publisher may carry it) and matches only what that producer
    published; the flow warns at start, in case it is a typo."""
    seen: list[Movie] = []
    flow.consumer("test_agent").consumes(Movie, from_agents={"movie_agent"}).does(seen.append)
    await flow.publish(Movie(title="x", runtime=1))
    await flow.run_until_idle()
    assert seen == []
    assert "names no declared consumer" in caplog.text
    assert "movie_agent" in caplog.text
    await flow.close()


async def test_a_producer_filter_matches_an_outside_publisher_by_name(flow: Flow) -> None:
    """An outside ``publish`` has no producer unless it names one (``producer=``);
    ``from_=`` then takes what that publisher published, and nothing without it."""
    seen: list[str] = []
    flow.consumer("reader").consumes(Movie, from_="ingest").does(lambda m: seen.append(m.title))
    plain = await flow.publish(Movie(title="anonymous", runtime=1))
    named = await flow.publish(Movie(title="ingested", runtime=1), producer="ingest")
    await flow.publish_many([Movie(title="bulk", runtime=1)], producer="ingest")
    await flow.run_until_idle()
    assert (plain.producer, named.producer) == (None, "ingest")
    assert seen == ["ingested", "bulk"]
    with pytest.raises(ConfigError, match="producer names the outside publisher"):
        await flow.publish(Movie(title="x", runtime=1), producer="")
    await flow.close()


async def test_subscription_predicates_one_or_a_list_all_must_hold(flow: Flow) -> None:
    """Flock: test_subscription_matches_with_predicate, _rejects_failing_predicate,
    _matches_multiple_predicates (issue 12, item 5)."""
    long: list[str] = []
    long_action: list[str] = []
    flow.consumer("long").consumes(Movie, where=lambda m: m.runtime > 120).does(
        lambda m: long.append(m.title)
    )
    (flow.consumer("long_action")
         .consumes(Movie, where=[lambda m: m.runtime > 120, lambda m: "ACTION" in m.title])
         .does(lambda m: long_action.append(m.title)))  # fmt: skip
    await flow.publish(Movie(title="ACTION MOVIE", runtime=150))
    await flow.publish(Movie(title="DRAMA", runtime=150))
    await flow.publish(Movie(title="ACTION SHORT", runtime=90))
    await flow.run_until_idle()
    assert long == ["ACTION MOVIE", "DRAMA"]
    assert long_action == ["ACTION MOVIE"]
    await flow.close()


async def test_a_predicate_that_raises_is_a_dead_letter_not_a_match(flow: Flow) -> None:
    """Flock: test_subscription_predicate_exception_returns_false; freight does not
    hide the error: the artifact is that consumer's dead letter (``where_error``)."""
    seen: list[Movie] = []

    def bad_predicate(movie: Movie) -> bool:
        raise AttributeError("Intentional error")

    flow.consumer("test_agent").consumes(Movie, where=[bad_predicate]).does(seen.append)
    await flow.publish(Movie(title="TEST", runtime=120))
    await flow.run_until_idle()
    assert seen == []
    [dead] = flow.dead_letters()
    assert (dead.reason, type(dead.error)) == ("where_error", AttributeError)
    await flow.close()


@pytest.mark.parametrize(
    ("argument", "feature"),
    [
        ({"channels": {"sci-fi"}}, "channel (tag) routing (channels=)"),
        ({"tags": {"sci-fi"}}, "channel (tag) routing (tags=)"),
        ({"text": "about space"}, "semantic text matching"),
        ({"min_p": 0.5}, "semantic text matching"),
        ({"delivery": "exclusive"}, "delivery modes (delivery=)"),
        ({"mode": "direct"}, "subscription modes (mode=)"),
        ({"priority": 5}, "subscription priorities (priority=)"),
        ({"semantic_match": True}, "semantic matching"),
        ({"activation": object()}, "activation conditions"),
        ({"colour": "red"}, "unknown argument colour="),
    ],
)
def test_what_flock_accepts_and_freight_does_not_support_is_refused_by_name(
    flow: Flow, argument: dict[str, Any], feature: str
) -> None:
    with pytest.raises(ConfigError, match=re_escape(feature)):
        flow.consumer("test_agent").consumes(Movie, **argument)


def re_escape(text: str) -> str:
    return re.escape(text)


def test_declaration_errors_say_what_to_fix(flow: Flow) -> None:
    """Flock: test_subscription_requires_at_least_one_type, and freight's own checks."""
    with pytest.raises(ConfigError, match="must declare at least one type"):
        flow.consumer("x").consumes()
    with pytest.raises(ConfigError, match=r"where must be a callable .* or a list of them"):
        flow.consumer("x").consumes(Movie, where="runtime > 3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="from_ and from_agents are one filter"):
        flow.consumer("x").consumes(Movie, from_="a", from_agents="a")
    with pytest.raises(ConfigError, match="from_ takes the names"):
        flow.consumer("x").consumes(Movie, from_=[""])
    with pytest.raises(ConfigError, match="from_ takes consumer names"):
        flow.consumer("x").consumes(Movie, from_=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_partial applies to joins and AND gates"):
        flow.consumer("x").consumes(Movie, on_partial="emit")
    with pytest.raises(ConfigError, match=r"\.consumes\(T, T, join=\.\.\.\) for two of one type"):
        flow.consumer("x").consumes(Movie, join=JoinSpec(by="title", within=1.0))
    with pytest.raises(ConfigError, match="one tenant or all, not both"):
        flow.consumer("x", tenant="acme").all_tenants()
    with pytest.raises(ConfigError, match="one tenant or all, not both"):
        flow.consumer("x", all_tenants=True).tenant("acme")
    with pytest.raises(ConfigError, match="need consumes=Type"):
        flow.consumer("x", from_="a")
    retry_twice = flow.consumer("x").consumes(Movie, rate_limit=5)
    with pytest.raises(ConfigError, match="rate_limit is the consumer's"):
        retry_twice.consumes(Idea, rate_limit=6)
    mixed = flow.consumer("x").consumes(Movie, batch=BatchSpec(size=2)).consumes(Idea)
    with pytest.raises(ConfigError, match="some of its subscriptions batch= and some do not"):
        mixed.does(print)
    with pytest.raises(ConfigError, match=r"ending in \[<number>\]"):
        flow.consumer("x[1]").consumes(Movie).does(print)


async def test_batch_and_join_may_be_given_as_dicts_as_in_flock(flow: Flow) -> None:
    executed: list[Group] = []
    join = {"by": lambda x: x.correlation_id, "within": timedelta(seconds=5)}
    flow.consumer("j").consumes(SignalA, SignalB, join=join).does(executed.append)
    builder = flow.consumer("b").consumes(Event, batch={"size": 10, "timeout": 5.0})
    assert builder.spec.batch == BatchSpec(size=10, timeout=5.0)
    with pytest.raises(ConfigError, match="batch="):
        flow.consumer("c").consumes(Event, batch={"within": 5})
    await flow.publish(SignalA(correlation_id="k", data="a"))
    await flow.publish(SignalB(correlation_id="k", data="b"))
    await flow.run_until_idle()
    assert [g.key for g in executed] == ["k"]
    await flow.close()


# -- visibility (test_visibility.py) ------------------------------------------------------


async def test_visibility_kinds_allow_whom_they_name(flow: Flow) -> None:
    """Flock: public allows all; private allows listed, denies unlisted; labelled
    allows holders of every label, denies others; tenant allows the same tenant."""
    got: dict[str, list[int]] = {}

    def consumer(name: str, **kw: Any) -> None:
        got[name] = []
        flow.consumer(name, **kw).consumes(Event).does(lambda e: got[name].append(e.id))

    consumer("agent_a")
    consumer("agent_b")
    consumer("secret", labels={"clearance:secret", "department:finance"})
    consumer("public", labels={"clearance:public"})
    consumer("tenant_a", tenant="tenant_a")
    consumer("tenant_b", tenant="tenant_b")
    await flow.publish(Event(id=1), visibility=Public())
    await flow.publish(Event(id=2), visibility=Private(agents={"agent_a", "secret"}))
    await flow.publish(Event(id=3), visibility=Labelled(required_labels={"clearance:secret"}))
    await flow.publish(Event(id=4), visibility=Tenant(tenant_id="tenant_a"))
    await flow.run_until_idle()
    assert got == {
        "agent_a": [1, 2],
        "agent_b": [1],
        "secret": [1, 2, 3],
        "public": [1],
        "tenant_a": [1, 4],
        "tenant_b": [1],
    }
    await flow.close()


async def test_tenant_visibility_with_none_allows_all(flow: Flow) -> None:
    got: dict[str, list[int]] = {}
    for name, tenant in (("a", "tenant_a"), ("b", "tenant_b"), ("c", None)):
        seen = got[name] = []
        flow.consumer(f"agent_{name}", tenant=tenant).consumes(Event).does(
            lambda e, seen=seen: seen.append(e.id)
        )
    envelope = await flow.publish(Event(id=1), visibility=Tenant(tenant_id=None))
    await flow.publish(Event(id=2), visibility=Tenant())
    await flow.run_until_idle()
    assert got == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}
    assert envelope.tenant is None
    await flow.close()


async def test_a_consumer_without_a_tenant_does_not_receive_a_tenants_artifacts(
    flow: Flow,
) -> None:
    """Flock denies them (issue 12, item 6); .all_tenants() sees every tenant."""
    no_tenant: list[int] = []
    every: list[int] = []
    flow.consumer("no_tenant").consumes(Event).does(lambda e: no_tenant.append(e.id))
    flow.consumer("every").all_tenants().consumes(Event).does(lambda e: every.append(e.id))
    await flow.publish(Event(id=1), visibility=Tenant("a"))
    await flow.publish(Event(id=2), visibility=Tenant(extractor=lambda e: "b"))
    await flow.publish(Event(id=3))
    await flow.run_until_idle()
    assert no_tenant == [3]
    assert every == [1, 2, 3]
    await flow.close()


async def test_all_tenants_keeps_joins_per_tenant_and_outputs_the_tenants(
    flow: Flow,
) -> None:
    class Pair(BaseModel):
        key: str

    seen_by_a: list[Pair] = []

    @(flow.consumer("pairs", all_tenants=True)
          .consumes(SignalA, SignalB, join=JoinSpec(by="correlation_id", within=60.0))
          .publishes(Pair))  # fmt: skip
    async def pair(group: Group) -> Pair:
        return Pair(key=group.key)

    flow.consumer("tenant_a", tenant="a").consumes(Pair).does(seen_by_a.append)
    await flow.publish(SignalA(correlation_id="k", data="1"), visibility=Tenant("a"))
    await flow.publish(SignalB(correlation_id="k", data="2"), visibility=Tenant("b"))
    await flow.run_until_idle()
    assert flow.artifacts(Pair) == []  # same key, other tenants: no pair
    await flow.publish(SignalB(correlation_id="k", data="3"), visibility=Tenant("a"))
    await flow.run_until_idle()
    [made] = flow.artifacts(Pair)
    assert made.tenant == "a"  # made from tenant a's artifacts: tenant a's
    assert seen_by_a == [Pair(key="k")]
    await flow.close()


async def test_after_visibility_denies_before_the_delay_and_allows_after(
    flow: Flow, clock: FakeClock
) -> None:
    """Flock: test_after_visibility_denies_before_ttl, _allows_after_ttl, on the flow's
    clock."""
    seen: list[tuple[int, float]] = []
    flow.consumer("agent").consumes(Event).does(lambda e: seen.append((e.id, clock.now())))
    await flow.publish(Event(id=1), visibility=After(timedelta(hours=24)))
    await clock.advance(3600)
    await flow.run_until_idle()
    assert seen == []
    [waiting] = flow.pending()
    assert (waiting.kind, waiting.deadline) == ("after", 24 * 3600)
    await clock.advance(23 * 3600)
    await flow.run_until_idle()
    assert seen == [(1, 24 * 3600)]
    assert flow.pending() == []
    await flow.close()


async def test_after_visibility_then_clause_decides_after_the_delay(
    flow: Flow, clock: FakeClock
) -> None:
    """Flock: test_after_visibility_then_clause_allows_listed_agent, _none_allows_all."""
    got: dict[str, list[int]] = {"agent_a": [], "agent_b": []}
    for name, seen in got.items():
        flow.consumer(name).consumes(Event).does(lambda e, seen=seen: seen.append(e.id))
    await flow.publish(
        Event(id=1), visibility=After(ttl=timedelta(hours=1), then=Private(agents={"agent_a"}))
    )
    await flow.publish(Event(id=2), visibility=After(3600, then=None))
    await clock.advance(2 * 3600)
    await flow.run_until_idle()
    assert got == {"agent_a": [1, 2], "agent_b": [2]}
    await flow.close()


async def test_after_a_tenant_an_embargoed_artifact_batches_from_its_release(
    clock: FakeClock,
) -> None:
    flow = Flow(clock=clock, trace=False)
    executed = batcher(flow, "acme", BatchSpec(size=10, timeout=5), tenant="acme")
    other = batcher(flow, "other", BatchSpec(size=10, timeout=5), tenant="other")
    envelope = await flow.publish(Event(id=1), visibility=After(10, then=Tenant("acme")))
    assert envelope.tenant == "acme"
    await clock.advance(14.9)
    await flow.run_until_idle()
    assert executed == []  # released at 10, its batch times out at 15
    await clock.advance(0.1)
    await flow.run_until_idle()
    assert executed == [[1]]
    assert other == []
    await flow.close()


async def test_an_in_memory_flow_dead_letters_what_is_still_embargoed_at_close(
    flow: Flow,
) -> None:
    seen: list[Event] = []
    flow.consumer("agent").consumes(Event).does(seen.append)
    await flow.publish(Event(id=1), visibility=After(60))
    await flow.close()
    assert seen == []
    [dead] = flow.dead_letters()
    assert (dead.consumer, dead.reason, dead.artifacts) == ("agent", "embargoed", [Event(id=1)])


def test_visibility_declarations_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Tenant("a", extractor=lambda a: "b")
    with pytest.raises(ConfigError, match="After needs its delay, once"):
        After()
    with pytest.raises(ConfigError, match="After needs its delay, once"):
        After(1, ttl=1)
    with pytest.raises(ConfigError, match=r"After\.delay"):
        After(-1)
    with pytest.raises(ConfigError, match="add them up"):
        After(1, then=After(2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Private needs the consumer names, once"):
        Private(consumers={"a"}, agents={"b"})
    with pytest.raises(ConfigError, match="labels or required_labels, not both"):
        Labelled({"a"}, required_labels={"b"})
    assert Private(agents={"a"}) == Private(consumers={"a"})
    assert Labelled(required_labels={"x"}) == Labelled({"x"})
    assert After(timedelta(minutes=1)) == After(ttl=60, then=Public())


# -- durable flows: gates, subscriptions and embargoes survive a restart -------------------


async def test_a_durable_flow_restores_gates_subscriptions_and_embargoes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "flow.db")
    handled: list[tuple[str, list[str]]] = []

    def declare(clock: FakeClock) -> Flow:
        flow = Flow(store=store, clock=clock, trace=False)
        (flow.consumer("gate")
             .consumes(TypeA, TypeB)
             .consumes(TypeA, TypeC)
             .does(lambda g: handled.append(("gate", values(g)))))  # fmt: skip
        flow.consumer("late").consumes(TypeC).does(lambda c: handled.append(("late", [c.value])))
        return flow

    first = declare(FakeClock())
    await first.publish(TypeA(value="a1"))
    await first.publish(TypeB(value="b1"))  # the first gate completes; a1 waits in the second
    await first.publish(TypeC(value="c-embargo"), visibility=After(60))
    await first.run_until_idle()
    assert handled == [("gate", ["a1", "b1"])]
    # the process dies here (no close): a1 is open in the second gate, c-embargo embargoed
    second = declare(FakeClock(1000))
    await second.run_until_idle()
    assert handled == [("gate", ["a1", "b1"])]  # a1 is not handled again by the first gate
    assert {p.kind for p in second.pending()} == {"join", "after"}
    await second.publish(TypeC(value="c1"))
    await second.run_until_idle()
    assert handled[1:] == [("gate", ["a1", "c1"]), ("late", ["c1"])]
    await second.close()  # durable: the embargoed artifact stays on the board
    assert second.dead_letters() == []
    clock = FakeClock(5000)
    third = declare(clock)
    await third.run_until_idle()
    assert [h for h in handled if "c-embargo" in h[1]] == []  # 60 s from its publication
    await clock.advance(60)
    await third.run_until_idle()
    assert [h for h in handled if "c-embargo" in h[1]] == [("late", ["c-embargo"])]
    await third.close()
    store.close()


async def test_a_durable_flow_records_one_delivery_per_subscription(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "flow.db")
    flow = Flow(store=store, clock=FakeClock(), trace=False)
    seen: list[str] = []
    (flow.consumer("either")
         .consumes(TypeA)
         .consumes(TypeA, where=lambda a: a.value.startswith("x"))
         .does(lambda a: seen.append(a.value)))  # fmt: skip
    await flow.publish(TypeA(value="x1"))
    await flow.publish(TypeA(value="y1"))
    await flow.close()
    assert sorted(seen) == ["x1", "x1", "y1"]  # each subscription that takes it gets it
    rows = store.query("SELECT consumer, status FROM flow_deliveries ORDER BY seq, consumer", ())
    assert [(r["consumer"], r["status"]) for r in rows] == [
        ("either", "done"), ("either[1]", "done"), ("either", "done"),
    ]  # fmt: skip
    store.close()


async def test_every_visibility_survives_the_board(tmp_path: Path) -> None:
    """A durable board stores each artifact's visibility and reads it back as it was."""
    kinds: list[Visibility] = [
        Public(),
        Private(agents={"a", "b"}),
        Tenant("acme"),
        Tenant(None),
        Labelled("pii"),
        After(30, then=Tenant(extractor=lambda e: f"t{e.id}")),
        After(timedelta(minutes=1), then=Labelled({"x", "y"})),
    ]
    first = Flow(store=tmp_path / "flow.db", clock=FakeClock(), trace=False)
    first.consumer("sink").consumes(Event).does(print)
    published = [await first.publish(Event(id=i), visibility=v) for i, v in enumerate(kinds)]
    assert published[5].visibility == After(30, then=Tenant("t5"))  # the extractor ran
    assert published[5].tenant == "t5"
    again = Flow(store=tmp_path / "flow.db", clock=FakeClock(), trace=False)
    again.consumer("sink").consumes(Event).does(print)
    stored = again.artifacts(Event)
    assert [e.visibility for e in stored] == [e.visibility for e in published]
    assert [e.tenant for e in stored] == [None, None, "acme", None, None, "t5", None]


async def test_an_after_without_delay_left_delivers_at_once(flow: Flow) -> None:
    seen: list[int] = []
    flow.consumer("agent").consumes(Event).does(lambda e: seen.append(e.id))
    await flow.publish(Event(id=1), visibility=After(0))
    await flow.run_until_idle()
    assert seen == [1]
    await flow.close()


def test_a_consumer_spec_lists_its_subscriptions(flow: Flow) -> None:
    """The first subscription's options stay readable as the consumer's, as before."""
    join = JoinSpec(by="correlation_id", within=5)
    spec = (
        flow.consumer("c", labels="one")
        .consumes(SignalA, SignalB, join=join, where=lambda s: True, on_partial="emit")
        .consumes(SignalC, from_="c")
        .does(print)
    )
    assert [s.types for s in spec.subscriptions] == [(SignalA, SignalB), (SignalC,)]
    assert spec.types == (SignalA, SignalB, SignalC)
    assert (spec.join, spec.on_partial, spec.batch) == (join, "emit", None)
    assert spec.where is not None
    assert spec.subscriptions[1].producers == frozenset({"c"})
    assert spec.labels == frozenset({"one"})
    assert [spec.delivery_name(i) for i in range(3)] == ["c", "c[1]", "c[2]"]
    bare = flow.consumer("bare").spec
    assert (bare.join, bare.where, bare.on_partial, bare.types) == (None, None, "dead_letter", ())
    with pytest.raises(ConfigError, match="non-empty string"):
        flow.consumer("t").tenant("")


# -- review findings (issue 12, items 1-7, ported from Flock) -----------------------------


async def test_and_gate_hands_over_a_list_of_the_artifacts(flow: Flow) -> None:
    """Flock: test_agent_receives_list_of_artifacts_for_and_gate."""
    received: list[Group] = []
    flow.consumer("gate").consumes(TypeA, TypeB).does(received.append)
    a, b = TypeA(value="a1"), TypeB(value="b1")
    await flow.publish(a)
    await flow.publish(b)
    await flow.run_until_idle()
    [group] = received
    assert isinstance(group, list)
    assert group == [a, b]
    assert [a, b] == group
    assert (group[TypeA], group[TypeB], group[0], group[-1]) == (a, b, a, b)
    assert group[0:1] == [a]
    assert (group.key, group.complete, group.missing, group.artifacts) == (None, True, [], (a, b))
    await flow.close()


async def test_and_gate_pools_by_correlation_id(flow: Flow) -> None:
    """Flock keys a gate's pool by the publish's correlation id: two runs never pair."""
    received: list[Group] = []
    flow.consumer("gate").consumes(TypeA, TypeB).does(received.append)
    await flow.publish(TypeA(value="a1"), correlation_id="run-1")
    await flow.publish(TypeB(value="b2"), correlation_id="run-2")
    await flow.run_until_idle()
    assert received == []
    await flow.publish(TypeB(value="b1"), correlation_id="run-1")
    await flow.publish(TypeA(value="a2"), correlation_id="run-2")
    await flow.run_until_idle()
    assert [values(g) for g in received] == [["a1", "b1"], ["a2", "b2"]]
    await flow.close()


async def test_prevent_self_trigger_skips_own_artifacts(clock: FakeClock) -> None:
    """Flock: test_and_gate_with_prevent_self_trigger. With ``.prevent_self_trigger()``
    the consumer never receives what it published itself (and is no cycle): it runs
    once."""
    flow = Flow(clock=clock, trace=False)
    runs: list[Group] = []

    @(
        flow.consumer("self_trigger_test")
        .consumes(TypeA, TypeB)
        .publishes(TypeA)
        .prevent_self_trigger()
    )
    async def engine(group: Group) -> TypeA:
        runs.append(group)
        return TypeA(value="self_published")

    seen_by_others: list[str] = []
    flow.consumer("other").consumes(TypeA).does(lambda a: seen_by_others.append(a.value))
    await flow.publish(TypeA(value="external_a"))
    await flow.publish(TypeB(value="external_b"))
    await flow.run_until_idle()
    await flow.publish(TypeB(value="another_b"))  # its own TypeA never fills the gate
    await flow.run_until_idle()
    assert [values(g) for g in runs] == [["external_a", "external_b"]]
    assert seen_by_others == ["external_a", "self_published"]
    assert flow.consumers[0].prevent_self_trigger
    await flow.close()


async def test_prevent_self_trigger_is_an_option_of_the_shortcut_and_can_be_turned_off(
    clock: FakeClock,
) -> None:
    flow = Flow(clock=clock, trace=False)
    runs: list[str] = []

    def echo(event: Event) -> Event:
        runs.append(event.data)
        return Event(id=event.id + 1, data="echo")

    flow.consumer("echo", consumes=Event, publishes=Event, prevent_self_trigger=True).does(echo)
    await flow.publish(Event(id=1, data="outside"))
    await flow.run_until_idle()
    assert runs == ["outside"]
    await flow.close()
    off = Flow(clock=clock, trace=False)
    off.consumer("echo").consumes(Event).publishes(Event).prevent_self_trigger(
        enabled=True
    ).prevent_self_trigger(enabled=False).does(lambda e: None)
    with pytest.raises(ConfigError, match="cycle: echo -> echo"):
        await off.publish(Event(id=1))


async def test_join_time_window_expires_strictly_after_within(flow: Flow, clock: FakeClock) -> None:
    """Flock expires a join group only once more than ``within`` has passed."""
    got: list[str] = []
    flow.consumer("j").consumes(
        SignalA, SignalB, join=JoinSpec(by="correlation_id", within=timedelta(seconds=30))
    ).does(lambda g: got.append(g.key))
    await flow.publish(SignalA(correlation_id="x", data="a"))
    await clock.advance(30)
    await flow.publish(SignalB(correlation_id="x", data="b"))
    await flow.run_until_idle()
    assert got == ["x"]
    await flow.publish(SignalA(correlation_id="y", data="a"))
    await clock.advance(30.001)
    await flow.publish(SignalB(correlation_id="y", data="b"))
    await flow.run_until_idle()
    assert got == ["x"]
    assert [(d.reason, len(d.artifacts)) for d in flow.dead_letters()] == [("join_timeout", 1)]
    await flow.close()


def test_flock_messages_for_empty_declarations(flow: Flow) -> None:
    with pytest.raises(ConfigError, match="must declare at least one type"):
        flow.consumer("x").consumes()
    with pytest.raises(ConfigError, match="requires at least one of: size, timeout"):
        BatchSpec()


@pytest.mark.parametrize(
    ("declare", "feature"),
    [
        (lambda b: b.publishes(TypeA, TypeA), "fan-out"),
        (lambda b: b.publishes(TypeA, fan_out=3), "fan-out (fan_out=)"),
        (lambda b: b.publishes(TypeA, where=lambda a: True), "filtered publishing (where=)"),
        (lambda b: b.publishes(TypeA, validate=lambda a: True), "publish validation (validate=)"),
        (lambda b: b.publishes(TypeA, description="x"), "publish descriptions (description=)"),
        (lambda b: b.consumes(TypeB, semantic_threshold=0.5), "semantic matching"),
    ],
)
def test_what_flock_publishes_accepts_and_freight_does_not_is_refused_by_name(
    flow: Flow, declare: Any, feature: str
) -> None:
    with pytest.raises(ConfigError, match=re_escape(feature)):
        declare(flow.consumer("p").consumes(TypeC))


def test_max_concurrency_and_description_are_accepted(flow: Flow) -> None:
    builder = flow.consumer("c").consumes(TypeA).max_concurrency(2).description("does things")
    assert (builder.spec.max_concurrent, builder.spec.description) == (2, "does things")
    with pytest.raises(ConfigError, match="max_concurrent must be an int >= 1"):
        flow.consumer("d").max_concurrency(0)
    with pytest.raises(ConfigError, match="description must be a string"):
        flow.consumer("d").description(3)  # type: ignore[arg-type]


async def test_an_empty_where_list_filters_nothing_and_empty_labels_are_visible_to_all(
    flow: Flow,
) -> None:
    seen: list[str] = []
    flow.consumer("all").consumes(TypeC, where=[]).does(lambda c: seen.append(c.value))
    await flow.publish(TypeC(value="one"))
    await flow.publish(TypeC(value="two"), visibility=Labelled(required_labels=set()))
    await flow.run_until_idle()
    assert seen == ["one", "two"]
    await flow.close()


@pytest.mark.parametrize(
    ("batch", "feature"),
    [
        (BatchSpec(size="auto", latency_target=0.05), "adaptive sizing"),
        (BatchSpec(size=5, max_cost=10, cost=len), "batch cost"),
    ],
)
def test_a_flow_consumer_refuses_what_only_batchers_tune(
    flow: Flow, batch: BatchSpec, feature: str
) -> None:
    with pytest.raises(ConfigError, match=feature + ".*is for Batcher, ThreadBatcher and @batched"):
        flow.consumer("c").consumes(TypeA, batch=batch)
