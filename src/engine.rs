//! The engine: matches verified events against the current rule set, hands them to the journal
//! with the jobs they created, and runs those jobs on a bounded worker pool.
//!
//! At least once: a job is in the journal before the sender hears 202; each attempt of an
//! action with outside effects is recorded before it starts and closed after; whatever is
//! unfinished at start-up is run again with the same run ids.
//!
//! The journal is the queue. At most [`MAX_IN_MEMORY`] jobs wait in memory; past that, new jobs
//! stay only in the journal and a pump loads them, oldest first, as the pool drains. A burst
//! costs disk, not memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::event::MAX_DEPTH;
use crate::actions::{Action, Outcome, Rendered, RunContext, retry_delay};
use crate::journal::{
    Appended, Close, Job, JobState, Journal, JournalError, NewJob, ON_FAILURE, StoredEvent,
};
use crate::rules::RuleSet;
use crate::telemetry::names;
use crate::verify::VerifiedEvent;

/// Jobs held in memory (running or waiting for a worker) before new ones are left in the journal.
pub const MAX_IN_MEMORY: usize = 1024;

/// What every action of one job shares.
struct JobRun<'a> {
    rules: &'a RuleSet,
    rule: &'a crate::rules::Rule,
    job: &'a Job,
    event: &'a StoredEvent,
    /// `meta` in templates.
    meta: Value,
}

/// How one action ended.
enum Step {
    Done(Outcome),
    Failed {
        out: Outcome,
        attempts: u32,
    },
    /// Shutting down: the job stays pending.
    Stopped,
}

/// `failure` in the context of `on_failure` actions.
fn failure_context(action: &Action, out: &Outcome, attempts: u32) -> Value {
    let mut f = json!({
        "action": action.kind(),
        "error": out.error,
        "attempts": attempts,
    });
    if matches!(action, Action::RunScript(_)) {
        f["exit_code"] = json!(out.exit_code);
        f["stdout"] = json!(out.stdout);
        f["stderr"] = json!(out.stderr);
    }
    if let Some(st) = out.status {
        f["status"] = json!(st);
        f["body"] = json!(out.stdout);
    }
    f
}

/// What ingesting one event did.
#[derive(Debug)]
pub struct Ingested {
    pub id: String,
    pub duplicate: bool,
    pub matched: usize,
}

