"""JoinBuffer: correlating items of several kinds by key, driven by plain values."""

from __future__ import annotations

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
    assert spec.key_of(Reading("d1")) == "d1"
    assert JoinSpec(by=lambda r: r.device.upper(), within=1).key_of(Reading("d1")) == "D1"
    assert spec == JoinSpec(by="device", within=30)
    assert hash(spec) == hash(JoinSpec(by="device", within=30))
    assert spec != "JoinSpec"
    assert "within=30.0" in repr(spec)
    with pytest.raises(ConfigError, match="attribute name or a callable"):
        JoinSpec(by="", within=1)
    with pytest.raises(ConfigError, match=r"JoinSpec\.within"):
        JoinSpec(by="device", within=0)
    with pytest.raises(ConfigError, match=r"freight\.JoinSpec"):
        JoinBuffer("device", 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least 2"):
        JoinBuffer(spec, 1)


def test_one_of_each_kind_with_the_same_key_completes_a_group() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30), arity=2)
    assert buf.add("d1", 0, "t1", 0) is None
    assert buf.add("d2", 1, "p2", 5) is None
    assert len(buf) == 2
    assert buf.next_deadline() == 30
    assert buf.add("d1", 1, "p1", 10) == JoinGroup("d1", ("t1", "p1"), 0, True)
    assert [(g.key, g.members, g.deadline) for g in buf.open_groups()] == [("d2", (None, "p2"), 35)]
    assert buf.next_deadline() == 35
    assert len(buf) == 1


def test_a_second_item_of_a_kind_opens_the_next_group_of_its_key() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30), arity=2)
    buf.add("d", 0, "t1", 0)
    buf.add("d", 0, "t2", 1)  # the first group's slot 0 is taken
    assert buf.add("d", 1, "p1", 2) == JoinGroup("d", ("t1", "p1"), 0, True)
    assert buf.add("d", 1, "p2", 3) == JoinGroup("d", ("t2", "p2"), 1, True)
    assert len(buf) == 0
    assert buf.next_deadline() is None


def test_expired_groups_are_returned_incomplete_never_dropped() -> None:
    buf = JoinBuffer(JoinSpec(by="k", within=30), arity=2)
    buf.add("a", 0, "ta", 0)
    buf.add("b", 1, "pb", 10)
    assert buf.tick(29.999) == []
    assert buf.tick(30) == [JoinGroup("a", ("ta", None), 0, False)]
    # an item arriving at a group's deadline does not complete it: it opens another
    assert buf.add("b", 0, "tb", 40) is None
    assert buf.tick(40) == [JoinGroup("b", (None, "pb"), 10, False)]
    assert [g.members for g in buf.close()] == [("tb", None)]
    with pytest.raises(BatcherClosed):
        buf.add("c", 0, "x", 41)
    with pytest.raises(ValueError, match="slot"):
        JoinBuffer(JoinSpec(by="k", within=1), 2).add("c", 2, "x", 0)


events = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 2), st.floats(0, 5)), max_size=60
)


@given(events=events)
@settings(max_examples=300, deadline=None)
def test_every_item_leaves_in_exactly_one_group(events: list[tuple[str, int, float]]) -> None:
    """Exactly once; complete groups hold one item of each kind of one key; no group
    completes or waits past its deadline."""
    within = 10.0
    buf = JoinBuffer(JoinSpec(by="k", within=within), arity=3)
    now = 0.0
    out: list[JoinGroup] = []
    for n, (key, slot, step) in enumerate(events):
        now += step
        out += buf.tick(now)
        done = buf.add(key, slot, (key, slot, n), now)
        if done is not None:
            out.append(done)
            assert done.opened_at + within > now
    for waiting in buf.open_groups():
        assert waiting.deadline > now
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
