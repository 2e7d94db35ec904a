//! The embedded journal: SQLite in WAL mode with `synchronous=FULL`.
//!
//! One writer thread owns the write connection. Requests queue on a channel; the writer takes
//! everything waiting (up to [`MAX_BATCH`]) and applies it in one transaction (group commit), so
//! an fsync is shared by every request that arrived while the previous one ran. Each request
//! runs in its own savepoint: one failing request does not take its batch-mates down.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{
    Appended, Close, EventFilter, Job, Journal, JournalError, NewJob, StoredEvent, Ticket,
};
use crate::actions::Outcome;
use crate::rules::EventDoc;
use crate::verify::VerifiedEvent;

const MAX_BATCH: usize = 1024;

/// Bumped whenever the tables change shape.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    delivery_key TEXT,
    received_at INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body TEXT NOT NULL,
    depth INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_source ON events(source, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    rulebook TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    next_action INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
-- A job's id starts with its event's id and ':', so the primary key also finds an event's jobs.
-- Pending jobs in insertion (= acceptance) order, for the pump.
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(state) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    action_index INTEGER NOT NULL,
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
    PRIMARY KEY (job_id, action_index, attempt)
);
CREATE TABLE IF NOT EXISTS throttles (
    rule TEXT NOT NULL,
    grp TEXT NOT NULL,
    until INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (rule, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS throttled (
    event_id TEXT NOT NULL,
    rulebook TEXT NOT NULL,
    rule TEXT NOT NULL,
    grp TEXT NOT NULL,
    fired_by TEXT NOT NULL,
    until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS throttled_event ON throttled(event_id);
CREATE TABLE IF NOT EXISTS tickets (
    dedup_key TEXT PRIMARY KEY,
    system TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

type WriteFn = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
/// Sends a request's reply once the batch's commit result (an error text or none) is known.
type Done = Box<dyn FnOnce(Option<&str>)>;
type Reply<T> = oneshot::Sender<Result<T, JournalError>>;

/// A write the writer thread applies inside a batch transaction.
enum Cmd {
    Append {
        event: Box<VerifiedEvent>,
        jobs: Vec<NewJob>,
        reply: Reply<Appended>,
    },
    Write {
        f: WriteFn,
        reply: Reply<()>,
    },
}

pub struct SqliteJournal {
    tx: mpsc::Sender<Cmd>,
    read: Arc<Mutex<Connection>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn storage(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(e.to_string())
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -16000)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteJournal {
    /// Opens (creating if needed) `dir/journal.db` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<SqliteJournal, JournalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("journal.db");
        let write = open(&path).map_err(storage)?;
        let version: i64 = write
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(storage)?;
        let fresh: bool = write
            .query_row(
                "SELECT COUNT(*) = 0 FROM sqlite_master WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .map_err(storage)?;
        if version != SCHEMA_VERSION && !fresh {
            return Err(JournalError::Storage(format!(
                "{} has journal format {version}; this rulehook uses {SCHEMA_VERSION}: keep the old data directory with the old release, or start with an empty one",
                path.display()
            )));
        }
        write.execute_batch(SCHEMA).map_err(storage)?;
        write
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(storage)?;
        write
            .execute(
                "DELETE FROM deliveries WHERE expires_at < ?1",
                params![now_ms()],
            )
            .map_err(storage)?;
        let read = open(&path).map_err(storage)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer(write, rx))
            .map_err(storage)?;
        Ok(SqliteJournal {
            tx,
            read: Arc::new(Mutex::new(read)),
        })
    }

    /// Runs `f` in the writer's next batch; its value is returned once the batch committed.
    async fn write<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (value_tx, value_rx) = oneshot::channel();
        let (reply, rx) = oneshot::channel();
        let f: WriteFn = Box::new(move |c| {
            let _ = value_tx.send(f(c)?);
            Ok(())
        });
        self.tx
            .send(Cmd::Write { f, reply })
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)??;
        value_rx.await.map_err(|_| JournalError::Closed)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.read.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| JournalError::Storage("read connection poisoned".into()))?;
            f(&guard).map_err(storage)
        })
        .await
        .map_err(storage)?
    }
}

