//! The engine: matches verified events against the current rule set, appends them to the event
//! log with their matches, and runs the jobs that creates with workers that pull leases from
//! the work queue.
//!
//! At least once: a job is in the queue before the sender hears 202; a worker records each
//! step before moving on and acks only when the job has finished; a lease that is not acked
//! (crash, panic, lost lease) makes the job fetchable again with the same run ids.

pub mod approval;
mod correlate;
mod gate;
mod ingest;
mod job;
pub mod state;
mod throttle;
mod versions;
mod windows;

pub use correlate::partial_key;
pub use windows::{HOLD_RECHECK, HeldJob, HeldView, SKIPPED_NOTE, WindowsReport};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Clock, JobState, StoreError, now_ms};
use crate::rules::RuleSet;
use crate::store::{EventRow, Store};
use crate::verify::VerifiedEvent;

/// How long a lease holds without a heartbeat. Workers heartbeat every third of it while an
/// action runs, so only a stuck or dead worker loses one.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// Rule sets kept after a reload, so queued jobs still run the rule version they matched: at
/// most this many, for at most [`KEPT_FOR`]. A job whose version is no longer kept fails
/// visibly ("changed since the match") and can be re-run on the current rule.
const KEPT_VERSIONS: usize = 4;
const KEPT_FOR: Duration = Duration::from_secs(3600);

/// What ingesting one event did.
#[derive(Debug)]
pub struct Ingested {
    pub id: String,
    pub duplicate: bool,
    pub matched: usize,
    /// `false`: it matched nothing and its source keeps only what matched (`keep: matched`).
    pub stored: bool,
}

/// What a re-run request did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rerun {
    /// Queued again on the rule version it matched, from the action that failed. `changed`:
    /// the rule changed since the match (the old version was asked for with `as_matched`).
    AsMatched { changed: bool },
    /// Queued again on the current version of a rule that changed since the match, from its
    /// first action under new run ids; `mode`: the change switched it between shadow and live
    /// (when the version it matched is still known).
    OnCurrentRule { mode: Option<ModeChange> },
    /// No job has that id.
    NotFound,
    /// The job has not failed for good (it is pending or done).
    NotFailed(JobState),
    /// The job was turned down at approval (done, nothing ran): its event can be replayed.
    Rejected,
    /// Its rule no longer exists (removed or renamed) and the current version was asked for:
    /// `as_matched` may still run the version it matched.
    RuleGone,
    /// `as_matched`, but the version it matched is neither in memory nor in the archive.
    VersionGone,
}

/// A re-run on the current version of a rule whose mode changed since the match: whoever asks
/// is told, since the job's actions now really run (or no longer do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChange {
    /// It matched in shadow mode and the rule is live now.
    NowLive,
    /// It matched live and the rule is in shadow mode now.
    NowShadow,
}

impl ModeChange {
    /// `live` or `shadow`: the mode the re-run runs in.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChange::NowLive => "live",
            ModeChange::NowShadow => "shadow",
        }
    }

    /// What to add to the re-run's answer.
    pub fn text(self) -> &'static str {
        match self {
            ModeChange::NowLive => {
                "and it is now live (it matched in shadow mode): its actions will really run"
            }
            ModeChange::NowShadow => {
                "and it is now in shadow mode (it matched live): its actions will not run"
            }
        }
    }
}

/// What a queued re-run runs, in words (API, CLI and console say the same).
pub fn rerun_text(current: bool, changed: bool) -> &'static str {
    match (current, changed) {
        (true, _) => {
            "the current version of its rule (the rule changed since the match: your fix), from its first action"
        }
        (false, true) => {
            "the rule version it matched (as asked; the rule changed since), from the action that failed"
        }
        (false, false) => "its rule (unchanged since the match), from the action that failed",
    }
}

