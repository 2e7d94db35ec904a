//! The history on JetStream: attempts and other history facts are messages on the history
//! stream; every node follows the event, jobs and history streams (ordered consumers from the
//! start) into its local read model, so `/api/events`, the event detail and `/api/jobs` on any
//! node show events accepted and jobs run by every node. A node's own writes are visible to its
//! next read: reads wait (briefly) until the model has applied them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::stream;
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

use super::wire::{JobRecord, WireAttempt, WireEvent};
use super::{Jet, Shared, publish, queue, raise, transient};
use crate::domain::{Attempt, Job, JobState, StoreError};
use crate::store::sqlite::model::Change;
use crate::store::{EventDetail, EventFilter, EventRow, History, JobFilter, JobRow};

/// How far this node has written to, and its read model has applied, each stream.
#[derive(Default)]
pub(crate) struct Progress {
    pub wrote_events: AtomicU64,
    pub wrote_jobs: AtomicU64,
    pub wrote_history: AtomicU64,
    applied_events: AtomicU64,
    applied_jobs: AtomicU64,
    applied_history: AtomicU64,
    applied: Notify,
    /// History writes in flight (`record_later`), awaited before the next job record.
    later: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Progress {
    fn caught_up(&self) -> bool {
        self.applied_events.load(Ordering::Acquire) >= self.wrote_events.load(Ordering::Acquire)
            && self.applied_jobs.load(Ordering::Acquire) >= self.wrote_jobs.load(Ordering::Acquire)
            && self.applied_history.load(Ordering::Acquire)
                >= self.wrote_history.load(Ordering::Acquire)
    }

    /// Waits until the read model has applied this node's writes (and, after it started,
    /// what the streams held then): as long as it makes progress, for at most a minute.
    pub async fn catch_up(&self) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.applied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.caught_up() {
                return;
            }
            let stalled = tokio::time::Instant::now() + Duration::from_secs(2);
            if tokio::time::timeout_at(stalled.min(give_up), notified)
                .await
                .is_err()
            {
                tracing::debug!("the history read model lags this node's writes");
                return;
            }
        }
    }

    /// Waits until every `record_later` made before is stored (so a job record written
    /// next never gets ahead of its attempts).
    pub async fn history_barrier(&self) {
        let pending: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.later.lock().unwrap_or_else(|e| e.into_inner()));
        for h in pending {
            let _ = h.await;
        }
    }
}

#[derive(Clone, Copy)]
enum Part {
    Events,
    Jobs,
    History,
}

/// `at_ms`: when the message was stored (the stream's own time), the time an interruption is
/// recorded at: when another worker took the job over.
fn decode(
    s: &Shared,
    part: Part,
    subject: &str,
    (seq, at_ms): (u64, i64),
    payload: &[u8],
) -> Option<Change> {
    let r = match part {
        Part::Events => serde_json::from_slice::<WireEvent>(payload).map(|w| Change::Event {
            seq: seq as i64,
            event: Arc::new(w.event()),
            matches: w.matches,
        }),
        Part::Jobs => serde_json::from_slice::<JobRecord>(payload).map(|r| Change::Job {
            id: r.job.id,
            state: r.state,
            step: Box::new(r.step),
            fingerprint: r.job.fingerprint,
            error: r.error,
            updated_at: r.updated_at,
        }),
        Part::History if s.names.is_attempt(subject) => {
            serde_json::from_slice::<WireAttempt>(payload).map(|w| {
                let (attempt, action) = w.attempt();
                Change::Attempt {
                    attempt: Box::new(attempt),
                    action,
                }
            })
        }
        Part::History => {
            let event_id = String::from_utf8_lossy(payload).into_owned();
            Ok(if s.names.is_interrupted(subject) {
                Change::Interrupted {
                    job_id: event_id,
                    at_ms,
                }
            } else if s.names.is_duplicate(subject) {
                Change::Duplicate { event_id }
            } else {
                Change::Forget { event_id }
            })
        }
    };
    r.inspect_err(
        |e| tracing::error!(%subject, error = %e, "a stored message cannot be read: skipped"),
    )
    .ok()
}

