"""Execution: running a consumer's batch, and what comes of it.

Rules:

1. A run is counted from the moment the scheduler hands it over until it ends. With
   ``max_concurrent=n`` at most *n* runs of a consumer are started at once, admitted by
   the core's :class:`~freight._core._dispatch.DispatchQueue` (a Batcher's
   ``max_concurrent_batches`` rule); the others wait in order, and a run that ends
   hands its slot to the next at once (there is no moment in between at which the
   flow looks idle).
2. A run calls the handler through the core's batch plan, carried out by the shared
   async runner (:func:`~freight._drivers._runner.run_async`, the asyncio
   ``Batcher``'s too): retries after a backoff, bisection of a raising batch, the rate
   limit before each call, and every wait on the flow's clock. A batch consumer
   without ``retry=`` still bisects a raising batch (no retries): one poison artifact
   fails alone. An item the plan sends back for another try (it failed transiently
   alone, attempts remain) is not done: after the plan's wait it is offered to the
   consumer's buffer again, with its tries so far, exactly as a ``Batcher`` re-buffers
   it; its delivery stays open on a durable board until it ends.
3. Outcomes follow the handler contract (``_handling``): an ``Exception`` instance is
   that item's dead letter (``handler_error``; ``contract`` for a
   ``HandlerContractError``); a ``ForBatch`` is published once, its sources being
   every item of the call that returned it; any other value is published as the
   item's output, if its types are declared (else ``contract``) and it stays within
   ``max_depth`` (else ``max_depth``).
4. An output's tenant and correlation id are its sources' when they all share one;
   its visibility is the declared one, else its tenant's (a tenant's report stays the
   tenant's), else public; its depth is one more than its deepest source.
5. What a run produced (its deliveries done, its outputs, its dead letters) is routed
   at once, in one transaction on a durable board; the run ends once that transaction
   has committed and its outputs were delivered.
6. A bug of ours (or a subscriber's) never loses a batch: each item is dead-lettered
   ``handler_error`` with the error, which is logged.
7. Idle accounting, for ``run_until_idle``: ``runs`` (handed over, not ended),
   ``running`` (started) and ``sleeping`` (waiting for the flow's clock to reach a
   time). On a virtual clock a run stops counting as sleeping inside the clock's
   timer, the moment the clock reaches its time, so a run the clock woke is busy at
   once. ``changed`` is set whenever a run ends or starts waiting for the clock.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import random
from collections.abc import Callable, Sequence
from typing import Any

from freight._core._buffer import Flush
from freight._core._clock import Clock
from freight._core._plan import Outcome
from freight._core._retry import Retry
from freight._drivers._clocks import LoopClock, ThreadClock
from freight._drivers._runner import run_async
from freight._errors import HandlerContractError
from freight.flow._artifacts import Envelope
from freight.flow._consumer import ConsumerSpec
from freight.flow._handling import BatchOutput, call, check_outputs, outputs_of
from freight.flow._records import DeadLetter, Runtime, Work, dead_letter
from freight.flow._routing import PUBLIC, Router
from freight.flow._tracing import Tracing
from freight.flow._visibility import Tenant

__all__ = ["Executor"]

_log = logging.getLogger("freight.flow")

# Batch consumers without retry=: no retries, but a raising batch is bisected, so one
# poison artifact fails alone instead of failing the whole batch as one error.
_ISOLATE = Retry(attempts=1, backoff=0, jitter=0, isolate=True)
_tried = operator.itemgetter(3)  # Work.tried


class Executor:
    """Runs a flow's batches as tasks and routes what they produce (module rules).

    Args:
        flow: the flow's name, for logs.
        tracing: where ``handler`` spans go.
        router: publishes outputs and records dead letters.
        max_depth: most consumer hops (rule 3).
    """

    def __init__(self, flow: str, tracing: Tracing, router: Router, max_depth: int) -> None:
        self.flow = flow
        self.tracing = tracing
        self.router = router
        self.max_depth = max_depth
        self.clock: Clock | None = None
        self.virtual = False  # the clock moves only when told (a FakeClock)
        self.random = random.Random()
        self.tasks: set[asyncio.Task[None]] = set()
        self.runs = 0
        self.running = 0
        self.sleeping = 0
        self.retrying = 0  # of the runs, waits before a retry (no handler runs in them)
        self.changed = asyncio.Event()
        # Set by the flow: hands items sent back for another try to the scheduler.
        self.offer_again: Callable[[Runtime, list[Work]], None] = _unwired

    def start(self, clock: Clock) -> None:
        """Run on ``clock`` (known when the flow starts, inside the event loop)."""
        self.clock = clock
        self.virtual = not isinstance(clock, LoopClock | ThreadClock)

    # -- runs (rule 1) ---------------------------------------------------------

    def dispatch(self, rt: Runtime, works: list[Work], flush_id: str | None) -> None:
        """Run ``works`` for ``rt`` now, or when the dispatch queue admits it."""
        self.runs += 1
        queue = rt.queue
        if queue is None:
            self._start(rt, works, flush_id, None)
            return
        assert self.clock is not None
        run = Flush(works[0].tenant, works, "manual", self.clock.now(), [flush_id])
        for ready in queue.push(run):
            self._start(rt, ready.items, ready.tickets[0], ready)

    def _start(
        self, rt: Runtime, works: list[Work], flush_id: str | None, run: Flush[Work] | None
    ) -> None:
        self.running += 1
        task = asyncio.get_running_loop().create_task(self._run(rt, works, flush_id, run))
        self.tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self.tasks.discard)

    def _ended(self, rt: Runtime, run: Flush[Work] | None) -> None:
        self.running -= 1
        self.runs -= 1
        if rt.queue is not None and run is not None:
            for ready in rt.queue.done(run):
                self._start(rt, ready.items, ready.tickets[0], ready)
        self.changed.set()

    def idle(self) -> bool:
        """No run left, or (virtual clock) every run left waits for the clock to move:
        sleeping, or waiting for a slot that sleeping runs hold."""
        return self.runs == 0 or (self.virtual and self.sleeping == self.running)

    def quiet(self) -> bool:
        """No run left at all."""
        return self.runs == 0

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds; it is checked each time ``changed`` is set."""
        while not condition():
            self.changed.clear()
            await self.changed.wait()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the flow's clock, counted as sleeping (rule 7)."""
        clock = self.clock
        assert clock is not None
        if not self.virtual or seconds <= 0:
            await clock.sleep(seconds)  # a real clock: run_until_idle waits for it anyway
            return
        woken = asyncio.get_running_loop().create_future()
        fired = False

        def wake() -> None:
            nonlocal fired
            fired = True
            self.sleeping -= 1  # busy again from the moment the clock gets there
            if not woken.done():
                woken.set_result(None)

        handle = clock.call_at(clock.now() + seconds, wake)
        self.sleeping += 1
        self.changed.set()
        try:
            await woken
        finally:
            if not fired:  # cancelled before the clock got there
                handle.cancel()
                self.sleeping -= 1

    # -- one run (rules 2, 5, 6) ---------------------------------------------

    async def _run(
        self, rt: Runtime, works: list[Work], flush_id: str | None, run: Flush[Work] | None
    ) -> None:
        spec = rt.spec
        clock = self.clock
        assert clock is not None
        try:
            started = clock.now()
            again: list[Work] = []
            try:
                retry = spec.retry if spec.retry is not None or spec.batch is None else _ISOLATE
                tried = [w.tried for w in works] if any(map(_tried, works)) else None
                outcome, _ = await run_async(
                    works, functools.partial(call, spec), retry, random=self.random.random,
                    sleep=self.sleep, now=clock.now, rate_limit=spec.rate_limit, tried=tried,
                )  # fmt: skip
                finished, results = works, outcome.outcomes
                if outcome.again:
                    finished, results, again = _split_again(works, outcome)
                outputs, dead = self.outputs(spec, finished, results)
            except Exception as exc:  # a bug of ours or a subscriber's: never lose the batch
                _log.exception("%s: consumer %r failed unexpectedly", self.flow, spec.name)
                outcome = Outcome([exc] * len(works), 1)
                finished, results, again, outputs = works, outcome.outcomes, [], []
                dead = [dead_letter(spec.name, "handler_error", w.envelopes, exc) for w in works]
            if self.tracing.subscribers:
                failed = sum(map(isinstance, results, itertools.repeat(BaseException)))
                counts = (len(works), len(finished) - failed, failed, outcome.tries,
                          len(outputs), len(again))  # fmt: skip
                self.tracing.handler(spec.name, started, clock.now(), flush_id, counts)
            done = [e.id for w in finished for e in w.envelopes]
            lane = spec.delivery_name(works[0].lane)  # a run is one subscription's
            pending = self.router.route(outputs, done=(lane, done), dead=dead)
            if pending is not None:  # a durable board: the run ends once it is recorded
                await pending
            if again:
                self._retry_later(rt, again, outcome.again_after)
        finally:
            self._ended(rt, run)

    def _retry_later(self, rt: Runtime, works: list[Work], delay: float) -> None:
        """Offer ``works`` to ``rt`` again after ``delay`` on the flow's clock; counted
        as a run (sleeping) until then, so ``close`` and ``run_until_idle`` wait for it."""
        self.runs += 1
        self.running += 1
        self.retrying += 1

        async def later() -> None:
            try:
                await self.sleep(delay)
                self.offer_again(rt, works)
            finally:
                self.runs -= 1
                self.running -= 1
                self.retrying -= 1
                self.changed.set()

        task = asyncio.get_running_loop().create_task(later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- outcomes (rules 3, 4) ------------------------------------------------

    def outputs(
        self, spec: ConsumerSpec, works: list[Work], outcomes: list[Any]
    ) -> tuple[list[Envelope], list[DeadLetter]]:
        """The envelopes to publish from a run's outcomes, and its dead letters."""
        outputs: list[Envelope] = []
        dead: list[DeadLetter] = []
        declared = spec.publishes
        for work, outcome in zip(works, outcomes, strict=True):
            if outcome is None:
                continue
            if isinstance(outcome, BaseException):
                contract = isinstance(outcome, HandlerContractError)
                reason = "contract" if contract else "handler_error"
                dead.append(dead_letter(spec.name, reason, work.envelopes, outcome))
                continue
            sources: Sequence[Envelope] = work.envelopes
            if isinstance(outcome, declared) and len(sources) == 1:
                # one declared artifact from one source: the common case, the rules
                # below without their lists
                depth = sources[0].depth + 1
                if depth > self.max_depth:
                    too_deep = f"depth {depth} > max_depth {self.max_depth}"
                    dead.append(dead_letter(spec.name, "max_depth", sources, too_deep))
                else:
                    outputs.append(self._output(spec, outcome, sources, depth))
                continue
            if isinstance(outcome, BatchOutput):
                sources = [e for w in outcome.works for e in w.envelopes]
            values = outputs_of(outcome)
            if not values:
                continue
            problem = check_outputs(spec, values)
            if problem is not None:
                dead.append(dead_letter(spec.name, "contract", sources, problem))
                continue
            depth = (sources[0].depth if len(sources) == 1 else max(e.depth for e in sources)) + 1
            if depth > self.max_depth:
                too_deep = f"depth {depth} > max_depth {self.max_depth}"
                dead.append(dead_letter(spec.name, "max_depth", sources, too_deep))
                continue
            for value in values:
                outputs.append(self._output(spec, value, sources, depth))
        return outputs, dead

    def _output(
        self, spec: ConsumerSpec, value: Any, sources: Sequence[Envelope], depth: int
    ) -> Envelope:
        if len(sources) == 1:
            tenant, correlation = sources[0].tenant, sources[0].correlation_id
        else:
            tenants = {e.tenant for e in sources}
            tenant = next(iter(tenants)) if len(tenants) == 1 else None
            correlations = {e.correlation_id for e in sources}
            correlation = next(iter(correlations)) if len(correlations) == 1 else None
        visibility = spec.visibility
        if visibility is None:  # what is made from one tenant's artifacts stays that tenant's
            visibility = Tenant(tenant) if tenant is not None else PUBLIC
        return self.router.envelope(value, spec.name, visibility, depth, correlation)


def _split_again(works: list[Work], outcome: Outcome) -> tuple[list[Work], list[Any], list[Work]]:
    """(works that ended, their outcomes, works sent back with their tries so far)."""
    back = set(outcome.again)
    finished = [w for i, w in enumerate(works) if i not in back]
    results = [o for i, o in enumerate(outcome.outcomes) if i not in back]
    again = [
        Work(works[i].item, works[i].envelopes, works[i].tenant, outcome.attempts[i], works[i].lane)
        for i in outcome.again
    ]
    return finished, results, again


def _unwired(rt: Runtime, works: list[Work]) -> None:  # pragma: no cover - wired by Flow
    raise RuntimeError("the executor is not wired to a scheduler")
