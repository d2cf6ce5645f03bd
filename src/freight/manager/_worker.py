"""The managed-batch worker: claims chunks of requests, runs them, writes their results.

A worker is a driver of the one executor (``docs/engine.md``): how items arrive (a
claim of up to ``spec.size`` queued requests of one endpoint, across batches, so small
batches still make full handler calls) and where outcomes go (one write per chunk). The
chunk runs through :func:`~freight._drivers._runner.settle_async`: retries, backoff,
bisection of a poison request and rate limits are the engine's, never the worker's.

Each of the ``concurrency`` loops of a worker claims, runs and writes one chunk at a
time. One heartbeat task extends the leases of every claim the worker holds; a claim
whose lease lapses (the process was killed, or hung) is put back by whichever worker
sweeps next, so SIGKILL loses nothing that was accepted. Waiting for work (and between
heartbeats) is real time; the times written (leases, timestamps, expiry) and the
engine's backoffs come from the manager's clock, so tests move them with ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from freight._core._clock import Clock
from freight._core._plan import Reply
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._core._stats import BatchEvent
from freight._drivers._engine import fan_out
from freight._drivers._runner import call_sync, settle_async
from freight._drivers._streams import is_async_callable
from freight._errors import HandlerContractError, PermanentError
from freight._process import alive, host
from freight._ratelimit import RateLimiter
from freight.manager._models import BatchChange, RequestState
from freight.manager._store import Claimed, ManagerStore, Outcome, submitted_at

__all__ = ["DEFAULT_SIZE", "Endpoint", "Worker"]

_log = logging.getLogger("freight.manager")

DEFAULT_SIZE = 100
"""Requests per handler call of an endpoint registered without a ``BatchSpec`` size."""

# The outcome the worker gives a request of a batch cancelled here after its chunk was
# claimed and before its handler call started: it never starts (recorded "cancelled").
_SKIPPED = PermanentError("the batch was cancelled before this request started")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered endpoint: its handler and how its requests are run."""

    name: str
    handler: Callable[[list[Any]], Any]
    spec: BatchSpec | None = None
    retry: Retry | None = None
    rate_limit: RateLimiter | None = None
    max_concurrent_batches: int | None = None

    @property
    def size(self) -> int:
        """Requests per claim and per handler call."""
        spec = self.spec
        if spec is None or spec.time_only:  # "auto": its max_size
            return DEFAULT_SIZE
        return spec.size


