"""Restoring a durable flow: the board's open deliveries back into the buffers.

Rules:

1. A delivery not marked done is an artifact a consumer's subscription has not
   handled: it was in an open batch or join, under an ``After`` embargo, or in a run
   the crash interrupted. Each is re-delivered to that subscription (the board names
   it ``ConsumerSpec.delivery_name``), in publication order, exactly once.
2. It arrives with its original arrival time, moved onto the new clock (``now`` minus
   its age on the wall clock), so an open batch keeps its deadline across the
   restart (and an embargo its end); what is already due flushes at once. A count
   window counts the re-delivered artifacts again, from the restart.
3. Deliveries for a consumer (or subscription) this flow does not declare stay open
   on the board (a warning says so): they are not lost, and a flow that declares it
   again gets them.
4. Sequence numbers continue after the board's last one.
"""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime

from freight._core._clock import Clock
from freight.flow._board import Board
from freight.flow._routing import Router
from freight.flow._scheduling import Scheduler

__all__ = ["restore"]

_log = logging.getLogger("freight.flow")


def restore(board: Board, router: Router, scheduler: Scheduler, clock: Clock) -> int:
    """Re-buffer the deliveries ``board`` holds open (module rules); return how many."""
    router.seq = itertools.count(board.next_seq())
    scheduler.durable = True  # embargoed artifacts stay on the board at close
    now, wall = clock.now(), datetime.now(UTC)
    lanes = {
        rt.spec.delivery_name(sub.index): (rt, sub.index)
        for rt in router.consumers.values()
        for sub in rt.spec.subscriptions
    }
    open_ = board.open_deliveries(router.types)
    for consumer, envelope, arrived in open_:
        found = lanes.get(consumer)
        if found is None:
            _log.warning(
                "%s: the board has open deliveries for consumer %r, which this flow does "
                "not declare; they stay open",
                board.flow,
                consumer,
            )
            continue
        rt, lane = found
        at = now - max(0.0, (wall - arrived).total_seconds())
        scheduler.arrive(rt, lane, envelope._replace(created_at=at), at)
    for rt in router.consumers.values():
        scheduler.on_timer(rt)  # what is already due flushes now; the rest gets its timer
    if open_:
        _log.info("%s: resumed %d open deliveries from the store", board.flow, len(open_))
    return len(open_)
