"""Flow: joins, visibility and tenants, draining, cycles, errors, tracing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from freight import BatchSpec, ConfigError, Flow, JoinSpec, Retry
from freight.flow import (
    DeadLetter,
    DuckDBTracer,
    ForBatch,
    Group,
    Labelled,
    Private,
    Public,
    Span,
    Tenant,
)
from freight.testing import FakeClock


class Temperature(BaseModel):
    device_id: str
    celsius: float


class Pressure(BaseModel):
    device_id: str
    hpa: float


class Analysis(BaseModel):
    devices: list[str]


async def test_join_then_batch_counts_groups_and_dead_letters_what_never_matched() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock)
    calls: list[list[Group]] = []

    @(flow.consumer("iot")
          .consumes(Temperature, Pressure,
                    join=JoinSpec(by="device_id", within=timedelta(seconds=30)),
                    batch=BatchSpec(size=5, timeout=60))
          .publishes(Analysis))  # fmt: skip
    async def analyse(groups: list[Group]) -> ForBatch:
        calls.append(groups)
        return ForBatch(Analysis(devices=[g.key for g in groups]))

    for d in range(5):
        await flow.publish(Temperature(device_id=f"d{d}", celsius=20 + d))
    await flow.publish(Temperature(device_id="lonely", celsius=1))
    await clock.advance(10)
    for d in reversed(range(5)):
        await flow.publish(Pressure(device_id=f"d{d}", hpa=1000 + d))
    await flow.run_until_idle()
    # one handler call with 5 groups (the batch size counts groups, not artifacts)
    assert len(calls) == 1
    assert sorted(g.key for g in calls[0]) == [f"d{d}" for d in range(5)]
    for group in calls[0]:
        assert group.complete
        assert group[Temperature].device_id == group[Pressure].device_id == group.key
        assert group[1] is group[Pressure]
        assert len(group) == 2
        assert group.missing == []
    assert [(p.kind, p.key, p.items) for p in flow.pending()] == [("join", "lonely", 1)]
    await clock.advance(20.5)  # the lonely reading's window (30 s) expires after 30 s
    await flow.run_until_idle()
    [dead] = flow.dead_letters()
    assert (dead.consumer, dead.reason) == ("iot", "join_timeout")
    assert dead.artifacts == [Temperature(device_id="lonely", celsius=1)]
    assert flow.pending() == []
    await flow.close()


async def test_partial_groups_can_be_emitted_to_the_handler() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock)
    seen: list[Group] = []

    @flow.consumer("p").consumes(
        Temperature, Pressure, join=JoinSpec(by="device_id", within=5.0), on_partial="emit"
    )
    async def handle(group: Group) -> None:
        seen.append(group)

    await flow.publish(Pressure(device_id="x", hpa=1))
    await clock.advance(5.5)  # a window closes strictly after within
    await flow.run_until_idle()
    [group] = seen
    assert not group.complete
    assert group.missing == [Temperature]
    assert group[Temperature] is None
    assert "partial" in repr(group)
    with pytest.raises(KeyError):
        group[Analysis]
    assert flow.dead_letters() == []
    await flow.close()


class Event(BaseModel):
    tenant: str
    n: int


class Report(BaseModel):
    tenant: str
    count: int


@given(events=st.lists(st.tuples(st.sampled_from(["A", "B"]), st.integers(0, 1000)), max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_batches_never_mix_tenants_and_a_tenant_never_sees_another(
    events: list[tuple[str, int]],
) -> None:
    import asyncio

    async def scenario() -> None:
        clock = FakeClock()
        flow = Flow(clock=clock, trace=False)  # hundreds of flows: tracing is tested apart
        batches: list[list[Event]] = []
        seen_by_a: list[Event] = []
        reports_seen_by_a: list[Report] = []

        @(flow.consumer("per-tenant")
              .all_tenants()  # sees every tenant, still batches per tenant
              .consumes(Event, batch=BatchSpec(size=3, timeout=10))
              .publishes(Report))  # fmt: skip
        async def batch(items: list[Event]) -> ForBatch:
            batches.append(items)
            return ForBatch(Report(tenant=items[0].tenant, count=len(items)))

        @flow.consumer("only-a", tenant="A").consumes(Event)
        async def only_a(event: Event) -> None:
            seen_by_a.append(event)

        @flow.consumer("reports-a", tenant="A").consumes(Report)
        async def reports_a(report: Report) -> None:
            reports_seen_by_a.append(report)

        for tenant, n in events:
            await flow.publish(Event(tenant=tenant, n=n), visibility=Tenant(tenant))
        await flow.close()
        for items in batches:
            assert len({e.tenant for e in items}) == 1
        assert sorted(e.n for b in batches for e in b) == sorted(n for _, n in events)
        assert all(e.tenant == "A" for e in seen_by_a)
        assert len(seen_by_a) == sum(t == "A" for t, _ in events)
        assert all(r.tenant == "A" for r in reports_seen_by_a)  # reports inherit the tenant

    asyncio.run(scenario())


async def test_visibility_rules() -> None:
    flow = Flow(clock=FakeClock())
    got: dict[str, list[int]] = {"audit": [], "ops": [], "pii": [], "acme": [], "all": []}

    def consumer(name: str, **kw: object) -> None:
        @flow.consumer(name, **kw).consumes(Event)  # type: ignore[arg-type]
        async def take(event: Event) -> None:
            got[name].append(event.n)

    consumer("audit")
    consumer("ops")
    consumer("pii", labels={"pii", "eu"})
    consumer("acme", tenant="acme")
    consumer("all", all_tenants=True)
    await flow.publish(Event(tenant="-", n=1), visibility=Private(consumers={"audit"}))
    await flow.publish(Event(tenant="-", n=2), visibility=Labelled({"pii"}))
    await flow.publish(Event(tenant="acme", n=3), visibility=Tenant(extractor=lambda e: e.tenant))
    await flow.publish(Event(tenant="other", n=4), visibility=Tenant("other"))
    envelope = await flow.publish(Event(tenant="-", n=5), visibility=Public())
    await flow.run_until_idle()
    # a consumer without a tenant sees no tenant's artifacts (Flock's rule); .all_tenants()
    # sees them all
    assert got == {
        "audit": [1, 5],
        "ops": [5],
        "pii": [2, 5],
        "acme": [3, 5],
        "all": [3, 4, 5],
    }
    assert envelope.type == "Event"
    assert envelope.producer is None
    assert flow.artifacts(Event)[2].tenant == "acme"
    with pytest.raises(ConfigError, match="not both"):
        Tenant("acme", extractor=lambda e: e.tenant)
    with pytest.raises(ConfigError, match="non-empty string"):
        await flow.publish(Event(tenant="", n=0), visibility=Tenant(extractor=lambda e: e.tenant))
    with pytest.raises(ConfigError, match="visibility must be"):
        await flow.publish(Event(tenant="", n=0), visibility="public")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="consumer names"):
        Private(consumers=[])
    assert Labelled([]).labels == frozenset()  # no labels: visible to all (Flock)
    await flow.close()


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


async def test_cycles_are_refused_unless_allowed_then_bounded_by_max_depth() -> None:
    def build(flow: Flow) -> None:
        @flow.consumer("ping").consumes(Ping).publishes(Pong)
        async def ping(p: Ping) -> Pong:
            return Pong(p.n + 1)

        @flow.consumer("pong").consumes(Pong).publishes(Ping)
        async def pong(p: Pong) -> Ping:
            return Ping(p.n + 1)

    refused = Flow(clock=FakeClock())
    build(refused)
    with pytest.raises(ConfigError, match="cycle: ping -> pong -> ping"):
        await refused.publish(Ping(0))
    allowed = Flow(clock=FakeClock(), allow_cycles=True, max_depth=6)
    build(allowed)
    await allowed.publish(Ping(0))
    await allowed.run_until_idle()
    assert max(e.depth for e in allowed.artifacts()) == 6
    [dead] = allowed.dead_letters()
    assert dead.reason == "max_depth"
    await allowed.close()


async def test_close_drains_batches_with_reason_close_and_what_they_publish() -> None:
    spans: list[Span] = []
    flow = Flow(clock=FakeClock(), subscribers=[spans.append])
    totals: list[int] = []

    @flow.consumer("a").consumes(Ping, batch=BatchSpec(size=100, timeout=3600)).publishes(Pong)
    async def a(items: list[Ping]) -> list[Pong]:
        return [Pong(p.n) for p in items]

    @flow.consumer("b").consumes(Pong, batch=BatchSpec(size=100, timeout=3600))
    def b(items: list[Pong]) -> None:  # a sync handler runs in a thread
        totals.append(len(items))

    @flow.consumer("j").consumes(Ping, Pong, join=JoinSpec(by=lambda x: -x.n, within=10.0))
    async def j(group: Group) -> None:
        pass

    for i in range(7):
        await flow.publish(Ping(i))
    await flow.run_until_idle()
    assert totals == []
    await flow.close()
    assert totals == [7]
    reasons = [(s.consumer, s.attributes["flush_reason"]) for s in spans if s.name == "flush"]
    assert ("a", "close") in reasons
    assert ("b", "close") in reasons
    assert {d.reason for d in flow.dead_letters("j")} <= {"join_incomplete"}
    assert flow.pending() == []
    with pytest.raises(Exception, match="closed"):
        await flow.publish(Ping(1))
    await flow.close()  # twice is harmless


async def test_poison_isolation_and_contract_errors() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock)
    calls: list[int] = []

    @(flow.consumer("bulk")
          .consumes(Ping, batch=BatchSpec(size=16, timeout=1),
                    retry=Retry(attempts=1, backoff=0, jitter=0, isolate=True))
          .publishes(Pong))  # fmt: skip
    async def bulk(items: list[Ping]) -> list[Pong]:
        calls.append(len(items))
        if any(p.n == 5 for p in items):
            raise ValueError("poison")
        return [Pong(p.n) for p in items]

    @flow.consumer("liar").consumes(Pong)
    async def liar(p: Pong) -> Ping:  # returns a type it does not declare
        return Ping(p.n)

    @flow.consumer("bad-where").consumes(Ping, where=lambda p: 1 / (p.n - 3) > 0)
    async def never(p: Ping) -> None:
        pass

    for i in range(16):
        await flow.publish(Ping(i))
    await flow.run_until_idle()
    assert len(calls) <= 1 + 2 * 4
    assert sorted(e.payload.n for e in flow.artifacts(Pong)) == [i for i in range(16) if i != 5]
    by_reason: dict[str, list[DeadLetter]] = {}
    for d in flow.dead_letters():
        by_reason.setdefault(d.reason, []).append(d)
    assert [d.artifacts for d in by_reason["handler_error"]] == [[Ping(5)]]
    assert len(by_reason["contract"]) == 15
    assert "declares .publishes" in str(by_reason["contract"][0].error)
    assert [d.artifacts for d in by_reason["where_error"]] == [[Ping(3)]]
    await flow.close()


async def test_configuration_errors_say_what_to_fix() -> None:
    flow = Flow(clock=FakeClock())
    with pytest.raises(ConfigError, match="must declare at least one type"):
        flow.consumer("x").consumes()
    with pytest.raises(ConfigError, match="not an artifact type"):
        flow.consumer("x").consumes(int)
    with pytest.raises(ConfigError, match="at least two types"):
        flow.consumer("x").consumes(Ping, join=JoinSpec(by="n", within=1.0))
    with pytest.raises(ConfigError, match=r"batch must be a freight\.BatchSpec"):
        flow.consumer("x").consumes(Ping, batch=25)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_partial applies to joins"):
        flow.consumer("x").consumes(Ping, on_partial="emit")
    with pytest.raises(ConfigError, match=r"before \.does"):
        flow.consumer("x").does(print)
    with pytest.raises(ConfigError, match="non-empty name"):
        flow.consumer("")
    with pytest.raises(ConfigError, match="max_depth"):
        Flow(max_depth=0)
    with pytest.raises(ConfigError, match="pydantic model or a dataclass"):
        await flow.publish({"n": 1})
    flow.consumer("x").consumes(Ping).does(print)
    with pytest.raises(ConfigError, match="already declared"):
        flow.consumer("x").consumes(Ping).does(print)
    await flow.publish(Ping(1))
    with pytest.raises(ConfigError, match="before the flow starts"):
        flow.consumer("late").consumes(Ping).does(print)
    assert "1 consumers" in repr(flow)
    await flow.close()


def test_spans_land_in_duckdb_and_answer_questions(tmp_path: Path) -> None:
    import asyncio

    import duckdb

    path = tmp_path / "traces.duckdb"

    async def run() -> None:
        clock = FakeClock()
        flow = Flow(clock=clock, trace=path)

        @flow.consumer("payments").consumes(Ping, batch=BatchSpec(size=4, timeout=30))
        async def pay(items: list[Ping]) -> None:
            pass

        for i in range(10):
            await flow.publish(Ping(i))
        await clock.advance(30)
        await flow.close()

    asyncio.run(run())
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute(
            "SELECT flush_reason, batch_size, efficiency FROM spans"
            " WHERE name = 'flush' AND consumer = 'payments'"
            " AND started_at > now() - INTERVAL 1 HOUR ORDER BY flush_reason"
        ).fetchall()
        assert rows == [("size", 4, 1.0), ("size", 4, 1.0), ("timeout", 2, 0.5)]
        handled = db.execute(
            "SELECT sum(succeeded), count(*) FROM spans WHERE name = 'handler'"
        ).fetchone()
        assert handled == (10, 3)
        assert db.execute("SELECT count(*) FROM spans WHERE name = 'publish'").fetchone() == (10,)


async def test_spans_go_to_opentelemetry() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from freight.flow import OpenTelemetryTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flow = Flow(clock=FakeClock(), subscribers=[OpenTelemetryTracer(provider)])

    @flow.consumer("c").consumes(Ping, batch=BatchSpec(size=2))
    async def c(items: list[Ping]) -> None:
        pass

    await flow.publish(Ping(1))
    await flow.publish(Ping(2))
    await flow.close()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("freight.flush") == 1
    assert names.count("freight.handler") == 1
    [flush] = [s for s in exporter.get_finished_spans() if s.name == "freight.flush"]
    assert flush.attributes is not None
    assert flush.attributes["freight.flush_reason"] == "size"
    assert flush.attributes["freight.consumer"] == "c"


async def test_a_failing_subscriber_never_breaks_the_flow(caplog: pytest.LogCaptureFixture) -> None:
    def broken(span: Span) -> None:
        raise RuntimeError("subscriber bug")

    flow = Flow(clock=FakeClock(), subscribers=[broken])
    seen: list[int] = []

    @flow.consumer("c").consumes(Ping)
    async def c(p: Ping) -> None:
        seen.append(p.n)

    await flow.publish(Ping(1))
    await flow.close()
    assert seen == [1]
    assert "span subscriber" in caplog.text


@given(
    size=st.integers(1, 6),
    timeout=st.sampled_from([None, 1.0, 5.0]),
    steps=st.lists(st.one_of(st.integers(0, 50), st.floats(0.1, 3.0)), max_size=50),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_published_artifact_is_handled_exactly_once_per_consumer(
    size: int, timeout: float | None, steps: list[int | float]
) -> None:
    """Integers publish, floats move the clock; after close every artifact reached each
    consumer exactly once, and no batch was bigger than its size."""
    import asyncio

    async def scenario() -> None:
        clock = FakeClock()
        flow = Flow(clock=clock, trace=False)  # hundreds of flows: tracing is tested apart
        batched: list[int] = []
        single: list[int] = []
        sizes: list[int] = []

        @flow.consumer("batched").consumes(Ping, batch=BatchSpec(size=size, timeout=timeout))
        async def b(items: list[Ping]) -> None:
            sizes.append(len(items))
            batched.extend(p.n for p in items)

        @flow.consumer("single").consumes(Ping)
        def s(p: Ping) -> None:
            single.append(p.n)

        published = []
        for step in steps:
            if isinstance(step, int):
                published.append(step)
                await flow.publish(Ping(step))
            else:
                await clock.advance(step)
        await flow.close()
        assert sorted(batched) == sorted(published)
        assert sorted(single) == sorted(published)
        assert all(1 <= n <= size for n in sizes)

    asyncio.run(scenario())


async def test_consumer_shortcut_as_a_decorator_and_backpressure() -> None:
    import asyncio

    flow = Flow(clock=FakeClock(), max_in_flight=2)
    running = 0
    most = 0
    gate = asyncio.Event()

    @flow.consumer("slow", consumes=Ping, publishes=Pong)
    async def slow(p: Ping) -> Pong:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return Pong(p.n)

    publisher = asyncio.create_task(_publish_all(flow, 5))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not publisher.done()  # the third publish waits for a handler run to finish
    gate.set()
    await publisher
    await flow.close()
    assert most <= 2
    assert sorted(e.payload.n for e in flow.artifacts(Pong)) == list(range(5))
    with pytest.raises(ConfigError, match="need consumes=Type"):
        Flow().consumer("x", batch=BatchSpec(size=2))
    with pytest.raises(ConfigError, match="max_in_flight"):
        Flow(max_in_flight=0)


async def _publish_all(flow: Flow, count: int) -> None:
    for n in range(count):
        await flow.publish(Ping(n))


async def test_a_retry_backoff_waits_on_the_flow_clock_without_blocking_idle() -> None:
    clock = FakeClock()
    flow = Flow(clock=clock)
    tries: list[float] = []

    @flow.consumer("flaky", consumes=Ping, retry=Retry(attempts=3, backoff=10, jitter=0))
    async def flaky(p: Ping) -> None:
        tries.append(clock.now())
        if len(tries) < 3:
            raise TimeoutError("the service is slow")  # transient: retried after a backoff

    await flow.publish(Ping(1))
    await flow.run_until_idle()  # returns: the only run waits for the clock
    assert tries == [0]
    await clock.advance(10)
    await flow.run_until_idle()
    assert tries == [0, 10]
    await clock.advance(20)
    await flow.run_until_idle()
    assert tries == [0, 10, 30]
    assert flow.dead_letters() == []
    await flow.close()


async def test_spans_go_to_freight_traces_duckdb_by_default() -> None:
    import duckdb

    clock = FakeClock()
    flow = Flow(clock=clock)  # duckdb is installed: the default writes .freight/traces.duckdb

    @flow.consumer("payments", consumes=Ping, batch=BatchSpec(size=25, timeout=30))
    async def pay(items: list[Ping]) -> None:
        pass

    for i in range(60):
        await flow.publish(Ping(i))
    await clock.advance(30)
    await flow.run_until_idle()  # idle: the spans so far are written
    with duckdb.connect(".freight/traces.duckdb", read_only=True) as db:
        rows = db.execute(
            "SELECT flush_reason, batch_size FROM spans WHERE kind = 'flush' ORDER BY batch_size"
        ).fetchall()
    assert rows == [("timeout", 10), ("size", 25), ("size", 25)]
    await flow.close()
    quiet = Flow(clock=clock, trace=False)
    assert not any(isinstance(s, DuckDBTracer) for s in quiet._tracing.subscribers)


def test_the_duckdb_tracer_keeps_spans_it_could_not_write(tmp_path: Path) -> None:
    import duckdb

    (tmp_path / "blocked").write_text("a file where the folder should be")
    tracer = DuckDBTracer(tmp_path / "blocked" / "traces.duckdb")
    span = Span("s1", "flush", "c", datetime.now(UTC), 0.5, {"batch_size": 3, "x": 1})
    tracer(span)
    with pytest.raises(FileExistsError):
        tracer.flush()
    tracer.path = tmp_path / "traces.duckdb"  # the disk is back
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        assert db.execute("SELECT span_id, batch_size, attributes FROM spans").fetchall() == [
            ("s1", 3, '{"x": 1}')
        ]
    assert "traces.duckdb" in repr(tracer)


async def test_an_unreadable_join_key_is_a_dead_letter_not_a_crash() -> None:
    flow = Flow(clock=FakeClock(), trace=False)

    @flow.consumer("j", consumes=(Ping, Pong), join=JoinSpec(by=lambda x: 1 // x.n, within=5.0))
    async def j(group: Group) -> None:
        pass

    await flow.publish(Ping(0))  # 1 // 0: the key cannot be computed
    await flow.publish(Ping(1))
    [dead] = flow.dead_letters()
    assert (dead.reason, dead.artifacts) == ("join_key_error", [Ping(0)])
    assert isinstance(dead.error, ZeroDivisionError)
    assert [p.items for p in flow.pending()] == [1]
    await flow.close()


async def test_without_retry_a_poison_artifact_still_fails_alone() -> None:
    flow = Flow(clock=FakeClock(), trace=False)
    calls: list[int] = []

    @flow.consumer("bulk", consumes=Ping, batch=BatchSpec(size=8), publishes=Pong)
    async def bulk(items: list[Ping]) -> list[Pong]:
        calls.append(len(items))
        if any(p.n == 3 for p in items):
            raise ValueError("poison")
        return [Pong(p.n) for p in items]

    for i in range(8):
        await flow.publish(Ping(i))
    await flow.close()
    assert sorted(e.payload.n for e in flow.artifacts(Pong)) == [0, 1, 2, 4, 5, 6, 7]
    [dead] = flow.dead_letters()
    assert (dead.reason, dead.artifacts, str(dead.error)) == ("handler_error", [Ping(3)], "poison")
    assert calls[0] == 8
    assert len(calls) <= 1 + 2 * 3  # no retries: one call, then the bisection


async def test_max_concurrent_bounds_a_consumers_handler_calls() -> None:
    import asyncio

    flow = Flow(clock=FakeClock(), trace=False)
    running = most = 0
    gate = asyncio.Event()

    @flow.consumer("llm", consumes=Ping, batch=BatchSpec(size=2), max_concurrent=2)
    async def llm(items: list[Ping]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1

    for i in range(10):  # five batches at once
        await flow.publish(Ping(i))
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 2
    gate.set()
    await flow.close()
    assert most == 2
    with pytest.raises(ConfigError, match="max_concurrent"):
        flow.consumer("x").max_concurrent(0)