class Worker:
    """Runs the requests of the registered endpoints until stopped (or, in burst mode,
    until there is nothing left to claim)."""

    def __init__(
        self,
        store: ManagerStore,
        endpoints: dict[str, Endpoint],
        *,
        clock: Clock,
        wall: Callable[[], datetime],
        concurrency: int,
        lease: float,
        poll_interval: float,
        cancelled: set[str],
        subscribers: Sequence[Callable[[BatchEvent], object]] = (),
        on_change: Sequence[Callable[[BatchChange], object]] = (),
    ) -> None:
        self.store = store
        self.subscribers = subscribers
        self.on_change = on_change
        self.endpoints = endpoints
        self.clock = clock
        self.wall = wall
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.cancelled = cancelled
        self.host = host()
        self.pid = os.getpid()
        self.name = f"{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.processed = 0
        self.wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._random = random.Random()
        self._last_sweep = -1e18

    def stop(self) -> None:
        """Claim nothing more; chunks in flight finish and are written (a drain)."""
        self._stopping.set()
        self.wake.set()

    async def run(self, *, burst: bool = False) -> None:
        """Run ``concurrency`` claim loops and the heartbeat until :meth:`stop` (or, with
        ``burst``, until nothing is left to claim)."""
        beat = asyncio.create_task(self._heartbeat(), name="freight-manager-heartbeat")
        loops = [
            asyncio.create_task(self._loop(burst), name=f"freight-manager-loop-{i}")
            for i in range(self.concurrency)
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a loop's error (burst mode) is the run's
        finally:
            for task in (*loops, beat):
                task.cancel()
            await asyncio.gather(*loops, beat, return_exceptions=True)

    def _lease_until(self) -> float:
        return self.wall().timestamp() + self.lease

    def _reclaim_dead(self) -> int:
        """Put back the claims of this host's workers whose process is gone (a restart
        after SIGKILL, or a neighbour, need not wait for their leases to lapse);
        returns how many requests came back."""
        dead = [
            owner
            for owner, pid in self.store.claims_on_host(self.host)
            if owner != self.name and pid != self.pid and not alive(pid)
        ]
        if not dead:
            return 0
        back = self.store.reclaim(self.wall().timestamp(), owners=dead)
        _log.info("took back %d requests of dead workers %s", back, dead)
        return back

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await asyncio.to_thread(self.store.heartbeat, self.name, self._lease_until())
            except Exception:  # the next beat tries again; a lapsed lease is redone
                _log.exception("managed-batch worker %s: heartbeat failed", self.name)

    async def _loop(self, burst: bool) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                done = await self._round(burst)
            except Exception:
                # The store went away (a restart, a dropped connection, a deadlock
                # PostgreSQL broke): what was claimed comes back when its lease lapses,
                # so the worker waits and goes on. In burst mode (tests), it stops.
                if burst:
                    raise
                failures += 1
                _log.exception("managed-batch worker %s: round failed, retrying", self.name)
                await asyncio.sleep(min(self.poll_interval * 2**failures, 10.0))
                continue
            failures = 0
            if done:
                return

    async def _round(self, burst: bool) -> bool:
        """Sweep, then one chunk per endpoint; idle when there was nothing. True when a
        burst is over."""
        await asyncio.to_thread(self.sweep)  # expire first: never claim an expired batch
        worked = False
        for endpoint in list(self.endpoints.values()):
            if self._stopping.is_set():
                return True
            worked = await self._one_chunk(endpoint) or worked
        if worked:
            return False
        if await asyncio.to_thread(self.sweep) == 0 and burst:
            return True
        await self._idle()
        return False

    async def _idle(self) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), self.poll_interval)
        except TimeoutError:
            pass

    def sweep(self, *, force: bool = False) -> int:
        """Expire batches past their window and put back lapsed claims (at most once per
        ``poll_interval`` unless ``force``); returns how many requests came back."""
        now = self.clock.now()
        if not force and now - self._last_sweep < self.poll_interval:
            return 0
        self._last_sweep = now
        self.changed(self.store.expire_due(self.wall()))
        return self._reclaim_dead() + self.store.reclaim(self.wall().timestamp())

    async def _one_chunk(self, endpoint: Endpoint) -> bool:
        """Claim, run and write one chunk of ``endpoint``; False when nothing was queued."""
        token = uuid.uuid4().hex
        claimed = await asyncio.to_thread(
            self.store.claim,
            endpoint.name,
            endpoint.size,
            token=token,
            owner=(self.name, self.host, self.pid),
            lease_until=self._lease_until(),
            now=self.wall(),
            max_batches=endpoint.max_concurrent_batches,
            due_before=self._due_before(endpoint),
        )
        if not claimed:
            return False
        started = self.clock.now()
        outcomes, calls = await self._execute(endpoint, claimed)
        written, ended = await asyncio.to_thread(
            self.store.write, token, outcomes, worker=self.name, now=self.wall()
        )
        self.processed += written
        if self.subscribers:
            self._emit(endpoint, claimed, outcomes, calls, self.clock.now() - started)
        if self.on_change and ended:
            await asyncio.to_thread(self.changed, ended)
        return True

    def changed(self, batch_ids: Sequence[str]) -> None:
        """Tell ``on_change`` where these batches are now (a :class:`BatchChange`)."""
        if not self.on_change:
            return
        for batch_id in batch_ids:
            change = BatchChange.of(self.store.get(batch_id))
            fan_out(self.on_change, change, f"batch manager batch {batch_id}:")

    def _emit(
        self,
        endpoint: Endpoint,
        claimed: list[Claimed],
        outcomes: list[Outcome],
        calls: int,
        duration: float,
    ) -> None:
        """One :class:`~freight.BatchEvent` per chunk, to the manager's subscribers (the
        ``batcher`` is the endpoint's name; ``wait``: since the oldest batch's submit)."""
        states = [o.state for o in outcomes]
        created = submitted_at(claimed[0].batch_id)
        event = BatchEvent(
            batcher=endpoint.name,
            key=None,
            size=len(claimed),
            reason="size" if len(claimed) >= endpoint.size else "pending",
            wait=max(0.0, self.wall().timestamp() - duration - created),
            duration=duration,
            succeeded=states.count(RequestState.COMPLETED),
            failed=states.count(RequestState.FAILED),  # cancelled ones: neither
            retried=sum(max(0, o.attempts - 1) for o in outcomes),
            calls=calls,
        )
        fan_out(self.subscribers, event, f"batch manager endpoint {endpoint.name!r}:")

    def _due_before(self, endpoint: Endpoint) -> float | None:
        """With a ``BatchSpec.timeout``, a partial chunk waits until its oldest request
        was submitted that long ago (as a batcher's open batch waits for its timeout)."""
        spec = endpoint.spec
        if spec is None or not spec.timeout:
            return None
        return self.wall().timestamp() - spec.timeout

    async def _execute(
        self, endpoint: Endpoint, claimed: list[Claimed]
    ) -> tuple[list[Outcome], int]:
        """Run a chunk through the engine; one :class:`Outcome` per request, and the
        handler calls made."""
        items: list[tuple[Claimed, Any]] = []
        outcomes: list[Outcome] = []
        for c in claimed:
            try:
                items.append((c, json.loads(c.body)))
            except (ValueError, RecursionError) as exc:  # pragma: no cover - checked at submit
                outcomes.append(_failure(c, exc, 0))
        calls = [0]
        results, attempts = await settle_async(
            items,
            self._caller(endpoint, calls),
            endpoint.retry,
            random=self._random.random,
            sleep=self.clock.sleep,
            now=self.clock.now,
            rate_limit=endpoint.rate_limit,
        )
        for (c, _), value, tries in zip(items, results, attempts, strict=True):
            outcomes.append(_outcome(c, value, tries))
        return outcomes, calls[0]

    def _caller(
        self, endpoint: Endpoint, calls: list[int]
    ) -> Callable[[list[tuple[Claimed, Any]]], Awaitable[Reply]]:
        """How the engine calls ``endpoint``'s handler on some of a chunk's requests.

        Requests of a batch cancelled in this process are left out right before the
        call (no await between the check and the call's start), so none starts after
        ``cancel`` returned; they get the outcome ``cancelled``.
        """
        handler = endpoint.handler
        is_async = is_async_callable(handler)

        async def call(items: list[tuple[Claimed, Any]]) -> Reply:
            keep = [i for i, (c, _) in enumerate(items) if c.batch_id not in self.cancelled]
            bodies = [items[i][1] for i in keep]
            if not bodies:
                return Reply(value=[_SKIPPED] * len(items))
            calls[0] += 1
            if is_async:
                try:
                    reply = Reply(value=await handler(bodies))
                except Exception as exc:
                    reply = Reply(error=exc)
            else:
                reply = await asyncio.to_thread(call_sync, handler, bodies)
            if len(keep) == len(items):
                return reply
            return _spread(reply, keep, len(items))

        return call


