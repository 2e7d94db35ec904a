//! The journal: the durable record of every accepted event, the work it caused, and what that
//! work did. It is also the work queue: what is not finished in it is resumed after a restart.
//!
//! [`Journal`] is the seam for storage backends: SQLite (embedded, the default) today; a NATS
//! JetStream backend can implement the same trait without ingest or rules changing.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::actions::Outcome;
use crate::rules::EventDoc;
use crate::verify::VerifiedEvent;
pub use sqlite::{SqliteJournal, rfc3339};

/// An event as stored: the verified event plus the id the journal gave it.
#[derive(Debug)]
pub struct StoredEvent {
    pub id: String,
    pub source: String,
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    pub headers: Vec<(String, String)>,
    pub doc: EventDoc,
    /// How many `post_event` links led to this event (0 for events from outside).
    pub depth: u32,
}

/// A rule an event matched, to be recorded with the event in the same transaction.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub rulebook: String,
    pub rule: String,
    /// The rule's name in run ids.
    pub key: String,
    /// `(group, window)` when the rule is throttled: the job is created only if no earlier
    /// match of the same rule and group fired within the window.
    pub throttle: Option<(String, std::time::Duration)>,
}

/// The work of running one matched rule's actions for one event. Its id is
/// `<event id>:<rule>`; action `i` runs with the id `<event id>:<rule>:<i>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    /// The first action not yet completed successfully.
    pub next_action: usize,
    /// Attempts that action has already had (before a restart).
    pub attempts: u32,
}

impl Job {
    /// `<event>:<rule>:<i>` for action `i`; `<event>:<rule>:on_failure:<i>` for the rule's
    /// `on_failure` action `i` (numbered from [`ON_FAILURE`] internally).
    pub fn run_id(&self, action: usize) -> String {
        if action >= ON_FAILURE {
            format!("{}:on_failure:{}", self.id, action - ON_FAILURE)
        } else {
            format!("{}:{action}", self.id)
        }
    }
}

/// Where `on_failure` action indexes start.
pub const ON_FAILURE: usize = 1000;

/// What appending an event did.
#[derive(Debug)]
pub enum Appended {
    New {
        event: Arc<StoredEvent>,
        /// Aligned with the `NewJob`s given: `None` where the match was throttled.
        jobs: Vec<Option<Job>>,
    },
    /// The delivery id was seen within its window: nothing was stored or queued.
    Duplicate { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Done,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

/// How a job ends: its final state and, when it failed, why.
#[derive(Debug, Clone)]
pub struct Close {
    pub state: JobState,
    pub error: Option<String>,
}

/// A ticket opened under a dedup key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub system: String,
    pub id: String,
    pub url: String,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub source: Option<String>,
    /// Milliseconds since the epoch.
    pub since: Option<i64>,
    /// `unmatched`, `pending`, `done` or `failed`.
    pub status: Option<String>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("the journal has shut down")]
    Closed,
}

#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Durably stores `event` and the jobs its matches created, or reports it a duplicate.
    /// Returns only after the commit.
    async fn append(
        &self,
        event: VerifiedEvent,
        jobs: Vec<NewJob>,
    ) -> Result<Appended, JournalError>;

    /// Records that attempt `attempt` (1-based) of action `index` of `job` starts now, with the
    /// rendered action. Committed before the action starts.
    async fn start_attempt(
        &self,
        job: &Job,
        index: usize,
        action: &'static str,
        rendered: Value,
        attempt: u32,
    ) -> Result<(), JournalError>;

    /// Records how the attempt ended. When it succeeded, the job moves on to the next action;
    /// `close` also closes the job, in the same transaction.
    async fn finish_attempt(
        &self,
        job: &Job,
        index: usize,
        attempt: u32,
        outcome: &Outcome,
        close: Option<Close>,
    ) -> Result<(), JournalError>;

    /// Records a whole attempt after the fact, in one write. Only for actions with no effect
    /// outside the process (`log`): a crash before this write re-runs them, which is harmless.
    #[allow(clippy::too_many_arguments)]
    async fn record_attempt(
        &self,
        job: &Job,
        index: usize,
        action: &'static str,
        rendered: Value,
        attempt: u32,
        outcome: &Outcome,
        close: Option<Close>,
    ) -> Result<(), JournalError>;

    /// Closes a job.
    async fn finish_job(&self, job: &Job, close: Close) -> Result<(), JournalError>;

    /// Up to `limit` unfinished jobs with their events, oldest first, skipping `except`.
    async fn unfinished(
        &self,
        limit: usize,
        except: Vec<String>,
    ) -> Result<Vec<(Job, Arc<StoredEvent>)>, JournalError>;

    /// The open ticket remembered for a dedup key.
    async fn ticket(&self, dedup_key: &str) -> Result<Option<Ticket>, JournalError>;
    async fn put_ticket(&self, dedup_key: &str, ticket: &Ticket) -> Result<(), JournalError>;
    /// Forgets the key's ticket (it was closed): the next match opens a new one.
    async fn close_ticket(&self, dedup_key: &str) -> Result<(), JournalError>;

    /// Makes a failed job pending again (a dead letter re-run). `false` if it is not failed.
    async fn reopen_job(&self, job_id: &str) -> Result<bool, JournalError>;

    /// One stored event.
    async fn event(&self, id: &str) -> Result<Option<Arc<StoredEvent>>, JournalError>;

    async fn list_events(&self, filter: EventFilter) -> Result<Vec<Value>, JournalError>;

    /// One event with its jobs, runs and attempts.
    async fn event_detail(&self, id: &str) -> Result<Option<Value>, JournalError>;
}
