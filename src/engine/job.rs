//! Running one leased job: gathering what it needs (its event, the rule version it matched, a
//! correlation's context), then driving the job state machine (`engine/state.rs`, a pure
//! function) with what each step did: a window's decision, an approval, an action's outcome.
//! Every move to another action is recorded (`progress`) before that action starts, so a crash
//! resumes at the step recorded, with the same run ids and the real `failure`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::correlate::Window;
use super::state::{self, Facts, Input, Place, Ran, Transition, Wait, WindowDecision};
use super::windows::Gate;
use super::{Engine, VERSION_HANDOFF};
use crate::actions::event::MAX_DEPTH;
use crate::actions::{Action, Rendered, RunContext, retry_delay};
use crate::domain::{
    Attempt, CorrelationState, Event, JobState, Outcome, Phase, Step, StoreError, now_ms,
};
use crate::rules::{Rule, RuleSet};
use crate::store::Lease;
use crate::telemetry::names;
use crate::templates::{JsonRoot, Lazy, json_value};
use crate::verify::{Delivery, VerifiedEvent};

/// How long after its acceptance an event that cannot be found is looked for again before its
/// job fails as "no longer in the event log".
const EVENT_LOOKUP_PATIENCE: Duration = Duration::from_secs(600);

/// Why a job cannot go on now, and what becomes of it.
enum GiveBack {
    /// Look again after this long (a lagging read, another node's rule version, a deadline).
    Later(Duration),
    /// A dead letter, saying why.
    Fail(String),
    /// Done without running anything, saying why (an absence that did not fire).
    Done(String),
}

/// A correlation's job: `events` and `correlation` for its templates.
type Correlated = Option<(Arc<Value>, Arc<Value>)>;
/// An absence's job: its correlation and group (its window is removed once the job is done).
type Absence<'r> = Option<(&'r crate::rules::correlate::Correlation, String)>;

/// `failure` in the context of `on_failure` actions.
fn failure_context(action: &Action, out: &Outcome, attempts: u32) -> Value {
    let mut f = json!({
        "action": action.kind(),
        "error": out.error,
        "attempts": attempts,
    });
    if matches!(action, Action::RunScript(_) | Action::RunPlaybook(_)) {
        f["exit_code"] = json!(out.exit_code);
        f["stdout"] = json!(out.stdout);
        f["stderr"] = json!(out.stderr);
    }
    if let Some(st) = out.status {
        f["status"] = json!(st);
        f["body"] = json!(out.stdout);
    }
    if let (Action::RunPlaybook(_) | Action::Awx(_), Some(r)) = (action, &out.result) {
        f["result"] = r.clone();
    }
    f
}

/// `meta` in templates: the event's facts and the rule's names, with the envelope (`headers`,
/// and `peer`, `topic`, `subject` where the transport set them).
/// Built only when read (`templates::Lazy`): most actions' templates never read it.
fn job_meta(rule: &Rule, event: &Arc<Event>) -> Arc<Lazy> {
    let (rulebook, name, event) = (rule.rulebook.clone(), rule.name.clone(), event.clone());
    Arc::new(Lazy::new(move || meta_of(&rulebook, &name, &event)))
}

