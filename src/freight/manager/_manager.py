"""``BatchManager``: submit requests now, come back later for per-request results.

The shape users know from nagents' ``BatchManager`` and the OpenAI / Anthropic batch
APIs: ``submit`` → a :class:`~freight.Batch` with an id → ``get_status`` / ``get`` →
``get_results`` (one result or error per request) → ``cancel``; everything is kept in
the store, so nothing is lost on a restart. ``async with BatchManager(...)`` runs a
worker in this process; ``freight worker --app module:manager`` runs one as its own
process, any number of them against a PostgreSQL store.

Every method is a coroutine with a ``*_sync`` twin (``submit_sync``, ``get_sync``, …)
for code without an event loop; the twins share one synchronous core (the store is
synchronous), which the coroutines run in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freight._core._clock import Clock
from freight._core._retry import Retry
from freight._core._spec import BatchSpec
from freight._core._stats import BatchEvent
from freight._core._time import to_seconds
from freight._drivers._clocks import ThreadClock
from freight._drivers._engine import fan_out
from freight._drivers._options import check_rate_limit, check_retry
from freight._errors import ConfigError, ConfigTypeError, InvalidBatch, UnknownEndpoint
from freight._ratelimit import RateLimiter
from freight.manager._models import (
    Batch,
    BatchChange,
    BatchRequest,
    BatchStatus,
    RequestCounts,
    Result,
)
from freight.manager._store import ManagerStore, batch_id_at, is_text
from freight.manager._submit import (
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    check_metadata,
    completion_seconds,
    encode_requests,
)
from freight.manager._worker import Endpoint, Worker
from freight.store import DEFAULT_PATH, BoardStore, SqliteStore, open_store

__all__ = ["BatchManager", "Results"]

_PAGE = 1000  # results read per query when streaming them


class Results:
    """The results of a batch, in submission order: ``await`` it for a list, or
    ``async for`` over it to stream a large batch a page at a time (bounded memory).

    Only requests that have their final result are included.
    """

    def __init__(self, manager: BatchManager, batch_id: str) -> None:
        self._manager = manager
        self._batch_id = batch_id

    def __await__(self) -> Generator[Any, None, builtins.list[Result]]:
        return asyncio.to_thread(self._manager.get_results_sync, self._batch_id).__await__()

    async def __aiter__(self) -> AsyncIterator[Result]:
        manager, after = self._manager, -1
        await asyncio.to_thread(manager._store().get, self._batch_id)  # UnknownBatch
        while True:
            page = await asyncio.to_thread(
                manager._store().results, self._batch_id, after=after, limit=_PAGE
            )
            for _, result in page:
                yield result
            if len(page) < _PAGE:
                return
            after = page[-1][0]


class BatchManager:
    """Managed batches over a persistent store, with workers that survive restarts.

    Args:
        store: where batches live: a store object (``SqliteStore``, ``PostgresStore``),
            a URL (``postgresql://…``, ``sqlite:///path``) or a path; default: SQLite
            under ``.freight/``.
        workers: how many chunks this process's worker runs at once (``async with`` or
            :meth:`run`).
        clock: where times come from (timestamps, leases, expiry, retry backoffs); tests
            pass :class:`freight.testing.FakeClock`.
        lease: seconds a worker holds a claimed chunk without a heartbeat before another
            worker may take it back.
        poll_interval: seconds an idle worker waits before looking for work again (a
            submit in this process wakes it at once).
        max_requests: the most requests one batch may hold.
        max_body_bytes: the largest request body (UTF-8 JSON bytes).
        subscribers: callables receiving a :class:`~freight.BatchEvent` after each
            chunk this process's worker ran (``batcher``: the endpoint), such as
            :class:`freight.metrics.PrometheusSubscriber`.
        on_change: callables receiving a :class:`~freight.manager.BatchChange` when a
            batch is submitted here or changes status here (a ``PrometheusSubscriber``
            takes these too). Both are called from the manager's threads.

    Example::

        manager = BatchManager()
        manager.register("/v1/embeddings", embed, spec=BatchSpec(size=64))
        async with manager:
            batch = await manager.submit(requests, endpoint="/v1/embeddings")
            batch = await manager.wait(batch.id)
            for result in await manager.get_results(batch.id):
                print(result.id, result.response or result.error)
    """

    def __init__(
        self,
        store: BoardStore | str | Path | None = None,
        *,
        workers: int = 1,
        clock: Clock | None = None,
        lease: float | timedelta = 30.0,
        poll_interval: float | timedelta = 0.2,
        max_requests: int = MAX_REQUESTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        subscribers: Iterable[Callable[[BatchEvent], object]] = (),
        on_change: Iterable[Callable[[BatchChange], object]] = (),
    ) -> None:
        for name, value in (("workers", workers), ("max_requests", max_requests),
                            ("max_body_bytes", max_body_bytes)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigTypeError(f"{name} must be an int >= 1, got {value!r}")
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value!r}")
        self.workers = workers
        self.lease = to_seconds(lease, "lease", allow_zero=False)
        self.poll_interval = to_seconds(poll_interval, "poll_interval", allow_zero=False)
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.clock: Clock = clock if clock is not None else ThreadClock("freight-manager")
        self._epoch = time.time() - self.clock.now()
        self._spec = store
        self._owned: BoardStore | None = None
        self._opening = threading.Lock()
        self._last_micros = 0
        self._ms: ManagerStore | None = None
        if store is not None and not isinstance(store, str | Path):
            if not isinstance(store, BoardStore):
                raise ConfigTypeError(
                    f"store must be a freight store (SqliteStore, PostgresStore), a URL or "
                    f"a path, got {store!r}"
                )
            self._ms = ManagerStore(store)
        self.subscribers = tuple(subscribers)
        self.on_change = tuple(on_change)
        for subscriber in (*self.subscribers, *self.on_change):
            if not callable(subscriber):
                raise ConfigTypeError(
                    f"a subscriber must be callable (one argument, the record), got {subscriber!r}"
                )
        self.endpoints: dict[str, Endpoint] = {}
        self._cancelled: set[str] = set()
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"BatchManager(store={self._spec!r}, endpoints={sorted(self.endpoints)})"

    # -- setup ----------------------------------------------------------------------

    def _store(self) -> ManagerStore:
        """The store's manager tables, opening the store first when the manager owns it."""
        ms = self._ms
        if ms is not None:
            return ms
        with self._opening:  # the loop's threads may ask at once: open it once
            if self._ms is None:
                spec = self._spec
                if spec is None:
                    store: Any = SqliteStore(DEFAULT_PATH)
                elif isinstance(spec, Path):
                    store = SqliteStore(spec)
                else:
                    store = open_store(str(spec))
                self._owned = store
                self._ms = ManagerStore(store)
            return self._ms

    def _next_micros(self, now: datetime) -> int:
        """``now`` in µs, past every id this manager gave: its batches keep their order
        even when the clock stands still (a ``FakeClock``) or two submits share a µs."""
        with self._opening:
            self._last_micros = max(int(now.timestamp() * 1e6), self._last_micros + 1)
            return self._last_micros

    def _now(self) -> datetime:
        """The current time as stored (UTC), on the manager's clock."""
        return datetime.fromtimestamp(self._epoch + self.clock.now(), UTC)

    def register(
        self,
        endpoint: str,
        handler: Callable[[builtins.list[Any]], Any],
        *,
        spec: BatchSpec | None = None,
        retry: Retry | None = None,
        rate_limit: RateLimiter | float | None = None,
        max_concurrent_batches: int | None = None,
    ) -> None:
        """Serve ``endpoint`` (a name such as ``"/v1/embeddings"``) with ``handler``.

        The handler follows freight's handler contract: a list of request bodies in, a
        list of the same length out (a JSON response, or an ``Exception`` instance for
        a request that failed alone); raising fails the call. Sync or ``async def``.

        Args:
            spec: how many requests make one handler call (``spec.size``, default 100),
                taken across the endpoint's batches; with a ``timeout``, fewer are sent
                only once the oldest waiting request was submitted that long ago. A
                spec with ``max_bytes`` or ``max_cost`` is refused (not applied here).
            retry: the :class:`~freight.Retry` policy of each call (``None``: no retry).
            rate_limit: a :class:`~freight.RateLimiter`, or handler calls per second.
            max_concurrent_batches: the most batches of this endpoint processed at once
                (the others wait ``pending``).
        """
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError(f"endpoint must be a non-empty str, got {endpoint!r}")
        if not callable(handler):
            raise ConfigTypeError(f"handler must be callable, got {handler!r}")
        if spec is not None and not isinstance(spec, BatchSpec):
            raise ConfigTypeError(f"spec must be a freight.BatchSpec, got {spec!r}")
        if spec is not None and (spec.max_bytes is not None or spec.max_cost is not None):
            raise ConfigError(
                f"endpoint {endpoint!r}: a managed batch's handler calls are sized by "
                f"spec.size (and held by spec.timeout) only, so {spec!r} would be sent "
                "over its max_bytes / max_cost: give a size that keeps calls within them"
            )
        most = max_concurrent_batches
        if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
            raise ConfigError(f"max_concurrent_batches must be an int >= 1 or None, got {most!r}")
        self.endpoints[endpoint] = Endpoint(
            endpoint, handler, spec, check_retry(retry), check_rate_limit(rate_limit), most
        )

    # -- submit ---------------------------------------------------------------------

    def submit_sync(
        self,
        requests: Iterable[BatchRequest | Mapping[str, Any]],
        *,
        endpoint: str,
        metadata: Mapping[str, Any] | None = None,
        completion_window: str | float | timedelta = "24h",
    ) -> Batch:
        """:meth:`submit` without an event loop."""
        if endpoint not in self.endpoints:
            known = ", ".join(map(repr, sorted(self.endpoints))) or "none yet"
            raise UnknownEndpoint(
                f"no handler serves endpoint {endpoint!r} (registered: {known}); call "
                f"manager.register({endpoint!r}, handler) first"
            )
        window = completion_seconds(completion_window)
        meta = check_metadata(metadata)
        if isinstance(requests, str | bytes | Mapping) or not isinstance(requests, Iterable):
            raise InvalidBatch(
                f"requests must be a list of BatchRequest or dicts, got {type(requests).__name__}"
            )
        now = self._now()
        batch = Batch(
            id=batch_id_at(self._next_micros(now), secrets.token_hex(6)),
            endpoint=endpoint,
            status=BatchStatus.PENDING,
            request_counts=RequestCounts(total=0),
            created_at=now,
            expires_at=now + timedelta(seconds=window),
            completion_window=str(completion_window),
            metadata=meta,
        )
        # Checked as they are stored, in one transaction: a bad request rolls it back.
        total = self._store().create(
            batch,
            encode_requests(
                requests, max_requests=self.max_requests, max_body_bytes=self.max_body_bytes
            ),
        )
        # as created: a worker may have started it already
        batch = dataclasses.replace(batch, request_counts=RequestCounts(total=total))
        self._tell(BatchChange.of(batch))
        return batch

    def _tell(self, change: BatchChange) -> None:
        fan_out(self.on_change, change, f"batch manager batch {change.batch_id}:")

    async def submit(
        self,
        requests: Iterable[BatchRequest | Mapping[str, Any]],
        *,
        endpoint: str,
        metadata: Mapping[str, Any] | None = None,
        completion_window: str | float | timedelta = "24h",
    ) -> Batch:
        """Store a batch of requests for ``endpoint``; return it (``pending``).

        A request is a :class:`~freight.BatchRequest` or a dict with ``custom_id`` (or
        ``id``) and ``body`` (JSON). The batch is checked whole before anything is
        stored: :class:`~freight.InvalidBatch` for an empty batch, a duplicate id, a
        body that is not JSON or over ``max_body_bytes``, more than ``max_requests``;
        :class:`~freight.UnknownEndpoint` for an endpoint no handler serves.
        ``completion_window``: after it, unfinished requests expire (``"24h"``).
        """
        batch = await asyncio.to_thread(
            self.submit_sync, requests, endpoint=endpoint, metadata=metadata,
            completion_window=completion_window,
        )  # fmt: skip
        if self._worker is not None:
            self._worker.wake.set()
        return batch

    # -- reading ----------------------------------------------------------------------

    def get_sync(self, batch_id: str) -> Batch:
        """:meth:`get` without an event loop."""
        batch = self._store().get(batch_id)
        if batch.status in (BatchStatus.PENDING, BatchStatus.PROCESSING) and (
            batch.expires_at <= self._now()
        ):
            expired = self._store().expire_due(self._now(), batch_id)
            batch = self._store().get(batch_id)
            if expired:
                self._tell(BatchChange.of(batch))
        return batch

    async def get(self, batch_id: str) -> Batch:
        """The batch: status, request counts, timestamps of each transition, metadata.

        :class:`~freight.UnknownBatch` if the store has no batch ``batch_id``. A batch
        found past its completion window is expired first.
        """
        return await asyncio.to_thread(self.get_sync, batch_id)

    def get_status_sync(self, batch_id: str) -> BatchStatus:
        """:meth:`get_status` without an event loop."""
        return self.get_sync(batch_id).status

    async def get_status(self, batch_id: str) -> BatchStatus:
        """The batch's :class:`~freight.BatchStatus`."""
        return (await self.get(batch_id)).status

    def get_results_sync(self, batch_id: str) -> builtins.list[Result]:
        """:meth:`get_results` as a list, without an event loop."""
        store = self._store()
        store.get(batch_id)  # UnknownBatch
        out: builtins.list[Result] = []
        after = -1
        while True:
            page = store.results(batch_id, after=after, limit=_PAGE)
            out.extend(result for _, result in page)
            if len(page) < _PAGE:
                return out
            after = page[-1][0]

    def get_results(self, batch_id: str) -> Results:
        """The batch's results in submission order, each with ``id`` and ``response`` or
        ``error`` (type, message, attempts): ``await`` it for a list, ``async for`` to
        stream a large batch."""
        return Results(self, batch_id)

    def export_results_sync(self, batch_id: str, path: str | Path) -> int:
        """:meth:`export_results` without an event loop."""
        store = self._store()
        store.get(batch_id)
        written, after = 0, -1
        with Path(path).open("w", encoding="utf-8") as out:
            while True:
                page = store.results(batch_id, after=after, limit=_PAGE)
                for _, result in page:
                    out.write(json.dumps(result.to_json(batch_id)) + "\n")
                written += len(page)
                if len(page) < _PAGE:
                    return written
                after = page[-1][0]

    async def export_results(self, batch_id: str, path: str | Path) -> int:
        """Write the batch's results to ``path`` as JSONL, one OpenAI-format output line
        per request (``{"id", "custom_id", "response": {"status_code", "body"},
        "error"}``), streamed; returns the number of lines."""
        return await asyncio.to_thread(self.export_results_sync, batch_id, path)

    def list_sync(
        self, after: str | None = None, limit: int = 20, status: BatchStatus | str | None = None
    ) -> builtins.list[Batch]:
        """:meth:`list` without an event loop."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"limit must be an int >= 1, got {limit!r}")
        if after is not None and not is_text(after):
            raise ConfigError(f"after must be a batch id (from a previous page), got {after!r}")
        wanted = None
        if status is not None:
            try:
                wanted = BatchStatus(status)
            except ValueError:
                raise ConfigError(
                    f"status must be one of {', '.join(BatchStatus)}, got {status!r}"
                ) from None
        return self._store().list_batches(after=after, limit=limit, status=wanted)

    async def list(
        self, after: str | None = None, limit: int = 20, status: BatchStatus | str | None = None
    ) -> builtins.list[Batch]:
        """Batches, newest first: up to ``limit``, those after the batch id ``after``
        (the last one of the previous page), only those with ``status`` if given."""
        return await asyncio.to_thread(self.list_sync, after, limit, status)

    # -- cancel and wait ----------------------------------------------------------------

    def cancel_sync(self, batch_id: str) -> Batch:
        """:meth:`cancel` without an event loop."""
        self._cancelled.add(batch_id)
        before = self._store().get(batch_id).status
        batch = self._store().cancel(batch_id, self._now())
        if batch.status is not before:
            self._tell(BatchChange.of(batch))
        return batch

    async def cancel(self, batch_id: str) -> Batch:
        """Cancel a batch: no request of it starts after this returns, the ones in flight
        finish, the rest are marked cancelled; returns it (``cancelling`` until the ones
        in flight finish, then ``cancelled``). Cancelling an ended batch is an
        :class:`~freight.IllegalTransition`."""
        return await asyncio.to_thread(self.cancel_sync, batch_id)

    def wait_sync(self, batch_id: str, timeout: float | timedelta | None = None) -> Batch:
        """:meth:`wait` without an event loop (it polls the store)."""
        deadline = None if timeout is None else self.clock.now() + to_seconds(timeout, "timeout")
        while True:
            batch = self.get_sync(batch_id)
            if batch.status.terminal:
                return batch
            if deadline is not None and self.clock.now() >= deadline:
                raise TimeoutError(_timed_out(batch, timeout))
            time.sleep(min(self.poll_interval, 0.05))

    async def wait(self, batch_id: str, timeout: float | timedelta | None = None) -> Batch:  # noqa: ASYNC109
        """Wait until the batch has ended (completed, failed, cancelled, expired); return
        it. ``timeout`` (seconds, on the manager's clock): then ``TimeoutError``."""
        deadline = None if timeout is None else self.clock.now() + to_seconds(timeout, "timeout")
        while True:
            batch = await self.get(batch_id)
            if batch.status.terminal:
                return batch
            if deadline is not None and self.clock.now() >= deadline:
                raise TimeoutError(_timed_out(batch, timeout))
            await asyncio.sleep(min(self.poll_interval, 0.05))

    # -- the worker ---------------------------------------------------------------------

    def _new_worker(self) -> Worker:
        return Worker(
            self._store(), self.endpoints, clock=self.clock, wall=self._now,
            concurrency=self.workers, lease=self.lease, poll_interval=self.poll_interval,
            cancelled=self._cancelled, subscribers=self.subscribers, on_change=self.on_change,
        )  # fmt: skip

    async def run(self, *, burst: bool = False) -> None:
        """Run a worker in this task until :meth:`stop` (SIGTERM in ``freight worker``):
        claim, run and write the registered endpoints' requests, ``workers`` chunks at
        a time. ``burst``: return once nothing is left to claim (tests, cron)."""
        if self._worker is not None:
            raise RuntimeError("this BatchManager runs a worker already")
        self._worker = self._new_worker()
        try:
            await self._worker.run(burst=burst)
        finally:
            self._worker = None

    def run_sync(self, *, burst: bool = False) -> None:
        """:meth:`run` in a new event loop, for a process that does nothing else
        (``freight worker``): SIGTERM (in the main thread) drains it, as :meth:`stop`."""
        asyncio.run(self._run_draining_on_sigterm(burst))

    async def _run_draining_on_sigterm(self, burst: bool) -> None:
        loop = asyncio.get_running_loop()
        handled = threading.current_thread() is threading.main_thread()
        if handled:
            loop.add_signal_handler(signal.SIGTERM, self.stop)
        try:
            await self.run(burst=burst)
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    def stop(self) -> None:
        """Ask the running worker to drain: it claims nothing more, and :meth:`run`
        returns once the chunks in flight are written. Call it on the worker's loop."""
        if self._worker is not None:
            self._worker.stop()

    @property
    def processed(self) -> int:
        """Results the running worker has written so far (0 when none runs)."""
        return 0 if self._worker is None else self._worker.processed

    async def __aenter__(self) -> BatchManager:
        await asyncio.to_thread(self._store)
        self._task = asyncio.create_task(self.run(), name="freight-batch-manager")
        await asyncio.sleep(0)  # let the worker start
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        if self._task is not None:
            task, self._task = self._task, None
            await task
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the store if the manager opened it (it reopens on next use)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            self._ms = None
            owned.close()  # type: ignore[attr-defined]


def _timed_out(batch: Batch, timeout: object) -> str:
    counts = batch.request_counts
    return (
        f"batch {batch.id} is still {batch.status} after {timeout} s "
        f"({counts.finished} of {counts.total} requests finished); wait again, or cancel it"
    )
