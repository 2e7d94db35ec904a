//! The embedded store's tables.
//!
//! Written for the accept path: an event is one row in `events` (with its envelope's matches as
//! JSON, and the end of its delivery id's window, `dedup_until`, which the store keeps in
//! memory: see `deliveries`) plus one row per job in `jobs`. Jobs of an event
//! have consecutive sequence numbers (`first_job`…), so no index on `jobs` is needed to find
//! them; job ids start with their event's id.
//!
//! A journal of an older format is brought up to this one when it is opened ([`migrate`]).

use rusqlite::Connection;

use crate::domain::Step;

/// Bumped whenever the tables change shape (3: `jobs.awaiting`; 4: `events.dedup_until`).
pub const SCHEMA_VERSION: i64 = 4;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    delivery TEXT,
    parent TEXT,
    received_at INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body TEXT NOT NULL,
    depth INTEGER NOT NULL DEFAULT 0,
    envelope_version INTEGER NOT NULL,
    matches TEXT NOT NULL,
    n_matches INTEGER NOT NULL,
    n_jobs INTEGER NOT NULL,
    first_job INTEGER,
    duplicates INTEGER NOT NULL DEFAULT 0,
    -- The end (ms) of the window in which the event's delivery id makes a repeat a duplicate;
    -- NULL without one. The store keeps the live ones in memory, loaded from the index below.
    dedup_until INTEGER
);
CREATE INDEX IF NOT EXISTS events_parent ON events(parent) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_dedup ON events(dedup_until) WHERE dedup_until IS NOT NULL;
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    rulebook TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    step TEXT NOT NULL,
    not_before INTEGER,
    error TEXT,
    updated_at INTEGER NOT NULL,
    -- The deadline of `step`'s `awaiting` (ms), NULL when the job awaits no decision: written
    -- with `step` (`awaiting` below), so the index below reads a column, not the JSON.
    awaiting INTEGER
);
-- Dead letters, for the job list and retention.
CREATE INDEX IF NOT EXISTS jobs_failed ON jobs(seq) WHERE state = 'failed';
-- Jobs awaiting approval, for `status=awaiting_approval` and the console's approvals page.
CREATE INDEX IF NOT EXISTS jobs_awaiting ON jobs(seq)
    WHERE state = 'pending' AND awaiting IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    phase INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    action TEXT NOT NULL,
    rendered TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    exit_code INTEGER,
    stdout TEXT,
    stderr TEXT,
    error TEXT,
    status INTEGER,
    result TEXT,
    -- A re-run may repeat a run id and attempt number (on_failure again, a new generation
    -- from action 0): the start time keeps each try its own row.
    PRIMARY KEY (job_id, run_id, attempt, started_at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
";

/// Creates the state entry `?1` = `?2` at revision `?3`, expiring at `?4` (ms, or NULL), unless
/// one exists that has not expired by `?5` (ms): no row changes then. The state store's
/// `create` claims a key this way.
pub const CLAIM_STATE: &str =
    "INSERT INTO state (key, value, revision, expires_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT(key) DO UPDATE SET value = excluded.value,
       revision = excluded.revision, expires_at = excluded.expires_at
     WHERE state.expires_at IS NOT NULL AND state.expires_at < ?5";

/// The `jobs.awaiting` column of a job at `step`.
pub fn awaiting(step: &Step) -> Option<i64> {
    step.awaiting.as_ref().map(|a| a.deadline)
}

/// Format 2 to 3: `jobs.awaiting` filled from the steps, the index `jobs_awaiting` on it
/// instead of on `json_extract(step, '$.awaiting')` (the same jobs: a JSON `null` is none).
const FROM_2: &str = "
ALTER TABLE jobs ADD COLUMN awaiting INTEGER;
UPDATE jobs SET awaiting = coalesce(json_extract(step, '$.awaiting.deadline'), 0)
    WHERE json_extract(step, '$.awaiting') IS NOT NULL;
DROP INDEX IF EXISTS jobs_awaiting;
";

/// Format 3 to 4: each live delivery claim (a `dedup/<source>/<delivery>` row in `state`,
/// written by the event log's append) becomes its event's `dedup_until`; the rows go.
const FROM_3: &str = "
ALTER TABLE events ADD COLUMN dedup_until INTEGER;
UPDATE events SET dedup_until = (
    SELECT s.expires_at FROM state s
    WHERE s.key = 'dedup/' || events.source || '/' || events.delivery AND s.value = events.id)
  WHERE delivery IS NOT NULL;
DELETE FROM state WHERE key >= 'dedup/' AND key < 'dedup0';
";

/// Brings a journal of format `from` to [`SCHEMA_VERSION`] in one transaction (all of it or
/// nothing). `Ok(false)`: a format this release cannot migrate from (left untouched).
pub fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<bool> {
    let steps: &[&str] = match from {
        2 => &[FROM_2, FROM_3],
        3 => &[FROM_3],
        _ => return Ok(false),
    };
    let tx = conn.unchecked_transaction()?;
    for step in steps {
        tx.execute_batch(step)?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(true)
}
