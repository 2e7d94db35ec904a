//! The history's read model for backends whose truth lives elsewhere (JetStream): a node-local
//! SQLite database with the embedded store's tables, fed by [`Change`]s read from the streams,
//! answering the same typed queries as the embedded store ([`super::reads`]). So `/api/events`
//! and the event detail mean the same on every backend, and every node answers for all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, params};

use super::{insert_attempt_as, insert_event, reads, schema};
use crate::domain::{Attempt, Event, Job, JobState, Match, Step, StoreError};
use crate::store::history::{EventDetail, EventFilter, EventRow, JobFilter, JobRow};

/// One fact read from another backend's streams.
#[derive(Debug)]
pub enum Change {
    /// An accepted event (`seq`: its position in the event log).
    Event {
        seq: i64,
        event: Arc<Event>,
        matches: Vec<Match>,
    },
    /// A job's latest record (its step boxed: the largest part, kept out of the other facts).
    Job {
        id: String,
        state: JobState,
        step: Box<Step>,
        fingerprint: String,
        error: Option<String>,
        updated_at: i64,
    },
    Attempt {
        attempt: Box<Attempt>,
        action: String,
    },
    /// A redelivery of an event was refused.
    Duplicate { event_id: String },
    /// The job's lease was lost (its worker stopped): attempts it left running never finish.
    /// They are closed at `at_ms`, when another worker took the job over: the stopped one ran
    /// it for at least that long (closed at their start, they read "failed in 0ms").
    Interrupted { job_id: String, at_ms: i64 },
    /// Retention removed the event with its jobs and attempts.
    Forget { event_id: String },
}

impl Change {
    /// The event a change needs to exist before it can be applied.
    fn needs_event(&self) -> Option<&str> {
        match self {
            Change::Job { id, .. } => id.split(':').next(),
            Change::Duplicate { event_id } => Some(event_id),
            _ => None,
        }
    }
}

/// A node-local history database.
pub struct ReadModel {
    conn: Arc<Mutex<Inner>>,
}

struct Inner {
    conn: Connection,
    next_job: i64,
    /// Changes that arrived before their event (the streams are read independently).
    waiting: HashMap<String, Vec<Change>>,
}

fn storage(e: rusqlite::Error) -> StoreError {
    StoreError::Permanent(format!("history read model: {e}"))
}

impl ReadModel {
    /// A private temporary database (SQLite deletes it when closed; pages beyond the cache go
    /// to disk, so a long history does not live in memory).
    pub fn open() -> Result<ReadModel, StoreError> {
        let conn = Connection::open("").map_err(storage)?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(storage)?;
        conn.pragma_update(None, "cache_size", -16000)
            .map_err(storage)?;
        conn.execute_batch(schema::SCHEMA).map_err(storage)?;
        conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_id ON jobs(id); CREATE INDEX IF NOT EXISTS jobs_event ON jobs(event_seq);")
            .map_err(storage)?;
        Ok(ReadModel {
            conn: Arc::new(Mutex::new(Inner {
                conn,
                next_job: 1,
                waiting: HashMap::new(),
            })),
        })
    }

