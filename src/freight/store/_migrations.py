"""Versioned schema of the store. Append a migration; never edit a released one.

Each migration is a template in the store's :class:`~freight.store._dialect.Dialect`
(``{identity}``: an auto-numbered key; SQLite renders exactly the text it was released
with). The version lives in SQLite's ``PRAGMA user_version``, in PostgreSQL's
``freight_schema`` table; each migration runs in the transaction that bumps it, so a
crash mid-migration leaves the old version intact.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, chunk checkpoints, dead letters, events
    """
    CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        job_type      TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        status        TEXT NOT NULL,
        reason        TEXT,
        config        TEXT NOT NULL,
        total_items   INTEGER,
        total_bytes   INTEGER,
        processed     INTEGER NOT NULL DEFAULT 0,
        succeeded     INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        skipped       INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        completed_at  TEXT,
        owner_host    TEXT,
        owner_pid     INTEGER,
        heartbeat_at  TEXT,
        control       TEXT
    );
    CREATE INDEX jobs_by_name ON jobs (name, created_at);
    CREATE TABLE chunks (
        job_id         TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx            INTEGER NOT NULL,
        start_offset   INTEGER NOT NULL,
        start_ordinal  INTEGER NOT NULL,
        end_offset     INTEGER,
        end_ordinal    INTEGER,
        status         TEXT NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 1,
        items          INTEGER NOT NULL DEFAULT 0,
        succeeded      INTEGER NOT NULL DEFAULT 0,
        failed         INTEGER NOT NULL DEFAULT 0,
        skipped        INTEGER NOT NULL DEFAULT 0,
        checksum       TEXT,
        updated_at     TEXT NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE dead_letters (
        id           {identity},
        job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        chunk_idx    INTEGER,
        record_id    TEXT NOT NULL,
        position_offset   INTEGER,
        position_ordinal  INTEGER,
        payload      TEXT NOT NULL,
        error_type   TEXT NOT NULL,
        message      TEXT NOT NULL,
        category     TEXT NOT NULL,
        attempts     INTEGER NOT NULL,
        created_at   TEXT NOT NULL,
        replayed_at  TEXT
    );
    CREATE INDEX dead_letters_by_job ON dead_letters (job_id, id);
    CREATE TABLE events (
        id          {identity},
        job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX events_by_job ON events (job_id, id);
    """,
    # 2: the flow's durable board: artifacts, deliveries to consumers, dead letters
    """
    CREATE TABLE flow_artifacts (
        flow            TEXT NOT NULL,
        id              TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        type            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        producer        TEXT,
        visibility      TEXT NOT NULL,
        tenant          TEXT,
        correlation_id  TEXT,
        depth           INTEGER NOT NULL,
        published_at    TEXT NOT NULL,
        PRIMARY KEY (flow, id)
    );
    CREATE INDEX flow_artifacts_by_seq ON flow_artifacts (flow, seq);
    CREATE TABLE flow_deliveries (
        flow         TEXT NOT NULL,
        consumer     TEXT NOT NULL,
        artifact_id  TEXT NOT NULL,
        seq          BIGINT NOT NULL,
        arrived_at   TEXT NOT NULL,
        status       TEXT NOT NULL,
        PRIMARY KEY (flow, consumer, artifact_id)
    );
    CREATE INDEX flow_deliveries_open ON flow_deliveries (flow, status, seq);
    CREATE TABLE flow_dead_letters (
        id            {identity},
        flow          TEXT NOT NULL,
        consumer      TEXT NOT NULL,
        reason        TEXT NOT NULL,
        artifact_ids  TEXT NOT NULL,
        error         TEXT,
        created_at    TEXT NOT NULL
    );
    """,
    # 3: the flow board's consumer declarations (for `freight flow status`; a board of
    # an earlier freight made this table itself when its flow started, hence IF NOT
    # EXISTS), and open deliveries indexed alone (a delivery marked done leaves the
    # index instead of moving in it: one index write fewer per delivery)
    """
    CREATE TABLE IF NOT EXISTS flow_consumers (
        flow         TEXT NOT NULL,
        name         TEXT NOT NULL,
        declaration  TEXT NOT NULL,
        declared_at  TEXT NOT NULL,
        PRIMARY KEY (flow, name)
    );
    DROP INDEX flow_deliveries_open;
    CREATE INDEX flow_deliveries_open ON flow_deliveries (flow, seq) WHERE status = 'open';
    """,
    # 4: managed batches (freight.manager): batches, their requests with each one's
    # result in the same row (written once: a redone request overwrites it), and the
    # claims (leases) workers hold on chunks of requests
    """
    CREATE TABLE manager_batches (
        id                 TEXT PRIMARY KEY,
        endpoint           TEXT NOT NULL,
        status             TEXT NOT NULL,
        metadata           TEXT NOT NULL,
        completion_window  TEXT NOT NULL,
        total              INTEGER NOT NULL,
        completed          INTEGER NOT NULL DEFAULT 0,
        failed             INTEGER NOT NULL DEFAULT 0,
        cancelled          INTEGER NOT NULL DEFAULT 0,
        expired            INTEGER NOT NULL DEFAULT 0,
        errors             TEXT,
        created_at         TEXT NOT NULL,
        expires_at         TEXT NOT NULL,
        in_progress_at     TEXT,
        completed_at       TEXT,
        failed_at          TEXT,
        cancelling_at      TEXT,
        cancelled_at       TEXT,
        expired_at         TEXT
    );
    CREATE INDEX manager_batches_live ON manager_batches (expires_at)
        WHERE status IN ('pending', 'processing');
    CREATE TABLE manager_requests (
        batch_id       TEXT NOT NULL REFERENCES manager_batches (id) ON DELETE CASCADE,
        idx            INTEGER NOT NULL,
        custom_id      TEXT NOT NULL,
        endpoint       TEXT NOT NULL,
        body           TEXT NOT NULL,
        state          TEXT NOT NULL,
        claim          TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        response       TEXT,
        error_type     TEXT,
        error_message  TEXT,
        worker         TEXT,
        finished_at    TEXT,
        PRIMARY KEY (batch_id, idx)
    );
    CREATE INDEX manager_requests_queued ON manager_requests (endpoint, batch_id, idx)
        WHERE state = 'queued';
    CREATE INDEX manager_requests_claimed ON manager_requests (claim)
        WHERE state = 'claimed';
    CREATE TABLE manager_claims (
        token        TEXT PRIMARY KEY,
        owner        TEXT NOT NULL,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        endpoint     TEXT NOT NULL,
        lease_until  DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX manager_claims_by_lease ON manager_claims (lease_until);
    CREATE INDEX manager_claims_by_owner ON manager_claims (owner);
    """,
)
