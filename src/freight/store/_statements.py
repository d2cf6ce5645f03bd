"""The store's statements, written once as templates and rendered per dialect.

Every statement :class:`~freight.store._sql.SqlStore` runs is a field of
:class:`Statements`; its default is the template (``{p}``: a placeholder, ``{lock}``: a
row lock where the dialect has one; see :mod:`freight.store._dialect`). A backend class
renders them once, when it is defined (:func:`statements`), so no statement is built
at run time and none from user text.
"""

from __future__ import annotations

from typing import NamedTuple

from freight.store._dialect import Dialect

__all__ = ["Statements", "statements"]


class Statements(NamedTuple):
    """Every statement of the store; the defaults are the templates (see ``_dialect``)."""

    insert_job: str = (
        "INSERT INTO jobs (id, name, job_type, fingerprint, status, config, total_items,"
        " total_bytes, created_at) VALUES ({p}, {p}, {p}, {p}, 'pending', {p}, {p}, {p}, {p})"
    )
    insert_claimed_job: str = (
        "INSERT INTO jobs (id, name, job_type, fingerprint, status, config, total_items,"
        " total_bytes, created_at, owner_host, owner_pid, heartbeat_at)"
        " VALUES ({p}, {p}, {p}, {p}, 'pending', {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    )
    get_job: str = "SELECT * FROM jobs WHERE id = {p}"
    latest_job: str = "SELECT * FROM jobs WHERE name = {p} ORDER BY created_at DESC LIMIT 1"
    list_jobs: str = "SELECT * FROM jobs ORDER BY created_at DESC LIMIT {p}"
    job_status: str = "SELECT status FROM jobs WHERE id = {p}{lock}"
    start: str = (
        "UPDATE jobs SET status = {p}, started_at = coalesce(started_at, {p}),"
        " completed_at = NULL, reason = NULL, control = NULL WHERE id = {p}"
    )
    end: str = "UPDATE jobs SET status = {p}, reason = {p}, completed_at = {p} WHERE id = {p}"
    set_status: str = "UPDATE jobs SET status = {p} WHERE id = {p}"
    owner: str = "SELECT owner_host, owner_pid, heartbeat_at FROM jobs WHERE id = {p}{skip_locked}"
    claim: str = (
        "UPDATE jobs SET owner_host = {p}, owner_pid = {p}, heartbeat_at = {p} WHERE id = {p}"
    )
    heartbeat: str = "UPDATE jobs SET heartbeat_at = {p} WHERE id = {p}"
    release: str = "UPDATE jobs SET owner_host = NULL, owner_pid = NULL WHERE id = {p}"
    request: str = "UPDATE jobs SET control = {p} WHERE id = {p}"
    chunks: str = "SELECT * FROM chunks WHERE job_id = {p} ORDER BY idx"
    start_chunk: str = (
        "INSERT INTO chunks (job_id, idx, start_offset, start_ordinal, status, attempts,"
        " updated_at) VALUES ({p}, {p}, {p}, {p}, 'running', 1, {p})"
        " ON CONFLICT (job_id, idx) DO UPDATE SET status = 'running',"
        " attempts = chunks.attempts + 1, updated_at = excluded.updated_at"
    )
    chunk_status: str = "SELECT status FROM chunks WHERE job_id = {p} AND idx = {p}{lock}"
    commit_chunk: str = (
        "INSERT INTO chunks (job_id, idx, start_offset, start_ordinal, end_offset,"
        " end_ordinal, status, attempts, items, succeeded, failed, skipped, checksum,"
        " updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p},"
        " {p}, {p}) ON CONFLICT (job_id, idx) DO UPDATE SET end_offset = excluded.end_offset,"
        " end_ordinal = excluded.end_ordinal, status = excluded.status,"
        " items = excluded.items, succeeded = excluded.succeeded,"
        " failed = excluded.failed, skipped = excluded.skipped,"
        " checksum = excluded.checksum, updated_at = excluded.updated_at"
    )
    count_chunk: str = (
        "UPDATE jobs SET processed = processed + {p}, succeeded = succeeded + {p},"
        " failed = failed + {p}, skipped = skipped + {p}, heartbeat_at = {p} WHERE id = {p}"
    )
    insert_dead_letter: str = (
        "INSERT INTO dead_letters (job_id, chunk_idx, record_id, position_offset,"
        " position_ordinal, payload, error_type, message, category, attempts, created_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
    )
    dead_letters: str = "SELECT * FROM dead_letters WHERE job_id = {p} ORDER BY id"
    open_dead_letters: str = (
        "SELECT * FROM dead_letters WHERE job_id = {p} AND replayed_at IS NULL ORDER BY id"
    )
    current_errors: str = (
        "SELECT * FROM dead_letters WHERE job_id = {p} AND replayed_at IS NULL"
        " ORDER BY id LIMIT {p}"
    )
    error_categories: str = (
        "SELECT category, count(*) AS n FROM dead_letters WHERE job_id = {p}"
        " AND replayed_at IS NULL GROUP BY category ORDER BY min(id)"
    )
    # A record is resolved when a replay marked every dead letter it has; "resolved"
    # counts them all (a window: computed before the LIMIT).
    resolved_errors: str = (
        "SELECT d.id, d.chunk_idx, d.record_id, d.position_offset, d.position_ordinal,"
        " d.payload, d.error_type, d.message, d.category, d.attempts, d.created_at,"
        " r.resolved_at AS replayed_at, count(*) OVER () AS resolved FROM dead_letters d"
        " JOIN (SELECT min(id) AS first, max(replayed_at) AS resolved_at FROM dead_letters"
        " WHERE job_id = {p} GROUP BY record_id HAVING count(replayed_at) = count(*)) r"
        " ON d.id = r.first ORDER BY d.id LIMIT {p}"
    )
    replay_targets: str = (
        "SELECT id, position_offset, position_ordinal, chunk_idx, attempts FROM dead_letters"
        " WHERE job_id = {p} AND replayed_at IS NULL AND position_offset IS NOT NULL"
        " ORDER BY position_offset, position_ordinal, id"
    )
    mark_replayed: str = "UPDATE dead_letters SET replayed_at = {p} WHERE job_id = {p} AND id = {p}"
    count_replay: str = (
        "UPDATE jobs SET succeeded = succeeded + {p}, failed = failed - {p} + {p} WHERE id = {p}"
    )
    insert_event: str = (
        "INSERT INTO events (job_id, kind, data, created_at) VALUES ({p}, {p}, {p}, {p})"
    )
    events: str = "SELECT * FROM events WHERE job_id = {p} ORDER BY id"


def statements(dialect: Dialect) -> Statements:
    """Every statement of the store in ``dialect`` (rendered once per backend class)."""
    return Statements._make(dialect.render(template) for template in Statements())
