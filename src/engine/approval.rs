//! Approvals: a job that waits for a person's decision before its first action.
//!
//! The wait itself is the job's step (`Step::awaiting`, recorded before anything else), so it
//! lasts as long as the job: across restarts, reloads and, on JetStream, on any node. The
//! request — what would run, who may decide, and the decision once made — is one state-store
//! entry per job (`approval/<job id>`), changed by compare-and-set, so a person deciding and
//! the timeout firing at the same moment cannot both win. The job looks at it whenever it is
//! leased (at the latest every `Settings::approval_check`, and at its deadline).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Engine;
use crate::access::Principal;
use crate::domain::{Decision, StoreError};

/// The state-store key of a job's approval request.
pub fn key(job: &str) -> String {
    format!("approval/{job}")
}

/// A job's request for approval, as stored: what the console, the API and the job read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub job: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    /// `rule approval`, or `window <name>`.
    pub reason: String,
    /// The job's generation when it asked (a re-run on a changed rule asks again).
    pub generation: u32,
    /// Milliseconds since the epoch.
    pub requested_at: i64,
    pub deadline: i64,
    /// `reject` or `approve`.
    pub on_timeout: String,
    /// Who may decide; empty: every approver and admin.
    pub approvers: Vec<String>,
    /// The actions that would run, rendered now (credentials masked); an action that reads
    /// `previous` shows why it can only be rendered when it runs.
    pub actions: Vec<Value>,
    /// The `notify` actions have run (each one's result in `notified`).
    pub notify_done: bool,
    #[serde(default)]
    pub notified: Vec<Value>,
    pub decision: Option<Decision>,
}

impl Request {
    /// The request as the API and the console show it.
    pub fn view(&self, public_url: Option<&str>) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["requested_at"] = Value::String(crate::domain::rfc3339(self.requested_at));
        v["deadline"] = Value::String(crate::domain::rfc3339(self.deadline));
        v["url"] = Value::String(url(public_url, &self.job));
        if let Some(d) = &self.decision {
            v["decision"]["at"] = Value::String(crate::domain::rfc3339(d.at));
            v["decision"]["summary"] = Value::String(d.summary());
        }
        v
    }
}

