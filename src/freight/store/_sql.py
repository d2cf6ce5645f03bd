"""The store's logic in SQL, shared by every backend: rules and record mapping.

:class:`SqlStore` implements the :class:`~freight.store.Store` port once, against two
primitives each backend provides (:meth:`SqlStore.transaction` and
:meth:`SqlStore.query`) and its :class:`~freight.store._dialect.Dialect`. The statements
are written once, as templates, in :mod:`freight.store._statements`; each backend class
renders them when it is defined. Timestamps are stored as ISO 8601 text in UTC.
"""

from __future__ import annotations

import json
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from freight._errors import ConfigError, StoreError, UnknownJob
from freight.store._dialect import Dialect, Row, Transaction
from freight.store._lifecycle import JobStatus, Move, check_transition
from freight.store._migrations import MIGRATIONS
from freight.store._records import (
    ChunkCheckpoint,
    Control,
    DeadLetter,
    ErrorSummary,
    Event,
    JobRecord,
    ReplayTarget,
    utcnow,
)
from freight.store._statements import Statements

__all__ = ["SqlStore"]

_CONTROLS = (None, "pause", "resume", "cancel")


_LAST_CREATED = [datetime.min.replace(tzinfo=UTC)]
_CREATED_LOCK = threading.Lock()


def _next_created() -> datetime:
    """Now, strictly after every creation time given before in this process (so that
    "the latest run of a name" is exact)."""
    with _CREATED_LOCK:
        created = max(utcnow(), _LAST_CREATED[0] + timedelta(microseconds=1))
        _LAST_CREATED[0] = created
    return created


def _held(job: JobRecord, host: str, pid: int, stale_before: datetime) -> bool:
    """True when another owner than ``(host, pid)`` holds ``job`` with a fresh heartbeat."""
    if job.owner_host is None or (job.owner_host, job.owner_pid) == (host, pid):
        return False
    return job.heartbeat_at is not None and job.heartbeat_at > stale_before


