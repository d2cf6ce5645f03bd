"""Committing a durable board: what is recorded together, where, and when it is delivered.

Rules:

1. Outside publishes are *group-committed* (:class:`GroupCommit`): the publishes that
   arrive in one turn of the event loop (many concurrent publishers, or one
   ``publish_many``) are routed together, so they share one transaction, and each
   returns only once that transaction has committed and its artifacts were delivered.
   A failed commit raises in each of them and delivers nothing.
2. Every route of a durable flow (a publish group, a handled batch's deliveries done
   with what it published and its dead letters, a consumer's expired join) is
   recorded whole, by :class:`Committer` in a worker thread, in the order they were
   routed. The event loop meanwhile goes on (the database's work releases the GIL:
   the flow's Python and SQLite's B-trees run on two cores). The routes made while
   the thread was busy share its next transaction (one that fails is written again
   one route per transaction, so a route that cannot be written fails alone).
3. A route's artifacts are delivered to their consumers on the event loop once its
   transaction has committed, and in the order the routes were made; never before
   (rule 4 of ``_routing``): after a crash, what was delivered is on the board.
4. A handler run ends once what it produced is committed and delivered (``Flow``'s
   ``run_until_idle`` counts it until then); a route nobody waits for (a join that
   expired) is waited for by ``run_until_idle`` and ``close``, and its failure is
   logged.

Measured on SQLite (``bench/flow_overhead.py``, two durable stages, the development
machine's 2 shared cores): see ``docs/flow-ops.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from freight.flow._artifacts import Envelope
from freight.flow._board import Board, Record

__all__ = ["Committer", "GroupCommit", "log_failure"]

_log = logging.getLogger("freight.flow")


class Committer:
    """Writes a durable flow's routes in a worker thread, in order (module rules 2-4).

    Args:
        board: the board the records go to.
    """

    __slots__ = ("_board", "_queue", "_task")

    def __init__(self, board: Board) -> None:
        self._board = board
        self._queue: list[tuple[Record, Callable[[], None], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def commit(self, record: Record, then: Callable[[], None]) -> asyncio.Future[None]:
        """Write ``record`` after those before it, then call ``then`` (the delivery) on
        the event loop; the future is done after both (with the error if either
        failed: ``then`` is not called when the write failed)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((record, then, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    @property
    def quiet(self) -> bool:
        """Nothing left to write or deliver."""
        return self._task is None and not self._queue

    async def settle(self) -> None:
        """Return once everything routed so far is written and delivered."""
        while self._task is not None:
            await asyncio.wait([self._task])

    async def _drain(self) -> None:
        """Write what is queued, in the worker thread, as many records per trip there
        as have queued meanwhile (sharing a transaction); deliver each in order."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    errors = await asyncio.to_thread(
                        self._write, [record for record, _, _ in batch]
                    )
                except BaseException as exc:  # no thread to write in, or cancelled:
                    for _, _, future in batch:  # nobody waits forever
                        _end(future, exc)
                    raise
                for (_, then, future), error in zip(batch, errors, strict=True):
                    failure = error
                    if failure is None:
                        try:
                            then()
                        except Exception as exc:  # a delivery that raised: its router's caller's
                            failure = exc
                    _end(future, failure)
        finally:
            self._task = None

    def _write(self, records: list[Record]) -> list[Exception | None]:
        """Write ``records`` (the worker thread): those queued together share one
        transaction; if it fails, each is written in its own, so one that cannot be
        written fails alone. Each one's error, or ``None``."""
        if len(records) > 1:
            try:
                self._board.write(*records)
            except Exception as exc:  # none of them was written: one by one below
                _log.debug("a shared transaction of %d routes failed (%s)", len(records), exc)
            else:
                return [None] * len(records)
        errors: list[Exception | None] = []
        for record in records:
            try:
                self._board.write(record)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors


class GroupCommit:
    """Routes the outside publishes that arrive together as one (module rule 1).

    A publish stages its envelopes and waits; the first of a group asks the event loop
    to route on its next turn, so every publisher that runs in this turn joins the
    group. The group's envelopes are routed in the order they were staged (one record,
    written by the :class:`Committer`, then delivered) and every publisher of the group
    wakes once that is done: a publish returns only once its artifacts are durable. A
    failed commit raises in each of them (none of their artifacts was recorded).

    Args:
        route: ``Router.route`` (records, then delivers; returns what to wait for).
    """

    __slots__ = ("_done", "_pending", "_route")

    def __init__(self, route: Callable[[list[Envelope]], asyncio.Future[None] | None]) -> None:
        self._route = route
        self._pending: list[Envelope] = []
        self._done: asyncio.Future[None] | None = None

    async def route(self, envelopes: list[Envelope]) -> None:
        """Route ``envelopes`` with the group of this turn; return once committed."""
        done = self._done
        if done is None:
            loop = asyncio.get_running_loop()
            done = self._done = loop.create_future()
            loop.call_soon(self._commit)
        self._pending.extend(envelopes)
        # shield: a publisher cancelled while it waits must not cancel the others' commit
        await asyncio.shield(done)

    @property
    def quiet(self) -> bool:
        """No group is staged."""
        return self._done is None

    async def settle(self) -> None:
        """Return once the group staged so far (if any) has been handed to the router
        (``run_until_idle`` and ``close`` then wait for the committer)."""
        done = self._done
        if done is not None:
            await asyncio.wait([done])

    def _commit(self) -> None:
        envelopes, self._pending = self._pending, []
        done, self._done = self._done, None
        assert done is not None
        try:
            pending = self._route(envelopes)
        except Exception as exc:
            _fail(done, exc)
            return
        if pending is None:
            done.set_result(None)
        else:
            pending.add_done_callback(lambda committed: _pass_on(committed, done))


def _pass_on(committed: asyncio.Future[None], done: asyncio.Future[None]) -> None:
    """Settle ``done`` as ``committed`` was."""
    if committed.cancelled():
        done.cancel()
        return
    error = committed.exception()
    if error is None:
        done.set_result(None)
    else:
        _fail(done, error)


def _end(future: asyncio.Future[None], error: BaseException | None) -> None:
    """Settle ``future`` (unless its waiter gave up): done, failed, or cancelled."""
    if future.done():
        return
    if error is None:
        future.set_result(None)
    elif isinstance(error, asyncio.CancelledError):
        future.cancel()
    else:
        _fail(future, error)


def _fail(done: asyncio.Future[None], error: BaseException) -> None:
    done.set_exception(error)
    done.exception()  # retrieved: each waiting publisher raises it, if any is left


def log_failure(pending: asyncio.Future[None] | None, flow: str, what: str) -> None:
    """Log the failure of a route nobody waits for (module rule 4)."""
    if pending is None:
        return

    def check(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            _log.error("%s: could not record %s: %s", flow, what, error, exc_info=error)

    pending.add_done_callback(check)
