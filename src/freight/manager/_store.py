"""Managed batches in the store's database: batches, requests (with results), claims.

The tables are migration 4 of :mod:`freight.store` (``manager_batches``,
``manager_requests``, ``manager_claims``); they live in whatever database the store
holds (SQLite, PostgreSQL) and are reached through its
:class:`~freight.store.BoardStore` port. Statements are templates rendered once per
dialect; values are always bound parameters.

How work is shared and never lost:

- A worker *claims* up to ``limit`` queued requests of one endpoint (across batches,
  oldest batch first) in one transaction: they become ``claimed`` under a fresh claim
  token, and one row of ``manager_claims`` holds the lease (owner, ``lease_until``).
  On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``, so concurrent workers
  take disjoint chunks without waiting for each other; SQLite runs one writer at a time.
- A worker writes a chunk's results in one transaction: it locks its claim row (gone:
  the lease was lost and another worker redoes the chunk, so these results are
  dropped), reads which of its requests are still ``claimed`` (an expired batch took
  the others), writes those (``executemany``), adds them to their batches' counts and
  ends each batch that has every result. A result is written once; a redone request
  overwrites its row, it never adds one.
- A claim whose lease lapsed (its worker died or hung) is *reclaimed*: its requests go
  back to ``queued`` (or ``cancelled``, for a batch being cancelled).

Every status change goes through :func:`~freight.manager._lifecycle.check_transition`
and stamps the column it names.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from freight._errors import StoreError, UnknownBatch
from freight.manager._lifecycle import check_transition
from freight.manager._models import (
    Batch,
    BatchStatus,
    RequestCounts,
    RequestState,
    Result,
    ResultError,
)
from freight.store import BoardStore
from freight.store._dialect import Dialect, Row, Transaction

__all__ = [
    "Claimed",
    "ManagerStore",
    "Outcome",
    "batch_id_at",
    "is_text",
    "parse_stamp",
    "stamp",
    "submitted_at",
]

_LIVE = ("pending", "processing")
_SQLITE_NEEDED = (3, 35)  # UPDATE ... FROM (3.33) and RETURNING (3.35)


def stamp(when: datetime) -> str:
    """A stored timestamp: fixed-width ISO 8601 in UTC, so text order is time order."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_stamp(text: str | None) -> datetime | None:
    """A stored timestamp read back (timezone-aware UTC), ``None`` for none."""
    return None if text is None else datetime.fromisoformat(text)


