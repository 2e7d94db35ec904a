//! The one writer thread of the embedded store: group commit.
//!
//! Requests queue on a channel; the writer takes everything waiting (up to [`MAX_BATCH`]) and
//! applies it in one transaction. Requests are applied plainly first; only if one of them fails
//! is the transaction rolled back and the batch applied again, each request in its own
//! savepoint (so one failing request does not take its batch-mates down, and the common batch
//! pays for no savepoint). Requests are therefore `FnMut`: one may run twice, and only the run
//! that is committed counts. After the commit the writer hands new and re-run jobs to the
//! queue's memory, in sequence order, then replies with each request's value, and only then
//! wakes the workers that have new jobs: woken first, a worker took the core from the writer
//! (it starts a job, a script's spawn among it) before the 202s went out, and an idle
//! `POST → 202` was ~1.8 ms instead of ~1.0 (benches/load.sh). A job is in memory before its
//! reply, so whoever looks after the reply finds it. The writer also refills that memory from
//! the job table when jobs were spilled, so pushes and refills never race.

use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, Statement};
use tokio::sync::{Notify, oneshot};

use super::deliveries::{Claim, Deliveries, Key};
use super::lanes::{Lanes, Queued};
use crate::domain::StoreError;

pub const MAX_BATCH: usize = 1024;

/// What a write hands to the queue's memory once committed.
pub enum Push {
    New(Queued),
    Rerun(Queued),
    /// A lease ends (ack), or its job comes back after a delay (nak).
    Release {
        token: u64,
        again: Option<(crate::domain::Job, std::time::Duration)>,
        lost: bool,
    },
    /// A delivery id claimed by an appended event (kept in memory once committed).
    Claim {
        key: Key,
        claim: Claim,
    },
}

/// What a write returns to its caller once committed (the caller knows its type).
pub type Value = Box<dyn std::any::Any + Send>;

/// A write: SQL on the writer's transaction, and what it hands to the queue's memory. It may
/// run twice (a batch-mate failed and the batch is applied again): its effects outside the
/// transaction must be the same when it runs again.
pub type WriteFn =
    Box<dyn for<'c> FnMut(&Tx<'c>, &mut Vec<Push>) -> rusqlite::Result<Value> + Send + 'static>;

/// Where a write's value (or its error) goes once its batch is committed (or not).
pub type Reply = oneshot::Sender<Result<Value, StoreError>>;

/// The writer's connection, with the statements of the hot path kept prepared for as long as
/// the writer runs ([`Exec::run`]). rusqlite's statement cache hashes the SQL text on every
/// look-up, and again (with a reset, a clearing of the bindings and an LRU node) when the
/// statement goes back: ~1.5k instructions per statement, 11k per event for the seven or so
/// statements an event and its job take. Here a statement is found by the address of its
/// `&'static str`. Derefs to the connection for everything else.
pub struct Tx<'c> {
    conn: &'c Connection,
    kept: std::cell::RefCell<Vec<(usize, Statement<'c>)>>,
}

/// Statements kept by a [`Tx`] at most (the hot path has about a dozen).
const KEPT: usize = 32;

