"""BatchBuffer.reconfigure and retune (rule 7): new limits from now on, open batches rejudged."""

from __future__ import annotations

from typing import Any

import pytest

from freight import BatchBuffer, BatchSpec, ConfigError, Flush


def shape(flushes: list[Flush[Any]]) -> list[tuple[Any, str, list[Any]]]:
    return [(f.key, f.reason, f.items) for f in flushes]


def test_a_larger_size_lets_the_open_batch_grow() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=2, timeout=1000))
    buf.add(1, 0)
    assert buf.reconfigure(BatchSpec(size=3, timeout=1000), 1) == []
    assert buf.add(2, 2) == []
    assert shape(buf.add(3, 3)) == [(None, "size", [1, 2, 3])]
    assert buf.size == 3
    assert buf.spec == BatchSpec(3, 1000)


def test_a_smaller_size_flushes_the_open_batch_whole_if_now_due() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=3, timeout=1000))
    buf.add(1, 0)
    buf.add(2, 0)
    # The open batch holds 2, the new size is 1: it is due, and leaves as it is
    assert shape(buf.reconfigure(BatchSpec(size=1, timeout=0), 5)) == [(None, "size", [1, 2])]
    assert buf.next_deadline() is None
    # From now on, every item is a batch of its own
    assert shape(buf.add(3, 6)) == [(None, "size", [3])]


def test_a_shorter_timeout_counts_from_the_first_item_and_may_be_past_already() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(size=10, timeout=100), key=lambda s: s[0])
    buf.add("a1", 0)
    buf.add("b1", 8)
    # New timeout 5 at t=10: a's batch (opened at 0) is overdue, b's is due at 13
    assert shape(buf.reconfigure(BatchSpec(size=10, timeout=5), 10)) == [("a", "timeout", ["a1"])]
    assert buf.next_deadline() == 13
    assert buf.tick(12.9) == []
    assert shape(buf.tick(13)) == [("b", "timeout", ["b1"])]


def test_removing_the_timeout_leaves_open_batches_without_a_deadline() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=5))
    buf.add(1, 0)
    assert buf.reconfigure(BatchSpec(size=10), 1) == []
    assert buf.next_deadline() is None
    assert buf.timeout is None
    assert buf.tick(1000) == []
    assert shape(buf.flush()) == [(None, "manual", [1])]


def test_adding_max_bytes_measures_the_open_batch() -> None:
    buf: BatchBuffer[bytes] = BatchBuffer(BatchSpec(size=10))
    buf.add(b"aaaa", 0)
    assert buf.reconfigure(BatchSpec(size=10, max_bytes=8), 0) == []
    # 4 buffered + 4 = 8: exactly full, flushed by bytes
    assert shape(buf.add(b"bbbb", 0)) == [(None, "bytes", [b"aaaa", b"bbbb"])]
    buf.add(b"cccc", 0)
    assert shape(buf.reconfigure(BatchSpec(size=10, max_bytes=3), 0)) == [
        (None, "bytes", [b"cccc"])
    ]


def test_adding_a_cost_prices_the_open_batch() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10))
    buf.add(3, 0)
    buf.add(4, 0)
    assert shape(buf.reconfigure(BatchSpec(size=10, max_cost=7, cost=sum), 0)) == [
        (None, "cost", [3, 4])
    ]
    buf.add(3, 0)
    assert buf.reconfigure(BatchSpec(size=10, max_cost=8, cost=sum), 0) == []
    assert shape(buf.add(5, 0)) == [(None, "cost", [3, 5])]  # 8: joins, exactly full
    buf.add(3, 0)
    assert shape(buf.add(6, 0)) == [(None, "cost", [3])]  # 9 > 8: 3 leaves first
    assert [b.items for b in buf.open_batches()] == [[6]]


def test_retune_moves_size_and_timeout_alone() -> None:
    buf: BatchBuffer[bytes] = BatchBuffer(BatchSpec(size=10, timeout=50, max_bytes=100))
    buf.add(b"x", 0)
    buf.add(b"y", 1)
    assert buf.retune(5, 20, 2) == []
    assert (buf.size, buf.timeout, buf.next_deadline()) == (5, 20, 20)
    assert shape(buf.retune(2, 20, 3)) == [(None, "size", [b"x", b"y"])]
    assert buf.spec == BatchSpec(size=10, timeout=50, max_bytes=100)  # the spec is unchanged


def test_reconfigure_refuses_a_time_only_spec_and_changes_nothing() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=4, timeout=3))
    buf.add(1, 0)
    with pytest.raises(ConfigError, match="has no size"):
        buf.reconfigure(BatchSpec(timeout=1), 0)
    with pytest.raises(ConfigError, match=r"spec must be a freight\.BatchSpec"):
        buf.reconfigure("size=4", 0)  # type: ignore[arg-type]
    assert (buf.size, buf.timeout, buf.spec) == (4, 3, BatchSpec(4, 3))
    assert buf.next_deadline() == 3


def test_items_leave_once_in_order_across_reconfigurations() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=5, timeout=4))
    out: list[Flush[int]] = []
    sizes = [5, 1, 3, 7, 2]
    for step, item in enumerate(range(40)):
        out += buf.add(item, step)
        if step % 8 == 7:
            out += buf.reconfigure(BatchSpec(size=sizes[step // 8], timeout=step % 3), step)
        out += buf.tick(step)
    out += buf.close()
    assert [i for f in out for i in f.items] == list(range(40))


def test_a_spec_whose_sizer_refuses_an_open_item_changes_nothing() -> None:
    # max_bytes set later on items that have no default size: refused, and the buffer
    # keeps its limits, its open batch and that batch's deadline (no half-applied spec).
    buf: BatchBuffer[dict[str, int]] = BatchBuffer(BatchSpec(size=10, timeout=5))
    buf.add({"a": 1}, 0)
    buf.add({"a": 2}, 1)
    with pytest.raises(TypeError, match="items of type dict have no default size"):
        buf.reconfigure(BatchSpec(size=2, timeout=1, max_bytes=100), 2)
    assert (buf.size, buf.timeout, buf.spec) == (10, 5, BatchSpec(10, 5))
    assert buf.next_deadline() == 5
    assert buf.tick(4) == []
    assert buf.add({"a": 3}, 4) == []  # still weighed by the old spec: no sizer needed
    assert shape(buf.tick(5)) == [(None, "timeout", [{"a": 1}, {"a": 2}, {"a": 3}])]


def test_a_spec_whose_cost_refuses_an_open_batch_changes_nothing() -> None:
    def cost(items: list[object]) -> float:
        if any(not isinstance(i, int) for i in items):
            raise ValueError("cannot price")
        return len(items)

    buf: BatchBuffer[object] = BatchBuffer(BatchSpec(size=10, timeout=5), key=type)
    buf.add(1, 0)
    buf.add("s", 2)
    with pytest.raises(ValueError, match="cannot price"):
        buf.reconfigure(BatchSpec(size=10, timeout=0, max_cost=1, cost=cost), 3)
    assert buf.spec == BatchSpec(10, 5)
    assert buf.next_deadline() == 5
    assert [b.deadline for b in buf.open_batches()] == [5, 7]
    assert shape(buf.tick(7)) == [(int, "timeout", [1]), (str, "timeout", ["s"])]
