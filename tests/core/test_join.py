"""JoinBuffer: correlating items of several kinds by key, driven by plain values."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freight import BatchBuffer, BatcherClosed, BatchSpec, ConfigError, JoinSpec
from freight._core._join import JoinBuffer, JoinGroup


class Reading:
    def __init__(self, device: str) -> None:
        self.device = device


def test_spec_takes_a_name_or_a_callable_and_a_positive_window() -> None:
    spec = JoinSpec(by="device", within=timedelta(seconds=30))
    assert spec.within == 30.0
    assert (spec.seconds, spec.count) == (30.0, None)
    assert spec.key_of(Reading("d1")) == "d1"
    assert JoinSpec(by=lambda r: r.device.upper(), within=1).key_of(Reading("d1")) == "D1"
    assert spec == JoinSpec(by="device", within=30.0)
    assert hash(spec) == hash(JoinSpec(by="device", within=30.0))
    assert spec != "JoinSpec"
    assert "within=30.0" in repr(spec)
    with pytest.raises(ConfigError, match="attribute name or a callable"):
        JoinSpec(by="", within=1)
    with pytest.raises(ConfigError, match=r"JoinSpec\.within"):
        JoinSpec(by="device", within=0.0)
    with pytest.raises(ConfigError, match=r"freight\.JoinSpec"):
        JoinBuffer("device", 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 2"):
        JoinBuffer(spec, 1)


def test_an_int_window_is_a_count_of_items_a_float_or_timedelta_is_seconds() -> None:
    """Flock's meaning: ``within=10`` is the next 10 items, ``within=10.0`` ten seconds."""
    count = JoinSpec(by="device", within=10)
    assert (count.within, count.count, count.seconds) == (10, 10, None)
    assert count != JoinSpec(by="device", within=10.0)  # a count is not seconds
    assert repr(count) == "JoinSpec(by='device', within=10)"
    with pytest.raises(ConfigError, match=r"count window \(items\), which must be >= 1, got 0"):
        JoinSpec(by="device", within=0)
    with pytest.raises(ConfigError, match=r"seconds .* or a count of items"):
        JoinSpec(by="device", within=True)
    with pytest.raises(ConfigError, match="must be > 0 seconds"):
        JoinSpec(by="device", within=timedelta(0))


def test_one_of_each_kind_with_the_same_key_completes_a_group() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30.0), arity=2)
    assert buf.add("d1", 0, "t1", 0) is None
    assert buf.add("d2", 1, "p2", 5) is None
    assert len(buf) == 2
    assert buf.next_deadline() == math.nextafter(30, math.inf)  # a window closes after it
    assert buf.add("d1", 1, "p1", 10) == JoinGroup("d1", ("t1", "p1"), 0, True)
    assert [(g.key, g.members, g.deadline) for g in buf.open_groups()] == [("d2", (None, "p2"), 35)]
    assert buf.next_deadline() == math.nextafter(35, math.inf)
    assert len(buf) == 1


def test_a_second_item_of_a_kind_opens_the_next_group_of_its_key() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30.0), arity=2)
    buf.add("d", 0, "t1", 0)
    buf.add("d", 0, "t2", 1)  # the first group's slot 0 is taken
    assert buf.add("d", 1, "p1", 2) == JoinGroup("d", ("t1", "p1"), 0, True)
    assert buf.add("d", 1, "p2", 3) == JoinGroup("d", ("t2", "p2"), 1, True)
    assert len(buf) == 0
    assert buf.next_deadline() is None


def test_expired_groups_are_returned_incomplete_never_dropped() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30.0), arity=2)
    buf.add("a", 0, "ta", 0)
    buf.add("b", 1, "pb", 10)
    assert buf.tick(29.999) == []
    assert buf.tick(30) == []  # strictly after within (Flock): 30 s is still in time
    assert buf.tick(30.001) == [JoinGroup("a", ("ta", None), 0, False)]
    # an item arriving past a group's deadline does not complete it: it opens another
    assert buf.add("b", 0, "tb", 40.5) is None
    assert buf.tick(40.5) == [JoinGroup("b", (None, "pb"), 10, False)]
    assert [g.members for g in buf.close()] == [("tb", None)]
    with pytest.raises(BatcherClosed):
        buf.add("c", 0, "x", 41)
    with pytest.raises(ValueError, match="slot"):
        JoinBuffer(JoinSpec(by="k", within=1.0), 2).add("c", 2, "x", 0)
    with pytest.raises(ValueError, match="slot"):
        JoinBuffer(JoinSpec(by="k", within=1.0), 2).add("c", (), "x", 0)


def test_an_item_fills_the_first_free_of_its_slots_so_one_kind_can_fill_several() -> None:
    """``.consumes(A, A, B)``: an A may fill slot 0 or 1; the third A opens a new group."""
    buf = JoinBuffer(JoinSpec(by="k", within=30.0), arity=3)
    assert buf.add("d", (0, 1), "a1", 0) is None
    assert buf.add("d", (0, 1), "a2", 1) is None
    assert buf.add("d", (0, 1), "a3", 2) is None  # both A slots taken: the next group
    assert [g.members for g in buf.open_groups()] == [("a1", "a2", None), ("a3", None, None)]
    assert buf.add("d", 2, "b1", 3) == JoinGroup("d", ("a1", "a2", "b1"), 0, True)
    assert len(buf) == 1


