"""Adaptive batch sizing: the size and wait that keep callers within a latency target.

A batcher built with ``BatchSpec(size="auto", latency_target=L)`` feeds a
:class:`SizeTuner` one observation per handled batch and applies the size and wait
it answers (through :meth:`~freight.BatchBuffer.retune`). Rules:

1. **Handler model.** A batch of ``n`` items costs ``fixed + per_item * n`` seconds,
   fitted by least squares over recent batches, the older ones weighing less (a
   drifting handler is followed). While the batches seen are too alike in size to
   separate the two terms, the model is the pessimistic bound they allow: a batch
   no larger than the mean costs the mean time, a larger one proportionally more
   (true whatever the split of fixed and per-item); that bound is loose far from the
   sizes seen, so the size grows at most to twice their mean until the fit holds.
   Predictions are scaled by the worst ratio of a recent batch's time to its
   prediction (noise margin, ≤ 2).
2. **Arrival rate.** Items accepted per second, over the batches observed in the
   last ``latency_target`` seconds (at least two observations); the first
   observation alone gives ``size / wait`` of its batch.
3. **Latency.** With ``budget = safety * L``, the size is the largest
   ``s <= max_size`` with ``s / rate + 2 * T(s) <= budget``: a batch fills in
   ``s / rate``, may wait for the batch ahead (at most ``T(s)``), then runs ``T(s)``.
   The wait is ``budget - 2 * T(s)`` (at least 0, at most the spec's ``timeout``),
   so a batch that fills slower than predicted still leaves in time.
4. **Stability first.** A size whose handler time outgrows its fill time builds a
   queue without bound, and every latency with it: the size is at least the
   smallest ``s`` with ``rate * T(s) <= 0.9 * concurrency * s``, even over the
   latency budget (then the feedback of rule 5 can only do so much), and the wait
   is at least twice that batch's fill time, so it leaves full, unless that is
   over the target: a wrong model (a slow first call, say) must not hold callers
   for long, and a true overload is beyond any wait.
5. **Feedback (AIMD).** A batch whose oldest item waited past ``L`` multiplies the
   safety factor by 0.7 (down to 0.2); every batch within ``L`` adds 0.02 back (up
   to 0.8). The model can be wrong; measured latency corrects it.

The tuner never reads a clock: every observation carries its ``now``, so FakeClock
tests and the benchmark replay exactly.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Observation", "SizeTuner"]

SAFETY_MAX = 0.8
"""The share of the latency target the plan spends at most (the rest absorbs noise)."""
SAFETY_MIN = 0.2
DECREASE = 0.7
INCREASE = 0.02
UTILISATION = 0.9
"""The busiest a handler is planned to be: nearer 1, queues grow long on any burst."""
FORGET = 0.9
"""Weight kept by older batches at each new one in the handler model's fit."""
FIRST_WAIT = 0.1
"""The first batch's wait, as a share of the target: a quick first measurement."""
_SPREAD = 0.05  # the relative spread of batch sizes that separates fixed from per-item
_WINDOW = 16  # recent batches kept for the noise margin and the arrival rate
_MAX_MARGIN = 2.0


@dataclass(frozen=True, slots=True)
class Observation:
    """One handled batch, as the tuner sees it.

    Attributes:
        size: items the handler got.
        latency: seconds from the oldest item's arrival to the batch's settlement.
        duration: the handler's seconds for this batch, or ``None`` when it says
            nothing about the handler's cost (retries, backoffs, several calls).
        accepted: items the batcher accepted so far (all batches).
        now: when the batch settled.
    """

    size: int
    latency: float
    duration: float | None
    accepted: int
    now: float


