"""Publish spans are written as runs (``publish_runs``): whatever the order artifacts are
made and routed in, and wherever writes fall, the view ``spans`` holds every publish
span once, with its own id, type, producer, tenant, depth, consumers and start."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freight import BatchSpec, Flow
from freight.flow import DuckDBTracer
from freight.flow._artifacts import Envelope
from freight.flow._trace_store import PublishRuns
from freight.flow._tracing import Tracing


@dataclass
class Tx:
    n: int


class FakeRouter:
    """Makes ids as the flow's router does (a prefix and a counter in hex) and keeps the
    newest, as ``Issuer`` asks."""

    def __init__(self, tracing: Tracing, prefix: str = "0123456789abcdef-") -> None:
        self.id_prefix = prefix
        self.newest: str | None = None
        self.issued = 0
        tracing.issuer = self

    def make(self, kind: str, producer: str | None, tenant: str | None, depth: int) -> Envelope:
        self.issued += 1
        self.newest = f"{self.id_prefix}{self.issued:x}"
        return Envelope(self.newest, kind, Tx(self.issued), producer, float(self.issued),
                        datetime.now(UTC), tenant=tenant, depth=depth)  # fmt: skip


def publish_now(tracing: Tracing, envelope: Envelope) -> None:
    """Route ``envelope`` alone, made and routed now on a real clock (as a flow does):
    the wall clock minus the flow's stays put, and runs go on."""
    now = time.monotonic()
    tracing.published([(envelope._replace(created_at=now), 0, ["c"])], now)


# A step: ("make", key index, consumers, at once) makes an envelope and routes it alone
# at once (an outside publish) or keeps it unrouted; ("route", k) routes the k oldest
# unrouted ones in one route; ("foreign", key index) routes one of another form of id
# at once; ("write",) writes what is queued.
KEYS = [("Tx", None, None, 0), ("Tx", "pay", None, 1), ("Report", None, "a", 0)]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("make"), st.integers(0, len(KEYS) - 1), st.integers(1, 3), st.booleans()),
        st.tuples(st.just("route"), st.integers(1, 4)),
        st.tuples(st.just("foreign"), st.integers(0, len(KEYS) - 1)),
        st.tuples(st.just("write")),
    ),
    max_size=60,
)


Expected = list[tuple[object, ...]]


def row(envelope: Envelope, consumers: int) -> tuple[object, ...]:
    """What the view should hold of ``envelope``'s publish span (and its created_at)."""
    return (envelope.id, envelope.type, envelope.producer, envelope.tenant, envelope.depth,
            consumers, envelope.created_at)  # fmt: skip


def play(
    steps: list[tuple[object, ...]], tracing: Tracing, tracers: list[DuckDBTracer]
) -> Expected:
    """Run ``steps`` (see ``steps``); what the trace files should hold."""
    router = FakeRouter(tracing)
    unrouted: list[tuple[Envelope, int]] = []
    expected: Expected = []

    def route(envelopes: list[tuple[Envelope, int]]) -> None:
        if envelopes:
            tracing.published([(e, 0, ["c"] * n) for e, n in envelopes], 0.0)
            expected.extend(row(e, n) for e, n in envelopes)

    for step in steps:
        if step[0] == "make":
            _, key, consumers, at_once = step
            made = (router.make(*KEYS[int(key)]), int(consumers))  # type: ignore[call-overload]
            route([made]) if at_once else unrouted.append(made)
        elif step[0] == "route":
            count = int(step[1])  # type: ignore[call-overload]
            route(unrouted[:count])
            del unrouted[:count]
        elif step[0] == "foreign":
            kind, producer, tenant, depth = KEYS[int(step[1])]  # type: ignore[call-overload]
            route([(Envelope(f"restored-{len(expected)}", kind, Tx(0), producer, 0.5,
                             datetime.now(UTC), tenant=tenant, depth=depth), 1)])  # fmt: skip
        else:
            for tracer in tracers:
                tracer.flush()
    route(unrouted)
    return expected


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps, two_tracers=st.booleans())
def test_every_publish_span_is_written_once_with_its_own_values(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[object, ...]], two_tracers: bool
) -> None:
    folder = tmp_path_factory.mktemp("runs")
    tracers = [DuckDBTracer(folder / f"t{i}.duckdb", interval=3600) for i in range(2)]
    tracing = Tracing("f", tracers[: 1 + two_tracers], False)
    wall = time.time()
    expected = play(steps, tracing, tracers)
    for tracer in tracers:
        tracer.close()
    for tracer in tracers[: 1 + two_tracers]:
        if not expected:
            assert not tracer.path.exists()
            continue
        with duckdb.connect(str(tracer.path), read_only=True) as db:
            got = db.execute(
                "SELECT span_id, artifact_type, consumer, tenant, "
                "CAST(attributes->>'depth' AS INTEGER), CAST(attributes->>'consumers' AS INTEGER),"
                " epoch(started_at) FROM spans WHERE name = 'publish'"
            ).fetchall()
        assert sorted(r[:6] for r in got) == sorted(r[:6] for r in expected)
        # a start is the span's created_at on the wall clock (now minus its age)
        starts = {r[0]: r[6] for r in got}
        for span_id, *_, created in expected:
            assert abs(starts[span_id] - (wall + float(created))) < 60  # type: ignore[arg-type]