/// The console page of a job's approval (`/console/approvals?job=…`) under `--public-url`, or
/// the path alone when it is not set.
pub fn url(public_url: Option<&str>, job: &str) -> String {
    let job: String = form_urlencoded::byte_serialize(job.as_bytes()).collect();
    let path = format!("/console/approvals?job={job}");
    match public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => path,
    }
}

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no job is awaiting approval with this id")]
    NotFound,
    #[error("already decided: {0}")]
    Decided(String),
    #[error("past its deadline: `on_timeout: {0}` decides")]
    TimedOut(String),
    #[error(
        "only {approvers} may decide about this job (the rule's `approval.approvers`); {who} is not one of them"
    )]
    NotAnApprover { who: String, approvers: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a job's request and its revision.
pub async fn read(
    state: &dyn crate::store::StateStore,
    job: &str,
) -> Result<Option<(Request, u64)>, StoreError> {
    match state.get(&key(job)).await? {
        None => Ok(None),
        Some((text, rev)) => serde_json::from_str(&text)
            .map(|r| Some((r, rev)))
            .map_err(|e| StoreError::Permanent(format!("approval request of {job}: {e}"))),
    }
}

/// Writes `request` over revision `rev` (or creates it). A pending request is kept until
/// decided; a decided one for `keep` (`--retain`, as long as the history keeps its job).
pub async fn write(
    state: &dyn crate::store::StateStore,
    request: &Request,
    rev: Option<u64>,
    keep: std::time::Duration,
) -> Result<u64, StoreError> {
    let text = serde_json::to_string(request)
        .map_err(|e| StoreError::Permanent(format!("approval request: {e}")))?;
    let key = key(&request.job);
    let ttl = request.decision.is_some().then_some(keep);
    match rev {
        Some(rev) => state.update(&key, &text, rev, ttl).await,
        None => state.create(&key, &text, ttl).await,
    }
}

impl Engine {
    /// Records `who`'s decision about a job awaiting approval (the API, the CLI and the
    /// console). A job waiting on this node acts on it at once; elsewhere (JetStream) when it
    /// looks next (within `--approval-check`).
    pub async fn decide(
        &self,
        job: &str,
        who: &Principal,
        approved: bool,
        comment: Option<String>,
    ) -> Result<(Request, Decision), ApprovalError> {
        let state = self.store.state.as_ref();
        for _ in 0..20 {
            let Some((mut request, rev)) = self.request_of(job).await? else {
                return Err(ApprovalError::NotFound);
            };
            if let Some(d) = &request.decision {
                return Err(ApprovalError::Decided(d.summary()));
            }
            let listed = request.approvers.is_empty()
                || request
                    .approvers
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&who.name));
            // An admin may always decide (break-glass), and the decision says so.
            let break_glass = !listed && who.role == crate::access::Role::Admin;
            if !listed && !break_glass {
                return Err(ApprovalError::NotAnApprover {
                    who: who.name.clone(),
                    approvers: request.approvers.join(", "),
                });
            }
            let comment = if break_glass {
                let why = format!(
                    "break-glass: admin {}, not one of the rule's approvers ({})",
                    who.name,
                    request.approvers.join(", ")
                );
                Some(match comment.as_deref().map(str::trim) {
                    Some(c) if !c.is_empty() => format!("{why}; {c}"),
                    _ => why,
                })
            } else {
                comment.clone()
            };
            let now = self.settings.clock.now();
            if now >= request.deadline {
                return Err(ApprovalError::TimedOut(request.on_timeout.clone()));
            }
            let decision = Decision {
                approved,
                by: who.name.clone(),
                at: now,
                comment: comment.filter(|c| !c.trim().is_empty()),
                reason: request.reason.clone(),
            };
            request.decision = Some(decision.clone());
            match write(state, &request, Some(rev), self.settings.retain).await {
                Ok(_) => {
                    tracing::info!(job, by = %who.name, approved, "approval decided");
                    // A job waiting here acts on it now rather than at its next check.
                    self.store.queue.wake(job);
                    return Ok((request, decision));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Transient("the approval request kept changing; try again".into()).into())
    }

    /// A job's request. A pending job that has just recorded its wait makes its request a
    /// moment later: someone deciding in between (the job listed as awaiting approval) waits
    /// for it, up to 3 s, instead of being told that nothing awaits approval.
    async fn request_of(&self, job: &str) -> Result<Option<(Request, u64)>, StoreError> {
        let state = self.store.state.as_ref();
        for _ in 0..30 {
            if let Some(found) = read(state, job).await? {
                return Ok(Some(found));
            }
            match self.store.history.job(job).await? {
                Some((_, crate::domain::JobState::Pending)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The requests of the jobs awaiting approval, oldest first (the console's page).
    pub async fn pending_approvals(&self, limit: usize) -> Result<Vec<Request>, StoreError> {
        let filter = crate::store::JobFilter {
            status: Some(crate::store::JobStatus::AwaitingApproval),
            limit,
            ..crate::store::JobFilter::default()
        };
        let jobs = self.store.history.jobs(filter).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            if let Some((r, _)) = read(self.store.state.as_ref(), &j.id).await?
                && r.decision.is_none()
            {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.requested_at);
        Ok(out)
    }

    /// A job's approval request, if it ever asked.
    pub async fn approval(&self, job: &str) -> Result<Option<Request>, StoreError> {
        Ok(read(self.store.state.as_ref(), job).await?.map(|(r, _)| r))
    }

    /// What ends an undecided request a maintenance window made (`during: approve`) for a rule
    /// without its own `approval:`: such a job is approved by `window end` once no window is in
    /// force for its rule. `Some((window, end))`: the window in force now and when it ends
    /// (`None`: none is, the job goes on when it looks next). `None` for any other request (a
    /// rule's own approval, or one decided): its `on_timeout` decides at the deadline.
    pub fn window_approval(&self, r: &Request) -> Option<(String, Option<i64>)> {
        let asked_by = r.reason.strip_prefix("window ")?;
        let rules = self.rules();
        let own = rules
            .rule(&r.rulebook, &r.rule)
            .is_some_and(|i| rules.rules[i].approval.is_some());
        if own || r.decision.is_some() {
            return None;
        }
        use crate::rules::windows::Decision as W;
        let now = self.settings.clock.now();
        Some(match rules.windows.decide(&r.rulebook, &r.rule, now) {
            W::Run => (asked_by.to_string(), None),
            W::Hold { window, until }
            | W::Skip { window, until }
            | W::Approve { window, until } => (window, Some(until)),
        })
    }

    /// What happens to request `r` if nobody decides, in a sentence for people: `on_timeout`
    /// at the deadline, or for a maintenance window's approval ([`Engine::window_approval`]) an
    /// approval when the window ends, if that comes first. The console's approvals page, the
    /// API's `if_undecided` and `rulehook event` say it alike.
    pub fn if_undecided(&self, r: &Request) -> String {
        let deadline = crate::domain::rfc3339(r.deadline);
        match self.window_approval(r) {
            None => format!("at the deadline, {deadline}: {}", r.on_timeout),
            Some((w, None)) => format!(
                "window {w} is over: approved (by window end) when the job looks next, within seconds"
            ),
            Some((w, Some(end))) if end <= r.deadline => format!(
                "approved (by window end) when window {w} ends at {}, before the deadline {deadline}",
                crate::domain::rfc3339(end)
            ),
            Some((w, Some(end))) => format!(
                "at the deadline, {deadline}: {} (window {w} is still in force then, until {})",
                r.on_timeout,
                crate::domain::rfc3339(end)
            ),
        }
    }

    /// The base of `approval.url` (`--public-url`).
    pub fn public_url(&self) -> Option<&str> {
        self.settings.public_url.as_deref()
    }
}
