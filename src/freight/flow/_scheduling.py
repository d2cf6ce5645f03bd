"""Scheduling: when a consumer's artifacts become a handler run.

Each consumer has, as it declares them, a batch buffer and a join buffer: the core's
pure state machines (``BatchBuffer``, ``JoinBuffer``), fed with the flow clock's time.
This module feeds them and acts on what they answer. Rules:

1. Without ``batch=`` and ``join=``, an artifact is a run at once (reason
   ``immediate``).
2. With ``join=``, an artifact waits in its group (keyed by tenant and join key) until
   the group is complete; a complete group is one item for the batch buffer, or a run
   at once without ``batch=``. Expired groups are checked on every delivery and timer.
3. With ``batch=``, items wait in the batch of their tenant until its size or
   deadline (the core's rules); batches never mix tenants.
4. A group that expires incomplete goes to the handler (``on_partial="emit"``) or to
   the dead letters (``join_timeout``); at close, ``join_incomplete``.
5. One timer per consumer, at its earliest deadline (batch or join), re-armed only
   when that deadline changes.
6. Draining (close) flushes every open batch with reason ``close`` and ends every open
   group (rule 4), then gives the consumer fresh buffers for what those runs publish.
7. A run leaves here with a ``flush`` span; the executor runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from freight._core._clock import Clock
from freight._core._join import JoinGroup
from freight.flow._artifacts import Envelope
from freight.flow._consumer import Group
from freight.flow._records import PendingBatch, Route, Runtime, Work, dead_letter
from freight.flow._tracing import Tracing

__all__ = ["Scheduler", "pending"]

Dispatch = Callable[[Runtime, list[Work], str | None], None]


class Scheduler:
    """Buffers, joins and timers of a flow's consumers (module rules).

    Args:
        tracing: where ``flush`` spans go.
        route: records a consumer's dead letters and done deliveries
            (``Router.route``).
        dispatch: starts a run (``Executor.dispatch``).
    """

    __slots__ = ("clock", "dispatch", "route", "tracing")

    def __init__(self, tracing: Tracing, route: Route, dispatch: Dispatch) -> None:
        self.tracing = tracing
        self.route = route
        self.dispatch = dispatch
        self.clock: Clock | None = None  # set when the flow starts

    def deliver(self, rt: Runtime, envelope: Envelope, now: float) -> None:
        """``envelope`` reached consumer ``rt`` at ``now`` (rules 1-3)."""
        spec = rt.spec
        if rt.joins is not None and spec.join is not None:
            self.expire(rt, now)
            key = (envelope.tenant, spec.join.key_of(envelope.payload))
            slot = spec.slot_of(envelope.payload)
            assert slot is not None
            group = rt.joins.add(key, slot, envelope, now)
            if group is not None:
                self._offer(rt, _group_work(rt, group), now)
        else:
            self._offer(rt, Work(envelope.payload, (envelope,), envelope.tenant), now)
        self.schedule(rt)

    def offer_again(self, rt: Runtime, works: list[Work]) -> None:
        """``works`` come back for another try (their backoff has passed): buffer them
        as they arrive, in one batch where the spec allows."""
        clock = self.clock
        assert clock is not None
        now = clock.now()
        for work in works:
            self._offer(rt, work, now)
        self.schedule(rt)

    def _offer(self, rt: Runtime, work: Work, now: float) -> None:
        if rt.buffer is None:
            self._run(rt, [work], "immediate", now, work.tenant)
            return
        for flush in rt.buffer.add(work, now):
            self._run(rt, flush.items, flush.reason, flush.opened_at, flush.key)

    def expire(self, rt: Runtime, now: float) -> None:
        """End the join groups of ``rt`` whose window closed by ``now`` (rule 4)."""
        if rt.joins is None:
            return
        for group in rt.joins.tick(now):
            self._partial(rt, group, "join_timeout", now)

    def _partial(self, rt: Runtime, group: JoinGroup, reason: str, now: float) -> None:
        if rt.spec.on_partial == "emit":
            self._offer(rt, _group_work(rt, group), now)
            return
        envelopes = [m for m in group.members if m is not None]
        letter = dead_letter(rt.spec.name, reason, envelopes, None)
        self.route([], done=(rt.spec.name, [e.id for e in envelopes]), dead=[letter])

    def schedule(self, rt: Runtime) -> None:
        """Arm ``rt``'s timer at its earliest deadline, if that changed (rule 5)."""
        deadline = rt.next_deadline()
        if deadline == rt.timer_at:
            return
        if rt.timer is not None:
            rt.timer.cancel()
        rt.timer, rt.timer_at = None, deadline
        if deadline is not None:
            assert self.clock is not None
            rt.timer = self.clock.call_at(deadline, lambda: self.on_timer(rt))

    def on_timer(self, rt: Runtime) -> None:
        """``rt``'s deadline came: expire groups, flush due batches, re-arm."""
        rt.timer, rt.timer_at = None, None
        assert self.clock is not None
        now = self.clock.now()
        self.expire(rt, now)
        if rt.buffer is not None:
            for flush in rt.buffer.tick(now):
                self._run(rt, flush.items, flush.reason, flush.opened_at, flush.key)
        self.schedule(rt)

    def drain(self, rt: Runtime) -> bool:
        """Flush everything open in ``rt`` (rule 6); True if anything was."""
        assert self.clock is not None
        now = self.clock.now()
        drained = False
        if rt.joins is not None:
            for group in rt.joins.close():
                self._partial(rt, group, "join_incomplete", now)
                drained = True
        if rt.buffer is not None:
            for flush in rt.buffer.close():
                self._run(rt, flush.items, flush.reason, flush.opened_at, flush.key)
                drained = True
        rt.reset()  # fresh buffers for what the drained batches publish
        self.schedule(rt)
        return drained

    def stop(self, consumers: Sequence[Runtime]) -> None:
        """Cancel every timer (the flow is closed)."""
        for rt in consumers:
            if rt.timer is not None:
                rt.timer.cancel()

    def _run(
        self, rt: Runtime, works: list[Work], reason: str, opened_at: float, key: Hashable
    ) -> None:
        """Hand a due batch to the executor, with its ``flush`` span (rule 7)."""
        flush_id = None
        if self.tracing.subscribers:
            assert self.clock is not None
            size = rt.spec.batch.size if rt.spec.batch is not None else 1
            flush_id = self.tracing.span("flush", rt.spec.name, opened_at, self.clock.now(), {
                "batch_size": len(works), "flush_reason": reason,
                "efficiency": len(works) / size, "tenant": key,
            })  # fmt: skip
        self.dispatch(rt, works, flush_id)