def test_consecutive_artifacts_of_one_kind_make_one_row(tmp_path: Path) -> None:
    """The point of runs: 1,000 outside publishes of one type are one row of
    ``publish_runs``, whose ids and starts the view gives back one by one."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb")
    tracing = Tracing("f", [tracer], False)
    router = FakeRouter(tracing)
    for _ in range(1_000):
        publish_now(tracing, router.make("Tx", None, None, 0))
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        assert db.execute("SELECT count(*), sum(len(started)) FROM publish_runs").fetchall() == [
            (1, 1_000)
        ]
        ids = [r[0] for r in db.execute("SELECT span_id FROM spans ORDER BY started_at").fetchall()]
    assert ids == [f"0123456789abcdef-{n:x}" for n in range(1, 1_001)]


def test_a_run_split_by_a_write_goes_on_with_the_right_ids(tmp_path: Path) -> None:
    tracer = DuckDBTracer(tmp_path / "t.duckdb")
    tracing = Tracing("f", [tracer], False)
    router = FakeRouter(tracing)
    for n in range(30):
        publish_now(tracing, router.make("Tx", None, None, 0))
        if n in (9, 10, 20):
            tracer.flush()
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        ids = {r[0] for r in db.execute("SELECT span_id FROM spans").fetchall()}
        firsts = db.execute("SELECT list(first_no ORDER BY first_no) FROM publish_runs")
        assert firsts.fetchall() == [([1, 11, 12, 22],)]
    assert ids == {f"0123456789abcdef-{n:x}" for n in range(1, 31)}


def test_two_flows_of_one_name_sharing_a_tracer_never_mix_their_ids(tmp_path: Path) -> None:
    """Each flow's router makes its own ids; a run of one never goes on with the
    other's artifacts, even when their counters meet."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb")
    first, second = Tracing("f", [tracer], False), Tracing("f", [tracer], False)
    a, b = FakeRouter(first, "aaaaaaaaaaaaaaaa-"), FakeRouter(second, "bbbbbbbbbbbbbbbb-")
    made = []
    for _ in range(5):
        for tracing, router in ((first, a), (second, b)):
            envelope = router.make("Tx", None, None, 0)
            made.append(envelope.id)
            tracing.published([(envelope, 0, ["c"])], 0.0)
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        ids = sorted(r[0] for r in db.execute("SELECT span_id FROM spans").fetchall())
    assert ids == sorted(made)


def test_the_newest_spans_of_runs_are_kept_whole() -> None:
    """``tail`` (what a failed write keeps) cuts the oldest run it keeps at its start."""
    runs = PublishRuns(
        "f",
        [("p-", 1, "Tx", None, None, 0, 1, 0.0, 3), ("q-", None, "Tx", None, None, 0, 1, 0.0, 1),
         ("p-", 10, "Tx", None, None, 0, 1, 0.0, 4)],
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    )  # fmt: skip
    kept = runs.tail(6)
    assert kept.starts == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert [(r[0], r[1], r[-1]) for r in kept.runs] == [
        ("p-", 3, 1), ("q-", None, 1), ("p-", 10, 4)
    ]  # fmt: skip
    assert len(runs.tail(8)) == 8