impl<'c> Tx<'c> {
    pub fn new(conn: &'c Connection) -> Tx<'c> {
        Tx {
            conn,
            kept: Default::default(),
        }
    }

    /// Runs `f` on the statement of `sql`, prepared once. (A statement in use already, by a
    /// caller up the stack, is prepared through the connection's cache instead.)
    pub fn with<T>(
        &self,
        sql: &'static str,
        f: impl FnOnce(&mut Statement<'c>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let key = sql.as_ptr() as usize;
        let Ok(mut kept) = self.kept.try_borrow_mut() else {
            return f(&mut *self.conn.prepare_cached(sql)?);
        };
        let at = match kept.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None if kept.len() < KEPT => {
                kept.push((key, self.conn.prepare(sql)?));
                kept.len() - 1
            }
            None => {
                drop(kept);
                return f(&mut *self.conn.prepare_cached(sql)?);
            }
        };
        f(&mut kept[at].1)
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Runs a statement given as a `&'static str`: kept prepared by the writer's [`Tx`], from
/// the connection's statement cache elsewhere (the read model other backends build).
pub trait Exec {
    fn run<P: rusqlite::Params>(&self, sql: &'static str, params: P) -> rusqlite::Result<usize>;
}

impl Exec for Connection {
    fn run<P: rusqlite::Params>(&self, sql: &'static str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

impl Exec for Tx<'_> {
    fn run<P: rusqlite::Params>(&self, sql: &'static str, params: P) -> rusqlite::Result<usize> {
        self.with(sql, |s| s.execute(params))
    }
}

pub enum Cmd {
    Write {
        f: WriteFn,
        reply: Reply,
        /// When its batch is applied again in savepoints, this write takes one, so a failure
        /// undoes all of it and nothing else. A write of one statement needs none: SQLite
        /// undoes a failed statement by itself.
        savepoint: bool,
    },
    /// Load up to this many spilled jobs into memory.
    Refill(usize),
}

/// What the writer shares with the async side.
pub struct Shared {
    pub lanes: Mutex<Lanes>,
    pub ready: Notify,
    /// Committed delivery claims: read by appends on this thread, by `StateStore::get`.
    pub deliveries: Mutex<Deliveries>,
}

impl Shared {
    pub fn deliveries(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn storage(e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    if text.contains("locked") || text.contains("busy") {
        StoreError::Transient(text)
    } else {
        StoreError::Permanent(text)
    }
}

pub type Refill = Box<dyn Fn(&Connection, i64, usize) -> rusqlite::Result<Vec<Loaded>> + Send>;

/// A job read back from the table, with when it may run.
pub struct Loaded {
    pub q: Queued,
    pub due: Option<std::time::Instant>,
}

/// The journal file this process opened, so that a journal deleted or replaced under it (`rm -rf
/// DATA` while serving: SQLite would write on into the unlinked file) is noticed after every
/// commit, and nothing written since is reported as stored.
pub struct JournalFile {
    path: std::path::PathBuf,
    id: Option<(u64, u64)>,
    lost: std::sync::atomic::AtomicBool,
}

impl JournalFile {
    pub fn new(path: &std::path::Path) -> JournalFile {
        JournalFile {
            path: path.to_path_buf(),
            id: file_id(path),
            lost: Default::default(),
        }
    }

    /// `Some(why)` once the file at the path is no longer the one written to (sticky).
    fn check(&self) -> Option<String> {
        if let Some(why) = self.known_lost() {
            return Some(why);
        }
        if self.id.is_some() && file_id(&self.path) != self.id {
            self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::error!("{}", self.why());
            return Some(self.why());
        }
        None
    }

    /// `Some(why)` if a check found the file lost already: no look at the file system. Before
    /// a batch this is enough, as [`JournalFile::check`] runs after every commit, before any
    /// of it is reported as stored.
    fn known_lost(&self) -> Option<String> {
        self.lost
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| self.why())
    }

    fn why(&self) -> String {
        format!(
            "the journal {} was deleted or replaced while in use: nothing can be stored until rulehook is restarted on a working data directory",
            self.path.display()
        )
    }
}

fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub fn run(
    conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    refill: Refill,
    journal: JournalFile,
) {
    let tx = Tx::new(&conn);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut writes = Vec::with_capacity(batch.len());
        let mut refill_limit = None;
        for cmd in batch {
            match cmd {
                Cmd::Write {
                    f,
                    reply,
                    savepoint,
                } => writes.push((f, reply, savepoint)),
                Cmd::Refill(n) => refill_limit = Some(n),
            }
        }
        if !writes.is_empty() {
            // Replied to already: now the workers (see the module's doc for why in this order).
            if let Some((ready, all)) = apply(&tx, writes, &shared, &journal) {
                wake(&shared.ready, ready, all);
            }
        }
        if let Some(n) = refill_limit {
            do_refill(&conn, n, &shared, &refill);
        }
    }
}

/// A write, where its result goes, and whether it runs in a savepoint.
type Pending = (WriteFn, Reply, bool);

/// Applies and commits a batch, hands its jobs to the queue's memory and replies to every
/// write; returns whom to wake ([`wake`]'s arguments), which it leaves to the caller, to do
/// after the replies.
fn apply(
    tx: &Tx<'_>,
    mut writes: Vec<Pending>,
    shared: &Shared,
    journal: &JournalFile,
) -> Option<(usize, bool)> {
    if let Some(why) = journal.known_lost() {
        for (_, reply, _) in writes {
            let _ = reply.send(Err(StoreError::Permanent(why.clone())));
        }
        return None;
    }
    let mut pushes = Vec::new();
    // Plainly first: one transaction, no savepoints. A failure rolls the whole batch back; a
    // write alone is then answered with its error, a batch applied again in savepoints.
    let results = match run_batch(tx, &mut writes, &mut pushes, false) {
        Ok(results) => results,
        Err(e) if writes.len() == 1 => {
            let _ = tx.execute_batch("ROLLBACK");
            for (_, reply, _) in writes {
                let _ = reply.send(Err(storage(&e)));
            }
            return None;
        }
        Err(_) => {
            let _ = tx.execute_batch("ROLLBACK");
            pushes.clear();
            tracing::debug!(
                writes = writes.len(),
                "a write failed: applying its batch again in savepoints"
            );
            match run_batch(tx, &mut writes, &mut pushes, true) {
                Ok(results) => results,
                Err(e) => {
                    let _ = tx.execute_batch("ROLLBACK");
                    for (_, reply, _) in writes {
                        let _ = reply.send(Err(storage(&e)));
                    }
                    return None;
                }
            }
        }
    };
    let size = results.len();
    let started = std::time::Instant::now();
    let commit = tx
        .run("COMMIT", [])
        .err()
        .map(|e| {
            let _ = tx.execute_batch("ROLLBACK");
            storage(&e)
        })
        // Committed into a file that is no longer the journal: as good as lost.
        .or_else(|| journal.check().map(StoreError::Permanent));
    metrics::histogram!(crate::telemetry::names::COMMIT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(crate::telemetry::names::BATCH).record(size as f64);
    let woken = match commit {
        None if !pushes.is_empty() => Some(hand_over(shared, pushes)),
        _ => None,
    };
    for ((_, reply, _), r) in writes.into_iter().zip(results) {
        let _ = reply.send(match (&commit, r) {
            (Some(e), _) => Err(e.clone()),
            (None, r) => r.map_err(storage),
        });
    }
    woken
}

/// Applies every write of a batch in one transaction (`BEGIN` included). Plainly
/// (`savepoints: false`), the first failure ends the pass with its error; in savepoints, a
/// failing write's changes and pushes are undone and its error is its result.
fn run_batch(
    tx: &Tx<'_>,
    writes: &mut [Pending],
    pushes: &mut Vec<Push>,
    savepoints: bool,
) -> rusqlite::Result<Vec<rusqlite::Result<Value>>> {
    // Kept statements: `Connection::transaction` parses BEGIN and COMMIT every time.
    tx.run("BEGIN", [])?;
    let mut results = Vec::with_capacity(writes.len());
    for (f, _, savepoint) in writes.iter_mut() {
        let mark = pushes.len();
        let r = if savepoints && *savepoint {
            in_savepoint(tx, |c| f(c, pushes))
        } else {
            f(tx, pushes)
        };
        match r {
            Err(e) if !savepoints => return Err(e),
            Err(e) => {
                pushes.truncate(mark);
                results.push(Err(e));
            }
            Ok(v) => results.push(Ok(v)),
        }
    }
    Ok(results)
}

/// Hands a committed batch's new, re-run and released jobs to the queue's memory; says whom to
/// wake ([`wake`]'s arguments), which the writer does once it has replied.
fn hand_over(shared: &Shared, pushes: Vec<Push>) -> (usize, bool) {
    let (mut ready, mut wake_all) = (0usize, false);
    let mut lanes = shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
    // Taken once for the batch's claims, at the first one.
    let mut deliveries = None;
    let now = crate::domain::now_ms();
    for p in pushes {
        match p {
            Push::Claim { key, claim } => {
                deliveries
                    .get_or_insert_with(|| shared.deliveries())
                    .insert(key, claim, now);
            }
            Push::New(q) => {
                lanes.push_new(q);
                ready += 1;
            }
            Push::Rerun(q) => {
                lanes.push_rerun(q);
                ready += 1;
            }
            Push::Release { token, again, lost } => {
                // A job coming back (now or after a delay) may be due before the time an idle
                // worker waits until: every waiting worker looks again.
                wake_all |= again.is_some();
                lanes.release(token, again, lost);
            }
        }
    }
    drop(deliveries);
    drop(lanes);
    (ready, wake_all)
}

/// Wakes the idle workers that have work: one per job that became ready (a woken worker that
/// finds nothing, or a notice with nobody waiting, costs one look at the lanes), or every one
/// of them when due times changed. A lease that merely ended (an ack) wakes nobody. (Waking
/// every idle worker on every commit made four looks into the lanes per event, ~1.7k each.)
fn wake(ready_notify: &Notify, ready: usize, all: bool) {
    if all {
        ready_notify.notify_waiters();
    } else {
        for _ in 0..ready {
            ready_notify.notify_one();
        }
    }
}

fn do_refill(conn: &Connection, limit: usize, shared: &Shared, refill: &Refill) {
    let cursor = shared
        .lanes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .cursor;
    let loaded = refill(conn, cursor, limit);
    let mut lanes = shared.lanes.lock().unwrap_or_else(|e| e.into_inner());
    lanes.refilling = false;
    match loaded {
        Ok(jobs) => {
            let complete = jobs.len() < limit;
            for l in jobs {
                lanes.push_loaded(l.q, l.due);
            }
            if complete {
                lanes.spilled = false;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot load pending jobs; trying again shortly"),
    }
    drop(lanes);
    shared.ready.notify_waiters();
}

fn in_savepoint<'c, T>(
    tx: &Tx<'c>,
    f: impl FnOnce(&Tx<'c>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    // Kept prepared: preparing these on every request showed in profiles.
    tx.run("SAVEPOINT cmd", [])?;
    match f(tx) {
        Ok(v) => {
            tx.run("RELEASE cmd", [])?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO cmd; RELEASE cmd");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write whose second statement fails: its first insert must not be committed.
    fn failing() -> WriteFn {
        Box::new(|c, _| {
            c.execute("INSERT INTO t (v) VALUES ('partial')", [])?;
            c.execute("INSERT INTO missing (v) VALUES (1)", [])?;
            Ok(Box::new(()) as Value)
        })
    }

    fn ok(v: &'static str) -> WriteFn {
        Box::new(move |c, _| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .map(|_| Box::new(()) as Value)
        })
    }

    fn apply_batch(
        conn: &Connection,
        dir: &std::path::Path,
        writes: Vec<(WriteFn, bool)>,
    ) -> Vec<Result<Value, StoreError>> {
        let shared = Shared {
            lanes: Mutex::new(Lanes::new()),
            ready: Notify::new(),
            deliveries: Default::default(),
        };
        let journal = JournalFile::new(&dir.join("j.db"));
        let mut rxs = Vec::new();
        let pending = writes
            .into_iter()
            .map(|(f, savepoint)| {
                let (tx, rx) = oneshot::channel();
                rxs.push(rx);
                (f, tx, savepoint)
            })
            .collect();
        apply(&Tx::new(conn), pending, &shared, &journal);
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().unwrap_or_else(|e| panic!("no answer: {e}")))
            .collect()
    }

    /// A write that makes one job ready.
    fn new_job() -> WriteFn {
        Box::new(|c, pushes| {
            c.execute("INSERT INTO t (v) VALUES ('job')", [])?;
            pushes.push(Push::New(Queued {
                seq: 1,
                job: crate::domain::Job {
                    id: "e1:r".into(),
                    event_id: "e1".into(),
                    rulebook: "b".into(),
                    rule: "r".into(),
                    key: "r".into(),
                    fingerprint: "f".into(),
                    step: Default::default(),
                },
                event: None,
                deliveries: 0,
                lost: 0,
            }));
            Ok(Box::new(()) as Value)
        })
    }

    #[test]
    fn a_batch_is_answered_with_its_jobs_in_memory_and_nobody_woken_yet() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("j.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        // Loaded already (a new store's memory counts as spilled until its first refill).
        let mut lanes = Lanes::new();
        lanes.spilled = false;
        let shared = Shared {
            lanes: Mutex::new(lanes),
            ready: Notify::new(),
            deliveries: Default::default(),
        };
        let journal = JournalFile::new(&dir.path().join("j.db"));
        let (reply, mut rx) = oneshot::channel();
        let woken = apply(
            &Tx::new(&conn),
            vec![(new_job(), reply, false)],
            &shared,
            &journal,
        );
        assert!(rx.try_recv().is_ok_and(|r| r.is_ok()), "not answered");
        assert_eq!(
            shared.lanes.lock().unwrap().ready(),
            1,
            "the job is not in memory"
        );
        // A notice given with nobody waiting is kept: none is, until the caller wakes.
        let notified = futures_util::FutureExt::now_or_never(shared.ready.notified());
        assert!(notified.is_none(), "a worker was woken before the replies");
        assert_eq!(woken, Some((1, false)));
        wake(&shared.ready, 1, false);
        assert!(futures_util::FutureExt::now_or_never(shared.ready.notified()).is_some());
    }

    fn oks(results: &[Result<Value, StoreError>]) -> Vec<bool> {
        results.iter().map(Result::is_ok).collect()
    }

    /// A write that counts its runs, inserts its run number and answers it.
    fn counting(runs: Arc<std::sync::atomic::AtomicUsize>) -> WriteFn {
        Box::new(move |c, _| {
            let n = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            c.execute("INSERT INTO t (v) VALUES (?1)", [format!("run {n}")])?;
            Ok(Box::new(n) as Value)
        })
    }

    fn value(r: &Result<Value, StoreError>) -> usize {
        match r {
            Ok(v) => *v.downcast_ref::<usize>().unwrap(),
            Err(e) => panic!("{e}"),
        }
    }

    fn rows(conn: &Connection) -> Vec<String> {
        let mut s = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn a_failing_write_leaves_nothing_alone_or_among_others() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("j.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        // Alone in its batch (no savepoint taken): rolled back whole, answered with the error.
        assert_eq!(
            oks(&apply_batch(&conn, dir.path(), vec![(failing(), true)])),
            [false]
        );
        assert!(rows(&conn).is_empty());
        assert!(conn.is_autocommit(), "the transaction was ended");
        // Among others: only its own changes are undone.
        let got = oks(&apply_batch(
            &conn,
            dir.path(),
            vec![(ok("a"), true), (failing(), true), (ok("b"), false)],
        ));
        assert_eq!(got, [true, false, true]);
        assert_eq!(rows(&conn), ["a", "b"]);
        // Alone and fine: committed.
        assert_eq!(
            oks(&apply_batch(&conn, dir.path(), vec![(ok("c"), true)])),
            [true]
        );
        assert_eq!(rows(&conn), ["a", "b", "c"]);
    }

    #[test]
    fn a_batch_is_applied_again_only_when_a_write_fails_and_the_committed_run_answers() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("j.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT)").unwrap();
        // Every write fine: each runs once.
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let got = apply_batch(
            &conn,
            dir.path(),
            vec![(counting(runs.clone()), true), (ok("a"), true)],
        );
        assert_eq!(value(&got[0]), 1);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(rows(&conn), ["run 1", "a"]);
        // A batch-mate fails: the batch is rolled back and applied again in savepoints; the
        // first run left nothing, and the answer is the committed run's.
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let got = apply_batch(
            &conn,
            dir.path(),
            vec![
                (counting(runs.clone()), true),
                (failing(), true),
                (ok("b"), false),
            ],
        );
        assert_eq!(oks(&got), [true, false, true]);
        assert_eq!(value(&got[0]), 2);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(rows(&conn), ["run 1", "a", "run 2", "b"]);
        assert!(conn.is_autocommit(), "the transaction was ended");
    }
}
