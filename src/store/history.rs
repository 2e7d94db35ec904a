//! The history's read model: typed rows the admin API serializes as they are.

use serde::Serialize;
use serde_json::Value;

use crate::domain::{Correlated, CorrelationState, Decision, Job, JobState, Match, Step, rfc3339};

/// An event's status in lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// No rule matched.
    Unmatched,
    /// Every match was throttled: no job was made.
    Throttled,
    /// A job has not finished.
    Pending,
    /// Every job finished and one failed for good (a dead letter).
    Failed,
    Done,
}

impl EventStatus {
    pub const ALL: &'static [&'static str] =
        &["unmatched", "throttled", "pending", "failed", "done"];

    pub fn parse(s: &str) -> Option<EventStatus> {
        Some(match s {
            "unmatched" => EventStatus::Unmatched,
            "throttled" => EventStatus::Throttled,
            "pending" => EventStatus::Pending,
            "failed" => EventStatus::Failed,
            "done" => EventStatus::Done,
            _ => return None,
        })
    }

    /// From the counts of an event's matches and its jobs' states.
    pub fn of(matches: usize, jobs: usize, pending: usize, failed: usize) -> EventStatus {
        if matches == 0 {
            EventStatus::Unmatched
        } else if jobs == 0 {
            EventStatus::Throttled
        } else if pending > 0 {
            EventStatus::Pending
        } else if failed > 0 {
            EventStatus::Failed
        } else {
            EventStatus::Done
        }
    }
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    /// Milliseconds since the epoch.
    pub since: Option<i64>,
    pub status: Option<EventStatus>,
    /// Events that matched (or were throttled on) this rule name.
    pub rule: Option<String>,
    /// At most this many rows (0: 100).
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: String,
    pub source: String,
    pub kind: String,
    pub received_at: String,
    /// The delivery id the sender gave (or the run id of the `post_event` that emitted it).
    pub delivery_id: Option<String>,
    pub duplicates: i64,
    pub matched_rules: usize,
    /// The names of the rules it matched, throttled ones included, in match order.
    pub rules: Vec<String>,
    pub throttled: usize,
    pub status: EventStatus,
    /// How many of its jobs wait for a person's decision (`approval:`, or a window's
    /// `during: approve`) before their first action: their event is `pending`, and this says
    /// it is a person it waits for. A field of its own, since the status values are a closed
    /// set that filters name.
    pub awaiting_approval: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What the event was, in one line (`rules::summary`): set by the console and the live
    /// stream, which know the sources; the stores leave it empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// One event with everything that happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct EventDetail {
    pub id: String,
    pub source: String,
    pub kind: String,
    pub received_at: String,
    pub headers: serde_json::Map<String, Value>,
    pub depth: u32,
    pub duplicates: i64,
    pub delivery_id: Option<String>,
    /// The event that emitted (`post_event`) or replayed this one.
    pub parent: Option<String>,
    /// Events this one emitted (`post_event`).
    pub children: Vec<String>,
    pub status: EventStatus,
    pub body: Value,
    /// The jobs of its unthrottled matches.
    pub matches: Vec<MatchRow>,
    pub throttled: Vec<ThrottledRow>,
    /// What the event did to correlation rules: held in a partial match (with what it waits
    /// for and until when), fired one, or opened an absence window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub correlations: Vec<CorrelationRow>,
}

/// A correlation rule's view of one event.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelationRow {
    pub rulebook: String,
    pub rule: String,
    #[serde(flatten)]
    pub correlation: Correlated,
    /// `deadline` as RFC 3339.
    pub deadline_at: Option<String>,
    /// The job it made (fired, or an absence waiting for its deadline).
    pub job: Option<String>,
    /// What it holds, waits for or did, in one sentence (the console and `rulehook event`).
    pub summary: String,
}

