//! Storage, split in the four parts every backend implements (see docs/architecture.md for the
//! table of part → embedded → JetStream):
//!
//! - [`EventLog`]: appends an accepted event's [`Envelope`] durably and makes one job per
//!   unthrottled match available to the queue;
//! - [`WorkQueue`]: workers lease jobs (owner, deadline), extend leases, record progress, `nak`
//!   with a delay to retry, `ack` when done; an expired lease makes a job fetchable again;
//! - [`StateStore`]: keys with compare-and-set and expiry (delivery de-duplication, throttle
//!   windows, ticket claims);
//! - [`History`]: attempts recorded, and a typed read model with filters.
//!
//! This module imports only [`crate::domain`]: nothing from rules, actions or the engine.

mod history;
pub mod nats;
mod remote;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::domain::StoreError;
use crate::domain::{Attempt, Envelope, Event, Job, JobState, Step};
pub use history::{
    AttemptRow, AwaitingRow, CorrelationRow, DecisionRow, EventDetail, EventFilter, EventRow,
    EventStatus, HeldByRow, JobFilter, JobRow, JobStatus, MatchRow,
};
pub use remote::Remote;
pub use sqlite::{Embedded, ReadOnly};

/// What appending an envelope did.
#[derive(Debug)]
pub enum Appended {
    /// Stored; these jobs are now in the queue (one per unthrottled match, in match order).
    New { jobs: Vec<Job> },
    /// The delivery id was seen within its window: nothing was stored or queued.
    Duplicate { id: String },
}

/// Events one `prune` call removes at most (a bounded transaction); call again while that
/// many went.
pub const PRUNE_BATCH: u64 = 10_000;

/// What a retention pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub jobs: u64,
    pub attempts: u64,
    pub state: u64,
}

/// The durable record of accepted events.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Stores the envelope and queues its jobs; returns only when both are durable. A repeat of
    /// the event's delivery id within `dedup_window` stores nothing and answers `Duplicate`.
    async fn append(&self, envelope: Envelope) -> Result<Appended, StoreError>;

    /// One stored event.
    async fn event(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError>;

    /// The id of the event stored under `source`'s delivery id `delivery`, while the delivery's
    /// window lasts (a repeat of it would be a duplicate of that event); `None` otherwise.
    async fn delivered(&self, source: &str, delivery: &str) -> Result<Option<String>, StoreError>;

    /// Removes events received before `before_ms` whose jobs have all finished successfully
    /// (pending jobs and dead letters are kept, and so are their events), with their jobs and
    /// attempts, and expired state entries.
    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError>;
}

/// A job leased to one worker until `deadline`.
#[derive(Debug)]
pub struct Lease {
    pub job: Job,
    /// The event, when the queue has it at hand (else read it from the log).
    pub event: Option<Arc<Event>>,
    /// Which lease this is: a stale token (expired and leased again) is refused.
    pub token: u64,
    /// The job's position in the queue (acceptance order).
    pub seq: i64,
    /// How many times this job has been leased (1 the first time).
    pub deliveries: u32,
}

