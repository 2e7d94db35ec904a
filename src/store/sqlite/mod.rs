//! The embedded store: SQLite in WAL mode with `synchronous=FULL`, one writer thread with group
//! commit ([`writer`]), a small pool of read connections, and the work queue's memory
//! ([`lanes`]). One process owns a data directory (leases live in its memory: after a crash
//! every lease is gone, so every pending job is fetchable again with its recorded step).

mod deliveries;
mod history;
mod lanes;
mod log;
mod queue;
mod state;
pub use readonly::ReadOnly;
pub mod model;
mod readonly;
mod reads;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Appended, EventDetail, EventFilter, EventLog, EventRow, History, JobFilter, JobRow, Lease,
    Pruned, QueueDepth, Revision, StateStore, WorkQueue,
};
use crate::domain::{
    Attempt, ENVELOPE_VERSION, Envelope, Event, Job, JobState, Phase, Step, StoreError, now_ms,
};
pub use lanes::CAP as MEMORY_CAP;
use lanes::{CAP, Lanes, Next, Queued};
use writer::{Cmd, Exec, Loaded, Push, Shared, Tx, storage};

/// A job whose lease was lost this many times (it expired, or a panicking worker abandoned it)
/// becomes a dead letter. Retries (`nak`) do not count: their budget is the action's `retries`.
pub const MAX_DELIVERIES: u32 = 10;

/// Writes (appends, state changes, re-runs) queued for the writer thread at once; more wait
/// for a place.
pub const MAX_WAITING_WRITES: usize = 4096;

pub struct Embedded {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    reads: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// Next sequence numbers, used only inside writes (on the writer thread).
    next_event: Arc<AtomicI64>,
    next_job: Arc<AtomicI64>,
    next_rev: Arc<AtomicU64>,
    max_deliveries: u32,
    /// Writes waiting for their commit at most ([`MAX_WAITING_WRITES`]): the writer's channel
    /// stays bounded however many requests arrive (acks and naks, which do not wait, are
    /// bounded by the leases).
    waiting: Arc<tokio::sync::Semaphore>,
    /// Pending jobs (counted at open, then kept by append, ack and rerun) for `depth().pending`.
    pending: Arc<AtomicUsize>,
    /// Held while the store is open: leases live in this process's memory, so a second process
    /// on the same directory would run every job twice.
    _lock: std::fs::File,
}

fn shut_down() -> StoreError {
    StoreError::Transient("the store has shut down".into())
}

