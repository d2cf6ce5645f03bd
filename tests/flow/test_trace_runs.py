"""Publish spans are written as runs (``publish_runs``): whatever the order artifacts are
made and routed in, and wherever writes fall, the view ``spans`` holds every publish
span once, with its own id, type, producer, tenant, depth, consumers and start."""

from __future__ import annotations

import time
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
        tracing.published([(router.make("Tx", None, None, 0), 0, ["c"])], 0.0)
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
        tracing.published([(router.make("Tx", None, None, 0), 0, ["c"])], 0.0)
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