fn meta_of(rulebook: &str, rule: &str, event: &Event) -> Value {
    let mut meta = json!({
        "id": event.id,
        "source": event.source,
        "kind": event.kind,
        "received_at": crate::domain::rfc3339(event.received_at),
        "rulebook": rulebook,
        "rule": rule,
    });
    if let (Value::Object(m), Value::Object(envelope)) = (&mut meta, event.doc.meta()) {
        m.extend(envelope.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    meta
}

/// One line per action run: the story of an event in the log.
fn log_run(
    rule: &Rule,
    action: &Action,
    run_id: &str,
    attempt: u32,
    outcome: &Outcome,
    delay: Option<Duration>,
    took: Duration,
) {
    let result = match (outcome.ok, delay) {
        (true, _) => "ok",
        (false, Some(_)) => "failed, retrying",
        (false, None) => "failed",
    };
    if outcome.ok && matches!(action, Action::Log(_)) {
        // The `log` action's own line already says that it ran, for which rule and event: a
        // second line saying "ok" tells nothing new (and costs as much to write). Its fields
        // are worked out only when the line is written (debug is usually filtered out).
        tracing::debug!(rule = %rule.name, action = action.kind(), run = %run_id, attempt, duration = %crate::domain::human_duration(took.as_millis() as i64), "action {result}");
        return;
    }
    let duration = crate::domain::human_duration(took.as_millis() as i64);
    match &outcome.error {
        None => {
            tracing::info!(rule = %rule.name, action = action.kind(), run = %run_id, attempt, duration = %duration, "action {result}")
        }
        Some(e) => {
            tracing::info!(rule = %rule.name, action = action.kind(), run = %run_id, attempt, duration = %duration, error = %e, "action {result}")
        }
    }
}

/// What every action of one job shares.
pub(super) struct Run<'a> {
    pub rules: &'a RuleSet,
    pub rule: &'a Rule,
    pub event: &'a Arc<Event>,
    pub meta: Arc<Lazy>,
    /// A correlation rule's job: `events` and `correlation` for its templates.
    pub correlated: Correlated,
}

impl Run<'_> {
    /// The template context of an action at `step` (with `approval` for `notify` actions).
    /// Views, not copies, of the event and the rest (see `templates::JsonView`).
    pub fn context(&self, step: &Step, approval: Option<&Value>) -> minijinja::Value {
        let view = |v: Option<&Value>| match v {
            Some(v) => json_value(JsonRoot::Value(Arc::new(v.clone()))),
            None => minijinja::Value::from(()),
        };
        let (events, correlation) = match &self.correlated {
            Some((e, c)) => (
                json_value(JsonRoot::Value(e.clone())),
                json_value(JsonRoot::Value(c.clone())),
            ),
            None => (minijinja::Value::UNDEFINED, minijinja::Value::UNDEFINED),
        };
        minijinja::context! {
            event => json_value(JsonRoot::Event(self.event.clone())),
            meta => json_value(JsonRoot::Lazy(self.meta.clone())),
            previous => view(step.previous.as_ref()),
            failure => view(step.failure.as_ref()),
            events => events,
            correlation => correlation,
            approval => match approval {
                Some(a) => view(Some(a)),
                None => minijinja::Value::UNDEFINED,
            },
        }
    }

    /// What an action's run knows about the job.
    pub fn run_context(&self, action: &Action, run_id: &str) -> RunContext {
        let body = self.event.doc.body();
        RunContext {
            run_id: run_id.to_string(),
            event_id: self.event.id.clone(),
            source: self.event.source.clone(),
            rule: self.rule.name.clone(),
            // Only scripts (on stdin) and the Ansible actions (`ansible_eda`) read it.
            input: match action {
                a if a.reads_input() => match &self.correlated {
                    Some((events, correlation)) => json!({
                        "event": body, "meta": self.meta.get(),
                        "events": **events, "correlation": **correlation,
                    }),
                    None => json!({"event": body, "meta": self.meta.get()}),
                },
                _ => Value::Null,
            },
        }
    }
}

