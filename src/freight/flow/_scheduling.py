"""Scheduling: when a consumer's artifacts become a handler run.

Each subscription of a consumer (each ``.consumes(...)``) is a *lane* with, as it
declares them, a gate (the core's ``JoinBuffer``: an AND gate, correlated by key or
not) and a batch buffer (the core's ``BatchBuffer``): pure state machines fed with the
flow clock's time. This module feeds them and acts on what they answer. Rules:

1. Without ``batch=`` and without a gate (one type), an artifact is a run at once
   (reason ``immediate``).
2. A gate (several types) keys its groups by tenant and join key; without ``join=``,
   by tenant and the publish's correlation id (Flock's pools: two runs never pair).
   An artifact waits in the oldest group of its key with a free slot of its type; a
   complete group is one item for the batch buffer, or a run at once without
   ``batch=``. Groups whose window closed are collected after every delivery
   and on every timer.
3. With ``batch=``, items wait in the batch of their tenant until its size or
   deadline (the core's rules; a time-only ``BatchSpec(timeout=...)`` has no size);
   batches never mix tenants.
4. A group that expires incomplete goes to the handler (``on_partial="emit"``) or to
   the dead letters (``join_timeout``); at close, ``join_incomplete``.
5. An artifact under an ``After`` embargo waits in its lane until the delay has
   passed on the flow's clock, then arrives (its batch timer starts then).
6. One timer per consumer, at the earliest deadline of its lanes (batch, join or
   embargo), re-armed only when that deadline changes.
7. Draining (close) flushes every open batch with reason ``close`` and ends every
   open group (rule 4), then gives the consumer fresh lanes for what those runs
   publish. An embargoed artifact stays open on a durable board (a restart delivers
   it when due); in memory it is dead-lettered (``embargoed``): nothing silent.
8. A run leaves here with a ``flush`` span; the executor runs it.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from freight._core._buffer import BatchBuffer, Flush
from freight._core._clock import Clock
from freight._core._join import JoinBuffer, JoinGroup
from freight._core._spec import BatchSpec
from freight.flow._artifacts import Envelope
from freight.flow._commit import log_failure
from freight.flow._consumer import Group, Subscription
from freight.flow._records import (
    PendingBatch,
    Route,
    Runtime,
    Work,
    dead_letter,
    new_work,
    work_tenant,
)
from freight.flow._tracing import Tracing
from freight.flow._visibility import After

__all__ = ["Lane", "Scheduler", "pending"]

Dispatch = Callable[[Runtime, list[Work], str | None], None]


def _tenant_scope(key: Hashable) -> Hashable:
    """A gate's count windows count per tenant (its keys are ``(tenant, join key,
    correlation id)``)."""
    tenant: Hashable = key[0]  # type: ignore[index]
    return tenant


class Lane:
    """One subscription's state: its gate, its batch buffer, its embargoed artifacts.

    Attributes:
        sub: the subscription.
        name: its deliveries' name on a durable board (``ConsumerSpec.delivery_name``).
        gate: the AND gate / join (several types), else ``None``.
        buffer: the batch buffer (``batch=``), else ``None``.
        size: the batch size, for a flush's efficiency (``None``: time-only or none).
        embargo: ``(due, seq, envelope)`` of artifacts waiting for their ``After`` delay.
    """

    __slots__ = ("buffer", "embargo", "gate", "name", "size", "sub")

    def __init__(self, name: str, sub: Subscription) -> None:
        self.sub = sub
        self.name = name
        self.gate: JoinBuffer | None = (
            JoinBuffer(sub.join, len(sub.types), scope=_tenant_scope) if sub.gated else None
        )
        self.buffer: BatchBuffer[Work] | None = None
        self.size: int | None = None
        batch = sub.batch
        if batch is not None:
            if batch.time_only:  # the core's buffer counts to a size: one never reached
                batch = BatchSpec(sys.maxsize, batch.timeout, batch.max_bytes, batch.sizer)
            else:
                self.size = batch.size
            self.buffer = BatchBuffer(batch, key=work_tenant)
        self.embargo: list[tuple[float, int, Envelope]] = []

    def next_deadline(self) -> float | None:
        """The earliest deadline of its open batches, groups and embargoes."""
        # on every delivery: comparisons, no list (measured ~10% of a publish otherwise)
        best = self.buffer.next_deadline() if self.buffer is not None else None
        if self.gate is not None:
            found = self.gate.next_deadline()
            if found is not None and (best is None or found < best):
                best = found
        if self.embargo:
            found = self.embargo[0][0]
            if best is None or found < best:
                best = found
        return best


class Scheduler:
    """Lanes, timers and embargoes of a flow's consumers (module rules).

    Args:
        tracing: where ``flush`` spans go.
        route: records a consumer's dead letters and done deliveries
            (``Router.route``).
        dispatch: starts a run (``Executor.dispatch``).
    """

    __slots__ = ("clock", "dispatch", "durable", "route", "seq", "tracing")

    def __init__(self, tracing: Tracing, route: Route, dispatch: Dispatch) -> None:
        self.tracing = tracing
        self.route = route
        self.dispatch = dispatch
        self.clock: Clock | None = None  # set when the flow starts
        self.durable = False  # a durable board keeps embargoed artifacts at close (rule 7)
        self.seq = 0

    def lanes(self, rt: Runtime) -> list[Lane]:
        """``rt``'s lanes, one per subscription (made on first use)."""
        if not rt.lanes:
            spec = rt.spec
            rt.lanes = [Lane(spec.delivery_name(s.index), s) for s in spec.subscriptions]
        return rt.lanes

    def arrive(self, rt: Runtime, lane: int, envelope: Envelope, now: float) -> None:
        """``envelope`` reached lane ``lane`` of ``rt`` at ``now``: at once, or once its
        ``After`` delay has passed (rule 5)."""
        visibility = envelope.visibility
        if type(visibility) is After:
            due = envelope.created_at + visibility.delay
            if due > now:
                self.seq += 1
                heapq.heappush(self.lanes(rt)[lane].embargo, (due, self.seq, envelope))
                self.schedule(rt)
                return
            now = max(now, due)
        state = (rt.lanes or self.lanes(rt))[lane]
        buffer = state.buffer
        if state.gate is not None or buffer is None:
            self.deliver(rt, lane, envelope, now)
            return
        # deliver() for a lane that batches single artifacts, inline (the hot path:
        # once per artifact and subscription)
        work = new_work((envelope.payload, (envelope,), envelope.tenant, 0, lane))
        flushes = buffer.put(work, now)  # the flow ran `where` itself; lanes never close
        if flushes:
            for flush in flushes:
                self._flush(rt, state, flush)
            self.schedule(rt)
        elif len(buffer) == 1:
            self.schedule(rt)  # it opened the buffer's only batch: a deadline to arm
        # Otherwise it joined an open batch or opened a tenant's batch whose deadline is
        # no earlier than one already armed: the timer stays (rule 6).

    def deliver(self, rt: Runtime, lane: int, envelope: Envelope, now: float) -> None:
        """``envelope`` reached lane ``lane`` of ``rt`` at ``now`` (rules 1-3)."""
        state = (rt.lanes or self.lanes(rt))[lane]
        gate = state.gate
        if gate is not None:
            sub = state.sub
            payload = envelope.payload
            join = sub.join
            key = (
                (envelope.tenant, join.key_of(payload), None)
                if join is not None
                else (envelope.tenant, None, envelope.correlation_id)
            )
            group = gate.add(key, sub.slots_of(payload), envelope, now)
            if group is not None:
                self._offer(rt, state, _group_work(state, group), now)
            self.expire(rt, state, now)
            self.schedule(rt)
            return
        work = new_work((envelope.payload, (envelope,), envelope.tenant, 0, lane))
        self._offer(rt, state, work, now)
        if state.buffer is not None:
            self.schedule(rt)
        # (without a buffer or a gate it ran at once: no deadline changed)

    def offer_again(self, rt: Runtime, works: list[Work]) -> None:
        """``works`` come back for another try (their backoff has passed): buffer them
        as they arrive, in one batch where the spec allows."""
        clock = self.clock
        assert clock is not None
        now = clock.now()
        lanes = self.lanes(rt)
        for work in works:
            self._offer(rt, lanes[work.lane], work, now)
        self.schedule(rt)

    def _offer(self, rt: Runtime, lane: Lane, work: Work, now: float) -> None:
        if lane.buffer is None:
            self._run(rt, lane, [work], reason="immediate", opened_at=now, key=work.tenant)
            return
        for flush in lane.buffer.put(work, now):  # (`where` ran in routing)
            self._flush(rt, lane, flush)

    def _flush(self, rt: Runtime, lane: Lane, flush: Flush[Work]) -> None:
        self._run(
            rt, lane, flush.items, reason=flush.reason, opened_at=flush.opened_at, key=flush.key
        )

    def expire(self, rt: Runtime, lane: Lane, now: float) -> None:
        """End the groups of ``lane`` whose window closed by ``now`` (rule 4)."""
        if lane.gate is None:
            return
        for group in lane.gate.tick(now):
            self._partial(rt, lane, group, "join_timeout", now)

    def _partial(self, rt: Runtime, lane: Lane, group: JoinGroup, reason: str, now: float) -> None:
        if lane.sub.on_partial == "emit":
            self._offer(rt, lane, _group_work(lane, group), now)
            return
        envelopes = [m for m in group.members if m is not None]
        letter = dead_letter(rt.spec.name, reason, envelopes, None)
        pending = self.route([], done=(lane.name, [e.id for e in envelopes]), dead=[letter])
        log_failure(pending, self.tracing.flow, f"a dead letter of {rt.spec.name!r}")

    def schedule(self, rt: Runtime) -> None:
        """Arm ``rt``'s timer at its earliest deadline, if that changed (rule 6)."""
        lanes = rt.lanes
        if len(lanes) == 1:
            deadline = lanes[0].next_deadline()
        else:
            found = [d for lane in lanes if (d := lane.next_deadline()) is not None]
            deadline = min(found, default=None)
        if deadline == rt.timer_at:
            return
        if rt.timer is not None:
            rt.timer.cancel()
        rt.timer, rt.timer_at = None, deadline
        if deadline is not None:
            assert self.clock is not None
            rt.timer = self.clock.call_at(deadline, lambda: self.on_timer(rt))

    def on_timer(self, rt: Runtime) -> None:
        """``rt``'s deadline came: release embargoes, expire groups, flush due batches,
        re-arm."""
        rt.timer, rt.timer_at = None, None
        assert self.clock is not None
        now = self.clock.now()
        for index, lane in enumerate(rt.lanes):
            while lane.embargo and lane.embargo[0][0] <= now:
                due, _, envelope = heapq.heappop(lane.embargo)
                self.deliver(rt, index, envelope, due)
            self.expire(rt, lane, now)
            if lane.buffer is not None:
                for flush in lane.buffer.tick(now):
                    self._flush(rt, lane, flush)
        self.schedule(rt)

    def drain(self, rt: Runtime) -> bool:
        """Flush everything open in ``rt`` (rule 7); True if anything was."""
        assert self.clock is not None
        now = self.clock.now()
        drained = False
        for lane in rt.lanes:
            if lane.embargo and not self.durable:
                envelopes = [e for _, _, e in sorted(lane.embargo)]
                letters = [dead_letter(rt.spec.name, "embargoed", [e], None) for e in envelopes]
                pending = self.route([], done=(lane.name, [e.id for e in envelopes]), dead=letters)
                log_failure(pending, self.tracing.flow, f"dead letters of {rt.spec.name!r}")
            if lane.gate is not None:
                for group in lane.gate.close():
                    self._partial(rt, lane, group, "join_incomplete", now)
                    drained = True
            if lane.buffer is not None:
                for flush in lane.buffer.close():
                    self._flush(rt, lane, flush)
                    drained = True
        rt.lanes = []  # fresh lanes for what the drained batches publish
        self.schedule(rt)
        return drained

    def stop(self, consumers: Sequence[Runtime]) -> None:
        """Cancel every timer (the flow is closed)."""
        for rt in consumers:
            if rt.timer is not None:
                rt.timer.cancel()

    def _run(
        self,
        rt: Runtime,
        lane: Lane,
        works: list[Work],
        *,
        reason: str,
        opened_at: float,
        key: Hashable,
    ) -> None:
        """Hand a due batch to the executor, with its ``flush`` span (rule 8)."""
        flush_id = None
        if self.tracing.subscribers:
            assert self.clock is not None
            size = lane.size if lane.buffer is not None else 1
            efficiency = len(works) / size if size else None
            flush_id = self.tracing.flush(
                rt.spec.name, opened_at, self.clock.now(), (len(works), reason, efficiency, key)
            )
        self.dispatch(rt, works, flush_id)