class _Statements(NamedTuple):
    """The manager's statements; the defaults are templates (``{p}``: a bound parameter)."""

    insert_batch: str = (
        "INSERT INTO manager_batches (id, endpoint, status, metadata, completion_window,"
        " total, created_at, expires_at) VALUES ({p}, {p}, 'pending', {p}, {p}, {p}, {p}, {p})"
    )
    insert_request: str = (
        "INSERT INTO manager_requests (batch_id, idx, custom_id, endpoint, body, state)"
        " VALUES ({p}, {p}, {p}, {p}, {p}, 'queued')"
    )
    set_total: str = "UPDATE manager_batches SET total = {p} WHERE id = {p}"
    batch: str = "SELECT * FROM manager_batches WHERE id = {p}"
    lock_batch: str = "SELECT * FROM manager_batches WHERE id = {p}{lock}"
    # The rows are picked in a CTE, evaluated once: as an ``IN (subquery)`` PostgreSQL
    # may run the LIMIT ... SKIP LOCKED subquery again and claim more than the limit.
    claim: str = (
        "WITH picked AS (SELECT batch_id, idx FROM manager_requests"
        " WHERE endpoint = {p} AND state = 'queued'{batches}"
        " ORDER BY batch_id, idx LIMIT {p}{skip_locked})"
        " UPDATE manager_requests SET state = 'claimed', claim = {p} FROM picked"
        " WHERE manager_requests.batch_id = picked.batch_id"
        " AND manager_requests.idx = picked.idx"
        " RETURNING manager_requests.batch_id, manager_requests.idx,"
        " manager_requests.custom_id, manager_requests.body"
    )
    insert_claim: str = (
        "INSERT INTO manager_claims (token, owner, host, pid, endpoint, lease_until)"
        " VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    )
    live_batches: str = (
        "SELECT id, status FROM manager_batches WHERE endpoint = {p}"
        " AND status IN ('pending', 'processing') ORDER BY id"
    )
    lock_claim: str = "SELECT token FROM manager_claims WHERE token = {p}{lock}"
    lock_open: str = (
        "SELECT idx FROM manager_requests WHERE batch_id = {p} AND state IN ({states})"
        " ORDER BY idx{lock}"
    )
    held: str = (
        "SELECT batch_id, idx FROM manager_requests WHERE claim = {p} AND state = 'claimed'{lock}"
    )
    write_result: str = (
        "UPDATE manager_requests SET state = {p}, response = {p}, error_type = {p},"
        " error_message = {p}, attempts = {p}, worker = {p}, finished_at = {p}, claim = NULL"
        " WHERE batch_id = {p} AND idx = {p}"
    )
    drop_claim: str = "DELETE FROM manager_claims WHERE token = {p}"
    add_counts: str = (
        "UPDATE manager_batches SET completed = completed + {p}, failed = failed + {p},"
        " cancelled = cancelled + {p}, expired = expired + {p} WHERE id = {p}"
        " RETURNING status, total, completed, failed, cancelled, expired"
    )
    heartbeat: str = "UPDATE manager_claims SET lease_until = {p} WHERE owner = {p}"
    lapsed: str = (
        "SELECT token FROM manager_claims WHERE lease_until < {p}"
        " ORDER BY lease_until LIMIT 100{skip_locked}"
    )
    claims_on_host: str = "SELECT DISTINCT owner, pid FROM manager_claims WHERE host = {p}"
    claims_of: str = "SELECT token FROM manager_claims WHERE owner = {p}{skip_locked}"
    requeue: str = (
        "UPDATE manager_requests SET state = 'queued', claim = NULL"
        " WHERE claim = {p} AND state = 'claimed' RETURNING batch_id"
    )
    end_queued: str = (
        "UPDATE manager_requests SET state = {p}, finished_at = {p}, claim = NULL"
        " WHERE batch_id = {p} AND state IN ({states})"
    )
    due: str = (
        "SELECT id FROM manager_batches WHERE status IN ('pending', 'processing')"
        " AND expires_at <= {p} ORDER BY expires_at LIMIT 100"
    )
    results: str = (
        "SELECT idx, custom_id, state, response, error_type, error_message, attempts"
        " FROM manager_requests WHERE batch_id = {p} AND idx > {p}"
        " AND state NOT IN ('queued', 'claimed') ORDER BY idx LIMIT {p}"
    )
    by_worker: str = (
        "SELECT worker, count(*) AS n FROM manager_requests WHERE batch_id = {p}"
        " AND worker IS NOT NULL GROUP BY worker"
    )


@functools.cache
def _statements(dialect: Dialect) -> _Statements:
    keep = {"{batches}": "{{batches}}", "{states}": "{{states}}"}  # filled in per call

    def render(template: str) -> str:
        for field, escaped in keep.items():
            template = template.replace(field, escaped)
        return dialect.render(template)

    return _Statements._make(render(template) for template in _Statements())


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed request: where it is stored and what to run."""

    batch_id: str
    idx: int
    custom_id: str
    body: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request's final result, ready to store (``response`` is JSON text)."""

    batch_id: str
    idx: int
    state: RequestState
    response: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0


class ManagerStore:
    """The manager's statements over a store (a :class:`~freight.store.BoardStore`).

    Every method is one transaction (or one query); they are synchronous, like the
    store: the manager runs them in a worker thread.
    """

    def __init__(self, store: BoardStore) -> None:
        if store.dialect.name == "sqlite" and sqlite3.sqlite_version_info < _SQLITE_NEEDED:
            raise StoreError(
                f"managed batches need SQLite {'.'.join(map(str, _SQLITE_NEEDED))} or newer "
                f"(UPDATE ... FROM ... RETURNING); this Python has SQLite "
                f"{sqlite3.sqlite_version}: use a newer Python build, or a PostgreSQL store"
            )
        self.store = store
        self.dialect = store.dialect
        self.sql = _statements(store.dialect)

    # -- creating and reading -----------------------------------------------------

    def create(self, batch: Batch, rows: Iterable[tuple[str, str]], *, chunk: int = 5000) -> int:
        """Store a new batch (``pending``) and its requests, ``(custom_id, body JSON)``;
        returns how many. ``rows`` is read once, ``chunk`` rows at a time, inside the
        transaction: an error it raises (a bad request found late) rolls everything
        back, so a refused batch leaves nothing, and memory stays bounded."""
        meta = json.dumps(dict(batch.metadata))
        with self.store.transaction() as tx:
            tx.execute(
                self.sql.insert_batch,
                (batch.id, batch.endpoint, meta, batch.completion_window, 0,
                 stamp(batch.created_at), stamp(batch.expires_at)),
            )  # fmt: skip
            buffer: list[tuple[Any, ...]] = []
            count = 0
            for custom_id, body in rows:
                buffer.append((batch.id, count, custom_id, batch.endpoint, body))
                count += 1
                if len(buffer) >= chunk:
                    tx.executemany(self.sql.insert_request, buffer)
                    buffer.clear()
            tx.executemany(self.sql.insert_request, buffer)
            tx.execute(self.sql.set_total, (count, batch.id))
        return count

    def get(self, batch_id: str) -> Batch:
        """The batch with this id; :class:`~freight.UnknownBatch` if there is none."""
        if not is_text(batch_id):  # no batch has it: never sent (the driver refuses it)
            raise _unknown(batch_id)
        rows = self.store.query(self.sql.batch, (batch_id,))
        if not rows:
            raise _unknown(batch_id)
        return to_batch(rows[0])

    def list_batches(
        self, *, after: str | None, limit: int, status: BatchStatus | None
    ) -> list[Batch]:
        """Batches, newest first; ``after``: a batch id (the list goes on past it)."""
        p = self.dialect.placeholder
        where, params = [], []
        if after is not None:
            where.append(f"id < {p}")
            params.append(after)
        if status is not None:
            where.append(f"status = {p}")
            params.append(str(status))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT * FROM manager_batches{clause} ORDER BY id DESC LIMIT {p}"  # noqa: S608 (fixed clauses; values bound)
        return [to_batch(row) for row in self.store.query(sql, (*params, limit))]

    def results(self, batch_id: str, *, after: int, limit: int) -> list[tuple[int, Result]]:
        """Up to ``limit`` final results after position ``after``, in submission order."""
        rows = self.store.query(self.sql.results, (batch_id, after, limit))
        return [(int(row["idx"]), to_result(row)) for row in rows]

    def workers(self, batch_id: str) -> dict[str, int]:
        """How many results of the batch each worker wrote (who did the work)."""
        rows = self.store.query(self.sql.by_worker, (batch_id,))
        return {str(row["worker"]): int(row["n"]) for row in rows}

    # -- status changes -----------------------------------------------------------

    def _move(
        self, tx: Transaction, batch_id: str, current: str, to: BatchStatus, now: str
    ) -> bool:
        """Move a batch along its lifecycle, if it still has status ``current``."""
        column = check_transition(current, to, batch=f"batch {batch_id}")
        sql = self.dialect.render(
            f"UPDATE manager_batches SET status = {{p}}, {column} = {{p}}"  # noqa: S608 (a column of STAMPS)
            " WHERE id = {p} AND status = {p}"
        )
        return tx.execute(sql, (str(to), now, batch_id, current)) == 1

    def _end_requests(
        self, tx: Transaction, batch_id: str, to: RequestState, states: Sequence[str], now: str
    ) -> int:
        """Give every request of the batch in ``states`` its final state ``to``."""
        sql = self.sql.end_queued.format(states=self.dialect.placeholders(len(states)))
        return tx.execute(sql, (str(to), now, batch_id, *states))

    def _count(self, tx: Transaction, batch_id: str, counts: Counter[str], now: str) -> bool:
        """Add final results to a batch's counts; end the batch when all are in (True
        when this ended it)."""
        c = counts
        rows = tx.query(
            self.sql.add_counts,
            (c["completed"], c["failed"], c["cancelled"], c["expired"], batch_id),
        )
        if not rows:
            return False
        row = rows[0]
        done = sum(int(row[k]) for k in ("completed", "failed", "cancelled", "expired"))
        if done < int(row["total"]):
            return False
        status = str(row["status"])
        if status == BatchStatus.CANCELLING:
            return self._move(tx, batch_id, status, BatchStatus.CANCELLED, now)
        if status in _LIVE:
            if status == BatchStatus.PENDING:
                self._move(tx, batch_id, status, BatchStatus.PROCESSING, now)
                status = BatchStatus.PROCESSING
            return self._move(tx, batch_id, status, BatchStatus.COMPLETED, now)
        return False

    def cancel(self, batch_id: str, now: datetime) -> Batch:
        """Cancel a batch: queued requests end ``cancelled`` at once; the batch is
        ``cancelling`` while claimed ones finish, then ``cancelled``. A batch cancelled
        (or being cancelled) already is returned as it is."""
        at = stamp(now)
        with self.store.transaction() as tx:
            self._lock_open(tx, batch_id, ("queued",))
            rows = tx.query(self.sql.lock_batch, (batch_id,))
            if not rows:
                raise _unknown(batch_id)
            status = str(rows[0]["status"])
            if status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
                return to_batch(rows[0])
            self._move(tx, batch_id, status, BatchStatus.CANCELLING, at)
            self._finish_cancelling(tx, batch_id, at)
        return self.get(batch_id)

    def _lock_open(self, tx: Transaction, batch_id: str, states: Sequence[str]) -> None:
        """Lock a batch's requests in ``states`` before its row (PostgreSQL).

        Claims and writes lock requests first, then their batches' rows; a change of a
        whole batch (cancel, expiry) takes its locks in the same order, so two of them
        never wait for each other (a deadlock, which PostgreSQL would break by failing
        one). SQLite runs one writer at a time: nothing to lock.
        """
        if self.dialect.lock:
            sql = self.sql.lock_open.format(states=self.dialect.placeholders(len(states)))
            tx.query(sql, (batch_id, *states))

    def _finish_cancelling(self, tx: Transaction, batch_id: str, at: str) -> None:
        n = self._end_requests(tx, batch_id, RequestState.CANCELLED, ("queued",), at)
        self._count(tx, batch_id, Counter(cancelled=n), at)

    def expire_due(self, now: datetime, batch_id: str | None = None) -> list[str]:
        """Expire live batches whose completion window has ended (``expires_at <=
        now``, as ``BatchManager.get`` checks it; only ``batch_id``, if given):
        unfinished requests end ``expired``, finished results are kept. Returns the
        ids expired."""
        at = stamp(now)
        if batch_id is None:
            ids = [str(row["id"]) for row in self.store.query(self.sql.due, (at,))]
        else:
            ids = [batch_id]
        expired = []
        for one in ids:
            with self.store.transaction() as tx:
                self._lock_open(tx, one, ("queued", "claimed"))
                rows = tx.query(self.sql.lock_batch, (one,))
                if not rows:
                    continue
                row = rows[0]
                if str(row["status"]) not in _LIVE or str(row["expires_at"]) > at:
                    continue
                self._move(tx, one, str(row["status"]), BatchStatus.EXPIRED, at)
                n = self._end_requests(tx, one, RequestState.EXPIRED, ("queued", "claimed"), at)
                tx.execute(
                    self.dialect.render(
                        "UPDATE manager_batches SET expired = expired + {p} WHERE id = {p}"
                    ),
                    (n, one),
                )
                expired.append(one)
        return expired

    # -- the workers' side --------------------------------------------------------

    def claim(
        self,
        endpoint: str,
        limit: int,
        *,
        token: str,
        owner: tuple[str, str, int],
        lease_until: float,
        now: datetime,
        max_batches: int | None = None,
        due_before: float | None = None,
    ) -> list[Claimed]:
        """Claim up to ``limit`` queued requests of ``endpoint`` under ``token``.

        ``due_before`` (epoch seconds, the endpoint's ``BatchSpec.timeout`` ago): fewer
        than ``limit`` requests are claimed only once the oldest of them was submitted
        before it; until then they stay queued for a fuller handler call.
        """
        at = stamp(now)
        with self.store.transaction() as tx:
            params: list[Any] = [endpoint]
            batches = ""
            if max_batches is not None:
                allowed = self._allowed(tx, endpoint, max_batches)
                if not allowed:
                    return []
                batches = f" AND batch_id IN ({self.dialect.placeholders(len(allowed))})"
                params.extend(allowed)
            sql = self.sql.claim.format(batches=batches)
            rows = tx.query(sql, (*params, limit, token))
            if not rows:
                return []
            if due_before is not None and len(rows) < limit:
                oldest = min(str(r["batch_id"]) for r in rows)
                if submitted_at(oldest) > due_before:  # not due: leave them queued
                    tx.execute(self.sql.requeue, (token,))
                    return []
            name, host, pid = owner
            tx.execute(self.sql.insert_claim, (token, name, host, pid, endpoint, lease_until))
            claimed = sorted(
                (Claimed(str(r["batch_id"]), int(r["idx"]), str(r["custom_id"]), str(r["body"]))
                 for r in rows),
                key=lambda c: (c.batch_id, c.idx),
            )  # fmt: skip
            self._start(tx, {c.batch_id for c in claimed}, at)
        return claimed

    def _allowed(self, tx: Transaction, endpoint: str, most: int) -> list[str]:
        """The batches of ``endpoint`` a claim may take from: the processing ones, and
        the oldest pending ones while fewer than ``most`` are processing."""
        rows = tx.query(self.sql.live_batches, (endpoint,))
        processing = [str(r["id"]) for r in rows if r["status"] == "processing"]
        pending = [str(r["id"]) for r in rows if r["status"] == "pending"]
        return processing + pending[: max(0, most - len(processing))]

    def _start(self, tx: Transaction, batch_ids: set[str], at: str) -> None:
        """Pending batches whose requests were just claimed start ``processing``."""
        p = self.dialect.placeholders(len(batch_ids))
        rows = tx.query(
            f"SELECT id, status FROM manager_batches WHERE id IN ({p})",  # noqa: S608 (placeholders)
            sorted(batch_ids),
        )
        for row in rows:
            if row["status"] == "pending":
                self._move(tx, str(row["id"]), "pending", BatchStatus.PROCESSING, at)

    def write(
        self, token: str, outcomes: Sequence[Outcome], *, worker: str, now: datetime
    ) -> tuple[int, list[str]]:
        """Store the results of claim ``token``; returns how many were written (0 when
        the lease was lost: another worker redoes the chunk) and the batches they ended."""
        at = stamp(now)
        ended: list[str] = []
        with self.store.transaction() as tx:
            if not tx.query(self.sql.lock_claim, (token,)):
                return 0, ended
            held = {(str(r["batch_id"]), int(r["idx"])) for r in tx.query(self.sql.held, (token,))}
            rows = []
            counts: dict[str, Counter[str]] = {}
            for o in outcomes:
                if (o.batch_id, o.idx) not in held:
                    continue  # its batch expired meanwhile
                rows.append((str(o.state), o.response, o.error_type, o.error_message,
                             o.attempts, worker, at, o.batch_id, o.idx))  # fmt: skip
                counts.setdefault(o.batch_id, Counter())[str(o.state)] += 1
            tx.executemany(self.sql.write_result, rows)
            # what was claimed but not reported goes back to the queue
            tx.execute(self.sql.requeue, (token,))
            tx.execute(self.sql.drop_claim, (token,))
            for batch_id in sorted(counts):
                if self._count(tx, batch_id, counts[batch_id], at):
                    ended.append(batch_id)
        return len(rows), ended

    def heartbeat(self, owner: str, lease_until: float) -> None:
        """Extend the leases of every claim ``owner`` holds."""
        with self.store.transaction() as tx:
            tx.execute(self.sql.heartbeat, (lease_until, owner))

    def reclaim(self, now: float, *, owners: Sequence[str] = ()) -> int:
        """Put back the requests of lapsed claims (or of every claim of ``owners``, the
        dead workers of this host); returns how many requests came back."""
        at = stamp(datetime.fromtimestamp(now, UTC))
        back = 0
        with self.store.transaction() as tx:
            tokens = [str(r["token"]) for r in tx.query(self.sql.lapsed, (now,))]
            for owner in owners:
                tokens += [str(r["token"]) for r in tx.query(self.sql.claims_of, (owner,))]
            touched: set[str] = set()
            for token in dict.fromkeys(tokens):
                rows = tx.query(self.sql.requeue, (token,))
                touched.update(str(r["batch_id"]) for r in rows)
                back += len(rows)
                tx.execute(self.sql.drop_claim, (token,))
            for batch_id in sorted(touched):
                rows = tx.query(self.sql.lock_batch, (batch_id,))
                if rows and rows[0]["status"] == BatchStatus.CANCELLING:
                    self._finish_cancelling(tx, batch_id, at)
        return back

    def claims_on_host(self, host: str) -> list[tuple[str, int]]:
        """``(owner, pid)`` of the claims held by workers of ``host``."""
        rows = self.store.query(self.sql.claims_on_host, (host,))
        return [(str(r["owner"]), int(r["pid"])) for r in rows]


def is_text(value: object) -> bool:
    """True for a ``str`` every store holds as text: no NUL (PostgreSQL refuses it),
    no lone surrogate (no UTF-8; a command line's undecodable bytes become these)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def batch_id_at(micros: int, suffix: str) -> str:
    """A new batch id: ``batch_`` + its submit time (µs since the epoch, hex) +
    ``suffix``; ids sort by submit time, so claims take the oldest batch first and
    lists show the newest first."""
    return f"batch_{micros:014x}{suffix}"


def submitted_at(batch_id: str) -> float:
    """When a batch was submitted (epoch seconds), read from its id."""
    try:
        return int(batch_id[6:20], 16) / 1e6
    except ValueError:  # an id this freight did not make: long submitted
        return 0.0


def _unknown(batch_id: str) -> UnknownBatch:
    return UnknownBatch(
        f"no managed batch {batch_id!r} in the store: check the id "
        "(`freight batch list` or `await manager.list()` shows the batches)"
    )


def to_batch(row: Row) -> Batch:
    """A ``manager_batches`` row as a :class:`Batch`."""
    errors = row["errors"]
    created, expires = parse_stamp(row["created_at"]), parse_stamp(row["expires_at"])
    assert created is not None
    assert expires is not None
    return Batch(
        id=str(row["id"]),
        endpoint=str(row["endpoint"]),
        status=BatchStatus(row["status"]),
        request_counts=RequestCounts(
            total=int(row["total"]),
            completed=int(row["completed"]),
            failed=int(row["failed"]),
            cancelled=int(row["cancelled"]),
            expired=int(row["expired"]),
        ),
        created_at=created,
        expires_at=expires,
        completion_window=str(row["completion_window"]),
        metadata=json.loads(row["metadata"]),
        in_progress_at=parse_stamp(row["in_progress_at"]),
        completed_at=parse_stamp(row["completed_at"]),
        failed_at=parse_stamp(row["failed_at"]),
        cancelling_at=parse_stamp(row["cancelling_at"]),
        cancelled_at=parse_stamp(row["cancelled_at"]),
        expired_at=parse_stamp(row["expired_at"]),
        errors=tuple(json.loads(errors)) if errors else (),
    )


_NEVER_RAN = {
    RequestState.CANCELLED: "the batch was cancelled before this request started",
    RequestState.EXPIRED: "the batch's completion window ended before this request finished",
}


def to_result(row: Row) -> Result:
    """A finished ``manager_requests`` row as a :class:`Result`."""
    state = RequestState(row["state"])
    if state is RequestState.COMPLETED:
        return Result(id=str(row["custom_id"]), status=state, response=json.loads(row["response"]))
    if state is RequestState.FAILED:
        error = ResultError(str(row["error_type"]), str(row["error_message"]), int(row["attempts"]))
    else:
        error = ResultError(str(state), _NEVER_RAN[state], int(row["attempts"]))
    return Result(id=str(row["custom_id"]), status=state, error=error)