class SizeTuner:
    """Picks batch size and wait from measured handler times; see the module rules.

    Args:
        latency_target: seconds; each caller's p99 latency is kept within it.
        max_size: the largest size it may choose.
        max_wait: the longest wait it may choose (the spec's ``timeout``), or ``None``.
        concurrency: batches the handler may run at once (``max_concurrent_batches``).
    """

    __slots__ = (
        "_d1",
        "_d2",
        "_rates",
        "_recent",
        "_s0",
        "_s1",
        "_s2",
        "concurrency",
        "latency_target",
        "max_size",
        "max_wait",
        "safety",
        "size",
        "wait",
    )

    def __init__(
        self,
        latency_target: float,
        *,
        max_size: int,
        max_wait: float | None = None,
        concurrency: int = 1,
    ) -> None:
        self.latency_target = latency_target
        self.max_size = max_size
        self.max_wait = max_wait
        self.concurrency = concurrency
        self.safety = SAFETY_MAX
        # Weighted sums of the fit: 1, n, n², d, n·d.
        self._s0 = self._s1 = self._s2 = self._d1 = self._d2 = 0.0
        self._recent: deque[tuple[int, float]] = deque(maxlen=_WINDOW)  # (n, d)
        self._rates: deque[tuple[float, int]] = deque(maxlen=_WINDOW)  # (now, accepted)
        self.size = max_size
        self.wait = self._capped(FIRST_WAIT * latency_target)

    def __repr__(self) -> str:
        return (
            f"<SizeTuner size={self.size} wait={self.wait:.6f} "
            f"safety={self.safety:.2f} target={self.latency_target}>"
        )

    # -- what it has learnt ------------------------------------------------------

    def model(self) -> tuple[float, float] | None:
        """``(fixed, per_item)`` seconds fitted so far; ``None`` until sizes differ enough."""
        s0, s1, s2 = self._s0, self._s1, self._s2
        if s0 == 0:
            return None
        mean = s1 / s0
        spread = s2 / s0 - mean * mean
        if spread <= (_SPREAD * mean) ** 2:
            return None
        per_item = (s0 * self._d2 - s1 * self._d1) / (s0 * s2 - s1 * s1)
        fixed = (self._d1 - per_item * s1) / s0
        if per_item < 0:
            return self._d1 / s0, 0.0
        if fixed < 0:
            return 0.0, self._d2 / s2
        return fixed, per_item

    def cost(self) -> Callable[[int], float] | None:
        """``n -> seconds``: the handler's predicted time for ``n`` items, noise margin
        included; ``None`` before the first measured batch."""
        if self._s0 == 0:
            return None
        bare = self._bare()
        margin = 1.0
        for n, d in self._recent:
            predicted = bare(n)
            if predicted > 0:
                margin = max(margin, d / predicted)
        margin = min(margin, _MAX_MARGIN)
        return lambda n: margin * bare(n)

    def rate(self) -> float | None:
        """Items accepted per second lately (rule 2); ``None`` before it can tell."""
        rates = self._rates
        if len(rates) < 2:
            return None
        (t0, a0), (t1, a1) = rates[0], rates[-1]
        return (a1 - a0) / (t1 - t0) if t1 > t0 else math.inf

    # -- learning ------------------------------------------------------------------

    def observe(self, observation: Observation) -> bool:
        """Learn from one handled batch; return True if the size or the wait changed."""
        first = not self._rates
        self._learn_rate(observation)
        if observation.duration is not None:
            self._learn_cost(observation.size, observation.duration)
        if observation.latency > self.latency_target:
            self.safety = max(SAFETY_MIN, self.safety * DECREASE)
        else:
            self.safety = min(SAFETY_MAX, self.safety + INCREASE)
        rate = self.rate()
        if rate is None and first and observation.duration is not None:
            waited = observation.latency - observation.duration
            rate = observation.size / waited if waited > 0 else math.inf
        return self._plan(rate)

    def _learn_rate(self, observation: Observation) -> None:
        rates = self._rates
        rates.append((observation.now, observation.accepted))
        horizon = observation.now - self.latency_target
        while len(rates) > 2 and rates[1][0] <= horizon:
            rates.popleft()

    def _learn_cost(self, n: int, d: float) -> None:
        self._s0 = FORGET * self._s0 + 1
        self._s1 = FORGET * self._s1 + n
        self._s2 = FORGET * self._s2 + n * n
        self._d1 = FORGET * self._d1 + d
        self._d2 = FORGET * self._d2 + n * d
        self._recent.append((n, d))

    def _bare(self) -> Callable[[int], float]:
        """The model of rule 1 without the noise margin."""
        fitted = self.model()
        if fitted is not None:
            fixed, per_item = fitted
            return lambda n: fixed + per_item * n
        mean_n, mean_d = self._s1 / self._s0, self._d1 / self._s0
        return lambda n: mean_d * max(1.0, n / mean_n)

    # -- planning --------------------------------------------------------------------

    def _plan(self, rate: float | None) -> bool:
        cost = self.cost()
        if cost is None or rate is None:
            return False
        budget = self.safety * self.latency_target
        limit = self.max_size
        if self.model() is None:  # rule 1: the bound is loose past what was seen
            limit = min(limit, math.ceil(2 * self._s1 / self._s0))
        floor = 0.0
        if rate <= 0:  # nothing arrived lately: keep the size, but bound the wait
            size = self.size
        else:
            fill = 1.0 / rate
            timely = _largest(limit, lambda s: s * fill + 2 * cost(s) <= budget)
            stable = _smallest(
                limit, lambda s: rate * cost(s) <= UTILISATION * self.concurrency * s
            )
            size = max(timely, stable)
            if stable > timely:  # rule 4: the batch must have the time to fill
                floor = min(2 * size * fill, self.latency_target)
        wait = self._capped(max(floor, budget - 2 * cost(size)))
        changed = (size, wait) != (self.size, self.wait)
        self.size, self.wait = size, wait
        return changed

    def _capped(self, wait: float) -> float:
        return wait if self.max_wait is None else min(wait, self.max_wait)


def _largest(limit: int, ok: Callable[[int], bool]) -> int:
    """The largest ``s`` in ``[1, limit]`` with ``ok(s)`` (``ok`` true up to a point), or 1."""
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _smallest(limit: int, ok: Callable[[int], bool]) -> int:
    """The smallest ``s`` in ``[1, limit]`` with ``ok(s)`` (true from a point), or ``limit``."""
    low, high = 1, limit
    while low < high:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle + 1
    return low