/// How long opening a data directory waits for its lock before reporting its owner.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Takes the data directory for this process (`dir/lock`, with the owner's pid inside). Every
/// backend takes it: the directory also records this process's running scripts.
pub fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Permanent(format!("cannot open {}: {e}", path.display())))?;
    // A process killed a moment ago may still hold it through a child between `fork` and
    // `exec` (the descriptor is close-on-exec): a restart waits a little before giving up.
    let start = std::time::Instant::now();
    let mut locked = file.try_lock().is_ok();
    while !locked && start.elapsed() < LOCK_WAIT {
        std::thread::sleep(Duration::from_millis(100));
        locked = file.try_lock().is_ok();
    }
    if !locked {
        let mut owner = String::new();
        let _ = file.read_to_string(&mut owner);
        return Err(StoreError::Permanent(format!(
            "the data directory {} is in use by another rulehook process (pid {}): one process owns a data directory (give each node its own --data)",
            dir.display(),
            owner.trim()
        )));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// A connection to the journal through SQLite's `unix-excl` VFS: this process holds the file
/// exclusively (as `DATA/lock` promises) and the WAL index lives in heap memory, not in a
/// memory-mapped `journal.db-shm` — a shared-memory file that cannot be written (disk full,
/// truncated) would otherwise end the process with SIGBUS instead of an error.
fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn =
        Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), c"unix-excl")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -16000)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl Embedded {
    /// Opens (creating if needed) `dir/journal.db` and starts the writer thread.
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        Self::open_with(dir, MAX_DELIVERIES)
    }

    pub fn open_with(dir: &Path, max_deliveries: u32) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Permanent(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let path = dir.join("journal.db");
        let write = open_conn(&path).map_err(storage)?;
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
        let migrated = |e: rusqlite::Error| {
            StoreError::Permanent(format!(
                "{}: moving journal format {version} to {}: {e}",
                path.display(),
                schema::SCHEMA_VERSION
            ))
        };
        if version != schema::SCHEMA_VERSION
            && !fresh
            && !schema::migrate(&write, version).map_err(migrated)?
        {
            return Err(StoreError::Permanent(format!(
                "{} has journal format {version}; this rulehook uses {}: keep the old data directory with the old release, or start with an empty one",
                path.display(),
                schema::SCHEMA_VERSION
            )));
        }
        write.execute_batch(schema::SCHEMA).map_err(storage)?;
        write
            .pragma_update(None, "user_version", schema::SCHEMA_VERSION)
            .map_err(storage)?;
        // One process owns the store: an attempt still "running" belonged to a process that
        // stopped (crash, kill -9). Its job runs the action again; the history says what happened.
        write
            .execute(
                "UPDATE attempts SET state = 'failed', finished_at = ?1,
                   error = 'interrupted: the service stopped while it ran (it runs again)'
                 WHERE state = 'running'",
                params![now_ms()],
            )
            .map_err(storage)?;
        let max = |sql: &str| -> Result<i64, StoreError> {
            write
                .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.unwrap_or(0))
                .map_err(storage)
        };
        let next_event = Arc::new(AtomicI64::new(max("SELECT MAX(seq) FROM events")? + 1));
        let next_job = Arc::new(AtomicI64::new(max("SELECT MAX(seq) FROM jobs")? + 1));
        let next_rev = Arc::new(AtomicU64::new(
            max("SELECT MAX(revision) FROM state")? as u64 + 1,
        ));
        let pending = Arc::new(AtomicUsize::new(
            max("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")?.max(0) as usize,
        ));
        let mut deliveries = deliveries::Deliveries::default();
        deliveries.load(&write, now_ms()).map_err(storage)?;
        let shared = Arc::new(Shared {
            lanes: Mutex::new(Lanes::new()),
            ready: tokio::sync::Notify::new(),
            deliveries: Mutex::new(deliveries),
        });
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let journal = writer::JournalFile::new(&path);
                move || writer::run(write, rx, s, Box::new(reads::pending_after), journal)
            })
            .map_err(storage)?;
        let store = Embedded {
            tx,
            shared,
            reads: Arc::new(Mutex::new(Vec::new())),
            path,
            next_event,
            next_job,
            next_rev,
            max_deliveries: max_deliveries.max(1),
            pending,
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING_WRITES)),
            _lock: lock,
        };
        // Every pending job of an earlier run is loaded from the table.
        store.request_refill();
        Ok(store)
    }

    fn request_refill(&self) {
        {
            let mut lanes = self.lanes();
            if lanes.refilling || !lanes.spilled {
                return;
            }
            lanes.refilling = true;
        }
        if self.tx.send(Cmd::Refill(CAP / 2)).is_err() {
            self.lanes().refilling = false;
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.shared.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in the writer's next batch; its value is returned once the batch committed.
    /// `f` may run twice (see [`writer`]): only the committed run's value comes back.
    async fn write<T, F>(&self, mut f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&Tx<'c>, &mut Vec<Push>) -> rusqlite::Result<T> + Send + 'static,
    {
        let _place = self
            .waiting
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shut_down())?;
        let f: writer::WriteFn =
            Box::new(move |c, pushes| f(c, pushes).map(|v| Box::new(v) as writer::Value));
        let value = self.submit(f, true)?.await.map_err(|_| shut_down())??;
        value
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| StoreError::Permanent("a write's value has another type".into()))
    }

    /// Runs `f` on a pooled read connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.reads.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match conn {
                Some(c) => c,
                None => open_conn(&path).map_err(storage)?,
            };
            let r = f(&conn).map_err(storage);
            let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() < 4 {
                p.push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Transient(e.to_string()))?
    }

    /// The job row's new state, written if `lease` still holds the job.
    fn job_write(&self, lease: &Lease, u: JobUpdate) -> Result<writer::WriteFn, StoreError> {
        let JobUpdate {
            state,
            step,
            not_before,
            error,
            release,
            lost,
        } = u;
        if !self.lanes().holds(lease.token) {
            return Err(StoreError::Conflict(format!(
                "the lease on job {} has expired",
                lease.job.id
            )));
        }
        let (seq, token) = (lease.seq, lease.token);
        let awaiting = schema::awaiting(&step);
        let step = serde_json::to_string(&step).map_err(storage)?;
        Ok(Box::new(move |c, pushes| {
            c.run(
                "UPDATE jobs SET state = ?2, step = ?3, not_before = ?4, error = ?5, updated_at = ?6,
                   awaiting = ?7
                 WHERE seq = ?1",
                params![
                    seq,
                    state.as_str(),
                    step,
                    not_before,
                    error,
                    now_ms(),
                    awaiting
                ],
            )?;
            if let Some(again) = &release {
                let again = again.clone();
                pushes.push(Push::Release { token, again, lost });
            }
            Ok(Box::new(()) as writer::Value)
        }))
    }

    /// The job comes back after `delay` at `step` (`nak`; `abandon` when `lost`).
    fn give_back(
        &self,
        lease: &Lease,
        step: Step,
        delay: Duration,
        lost: bool,
    ) -> Result<(), StoreError> {
        let mut job = lease.job.clone();
        job.step = step.clone();
        let f = self.job_write(
            lease,
            JobUpdate {
                not_before: Some(now_ms() + delay.as_millis() as i64),
                release: Some(Some((job, delay))),
                lost,
                ..JobUpdate::new(JobState::Pending, &step)
            },
        )?;
        self.write_later(f)
    }

    /// Hands a write to the writer thread; the receiver answers once its batch committed.
    fn submit(
        &self,
        f: writer::WriteFn,
        savepoint: bool,
    ) -> Result<oneshot::Receiver<Result<writer::Value, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Write {
                f,
                reply,
                savepoint,
            })
            .map_err(|_| shut_down())?;
        Ok(rx)
    }

    /// Queues a write without waiting for its commit. What it hands to the queue's memory
    /// happens only once it is durable; if it never is, the lease it would have ended lapses
    /// and the job runs again.
    fn write_later(&self, f: writer::WriteFn) -> Result<(), StoreError> {
        self.submit(f, false).map(drop)
    }
}

