"""BatchBuffer: the pure state machine, driven by plain values."""

from __future__ import annotations

from typing import Any

import pytest

from freight import BatchBuffer, BatcherClosed, BatchSpec, Flush, Skipped


def reasons(flushes: list[Flush[Any]]) -> list[str]:
    return [f.reason for f in flushes]


def test_guide_timeline_size_then_timeout() -> None:
    # Given size=10, timeout=30: 5 items at t=0, 3 at t=10, 2 at t=20
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=30))
    out: list[Flush[int]] = []
    for i in range(5):
        out += buf.add(i, 0)
    out += buf.tick(10)
    for i in range(5, 8):
        out += buf.add(i, 10)
    assert out == []
    for i in range(8, 10):
        out += buf.add(i, 20)
    # Then one flush of 10 with reason size at t=20
    assert [(f.reason, len(f.items), f.opened_at) for f in out] == [("size", 10, 0)]
    assert buf.next_deadline() is None
    # When 3 items arrive at t=25, their batch has its own timer: due at t=55
    for i in range(3):
        assert buf.add(100 + i, 25) == []
    assert buf.next_deadline() == 55
    assert buf.tick(54.999) == []
    late = buf.tick(55)
    assert [(f.reason, f.items, f.opened_at) for f in late] == [("timeout", [100, 101, 102], 25)]


def test_timer_restarts_after_each_flush() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=2, timeout=5))
    buf.add(1, 0)
    assert reasons(buf.add(2, 1)) == ["size"]
    buf.add(3, 4)
    assert buf.next_deadline() == 9  # from the new first item, not the old batch


def test_keys_have_their_own_batches_and_timers() -> None:
    buf: BatchBuffer[tuple[str, int]] = BatchBuffer(
        BatchSpec(size=3, timeout=10), key=lambda item: item[0]
    )
    buf.add(("a", 1), 0)
    buf.add(("b", 1), 4)
    buf.add(("a", 2), 5)
    assert buf.next_deadline() == 10
    first = buf.tick(10)
    assert [(f.key, f.items) for f in first] == [("a", [("a", 1), ("a", 2)])]
    assert buf.next_deadline() == 14
    assert [(f.key, f.reason) for f in buf.tick(14)] == [("b", "timeout")]


def test_where_rejects_with_skipped_and_buffers_nothing() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=2), where=lambda x: x > 0)
    with pytest.raises(Skipped, match="where="):
        buf.add(-1, 0)
    assert len(buf) == 0
    assert buf.add(1, 0) == []


def test_max_bytes_flushes_before_overflowing() -> None:
    buf: BatchBuffer[bytes] = BatchBuffer(BatchSpec(size=100, max_bytes=10))
    assert buf.add(b"aaaa", 0) == []
    assert buf.add(b"bbbb", 0) == []
    out = buf.add(b"ccc", 0)  # 4+4+3 > 10: the open batch leaves first
    assert [(f.reason, f.items) for f in out] == [("bytes", [b"aaaa", b"bbbb"])]
    assert len(buf) == 1


def test_exactly_full_in_bytes_flushes_at_once() -> None:
    buf: BatchBuffer[str] = BatchBuffer(BatchSpec(size=100, max_bytes=4))
    assert buf.add("ab", 0) == []
    assert [(f.reason, f.items) for f in buf.add("cd", 0)] == [("bytes", ["ab", "cd"])]


def test_oversized_item_is_flushed_alone() -> None:
    buf: BatchBuffer[bytes] = BatchBuffer(BatchSpec(size=100, max_bytes=10))
    buf.add(b"x", 0)
    out = buf.add(b"y" * 50, 1)
    assert [(f.reason, f.items) for f in out] == [("bytes", [b"x"]), ("bytes", [b"y" * 50])]
    assert len(buf) == 0


def test_sizer_counts_custom_items() -> None:
    buf: BatchBuffer[dict[str, int]] = BatchBuffer(
        BatchSpec(size=10, max_bytes=5, sizer=lambda d: d["n"])
    )
    buf.add({"n": 3}, 0)
    assert reasons(buf.add({"n": 2}, 0)) == ["bytes"]


def test_items_without_a_default_size_need_a_sizer() -> None:
    buf: BatchBuffer[object] = BatchBuffer(BatchSpec(size=10, max_bytes=5))
    with pytest.raises(TypeError, match="sizer="):
        buf.add(object(), 0)
    assert len(buf) == 0
    assert buf.keys() == []  # no empty batch left behind


def test_flush_is_manual_and_close_refuses_more() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=1), key=lambda x: x % 2)
    buf.add(1, 0)
    buf.add(2, 0.5)
    assert [(f.key, f.reason) for f in buf.flush()] == [(1, "manual"), (0, "manual")]
    assert buf.next_deadline() is None
    buf.add(3, 1)
    assert reasons(buf.close()) == ["close"]
    assert buf.closed
    with pytest.raises(BatcherClosed):
        buf.add(4, 2)
    assert buf.close() == []


def test_put_after_close_is_emitted_by_the_next_close() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10))
    buf.close()
    assert not buf.put(7, 0, ticket="t")
    [flush] = buf.close()
    assert (flush.items, flush.tickets) == ([7], ["t"])


def test_discard_removes_a_buffered_item_by_ticket() -> None:
    buf: BatchBuffer[bytes] = BatchBuffer(BatchSpec(size=10, timeout=3, max_bytes=100))
    t1, t2 = object(), object()
    buf.add(b"a", 0, ticket=t1)
    buf.add(b"bb", 0, ticket=t2)
    assert buf.discard(b"a", t1)
    assert not buf.discard(b"a", t1)
    [flush] = buf.flush()
    assert flush.items == [b"bb"]
    assert flush.tickets == [t2]


def test_discarding_the_last_item_closes_the_batch() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=3))
    ticket = object()
    buf.add(1, 0, ticket=ticket)
    assert buf.discard(1, ticket)
    assert buf.next_deadline() is None
    assert buf.tick(100) == []
    assert not buf.discard(1, ticket)


def test_timeout_zero_is_due_at_once() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=0))
    buf.add(1, 5)
    buf.add(2, 5)
    assert [f.items for f in buf.tick(5)] == [[1, 2]]


def test_bad_constructor_arguments_name_the_parameter() -> None:
    from freight import ConfigError

    with pytest.raises(ConfigError, match="spec"):
        BatchBuffer("nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="key"):
        BatchBuffer(BatchSpec(size=1), key=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="where"):
        BatchBuffer(BatchSpec(size=1), where=3)  # type: ignore[arg-type]


def test_a_batch_flushed_by_size_is_not_flushed_again_by_its_old_timer() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=2, timeout=5))
    buf.add(1, 0)
    assert reasons(buf.add(2, 0)) == ["size"]
    assert buf.tick(5) == []  # the stale deadline of the flushed batch is dropped
