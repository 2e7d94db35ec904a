//! The event log on JetStream: one message per accepted event on the event stream (the 202
//! waits for its publish ack), delivery de-duplication through the state store (any window,
//! not only the stream's duplicate window), and the dispatcher that turns each event into job
//! messages on the queue stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::task::AbortHandle;

use super::wire::{DedupClaim, WireEvent, WireJob};
use super::{Jet, Shared, last, publish, raise, state, transient};
use crate::domain::{Envelope, Event, StoreError, now_ms};
use crate::store::{Appended, EventLog, PRUNE_BATCH, Pruned};

/// A delivery id claimed this recently by a node that has not stored its event yet is being
/// stored right now: the repeat is answered "try again", not "duplicate" (if that node fails,
/// the sender's retry then takes the claim over).
const CLAIM_GRACE_MS: i64 = 10_000;

/// How long one node's retention pass may hold the others off.
const RETENTION_CLAIM: Duration = Duration::from_secs(300);

/// Claims `(source, delivery)` for `event` within `window`. `Ok(Some(id))`: the delivery was
/// already stored as event `id`.
async fn claim(
    s: &Shared,
    event: &Event,
    delivery: &str,
    window: Duration,
) -> Result<Option<String>, StoreError> {
    let key = format!("dedup/{}/{delivery}", event.source);
    let mine = serde_json::to_string(&DedupClaim {
        event: event.id.clone(),
        at: now_ms(),
    })
    .unwrap_or_default();
    for _ in 0..5 {
        match state::create(s, &key, &mine, Some(window)).await {
            Ok(_) => return Ok(None),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let Some((value, rev)) = state::get(s, &key).await? else {
            continue; // it expired meanwhile
        };
        let theirs: DedupClaim = serde_json::from_str(&value)
            .map_err(|e| StoreError::Permanent(format!("delivery claim `{key}`: {e}")))?;
        if last(&s.events, &s.names.event(&theirs.event))
            .await?
            .is_some()
        {
            return Ok(Some(theirs.event));
        }
        if now_ms() - theirs.at < CLAIM_GRACE_MS {
            return Err(StoreError::Transient(format!(
                "delivery `{delivery}` of `{}` is being stored by another node: send it again in a moment",
                event.source
            )));
        }
        match state::update(s, &key, &mine, rev, Some(window)).await {
            Ok(_) => return Ok(None),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Transient(format!(
        "delivery `{delivery}` of `{}` is contended: send it again",
        event.source
    )))
}

#[async_trait]
impl EventLog for Jet {
    async fn append(&self, envelope: Envelope) -> Result<Appended, StoreError> {
        let s = &self.shared;
        let event = envelope.event.clone();
        let claimed = match (&event.delivery, envelope.dedup_window) {
            (Some(d), Some(w)) => {
                if let Some(id) = claim(s, &event, d, w).await? {
                    let ack =
                        publish(&s.js, s.names.duplicate(&id), id.clone().into_bytes(), None).await;
                    if let Ok(a) = ack {
                        raise(&s.progress.wrote_history, a.sequence);
                    }
                    return Ok(Appended::Duplicate { id });
                }
                Some(format!("dedup/{}/{d}", event.source))
            }
            _ => None,
        };
        let wire = WireEvent::of(&envelope);
        let payload =
            serde_json::to_vec(&wire).map_err(|e| StoreError::Permanent(e.to_string()))?;
        match publish(&s.js, s.names.event(&event.id), payload, Some(&event.id)).await {
            Ok(ack) => {
                raise(&s.progress.wrote_events, ack.sequence);
                Ok(Appended::New { jobs: wire.jobs() })
            }
            Err(e) => {
                // Not stored: give the delivery id back, so the sender's retry is not refused.
                if let Some(key) = claimed {
                    let _ = state::delete(s, &key, None).await;
                }
                Err(e)
            }
        }
    }

    async fn event(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        let s = &self.shared;
        let Some((payload, _)) = last(&s.events, &s.names.event(id)).await? else {
            return Ok(None);
        };
        let wire: WireEvent = serde_json::from_slice(&payload)
            .map_err(|e| StoreError::Permanent(format!("event {id}: {e}")))?;
        Ok(Some(Arc::new(wire.event())))
    }

    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        let s = &self.shared;
        // One node prunes at a time (a claim that lapses by itself if that node stops).
        let Ok(claim) = state::create(s, "retention/claim", "", Some(RETENTION_CLAIM)).await else {
            return Ok(Pruned::default());
        };
        let view = self.view().await;
        let mut out = Pruned::default();
        for (id, seq, jobs) in view.prunable(before_ms, PRUNE_BATCH as usize).await? {
            for job in &jobs {
                if let Ok(r) = s.jobs.purge().filter(s.names.job(job)).await {
                    out.jobs += r.purged;
                }
                if let Ok(r) = s.history.purge().filter(s.names.attempt(job)).await {
                    out.attempts += r.purged;
                }
            }
            let _ = s.events.delete_message(seq as u64).await;
            publish(&s.js, s.names.forget(&id), id.clone().into_bytes(), None).await?;
            out.events += 1;
        }
        out.state = prune_state(s).await;
        let _ = state::delete(s, "retention/claim", Some(claim)).await;
        Ok(out)
    }
}

/// Deletes expired state entries (delivery ids past their window, throttle windows that
/// ended): one pass over the state stream, which holds one message per key.
async fn prune_state(s: &Shared) -> u64 {
    let Ok(consumer) = s
        .state
        .create_consumer(pull::OrderedConfig::default())
        .await
    else {
        return 0;
    };
    let Ok(messages) = consumer.messages().await else {
        return 0;
    };
    let mut messages = messages;
    let now = now_ms();
    let mut removed = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
        let Ok(Some(Ok(m))) = next else { break };
        let Ok(info) = m.info().map(|i| (i.stream_sequence, i.pending)) else {
            break;
        };
        let expired = serde_json::from_slice::<super::wire::StateValue>(&m.payload)
            .is_ok_and(|v| v.deleted || v.expires_at.is_some_and(|t| t < now));
        if expired && s.state.delete_message(info.0).await.is_ok() {
            removed += 1;
        }
        if info.1 == 0 {
            break;
        }
    }
    removed
}