def test_without_a_window_a_gate_waits_until_close() -> None:
    """An AND gate without a key: groups never expire, they leave complete or at close."""
    buf = JoinBuffer(None, arity=2)
    assert buf.add(None, 0, "a1", 0) is None
    assert buf.add(None, 0, "a2", 5) is None
    assert buf.next_deadline() is None
    assert buf.tick(10**9) == []
    assert buf.add(None, 1, "b1", 6) == JoinGroup(None, ("a1", "b1"), 0, True)
    assert [(g.members, g.deadline) for g in buf.open_groups()] == [(("a2", None), None)]
    assert buf.close() == [JoinGroup(None, ("a2", None), 5, False)]
    assert len(buf) == 0


def test_a_count_window_closes_after_that_many_further_arrivals() -> None:
    """Flock's count window: a group opened by arrival n takes items up to arrival
    n + within; the next arrival closes it, and tick returns it."""
    buf = JoinBuffer(JoinSpec(by="k", within=3), arity=2)
    buf.add("a", 0, "a1", 0)  # arrival 1: may complete up to arrival 4
    buf.add("x", 0, "x1", 0)  # 2
    buf.add("y", 0, "y1", 0)  # 3
    assert buf.add("a", 1, "b1", 0) == JoinGroup("a", ("a1", "b1"), 0, True)  # 4: in time
    buf.add("c", 0, "c1", 0)  # 5: x (opened at 2, limit 5) is still open
    assert buf.tick(0) == []
    buf.add("z", 0, "z1", 0)  # 6: closes x (limit 5)
    assert buf.next_deadline() is None
    assert buf.tick(0) == [JoinGroup("x", ("x1", None), 0, False)]
    buf.add("y", 1, "y-late", 0)  # 7: y (limit 6) closed first; the late item opens a group
    assert [g.members for g in buf.tick(0)] == [("y1", None)]
    assert [g.key for g in buf.open_groups()] == ["c", "z", "y"]
    buf.add("q", 0, "q1", 0)  # 8: c (opened at 5, limit 8) still open
    buf.add("q", 0, "q2", 0)  # 9: closes c; returned by close, never dropped
    assert [g.members for g in buf.close()] == [
        ("c1", None), ("z1", None), (None, "y-late"), ("q1", None), ("q2", None),
    ]  # fmt: skip


def test_count_windows_count_per_scope() -> None:
    """A flow counts per tenant: one tenant's traffic never closes another's groups."""
    buf = JoinBuffer(JoinSpec(by="k", within=2), arity=2, scope=lambda key: key[0])  # type: ignore[index]
    buf.add(("t1", "a"), 0, "a1", 0)
    for n in range(10):
        buf.add(("t2", f"noise{n}"), 0, n, 0)
    assert buf.add(("t1", "a"), 1, "b1", 0) == JoinGroup(("t1", "a"), ("a1", "b1"), 0, True)
    # t2's ten arrivals closed seven of its own groups (opened by arrivals 1-7)
    assert [g.members[0] for g in buf.tick(0)] == list(range(7))


events = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 2), st.floats(0, 5)), max_size=60
)


@given(events=events, window=st.sampled_from([None, 10.0, 3]))
@settings(max_examples=300, deadline=None)
def test_every_item_leaves_in_exactly_one_group(
    events: list[tuple[str, int, float]], window: float | int | None
) -> None:
    """Exactly once; complete groups hold one item of each kind of one key; no group
    completes or waits past its deadline."""
    spec = JoinSpec(by="k", within=window) if window is not None else None
    buf = JoinBuffer(spec, arity=3)
    now = 0.0
    out: list[JoinGroup] = []
    arrivals: dict[int, int] = {}  # item n -> its arrival number
    for n, (key, slot, step) in enumerate(events):
        now += step
        out += buf.tick(now)
        arrivals[n] = n + 1
        done = buf.add(key, slot, (key, slot, n), now)
        if done is not None:
            out.append(done)
            if isinstance(window, float):
                assert done.opened_at + window >= now
            if isinstance(window, int):  # completed within `window` further arrivals
                first = min(m[2] for m in done.members)
                assert arrivals[n] - arrivals[first] <= window
    for waiting in buf.open_groups():
        assert waiting.deadline is None or waiting.deadline >= now
    out += buf.tick(now)
    out += buf.close()
    seen = [m for g in out for m in g.members if m is not None]
    assert sorted(seen) == sorted((k, s, n) for n, (k, s, _) in enumerate(events))
    for group in out:
        for slot, member in enumerate(group.members):
            assert member is None or (member[0], member[1]) == (group.key, slot)
        assert group.complete == all(m is not None for m in group.members)


def test_open_batches_lists_what_waits() -> None:
    buf: BatchBuffer[Any] = BatchBuffer(BatchSpec(size=3, timeout=30), key=lambda x: x[0])
    buf.add(("b", 1), 5)
    buf.add(("a", 1), 0)
    buf.add(("a", 2), 1)
    assert [(b.key, b.items, b.opened_at, b.deadline) for b in buf.open_batches()] == [
        ("a", [("a", 1), ("a", 2)], 0, 30),
        ("b", [("b", 1)], 5, 35),
    ]


def test_a_time_only_batch_spec_has_no_size_and_says_who_takes_it() -> None:
    """``BatchSpec(timeout=...)`` without a size (Flock's time-only batch) is built;
    only a Flow consumer takes it: reading its size, as a Batcher would, says so."""
    spec = BatchSpec(timeout=timedelta(seconds=30))
    assert spec.time_only
    assert not BatchSpec(size=3).time_only
    assert repr(spec) == "BatchSpec(timeout=30.0)"
    assert spec == BatchSpec(timeout=30)
    with pytest.raises(ConfigError, match=r"has no size: a time-only batch, which only a Flow"):
        spec.size  # noqa: B018 (reading it is the point)
    with pytest.raises(ConfigError, match="requires at least one of: size, timeout"):
        BatchSpec()
    with pytest.raises(ConfigError, match="has no size"):
        BatchBuffer(spec)
