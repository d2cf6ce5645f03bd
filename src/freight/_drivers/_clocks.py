"""Real clocks: the event loop's for asyncio, a timer thread for threads."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from freight._core._clock import TimerHandle

__all__ = ["LoopClock", "ThreadClock"]


class LoopClock:
    """The running event loop's monotonic clock; timers are ``loop.call_at``."""

    __slots__ = ("_loop", "now")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # The stock loops' time() is time.monotonic() behind a Python call; read the
        # C function directly on the per-item path. Other loops (uvloop) keep theirs.
        stock = getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time
        self.now: Callable[[], float] = time.monotonic if stock else loop.time

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self._loop.call_at(when, callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)


class _ThreadTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ThreadClock:
    """``time.monotonic`` with timers run by one daemon thread, started on first use.

    The callbacks must be short: they run one after another on the timer thread.
    """

    def __init__(self, name: str = "freight-timer") -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _ThreadTimer]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _ThreadTimer(callback)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the thread clock is stopped")
            heapq.heappush(self._heap, (when, next(self._seq), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return timer

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)

    def stop(self) -> None:
        """Stop the timer thread; pending timers are dropped."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    if self._heap:
                        delay = self._heap[0][0] - time.monotonic()
                        if delay <= 0:
                            timer = heapq.heappop(self._heap)[2]
                            break
                        self._cond.wait(delay)
                    else:
                        self._cond.wait()
            if not timer.cancelled:
                timer.callback()
