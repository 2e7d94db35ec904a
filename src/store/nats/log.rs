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

/// A delivery id claimed this recently by another node that has not stored its event yet is
/// being stored right now: the repeat is answered "try again", not "duplicate" (if that node
/// fails, the sender's retry then takes the claim over). It outlasts one append's own retries
/// (`WRITE_BUDGET`).
const CLAIM_GRACE_MS: i64 = 10_000;

/// How long one node's retention pass may hold the others off.
const RETENTION_CLAIM: Duration = Duration::from_secs(300);

/// What claiming a delivery id came to.
enum Claim {
    /// Ours: publish the event under this `Nats-Msg-Id` (the event's id, or that of the
    /// earlier attempt taken over).
    Mine { msg_id: String },
    /// Already stored as this event.
    Stored(String),
}

/// Claims `(source, delivery)` for `event` within `window`. The caller holds this node's turn
/// at the delivery (`Shared::turn`).
async fn claim(
    s: &Shared,
    event: &Event,
    delivery: &str,
    window: Duration,
) -> Result<Claim, StoreError> {
    let key = format!("dedup/{}/{delivery}", event.source);
    let encode = |msg_id: &str| {
        serde_json::to_string(&DedupClaim {
            event: event.id.clone(),
            at: now_ms(),
            node: s.node.clone(),
            msg_id: msg_id.to_string(),
        })
        .unwrap_or_default()
    };
    for _ in 0..5 {
        match state::create(s, &key, &encode(&event.id), Some(window)).await {
            Ok(_) => {
                return Ok(Claim::Mine {
                    msg_id: event.id.clone(),
                });
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let Some((value, rev)) = state::get(s, &key).await? else {
            continue; // it expired meanwhile
        };
        let theirs: DedupClaim = serde_json::from_str(&value)
            .map_err(|e| StoreError::Permanent(format!("delivery claim `{key}`: {e}")))?;
        if theirs.event == event.id {
            // Our own create landed though its answer was lost.
            return Ok(Claim::Mine {
                msg_id: event.id.clone(),
            });
        }
        if last(&s.events, &s.names.event(&theirs.event))
            .await?
            .is_some()
        {
            return Ok(Claim::Stored(theirs.event));
        }
        // An earlier request to this node for this delivery has ended (the caller holds the
        // node's turn at it), so this node's own claim is taken over at once.
        let own = theirs.node == s.node;
        if !own && now_ms() - theirs.at < CLAIM_GRACE_MS {
            return Err(StoreError::Transient(format!(
                "delivery `{delivery}` of `{}` is being stored by another node: send it again in a moment",
                event.source
            )));
        }
        // The earlier attempt ended without a confirmed store (this node's, or another node's
        // past the grace). It may still have landed: publishing under its message id lets
        // the stream keep exactly one of the two.
        let msg_id = if theirs.msg_id.is_empty() {
            theirs.event.clone()
        } else {
            theirs.msg_id.clone()
        };
        match state::update(s, &key, &encode(&msg_id), rev, Some(window)).await {
            Ok(_) => return Ok(Claim::Mine { msg_id }),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Transient(format!(
        "delivery `{delivery}` of `{}` is contended: send it again",
        event.source
    )))
}

/// This node's turn at appending one delivery: copies of a delivery that arrive at one node
/// together are appended one after the other (the later ones then find the first stored, and
/// are answered as duplicates), so a claim held by this node is never one still in flight.
struct Turn<'a> {
    s: &'a Shared,
    key: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut map = self.s.appending.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this turn still hold the lock: nobody waits, forget it.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

impl Shared {
    async fn turn(&self, key: &str) -> Turn<'_> {
        let lock = self
            .appending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        Turn {
            s: self,
            key: key.to_string(),
            _held: lock.lock_owned().await,
        }
    }
}

#[async_trait]
impl EventLog for Jet {
    async fn append(&self, envelope: Envelope) -> Result<Appended, StoreError> {
        let s = &self.shared;
        let event = &envelope.event;
        let mut guard = None;
        let (msg_id, claimed) = match (&event.delivery, envelope.dedup_window) {
            (Some(d), Some(w)) => {
                let key = format!("dedup/{}/{d}", event.source);
                guard = Some(s.turn(&key).await);
                match claim(s, event, d, w).await? {
                    Claim::Stored(id) => {
                        self.mark_duplicate(&id).await;
                        return Ok(Appended::Duplicate { id });
                    }
                    Claim::Mine { msg_id } => (msg_id, Some(key)),
                }
            }
            _ => (event.id.clone(), None),
        };
        let wire = WireEvent::of(&envelope);
        let payload =
            serde_json::to_vec(&wire).map_err(|e| StoreError::Permanent(e.to_string()))?;
        let result = publish(&s.js, s.names.event(&event.id), payload, Some(&msg_id)).await;
        drop(guard);
        match result {
            Ok(ack) if ack.duplicate && msg_id != event.id => {
                // The attempt taken over had landed after all (or this one did, on a try
                // whose answer was lost): whichever the stream holds is the event.
                if last(&s.events, &s.names.event(&event.id)).await?.is_some() {
                    raise(&s.progress.wrote_events, ack.sequence);
                    return Ok(Appended::New { jobs: wire.jobs() });
                }
                let id = msg_id;
                self.mark_duplicate(&id).await;
                Ok(Appended::Duplicate { id })
            }
            Ok(ack) => {
                raise(&s.progress.wrote_events, ack.sequence);
                Ok(Appended::New { jobs: wire.jobs() })
            }
            Err(e @ StoreError::Unknown(_)) => {
                // Perhaps stored: the claim stays, so the sender's retry finds the event (a
                // duplicate) or takes the claim over under the same message id (stored once).
                Err(e)
            }
            Err(e) => {
                // Certainly not stored: give the delivery id back, so the retry is not refused.
                if let Some(key) = claimed {
                    let _ = state::delete(s, &key, None).await;
                }
                Err(e)
            }
        }
    }

    async fn delivered(&self, source: &str, delivery: &str) -> Result<Option<String>, StoreError> {
        let key = format!("dedup/{source}/{delivery}");
        let Some((value, _)) = state::get(&self.shared, &key).await? else {
            return Ok(None);
        };
        let claim: DedupClaim = serde_json::from_str(&value)
            .map_err(|e| StoreError::Permanent(format!("delivery claim {key}: {e}")))?;
        Ok(Some(claim.event))
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

impl Jet {
    /// Records in the history that a delivery was answered as a duplicate of `id`.
    async fn mark_duplicate(&self, id: &str) {
        let s = &self.shared;
        let ack = publish(&s.js, s.names.duplicate(id), id.as_bytes().to_vec(), None).await;
        if let Ok(a) = ack {
            raise(&s.progress.wrote_history, a.sequence);
        }
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
                        super::unreadable("events", &msg.subject, &msg.payload, e);
                        let again =
                            async_nats::jetstream::AckKind::Nak(Some(super::UNREADABLE_AGAIN));
                        let _ = msg.ack_with(again).await;
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