impl CorrelationRow {
    /// `holds down=e1; waits for up until …`, `fired with down=e1, up=e2`, or an absence's
    /// window: when it fires unless the missing event comes.
    fn summary_of(c: &Correlated, deadline: Option<&str>) -> String {
        let held = c
            .events
            .iter()
            .map(|p| format!("{}={}", p.name, p.id))
            .collect::<Vec<_>>()
            .join(", ");
        let waits = c.waiting_for.join(", ");
        let until = deadline.map(|d| format!(" until {d}")).unwrap_or_default();
        let mut out = match c.state {
            CorrelationState::Partial if c.closed.is_empty() => {
                format!("{}: holds {held}; waits for {waits}{until}", c.kind)
            }
            CorrelationState::Partial => format!("{}: this event came in time", c.kind),
            CorrelationState::Fired => format!("{}: fired with {held}", c.kind),
            CorrelationState::Waiting => format!(
                "{}: window opened by {held}; fires at {} unless {waits} comes",
                c.kind,
                deadline.unwrap_or("the end of the window")
            ),
        };
        if !c.closed.is_empty() {
            out.push_str(&format!(
                "; closed the window of {} (no incident)",
                c.closed.join(", ")
            ));
        }
        out
    }

    /// The rows of an event's matches that belong to correlation rules.
    pub fn of(event: &str, matches: &[Match]) -> Vec<CorrelationRow> {
        matches
            .iter()
            .filter_map(|m| {
                let c = m.correlation.clone()?;
                let deadline_at = c.deadline.map(rfc3339);
                Some(CorrelationRow {
                    rulebook: m.rulebook.clone(),
                    rule: m.rule.clone(),
                    summary: CorrelationRow::summary_of(&c, deadline_at.as_deref()),
                    deadline_at,
                    job: m.creates_job().then(|| m.job_id(event)),
                    correlation: c,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThrottledRow {
    pub rulebook: String,
    pub rule: String,
    pub group: String,
    pub fired_by: String,
    pub until: String,
}

/// A matched rule's job, with its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct MatchRow {
    pub id: String,
    pub rulebook: String,
    pub rule: String,
    pub fingerprint: String,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Awaiting approval: why and until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<AwaitingRow>,
    /// Who approved or rejected it, when and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRow>,
    /// The maintenance window holding it (pending only, until the hold ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<HeldByRow>,
    pub attempts: Vec<AttemptRow>,
}

/// The maintenance window that holds a pending job, as the API shows it (`held_by`): from the
/// job's recorded step, so every node shows it, not only the node whose gate held the job.
#[derive(Debug, Clone, Serialize)]
pub struct HeldByRow {
    pub window: String,
    /// `hold`.
    pub during: String,
    /// When the window ends; `null` for a window that never ends.
    pub until: Option<String>,
}

impl HeldByRow {
    /// While the job is pending and its hold has not ended (`now`: milliseconds since the
    /// epoch). A hold ended by a reload is cleared when the gate next looks (within
    /// `engine::HOLD_RECHECK`).
    pub fn of(status: JobStatus, step: &Step, now: i64) -> Option<HeldByRow> {
        let h = step.held.as_ref()?;
        (status == JobStatus::Pending && h.until > now).then(|| HeldByRow {
            window: h.window.clone(),
            during: h.during.clone(),
            until: crate::rules::windows::end_of(h.until),
        })
    }
}

/// A job's wait for approval, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AwaitingRow {
    pub reason: String,
    pub requested_at: String,
    pub deadline: String,
}

/// A decision about a job, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    pub approved: bool,
    pub by: String,
    pub at: String,
    pub comment: Option<String>,
    pub reason: String,
    /// The decision in one line (`rejected by bob at …: comment`).
    pub summary: String,
}

impl AwaitingRow {
    pub fn of(step: &Step) -> Option<AwaitingRow> {
        step.awaiting.as_ref().map(|a| AwaitingRow {
            reason: a.reason.clone(),
            requested_at: rfc3339(a.requested_at),
            deadline: rfc3339(a.deadline),
        })
    }
}

impl DecisionRow {
    pub fn of(d: &Decision) -> DecisionRow {
        DecisionRow {
            approved: d.approved,
            by: d.by.clone(),
            at: rfc3339(d.at),
            comment: d.comment.clone(),
            reason: d.reason.clone(),
            summary: d.summary(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub run_id: String,
    pub attempt: u32,
    /// `main` or `on_failure`.
    pub phase: &'static str,
    pub action_index: u32,
    pub action: String,
    pub rendered: Value,
    /// `running`, `ok` or `failed`.
    pub status: &'static str,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// How long it ran, for people (`1.2s`).
    pub duration: Option<String>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub error: Option<String>,
    pub http_status: Option<i64>,
    pub result: Option<Value>,
}

/// A job's status for people and the API: its queue state, told apart where approvals make a
/// difference (a pending job awaiting a decision; a job done because it was turned down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    AwaitingApproval,
    Done,
    Rejected,
    Failed,
}

impl JobStatus {
    pub const ALL: &'static [&'static str] =
        &["pending", "awaiting_approval", "done", "rejected", "failed"];

    pub fn of(state: JobState, step: &Step) -> JobStatus {
        match state {
            JobState::Pending if step.awaiting.is_some() => JobStatus::AwaitingApproval,
            JobState::Pending => JobStatus::Pending,
            JobState::Done if step.decision.as_ref().is_some_and(|d| !d.approved) => {
                JobStatus::Rejected
            }
            JobState::Done => JobStatus::Done,
            JobState::Failed => JobStatus::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::AwaitingApproval => "awaiting_approval",
            JobStatus::Done => "done",
            JobStatus::Rejected => "rejected",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "pending" => JobStatus::Pending,
            "awaiting_approval" => JobStatus::AwaitingApproval,
            "done" => JobStatus::Done,
            "rejected" => JobStatus::Rejected,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }

    /// The queue state behind it.
    pub fn state(self) -> JobState {
        match self {
            JobStatus::Pending | JobStatus::AwaitingApproval => JobState::Pending,
            JobStatus::Done | JobStatus::Rejected => JobState::Done,
            JobStatus::Failed => JobState::Failed,
        }
    }

    /// A condition on the `jobs` table (alias `j`) selecting this status.
    pub fn sql(self) -> &'static str {
        match self {
            // `awaiting`: the step's `awaiting` deadline, a column of its own (the partial
            // index `jobs_awaiting` of the embedded store's schema).
            JobStatus::Pending => "j.state = 'pending' AND j.awaiting IS NULL",
            JobStatus::AwaitingApproval => "j.state = 'pending' AND j.awaiting IS NOT NULL",
            JobStatus::Done => {
                "j.state = 'done' AND coalesce(json_extract(j.step, '$.decision.approved'), 1) != 0"
            }
            JobStatus::Rejected => {
                "j.state = 'done' AND json_extract(j.step, '$.decision.approved') = 0"
            }
            JobStatus::Failed => "j.state = 'failed'",
        }
    }
}

/// Filters of the job list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    /// Finer than `state`: `awaiting_approval` and `rejected` too.
    pub status: Option<JobStatus>,
    pub rule: Option<String>,
    /// At most this many rows (0: 100).
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    pub status: JobStatus,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<AwaitingRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRow>,
    /// The maintenance window holding it (pending only, until the hold ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<HeldByRow>,
    /// When it last changed state.
    pub updated_at: String,
    /// The action it stopped at (for a dead letter: where a re-run starts).
    pub action_index: u32,
    pub attempts: u32,
}

impl JobRow {
    pub fn new(job: &Job, state: JobState, error: Option<String>, updated_at: String) -> JobRow {
        let (index, attempts) = job
            .step
            .failed_at
            .unwrap_or((job.step.index, job.step.attempts));
        let status = JobStatus::of(state, &job.step);
        JobRow {
            id: job.id.clone(),
            event_id: job.event_id.clone(),
            rulebook: job.rulebook.clone(),
            rule: job.rule.clone(),
            status,
            held_by: HeldByRow::of(status, &job.step, crate::domain::now_ms()),
            error,
            awaiting: AwaitingRow::of(&job.step),
            decision: job.step.decision.as_ref().map(DecisionRow::of),
            updated_at,
            action_index: index,
            attempts,
        }
    }
}
