"""Test helpers: virtual time.

:class:`FakeClock` replaces the real clock of a :class:`~freight.Batcher`,
:class:`~freight.ThreadBatcher` or :class:`~freight.RateLimiter`, so a test moves
time by hand instead of sleeping::

    clock = FakeClock()
    async with Batcher(handler, BatchSpec(size=10, timeout=30), clock=clock) as b:
        fut = b.submit_nowait(1)
        await clock.advance(30)      # the batch's timeout falls due: it is flushed
        assert await fut == ...
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Callable
from typing import Any

from freight._core._clock import Clock, TimerHandle
from freight._errors import ConfigError

__all__ = ["Clock", "FakeClock", "MemorySink"]

_SETTLE_ROUNDS = 1000


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to; timers run inside :meth:`advance`.

    Thread-safe: a :class:`~freight.ThreadBatcher` may register timers from any
    thread; they run in the thread that calls :meth:`advance` or
    :meth:`advance_sync`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._timer_added = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` when the clock is advanced to ``when`` or later."""
        timer = _FakeTimer(when, callback)
        with self._lock:
            heapq.heappush(self._timers, (when, next(self._seq), timer))
            self._timer_added.notify_all()
        return timer

    def pending_timers(self) -> list[float]:
        """Deadlines of the timers not yet run, earliest first."""
        with self._lock:
            return sorted(w for w, _, t in self._timers if not t.cancelled)

    def wait_for_timers(self, count: int = 1, timeout: float = 5.0) -> list[float]:
        """Block until ``count`` timers are pending (for threads that sleep on this clock).

        Returns their deadlines. Raises ``TimeoutError`` after ``timeout`` real seconds,
        so a test that waits for a timer that never comes fails instead of hanging.
        """

        def ready() -> bool:
            return sum(not t.cancelled for _, _, t in self._timers) >= count

        with self._timer_added:
            if not self._timer_added.wait_for(ready, timeout):
                raise TimeoutError(f"expected {count} pending timer(s) within {timeout} s")
            return sorted(w for w, _, t in self._timers if not t.cancelled)

    async def sleep(self, seconds: float) -> None:
        """Sleep in virtual time: resumes once the clock is advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.call_at(self._now + seconds, wake)
        await future

    def sleep_sync(self, seconds: float) -> None:
        """Block this thread until another thread advances the clock by ``seconds``."""
        if seconds <= 0:
            return
        event = threading.Event()
        self.call_at(self._now + seconds, event.set)
        event.wait()

    def _pop_due(self, target: float) -> _FakeTimer | None:
        with self._lock:
            while self._timers and self._timers[0][0] <= target:
                timer = heapq.heappop(self._timers)[2]
                if not timer.cancelled:
                    return timer
        return None

    def _target(self, seconds: float) -> float:
        if seconds < 0:
            raise ConfigError(
                f"a clock only moves forward; got advance({seconds}): pass seconds >= 0"
            )
        # Whole nanoseconds, so that advance(29.999) then advance(0.001) lands on
        # the deadline exactly instead of a float rounding error before it.
        return round(self._now + seconds, 9)

    def advance_sync(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running due timers in order in this thread."""
        target = self._target(seconds)
        while (timer := self._pop_due(target)) is not None:
            self._now = max(self._now, timer.when)
            timer.callback()
        self._now = max(self._now, target)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer that falls due.

        Timers run in deadline order with the clock set to their deadline; after
        each, the event loop runs until the tasks it woke block again, so chains of
        work (a flush starting a handler that sleeps for a backoff) play out
        within the same call.
        """
        target = self._target(seconds)
        await _settle()
        while (timer := self._pop_due(target)) is not None:
            self._now = max(self._now, timer.when)
            timer.callback()
            await _settle()
        self._now = max(self._now, target)
        await _settle()


class MemorySink:
    """In-memory twin of the table sinks (SQLite, PostgreSQL), for tests.

    Rows are mappings. With ``key`` a row replaces the one with the same key (upsert);
    ``required`` columns must not be ``None`` (like ``NOT NULL``): such a row fails
    alone, with a ``ValueError``, and the others are kept, as the real sinks do.
    """

    def __init__(self, *, key: str | None = None, required: tuple[str, ...] = ()) -> None:
        self.key = key
        self.required = required
        self.rows: list[dict[str, Any]] = []
        self._index: dict[Any, int] = {}
        self.writes = 0

    def write(self, items: list[Any], context: object = None) -> list[Any] | None:
        """Store ``items``; ``None`` if all were stored, else one outcome per item."""
        self.writes += 1
        outcomes: list[Any] = []
        for item in items:
            missing = [c for c in self.required if item.get(c) is None]
            if missing:
                outcomes.append(ValueError(f"null value in required column(s) {missing}"))
                continue
            row = dict(item)
            if self.key is not None and row[self.key] in self._index:
                self.rows[self._index[row[self.key]]] = row
            else:
                if self.key is not None:
                    self._index[row[self.key]] = len(self.rows)
                self.rows.append(row)
            outcomes.append(None)
        return outcomes if any(o is not None for o in outcomes) else None


async def _settle() -> None:
    """Let the event loop run until no callback is ready (bounded)."""
    loop = asyncio.get_running_loop()
    for _ in range(_SETTLE_ROUNDS):
        await asyncio.sleep(0)
        ready = getattr(loop, "_ready", None)
        if ready is not None and not ready:
            return


_: type[Clock] = FakeClock  # FakeClock implements the Clock port
