//! The work queue on JetStream: job messages on a work-queue stream, one durable pull consumer
//! shared by every worker of every node (its ack wait is the lease), and one record per job on
//! the jobs stream that says where the job is. Every change to a leased job is a
//! compare-and-set on that record, so a worker whose lease lapsed (the message went to another
//! worker, which wrote the record when it leased it) is refused, as on the embedded store.
//!
//! Deliveries: JetStream counts every delivery, retries (`nak` with delay) included; the record
//! counts the `nak`s, so lost leases = deliveries − 1 − naks, and past the budget the job
//! becomes a dead letter (recorded `failed`, its message acked). A re-run publishes a new
//! message that the record adopts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, PullConsumer, pull};
use async_nats::jetstream::{AckKind, Message, stream};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::task::AbortHandle;

use super::wire::{JobRecord, WireJob};
use super::{Jet, Shared, last, publish, publish_cas, raise, transient};
use crate::domain::{Job, JobState, Step, StoreError, now_ms};
use crate::store::{Lease, QueueDepth, WorkQueue};

/// A lease this node holds: the message (to ack, nak, or extend) and the record's revision.
struct Held {
    msg: Arc<Message>,
    record: JobRecord,
    rev: u64,
    /// The lease's own end (`ttl` from fetch or heartbeat): until then this node keeps the
    /// message from being redelivered with progress acks; after it, the lease is gone here
    /// and the message comes back after the consumer's ack wait.
    until: Instant,
}

type HeldMap = Arc<Mutex<HashMap<u64, Held>>>;

