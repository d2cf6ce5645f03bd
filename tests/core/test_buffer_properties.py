"""Hypothesis properties of BatchBuffer: the invariants every driver relies on."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from freight import BatchBuffer, BatchSpec, Flush


@dataclass(frozen=True)
class Op:
    kind: str  # "add" | "tick" | "flush"
    key: int = 0
    nbytes: int = 0
    dt: float = 0.0


ops = st.lists(
    st.one_of(
        st.builds(
            Op,
            kind=st.just("add"),
            key=st.integers(0, 3),
            nbytes=st.integers(0, 40),
            dt=st.floats(0, 5),
        ),
        st.builds(Op, kind=st.just("tick"), dt=st.floats(0, 20)),
        st.builds(Op, kind=st.just("flush")),
    ),
    max_size=120,
)

specs = st.builds(
    BatchSpec,
    size=st.integers(1, 12),
    timeout=st.one_of(st.none(), st.floats(0, 15)),
    max_bytes=st.one_of(st.none(), st.integers(1, 60)),
)


@dataclass(frozen=True)
class Item:
    seq: int
    key: int
    nbytes: int


def run(spec: BatchSpec, program: list[Op]) -> tuple[list[Item], list[Flush[Item]], list[str]]:
    sizer = (lambda item: item.nbytes) if spec.max_bytes is not None else None
    spec = BatchSpec(spec.size, spec.timeout, max_bytes=spec.max_bytes, sizer=sizer)
    buf: BatchBuffer[Item] = BatchBuffer(spec, key=lambda item: item.key)
    now = 0.0
    added: list[Item] = []
    flushes: list[Flush[Item]] = []
    violations: list[str] = []
    for n, op in enumerate(program):
        now += op.dt
        if op.kind == "add":
            item = Item(n, op.key, op.nbytes)
            added.append(item)
            flushes += buf.add(item, now)
        elif op.kind == "tick":
            due = buf.next_deadline()
            flushes += buf.tick(now)
            # once tick(now) passed a batch's deadline, no batch may still be due
            after = buf.next_deadline()
            if after is not None and after <= now:
                violations.append(f"batch due at {after} still open after tick({now})")
            if due is not None and due <= now and after == due:
                violations.append("tick left a due batch")
        else:
            flushes += buf.flush()
    flushes += buf.close()
    return added, flushes, violations


@settings(max_examples=300, deadline=None)
@given(spec=specs, program=ops)
def test_every_added_item_is_emitted_exactly_once(spec: BatchSpec, program: list[Op]) -> None:
    added, flushes, _ = run(spec, program)
    emitted = [item for f in flushes for item in f.items]
    assert sorted(i.seq for i in emitted) == [i.seq for i in added]


@settings(max_examples=300, deadline=None)
@given(spec=specs, program=ops)
def test_order_is_kept_within_a_key(spec: BatchSpec, program: list[Op]) -> None:
    _, flushes, _ = run(spec, program)
    per_key: dict[int, list[int]] = defaultdict(list)
    for flush in flushes:
        for item in flush.items:
            assert item.key == flush.key
            per_key[item.key].append(item.seq)
    for seqs in per_key.values():
        assert seqs == sorted(seqs)


@settings(max_examples=300, deadline=None)
@given(spec=specs, program=ops)
def test_no_batch_exceeds_size_or_bytes_but_a_lone_oversized_item(
    spec: BatchSpec, program: list[Op]
) -> None:
    _, flushes, _ = run(spec, program)
    for flush in flushes:
        assert 1 <= len(flush.items) <= spec.size
        if spec.max_bytes is not None and len(flush.items) > 1:
            assert sum(i.nbytes for i in flush.items) <= spec.max_bytes


@settings(max_examples=300, deadline=None)
@given(spec=specs, program=ops)
def test_tick_emits_every_batch_whose_deadline_passed(spec: BatchSpec, program: list[Op]) -> None:
    _, _, violations = run(spec, program)
    assert violations == []


@settings(max_examples=200, deadline=None)
@given(spec=specs, program=ops)
def test_close_emits_everything_and_leaves_nothing(spec: BatchSpec, program: list[Op]) -> None:
    sizer = (lambda item: item.nbytes) if spec.max_bytes is not None else None
    spec = BatchSpec(spec.size, spec.timeout, max_bytes=spec.max_bytes, sizer=sizer)
    buf: BatchBuffer[Item] = BatchBuffer(spec, key=lambda item: item.key)
    count = 0
    for n, op in enumerate(program):
        if op.kind == "add":
            count += sum(len(f.items) for f in buf.add(Item(n, op.key, op.nbytes), n))
    closed = buf.close()
    count += sum(len(f.items) for f in closed)
    assert count == sum(op.kind == "add" for op in program)
    assert len(buf) == 0
    assert buf.next_deadline() is None
    assert all(f.reason == "close" for f in closed)
