//! Throttle windows: one state-store entry per (rule, group), created by the first matching
//! event and naming it; later matches in the group within `once_within` are throttled by it.
//!
//! A window is opened before its event is appended (the event's envelope records the
//! decision). When the event is never stored — the service died (kill -9) between the two, or
//! the request was cancelled — its sender had no answer and sends it again: that window must
//! not throttle it. So a window whose event is neither being ingested here nor in the event log
//! throttles nothing; the next match in its group takes it over (compare-and-set). Correlation
//! partial matches are moved before the append too: `engine/correlate.rs` drops such events
//! from them the same way.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::Engine;
use crate::domain::{StoreError, Throttled, event_id_ms, now_ms};

/// On a shared store another node may be appending the event that opened a window (and a
/// replica's read may lag): only a window this much older than its event's id is taken over.
const SHARED_PATIENCE: Duration = Duration::from_secs(60);

/// Events known to be stored are remembered up to this many (then forgotten at once).
const KNOWN_CAP: usize = 4096;

/// The events of this process between opening their throttle windows and the end of their
/// append (a window of one of them is not stale: its event is on its way to the log), and
/// events known to be stored (their windows throttle without a log lookup).
#[derive(Debug, Default)]
pub(super) struct Openers {
    flying: Mutex<HashSet<String>>,
    stored: Mutex<HashSet<String>>,
}

/// An event being ingested; it leaves [`Openers`] when dropped (stored, failed or cancelled).
pub(super) struct Flying<'a> {
    openers: &'a Openers,
    id: String,
}

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        lock(&self.openers.flying).remove(&self.id);
    }
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

impl Openers {
    /// `id` is being ingested until the guard is dropped.
    pub(super) fn enter(&self, id: &str) -> Flying<'_> {
        lock(&self.flying).insert(id.to_string());
        Flying {
            openers: self,
            id: id.to_string(),
        }
    }

    /// `id` is stored.
    pub(super) fn stored(&self, id: &str) {
        let mut known = lock(&self.stored);
        if known.len() >= KNOWN_CAP {
            known.clear();
        }
        known.insert(id.to_string());
    }

    fn alive(&self, id: &str) -> bool {
        lock(&self.flying).contains(id) || lock(&self.stored).contains(id)
    }
}

impl Engine {
    /// Opens the throttle window `key` for `event`, or says which event's window throttles it.
    pub(super) async fn throttle(
        &self,
        key: &str,
        event: &str,
        window: Duration,
    ) -> Result<Result<u64, Throttled>, StoreError> {
        let until = now_ms() + window.as_millis() as i64;
        let value = json!({"event": event, "until": until}).to_string();
        for _ in 0..3 {
            match self.store.state.create(key, &value, Some(window)).await {
                Ok(rev) => return Ok(Ok(rev)),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            let Some((held, rev)) = self.store.state.get(key).await? else {
                // Expired between the two calls: try to open it again.
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&held).unwrap_or_default();
            let fired_by = v["event"].as_str().unwrap_or_default().to_string();
            if self.never_stored(&fired_by).await? {
                match self
                    .store
                    .state
                    .update(key, &value, rev, Some(window))
                    .await
                {
                    Ok(rev) => {
                        tracing::warn!(window = %key, stale = %fired_by, event, "a throttle window was opened by an event that was never stored (the service stopped or the request was cancelled before it was): taken over");
                        return Ok(Ok(rev));
                    }
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            return Ok(Err(Throttled {
                group: String::new(),
                fired_by,
                until: v["until"].as_i64().unwrap_or_default(),
            }));
        }
        Err(StoreError::Transient(format!(
            "throttle window `{key}` keeps changing"
        )))
    }

    /// Whether the event `id` that opened a window is gone for good: not being ingested here,
    /// not in the event log (on a shared store, only once it is old enough that no other node
    /// is still appending it).
    pub(super) async fn never_stored(&self, id: &str) -> Result<bool, StoreError> {
        if id.is_empty() || self.openers.alive(id) {
            return Ok(false);
        }
        let young = |at: i64| now_ms() - at < SHARED_PATIENCE.as_millis() as i64;
        if self.settings.shared && event_id_ms(id).is_none_or(young) {
            return Ok(false);
        }
        if self.store.log.event(id).await?.is_some() {
            self.openers.stored(id);
            return Ok(false);
        }
        Ok(true)
    }
}