/// Engine settings beyond the rules and the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Scripts and outbound requests at once; also the number of workers.
    pub concurrency: usize,
    /// Finished events older than this are pruned; also the window in which a `post_event`
    /// re-run finds the child it already made.
    pub retain: Duration,
    /// Lease duration (heartbeats every third of it).
    pub lease: Duration,
    /// "Now" for correlation windows (a test's clock in tests).
    pub clock: Clock,
    /// The longest an absence's job waits in the queue before it looks at the clock again
    /// (its deadline is usually sooner; tests on a moved clock use a short one).
    pub recheck: Duration,
    /// What this node does (`--role`).
    pub role: Role,
    /// The store is shared with other nodes (JetStream), which may run other rule versions.
    pub shared: bool,
    /// Archive every rule set loaded in the store, and load an archived version again (scripts
    /// from this directory) for a job whose version this process no longer has.
    pub rule_archive: Option<std::path::PathBuf>,
    /// The console's address as people reach it (`--public-url`): the base of `approval.url`.
    pub public_url: Option<String>,
    /// The longest a job awaiting approval waits before it looks for a decision again
    /// (`--approval-check`).
    pub approval_check: Duration,
}

/// What one node does in a deployment of several (`--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Role {
    /// Accepts webhooks and runs jobs.
    #[default]
    All,
    /// Accepts webhooks; runs no jobs.
    Ingest,
    /// Runs jobs; accepts no webhooks.
    Worker,
}

impl Role {
    pub fn runs_jobs(self) -> bool {
        self != Role::Ingest
    }
    pub fn accepts_events(self) -> bool {
        self != Role::Worker
    }
}

/// How long after its event a job whose rule version this node does not have is handed on
/// (another node running that version may take it) before it fails as "changed since the match".
pub const VERSION_HANDOFF: Duration = Duration::from_secs(300);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 8,
            retain: Duration::from_secs(30 * 24 * 3600),
            lease: LEASE_TTL,
            clock: Clock::default(),
            recheck: Duration::from_secs(3600),
            role: Role::All,
            shared: false,
            rule_archive: None,
            public_url: None,
            approval_check: Duration::from_secs(2),
        }
    }
}

/// The running engine. Shared by the HTTP server (ingest) and the workers (jobs).
pub struct Engine {
    store: Store,
    rules: ArcSwap<RuleSet>,
    /// Earlier rule sets, newest last, for jobs matched before a reload.
    kept: Mutex<VecDeque<(std::time::Instant, Arc<RuleSet>)>>,
    /// Outside effects (scripts, outbound requests) at once; FIFO, so jobs start in order.
    limit: Arc<Semaphore>,
    settings: Settings,
    owner: String,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Correlation groups with an open partial match, for each rule's cap.
    open: correlate::OpenGroups,
    /// Absence jobs waiting for their deadline (not back pressure).
    waiting: correlate::Waiting,
    /// Jobs awaiting approval, by deadline: they do no work until a decision (not back
    /// pressure either).
    awaiting: correlate::Waiting,
    /// Copies of one delivery take turns at the correlations.
    deliveries: correlate::Deliveries,
    /// Events as they are accepted, for live views (the console); nothing is built for it
    /// while nobody listens.
    live: tokio::sync::broadcast::Sender<Arc<Accepted>>,
    /// Matches and throttled matches per rule key since this process started.
    counts: Mutex<std::collections::HashMap<String, [u64; 2]>>,
    /// Rule sets archived in the store (`Settings::rule_archive`).
    archive: Option<versions::Archive>,
    /// Jobs this node holds for a maintenance window (`engine/windows.rs`).
    held: windows::Held,
    /// Events opening throttle windows here, and events known stored (`engine/throttle.rs`).
    openers: throttle::Openers,
}

/// An event just accepted, for live views: its list row, and that row as JSON (serialized
/// once, however many views listen).
#[derive(Debug)]
pub struct Accepted {
    pub row: EventRow,
    pub json: String,
}

/// Accepted events a slow live view may fall behind by before it skips some.
const LIVE_BACKLOG: usize = 1024;