def _shown(text: str) -> str:
    """A dead letter's text as stored: a NUL shown as ``\\x00`` (PostgreSQL's text cannot
    hold one, and a terminal shows none), the same on every store."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqlStore(ABC):
    """The store's logic on a SQL database; a backend gives the connection primitives.

    A subclass sets :attr:`dialect` and :attr:`sql` (``statements(dialect)``) and
    implements :meth:`transaction`, :meth:`query`, :meth:`close` and its schema
    versioning (:meth:`_migrate`, calling :meth:`_apply_migrations`).
    """

    dialect: ClassVar[Dialect]
    sql: ClassVar[Statements]

    # -- what a backend provides ---------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction on the store's database (the :class:`BoardStore` port)."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One query, on its own (the :class:`BoardStore` port)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def _write(self) -> AbstractContextManager[Transaction]:
        # Kept for tests written before transaction() was public; use transaction().
        return self.transaction()

    def _apply_migrations(
        self, tx: Transaction, version: int, bump: Callable[[Transaction, int], None]
    ) -> None:
        """Run the migrations after ``version`` in ``tx``, each followed by ``bump``."""
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the store {self!r} has schema version {version}, newer than this "
                f"freight knows ({len(MIGRATIONS)}); upgrade freight"
            )
        for number, template in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, self.dialect.render(template).split(";")):
                tx.execute(statement)
            bump(tx, number)

    # -- jobs ------------------------------------------------------------------------

    def create_job(
        self,
        *,
        name: str,
        job_type: str,
        fingerprint: str,
        config: dict[str, Any],
        total_items: int | None = None,
        total_bytes: int | None = None,
    ) -> JobRecord:
        """Record a new run (status ``pending``) and return it."""
        job_id = uuid.uuid4().hex
        created = _next_created()
        with self.transaction() as tx:
            tx.execute(
                self.sql.insert_job,
                (job_id, name, job_type, fingerprint, json.dumps(config), total_items,
                 total_bytes, _ts(created)),
            )  # fmt: skip
        return self._job(job_id)

    def claim_new(
        self,
        *,
        name: str,
        job_type: str,
        fingerprint: str,
        config: dict[str, Any],
        total_items: int | None = None,
        total_bytes: int | None = None,
        replacing: str | None,
        host: str,
        pid: int,
        now: datetime,
        stale_before: datetime,
    ) -> JobRecord | None:
        """Create a run of ``name`` owned by ``(host, pid)``, unless another runner was first
        (see the :class:`~freight.store.Store` port).

        One write transaction holding the name's lock (:attr:`Dialect.name_lock`) reads
        the latest run of the name and inserts the new, owned one: two runners starting
        the same job at the same instant are serialised there, and the second is refused.
        """
        job_id = uuid.uuid4().hex
        with self.transaction() as tx:
            tx.execute(self.dialect.name_lock, (name,))
            rows = tx.query(self.sql.latest_job, (name,))
            created = _next_created()
            if rows:
                latest = _job(rows[0])
                if latest.id != replacing or _held(latest, host, pid, stale_before):
                    return None
                # Strictly after it, whatever the clocks of the two runners' machines say.
                created = max(created, latest.created_at + timedelta(microseconds=1))
            tx.execute(
                self.sql.insert_claimed_job,
                (job_id, name, job_type, fingerprint, json.dumps(config), total_items,
                 total_bytes, _ts(created), host, pid, _ts(now)),
            )  # fmt: skip
        return self._job(job_id)

    def get_job(self, job_id: str) -> JobRecord | None:
        """The run with this id, or ``None``."""
        rows = self.query(self.sql.get_job, (job_id,))
        return _job(rows[0]) if rows else None

    def _job(self, job_id: str) -> JobRecord:
        job = self.get_job(job_id)
        if job is None:
            raise UnknownJob(f"no job with id {job_id!r}; `freight list` shows the runs")
        return job

    def latest_job(self, name: str) -> JobRecord | None:
        """The most recent run of the job called ``name``, or ``None``."""
        rows = self.query(self.sql.latest_job, (name,))
        return _job(rows[0]) if rows else None

    def list_jobs(self, limit: int = 50) -> list[JobRecord]:
        """The most recent runs, newest first."""
        return [_job(row) for row in self.query(self.sql.list_jobs, (limit,))]

    def transition(
        self,
        job_id: str,
        to: JobStatus,
        *,
        reason: str | None = None,
        now: datetime | None = None,
    ) -> JobRecord:
        """Move a run to status ``to``, checked against the lifecycle table (see the
        :class:`~freight.store.Store` port)."""
        stamp = _ts(now or utcnow())
        with self.transaction() as tx:
            rows = tx.query(self.sql.job_status, (job_id,))
            if not rows:
                raise UnknownJob(f"no job with id {job_id!r}; `freight list` shows the runs")
            move = check_transition(rows[0]["status"], to, run=f"run {job_id}")
            if move is Move.START:
                tx.execute(self.sql.start, (to, stamp, job_id))
            elif move is Move.END:
                tx.execute(self.sql.end, (to, reason, stamp, job_id))
            else:  # PAUSE, REVISE: the status alone
                tx.execute(self.sql.set_status, (to, job_id))
        return self._job(job_id)

    def claim(
        self, job_id: str, *, host: str, pid: int, now: datetime, stale_before: datetime
    ) -> JobRecord | None:
        """Make ``(host, pid)`` the owner of a run, unless a live owner holds it."""
        with self.transaction() as tx:
            rows = tx.query(self.sql.owner, (job_id,))
            if not rows:
                if self.get_job(job_id) is not None:
                    return None  # locked by a runner claiming it right now (SKIP LOCKED)
                raise UnknownJob(f"no job with id {job_id!r}; `freight list` shows the runs")
            row = rows[0]
            heartbeat = _dt(row["heartbeat_at"])
            mine = (row["owner_host"], row["owner_pid"]) == (host, pid)
            owned = row["owner_host"] is not None
            if owned and not mine and heartbeat is not None and heartbeat > stale_before:
                return None
            tx.execute(self.sql.claim, (host, pid, _ts(now), job_id))
        return self.get_job(job_id)

    def heartbeat(self, job_id: str, *, now: datetime) -> None:
        """Record that the owner of the run is alive."""
        with self.transaction() as tx:
            tx.execute(self.sql.heartbeat, (_ts(now), job_id))

    def release(self, job_id: str) -> None:
        """Drop the run's owner: any runner may claim it at once."""
        with self.transaction() as tx:
            tx.execute(self.sql.release, (job_id,))

    def request(self, job_id: str, control: Control | None) -> None:
        """Ask the running owner of a run to pause, resume or cancel (or clear the ask)."""
        if control not in _CONTROLS:
            raise ConfigError(
                f"control must be 'pause', 'resume', 'cancel' or None, got {control!r}"
            )
        with self.transaction() as tx:
            if not tx.execute(self.sql.request, (control, job_id)):
                raise UnknownJob(f"no job with id {job_id!r}; `freight list` shows the runs")

    # -- chunks ----------------------------------------------------------------------

    def chunks(self, job_id: str) -> list[ChunkCheckpoint]:
        """Every chunk checkpoint of a run, by index."""
        return [_chunk(row) for row in self.query(self.sql.chunks, (job_id,))]

    def start_chunk(self, job_id: str, checkpoint: ChunkCheckpoint) -> None:
        """Record that a chunk is being processed (status ``running``, attempts counted)."""
        with self.transaction() as tx:
            tx.execute(
                self.sql.start_chunk,
                (job_id, checkpoint.index, *checkpoint.start, _ts(utcnow())),
            )

    def commit_chunk(
        self,
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> JobRecord:
        """Atomically: store the finished chunk, its dead letters, and add its counts."""
        with self.transaction() as tx:
            self._commit_chunk_in(tx, job_id, checkpoint, dead_letters)
        return self._job(job_id)

    def _commit_chunk_in(
        self,
        tx: Transaction,
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter],
    ) -> None:
        """The statements of :meth:`commit_chunk`, in the open transaction ``tx``."""
        now = _ts(utcnow())
        end = checkpoint.end or (None, None)
        previous = tx.query(self.sql.chunk_status, (job_id, checkpoint.index))
        if previous and previous[0]["status"] == "done":
            raise ValueError(f"chunk {checkpoint.index} of job {job_id} is already done")
        tx.execute(
            self.sql.commit_chunk,
            (job_id, checkpoint.index, *checkpoint.start, *end, checkpoint.status,
             checkpoint.attempts, checkpoint.items, checkpoint.succeeded, checkpoint.failed,
             checkpoint.skipped, checkpoint.checksum, now),
        )  # fmt: skip
        self._insert_dead_letters(tx, job_id, checkpoint.index, dead_letters, now)
        tx.execute(
            self.sql.count_chunk,
            (checkpoint.items, checkpoint.succeeded, checkpoint.failed, checkpoint.skipped,
             now, job_id),
        )  # fmt: skip

    # -- dead letters and events -------------------------------------------------------

    def _insert_dead_letters(
        self,
        tx: Transaction,
        job_id: str,
        chunk_index: int | None,
        dead_letters: Sequence[DeadLetter],
        now: str | None,
    ) -> None:
        tx.executemany(
            self.sql.insert_dead_letter,
            [
                (job_id, d.chunk_index if chunk_index is None else chunk_index, d.record_id,
                 *(d.position or (None, None)), _shown(d.payload), d.error_type,
                 _shown(d.message), d.category, d.attempts, _ts(d.created_at) or now)
                for d in dead_letters
            ],
        )  # fmt: skip

    def dead_letters(self, job_id: str, *, include_replayed: bool = False) -> list[DeadLetter]:
        """The dead letters of a run, oldest first."""
        sql = self.sql.dead_letters if include_replayed else self.sql.open_dead_letters
        return [_dead_letter(row) for row in self.query(sql, (job_id,))]

    def error_summary(self, job_id: str, *, sample: int = 50) -> ErrorSummary:
        """A run's current errors and what replays resolved, counted here (a report
        costs the same for ten dead letters or a million)."""
        sql = self.sql
        resolved = self.query(sql.resolved_errors, (job_id, max(1, sample)))
        return ErrorSummary(
            current=[_dead_letter(r) for r in self.query(sql.current_errors, (job_id, sample))],
            categories={
                r["category"]: int(r["n"]) for r in self.query(sql.error_categories, (job_id,))
            },
            resolved=[_dead_letter(r) for r in resolved[:sample]],
            resolved_count=int(resolved[0]["resolved"]) if resolved else 0,
        )

    def replay_targets(self, job_id: str) -> list[ReplayTarget]:
        """The open dead letters of a run that have a position, in position order."""
        return [
            ReplayTarget(row["id"], (row["position_offset"], row["position_ordinal"]),
                         row["chunk_idx"], row["attempts"])
            for row in self.query(self.sql.replay_targets, (job_id,))
        ]  # fmt: skip

    def mark_replayed(self, job_id: str, ids: Sequence[int]) -> None:
        """Mark dead letters as replayed (by ``retry-failed``)."""
        now = _ts(utcnow())
        with self.transaction() as tx:
            tx.executemany(self.sql.mark_replayed, [(now, job_id, i) for i in ids])

    def commit_replay(
        self,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> JobRecord:
        """Atomically: mark dead letters replayed, record the new failures, fix counters."""
        with self.transaction() as tx:
            self._commit_replay_in(tx, job_id, replayed, dead_letters, succeeded)
        return self._job(job_id)

    def commit_replay_on(
        self,
        conn: Any,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> None:
        """:meth:`commit_replay` on ``conn``, the connection of a transaction a sink opened
        on this store's database (committed with it): the replayed rows and the marking
        of their dead letters commit together (the
        :class:`~freight.store.SharedTransactionStore` port)."""
        tx = self._transaction_on(conn)
        self._commit_replay_in(tx, job_id, replayed, dead_letters, succeeded)

    def _commit_replay_in(
        self,
        tx: Transaction,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> None:
        """The statements of :meth:`commit_replay`, in the open transaction ``tx``."""
        now = _ts(utcnow())
        tx.executemany(self.sql.mark_replayed, [(now, job_id, i) for i in replayed])
        self._insert_dead_letters(tx, job_id, None, dead_letters, now)
        tx.execute(self.sql.count_replay, (succeeded, len(replayed), len(dead_letters), job_id))

    def _transaction_on(self, conn: Any) -> Transaction:
        """The :class:`Transaction` primitive on another component's DB-API connection
        (a backend may give its own)."""
        return _DbApiTransaction(conn)

    def add_event(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Append an event to a run's history."""
        with self.transaction() as tx:
            tx.execute(self.sql.insert_event, (job_id, kind, json.dumps(data or {}), _ts(utcnow())))

    def events(self, job_id: str) -> list[Event]:
        """A run's events, oldest first."""
        return [
            Event(kind=row["kind"], data=json.loads(row["data"]), created_at=_dt(row["created_at"]))
            for row in self.query(self.sql.events, (job_id,))
        ]


class _DbApiTransaction:
    """The :class:`Transaction` primitive on a DB-API 2 connection whose transaction its
    opener commits (a :class:`~freight.store.TransactionalSink`'s); rows come back as dicts."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            return int(cur.rowcount)
        finally:
            cur.close()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:  # some drivers refuse an empty executemany
            cur = self._conn.cursor()
            try:
                cur.executemany(sql, rows)
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            names = [column[0] for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            cur.close()


# -- record mapping --------------------------------------------------------------------


def _job(row: Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        name=row["name"],
        job_type=row["job_type"],
        fingerprint=row["fingerprint"],
        status=row["status"],
        reason=row["reason"],
        config=json.loads(row["config"]),
        total_items=row["total_items"],
        total_bytes=row["total_bytes"],
        processed=row["processed"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        skipped=row["skipped"],
        created_at=_dt(row["created_at"]),  # type: ignore[arg-type]
        started_at=_dt(row["started_at"]),
        completed_at=_dt(row["completed_at"]),
        owner_host=row["owner_host"],
        owner_pid=row["owner_pid"],
        heartbeat_at=_dt(row["heartbeat_at"]),
        control=row["control"],
    )


def _chunk(row: Row) -> ChunkCheckpoint:
    end = None if row["end_offset"] is None else (row["end_offset"], row["end_ordinal"])
    return ChunkCheckpoint(
        index=row["idx"],
        start=(row["start_offset"], row["start_ordinal"]),
        end=end,
        status=row["status"],
        attempts=row["attempts"],
        items=row["items"],
        succeeded=row["succeeded"],
        failed=row["failed"],
        skipped=row["skipped"],
        checksum=row["checksum"],
        updated_at=_dt(row["updated_at"]),
    )


def _dead_letter(row: Row) -> DeadLetter:
    offset, ordinal = row["position_offset"], row["position_ordinal"]
    return DeadLetter(
        id=row["id"],
        chunk_index=row["chunk_idx"],
        position=None if offset is None else (offset, ordinal),
        record_id=row["record_id"],
        payload=row["payload"],
        error_type=row["error_type"],
        message=row["message"],
        category=row["category"],
        attempts=row["attempts"],
        created_at=_dt(row["created_at"]),
        replayed_at=_dt(row["replayed_at"]),
    )