def _spread(reply: Reply, keep: Sequence[int], n: int) -> Reply:
    """The reply for the kept positions of a call, ``_SKIPPED`` at the others.

    ``None`` (every item it was given done) covers the kept positions only: passed on
    as it is, it would mark the left-out requests completed, never having run.
    """
    if reply.error is None and reply.value is None:
        reply = Reply(value=[None] * len(keep))
    if (
        reply.error is not None
        or not isinstance(reply.value, list)
        or len(reply.value) != len(keep)
    ):
        return reply if reply.error is not None else Reply(value=reply.value)
    value: list[Any] = [_SKIPPED] * n
    for j, i in enumerate(keep):
        value[i] = reply.value[j]
    return Reply(value=value)


def _failure(c: Claimed, exc: BaseException, attempts: int) -> Outcome:
    try:
        message = str(exc)
    except Exception as broken:  # an exception raising out of the worker: a chunk redone forever
        message = f"(its str() raised {type(broken).__qualname__}: {broken!r})"
    return Outcome(
        c.batch_id, c.idx, RequestState.FAILED,
        error_type=type(exc).__qualname__, error_message=_storable(message),
        attempts=attempts,
    )  # fmt: skip


def _storable(text: str) -> str:
    """``text`` as every store holds it: a NUL (PostgreSQL text refuses it) or a lone
    surrogate (no UTF-8), which an error message quoting a request's body may hold,
    is written as its escape (``\\x00``, ``\\ud800``); else the chunk's write
    failed, and the chunk was redone after each lease, forever."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def _outcome(c: Claimed, value: Any, attempts: int) -> Outcome:
    """A request's final result as stored: JSON response, or its error."""
    if value is _SKIPPED:
        return Outcome(c.batch_id, c.idx, RequestState.CANCELLED, attempts=0)
    if isinstance(value, BaseException):
        return _failure(c, value, attempts)
    try:
        response = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except Exception as exc:  # TypeError, ValueError, RecursionError, or a raising subclass:
        # any of them escaping would fail the chunk's write, redone forever
        error = HandlerContractError(
            f"the handler's response to request {c.custom_id!r} is not JSON "
            f"({type(value).__qualname__}: {exc}); return JSON values (dict, list, str, "
            "number, bool, None) from a managed batch's handler"
        )
        return _failure(c, error, attempts)
    return Outcome(c.batch_id, c.idx, RequestState.COMPLETED, response=response,
                   attempts=attempts)  # fmt: skip
