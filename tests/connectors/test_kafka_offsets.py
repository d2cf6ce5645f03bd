"""The offset bookkeeping of KafkaSource, as properties: whatever the order of fetches,
acks and hand-backs, the committed offset never passes a record not settled, never goes
back, and a record settled before a rewind is not handled again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from freight.connectors._kafkasource import _Partition

N = 30

# One step: fetch up to k records from the position, then settle each record in hand
# as ack (0), hand back (1) or leave in flight (2).
steps = st.lists(
    st.tuples(st.integers(1, 8), st.lists(st.integers(0, 2), min_size=8, max_size=8)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_commit_point_never_passes_an_unsettled_record(
    plan: list[tuple[int, list[int]]],
) -> None:
    part = _Partition()
    position = 0  # the consumer's fetch position in the partition
    settled: list[int] = []  # every settle, in order
    commits: list[int] = []
    for size, choices in plan:
        taken: list[int] = []
        while position < N and len(taken) < size:
            if part.take(position) is not None:
                assert position not in settled  # a settled record is never handled again
                taken.append(position)
            position += 1
        rewind = None
        for offset, choice in zip(taken, choices, strict=False):
            if choice == 0:
                part.settle(offset)
                settled.append(offset)
            elif choice == 1:
                part.hand_back(offset, 1)
                rewind = offset if rewind is None else min(rewind, offset)
        if rewind is not None:
            position = rewind
        point = part.point()
        if point is None:
            continue
        unsettled = set(part.inflight) | set(part.again)
        assert all(point <= o for o in unsettled), (point, unsettled)
        assert set(range(point)) <= set(settled)  # everything before it is done
        commits.append(point)
    assert commits == sorted(commits)  # never goes back


def test_a_record_settled_before_a_rewind_is_skipped_when_read_again() -> None:
    part = _Partition()
    for offset in range(4):
        assert part.take(offset) == 1
    part.hand_back(1, 1)
    for offset in (0, 2, 3):
        part.settle(offset)
    assert part.point() == 1
    assert part.take(1) == 2  # the one handed back, its second delivery
    assert part.take(2) is None  # settled: skipped
    assert part.take(3) is None
    part.settle(1)
    assert part.point() == 4


def test_a_record_settled_past_the_rewind_is_skipped_even_once_all_is_committed() -> None:
    """Found by the property above: 0-4 fetched, 2 and 3 handed back, 4 acked; after 2
    and 3 succeed the commit point is 5, but the consumer still reads 4 again."""
    part = _Partition()
    for offset in range(5):
        part.take(offset)
    for offset in (0, 1, 4):
        part.settle(offset)
    part.hand_back(2, 1)
    part.hand_back(3, 1)
    assert part.point() == 2
    for offset in (2, 3):
        assert part.take(offset) == 2
        part.settle(offset)
    assert part.point() == 5
    assert part.take(4) is None
