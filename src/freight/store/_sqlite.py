"""``SqliteStore``: the embedded default store (WAL mode, ``.freight/freight.db``)."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from freight._errors import ConfigError
from freight.store._migrations import MIGRATIONS
from freight.store._records import (
    ChunkCheckpoint,
    Control,
    DeadLetter,
    Event,
    JobRecord,
    JobStatus,
    utcnow,
)

__all__ = ["DEFAULT_PATH", "SqliteStore", "StoreError"]

DEFAULT_PATH = Path(".freight") / "freight.db"

_JOB_FIELDS = frozenset(
    {
        "status", "reason", "config", "total_items", "total_bytes", "processed", "succeeded",
        "failed", "skipped", "started_at", "completed_at", "owner_host", "owner_pid",
        "heartbeat_at", "control", "fingerprint",
    }
)  # fmt: skip


_LAST_CREATED = [datetime.min.replace(tzinfo=UTC)]


class StoreError(ConfigError):
    """The store cannot be opened or is newer than this freight knows."""


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class SqliteStore:
    """The store in one SQLite file, safe for threads and for several processes.

    (SQLite serialises writers itself; :class:`PostgresStore` reuses this logic.)

    Args:
        path: the database file (its folder is created), or ``":memory:"``.
        busy_timeout: seconds a writer waits for another process's transaction.
    """

    _LOCK_ROW = ""  # how a claim locks the run's row (PostgreSQL: FOR UPDATE SKIP LOCKED)

    def __init__(self, path: str | Path = DEFAULT_PATH, *, busy_timeout: float = 30.0) -> None:
        self.path = path if path == ":memory:" else Path(path)
        if isinstance(self.path, Path):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store folder {self.path.parent}: {exc}"
                ) from exc
        try:
            self._db = sqlite3.connect(
                str(self.path),
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """Open ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or a path."""
        if url.startswith("sqlite:///"):
            return cls(url.removeprefix("sqlite:///") or DEFAULT_PATH)
        if "://" in url:
            raise StoreError(
                f"unsupported store URL {url!r}: use sqlite:///path/to/file.db (PostgreSQL "
                "stores come with the SQL connectors)"
            )
        return cls(url)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- plumbing --------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._write():
            version = self.schema_version
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the store at {self.path} has schema version {version}, newer than this "
                    f"freight knows ({len(MIGRATIONS)}); upgrade freight"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number:d}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- jobs ------------------------------------------------------------------

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
        job_id = uuid.uuid4().hex
        with self._write() as db:
            # Strictly increasing creation times within a process, so "latest" is exact.
            created = max(utcnow(), _LAST_CREATED[0] + timedelta(microseconds=1))
            _LAST_CREATED[0] = created
            db.execute(
                "INSERT INTO jobs (id, name, job_type, fingerprint, status, config, total_items,"
                " total_bytes, created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (job_id, name, job_type, fingerprint, json.dumps(config), total_items,
                 total_bytes, _ts(created)),
            )  # fmt: skip
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def latest_job(self, name: str) -> JobRecord | None:
        rows = self._read(
            "SELECT * FROM jobs WHERE name = ? ORDER BY created_at DESC LIMIT 1",
            (name,),
        )
        return _job(rows[0]) if rows else None

    def list_jobs(self, limit: int = 50) -> list[JobRecord]:
        rows = self._read("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_job(row) for row in rows]

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        unknown = set(fields) - _JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        values = {k: _column(v) for k, v in fields.items()}
        if values:
            # Column names come from the fixed allow-list above, never from user text.
            assignments = ", ".join(f"{name} = ?" for name in values)
            with self._write() as db:
                db.execute(
                    f"UPDATE jobs SET {assignments} WHERE id = ?",  # noqa: S608
                    (*values.values(), job_id),
                )
        job = self.get_job(job_id)
        if job is None:
            raise KeyError(f"no job with id {job_id!r}")
        return job

    def set_status(self, job_id: str, status: JobStatus, reason: str | None = None) -> JobRecord:
        return self.update_job(job_id, status=status, reason=reason)

    def claim(
        self, job_id: str, *, host: str, pid: int, now: datetime, stale_before: datetime
    ) -> JobRecord | None:
        # _LOCK_ROW is a class constant ("" or " FOR UPDATE SKIP LOCKED"), never user text.
        query = "SELECT owner_host, owner_pid, heartbeat_at FROM jobs WHERE id = ?" + self._LOCK_ROW  # noqa: S608
        with self._write() as db:
            row = db.execute(query, (job_id,)).fetchone()
            if row is None:
                if self.get_job(job_id) is not None:
                    return None  # locked by a runner claiming it right now (SKIP LOCKED)
                raise KeyError(f"no job with id {job_id!r}")
            heartbeat = _dt(row["heartbeat_at"])
            mine = (row["owner_host"], row["owner_pid"]) == (host, pid)
            owned = row["owner_host"] is not None
            if owned and not mine and heartbeat is not None and heartbeat > stale_before:
                return None
            db.execute(
                "UPDATE jobs SET owner_host = ?, owner_pid = ?, heartbeat_at = ? WHERE id = ?",
                (host, pid, _ts(now), job_id),
            )
        return self.get_job(job_id)

    def heartbeat(self, job_id: str, *, now: datetime) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (_ts(now), job_id))

    def request(self, job_id: str, control: Control | None) -> None:
        if control not in (None, "pause", "resume", "cancel"):
            raise ValueError(
                f"control must be 'pause', 'resume', 'cancel' or None, got {control!r}"
            )
        self.update_job(job_id, control=control)

    # -- chunks ----------------------------------------------------------------

    def chunks(self, job_id: str) -> list[ChunkCheckpoint]:
        rows = self._read("SELECT * FROM chunks WHERE job_id = ? ORDER BY idx", (job_id,))
        return [_chunk(row) for row in rows]

    def start_chunk(self, job_id: str, checkpoint: ChunkCheckpoint) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO chunks (job_id, idx, start_offset, start_ordinal, status, attempts,"
                " updated_at) VALUES (?, ?, ?, ?, 'running', 1, ?)"
                " ON CONFLICT (job_id, idx) DO UPDATE SET status = 'running',"
                " attempts = chunks.attempts + 1, updated_at = excluded.updated_at",
                (job_id, checkpoint.index, *checkpoint.start, _ts(utcnow())),
            )

    def commit_chunk(
        self,
        job_id: str,
        checkpoint: ChunkCheckpoint,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> JobRecord:
        with self._write() as db:
            self._commit_chunk_statements(db, job_id, checkpoint, dead_letters)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def _commit_chunk_statements(
        self, db: Any, job_id: str, checkpoint: ChunkCheckpoint, dead_letters: Sequence[DeadLetter]
    ) -> None:
        """The statements of :meth:`commit_chunk`, on ``db`` (inside its transaction)."""
        now = _ts(utcnow())
        end = checkpoint.end or (None, None)
        previous = db.execute(
            "SELECT status FROM chunks WHERE job_id = ? AND idx = ?",
            (job_id, checkpoint.index),
        ).fetchone()
        if previous is not None and previous["status"] == "done":
            raise ValueError(f"chunk {checkpoint.index} of job {job_id} is already done")
        db.execute(
            "INSERT INTO chunks (job_id, idx, start_offset, start_ordinal, end_offset,"
            " end_ordinal, status, attempts, items, succeeded, failed, skipped, checksum,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_id, idx) DO UPDATE SET end_offset = excluded.end_offset,"
            " end_ordinal = excluded.end_ordinal, status = excluded.status,"
            " items = excluded.items, succeeded = excluded.succeeded,"
            " failed = excluded.failed, skipped = excluded.skipped,"
            " checksum = excluded.checksum, updated_at = excluded.updated_at",
            (job_id, checkpoint.index, *checkpoint.start, *end, checkpoint.status,
             checkpoint.attempts, checkpoint.items, checkpoint.succeeded, checkpoint.failed,
             checkpoint.skipped, checkpoint.checksum, now),
        )  # fmt: skip
        self._insert_dead_letters(db, job_id, checkpoint.index, dead_letters, now)
        db.execute(
            "UPDATE jobs SET processed = processed + ?, succeeded = succeeded + ?,"
            " failed = failed + ?, skipped = skipped + ?, heartbeat_at = ? WHERE id = ?",
            (checkpoint.items, checkpoint.succeeded, checkpoint.failed, checkpoint.skipped,
             now, job_id),
        )  # fmt: skip

    # -- dead letters and events -------------------------------------------------

    @staticmethod
    def _insert_dead_letters(
        db: sqlite3.Connection,
        job_id: str,
        chunk_index: int | None,
        dead_letters: Sequence[DeadLetter],
        now: str | None,
    ) -> None:
        db.executemany(
            "INSERT INTO dead_letters (job_id, chunk_idx, record_id, position_offset,"
            " position_ordinal, payload, error_type, message, category, attempts, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (job_id, d.chunk_index if chunk_index is None else chunk_index, d.record_id,
                 *(d.position or (None, None)), d.payload, d.error_type, d.message, d.category,
                 d.attempts, _ts(d.created_at) or now)
                for d in dead_letters
            ],
        )  # fmt: skip

    def dead_letters(self, job_id: str, *, include_replayed: bool = False) -> list[DeadLetter]:
        sql = "SELECT * FROM dead_letters WHERE job_id = ?"
        if not include_replayed:
            sql += " AND replayed_at IS NULL"
        return [_dead_letter(row) for row in self._read(sql + " ORDER BY id", (job_id,))]

    def mark_replayed(self, job_id: str, ids: Sequence[int]) -> None:
        now = _ts(utcnow())
        with self._write() as db:
            db.executemany(
                "UPDATE dead_letters SET replayed_at = ? WHERE job_id = ? AND id = ?",
                [(now, job_id, i) for i in ids],
            )

    def commit_replay(
        self,
        job_id: str,
        replayed: Sequence[int],
        dead_letters: Sequence[DeadLetter],
        succeeded: int,
    ) -> JobRecord:
        now = _ts(utcnow())
        with self._write() as db:
            db.executemany(
                "UPDATE dead_letters SET replayed_at = ? WHERE job_id = ? AND id = ?",
                [(now, job_id, i) for i in replayed],
            )
            self._insert_dead_letters(db, job_id, None, dead_letters, now)
            db.execute(
                "UPDATE jobs SET succeeded = succeeded + ?, failed = failed - ? + ? WHERE id = ?",
                (succeeded, len(replayed), len(dead_letters), job_id),
            )
        job = self.get_job(job_id)
        assert job is not None
        return job

    def add_event(self, job_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO events (job_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
                (job_id, kind, json.dumps(data or {}), _ts(utcnow())),
            )

    def events(self, job_id: str) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            Event(kind=row["kind"], data=json.loads(row["data"]), created_at=_dt(row["created_at"]))
            for row in rows
        ]


def _column(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ts(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return value


def _job(row: sqlite3.Row) -> JobRecord:
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


def _chunk(row: sqlite3.Row) -> ChunkCheckpoint:
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


def _dead_letter(row: sqlite3.Row) -> DeadLetter:
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
    )