async fn follow(s: Arc<Shared>, part: Part, stream: stream::Stream) {
    let applied = match part {
        Part::Events => &s.progress.applied_events,
        Part::Jobs => &s.progress.applied_jobs,
        Part::History => &s.progress.applied_history,
    };
    loop {
        let messages = match stream.create_consumer(pull::OrderedConfig::default()).await {
            Ok(c) => c.messages().await,
            Err(e) => {
                tracing::warn!(error = %e, "NATS: cannot follow a stream for the history; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = match messages {
            Ok(m) => m.ready_chunks(512),
            Err(e) => {
                tracing::warn!(error = %e, "NATS: cannot follow a stream for the history; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // An ordered consumer starts from the beginning: the model skips what it has.
        while let Some(chunk) = messages.next().await {
            let mut changes = Vec::with_capacity(chunk.len());
            let mut top = 0;
            for m in chunk {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "NATS: history follower");
                        continue;
                    }
                };
                let Ok((seq, published)) = m.info().map(|i| (i.stream_sequence, i.published))
                else {
                    continue;
                };
                let at_ms = (published.unix_timestamp_nanos() / 1_000_000) as i64;
                top = top.max(seq);
                if seq <= applied.load(Ordering::Acquire) {
                    continue;
                }
                if let Some(c) = decode(&s, part, &m.subject, (seq, at_ms), &m.payload) {
                    changes.push(c);
                }
            }
            let view = s.view.clone();
            let r = tokio::task::spawn_blocking(move || view.apply(changes)).await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // Nothing of the batch was applied: follow again from the start, skipping
                    // what is applied, so the batch is tried again.
                    tracing::error!(error = %e, "the history read model cannot apply a change; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the history read model stopped");
                    return;
                }
            }
            raise(applied, top);
            s.progress.applied.notify_waiters();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn start_followers(s: Arc<Shared>) -> Vec<AbortHandle> {
    let mut out = Vec::new();
    for (part, stream) in [
        (Part::Events, s.events.clone()),
        (Part::Jobs, s.jobs.clone()),
        (Part::History, s.history.clone()),
    ] {
        out.push(tokio::spawn(follow(s.clone(), part, stream)).abort_handle());
    }
    out
}

async fn record(s: &Shared, a: &Attempt) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(&WireAttempt::of(a)).map_err(|e| transient("attempt", e))?;
    let ack = publish(&s.js, s.names.attempt(&a.job_id), payload, None).await?;
    raise(&s.progress.wrote_history, ack.sequence);
    Ok(())
}

#[async_trait]
impl History for Jet {
    async fn record(&self, attempt: Attempt) -> Result<(), StoreError> {
        self.shared.progress.history_barrier().await;
        record(&self.shared, &attempt).await
    }

    fn record_later(&self, attempt: Attempt) {
        let s = self.shared.clone();
        let h = tokio::spawn(async move {
            if let Err(e) = record(&s, &attempt).await {
                tracing::error!(run = %attempt.run_id, error = %e, "cannot record an attempt in the history");
            }
        });
        self.shared
            .progress
            .later
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h);
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.view().await.events(filter).await
    }

    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError> {
        self.view().await.event_detail(id).await
    }

    async fn contents(
        &self,
        ids: Vec<String>,
        max_body: usize,
    ) -> Result<Vec<crate::store::EventContent>, StoreError> {
        self.view().await.contents(ids, max_body).await
    }

    async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRow>, StoreError> {
        self.view().await.jobs(filter).await
    }

    async fn job(&self, id: &str) -> Result<Option<(Job, JobState)>, StoreError> {
        if let Some(j) = queue::job(&self.shared, id).await? {
            return Ok(Some(j));
        }
        self.view().await.job(id).await
    }

    async fn stored(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<crate::store::Stored>, StoreError> {
        self.view().await.stored(since_ms, after, limit).await
    }
}