/// A change to a leased job's row, and what happens to the lease once it is durable.
struct JobUpdate {
    state: JobState,
    step: Step,
    not_before: Option<i64>,
    error: Option<String>,
    /// `Some(None)`: the lease ends; `Some(Some((job, delay)))`: the job comes back after
    /// `delay`; `None`: the lease goes on (progress).
    release: Option<Option<(Job, Duration)>>,
    /// The lease was abandoned: it counts against the budget of lost leases.
    lost: bool,
}

impl JobUpdate {
    fn new(state: JobState, step: &Step) -> JobUpdate {
        JobUpdate {
            state,
            step: step.clone(),
            not_before: None,
            error: None,
            release: None,
            lost: false,
        }
    }
}

/// What a refill loads: pending jobs above `cursor`, in sequence order, with their events.
pub(crate) fn loaded(q: Queued, not_before: Option<i64>) -> Loaded {
    let due = not_before.and_then(|nb| {
        let wait = nb - now_ms();
        (wait > 0).then(|| Instant::now() + Duration::from_millis(wait as u64))
    });
    Loaded { q, due }
}

/// An event's row and one pending job row per match that makes a job (`Match::creates_job`) (sequence numbers from
/// `first_job` on); the jobs, in match order. Shared by the embedded store's append and the
/// read model other backends build ([`model`]). `dedup_until`: the end of the window of the
/// event's delivery id, which the embedded store keeps (none in a read model, whose backend
/// keeps its claims itself).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_event(
    c: &impl Exec,
    seq: i64,
    first_job: i64,
    event: &Event,
    matches: &[crate::domain::Match],
    headers: &str,
    matches_json: &str,
    dedup_until: Option<i64>,
) -> rusqlite::Result<Vec<Job>> {
    let live: Vec<_> = matches.iter().filter(|m| m.creates_job()).collect();
    // A partial correlation is not (yet) a match of its rule.
    let n_matches = matches.iter().filter(|m| !m.is_partial()).count() as i64;
    let first = (!live.is_empty()).then_some(first_job);
    let row = params![
        seq,
        event.id,
        event.source,
        event.kind,
        event.delivery,
        event.parent,
        event.received_at,
        headers,
        event.body_text,
        event.depth,
        ENVELOPE_VERSION,
        matches_json,
        n_matches,
        live.len() as i64,
        first,
        dedup_until,
    ];
    // The column is named only when set: NULL is its default.
    if dedup_until.is_some() {
        c.run(
            "INSERT INTO events (seq, id, source, kind, delivery, parent, received_at, headers, body,
               depth, envelope_version, matches, n_matches, n_jobs, first_job, dedup_until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            row,
        )?;
    } else {
        c.run(
            "INSERT INTO events (seq, id, source, kind, delivery, parent, received_at, headers, body,
               depth, envelope_version, matches, n_matches, n_jobs, first_job)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            &row[..15],
        )?;
    }
    let now = now_ms();
    let mut jobs = Vec::with_capacity(live.len());
    for (i, m) in live.into_iter().enumerate() {
        let job = Job {
            id: m.job_id(&event.id),
            event_id: event.id.clone(),
            rulebook: m.rulebook.clone(),
            rule: m.rule.clone(),
            key: m.key.clone(),
            fingerprint: m.fingerprint.clone(),
            step: Step::default(),
        };
        c.run(
            "INSERT INTO jobs (seq, id, event_seq, rulebook, rule, key, fingerprint, state, step, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', '{}', ?8)",
            params![
                first_job + i as i64,
                job.id,
                seq,
                job.rulebook,
                job.rule,
                job.key,
                job.fingerprint,
                now
            ],
        )?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// One attempt row: inserted when it starts, updated when it finishes.
fn insert_attempt(c: &impl Exec, a: &Attempt) -> rusqlite::Result<()> {
    insert_attempt_as(c, a, a.action)
}

/// [`insert_attempt`] with the action's kind given as text (read back from another backend).
pub(crate) fn insert_attempt_as(c: &impl Exec, a: &Attempt, action: &str) -> rusqlite::Result<()> {
    let o = a.outcome.as_ref();
    let state = match o {
        None => "running",
        Some(o) if o.ok => "ok",
        Some(_) => "failed",
    };
    c.run(
        "INSERT INTO attempts (job_id, phase, idx, attempt, run_id, action, rendered, state,
           started_at, finished_at, exit_code, stdout, stderr, error, status, result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (job_id, run_id, attempt, started_at) DO UPDATE SET state = excluded.state,
           finished_at = excluded.finished_at, exit_code = excluded.exit_code,
           stdout = excluded.stdout, stderr = excluded.stderr, error = excluded.error,
           status = excluded.status, result = excluded.result",
        params![
            a.job_id,
            (a.phase == Phase::OnFailure) as i64,
            a.index,
            a.attempt,
            a.run_id,
            action,
            a.rendered,
            state,
            a.started_at,
            a.finished_at,
            o.and_then(|o| o.exit_code),
            o.map(|o| o.stdout.as_str()),
            o.map(|o| o.stderr.as_str()),
            o.and_then(|o| o.error.as_deref()),
            o.and_then(|o| o.status),
            o.and_then(|o| o.result.as_ref().map(|r| r.to_string())),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_owns_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = Embedded::open(dir.path()).unwrap();
        let err = Embedded::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use by another rulehook process"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        assert!(Embedded::open(dir.path()).is_ok(), "free again once closed");
    }

    #[test]
    fn a_lock_released_within_the_wait_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(held);
        });
        let start = std::time::Instant::now();
        assert!(Embedded::open(dir.path()).is_ok());
        assert!(start.elapsed() >= Duration::from_millis(400));
        release.join().unwrap();
    }

    /// `.cargo/config.toml` builds the bundled SQLite with `HAVE_FDATASYNC` and
    /// `SQLITE_DEFAULT_MEMSTATUS=0`; the second is the one `compile_options` reports, so it
    /// tells that the flags reached the build.
    #[test]
    fn the_bundled_sqlite_is_built_with_the_projects_flags() {
        let c = Connection::open_in_memory().unwrap();
        let options: Vec<String> = c
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    /// The tables of journal format 2 (the jobs awaiting a decision indexed on the step's JSON).
    const SCHEMA_2: &str = "
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
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_parent ON events(parent) WHERE parent IS NOT NULL;
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
    updated_at INTEGER NOT NULL
);
-- Dead letters, for the job list and retention.
CREATE INDEX IF NOT EXISTS jobs_failed ON jobs(seq) WHERE state = 'failed';
-- Jobs awaiting approval, for `status=awaiting_approval` and the console's approvals page.
CREATE INDEX IF NOT EXISTS jobs_awaiting ON jobs(seq)
    WHERE state = 'pending' AND json_extract(step, '$.awaiting') IS NOT NULL;
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

    /// A format-2 journal is moved to the current format when it is opened: its job awaiting
    /// approval is the one the approvals query finds (not the one whose earlier action
    /// returned an object with an `awaiting` key, nor the plain one), through the new index.
    #[tokio::test]
    async fn a_format_2_journal_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        c.execute_batch(SCHEMA_2).unwrap();
        c.pragma_update(None, "user_version", 2).unwrap();
        let event = crate::verify::VerifiedEvent::replay(
            "in",
            "bearer",
            serde_json::json!({"n": 1}),
            &[],
            "x",
        )
        .accept();
        let matches: Vec<crate::domain::Match> = ["asks", "plain", "returned"]
            .iter()
            .map(|rule| crate::domain::Match {
                rulebook: "r".into(),
                rule: rule.to_string(),
                key: rule.to_string(),
                fingerprint: "f".into(),
                throttled: None,
                correlation: None,
            })
            .collect();
        let json = serde_json::to_string(&matches).unwrap();
        let jobs = insert_event(&c, 1, 1, &event, &matches, "{}", &json, None).unwrap();
        let set_step = |id: &str, step: &str| {
            c.execute("UPDATE jobs SET step = ?2 WHERE id = ?1", params![id, step])
                .unwrap();
        };
        set_step(
            &jobs[0].id,
            r#"{"awaiting":{"reason":"rule approval","requested_at":1,"deadline":5000}}"#,
        );
        set_step(&jobs[2].id, r#"{"previous":{"awaiting":{"deadline":1}}}"#);
        drop(c);

        let store = Embedded::open(dir.path()).unwrap();
        let awaiting = |status| {
            let store = &store;
            async move {
                let filter = JobFilter {
                    state: None,
                    status: Some(status),
                    rule: None,
                    limit: 0,
                };
                let rows = store.jobs(filter).await.unwrap();
                rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(
            awaiting(crate::store::JobStatus::AwaitingApproval).await,
            [jobs[0].id.clone()]
        );
        assert_eq!(
            awaiting(crate::store::JobStatus::Pending).await,
            [jobs[2].id.clone(), jobs[1].id.clone()]
        );
        drop(store);
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::SCHEMA_VERSION);
        let plan: String = c
            .query_row(
                &format!(
                    "EXPLAIN QUERY PLAN SELECT j.seq FROM jobs j WHERE {}",
                    crate::store::JobStatus::AwaitingApproval.sql()
                ),
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("jobs_awaiting"), "{plan}");
        let awaiting: Option<i64> = c
            .query_row(
                "SELECT awaiting FROM jobs WHERE id = ?1",
                params![jobs[0].id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(awaiting, Some(5000));
    }

    /// A format-3 journal (delivery claims as `state` rows) is moved to format 4 when it is
    /// opened: a claim still live makes a repeat a duplicate of its event, an expired one
    /// does not, and the rows are gone from `state`.
    #[tokio::test]
    async fn a_format_3_journal_keeps_its_delivery_claims() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        c.execute_batch(SCHEMA_2).unwrap();
        // Format 3, frozen: format 2 with `jobs.awaiting` and its index.
        c.execute_batch(
            "ALTER TABLE jobs ADD COLUMN awaiting INTEGER;
             DROP INDEX jobs_awaiting;
             CREATE INDEX jobs_awaiting ON jobs(seq) WHERE state = 'pending' AND awaiting IS NOT NULL;",
        )
        .unwrap();
        c.pragma_update(None, "user_version", 3).unwrap();
        let delivered = |n: i64, delivery: &str| {
            let mut event = crate::verify::VerifiedEvent::replay(
                "in",
                "bearer",
                serde_json::json!({"n": n}),
                &[],
                "x",
            )
            .accept();
            event.delivery = Some(delivery.to_string());
            event
        };
        let (live, expired) = (delivered(1, "d-live"), delivered(2, "d-old"));
        let far = now_ms() + 3_600_000;
        for (seq, event, until) in [(1, &live, far), (2, &expired, now_ms() - 1)] {
            insert_event(&c, seq, 1, event, &[], "{}", "[]", None).unwrap();
            c.execute(
                "INSERT INTO state (key, value, revision, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    format!("dedup/in/{}", event.delivery.as_deref().unwrap()),
                    event.id,
                    seq,
                    until
                ],
            )
            .unwrap();
        }
        drop(c);

        let store = Embedded::open(dir.path()).unwrap();
        let again = |n, delivery: &str| Envelope {
            event: Arc::new(delivered(n, delivery)),
            matches: Vec::new(),
            dedup_window: Some(Duration::from_secs(60)),
        };
        match store.append(again(3, "d-live")).await.unwrap() {
            Appended::Duplicate { id } => assert_eq!(id, live.id),
            a => panic!("the live claim was lost in the move: {a:?}"),
        }
        let fresh = store.append(again(4, "d-old")).await.unwrap();
        assert!(matches!(fresh, Appended::New { .. }), "{fresh:?}");
        drop(store);
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        let rows: i64 = c
            .query_row(
                "SELECT count(*) FROM state WHERE key LIKE 'dedup/%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
        let until: Option<i64> = c
            .query_row(
                "SELECT dedup_until FROM events WHERE id = ?1",
                params![live.id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(until, Some(far));
        // An open reads the live claims through the index, not every event.
        let plan: String = c
            .query_row(
                &format!("EXPLAIN QUERY PLAN {}", deliveries::LOAD),
                params![0],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("events_dedup"), "{plan}");
    }

    #[test]
    fn refuses_a_store_of_another_format() {
        let dir = tempfile::tempdir().unwrap();
        drop(Embedded::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        drop(c);
        let err = Embedded::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("format 1") && err.contains("uses 4"), "{err}");
    }
}
