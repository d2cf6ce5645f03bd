"""BatchBuffer with a batch-level cost (rules 3 and 4): whole-batch prices, ItemTooLarge."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freight import BatchBuffer, BatchSpec, Flush, ItemTooLarge


def padded(items: list[str]) -> int:
    """A padded tensor's cost: the longest item times the count."""
    return max(map(len, items)) * len(items)


def summed(items: list[dict[str, int]]) -> int:
    return sum(item["size"] for item in items)


def shape(flushes: list[Flush[Any]]) -> list[tuple[str, list[Any]]]:
    return [(f.reason, f.items) for f in flushes]


def test_an_item_joins_only_while_the_padded_cost_stays_within_max_cost() -> None:
    # Given max_cost=12 priced as max(len) * count
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(100, max_cost=12, cost=padded))
    assert buf.add("aa", 0) == []  # 2
    assert buf.add("bbb", 0) == []  # 3 * 2 = 6
    assert buf.add("c", 0) == []  # 3 * 3 = 9
    # When an item would make the padded batch cost 5 * 4 = 20 > 12
    out = buf.add("ddddd", 0)
    # Then the open batch leaves first (reason "cost") and the item opens the next
    assert shape(out) == [("cost", ["aa", "bbb", "c"])]
    assert [b.items for b in buf.open_batches()] == [["ddddd"]]


def test_a_batch_that_reaches_max_cost_exactly_flushes_at_once() -> None:
    buf: BatchBuffer[dict[str, int]] = BatchBuffer(BatchSpec(100, max_cost=10, cost=summed))
    assert buf.add({"size": 4}, 0) == []
    out = buf.add({"size": 6}, 1)
    assert shape(out) == [("cost", [{"size": 4}, {"size": 6}])]
    assert len(buf) == 0


def test_an_item_over_max_cost_alone_raises_item_too_large_naming_both_figures() -> None:
    buf: BatchBuffer[dict[str, int]] = BatchBuffer(BatchSpec(100, max_cost=10, cost=summed))
    buf.add({"size": 6}, 0)
    with pytest.raises(ItemTooLarge, match=r"costs 12 alone, over max_cost=10") as info:
        buf.add({"size": 12}, 0)
    assert isinstance(info.value, ValueError)
    # The open batch is untouched: nothing flushed, nothing buffered
    assert [b.items for b in buf.open_batches()] == [[{"size": 6}]]
    assert len(buf) == 1
    with pytest.raises(ItemTooLarge):
        buf.check({"size": 11})
    buf.check({"size": 10})  # fits alone: no error


def test_an_item_over_max_cost_into_an_empty_buffer_is_refused_too() -> None:
    buf: BatchBuffer[dict[str, int]] = BatchBuffer(BatchSpec(100, max_cost=10, cost=summed))
    with pytest.raises(ItemTooLarge):
        buf.add({"size": 11}, 0)
    assert len(buf) == 0
    assert buf.next_deadline() is None


def test_check_without_a_cost_accepts_everything() -> None:
    buf: BatchBuffer[object] = BatchBuffer(BatchSpec(3))
    buf.check(object())


def test_size_still_flushes_before_cost_is_reached() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(2, max_cost=100, cost=padded))
    buf.add("a", 0)
    assert shape(buf.add("b", 0)) == [("size", ["a", "b"])]


def test_bytes_and_cost_together_each_flush_by_their_own_rule() -> None:
    spec = BatchSpec(100, max_bytes=6, max_cost=100, cost=padded)
    buf: BatchBuffer[str] = BatchBuffer(spec)
    buf.add("aaa", 0)
    # 3 + 4 bytes > 6: the byte rule flushes first; the new batch is priced alone
    assert shape(buf.add("bbbb", 0)) == [("bytes", ["aaa"])]
    assert shape(buf.add("cc", 0)) == [("bytes", ["bbbb", "cc"])]  # exactly 6 bytes
    tight = BatchBuffer[str](BatchSpec(100, max_bytes=100, max_cost=6, cost=padded))
    tight.add("aaa", 0)
    assert shape(tight.add("bbbb", 0)) == [("cost", ["aaa"])]  # 4 * 2 = 8 > 6


def test_a_timeout_still_flushes_a_batch_under_its_cost() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(100, 5, max_cost=50, cost=padded))
    buf.add("a", 0)
    assert shape(buf.tick(5)) == [("timeout", ["a"])]


def test_discarding_an_item_reprices_its_batch() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(100, max_cost=12, cost=padded))
    buf.add("aaaaa", 0, ticket="t1")
    buf.add("b", 0, ticket="t2")  # 5 * 2 = 10
    assert buf.discard("aaaaa", "t1")
    # Priced again without the long item: "b" alone costs 1, so "cc" and "dd" join
    assert buf.add("cc", 0) == []  # 2 * 2 = 4
    assert buf.add("dd", 0) == []  # 2 * 3 = 6
    assert buf.discard("b", "t2")
    assert buf.discard("cc", object()) is False  # not its ticket
    assert len(buf) == 2


@pytest.mark.parametrize("bad", ["3", math.nan, -1, True])
def test_a_cost_function_returning_a_non_number_is_a_type_error(bad: object) -> None:
    def cost(items: list[int]) -> float:
        return bad  # type: ignore[return-value]

    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(10, max_cost=5, cost=cost))
    with pytest.raises(TypeError, match="cost must return a number >= 0"):
        buf.add(1, 0)
    assert len(buf) == 0


@given(
    st.lists(st.integers(min_value=1, max_value=12), max_size=60),
    st.integers(min_value=1, max_value=8),
)
def test_every_flush_stays_within_max_cost_and_items_leave_once_in_order(
    lengths: list[int], size: int
) -> None:
    spec = BatchSpec(size, max_cost=24, cost=padded)
    buf: BatchBuffer[str] = BatchBuffer(spec)
    out: list[Flush[str]] = []
    accepted: list[str] = []
    for i, n in enumerate(lengths):
        item = f"{i:02d}" + "x" * max(0, n - 2)
        try:
            out += buf.add(item, i)
        except ItemTooLarge:
            assert len(item) > 24  # refused only when it cannot fit even alone
            continue
        accepted.append(item)
    out += buf.close()
    assert [item for f in out for item in f.items] == accepted
    for flush in out:
        assert padded(flush.items) <= 24
        assert 1 <= len(flush.items) <= size
