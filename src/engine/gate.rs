//! The job's side of an approval: making its request (what would run, rendered), running the
//! rule's `notify` actions once, reading the decision, and letting `on_timeout` decide at the
//! deadline. The state machine (`engine/state.rs`) says when; this does the I/O.

use serde_json::{Value, json};

use super::Engine;
use super::approval::{self, Request};
use super::job::Run;
use super::state::Input;
use crate::actions::Rendered;
use crate::domain::{Awaiting, Decision, Outcome, Step, StoreError};
use crate::store::Lease;

/// Compare-and-set rounds before giving up on a request that keeps changing (a storage error:
/// the job comes back in a moment).
const ROUNDS: usize = 20;

/// Who decided a window's approval whose window was over before anyone did (not a user name:
/// user names have no spaces).
pub const WINDOW_END: &str = "window end";

impl Engine {
    /// The decision so far about a job awaiting approval, as the machine's input. Makes the
    /// request when it is not stored yet (first time, or after a crash between recording the
    /// wait and storing it) and runs `notify` until it has run once.
    pub(super) async fn approval_check(
        &self,
        run: &Run<'_>,
        lease: &Lease,
        step: &Step,
    ) -> Result<Input, StoreError> {
        let approve_on_timeout = run
            .rule
            .approval
            .as_ref()
            .is_some_and(|a| a.approve_on_timeout);
        let Some(awaiting) = &step.awaiting else {
            return Ok(Input::Check {
                decision: None,
                approve_on_timeout,
                check: self.settings.approval_check,
                window_over: false,
            });
        };
        let window_over = self.window_over(&lease.job, &awaiting.reason);
        let check = |decision| Input::Check {
            decision,
            approve_on_timeout,
            check: self.settings.approval_check,
            window_over,
        };
        let state = self.store.state.as_ref();
        let keep = self.settings.retain;
        for _ in 0..ROUNDS {
            let (mut request, rev) = match approval::read(state, &lease.job.id).await? {
                Some((r, rev))
                    if r.generation == step.generation
                        && r.requested_at == awaiting.requested_at =>
                {
                    (r, Some(rev))
                }
                // None yet, or an earlier generation's (a re-run on a changed rule asks again).
                found => {
                    let fresh = self.new_request(run, lease, step, awaiting);
                    match approval::write(state, &fresh, found.map(|(_, rev)| rev), keep).await {
                        Ok(rev) => (fresh, Some(rev)),
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            if request.notify_done || request.decision.is_some() {
                return Ok(check(request.decision));
            }
            if self.settings.clock.now() >= request.deadline {
                // Made past its deadline (a crash after the wait was recorded, a restart
                // later): `on_timeout` decides now, so nobody is asked to decide.
                tracing::info!(job = %lease.job.id, "approval request made past its deadline: notify not run, on_timeout decides");
                return Ok(check(None));
            }
            request.notified = self.notify(run, lease, step, &request).await;
            request.notify_done = true;
            match approval::write(state, &request, rev, keep).await {
                // A person decided meanwhile: notify ran; read it again.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(check(request.decision)),
            }
        }
        Err(StoreError::Transient(
            "the approval request kept changing".into(),
        ))
    }

    /// Whether the approval `reason` names a maintenance window (`window <name>`) and no window
    /// is in force for the job's rule any more (it ended, or a reload removed it).
    fn window_over(&self, job: &crate::domain::Job, reason: &str) -> bool {
        reason.starts_with("window ")
            && matches!(
                self.rules()
                    .windows
                    .decide(&job.rulebook, &job.rule, self.settings.clock.now()),
                crate::rules::windows::Decision::Run
            )
    }

    /// Nobody decided by the deadline: `on_timeout` decides (by `timeout`), unless a person's
    /// decision was stored first.
    pub(super) async fn approval_timeout(
        &self,
        lease: &Lease,
        step: &Step,
        approve: bool,
    ) -> Result<Input, StoreError> {
        let comment = format!(
            "nobody decided in time; on_timeout: {}",
            if approve { "approve" } else { "reject" }
        );
        self.approval_decide(lease, step, approve, "timeout", comment)
            .await
    }

    /// The window that asked for approval is over before anyone decided: the job goes on as if
    /// no window were in force, approved by `window end`, unless a person's decision came first.
    pub(super) async fn approval_window_ended(
        &self,
        lease: &Lease,
        step: &Step,
    ) -> Result<Input, StoreError> {
        let comment = "the maintenance window that asked for approval ended (or was removed) before anyone decided; the job goes on as if no window were in force".to_string();
        self.approval_decide(lease, step, true, WINDOW_END, comment)
            .await
    }

    /// Records a decision nobody made by hand (by `timeout` or `window end`) unless a person's
    /// was stored first, and audits it.
    async fn approval_decide(
        &self,
        lease: &Lease,
        step: &Step,
        approve: bool,
        by: &str,
        comment: String,
    ) -> Result<Input, StoreError> {
        let state = self.store.state.as_ref();
        let keep = self.settings.retain;
        let input = |d| Input::Check {
            decision: Some(d),
            approve_on_timeout: approve,
            check: self.settings.approval_check,
            window_over: false,
        };
        let reason = step
            .awaiting
            .as_ref()
            .map(|a| a.reason.clone())
            .unwrap_or_default();
        for _ in 0..ROUNDS {
            let found = approval::read(state, &lease.job.id).await?;
            if let Some((
                Request {
                    decision: Some(d), ..
                },
                _,
            )) = &found
            {
                return Ok(input(d.clone()));
            }
            let decision = Decision {
                approved: approve,
                by: by.into(),
                at: self.settings.clock.now(),
                comment: Some(comment.clone()),
                reason: reason.clone(),
            };
            let Some((mut request, rev)) = found else {
                // The request is made before any check: without it, decide on the step alone.
                return Ok(input(decision));
            };
            request.decision = Some(decision.clone());
            match approval::write(state, &request, Some(rev), keep).await {
                Ok(_) => {
                    tracing::info!(job = %lease.job.id, approve, by, "decided without a person");
                    let who = crate::access::Principal {
                        name: by.into(),
                        role: crate::access::Role::Approver,
                    };
                    let what = if approve { "approve" } else { "reject" };
                    let record = crate::access::audit::Record::new(
                        &who,
                        what,
                        &lease.job.id,
                        decision.comment.clone(),
                    );
                    crate::access::audit::append(state, record).await?;
                    return Ok(input(decision));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Transient(
            "the approval request kept changing".into(),
        ))
    }

    /// The request a job makes: what would run, rendered now (credentials masked).
    fn new_request(
        &self,
        run: &Run<'_>,
        lease: &Lease,
        step: &Step,
        awaiting: &Awaiting,
    ) -> Request {
        let ctx = run.context(step, None);
        let actions = run
            .rule
            .actions
            .iter()
            .map(|a| match a.render(&run.rules.templates, &ctx) {
                Ok(r) => {
                    serde_json::from_str::<Value>(&r.for_history_json()).unwrap_or(Value::Null)
                }
                Err(e) => json!({
                    "action": a.kind(),
                    "rendered_when_it_runs": crate::secrets::mask(&e.to_string()),
                }),
            })
            .collect();
        let spec = run.rule.approval.as_ref();
        Request {
            job: lease.job.id.clone(),
            event_id: lease.job.event_id.clone(),
            rulebook: run.rule.rulebook.clone(),
            rule: run.rule.name.clone(),
            reason: awaiting.reason.clone(),
            generation: step.generation,
            requested_at: awaiting.requested_at,
            deadline: awaiting.deadline,
            on_timeout: spec.map_or("reject", |a| a.on_timeout()).to_string(),
            approvers: spec.map(|a| a.approvers.clone()).unwrap_or_default(),
            actions,
            notify_done: false,
            notified: Vec::new(),
            decision: None,
        }
    }

    /// Runs the rule's `notify` actions once, with `approval` in their templates; returns
    /// each one's result (a failure is logged and shown, and does not stop the wait).
    async fn notify(
        &self,
        run: &Run<'_>,
        lease: &Lease,
        step: &Step,
        request: &Request,
    ) -> Vec<Value> {
        let Some(spec) = &run.rule.approval else {
            return Vec::new();
        };
        let approval = request.view(self.public_url());
        let ctx = run.context(step, Some(&approval));
        let mut results = Vec::with_capacity(spec.notify.len());
        for (i, action) in spec.notify.iter().enumerate() {
            let run_id = format!("{}:approval:{i}", lease.job.id);
            let outcome = match action.render(&run.rules.templates, &ctx) {
                Err(e) => {
                    Outcome::failed(crate::secrets::mask(&format!("cannot be rendered: {e}")))
                }
                Ok(Rendered::PostEvent(p)) => self.post_event(&p, run.event, &run_id).await,
                Ok(rendered) => {
                    let context = run.run_context(action, &run_id);
                    rendered.execute(&context, self.store.state.as_ref()).await
                }
            };
            let error = outcome.error.as_deref().map(crate::secrets::mask);
            match &error {
                None => {
                    tracing::info!(job = %lease.job.id, action = action.kind(), run = %run_id, "approval notify ok")
                }
                Some(e) => {
                    tracing::warn!(job = %lease.job.id, action = action.kind(), run = %run_id, error = %e, "approval notify failed")
                }
            }
            results.push(json!({
                "action": action.kind(),
                "run_id": run_id,
                "ok": outcome.ok,
                "status": outcome.status,
                "error": error,
            }));
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use super::super::{Engine, Settings};
    use crate::domain::{Clock, JobState};
    use crate::rules::{Dirs, load};
    use crate::store::{JobStatus, Store};
    use crate::verify::{Delivery, VerifiedEvent};

    const RULES: &str = "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: yes\n    approval: { timeout: 30m, on_timeout: approve }\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n  - name: no\n    approval: { timeout: 30m }\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n";

    async fn status(store: &Store, event: &str, rule: &str, want: JobStatus) -> JobStatus {
        let mut last = None;
        for _ in 0..400 {
            let d = store.history.event_detail(event).await.unwrap().unwrap();
            if let Some(m) = d.matches.iter().find(|m| m.rule == rule) {
                if m.status == want {
                    return m.status;
                }
                last = Some(m.status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{rule}: never {want:?}, last {last:?}");
    }

    /// On a test clock: nothing happens before the deadline however often the jobs look; one
    /// millisecond past it `on_timeout` decides (by `timeout`), both ways.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_timeout_decides_at_the_deadline_on_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("rulebooks/r.yml"), RULES).unwrap();
        let p = dir.path();
        let rules = load(&Dirs {
            rulebooks: p.join("rulebooks"),
            scripts: p.join("scripts"),
            templates: p.join("templates"),
        })
        .unwrap();
        let store = Store::embedded(&p.join("data")).unwrap();
        let now = Arc::new(AtomicI64::new(1_800_000_000_000));
        let clock = now.clone();
        let settings = Settings {
            clock: Clock::new(move || clock.load(Ordering::SeqCst)),
            approval_check: Duration::from_millis(20),
            ..Settings::default()
        };
        let engine = Engine::new(store.clone(), Arc::new(rules), settings);
        engine.start();
        let d = Delivery {
            key: "d1".into(),
            window: None,
        };
        let e = VerifiedEvent::internal("s", serde_json::json!({"n": 1}), 0, "test", d);
        let id = engine.ingest(e).await.unwrap().id;
        status(&store, &id, "yes", JobStatus::AwaitingApproval).await;
        status(&store, &id, "no", JobStatus::AwaitingApproval).await;
        // 30 minutes on the clock, to the millisecond: still waiting.
        now.fetch_add(30 * 60 * 1000 - 1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let d = store.history.event_detail(&id).await.unwrap().unwrap();
        assert!(
            d.matches
                .iter()
                .all(|m| m.status == JobStatus::AwaitingApproval),
            "{:?}",
            d.matches
        );
        now.fetch_add(1, Ordering::SeqCst);
        status(&store, &id, "yes", JobStatus::Done).await;
        status(&store, &id, "no", JobStatus::Rejected).await;
        let d = store.history.event_detail(&id).await.unwrap().unwrap();
        for m in &d.matches {
            let decision = m.decision.as_ref().expect("decided");
            assert_eq!(decision.by, "timeout");
            assert_eq!(decision.approved, m.rule == "yes");
            assert_eq!(m.attempts.len(), usize::from(m.rule == "yes"));
        }
        let (_, state) = store
            .history
            .job(&format!("{id}:no"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state, JobState::Done);
        engine.shutdown(Duration::from_secs(1)).await;
    }

    /// The state store of a service that dies (kill -9) as it would store an approval request:
    /// the request is never stored, and the task never goes on.
    struct DiesBeforeTheRequest {
        inner: Arc<dyn crate::store::StateStore>,
        died: Arc<std::sync::atomic::AtomicBool>,
    }

    #[async_trait::async_trait]
    impl crate::store::StateStore for DiesBeforeTheRequest {
        async fn get(&self, key: &str) -> Result<Option<(String, u64)>, crate::domain::StoreError> {
            self.inner.get(key).await
        }
        async fn create(
            &self,
            key: &str,
            value: &str,
            ttl: Option<Duration>,
        ) -> Result<u64, crate::domain::StoreError> {
            if key.starts_with("approval/") && !self.died.swap(true, Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            self.inner.create(key, value, ttl).await
        }
        async fn update(
            &self,
            key: &str,
            value: &str,
            expected: u64,
            ttl: Option<Duration>,
        ) -> Result<u64, crate::domain::StoreError> {
            self.inner.update(key, value, expected, ttl).await
        }
        async fn delete(
            &self,
            key: &str,
            expected: Option<u64>,
        ) -> Result<(), crate::domain::StoreError> {
            self.inner.delete(key, expected).await
        }
    }

    /// A crash after a job recorded its wait and before it stored its request, and a restart
    /// past the deadline: the request is made then, but nobody is notified to decide about a
    /// request `on_timeout` decides at once.
    #[test]
    fn a_request_made_after_its_deadline_notifies_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_path_buf();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::write(
            p.join("rulebooks/r.yml"),
            "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: no\n    approval:\n      timeout: 30m\n      notify: [{ log: { message: 'decide {{ approval.job }}' } }]\n    actions: [{ log: { message: ran } }]\n",
        )
        .unwrap();
        let rules = || {
            Arc::new(
                load(&Dirs {
                    rulebooks: p.join("rulebooks"),
                    scripts: p.join("scripts"),
                    templates: p.join("templates"),
                })
                .unwrap(),
            )
        };
        let now = Arc::new(AtomicI64::new(1_800_000_000_000));
        let settings = || {
            let clock = now.clone();
            Settings {
                clock: Clock::new(move || clock.load(Ordering::SeqCst)),
                approval_check: Duration::from_millis(20),
                ..Settings::default()
            }
        };
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        };
        let died = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rt = runtime();
        let id = rt.block_on(async {
            let store = Store::embedded(&p.join("data")).unwrap();
            let state = Arc::new(DiesBeforeTheRequest {
                inner: store.state.clone(),
                died: died.clone(),
            });
            let store = Store { state, ..store };
            let engine = Engine::new(store, rules(), settings());
            engine.start();
            let d = Delivery {
                key: "d1".into(),
                window: None,
            };
            let e = VerifiedEvent::internal("s", serde_json::json!({"n": 1}), 0, "test", d);
            let id = engine.ingest(e).await.unwrap().id;
            for _ in 0..400 {
                if died.load(Ordering::SeqCst) {
                    return id;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the job never asked for approval");
        });
        rt.shutdown_timeout(Duration::ZERO);

        now.fetch_add(31 * 60 * 1000, Ordering::SeqCst);
        let rt = runtime();
        rt.block_on(async {
            let store = Store::embedded(&p.join("data")).unwrap();
            let engine = Engine::new(store.clone(), rules(), settings());
            engine.start();
            status(&store, &id, "no", JobStatus::Rejected).await;
            let request = engine.approval(&format!("{id}:no")).await.unwrap().unwrap();
            assert_eq!(request.decision.map(|d| d.by), Some("timeout".to_string()));
            assert!(request.notified.is_empty(), "{:?}", request.notified);
            engine.shutdown(Duration::from_secs(1)).await;
        });
    }
}