impl Engine {
    /// Runs a leased job, catching a panic so it ends the job and not the worker: the job goes
    /// back to the queue at the last step recorded, and counts a delivery.
    pub(super) async fn run_leased(self: Arc<Self>, lease: Lease) {
        let last_step = Arc::new(Mutex::new(lease.job.step.clone()));
        let shadow = Lease {
            job: lease.job.clone(),
            event: None,
            token: lease.token,
            seq: lease.seq,
            deliveries: lease.deliveries,
        };
        // Caught here rather than by spawning a task per job (cheaper, same isolation).
        let job = std::panic::AssertUnwindSafe(self.clone().run_job(lease, last_step.clone()));
        match futures_util::FutureExt::catch_unwind(job).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Storage failed under the job (an election, a lost connection): give it back
                // at its last recorded step, to run again in a moment. If even that cannot be
                // recorded, the lease ends here and the job comes back after the lease check.
                tracing::warn!(job = %shadow.job.id, error = %e, "cannot record a job's progress; it runs again in a moment");
                let step = last_step.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let queue = &self.store.queue;
                let given_back = match &e {
                    // Will not succeed if tried again (a record that cannot be read): a dead
                    // letter that says why, not a job that comes back forever.
                    StoreError::Permanent(why) => {
                        let why = format!("cannot be run: {why}");
                        queue.ack(shadow, step, JobState::Failed, Some(why)).await
                    }
                    _ => queue.nak(shadow, step, Duration::from_secs(1)).await,
                };
                if let Err(e) = given_back {
                    tracing::warn!(error = %e, "cannot give the job back; it runs again when its lease lapses");
                }
            }
            Err(panic) => {
                let step = last_step.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(job = %shadow.job.id, panic = %what, "a job panicked; it goes back to the queue");
                if let Err(e) = self
                    .store
                    .queue
                    .abandon(shadow, step, Duration::from_secs(1))
                    .await
                {
                    tracing::error!(error = %e, "cannot give a panicked job back; it runs again when its lease expires");
                }
            }
        }
    }

    async fn run_job(
        self: Arc<Self>,
        mut lease: Lease,
        last_step: Arc<Mutex<Step>>,
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if tests::PANIC_ONCE.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("injected by a test");
        }
        let event = match self.job_event(&mut lease).await? {
            Ok(e) => e,
            Err(g) => return self.give_back(lease, g).await,
        };
        let (rules, idx) = match self.job_version(&lease, &event).await {
            Ok(v) => v,
            Err(g) => return self.give_back(lease, g).await,
        };
        let rule = &rules.rules[idx];
        let (correlated, absence) = match self.job_correlation(rule, &lease, &event).await? {
            Ok(c) => c,
            Err(g) => return self.give_back(lease, g).await,
        };
        let run = Run {
            rules: &rules,
            rule,
            event: &event,
            meta: job_meta(rule, &event),
            correlated,
        };
        let queue = self.store.queue.clone();
        let mut step = lease.job.step.clone();
        let mut input = match state::place(&step) {
            Place::Gate => {
                let window = self.window_decision(&lease.job, &step, self.settings.clock.now());
                if let (WindowDecision::Approve { window }, true) = (&window, rule.shadow) {
                    tracing::info!(job = %lease.job.id, rule = %rule.key, window = %window, "shadow rule under an approve window: nobody is asked, nothing runs");
                }
                Some(Input::Gate(window))
            }
            Place::Awaiting => Some(self.approval_check(&run, &lease, &step).await?),
            Place::Action => None,
        };
        loop {
            if let Some(a) = &step.awaiting {
                // Decided (or about to be): real work again from here.
                self.awaiting.done(a.deadline, &lease.job.id);
            }
            let transition = match input.take() {
                Some(i) => state::next(&step, self.facts(rule), i),
                None => Transition::Run {
                    step: step.clone(),
                    record: false,
                },
            };
            match transition {
                Transition::Run { step: s, record } => {
                    if record {
                        queue.progress(&mut lease, s.clone()).await?;
                        *last_step.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
                    }
                    step = s;
                    let actions = match step.phase {
                        Phase::Main => &rule.actions,
                        Phase::OnFailure => &rule.on_failure,
                    };
                    let ran = match actions.get(step.index as usize) {
                        Some(action) => self.run_action(&run, &lease, &step, action).await?,
                        // A step past its part's end (recorded by an older version): over.
                        None => Ran::Done(Outcome {
                            ok: true,
                            ..Outcome::default()
                        }),
                    };
                    input = Some(Input::Ran(ran));
                }
                Transition::Ask { step: s } => {
                    queue.progress(&mut lease, s.clone()).await?;
                    *last_step.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
                    step = s;
                    tracing::info!(job = %lease.job.id, rule = %rule.key, "awaiting approval");
                    input = Some(self.approval_check(&run, &lease, &step).await?);
                }
                Transition::TimeOut { approve } => {
                    input = Some(self.approval_timeout(&lease, &step, approve).await?);
                }
                Transition::WindowEnded => {
                    input = Some(self.approval_window_ended(&lease, &step).await?);
                }
                Transition::Nak { step, delay, why } => {
                    if let (Wait::Approval, Some(a)) = (why, &step.awaiting) {
                        self.awaiting.add(a.deadline, &lease.job.id);
                    }
                    if why == Wait::Retry {
                        tracing::info!(run = %lease.job.run_id(step.phase, step.index), attempt = step.attempts, wait = %crate::domain::human_duration(delay.as_millis() as i64), "action failed; retrying");
                    }
                    return queue.nak(lease, step, delay).await;
                }
                Transition::Ack { step, state, note } => {
                    if state == JobState::Failed {
                        tracing::warn!(rule = %rule.name, job = %lease.job.id, error = %note.as_deref().unwrap_or("-"), "job failed for good");
                    }
                    let job_id = lease.job.id.clone();
                    queue.ack(lease, step, state, note).await?;
                    // After the ack (queued first, so committed first): a crash between the two
                    // leaves a window past its deadline, which new events ignore and storage
                    // expiry collects; the other way round, the job ran again and found its own
                    // window gone, as if the missing event had come ("did not fire").
                    if let Err(e) = self
                        .close_fired_absence(rule, &absence, state, &event)
                        .await
                    {
                        tracing::warn!(job = %job_id, error = %e, "cannot remove a fired absence's window; it expires with its deadline past");
                    }
                    return Ok(());
                }
                Transition::Leave => return Ok(()),
            }
        }
    }

    /// What the state machine needs to know about `rule` now.
    fn facts(&self, rule: &Rule) -> Facts {
        Facts {
            actions: rule.actions.len(),
            on_failure: rule.on_failure.len(),
            shadow: rule.shadow,
            approval: rule.approval.as_ref().map(|a| a.timeout),
            now: self.settings.clock.now(),
        }
    }

    /// The maintenance-window decision for a job about to start (`engine/windows.rs`, on the
    /// current rule set's `windows:`), as the state machine's input.
    fn window_decision(&self, job: &crate::domain::Job, step: &Step, now: i64) -> WindowDecision {
        match self.window_gate(job, step) {
            Gate::Go => WindowDecision::Open,
            Gate::Hold(wait, by) => WindowDecision::Hold {
                until: now + wait.as_millis() as i64,
                by,
            },
            Gate::Skip { note, wait, by } => WindowDecision::Skip {
                note,
                until: now + wait.as_millis() as i64,
                by,
            },
            Gate::Approve { window, .. } => {
                // From here on an approval: listed as awaiting, no longer as held.
                self.held.release(&job.id);
                WindowDecision::Approve { window }
            }
        }
    }

    /// Does what a job that cannot go on asks for.
    async fn give_back(&self, lease: Lease, g: GiveBack) -> Result<(), StoreError> {
        let step = lease.job.step.clone();
        let queue = &self.store.queue;
        match g {
            GiveBack::Later(delay) => queue.nak(lease, step, delay).await,
            GiveBack::Fail(msg) => queue.ack(lease, step, JobState::Failed, Some(msg)).await,
            GiveBack::Done(msg) => queue.ack(lease, step, JobState::Done, Some(msg)).await,
        }
    }

    /// The job's event, from the lease or the log.
    async fn job_event(
        &self,
        lease: &mut Lease,
    ) -> Result<Result<Arc<Event>, GiveBack>, StoreError> {
        if let Some(e) = lease.event.take() {
            return Ok(Ok(e));
        }
        if let Some(e) = self.store.log.event(&lease.job.event_id).await? {
            return Ok(Ok(e));
        }
        // Retention never prunes the event of a pending job, so "not found" for a young event
        // is a read that lagged (a replica not caught up, a stream leader just elected): look
        // again in a moment rather than give it up.
        let age = crate::domain::event_id_ms(&lease.job.event_id).map(|at| now_ms() - at);
        if age.is_some_and(|a| a < EVENT_LOOKUP_PATIENCE.as_millis() as i64) {
            tracing::warn!(job = %lease.job.id, "its event was not found (yet); looking again in a moment");
            return Ok(Err(GiveBack::Later(Duration::from_secs(1))));
        }
        Ok(Err(GiveBack::Fail(
            "its event is no longer in the event log".into(),
        )))
    }

    /// The rule version the job matched: kept in memory, or from the archive; else handed on
    /// to another node (a rolling change) or failed as changed.
    async fn job_version(
        &self,
        lease: &Lease,
        event: &Event,
    ) -> Result<(Arc<RuleSet>, usize), GiveBack> {
        let job = &lease.job;
        if let Some(v) = self.rule_version(&job.key, &job.fingerprint) {
            return Ok(v);
        }
        if let Some(v) = self.restore_version(&job.key, &job.fingerprint).await {
            return Ok(v);
        }
        if self.settings.shared && now_ms() - event.received_at < VERSION_HANDOFF.as_millis() as i64
        {
            // Another node may run the version it matched (a rolling change): hand it on.
            tracing::debug!(job = %job.id, "the rule version it matched is not loaded here; handing it on");
            return Err(GiveBack::Later(Duration::from_millis(500)));
        }
        let msg = match self.rules().rule_by_key(&job.key) {
            Some(_) => format!(
                "rule `{}` changed since the match: the version it matched is gone; re-run the job to run the current version",
                job.key
            ),
            None => format!(
                "rule `{}` no longer exists (it was removed since the match)",
                job.key
            ),
        };
        tracing::warn!(job = %job.id, "{msg}");
        Err(GiveBack::Fail(msg))
    }

    /// A correlation's job: what took part (for its templates) and, for an absence, its group;
    /// an absence waits for its deadline first and fires only if its window is still open.
    async fn job_correlation<'r>(
        &self,
        rule: &'r Rule,
        lease: &Lease,
        event: &Event,
    ) -> Result<Result<(Correlated, Absence<'r>), GiveBack>, StoreError> {
        let Some(c) = &rule.correlate else {
            return Ok(Ok((None, None)));
        };
        let record = self
            .store
            .history
            .event_detail(&event.id)
            .await?
            .and_then(|d| {
                d.correlations
                    .into_iter()
                    .find(|r| r.job.as_deref() == Some(lease.job.id.as_str()))
            });
        let Some(record) = record else {
            return Ok(Err(GiveBack::Fail(
                "its correlation record is missing from the event".into(),
            )));
        };
        let cd = record.correlation;
        let mut absence = None;
        let mut evicted = false;
        if cd.state == CorrelationState::Waiting {
            let step = &lease.job.step;
            if step.phase == Phase::Main && step.index == 0 && step.awaiting.is_none() {
                let now = self.settings.clock.now();
                let deadline = cd.deadline.unwrap_or(now);
                if now <= deadline {
                    let wait = Duration::from_millis((deadline - now + 1) as u64)
                        .min(self.settings.recheck);
                    self.waiting.add(deadline, &lease.job.id);
                    return Ok(Err(GiveBack::Later(wait)));
                }
                self.waiting.done(deadline, &lease.job.id);
                let missing = c.steps.get(1).map(|s| s.name.as_str()).unwrap_or("");
                match self.absence_window(rule, c, &cd, &event.id).await? {
                    Window::Closed => {
                        let msg = format!(
                            "{}: `{missing}` came within the window (or the rule changed)",
                            crate::domain::DID_NOT_FIRE
                        );
                        tracing::debug!(job = %lease.job.id, "{msg}");
                        return Ok(Err(GiveBack::Done(msg)));
                    }
                    Window::Evicted => {
                        evicted = true;
                        tracing::warn!(job = %lease.job.id, rule = %rule.key, "absence: its window was evicted (max_open) before the deadline, so whether `{missing}` came is unknown; firing, marked evicted");
                    }
                    Window::Open => {
                        tracing::info!(job = %lease.job.id, rule = %rule.key, "absence: the window ended without `{missing}`; firing");
                    }
                }
            }
            absence = Some((&**c, cd.group.clone()));
        }
        let (events, mut meta) = self.correlation_context(c, &cd).await?;
        meta["evicted"] = Value::Bool(evicted);
        Ok(Ok((Some((Arc::new(events), Arc::new(meta))), absence)))
    }

    /// One attempt of one action, recorded in the history.
    async fn run_action(
        &self,
        run: &Run<'_>,
        lease: &Lease,
        step: &Step,
        action: &Action,
    ) -> Result<Ran, StoreError> {
        let job = &lease.job;
        let attempt = step.attempts + 1;
        let run_id = job.run_id(step.phase, step.index);
        let ctx = run.context(step, None);
        let record = |rendered: String, outcome: Option<Outcome>, started_at: i64| Attempt {
            job_id: job.id.clone(),
            run_id: run_id.clone(),
            phase: step.phase,
            index: step.index,
            attempt,
            action: action.kind(),
            rendered,
            started_at,
            finished_at: outcome.as_ref().map(|_| now_ms()),
            outcome,
        };
        let rendered = match action.render(&run.rules.templates, &ctx) {
            Ok(r) => r,
            Err(e) => {
                let error = format!(
                    "action {run_id} ({}) of rule `{}` cannot be rendered: {e}",
                    action.kind(),
                    run.rule.name
                );
                tracing::warn!(job = %job.id, "{}", crate::secrets::mask(&error));
                let out = Outcome::failed(crate::secrets::mask(&error));
                self.store
                    .history
                    .record_later(record("null".into(), Some(out.clone()), now_ms()));
                let failure = failure_context(action, &out, attempt);
                return Ok(Ran::Failed(out, failure));
            }
        };
        let shown = rendered.for_history_json();
        if run.rule.shadow {
            // Rendered exactly as live; recorded as what would have run; nothing runs.
            let out = Outcome {
                ok: true,
                result: Some(json!({"shadow": true})),
                ..Outcome::default()
            };
            tracing::info!(rule = %run.rule.name, action = action.kind(), run = %run_id, "action not run (shadow mode)");
            let at = now_ms();
            self.store
                .history
                .record_later(record(shown, Some(out.clone()), at));
            return Ok(Ran::Done(out));
        }
        let context = run.run_context(action, &run_id);
        let started_at = now_ms();
        let begun = std::time::Instant::now();
        let outcome = if let Rendered::PostEvent(p) = &rendered {
            self.post_event(p, run.event, &run_id).await
        } else if action.in_process() {
            rendered.execute(&context, self.store.state.as_ref()).await
        } else {
            // The limit counts what runs outside the process; waiting for it is FIFO, so jobs
            // start in acceptance order.
            let permit = tokio::select! {
                p = self.limit.clone().acquire_owned() => p.ok(),
                () = self.shutdown.cancelled() => None,
            };
            let Some(_permit) = permit.filter(|_| !self.shutdown.is_cancelled()) else {
                return Ok(Ran::Stopped); // the lease lapses; the job runs at the next start
            };
            // The run is durable already (the job is pending); the attempt row is for the
            // history, written alongside the start to keep a commit off the path to it. The run
            // is polled first (`biased`): a process is spawned before the writer thread is woken
            // for the row; woken first, the writer took the core from the spawn for the row's
            // SQL and WAL writes (perf sched, idle requests).
            let (outcome, started) = tokio::join!(
                biased;
                self.with_heartbeat(lease, rendered.execute(&context, self.store.state.as_ref())),
                self.store
                    .history
                    .record(record(shown.clone(), None, started_at)),
            );
            started?;
            outcome
        };
        // What a run printed or answered may echo a secret: masked before it is recorded or
        // handed on as `previous`.
        let outcome = masked(outcome);
        let took = begun.elapsed();
        self.count_run(action.kind(), outcome.ok, took);
        let retry = !outcome.ok
            && outcome.retryable
            && step.tries < action.retries()
            && !self.shutdown.is_cancelled();
        let delay = retry.then(|| retry_delay(attempt, outcome.retry_after));
        log_run(run.rule, action, &run_id, attempt, &outcome, delay, took);
        // Ordered before the progress/nak/ack that follows: no commit of its own.
        self.store
            .history
            .record_later(record(shown, Some(outcome.clone()), started_at));
        Ok(match (outcome.ok, delay) {
            (true, _) => Ran::Done(outcome),
            (false, Some(d)) => Ran::Retry(outcome, d),
            (false, None) => {
                let failure = failure_context(action, &outcome, attempt);
                Ran::Failed(outcome, failure)
            }
        })
    }

    /// An absence that fired: once its job is done (acked), its window is removed (kept until
    /// then, so a job that runs again after a crash decides the same).
    async fn close_fired_absence(
        &self,
        rule: &Rule,
        absence: &Option<(&crate::rules::correlate::Correlation, String)>,
        state: JobState,
        event: &crate::domain::Event,
    ) -> Result<(), StoreError> {
        match absence {
            Some((c, group)) if state == JobState::Done => {
                self.close_absence(rule, c, group, event).await
            }
            _ => Ok(()),
        }
    }

    /// Runs `work` while extending the lease every third of its duration.
    async fn with_heartbeat<F: std::future::Future<Output = Outcome>>(
        &self,
        lease: &Lease,
        work: F,
    ) -> Outcome {
        let every = self.settings.lease / 3;
        let beat = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = self.store.queue.heartbeat(lease, self.settings.lease).await {
                    tracing::warn!(job = %lease.job.id, error = %e, "lease lost while running; the job may run again");
                    return;
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => out,
            () = beat => work.await,
        }
    }

    fn count_run(&self, kind: &'static str, ok: bool, took: Duration) {
        let (runs, seconds) = names::run_metrics(kind, ok);
        runs.increment(1);
        seconds.record(took.as_secs_f64());
    }

    /// Appends an event emitted by `post_event`. Its delivery id is the emitting run's id, so
    /// running the action again finds the child already made instead of making another.
    pub(super) async fn post_event(
        &self,
        p: &crate::actions::event::PostEvent,
        parent: &Event,
        run_id: &str,
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
        let delivery = Delivery {
            key: run_id.to_string(),
            window: Some(self.settings.retain),
        };
        let event = VerifiedEvent::internal(&p.source, p.body.clone(), depth, &parent.id, delivery);
        match Box::pin(self.ingest(event)).await {
            Ok(done) => Outcome {
                ok: true,
                result: Some(json!({
                    "event_id": done.id,
                    "matched": done.matched,
                    "depth": depth,
                    "already_emitted": done.duplicate,
                })),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                retryable: true,
                ..Outcome::failed(e.to_string())
            },
        }
    }
}

