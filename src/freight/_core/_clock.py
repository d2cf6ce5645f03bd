"""The clock port: how drivers read time and schedule wake-ups.

Drivers never call ``time.*`` or ``asyncio.sleep`` directly; they go through a
:class:`Clock`, so tests swap in :class:`freight.testing.FakeClock` and move time
by hand. Times are monotonic float seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "TimerHandle"]


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None:
        """Stop the callback from running; harmless if it already ran."""


@runtime_checkable
class Clock(Protocol):
    """Monotonic time, timers and sleeping, for both drivers.

    ``call_at`` callbacks run on the clock's own schedule: on the event loop for
    the asyncio clock, on a timer thread for the thread clock, and inside
    ``advance`` for the fake clock.
    """

    def now(self) -> float:
        """Current monotonic time in seconds."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once ``now() >= when``."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds``."""

    def sleep_sync(self, seconds: float) -> None:
        """Block the current thread for ``seconds``."""