/// Keeps held leases alive (progress acks every quarter of the ack wait) and ends those past
/// their own deadline.
async fn keep(held: HeldMap, ack_wait: Duration) {
    let every = (ack_wait / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        let now = Instant::now();
        let live: Vec<Arc<Message>> = {
            let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
            h.retain(|_, l| l.until > now);
            h.values().map(|l| l.msg.clone()).collect()
        };
        for m in live {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

pub(super) struct Queue {
    consumer: PullConsumer,
    held: HeldMap,
    next_token: AtomicU64,
    depth: Arc<Mutex<QueueDepth>>,
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Permanent(format!("{what}: {e}"))
}

impl Queue {
    pub(super) async fn open(
        s: Arc<Shared>,
        stream: &stream::Stream,
        tasks: &mut Vec<AbortHandle>,
    ) -> Result<Queue, StoreError> {
        let config = pull::Config {
            durable_name: Some(s.names.workers()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: s.config.ack_wait,
            max_deliver: -1,
            max_ack_pending: 100_000,
            ..Default::default()
        };
        let mut consumer: PullConsumer = stream
            .get_or_create_consumer(&s.names.workers(), config.clone())
            .await
            .map_err(|e| transient("create the workers' consumer", e))?;
        let current = consumer
            .info()
            .await
            .map_err(|e| transient("read the workers' consumer", e))?
            .config
            .ack_wait;
        if current != config.ack_wait {
            // A node started with another --lease-check: the last one started sets it.
            match stream.create_consumer(config).await {
                Ok(c) => consumer = c,
                Err(e) => tracing::warn!(error = %e, "NATS: cannot change the workers' ack wait"),
            }
        }
        let held: HeldMap = Arc::default();
        tasks.push(tokio::spawn(keep(held.clone(), s.config.ack_wait)).abort_handle());
        let depth = Arc::new(Mutex::new(QueueDepth::default()));
        let (d, c, sh) = (depth.clone(), consumer.clone(), s.clone());
        let task = tokio::spawn(async move {
            let mut c = c;
            loop {
                // Events not dispatched yet count as one job each (most match one rule).
                let undispatched = match sh.events.consumer_info(sh.names.dispatch()).await {
                    Ok(i) => (i.num_pending as usize) + i.num_ack_pending,
                    Err(_) => 0,
                };
                if let Ok(info) = c.info().await {
                    let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
                    d.ready = info.num_pending as usize;
                    d.leased = info.num_ack_pending;
                    d.pending = d.ready + d.leased + undispatched;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        tasks.push(task.abort_handle());
        Ok(Queue {
            consumer,
            held,
            next_token: AtomicU64::new(1),
            depth,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn read_record(s: &Shared, id: &str) -> Result<Option<(JobRecord, u64)>, StoreError> {
    let Some((payload, seq)) = last(&s.jobs, &s.names.job(id)).await? else {
        return Ok(None);
    };
    let r: JobRecord = serde_json::from_slice(&payload).map_err(|e| bad("job record", e))?;
    Ok(Some((r, seq)))
}

async fn write_record(s: &Shared, r: &JobRecord, expected: u64) -> Result<u64, StoreError> {
    let payload = serde_json::to_vec(r).map_err(|e| bad("job record", e))?;
    let seq = publish_cas(&s.js, &s.jobs, s.names.job(&r.job.id), payload, expected)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "the lease on job {} was lost (another worker holds it)",
                r.job.id
            )),
            e => e,
        })?;
    raise(&s.progress.wrote_jobs, seq);
    Ok(seq)
}

/// The job's record, from the jobs stream (any node's writes).
pub(super) async fn job(s: &Shared, id: &str) -> Result<Option<(Job, JobState)>, StoreError> {
    Ok(read_record(s, id)
        .await?
        .map(|(r, _)| (r.job.with_step(r.step.clone()), r.state)))
}

impl Jet {
    /// What one delivered message means: a lease, or nothing (finished, duplicate, or given up).
    async fn lease(
        &self,
        owner: &str,
        ttl: Duration,
        msg: Message,
    ) -> Result<Option<Lease>, StoreError> {
        let s = &self.shared;
        let (seq, delivered) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.delivered.max(1) as u32),
            Err(e) => return Err(transient("message info", e)),
        };
        // Leasing takes two round trips before the keeper looks after it: restart the clock.
        let _ = msg.ack_with(AckKind::Progress).await;
        let wire: WireJob = match serde_json::from_slice(&msg.payload) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "a queue message cannot be read: dropped");
                let _ = msg.ack().await;
                return Ok(None);
            }
        };
        for round in 0..5 {
            // A first delivery usually finds no record: try creating it without reading first
            // (a conflict reads it on the next round).
            let found = if round == 0 && delivered == 1 {
                None
            } else {
                read_record(s, &wire.id).await?
            };
            let (mut record, rev) = match found {
                Some(r) => r,
                None => (
                    JobRecord {
                        job: wire.clone(),
                        state: JobState::Pending,
                        step: Step::default(),
                        error: None,
                        updated_at: now_ms(),
                        msg: 0,
                        naks: 0,
                        owner: None,
                    },
                    0,
                ),
            };
            if record.state != JobState::Pending || (record.msg != 0 && record.msg != seq) {
                // Finished, or a second message of a job another message carries.
                let _ = msg.ack().await;
                return Ok(None);
            }
            if record.msg == 0 {
                record.msg = seq;
                record.naks = 0;
            }
            let lost = delivered.saturating_sub(1 + record.naks);
            if lost > 0 && record.owner.is_some() {
                // Its last worker stopped holding it: what that worker left running ended.
                let subject = s.names.interrupted(&wire.id);
                if let Ok(a) = publish(&s.js, subject, wire.id.clone().into_bytes(), None).await {
                    raise(&s.progress.wrote_history, a.sequence);
                }
            }
            if lost >= self.shared.config.max_deliveries {
                let error = format!(
                    "{lost} leases of it were lost (its worker crashed, panicked or stalled each time): given up"
                );
                tracing::error!(job = %record.job.id, "{error}; it is now a dead letter");
                record.state = JobState::Failed;
                record.error = Some(error);
                record.updated_at = now_ms();
                match write_record(s, &record, rev).await {
                    Ok(_) => {
                        let _ = msg.ack().await;
                        return Ok(None);
                    }
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            record.owner = Some(owner.to_string());
            record.updated_at = now_ms();
            let rev = match write_record(s, &record, rev).await {
                Ok(r) => r,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            let token = self.queue.next_token.fetch_add(1, Ordering::Relaxed);
            let job = record.job.with_step(record.step.clone());
            self.queue.held().insert(
                token,
                Held {
                    msg: Arc::new(msg),
                    record,
                    rev,
                    until: Instant::now() + ttl,
                },
            );
            return Ok(Some(Lease {
                job,
                event: None,
                token,
                seq: seq as i64,
                deliveries: delivered,
            }));
        }
        // Contended: let it come back.
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_millis(200))))
            .await;
        Ok(None)
    }

    /// Applies `change` to the record of a held lease (compare-and-set); the lease is dropped
    /// when the write is refused (another worker holds the job now) or when `release`.
    async fn change(
        &self,
        lease: &Lease,
        release: bool,
        change: impl FnOnce(&mut JobRecord),
    ) -> Result<Arc<Message>, StoreError> {
        let (mut record, rev, msg) = {
            let held = self.queue.held();
            let h = held
                .get(&lease.token)
                .filter(|h| h.until > Instant::now())
                .ok_or_else(|| {
                    StoreError::Conflict(format!("the lease on job {} has ended", lease.job.id))
                })?;
            (h.record.clone(), h.rev, h.msg.clone())
        };
        self.shared.progress.history_barrier().await;
        change(&mut record);
        record.updated_at = now_ms();
        match write_record(&self.shared, &record, rev).await {
            Ok(new_rev) => {
                let mut held = self.queue.held();
                if release {
                    held.remove(&lease.token);
                } else if let Some(h) = held.get_mut(&lease.token) {
                    h.record = record;
                    h.rev = new_rev;
                }
                Ok(msg)
            }
            Err(e) => {
                // A refused write means another worker holds the job now; a failed release
                // (nak, ack) ends the lease here all the same: the message comes back after
                // the consumer's ack wait instead of being kept alive by a worker that gave
                // it up.
                if release || matches!(e, StoreError::Conflict(_)) {
                    self.queue.held().remove(&lease.token);
                }
                Err(e)
            }
        }
    }

    async fn give_back(
        &self,
        lease: Lease,
        step: Step,
        delay: Duration,
        lost: bool,
    ) -> Result<(), StoreError> {
        let msg = self
            .change(&lease, true, |r| {
                r.step = step;
                r.owner = None;
                if !lost {
                    r.naks += 1;
                }
            })
            .await?;
        msg.ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| transient("nak", e))
    }
}

#[async_trait]
impl WorkQueue for Jet {
    async fn fetch(
        &self,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let batch = if remaining < Duration::from_millis(20) {
                self.queue.consumer.fetch().max_messages(1).messages().await
            } else {
                self.queue
                    .consumer
                    .batch()
                    .max_messages(1)
                    .expires(remaining)
                    .messages()
                    .await
            };
            let mut batch = batch.map_err(|e| transient("fetch", e))?;
            let msg = match batch.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "NATS fetch");
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    continue;
                }
            };
            if let Some(lease) = self.lease(owner, ttl, msg).await? {
                return Ok(Some(lease));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let msg = self
            .queue
            .held()
            .get_mut(&lease.token)
            .filter(|h| h.until > Instant::now())
            .map(|h| {
                h.until = Instant::now() + ttl;
                h.msg.clone()
            })
            .ok_or_else(|| {
                StoreError::Conflict(format!("the lease on job {} has ended", lease.job.id))
            })?;
        msg.ack_with(AckKind::Progress)
            .await
            .map_err(|e| transient("progress ack", e))
    }

    async fn progress(&self, lease: &mut Lease, step: Step) -> Result<(), StoreError> {
        let s = step.clone();
        let msg = self.change(lease, false, |r| r.step = s).await?;
        lease.job.step = step;
        let _ = msg.ack_with(AckKind::Progress).await;
        Ok(())
    }

    async fn nak(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError> {
        self.give_back(lease, step, delay, false).await
    }

    async fn abandon(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError> {
        self.give_back(lease, step, delay, true).await
    }

    async fn ack(
        &self,
        lease: Lease,
        step: Step,
        state: JobState,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let msg = self
            .change(&lease, true, |r| {
                r.step = step;
                r.state = state;
                r.error = error;
                r.owner = None;
            })
            .await?;
        // The record says it is finished: if this ack is lost, the redelivered message is
        // acked by whoever fetches it.
        let _ = msg.ack().await;
        Ok(())
    }

    async fn rerun(&self, job: Job) -> Result<bool, StoreError> {
        let s = &self.shared;
        let Some((mut record, rev)) = read_record(s, &job.id).await? else {
            return Ok(false);
        };
        if record.state != JobState::Failed {
            return Ok(false);
        }
        let before = record.clone();
        record.state = JobState::Pending;
        record.step = job.step.clone();
        record.job.fingerprint = job.fingerprint.clone();
        record.error = None;
        record.msg = 0;
        record.naks = 0;
        record.owner = None;
        record.updated_at = now_ms();
        let new_rev = match write_record(s, &record, rev).await {
            Ok(r) => r,
            Err(StoreError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let payload = serde_json::to_vec(&record.job).map_err(|e| bad("job", e))?;
        let msg_id = format!("{}#{new_rev}", job.id);
        if let Err(e) = publish(&s.js, s.names.queue(), payload, Some(&msg_id)).await {
            // Not queued: it stays a dead letter, to be re-run again.
            let _ = write_record(s, &before, new_rev).await;
            return Err(e);
        }
        Ok(true)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.shared.progress.history_barrier().await;
        Ok(())
    }

    fn depth(&self) -> QueueDepth {
        let mut d = *self.queue.depth.lock().unwrap_or_else(|e| e.into_inner());
        d.leased = d.leased.max(self.queue.held().len());
        d
    }
}