/// `outcome` with every value from a secret masked (output, error, result).
fn masked(mut outcome: Outcome) -> Outcome {
    use crate::secrets::{mask_json, mask_owned};
    outcome.stdout = mask_owned(std::mem::take(&mut outcome.stdout));
    outcome.stderr = mask_owned(std::mem::take(&mut outcome.stderr));
    outcome.error = outcome.error.map(mask_owned);
    if let Some(r) = outcome.result.as_mut() {
        mask_json(r);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::super::{Engine, Settings};
    use crate::domain::JobState;
    use crate::rules::{Dirs, load};
    use crate::store::{JobFilter, Store};
    use crate::verify::{Delivery, VerifiedEvent};

    /// The next job to start panics.
    pub(super) static PANIC_ONCE: AtomicBool = AtomicBool::new(false);

    fn event(n: u32) -> VerifiedEvent {
        let delivery = Delivery {
            key: format!("d{n}"),
            window: None,
        };
        VerifiedEvent::internal("s", serde_json::json!({"n": n}), 0, "test", delivery)
    }

    async fn done(store: &Store, n: usize) -> bool {
        for _ in 0..100 {
            let jobs = store
                .history
                .jobs(JobFilter {
                    state: Some(JobState::Done),
                    limit: 10,
                    ..JobFilter::default()
                })
                .await
                .unwrap();
            if jobs.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_neither_leaks_its_worker_nor_strands_its_job() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("rulebooks/r.yml"),
            "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: r\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n",
        )
        .unwrap();
        let rules = load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        })
        .unwrap();
        let store = Store::embedded(&dir.path().join("data")).unwrap();
        // One worker: if the panic took it down, nothing would ever run again.
        let settings = Settings {
            concurrency: 1,
            ..Settings::default()
        };
        let engine = Engine::new(store.clone(), Arc::new(rules), settings);
        PANIC_ONCE.store(true, Ordering::SeqCst);
        engine.start();
        engine.ingest(event(1)).await.unwrap();
        engine.ingest(event(2)).await.unwrap();
        assert!(done(&store, 2).await, "both jobs finish after a panic");
        assert!(!PANIC_ONCE.load(Ordering::SeqCst), "the panic happened");
        // Leases end once the acks are durable (just after the jobs read as done).
        let mut depth = store.queue.depth();
        for _ in 0..50 {
            if depth.leased == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            depth = store.queue.depth();
        }
        assert_eq!((depth.ready, depth.leased, depth.delayed), (0, 0, 0));
        engine.ingest(event(3)).await.unwrap();
        assert!(done(&store, 3).await, "the worker still takes new jobs");
        engine.shutdown(Duration::from_secs(1)).await;
    }
}