def pending(consumers: dict[str, Runtime]) -> list[PendingBatch]:
    """The open batches, join groups and embargoed artifacts of ``consumers``, oldest
    first."""
    out: list[PendingBatch] = []
    for name, rt in consumers.items():
        for lane in rt.lanes:
            if lane.gate is not None:
                for group in lane.gate.open_groups():
                    members = tuple(m.payload for m in group.members if m is not None)
                    key = group.key[1] if isinstance(group.key, tuple) else group.key
                    out.append(
                        PendingBatch(name, "join", key, len(members), members,
                                     group.opened_at, group.deadline)
                    )  # fmt: skip
            if lane.buffer is not None:
                for batch in lane.buffer.open_batches():
                    items = tuple(w.item for w in batch.items)
                    deadline = batch.deadline
                    out.append(
                        PendingBatch(name, "batch", batch.key, len(items), items,
                                     batch.opened_at, deadline)
                    )  # fmt: skip
            for due, _, envelope in sorted(lane.embargo):
                out.append(
                    PendingBatch(name, "after", envelope.tenant, 1, (envelope.payload,),
                                 envelope.created_at, due)
                )  # fmt: skip
    return sorted(out, key=lambda p: p.opened_at)


def _group_work(lane: Lane, group: JoinGroup) -> Work:
    """A gate's group as one item: a :class:`Group` of payloads with their envelopes."""
    joined: tuple[str | None, Hashable, str | None] = group.key  # type: ignore[assignment]
    tenant, key, _ = joined
    members: tuple[Envelope | None, ...] = group.members
    payloads: tuple[Any, ...] = tuple(m.payload if m is not None else None for m in members)
    envelopes = tuple(m for m in members if m is not None)
    return Work(
        Group(key, payloads, lane.sub.types, group.complete), envelopes, tenant, 0, lane.sub.index
    )