/// The writer thread: batches, one transaction per batch, replies after the commit.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Cmd>) {
    let mut since_prune = 0usize;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        since_prune += batch.len();
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch, &e.to_string());
                continue;
            }
        };
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        for cmd in batch {
            match cmd {
                Cmd::Append { event, jobs, reply } => {
                    let r = in_savepoint(&tx, |sp| append(sp, *event, jobs));
                    done.push(Box::new(move |err| {
                        let _ = reply.send(match err {
                            None => r.map_err(storage),
                            Some(e) => Err(storage(e)),
                        });
                    }));
                }
                Cmd::Write { f, reply } => {
                    let r = in_savepoint(&tx, f);
                    done.push(Box::new(move |err| {
                        let _ = reply.send(match err {
                            None => r.map_err(storage),
                            Some(e) => Err(storage(e)),
                        });
                    }));
                }
            }
        }
        if since_prune > 10_000 {
            since_prune = 0;
            let _ = tx.execute(
                "DELETE FROM deliveries WHERE expires_at < ?1",
                params![now_ms()],
            );
        }
        let size = done.len();
        let started = std::time::Instant::now();
        let commit = tx.commit().err().map(|e| e.to_string());
        metrics::histogram!(crate::telemetry::names::COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::names::BATCH).record(size as f64);
        for d in done {
            d(commit.as_deref());
        }
    }
}

fn fail_all(batch: Vec<Cmd>, err: &str) {
    for cmd in batch {
        match cmd {
            Cmd::Append { reply, .. } => {
                let _ = reply.send(Err(storage(err)));
            }
            Cmd::Write { reply, .. } => {
                let _ = reply.send(Err(storage(err)));
            }
        }
    }
}

fn in_savepoint<T>(
    tx: &Transaction,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    // Cached: preparing these on every request showed in profiles.
    tx.prepare_cached("SAVEPOINT cmd")?.execute([])?;
    match f(tx) {
        Ok(v) => {
            tx.prepare_cached("RELEASE cmd")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO cmd; RELEASE cmd");
            Err(e)
        }
    }
}