    /// Applies changes in one transaction (call from a blocking context).
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let tx = inner.conn.unchecked_transaction().map_err(storage)?;
        for change in changes {
            apply_one(&tx, &mut inner.next_job, &mut inner.waiting, change).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&guard.conn).map_err(storage)
        })
        .await
        .map_err(|e| StoreError::Transient(e.to_string()))?
    }

    pub async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.read(move |c| reads::events(c, &filter)).await
    }

    pub async fn contents(
        &self,
        ids: Vec<String>,
        max_body: usize,
    ) -> Result<Vec<crate::store::EventContent>, StoreError> {
        self.read(move |c| reads::contents(c, &ids, max_body)).await
    }

    pub async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError> {
        let id = id.to_string();
        self.read(move |c| reads::event_detail(c, &id)).await
    }

    pub async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRow>, StoreError> {
        self.read(move |c| reads::jobs(c, &filter)).await
    }

    pub async fn job(&self, id: &str) -> Result<Option<(Job, JobState)>, StoreError> {
        let id = id.to_string();
        self.read(move |c| reads::job(c, &id)).await
    }

    pub async fn stored(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<crate::store::Stored>, StoreError> {
        self.read(move |c| reads::stored(c, since_ms, after.as_deref(), limit))
            .await
    }

    /// Events received before `before` whose jobs all finished well and none changed since
    /// `before` (the same rule as [`reads::prune`]): (event id, log position, job ids), at most
    /// `limit`.
    pub async fn prunable(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<(String, i64, Vec<String>)>, StoreError> {
        self.read(move |c| {
            let mut out = Vec::new();
            let mut stmt = c.prepare_cached(
                "SELECT e.seq, e.id FROM events e WHERE e.received_at < ?1 AND NOT EXISTS
                   (SELECT 1 FROM jobs j WHERE j.event_seq = e.seq
                      AND (j.state != 'done' OR j.updated_at >= ?1))
                 ORDER BY e.seq LIMIT ?2",
            )?;
            let rows: Vec<(i64, String)> = stmt
                .query_map(params![before, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (seq, id) in rows {
                let jobs: Vec<String> = c
                    .prepare_cached("SELECT id FROM jobs WHERE event_seq = ?1")?
                    .query_map(params![seq], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                out.push((id, seq, jobs));
            }
            Ok(out)
        })
        .await
    }
}

fn apply_one(
    c: &Connection,
    next_job: &mut i64,
    waiting: &mut HashMap<String, Vec<Change>>,
    change: Change,
) -> rusqlite::Result<()> {
    if let Some(event) = change.needs_event() {
        let known: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1)")?
            .query_row(params![event], |r| r.get(0))?;
        if !known {
            waiting.entry(event.to_string()).or_default().push(change);
            return Ok(());
        }
    }
    match change {
        Change::Event {
            seq,
            event,
            matches,
        } => {
            let exists: bool = c
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE seq = ?1)")?
                .query_row(params![seq], |r| r.get(0))?;
            if exists {
                return Ok(());
            }
            let headers = serde_json::to_string(&event.headers).unwrap_or_default();
            let matches_json = serde_json::to_string(&matches).unwrap_or_default();
            let jobs = insert_event(
                c,
                seq,
                *next_job,
                &event,
                &matches,
                &headers,
                &matches_json,
                None,
            )?;
            *next_job += jobs.len() as i64;
            for later in waiting.remove(&event.id).unwrap_or_default() {
                apply_one(c, next_job, waiting, later)?;
            }
        }
        Change::Job {
            id,
            state,
            step,
            fingerprint,
            error,
            updated_at,
        } => {
            let awaiting = schema::awaiting(&step);
            let step = serde_json::to_string(&step).unwrap_or_else(|_| "{}".into());
            c.prepare_cached(
                "UPDATE jobs SET state = ?2, step = ?3, fingerprint = ?4, error = ?5, updated_at = ?6,
                   awaiting = ?7
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state.as_str(),
                step,
                fingerprint,
                error,
                updated_at,
                awaiting
            ])?;
        }
        Change::Attempt { attempt, action } => insert_attempt_as(c, &attempt, &action)?,
        Change::Duplicate { event_id } => {
            c.prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")?
                .execute(params![event_id])?;
        }
        Change::Interrupted { job_id, at_ms } => {
            c.prepare_cached(
                "UPDATE attempts SET state = 'failed', finished_at = MAX(started_at, ?2),
                   error = 'interrupted: its worker stopped while it ran (it runs again)'
                 WHERE job_id = ?1 AND state = 'running'",
            )?
            .execute(params![job_id, at_ms])?;
        }
        Change::Forget { event_id } => {
            c.prepare_cached(
                "DELETE FROM attempts WHERE job_id >= ?1 || ':' AND job_id < ?1 || ';'",
            )?
            .execute(params![event_id])?;
            c.prepare_cached(
                "DELETE FROM jobs WHERE event_seq IN (SELECT seq FROM events WHERE id = ?1)",
            )?
            .execute(params![event_id])?;
            c.prepare_cached("DELETE FROM events WHERE id = ?1")?
                .execute(params![event_id])?;
            waiting.remove(&event_id);
        }
    }
    Ok(())
}
