"""Rule 5 of the buffer: a driver holding ``max_pending`` items flushes with ``"pending"``."""

from __future__ import annotations

from freight import BatchBuffer, BatchSpec


def test_flush_pending_empties_every_key_oldest_first_with_its_reason() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10, timeout=5), key=lambda i: i % 2)
    buf.add(1, now=0.0)
    buf.add(2, now=1.0)
    buf.add(3, now=2.0)
    flushes = buf.flush("pending")
    assert [(f.key, f.items, f.reason) for f in flushes] == [
        (1, [1, 3], "pending"),
        (0, [2], "pending"),
    ]
    assert len(buf) == 0
    assert buf.next_deadline() is None
    assert buf.tick(100.0) == []  # the old timers are gone with their batches


def test_flush_without_a_reason_is_manual() -> None:
    buf: BatchBuffer[int] = BatchBuffer(BatchSpec(size=10))
    buf.add(1, now=0.0)
    assert [f.reason for f in buf.flush()] == ["manual"]
