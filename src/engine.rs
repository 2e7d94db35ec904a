//! The engine: matches verified events against the current rule set, hands them to the journal
//! with the jobs they created, and runs those jobs on a bounded worker pool.
//!
//! At least once: a job is in the journal before the sender hears 202; each attempt is recorded
//! before it starts and closed after; whatever is unfinished at start-up is run again with the
//! same run ids.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::{Outcome, RunContext, backoff};
use crate::journal::{Appended, Job, JobState, Journal, JournalError, NewJob, StoredEvent};
use crate::rules::RuleSet;
use crate::verify::VerifiedEvent;

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
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Engine {
    /// `concurrency`: how many jobs may run at once.
    pub fn new(journal: Arc<dyn Journal>, rules: Arc<RuleSet>, concurrency: usize) -> Arc<Engine> {
        Arc::new(Engine {
            journal,
            rules: ArcSwap::new(rules),
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        })
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
                let n = jobs.len();
                for (job, &rule) in jobs.into_iter().zip(&matched) {
                    self.schedule(rules.clone(), rule, job, event.clone(), false);
                }
                Ok(Ingested {
                    id,
                    duplicate: false,
                    matched: n,
                })
            }
        }
    }

    /// Schedules every job the journal holds as unfinished (after a crash or a stop).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, JournalError> {
        let rules = self.rules();
        let pending = self.journal.unfinished().await?;
        let n = pending.len();
        for (job, event) in pending {
            match rules.rule(&job.rulebook, &job.rule) {
                Some(rule) => self.schedule(rules.clone(), rule, job, event, true),
                None => {
                    let msg = format!(
                        "rule `{}` of rulebook `{}` no longer exists",
                        job.rule, job.rulebook
                    );
                    tracing::warn!(job = %job.id, "{msg}; the job is closed as failed");
                    self.journal
                        .finish_job(&job, JobState::Failed, Some(msg))
                        .await?;
                }
            }
        }
        Ok(n)
    }

    fn schedule(
        self: &Arc<Self>,
        rules: Arc<RuleSet>,
        rule: usize,
        job: Job,
        event: Arc<StoredEvent>,
        resumed: bool,
    ) {
        let engine = self.clone();
        self.tracker.spawn(async move {
            let permit = tokio::select! {
                p = engine.limit.clone().acquire_owned() => p,
                () = engine.shutdown.cancelled() => return,
            };
            let Ok(_permit) = permit else { return };
            if engine.shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = engine.run_job(&rules, rule, &job, &event, resumed).await {
                // The job stays pending in the journal and runs again at the next start.
                tracing::error!(job = %job.id, error = %e, "cannot record a job's progress");
            }
        });
    }

    async fn run_job(
        &self,
        rules: &RuleSet,
        rule_idx: usize,
        job: &Job,
        event: &StoredEvent,
        resumed: bool,
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
        let body = event.doc.body();
        let mut previous = Value::Null;
        for (idx, action) in rule.actions.iter().enumerate().skip(job.next_action) {
            let ctx = crate::templates::context(json!({
                "event": body, "meta": meta, "previous": previous,
            }));
            let mut attempt = if resumed {
                self.journal.attempts(job, idx).await?
            } else {
                0
            };
            let rendered = match action.render(&rules.templates, &ctx) {
                Ok(r) => r,
                Err(e) => {
                    let error = format!("action {idx} ({}) cannot be rendered: {e}", action.kind());
                    attempt += 1;
                    self.journal
                        .start_attempt(job, idx, action.kind(), Value::Null, attempt)
                        .await?;
                    self.journal
                        .finish_attempt(job, idx, attempt, &Outcome::failed(&error))
                        .await?;
                    tracing::warn!(job = %job.id, "{error}");
                    return self
                        .journal
                        .finish_job(job, JobState::Failed, Some(error))
                        .await;
                }
            };
            let rendered_json = serde_json::to_value(&rendered).unwrap_or(Value::Null);
            let run = RunContext {
                run_id: job.run_id(idx),
                event_id: event.id.clone(),
                source: event.source.clone(),
                rule: rule.name.clone(),
                input: json!({"event": body, "meta": meta}),
            };
            let outcome = loop {
                attempt += 1;
                self.journal
                    .start_attempt(job, idx, action.kind(), rendered_json.clone(), attempt)
                    .await?;
                let outcome = rendered.execute(&run).await;
                self.journal
                    .finish_attempt(job, idx, attempt, &outcome)
                    .await?;
                if outcome.ok || attempt > action.retries() || self.shutdown.is_cancelled() {
                    break outcome;
                }
                tracing::info!(run = %run.run_id, attempt, error = ?outcome.error, "action failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            };
            if !outcome.ok {
                let error = outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| "action failed".into());
                tracing::warn!(run = %run.run_id, attempts = attempt, "{error}");
                return self
                    .journal
                    .finish_job(job, JobState::Failed, Some(error))
                    .await;
            }
            previous = json!({"exit_code": outcome.exit_code, "stdout": outcome.stdout});
        }
        self.journal.finish_job(job, JobState::Done, None).await
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