def pending(consumers: dict[str, Runtime]) -> list[PendingBatch]:
    """The open batches and join groups of ``consumers``, oldest first."""
    out: list[PendingBatch] = []
    for name, rt in consumers.items():
        if rt.joins is not None:
            for group in rt.joins.open_groups():
                members = tuple(m.payload for m in group.members if m is not None)
                key = group.key[1] if isinstance(group.key, tuple) else group.key
                out.append(
                    PendingBatch(name, "join", key, len(members), members,
                                 group.opened_at, group.deadline)
                )  # fmt: skip
        if rt.buffer is not None:
            for batch in rt.buffer.open_batches():
                items = tuple(w.item for w in batch.items)
                out.append(
                    PendingBatch(name, "batch", batch.key, len(items), items,
                                 batch.opened_at, batch.deadline)
                )  # fmt: skip
    return sorted(out, key=lambda p: p.opened_at)


def _group_work(rt: Runtime, group: JoinGroup) -> Work:
    """A join group as one item: a :class:`Group` of payloads with their envelopes."""
    joined: tuple[str | None, Hashable] = group.key  # type: ignore[assignment]
    tenant, key = joined
    members: tuple[Envelope | None, ...] = group.members
    payloads: tuple[Any, ...] = tuple(m.payload if m is not None else None for m in members)
    envelopes = tuple(m for m in members if m is not None)
    return Work(Group(key, payloads, rt.spec.types, group.complete), envelopes, tenant)