/// Every node runs one: a durable consumer on the event stream shared by all, so each event is
/// dispatched by one node, and again after a crash (job messages carry the job id as
/// `Nats-Msg-Id`, so dispatching twice queues once within the duplicate window, and a second
/// message of one job is skipped by its record).
pub(super) async fn start_dispatcher(s: Arc<Shared>) -> Result<AbortHandle, StoreError> {
    let consumer = s
        .events
        .get_or_create_consumer(
            &s.names.dispatch(),
            pull::Config {
                durable_name: Some(s.names.dispatch()),
                ack_policy: consumer::AckPolicy::Explicit,
                // An event a stopped node had fetched but not dispatched comes back this soon.
                ack_wait: Duration::from_secs(5),
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| transient("create the dispatch consumer", e))?;
    let task = tokio::spawn(async move {
        loop {
            // A small batch: what a node holds undispatched when it stops is little.
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(32)
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS: cannot read the event stream; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(msg) = messages.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::debug!(error = %e, "NATS: dispatch stream");
                        continue;
                    }
                };
                let wire: WireEvent = match serde_json::from_slice(&msg.payload) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(subject = %msg.subject, error = %e, "an event message cannot be read: skipped");
                        let _ = msg.ack().await;
                        continue;
                    }
                };
                let mut ok = true;
                for job in wire.jobs() {
                    let payload = serde_json::to_vec(&WireJob::of(&job)).unwrap_or_default();
                    if let Err(e) = publish(&s.js, s.names.queue(), payload, Some(&job.id)).await {
                        tracing::warn!(job = %job.id, error = %e, "cannot queue a job; the event is dispatched again");
                        ok = false;
                        break;
                    }
                }
                let kind = if ok {
                    async_nats::jetstream::AckKind::Ack
                } else {
                    async_nats::jetstream::AckKind::Nak(Some(Duration::from_secs(1)))
                };
                let _ = msg.ack_with(kind).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok(task.abort_handle())
}