/// The running engine. Shared by the HTTP server (ingest) and the workers (jobs).
pub struct Engine {
    journal: Arc<dyn Journal>,
    rules: ArcSwap<RuleSet>,
    limit: Arc<Semaphore>,
    /// Ids of the jobs in memory.
    inflight: Mutex<HashSet<String>>,
    /// Some pending jobs are only in the journal: the pump must load them.
    spilled: AtomicBool,
    pump: Notify,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Engine {
    /// `concurrency`: how many jobs may run at once. Call [`Engine::start`] to run jobs.
    pub fn new(journal: Arc<dyn Journal>, rules: Arc<RuleSet>, concurrency: usize) -> Arc<Engine> {
        Arc::new(Engine {
            journal,
            rules: ArcSwap::new(rules),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            inflight: Mutex::new(HashSet::new()),
            spilled: AtomicBool::new(false),
            pump: Notify::new(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// Starts the pump and resumes every job left unfinished by an earlier run.
    pub fn start(self: &Arc<Self>) {
        self.spilled.store(true, Ordering::SeqCst);
        let engine = self.clone();
        self.tracker.spawn(async move { engine.pump_loop().await });
        self.pump.notify_one();
    }

    /// The rule set new events are matched against.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// Replaces the rule set; events already matched finish on the set they were matched with.
    pub fn swap_rules(&self, rules: Arc<RuleSet>) {
        self.rules.store(rules);
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Matches, journals (returning after the commit) and schedules an event's jobs.
    pub async fn ingest(self: &Arc<Self>, event: VerifiedEvent) -> Result<Ingested, JournalError> {
        let rules = self.rules();
        let matched = rules.matching(event.source(), event.doc());
        let jobs: Vec<NewJob> = matched
            .iter()
            .map(|&i| {
                let r = &rules.rules[i];
                NewJob {
                    rulebook: r.rulebook.clone(),
                    rule: r.name.clone(),
                    key: r.key.clone(),
                    throttle: r
                        .throttle
                        .as_ref()
                        .map(|t| (t.group(event.body()), t.window)),
                }
            })
            .collect();
        match self.journal.append(event, jobs).await? {
            Appended::Duplicate { id } => Ok(Ingested {
                id,
                duplicate: true,
                matched: 0,
            }),
            Appended::New { event, jobs } => {
                let id = event.id.clone();
                let mut n = 0;
                for (job, &rule) in jobs.into_iter().zip(&matched) {
                    match job {
                        Some(job) => {
                            n += 1;
                            rules.rules[rule].count_match();
                            self.schedule(rules.clone(), rule, job, event.clone());
                        }
                        None => {
                            let r = &rules.rules[rule];
                            r.count_throttled();
                            tracing::info!(event = %id, rule = %r.name, "match throttled");
                        }
                    }
                }
                Ok(Ingested {
                    id,
                    duplicate: false,
                    matched: n,
                })
            }
        }
    }

    /// Ingests a stored event again as a new event (same source, body and headers), matched
    /// against the current rules.
    pub async fn replay(self: &Arc<Self>, id: &str) -> Result<Option<Ingested>, JournalError> {
        let Some(old) = self.journal.event(id).await? else {
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

    /// Puts a job that failed for good (a dead letter) back in the queue; it resumes at the
    /// action that failed. `false` when there is no such failed job.
    pub async fn rerun(self: &Arc<Self>, job_id: &str) -> Result<bool, JournalError> {
        let reopened = self.journal.reopen_job(job_id).await?;
        if reopened {
            self.spilled.store(true, Ordering::SeqCst);
            self.pump.notify_one();
        }
        Ok(reopened)
    }

    /// Loads jobs left only in the journal whenever there is room for them.
    async fn pump_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.pump.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = self.shutdown.cancelled() => return,
            }
            if !self.spilled.load(Ordering::SeqCst) {
                continue;
            }
            let (room, except) = {
                let set = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                (
                    MAX_IN_MEMORY.saturating_sub(set.len()),
                    set.iter().cloned().collect::<Vec<_>>(),
                )
            };
            if room < MAX_IN_MEMORY / 2 {
                continue;
            }
            // Cleared before reading: a job spilled meanwhile sets it again.
            self.spilled.store(false, Ordering::SeqCst);
            let pending = match self.journal.unfinished(room, except).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read pending jobs from the journal");
                    self.spilled.store(true, Ordering::SeqCst);
                    continue;
                }
            };
            if pending.len() >= room {
                self.spilled.store(true, Ordering::SeqCst);
            }
            let rules = self.rules();
            for (job, event) in pending {
                match rules.rule(&job.rulebook, &job.rule) {
                    Some(rule) => self.schedule(rules.clone(), rule, job, event),
                    None => {
                        let msg = format!(
                            "rule `{}` of rulebook `{}` no longer exists",
                            job.rule, job.rulebook
                        );
                        tracing::warn!(job = %job.id, "{msg}; the job is closed as failed");
                        let close = Close {
                            state: JobState::Failed,
                            error: Some(msg),
                        };
                        if let Err(e) = self.journal.finish_job(&job, close).await {
                            tracing::error!(error = %e, "cannot close a job");
                        }
                    }
                }
            }
        }
    }

    fn schedule(
        self: &Arc<Self>,
        rules: Arc<RuleSet>,
        rule: usize,
        job: Job,
        event: Arc<StoredEvent>,
    ) {
        {
            let mut set = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if set.contains(&job.id) {
                return;
            }
            if set.len() >= MAX_IN_MEMORY {
                // It is in the journal; the pump brings it back when there is room.
                self.spilled.store(true, Ordering::SeqCst);
                return;
            }
            set.insert(job.id.clone());
            metrics::gauge!(names::QUEUE).set(set.len() as f64);
        }
        let engine = self.clone();
        self.tracker.spawn(async move {
            if !engine.shutdown.is_cancelled()
                && let Err(e) = engine.run_job(&rules, rule, &job, &event).await
            {
                // The job stays pending in the journal and runs again later.
                tracing::error!(job = %job.id, error = %e, "cannot record a job's progress");
            }
            let left = {
                let mut set = engine.inflight.lock().unwrap_or_else(|e| e.into_inner());
                set.remove(&job.id);
                metrics::gauge!(names::QUEUE).set(set.len() as f64);
                set.len()
            };
            if left < MAX_IN_MEMORY / 2 && engine.spilled.load(Ordering::SeqCst) {
                engine.pump.notify_one();
            }
        });
    }

    async fn run_job(
        self: &Arc<Self>,
        rules: &RuleSet,
        rule_idx: usize,
        job: &Job,
        event: &StoredEvent,
    ) -> Result<(), JournalError> {
        let rule = &rules.rules[rule_idx];
        let meta = json!({
            "id": event.id,
            "source": event.source,
            "kind": event.kind,
            "received_at": crate::journal::rfc3339(event.received_at),
            "headers": event.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
            "rulebook": rule.rulebook,
            "rule": rule.name,
        });
        let jr = JobRun {
            rules,
            rule,
            job,
            event,
            meta,
        };
        let mut previous = Value::Null;
        // The main actions, unless a restart finds the job already in its on_failure part.
        if job.next_action < ON_FAILURE {
            let last = rule.actions.len().saturating_sub(1);
            for (idx, action) in rule.actions.iter().enumerate().skip(job.next_action) {
                // Attempts made before a restart or a rerun keep counting (0 for a new job).
                let start = if idx == job.next_action {
                    job.attempts
                } else {
                    0
                };
                let step = self
                    .run_action(&jr, idx, action, start, &previous, &Value::Null)
                    .await?;
                match step {
                    Step::Done(out) => previous = out.previous(),
                    Step::Stopped => return Ok(()),
                    Step::Failed { out, attempts } => {
                        let failure = failure_context(action, &out, attempts);
                        return self.run_on_failure(&jr, 0, &failure, out.error).await;
                    }
                }
            }
            if job.next_action > last {
                // Every action had already succeeded before a restart; only the close was missing.
                self.journal
                    .finish_job(
                        job,
                        Close {
                            state: JobState::Done,
                            error: None,
                        },
                    )
                    .await?;
            }
            return Ok(());
        }
        // Resumed inside on_failure: the failure details are in the history, not in memory.
        let failure = json!({"action": "unknown (resumed after a restart)", "error": "see the job's history"});
        self.run_on_failure(&jr, job.next_action - ON_FAILURE, &failure, None)
            .await
    }

    /// Runs the rule's `on_failure` actions from `from`; closes the job as failed.
    async fn run_on_failure(
        self: &Arc<Self>,
        jr: &JobRun<'_>,
        from: usize,
        failure: &Value,
        error: Option<String>,
    ) -> Result<(), JournalError> {
        let (rule, job) = (jr.rule, jr.job);
        let error = error.or_else(|| failure["error"].as_str().map(str::to_string));
        let mut previous = Value::Null;
        for (i, action) in rule.on_failure.iter().enumerate().skip(from) {
            let idx = ON_FAILURE + i;
            match self
                .run_action(jr, idx, action, 0, &previous, failure)
                .await?
            {
                Step::Done(out) => previous = out.previous(),
                Step::Stopped => return Ok(()),
                Step::Failed { out, .. } => {
                    tracing::warn!(job = %job.id, error = ?out.error, "an on_failure action failed too");
                    break;
                }
            }
        }
        self.journal
            .finish_job(
                job,
                Close {
                    state: JobState::Failed,
                    error,
                },
            )
            .await
    }

    /// One action, with its attempts and retries. Records every attempt.
    async fn run_action(
        self: &Arc<Self>,
        jr: &JobRun<'_>,
        idx: usize,
        action: &Action,
        start_attempt: u32,
        previous: &Value,
        failure: &Value,
    ) -> Result<Step, JournalError> {
        // The last main action's success closes the job, in the same write.
        let close_on_success = idx + 1 == jr.rule.actions.len();
        let (rules, rule, job, event, meta) = (jr.rules, jr.rule, jr.job, jr.event, &jr.meta);
        let body = event.doc.body();
        // Built from references: the event is not copied per action.
        let ctx = minijinja::context! {
            event => minijinja::Value::from(minijinja::value::Serde(body)),
            meta => minijinja::Value::from(minijinja::value::Serde(meta)),
            previous => minijinja::Value::from(minijinja::value::Serde(previous)),
            failure => minijinja::Value::from(minijinja::value::Serde(failure)),
        };
        let mut attempt = start_attempt;
        let rendered = match action.render(&rules.templates, &ctx) {
            Ok(r) => r,
            Err(e) => {
                let error = format!(
                    "action {} ({}) cannot be rendered: {e}",
                    job.run_id(idx),
                    action.kind()
                );
                tracing::warn!(job = %job.id, "{error}");
                let out = Outcome::failed(&error);
                attempt += 1;
                self.journal
                    .record_attempt(job, idx, action.kind(), Value::Null, attempt, &out, None)
                    .await?;
                return Ok(Step::Failed {
                    out,
                    attempts: attempt,
                });
            }
        };
        let shown = rendered.for_history();
        let run = RunContext {
            run_id: job.run_id(idx),
            event_id: event.id.clone(),
            source: event.source.clone(),
            rule: rule.name.clone(),
            // Only scripts read it (on stdin).
            input: match action {
                Action::RunScript(_) => json!({"event": body, "meta": meta}),
                _ => Value::Null,
            },
        };
        // Retries are counted per run of the action (a rerun gets a fresh budget); attempt
        // numbers keep counting across restarts and reruns.
        let mut tries = 0;
        loop {
            attempt += 1;
            tries += 1;
            let begun = std::time::Instant::now();
            let outcome = if let Rendered::PostEvent(p) = &rendered {
                self.post_event(p, event).await
            } else if action.in_process() {
                rendered.execute(&run, self.journal.as_ref()).await
            } else {
                // The concurrency limit counts what runs outside the process; waiting for it is
                // FIFO, so jobs start in acceptance order.
                let permit = tokio::select! {
                    p = self.limit.clone().acquire_owned() => p.ok(),
                    () = self.shutdown.cancelled() => None,
                };
                let Some(_permit) = permit.filter(|_| !self.shutdown.is_cancelled()) else {
                    return Ok(Step::Stopped); // the job stays pending for the next start
                };
                // The run is already durable: its job is pending in the journal since the
                // event's commit, so a crash at any point runs it again with this run id. The
                // attempt row is for the history; writing it alongside the start keeps an
                // fsync off the path from POST to script start.
                let (started, outcome) = tokio::join!(
                    self.journal
                        .start_attempt(job, idx, action.kind(), shown.clone(), attempt),
                    rendered.execute(&run, self.journal.as_ref())
                );
                started?;
                outcome
            };
            let result = if outcome.ok { "ok" } else { "failed" };
            metrics::histogram!(names::RUN_SECONDS, "action" => action.kind())
                .record(begun.elapsed().as_secs_f64());
            metrics::counter!(names::RUNS, "action" => action.kind(), "result" => result)
                .increment(1);
            let retry = !outcome.ok
                && outcome.retryable
                && tries <= action.retries()
                && !self.shutdown.is_cancelled();
            let close = (outcome.ok && close_on_success).then_some(Close {
                state: JobState::Done,
                error: None,
            });
            if action.in_process() {
                self.journal
                    .record_attempt(
                        job,
                        idx,
                        action.kind(),
                        shown.clone(),
                        attempt,
                        &outcome,
                        close,
                    )
                    .await?;
            } else {
                self.journal
                    .finish_attempt(job, idx, attempt, &outcome, close)
                    .await?;
            }
            if outcome.ok {
                return Ok(Step::Done(outcome));
            }
            if !retry {
                tracing::warn!(run = %run.run_id, attempts = attempt, error = ?outcome.error, "action failed for good");
                return Ok(Step::Failed {
                    out: outcome,
                    attempts: attempt,
                });
            }
            let wait = retry_delay(attempt, outcome.retry_after);
            tracing::info!(run = %run.run_id, attempt, error = ?outcome.error, wait_ms = wait.as_millis() as u64, "action failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.shutdown.cancelled() => return Ok(Step::Stopped),
            }
        }
    }

    /// Journals and schedules an event emitted by `post_event`.
    async fn post_event(
        self: &Arc<Self>,
        p: &crate::actions::event::PostEvent,
        parent: &StoredEvent,
    ) -> Outcome {
        let depth = parent.depth + 1;
        if depth > MAX_DEPTH {
            let msg = format!(
                "post_event to `{}` stopped: the chain is deeper than {MAX_DEPTH} events (a rule loop?)",
                p.source
            );
            tracing::error!(event = %parent.id, "{msg}");
            return Outcome::failed(msg);
        }
        let event = VerifiedEvent::internal(&p.source, p.body.clone(), depth);
        match Box::pin(self.ingest(event)).await {
            Ok(done) => Outcome {
                ok: true,
                result: Some(json!({"event_id": done.id, "matched": done.matched, "depth": depth})),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                retryable: true,
                ..Outcome::failed(e.to_string())
            },
        }
    }

    /// Stops starting jobs and waits up to `grace` for running ones; what has not finished
    /// stays unfinished in the journal for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: unfinished jobs resume at the next start");
        }
    }
}