fn append(
    conn: &Connection,
    event: VerifiedEvent,
    jobs: Vec<NewJob>,
) -> rusqlite::Result<Appended> {
    let now = now_ms();
    let source = event.source().to_string();
    if let Some(d) = event.delivery()
        && d.window.is_some()
    {
        let seen: Option<String> = conn
            .prepare_cached("SELECT event_id FROM deliveries WHERE source = ?1 AND key = ?2 AND expires_at >= ?3")?
            .query_row(params![source, d.key, now], |r| r.get(0))
            .optional()?;
        if let Some(id) = seen {
            conn.prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")?
                .execute(params![id])?;
            return Ok(Appended::Duplicate { id });
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    let headers = serde_json::to_string(event.headers()).unwrap_or_else(|_| "[]".into());
    let body = match event.raw_text() {
        Some(raw) => raw.to_string(),
        None => serde_json::to_string(event.body()).unwrap_or_else(|_| "null".into()),
    };
    let received_at = ms(event.received_at());
    conn.prepare_cached(
        "INSERT INTO events (id, source, kind, delivery_key, received_at, headers, body, depth)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        source,
        event.kind(),
        event.delivery().map(|d| d.key.as_str()),
        received_at,
        headers,
        body,
        event.depth()
    ])?;
    if let Some(d) = event.delivery()
        && let Some(w) = d.window
    {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO deliveries (source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![source, d.key, id, now + w.as_millis() as i64])?;
    }
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        if let Some((group, window)) = &j.throttle {
            let rule = format!("{}/{}", j.rulebook, j.rule);
            let active: Option<(String, i64)> = conn
                .prepare_cached("SELECT event_id, until FROM throttles WHERE rule = ?1 AND grp = ?2 AND until > ?3")?
                .query_row(params![rule, group, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((fired_by, until)) = active {
                conn.prepare_cached(
                    "INSERT INTO throttled (event_id, rulebook, rule, grp, fired_by, until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![id, j.rulebook, j.rule, group, fired_by, until])?;
                out.push(None);
                continue;
            }
            conn.prepare_cached("INSERT OR REPLACE INTO throttles (rule, grp, until, event_id) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![rule, group, now + window.as_millis() as i64, id])?;
        }
        let job_id = format!("{id}:{}", j.key);
        conn.prepare_cached(
            "INSERT OR IGNORE INTO jobs (id, event_id, rulebook, rule, state, created_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        )?
        .execute(params![job_id, id, j.rulebook, j.rule, now])?;
        out.push(Some(Job {
            id: job_id,
            event_id: id.clone(),
            rulebook: j.rulebook,
            rule: j.rule,
            next_action: 0,
            attempts: 0,
        }));
    }
    let depth = event.depth();
    let kind = event.kind().to_string();
    let event_headers = event.headers().to_vec();
    let stored = StoredEvent {
        id,
        source,
        kind,
        received_at,
        headers: event_headers,
        doc: event.into_doc(),
        depth,
    };
    Ok(Appended::New {
        event: Arc::new(stored),
        jobs: out,
    })
}

/// Moves a job past action `index` when it succeeded, and closes it when asked.
fn progress(
    tx: &Connection,
    job_id: &str,
    index: usize,
    ok: bool,
    close: Option<Close>,
) -> rusqlite::Result<()> {
    if ok {
        tx.prepare_cached("UPDATE jobs SET next_action = ?2 WHERE id = ?1")?
            .execute(params![job_id, index as i64 + 1])?;
    }
    if let Some(c) = close {
        tx.prepare_cached(
            "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
        )?
        .execute(params![job_id, c.state.as_str(), c.error, now_ms()])?;
    }
    Ok(())
}

fn row_event(r: &rusqlite::Row) -> rusqlite::Result<StoredEvent> {
    let headers: String = r.get("headers")?;
    let body: String = r.get("body")?;
    Ok(StoredEvent {
        id: r.get("id")?,
        source: r.get("source")?,
        kind: r.get("kind")?,
        received_at: r.get("received_at")?,
        headers: serde_json::from_str(&headers).unwrap_or_default(),
        doc: EventDoc::new(serde_json::from_str(&body).unwrap_or(Value::Null)),
        depth: r.get("depth")?,
    })
}

#[async_trait]
impl Journal for SqliteJournal {
    async fn append(
        &self,
        event: VerifiedEvent,
        jobs: Vec<NewJob>,
    ) -> Result<Appended, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append {
                event: Box::new(event),
                jobs,
                reply,
            })
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    async fn start_attempt(
        &self,
        job: &Job,
        index: usize,
        action: &'static str,
        rendered: Value,
        attempt: u32,
    ) -> Result<(), JournalError> {
        let (run_id, job_id) = (job.run_id(index), job.id.clone());
        let rendered = rendered.to_string();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (run_id, attempt, job_id, action_index, action, rendered, state, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
            )?
            .execute(params![run_id, attempt, job_id, index as i64, action, rendered, now_ms()])?;
            Ok(())
        })
        .await
    }

    async fn finish_attempt(
        &self,
        job: &Job,
        index: usize,
        attempt: u32,
        outcome: &Outcome,
        close: Option<Close>,
    ) -> Result<(), JournalError> {
        let job_id = job.id.clone();
        let o = outcome.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE attempts SET state = ?3, finished_at = ?4, exit_code = ?5, stdout = ?6, stderr = ?7, error = ?8,
                   status = ?9, result = ?10
                 WHERE job_id = ?1 AND action_index = ?11 AND attempt = ?2",
            )?
            .execute(params![
                job_id,
                attempt,
                if o.ok { "ok" } else { "failed" },
                now_ms(),
                o.exit_code,
                o.stdout,
                o.stderr,
                o.error,
                o.status,
                o.result.as_ref().map(Value::to_string),
                index as i64
            ])?;
            progress(tx, &job_id, index, o.ok, close)
        })
        .await
    }

    async fn record_attempt(
        &self,
        job: &Job,
        index: usize,
        action: &'static str,
        rendered: Value,
        attempt: u32,
        outcome: &Outcome,
        close: Option<Close>,
    ) -> Result<(), JournalError> {
        let (run_id, job_id) = (job.run_id(index), job.id.clone());
        let o = outcome.clone();
        let rendered = rendered.to_string();
        self.write(move |tx| {
            let now = now_ms();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO attempts (run_id, attempt, job_id, action_index, action, rendered, state,
                   started_at, finished_at, exit_code, stdout, stderr, error, status, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                run_id,
                attempt,
                job_id,
                index as i64,
                action,
                rendered,
                if o.ok { "ok" } else { "failed" },
                now,
                o.exit_code,
                o.stdout,
                o.stderr,
                o.error,
                o.status,
                o.result.as_ref().map(Value::to_string)
            ])?;
            progress(tx, &job_id, index, o.ok, close)
        })
        .await
    }

    async fn finish_job(&self, job: &Job, close: Close) -> Result<(), JournalError> {
        let id = job.id.clone();
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, close.state.as_str(), close.error, now_ms()])?;
            Ok(())
        })
        .await
    }

    async fn unfinished(
        &self,
        limit: usize,
        except: Vec<String>,
    ) -> Result<Vec<(Job, Arc<StoredEvent>)>, JournalError> {
        self.read(move |c| {
            let except: std::collections::HashSet<String> = except.into_iter().collect();
            let mut stmt = c.prepare_cached(
                "SELECT j.id AS job_id, j.rulebook, j.rule, j.next_action,
                        (SELECT COALESCE(MAX(a.attempt), 0) FROM attempts a
                          WHERE a.job_id = j.id AND a.action_index = j.next_action) AS attempts_done, e.*
                 FROM jobs j JOIN events e ON e.id = j.event_id
                 WHERE j.state = 'pending' ORDER BY j.rowid LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![(limit + except.len()) as i64], |r| {
                let job_id: String = r.get("job_id")?;
                if except.contains(&job_id) {
                    return Ok(None);
                }
                let event = row_event(r)?;
                let job = Job {
                    id: job_id,
                    event_id: event.id.clone(),
                    rulebook: r.get("rulebook")?,
                    rule: r.get("rule")?,
                    next_action: r.get::<_, i64>("next_action")? as usize,
                    attempts: r.get("attempts_done")?,
                };
                Ok(Some((job, event)))
            })?;
            let mut out: Vec<(Job, Arc<StoredEvent>)> = Vec::new();
            for row in rows {
                let Some((job, event)) = row? else { continue };
                // Jobs of one event share one copy of it.
                let event = match out.last() {
                    Some((_, e)) if e.id == event.id => e.clone(),
                    _ => Arc::new(event),
                };
                out.push((job, event));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ticket(&self, dedup_key: &str) -> Result<Option<Ticket>, JournalError> {
        let key = dedup_key.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT system, ticket_id, url FROM tickets WHERE dedup_key = ?1",
                params![key],
                |r| {
                    Ok(Ticket {
                        system: r.get(0)?,
                        id: r.get(1)?,
                        url: r.get(2)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn put_ticket(&self, dedup_key: &str, t: &Ticket) -> Result<(), JournalError> {
        let (key, t) = (dedup_key.to_string(), t.clone());
        self.write(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO tickets (dedup_key, system, ticket_id, url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, t.system, t.id, t.url, now_ms()],
            )?;
            Ok(())
        })
        .await
    }

    async fn close_ticket(&self, dedup_key: &str) -> Result<(), JournalError> {
        let key = dedup_key.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM tickets WHERE dedup_key = ?1", params![key])?;
            Ok(())
        })
        .await
    }

    async fn reopen_job(&self, job_id: &str) -> Result<bool, JournalError> {
        let id = job_id.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE jobs SET state = 'pending', error = NULL, finished_at = NULL WHERE id = ?1 AND state = 'failed'",
                params![id],
            )
            .map(|n| n > 0)
        })
        .await
    }

    async fn event(&self, id: &str) -> Result<Option<Arc<StoredEvent>>, JournalError> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row("SELECT * FROM events WHERE id = ?1", params![id], row_event)
                .optional()
                .map(|e| e.map(Arc::new))
        })
        .await
    }

    async fn list_events(&self, f: EventFilter) -> Result<Vec<Value>, JournalError> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT * FROM (
                   SELECT e.seq, e.id, e.source, e.kind, e.received_at, e.duplicates,
                        (SELECT COUNT(*) FROM jobs j WHERE j.id > e.id || ':' AND j.id < e.id || ';') AS jobs,
                        (SELECT COUNT(*) FROM jobs j WHERE j.id > e.id || ':' AND j.id < e.id || ';'
                            AND j.state = 'pending') AS pending,
                        (SELECT COUNT(*) FROM jobs j WHERE j.id > e.id || ':' AND j.id < e.id || ';'
                            AND j.state = 'failed') AS failed
                   FROM events e
                   WHERE (?1 IS NULL OR e.source = ?1) AND (?2 IS NULL OR e.received_at >= ?2))
                 WHERE ?4 IS NULL
                    OR (?4 = 'unmatched' AND jobs = 0)
                    OR (?4 = 'pending' AND pending > 0)
                    OR (?4 = 'failed' AND pending = 0 AND failed > 0)
                    OR (?4 = 'done' AND jobs > 0 AND pending = 0 AND failed = 0)
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![f.source, f.since, f.limit.max(1) as i64, f.status], |r| {
                let (jobs, pending, failed): (i64, i64, i64) = (r.get(6)?, r.get(7)?, r.get(8)?);
                let status = if jobs == 0 {
                    "unmatched"
                } else if pending > 0 {
                    "pending"
                } else if failed > 0 {
                    "failed"
                } else {
                    "done"
                };
                Ok(json!({
                    "id": r.get::<_, String>(1)?,
                    "source": r.get::<_, String>(2)?,
                    "kind": r.get::<_, String>(3)?,
                    "received_at": rfc3339(r.get(4)?),
                    "duplicates": r.get::<_, i64>(5)?,
                    "matched_rules": jobs,
                    "status": status,
                }))
            })?;
            rows.collect()
        })
        .await
    }

    async fn event_detail(&self, id: &str) -> Result<Option<Value>, JournalError> {
        let id = id.to_string();
        self.read(move |c| {
            let Some(event) = c
                .query_row("SELECT * FROM events WHERE id = ?1", params![id], |r| {
                    Ok((row_event(r)?, r.get::<_, i64>("duplicates")?))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut jobs_stmt = c.prepare(
                "SELECT id, rulebook, rule, state, next_action, error FROM jobs
                 WHERE id > ?1 || ':' AND id < ?1 || ';' ORDER BY rowid",
            )?;
            let mut att_stmt = c.prepare(
                "SELECT run_id, attempt, action_index, action, rendered, state, started_at, finished_at,
                        exit_code, stdout, stderr, error, status, result
                 FROM attempts WHERE job_id = ?1 ORDER BY started_at, action_index, attempt",
            )?;
            let mut jobs = Vec::new();
            let job_rows: Vec<(String, String, String, String, i64, Option<String>)> = jobs_stmt
                .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (job_id, rulebook, rule, state, next, error) in job_rows {
                let attempts: Vec<Value> = att_stmt
                    .query_map(params![job_id], |r| {
                        let rendered: String = r.get(4)?;
                        Ok(json!({
                            "run_id": r.get::<_, String>(0)?,
                            "attempt": r.get::<_, i64>(1)?,
                            "action_index": r.get::<_, i64>(2)?,
                            "action": r.get::<_, String>(3)?,
                            "rendered": serde_json::from_str::<Value>(&rendered).unwrap_or(Value::Null),
                            "status": r.get::<_, String>(5)?,
                            "started_at": rfc3339(r.get(6)?),
                            "finished_at": r.get::<_, Option<i64>>(7)?.map(rfc3339),
                            "exit_code": r.get::<_, Option<i64>>(8)?,
                            "stdout": r.get::<_, Option<String>>(9)?,
                            "stderr": r.get::<_, Option<String>>(10)?,
                            "error": r.get::<_, Option<String>>(11)?,
                            "http_status": r.get::<_, Option<i64>>(12)?,
                            "result": r.get::<_, Option<String>>(13)?
                                .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
                        }))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                jobs.push(json!({
                    "id": job_id, "rulebook": rulebook, "rule": rule, "status": state,
                    "next_action": next, "error": error, "attempts": attempts,
                }));
            }
            let throttled: Vec<Value> = c
                .prepare("SELECT rulebook, rule, grp, fired_by, until FROM throttled WHERE event_id = ?1")?
                .query_map(params![id], |r| {
                    Ok(json!({
                        "rulebook": r.get::<_, String>(0)?,
                        "rule": r.get::<_, String>(1)?,
                        "group": r.get::<_, String>(2)?,
                        "fired_by": r.get::<_, String>(3)?,
                        "until": rfc3339(r.get(4)?),
                    }))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let (e, duplicates) = event;
            Ok(Some(json!({
                "id": e.id,
                "source": e.source,
                "kind": e.kind,
                "received_at": rfc3339(e.received_at),
                "headers": e.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<serde_json::Map<String, Value>>(),
                "depth": e.depth,
                "duplicates": duplicates,
                "body": e.doc.body(),
                "matches": jobs,
                "throttled": throttled,
            })))
        })
        .await
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_journal_of_another_format() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteJournal::open(dir.path()).unwrap());
        assert!(
            SqliteJournal::open(dir.path()).is_ok(),
            "reopening the same format works"
        );
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = SqliteJournal::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("format 99"), "{err}");
    }
}