async def test_a_file_of_the_per_span_layout_keeps_its_publish_spans(tmp_path: Path) -> None:
    """A file written when each publish span was a row of ``publish_spans``: its view is
    replaced, its rows stay, new spans join them."""
    path = tmp_path / "traces.duckdb"
    with duckdb.connect(str(path)) as db:
        db.execute(
            "CREATE TABLE publish_spans (flow VARCHAR NOT NULL, span_id VARCHAR NOT NULL,"
            " artifact_type VARCHAR NOT NULL, consumer VARCHAR, started_at TIMESTAMPTZ"
            " NOT NULL, tenant VARCHAR, depth INTEGER NOT NULL, consumers INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO publish_spans VALUES ('f', 'old-1', 'Tx', NULL, now(), NULL, 0, 1)")
        db.execute("CREATE VIEW spans AS SELECT span_id, 'publish' AS name FROM publish_spans")
    flow = Flow(trace=path)

    @flow.consumer("c").consumes(Tx, batch=BatchSpec(size=5))
    async def handle(batch: list[Tx]) -> None:
        return None

    async with flow:
        for n in range(5):
            await flow.publish(Tx(n))
    with duckdb.connect(str(path), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM spans WHERE name = 'publish'").fetchall() == [(6,)]
        assert db.execute("SELECT consumers FROM publish_spans").fetchall() == [(1,)]
        old = db.execute("SELECT attributes FROM spans WHERE span_id = 'old-1'")
        [(attributes,)] = old.fetchall()
    assert attributes == '{"consumers": 1, "depth": 0}'


def test_an_artifact_id_with_a_uuid_tail_is_written_as_it_is(tmp_path: Path) -> None:
    """A tail of hex digits too big for a run's number (a uuid's) is not a counter: the
    span keeps its id, and the file is written (a number past 64 bits failed every
    later write of the tracer)."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb")
    tracing = Tracing("f", [tracer], False)
    ids = [f"evt-{uuid.uuid4().hex}" for _ in range(3)] + ["evt-ffffffffffffffff"]
    for span_id in ids:
        envelope = Envelope(span_id, "Tx", Tx(0), None, 0.0, datetime.now(UTC))
        tracing.published([(envelope, 0, ["c"])], 0.0)
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        got = sorted(r[0] for r in db.execute("SELECT span_id FROM spans").fetchall())
    assert got == sorted(ids)


def test_a_span_starts_at_its_own_offset_when_the_flows_clock_jumps(tmp_path: Path) -> None:
    """A run's spans share its clock offset (wall minus flow clock): a span published
    after the flow's clock moved on (a fake clock advanced, the wall clock set) opens a
    run of its own, and starts where it did."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb")
    tracing = Tracing("f", [tracer], False)
    router = FakeRouter(tracing)
    wall = time.time()
    for now in (1.0, 1.0, 3601.0, 3601.0):  # the flow clock jumps an hour
        envelope = router.make("Tx", None, None, 0)._replace(created_at=now)
        tracing.published([(envelope, 0, ["c"])], now)
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        starts = [r[0] for r in db.execute("SELECT epoch(started_at) FROM spans").fetchall()]
    assert len(starts) == 4
    assert all(abs(start - wall) < 60 for start in starts), starts  # each now, on the wall


def test_two_flows_of_one_name_in_two_threads_keep_their_spans_apart(tmp_path: Path) -> None:
    """Two flows of one name sharing a tracer, publishing at once in two threads: every
    span once, with its own id (each flow queues into its own columns)."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb", interval=3600)
    made: list[list[str]] = [[], []]

    def publish(index: int) -> None:
        tracing = Tracing("f", [tracer], False)
        router = FakeRouter(tracing, f"{index:016x}-")
        for n in range(5_000):
            envelope = router.make("Tx" if n % 7 else "Other", None, None, 0)
            made[index].append(envelope.id)
            tracing.published([(envelope, 0, ["c"])], 0.0)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracer.close()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        got = sorted(r[0] for r in db.execute("SELECT span_id FROM spans").fetchall())
    assert got == sorted(made[0] + made[1])


def test_on_a_monotonic_clock_a_set_wall_clock_opens_a_run_within_256_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow on a monotonic clock has its offset to the wall clock checked every 256
    publish spans, not at each: once the wall clock is set an hour on, the spans start
    an hour later from the next check on."""
    tracer = DuckDBTracer(tmp_path / "t.duckdb", interval=3600)
    tracing = Tracing("f", [tracer], False)
    tracing.steady = True
    router = FakeRouter(tracing)
    real = time.time
    shift = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + shift[0])  # the module _tracing reads
    for n in range(1_000):
        if n == 300:
            shift[0] = 3600.0  # the wall clock is set an hour on
        publish_now(tracing, router.make("Tx", None, None, 0))
    tracer.close()
    monkeypatch.undo()
    with duckdb.connect(str(tracer.path), read_only=True) as db:
        starts = [r[0] for r in db.execute("SELECT epoch(started_at) FROM spans").fetchall()]
    late = sum(start > real() + 1800 for start in starts)
    assert 1_000 - 300 - 256 <= late <= 1_000 - 300
