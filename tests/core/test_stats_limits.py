"""Stats report the limits in force now: the spec's, a reconfigure's or the tuner's."""

from __future__ import annotations

from freight._core._stats import BatchEvent, StatsRecorder


def test_a_snapshot_carries_the_current_size_and_timeout() -> None:
    recorder = StatsRecorder(10, 0.5)
    stats = recorder.snapshot(pending=0)
    assert (stats.current_size, stats.size, stats.current_timeout) == (10, 10, 0.5)
    # The driver moved the limits (reconfigure, tuner): efficiency follows the new size
    recorder.size, recorder.current_timeout = 4, None
    recorder.record(
        BatchEvent(
            batcher="b",
            key=None,
            size=2,
            reason="timeout",
            wait=0.1,
            duration=0.1,
            succeeded=2,
            failed=0,
            current_size=4,
        )
    )
    stats = recorder.snapshot(pending=0)
    assert (stats.current_size, stats.current_timeout, stats.efficiency) == (4, None, 0.5)
