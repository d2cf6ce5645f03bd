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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from freight._core._clock import Clock, TimerHandle
from freight._errors import ConfigError

if TYPE_CHECKING:  # the port is a layer above; imported when a broker is used
    from freight.connectors._broker import Message

__all__ = ["Clock", "FakeClock", "MemoryBroker", "MemorySink"]

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


# -- the broker source port's twin ---------------------------------------------------


class MemoryBroker:
    """In-memory twin of a broker source (:class:`~freight.connectors.BrokerSource`).

    One queue with ack, retry and dead-letter bookkeeping, as a broker keeps it:
    :meth:`publish` appends; :meth:`fetch` delivers ready messages in order (a message
    handed back with :meth:`retry` is ready again after its delay, on ``clock``); a
    delivered message stays *in flight* until it is settled, and :meth:`crash` (the
    consumer died) makes every in-flight one ready again, delivered once more with its
    ``attempts`` counted up, as Redis, RabbitMQ, NATS and Kafka do.

    Attributes:
        acked: ids acknowledged, in order.
        dead: ``(message, reason)`` of each dead letter, in order.
        deliveries: per id, how many times it was delivered.
        handled_back: how many messages were handed back with :meth:`retry`.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock
        self._seq = itertools.count(1)
        self._bodies: dict[str, tuple[Any, str | None, dict[str, str]]] = {}
        self._ready: list[tuple[float, int, str]] = []  # (due at, order, id), a heap
        self._in_flight: dict[str, Message] = {}
        self._arrived: asyncio.Future[None] | None = None
        self.acked: list[str] = []
        self.dead: list[tuple[Message, str]] = []
        self.deliveries: dict[str, int] = {}
        self.handed_back = 0
        self.closed = False

    def _now(self) -> float:
        if self._clock is None:
            self._clock = _loop_clock()
        return self._clock.now()

    def publish(
        self, body: Any, *, key: str | None = None, headers: dict[str, str] | None = None
    ) -> str:
        """Append a message; return its id (``"1"``, ``"2"``, … in publish order)."""
        order = next(self._seq)
        message_id = str(order)
        self._bodies[message_id] = (body, key, dict(headers or {}))
        heapq.heappush(self._ready, (float("-inf"), order, message_id))
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)
        return message_id

    @property
    def in_flight(self) -> list[str]:
        """Ids delivered and not settled yet."""
        return list(self._in_flight)

    @property
    def waiting(self) -> int:
        """Messages not delivered yet (or handed back and not delivered again)."""
        return len(self._ready)

    def _take(self, max_items: int, now: float) -> list[Message]:
        from freight.connectors._broker import Message  # noqa: PLC0415 (a layer above)

        taken: list[Message] = []
        while self._ready and len(taken) < max_items and self._ready[0][0] <= now:
            _, _, message_id = heapq.heappop(self._ready)
            body, key, headers = self._bodies[message_id]
            count = self.deliveries[message_id] = self.deliveries.get(message_id, 0) + 1
            message = Message(body, message_id, count, key, dict(headers))
            self._in_flight[message_id] = message
            taken.append(message)
        return taken

    async def fetch(self, max_items: int, timeout: float) -> list[Message]:  # noqa: ASYNC109
        """Up to ``max_items`` ready messages; waits (on the clock) at most ``timeout``
        seconds for one to be published or to fall due."""
        self._check_open()
        now = self._now()
        taken = self._take(max_items, now)
        if taken or timeout <= 0:
            await asyncio.sleep(0)  # a fetch is a turn of the loop, as on a real broker
            return taken
        deadline = now + timeout
        if self._ready:
            deadline = min(deadline, self._ready[0][0])
        arrived = self._arrived = asyncio.get_running_loop().create_future()
        assert self._clock is not None
        timer = self._clock.call_at(
            deadline, lambda: None if arrived.done() else arrived.set_result(None)
        )
        try:
            await arrived
        finally:
            timer.cancel()
        return self._take(max_items, self._now())

    def _settle(self, messages: Sequence[Message]) -> list[Message]:
        settled = []
        for message in messages:
            if self._in_flight.pop(message.id, None) is not None:
                settled.append(message)
        return settled

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge ``messages``; an id not in flight (settled already) is ignored."""
        self._check_open()
        self.acked.extend(m.id for m in self._settle(messages))

    async def retry(self, messages: Sequence[Message], delay: float) -> None:
        """Hand ``messages`` back: ready again ``delay`` seconds from now."""
        self._check_open()
        due = self._now() + max(0.0, delay)
        for message in self._settle(messages):
            heapq.heappush(self._ready, (due, next(self._seq), message.id))
            self.handed_back += 1

    async def dead_letter(self, failed: Sequence[tuple[Message, BaseException]]) -> None:
        """Move each message to :attr:`dead` with its error's reason."""
        from freight.connectors._broker import reason  # noqa: PLC0415 (a layer above)

        self._check_open()
        errors = {m.id: e for m, e in failed}
        for message in self._settle([m for m, _ in failed]):
            self.dead.append((message, reason(errors[message.id])))

    def crash(self) -> int:
        """The consumer died: every in-flight message is ready again; return how many."""
        lost = list(self._in_flight)
        self._in_flight.clear()
        for message_id in lost:
            heapq.heappush(self._ready, (float("-inf"), int(message_id), message_id))
        return len(lost)

    async def close(self) -> None:
        """Close this consumer's side: in-flight messages go back, as on a broker."""
        self.crash()
        self.closed = True

    def reopen(self) -> None:
        """Open the consumer side again after :meth:`close` (a restarted consumer)."""
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError("the MemoryBroker consumer is closed; call reopen() first")


def _loop_clock() -> Clock:
    from freight._drivers._clocks import LoopClock  # noqa: PLC0415 (drivers above core)

    return LoopClock(asyncio.get_running_loop())