impl Engine {
    /// Call [`Engine::start`] to run jobs.
    pub fn new(store: Store, rules: Arc<RuleSet>, settings: Settings) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            rules: ArcSwap::new(rules),
            kept: Mutex::new(VecDeque::new()),
            limit: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            owner: format!("{}-{}", std::process::id(), crate::domain::new_event_id()),
            archive: settings.rule_archive.clone().map(versions::Archive::new),
            settings,
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            open: correlate::OpenGroups::default(),
            waiting: correlate::Waiting::default(),
            awaiting: correlate::Waiting::default(),
            deliveries: correlate::Deliveries::default(),
            held: windows::Held::default(),
            openers: throttle::Openers::default(),
            live: tokio::sync::broadcast::channel(LIVE_BACKLOG).0,
            counts: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Starts the workers (they resume whatever an earlier run left pending) and retention, as
    /// the node's role says.
    pub fn start(self: &Arc<Self>) {
        if self.settings.role.runs_jobs() {
            for _ in 0..self.settings.concurrency.max(1) {
                let engine = self.clone();
                self.tracker.spawn(async move { engine.worker().await });
            }
        }
        // On a shared store, retention is the ingest nodes' chore: pure workers keep no
        // history model.
        if !self.settings.shared || self.settings.role.accepts_events() {
            let engine = self.clone();
            self.tracker.spawn(async move { engine.retention().await });
        }
    }

    /// What this node does.
    pub fn role(&self) -> Role {
        self.settings.role
    }

    /// The rule set new events are matched against.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// Replaces the rule set. Jobs already queued still run the rule version they matched,
    /// as long as this process keeps it (the last few sets).
    pub fn swap_rules(&self, rules: Arc<RuleSet>) {
        // Only a set with a rule version the new one lacks is worth keeping.
        let lost = |old: &RuleSet| {
            old.rules.iter().any(|r| {
                rules
                    .rule_by_key(&r.key)
                    .is_none_or(|i| rules.rules[i].fingerprint != r.fingerprint)
            })
        };
        let old = self.rules.load_full();
        for r in old.rules.iter().filter(|r| r.correlate.is_some()) {
            if let Some(i) = rules.rule_by_key(&r.key)
                && rules.rules[i].fingerprint != r.fingerprint
            {
                tracing::info!(rule = %r.key, "correlation rule changed: its partial matches start afresh");
            }
        }
        let keep = lost(&old);
        self.rules.store(rules.clone());
        if keep {
            self.keep_version(old);
        }
    }