/// The shared work queue.
#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Leases the next job to `owner` for `ttl`, waiting up to `wait` for one. Jobs of one rule
    /// come in acceptance order; rules take turns.
    async fn fetch(
        &self,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a lease (long scripts). `Conflict` when the lease was lost.
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError>;

    /// Records that the job moved to `step`, keeping the lease.
    async fn progress(&self, lease: &mut Lease, step: Step) -> Result<(), StoreError>;

    /// Gives the job back, to be fetched again after `delay`, at `step` (a retry).
    ///
    /// `nak` and `ack` may return before they are durable: the lease ends only once they are,
    /// and if they never are, the lease lapses and the job runs again (at least once). A worker
    /// does not wait for a commit between jobs.
    async fn nak(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError>;

    /// Gives the job back after its worker failed it (a panic): like an expired lease, this
    /// counts against the budget of lost leases past which the job becomes a dead letter.
    async fn abandon(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError>;

    /// Finishes the job: `Done`, or `Failed` (a dead letter, kept until re-run).
    async fn ack(
        &self,
        lease: Lease,
        step: Step,
        state: JobState,
        error: Option<String>,
    ) -> Result<(), StoreError>;

    /// Makes a dead letter fetchable again as `job` (its step and rule version). `false` when
    /// no dead letter has that id.
    async fn rerun(&self, job: Job) -> Result<bool, StoreError>;

    /// Asks for the job `id` sooner than its delay: what it waits for (a person's decision)
    /// has happened. A hint: a backend that cannot shorten a delay leaves it (the job then
    /// looks at its next lease), and nothing durable changes.
    fn wake(&self, id: &str) {
        let _ = id;
    }

    /// Returns once every `ack` and `nak` made before it is durable (graceful shutdown; tests).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Jobs waiting (not leased) and leased, for metrics and status.
    fn depth(&self) -> QueueDepth;
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    pub ready: usize,
    pub delayed: usize,
    pub leased: usize,
    /// Whether more pending jobs wait only in storage.
    pub spilled: bool,
    /// Every pending job: ready, delayed, leased, or waiting only in storage. `--max-pending`
    /// is checked against it, so a backend must count jobs it does not hold in memory too.
    pub pending: usize,
}

/// A revision of a state entry, for compare-and-set.
pub type Revision = u64;

/// Keys with values, revisions and expiry.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The live (unexpired) value and its revision.
    async fn get(&self, key: &str) -> Result<Option<(String, Revision)>, StoreError>;

    /// Creates `key`; `Conflict` when a live entry exists.
    async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError>;

    /// Replaces `key` if its revision is still `expected`; `Conflict` otherwise.
    async fn update(
        &self,
        key: &str,
        value: &str,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key` if its revision is still `expected` (any revision when `None`).
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), StoreError>;
}

/// What happened, for people and the admin API.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Records an attempt starting (`outcome: None`) or finished; the same attempt twice
    /// updates it.
    async fn record(&self, attempt: Attempt) -> Result<(), StoreError>;

    /// Records an attempt without waiting for it to be durable. It is ordered before every
    /// later write to this store, so a later `ack` or `progress` that is durable implies it;
    /// a failure to store it is logged. (A finished attempt then costs no commit of its own.)
    fn record_later(&self, attempt: Attempt);

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError>;

    /// One event with its matches, jobs and attempts.
    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError>;

    async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRow>, StoreError>;

    /// One job as stored.
    async fn job(&self, id: &str) -> Result<Option<(Job, JobState)>, StoreError>;

    /// Stored events received at or after `since_ms`, in acceptance order, each with the
    /// matches it was stored with: the ones after event `after` (a page's last id), at most
    /// `limit` rows (`rulehook whatif` replays them through a candidate rule set). One that
    /// cannot be read back is a [`Stored::Unreadable`] row, not an error for the whole period.
    async fn stored(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError>;

    /// The headers and body of the events `ids` whose body is at most `max_body` bytes (others
    /// are left out), for the console's one-line summaries. Histories that cannot say (a
    /// remote service's) return none.
    async fn contents(
        &self,
        _ids: Vec<String>,
        _max_body: usize,
    ) -> Result<Vec<EventContent>, StoreError> {
        Ok(Vec::new())
    }
}

/// An event's headers and body, as [`History::contents`] reads them.
#[derive(Debug, Clone)]
pub struct EventContent {
    pub id: String,
    /// Lower-case names, credentials removed (as stored).
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// An event as the log keeps it, with the rules it matched when it was accepted.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event: Arc<Event>,
    pub matches: Vec<crate::domain::Match>,
}

/// A stored event that could not be read back (a JSON body deeper than a reader can follow,
/// stored by an earlier release): named with why, in its place among the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub id: String,
    pub received_at: i64,
    pub reason: String,
}

/// One row of [`History::stored`], in acceptance order: an event read back, or one that could
/// not be (readers skip it, count it and say so; it does not fail the period).
#[derive(Debug, Clone)]
pub enum Stored {
    Event(StoredEvent),
    Unreadable(Unreadable),
}

impl Stored {
    /// The event's id (the next page is the one after it).
    pub fn id(&self) -> &str {
        match self {
            Stored::Event(s) => &s.event.id,
            Stored::Unreadable(u) => &u.id,
        }
    }

    /// When it was received (ms since the epoch).
    pub fn received_at(&self) -> i64 {
        match self {
            Stored::Event(s) => s.event.received_at,
            Stored::Unreadable(u) => u.received_at,
        }
    }
}

/// The four parts one deployment uses.
#[derive(Clone)]
pub struct Store {
    pub log: Arc<dyn EventLog>,
    pub queue: Arc<dyn WorkQueue>,
    pub state: Arc<dyn StateStore>,
    pub history: Arc<dyn History>,
}

impl Store {
    /// The embedded store (SQLite) in `dir`.
    pub fn embedded(dir: &std::path::Path) -> Result<Store, StoreError> {
        let e = Arc::new(Embedded::open(dir)?);
        Ok(Store {
            log: e.clone(),
            queue: e.clone(),
            state: e.clone(),
            history: e,
        })
    }
}