    /// Keeps an earlier rule set in memory for jobs that matched one of its versions.
    fn keep_version(&self, set: Arc<RuleSet>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back((std::time::Instant::now(), set));
        while kept.len() > KEPT_VERSIONS
            || kept.front().is_some_and(|(at, _)| at.elapsed() > KEPT_FOR)
        {
            kept.pop_front();
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every event this process accepts from now on, as its list row. Events other nodes
    /// accept (a shared store) are not in it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Accepted>> {
        self.live.subscribe()
    }

    /// Matches and throttled matches per rule key since this process started.
    pub fn rule_counts(&self) -> std::collections::HashMap<String, [u64; 2]> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The rule of `key` at version `fingerprint`, in the current set or a kept one.
    fn rule_version(&self, key: &str, fingerprint: &str) -> Option<(Arc<RuleSet>, usize)> {
        let current = self.rules();
        if let Some(i) = current.rule_by_key(key)
            && current.rules[i].fingerprint == fingerprint
        {
            return Some((current, i));
        }
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().find_map(|(_, set)| {
            set.rule_by_key(key)
                .filter(|&i| set.rules[i].fingerprint == fingerprint)
                .map(|i| (set.clone(), i))
        })
    }

    /// Jobs of this node that only wait: absence jobs for their deadline, jobs held by a
    /// maintenance window for its end, jobs awaiting approval. Not back pressure.
    pub fn waiting_jobs(&self) -> usize {
        let now = self.settings.clock.now();
        self.waiting.count(now) + self.held.count(now) + self.awaiting.count(now)
    }

    /// Ingests a stored event again as a new event (same source, body and headers), matched
    /// against the current rules.
    pub async fn replay(&self, id: &str) -> Result<Option<Ingested>, StoreError> {
        let Some(old) = self.store.log.event(id).await? else {
            return Ok(None);
        };
        let event = VerifiedEvent::replay(
            &old.source,
            &old.kind,
            old.doc.body().clone(),
            &old.headers,
            id,
        );
        self.ingest(event).await.map(Some)
    }

    /// Puts a dead letter back in the queue. When its rule is unchanged since the match, it
    /// resumes at the action that failed, with a fresh retry budget. When the rule changed (a
    /// fix), it runs the current version from its first action under new run ids; with
    /// `as_matched` it runs the version it matched instead (from memory or the rule archive).
    pub async fn rerun(&self, job_id: &str, as_matched: bool) -> Result<Rerun, StoreError> {
        let Some((mut job, state)) = self.store.history.job(job_id).await? else {
            return Ok(Rerun::NotFound);
        };
        if state == JobState::Done && job.step.decision.as_ref().is_some_and(|d| !d.approved) {
            return Ok(Rerun::Rejected);
        }
        if state != JobState::Failed {
            return Ok(Rerun::NotFailed(state));
        }
        let current = self.rules();
        let now = current.rule_by_key(&job.key);
        let changed = now.is_none_or(|i| current.rules[i].fingerprint != job.fingerprint);
        let resume = if !changed {
            true
        } else if as_matched {
            let kept = match self.rule_version(&job.key, &job.fingerprint) {
                Some(v) => Some(v),
                None => self.restore_version(&job.key, &job.fingerprint).await,
            };
            if kept.is_none() {
                return Ok(Rerun::VersionGone);
            }
            true
        } else {
            false
        };
        let answer = if resume {
            Rerun::AsMatched { changed }
        } else {
            let Some(i) = now else {
                return Ok(Rerun::RuleGone);
            };
            let was = match self.rule_version(&job.key, &job.fingerprint) {
                Some(v) => Some(v),
                None => self.restore_version(&job.key, &job.fingerprint).await,
            };
            let mode =
                was.and_then(
                    |(set, j)| match (set.rules[j].shadow, current.rules[i].shadow) {
                        (true, false) => Some(ModeChange::NowLive),
                        (false, true) => Some(ModeChange::NowShadow),
                        _ => None,
                    },
                );
            job.fingerprint = current.rules[i].fingerprint.clone();
            Rerun::OnCurrentRule { mode }
        };
        job.step = state::rerun(&job.step, resume);
        Ok(if self.store.queue.rerun(job).await? {
            answer
        } else {
            Rerun::NotFailed(JobState::Pending)
        })
    }

    /// A worker: leases jobs one at a time and runs them until shutdown.
    async fn worker(self: Arc<Self>) {
        let poll = Duration::from_secs(1);
        while !self.shutdown.is_cancelled() {
            let fetched = tokio::select! {
                r = self.store.queue.fetch(&self.owner, self.settings.lease, poll) => r,
                () = self.shutdown.cancelled() => return,
            };
            match fetched {
                Ok(Some(lease)) => self.clone().run_leased(lease).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot fetch jobs; trying again in a second");
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }

    /// Removes finished events past the retention period, now and then.
    async fn retention(self: Arc<Self>) {
        let every = Duration::from_secs(600)
            .min(self.settings.retain / 4)
            .max(Duration::from_secs(1));
        loop {
            let before = now_ms() - self.settings.retain.as_millis() as i64;
            loop {
                match self.store.log.prune(before).await {
                    Ok(p) => {
                        if p.events + p.state > 0 {
                            tracing::debug!(
                                events = p.events,
                                jobs = p.jobs,
                                attempts = p.attempts,
                                state = p.state,
                                "retention: pruned"
                            );
                        }
                        if p.events < crate::store::PRUNE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention: cannot prune");
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Stops fetching jobs and waits up to `grace` for running ones; what has not finished
    /// stays pending for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let killed = crate::actions::groups::kill_all();
            tracing::warn!(
                scripts_killed = killed,
                "grace period over: running scripts' process groups were killed; unfinished jobs resume at the next start"
            );
        }
        if let Err(e) = self.store.queue.flush().await {
            tracing::error!(error = %e, "cannot make the last acks durable; those jobs run again at the next start");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::{Engine, Settings};
    use crate::domain::StoreError;
    use crate::rules::{Dirs, load};
    use crate::store::{Revision, StateStore, Store};
    use crate::verify::{Delivery, VerifiedEvent};

    /// The embedded state store, except that creating a key starting with the prefix fails;
    /// the keys it did create are noted.
    struct Failing(
        Arc<dyn StateStore>,
        &'static str,
        std::sync::Mutex<Vec<String>>,
    );

    #[async_trait]
    impl StateStore for Failing {
        async fn get(&self, key: &str) -> Result<Option<(String, Revision)>, StoreError> {
            self.0.get(key).await
        }
        async fn create(
            &self,
            key: &str,
            value: &str,
            ttl: Option<Duration>,
        ) -> Result<Revision, StoreError> {
            if key.starts_with(self.1) {
                return Err(StoreError::Transient("injected".into()));
            }
            let rev = self.0.create(key, value, ttl).await?;
            self.2.lock().unwrap().push(key.to_string());
            Ok(rev)
        }
        async fn update(
            &self,
            key: &str,
            value: &str,
            expected: Revision,
            ttl: Option<Duration>,
        ) -> Result<Revision, StoreError> {
            self.0.update(key, value, expected, ttl).await
        }
        async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), StoreError> {
            self.0.delete(key, expected).await
        }
    }

    /// A state-store error part-way through matching takes back every throttle window the
    /// event had opened: the sender's retry is not matched as throttled by its own attempt.
    #[tokio::test]
    async fn a_failed_ingest_opens_no_throttle_window() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("rulebooks/r.yml"),
            "sources:\n  - { name: s, kind: internal }\nrules:\n  \
             - name: a\n    throttle: { once_within: 1h }\n    actions: [{ log: { message: a } }]\n  \
             - name: b\n    throttle: { once_within: 1h }\n    actions: [{ log: { message: b } }]\n",
        )
        .unwrap();
        let rules = load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        })
        .unwrap();
        let embedded = Store::embedded(&dir.path().join("data")).unwrap();
        let failing = Arc::new(Failing(
            embedded.state.clone(),
            "throttle/b/",
            std::sync::Mutex::new(Vec::new()),
        ));
        let store = Store {
            state: failing.clone(),
            ..embedded.clone()
        };
        let engine = Engine::new(store, Arc::new(rules), Settings::default());
        let event = VerifiedEvent::internal(
            "s",
            serde_json::json!({"n": 1}),
            0,
            "test",
            Delivery {
                key: "d1".into(),
                window: None,
            },
        );
        assert!(engine.ingest(event).await.is_err());
        // Else there was nothing to take back.
        assert!(
            failing
                .2
                .lock()
                .unwrap()
                .iter()
                .any(|k| k == "throttle/a/[]"),
            "rule a opened its window before rule b failed: {:?}",
            failing.2.lock().unwrap()
        );
        let left = embedded.state.get("throttle/a/[]").await.unwrap();
        assert_eq!(left, None, "rule a's window stayed open after the failure");
    }

    /// A throttle window a shadow match opened does not throttle the rule once it is live.
    #[tokio::test]
    async fn a_shadow_throttle_window_does_not_throttle_the_live_rule() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let dirs = Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        };
        let book = |mode: &str| {
            format!(
                "sources:\n  - {{ name: s, kind: internal }}\nrules:\n  \
                 - name: a\n    mode: {mode}\n    throttle: {{ once_within: 1h }}\n    \
                 actions: [{{ log: {{ message: a }} }}]\n"
            )
        };
        std::fs::write(dir.path().join("rulebooks/r.yml"), book("shadow")).unwrap();
        let store = Store::embedded(&dir.path().join("data")).unwrap();
        let engine = Engine::new(
            store.clone(),
            Arc::new(load(&dirs).unwrap()),
            Settings::default(),
        );
        let event = |n: u32| {
            VerifiedEvent::internal(
                "s",
                serde_json::json!({"n": n}),
                0,
                "test",
                Delivery {
                    key: format!("d{n}"),
                    window: None,
                },
            )
        };
        assert_eq!(engine.ingest(event(1)).await.unwrap().matched, 1);
        let shadow = store.state.get("throttle-shadow/a/[]").await.unwrap();
        assert!(shadow.is_some(), "the shadow match opened a shadow window");
        std::fs::write(dir.path().join("rulebooks/r.yml"), book("live")).unwrap();
        engine.swap_rules(Arc::new(load(&dirs).unwrap()));
        let second = engine.ingest(event(2)).await.unwrap();
        let live = store.state.get("throttle/a/[]").await.unwrap();
        let (value, _) = live.expect("the first live match opened its own window");
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        assert_eq!(
            v["event"],
            second.id.as_str(),
            "not throttled by the shadow match"
        );
    }
}
