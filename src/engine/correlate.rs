//! Correlation rules at run time: each (rule, group) keeps its partial match in the state
//! store (`correlate/<rule key>/<group>`), moved forward by compare-and-set, so it survives
//! restarts and reloads and is shared by every node of a JetStream deployment.
//!
//! Timers need no store primitive of their own: an absence's opening event makes a job at
//! once, which waits for the deadline (`nak` with the time left, on the engine's clock) and
//! then fires unless the missing event closed its window. The job is as durable as any other,
//! so a deadline that passed while the service was down fires at the next start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::Engine;
use crate::domain::{Correlated, Event, StoreError};
use crate::rules::Rule;
use crate::rules::correlate::{Correlation, Kind, Partial};
use crate::store::Revision;
use crate::telemetry::names;

/// How often a compare-and-set on one partial match is tried before giving up (503).
const CAS_TRIES: usize = 16;

/// The state-store key of a rule's partial match for a group.
pub fn partial_key(rule_key: &str, group: &str) -> String {
    format!("correlate/{rule_key}/{group}")
}

/// The state-store key recording that absence window `event` of a rule was evicted before its
/// deadline (`max_open`): its job still fires, marked evicted, since nobody can tell any more
/// whether the missing event came.
pub fn evicted_key(rule_key: &str, event: &str) -> String {
    format!("correlate-evicted/{rule_key}/{event}")
}

/// What an absence's job finds at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Window {
    /// Still open: the missing event did not come. It fires.
    Open,
    /// The missing event came in time (or the rule changed). It does not fire.
    Closed,
    /// Evicted past `max_open` before its deadline: it fires, marked evicted.
    Evicted,
}

/// How a change to a partial match is taken back when its event is not stored after all (a
/// duplicate delivery, or the log refused it).
#[derive(Debug)]
pub(super) struct Undo {
    key: String,
    before: Option<String>,
    after: Option<Revision>,
}

/// The groups with an open partial match, per rule, least recently touched first: past the
/// rule's `max_open`, the oldest is evicted. Kept by the node that touched them (a group
/// another node or an earlier run left behind still expires with its window).
#[derive(Default)]
pub(super) struct OpenGroups {
    rules: Mutex<HashMap<String, Lru>>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    at: HashMap<String, u64>,
    order: BTreeMap<u64, String>,
}

impl OpenGroups {
    /// Marks `key` open under `rule`; returns the keys evicted to stay within `max`.
    fn touch(&self, rule: &str, key: &str, max: usize) -> Vec<String> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let lru = rules.entry(rule.to_string()).or_default();
        lru.tick += 1;
        if let Some(old) = lru.at.insert(key.to_string(), lru.tick) {
            lru.order.remove(&old);
        }
        lru.order.insert(lru.tick, key.to_string());
        let mut evicted = Vec::new();
        while lru.order.len() > max {
            let Some((_, k)) = lru.order.pop_first() else {
                break;
            };
            lru.at.remove(&k);
            evicted.push(k);
        }
        evicted
    }

    fn close(&self, rule: &str, key: &str) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lru) = rules.get_mut(rule)
            && let Some(t) = lru.at.remove(key)
        {
            lru.order.remove(&t);
        }
    }
}

/// Serializes the ingestion of one delivery id (per source) while it moves correlation state:
/// copies of a delivery sent at once reach the correlation one after the other, and each after
/// the first finds the delivery stored and moves nothing ([`Engine::stored_delivery`]). A fixed
/// set of stripes, so it takes no memory per delivery.
pub(super) struct Deliveries {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl Deliveries {
    /// Waits for the turn at `source`'s delivery id `delivery`.
    pub(super) async fn hold(
        &self,
        source: &str,
        delivery: &str,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one((source, delivery));
        self.stripes[(h % self.stripes.len() as u64) as usize]
            .lock()
            .await
    }
}

/// Absence jobs that only wait for their deadline, by deadline. They do no work until then, so
/// they are not back pressure: `--max-pending` does not count them (up to its own size). Kept by
/// the node that stored or ran them (after a restart a job is known again once a worker has
/// looked at it); an entry whose deadline passed is dropped, since the job is real work then.
#[derive(Default)]
pub(super) struct Waiting {
    jobs: Mutex<BTreeSet<(i64, String)>>,
}

impl Waiting {
    pub(super) fn add(&self, deadline: i64, job: &str) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.insert((deadline, job.to_string()));
    }

    pub(super) fn done(&self, deadline: i64, job: &str) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.remove(&(deadline, job.to_string()));
    }

    /// Jobs whose deadline is not past at `now` (ms).
    pub(super) fn count(&self, now: i64) -> usize {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        while jobs.first().is_some_and(|(d, _)| *d < now) {
            jobs.pop_first();
        }
        jobs.len()
    }
}

/// How long a partial match is kept in storage: its window (decisions are made on event
/// times; expiry only collects what nobody needs). An absence's open windows stay until their
/// jobs have run, even after a long outage.
fn ttl(c: &Correlation, retain: Duration) -> Duration {
    match c.kind {
        Kind::Absence => (c.within * 2).max(retain),
        _ => c.within + Duration::from_secs(60),
    }
}

/// The cap's scope: a rule's groups opened by one source.
fn lru_id(rule_key: &str, source: &str) -> String {
    format!("{rule_key}\n{source}")
}

fn parse(value: &str) -> Partial {
    serde_json::from_str(value).unwrap_or_default()
}

impl Engine {
    /// Moves the rule's partial match for the event's group forward. `None`: the event
    /// changed nothing.
    pub(super) async fn correlate(
        &self,
        rule: &Rule,
        c: &Correlation,
        event: &Event,
        steps: &[usize],
    ) -> Result<Option<(Correlated, Undo)>, StoreError> {
        let group = c.group(event.body());
        let key = partial_key(&rule.key, &group);
        let at = self.settings.clock.now();
        let state = &self.store.state;
        for _ in 0..CAS_TRIES {
            let current = state.get(&key).await?;
            let mut partial = current.as_ref().map(|(v, _)| parse(v)).unwrap_or_default();
            if partial.fingerprint != rule.fingerprint {
                if !partial.is_empty() {
                    tracing::info!(rule = %rule.key, group = %group, "correlation rule changed since this partial match began: it starts afresh");
                }
                partial = Partial {
                    fingerprint: rule.fingerprint.clone(),
                    ..Partial::default()
                };
            }
            self.drop_unstored(&mut partial, &event.id, &rule.key)
                .await?;
            let Some(observed) = c.observe(&mut partial, steps, &event.id, at) else {
                return Ok(None);
            };
            let value = serde_json::to_string(&partial)
                .map_err(|e| StoreError::Permanent(format!("partial match: {e}")))?;
            let ttl = Some(ttl(c, self.settings.retain));
            let written = match (&current, partial.is_empty()) {
                (None, true) => Ok(None),
                (Some((_, rev)), true) => state.delete(&key, Some(*rev)).await.map(|()| None),
                (Some((_, rev)), false) => state.update(&key, &value, *rev, ttl).await.map(Some),
                (None, false) => state.create(&key, &value, ttl).await.map(Some),
            };
            let after = match written {
                Ok(after) => after,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            };
            // Caps are per rule and source: one sender cannot evict another's groups.
            let lru = lru_id(&rule.key, &event.source);
            if partial.is_empty() {
                self.open.close(&lru, &key);
            } else {
                for evicted in self.open.touch(&lru, &key, c.max_open) {
                    tracing::warn!(rule = %rule.key, source = %event.source, key = %evicted, max_open = c.max_open, "too many open partial matches: the oldest is evicted");
                    metrics::counter!(names::CORRELATION_EVICTED, "rulebook" => rule.rulebook.clone(), "rule" => rule.name.clone()).increment(1);
                    if c.kind == Kind::Absence {
                        self.mark_evicted(rule, c, &evicted).await?;
                    }
                    state.delete(&evicted, None).await?;
                }
            }
            let undo = Undo {
                key,
                before: current.map(|(v, _)| v),
                after,
            };
            return Ok(Some((
                Correlated {
                    kind: c.kind.as_str().to_string(),
                    group,
                    state: observed.state,
                    events: observed.events,
                    deadline: observed.deadline,
                    waiting_for: observed.waiting_for,
                    closed: observed.cancelled,
                },
                undo,
            )));
        }
        Err(StoreError::Transient(format!(
            "the partial match of rule `{}` keeps changing",
            rule.key
        )))
    }

    /// Whether `source`'s delivery id `delivery` is already stored (within its window): then
    /// the event is a redelivery, and moves no correlation state.
    pub(super) async fn stored_delivery(
        &self,
        source: &str,
        delivery: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.store.log.delivered(source, delivery).await?.is_some())
    }

    /// Absence: records every window of the partial match at `key` as evicted, so their jobs
    /// fire at the deadline instead of ending quietly.
    async fn mark_evicted(
        &self,
        rule: &Rule,
        c: &Correlation,
        key: &str,
    ) -> Result<(), StoreError> {
        let Some((v, _)) = self.store.state.get(key).await? else {
            return Ok(());
        };
        let ttl = Some(ttl(c, self.settings.retain));
        for window in parse(&v).seen {
            let marker = evicted_key(&rule.key, &window.id);
            match self.store.state.create(&marker, key, ttl).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes back a change to a partial match whose event was not stored.
    pub(super) async fn undo(&self, undo: Undo) {
        let state = &self.store.state;
        let r = match (undo.before, undo.after) {
            (Some(before), Some(rev)) => {
                state.update(&undo.key, &before, rev, None).await.map(drop)
            }
            (Some(before), None) => state.create(&undo.key, &before, None).await.map(drop),
            (None, Some(rev)) => state.delete(&undo.key, Some(rev)).await,
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            tracing::debug!(key = %undo.key, error = %e, "a partial match changed again before it could be taken back");
        }
    }

    /// Drops from `partial` the events that were never stored (`Engine::never_stored`): the
    /// service died, or the request was cancelled, after it moved the partial match and before
    /// the append. Their senders send them again; a ghost would count twice (`count`), or hold
    /// the resent event as if its window were open (absence `per_group`: no job, no incident).
    async fn drop_unstored(
        &self,
        partial: &mut Partial,
        current: &str,
        rule: &str,
    ) -> Result<(), StoreError> {
        let mut ghosts = Vec::new();
        for p in &partial.seen {
            if p.id != current && self.never_stored(&p.id).await? {
                ghosts.push(p.id.clone());
            }
        }
        if !ghosts.is_empty() {
            tracing::warn!(rule, events = ?ghosts, "a partial match held events that were never stored (the service stopped or the request was cancelled before they were): dropped");
            partial.seen.retain(|p| !ghosts.contains(&p.id));
        }
        Ok(())
    }

    /// Absence, when its job runs: whether the window opened by `event` is still open (no
    /// missing event came). It stays in the store until the job is done (see
    /// [`Engine::close_absence`]), so a job that runs again decides the same.
    pub(super) async fn absence_window(
        &self,
        rule: &Rule,
        c: &Correlation,
        correlated: &Correlated,
        event: &str,
    ) -> Result<Window, StoreError> {
        let key = partial_key(&rule.key, &correlated.group);
        if let Some((v, _)) = self.store.state.get(&key).await? {
            let mut p = parse(&v);
            if p.fingerprint == rule.fingerprint && c.expire(&mut p, event) {
                return Ok(Window::Open);
            }
        }
        let marker = evicted_key(&rule.key, event);
        Ok(match self.store.state.get(&marker).await? {
            Some(_) => Window::Evicted,
            None => Window::Closed,
        })
    }

    /// Absence, after its job fired and finished: removes its window (or its eviction record).
    pub(super) async fn close_absence(
        &self,
        rule: &Rule,
        c: &Correlation,
        group: &str,
        event: &Event,
    ) -> Result<(), StoreError> {
        let marker = evicted_key(&rule.key, &event.id);
        if self.store.state.get(&marker).await?.is_some() {
            self.store.state.delete(&marker, None).await?;
        }
        let (lru, event) = (lru_id(&rule.key, &event.source), event.id.as_str());
        let key = partial_key(&rule.key, group);
        let ttl = Some(ttl(c, self.settings.retain));
        for _ in 0..CAS_TRIES {
            let Some((v, rev)) = self.store.state.get(&key).await? else {
                return Ok(());
            };
            let mut p = parse(&v);
            if !c.expire(&mut p, event) {
                return Ok(());
            }
            let r = if p.is_empty() {
                self.open.close(&lru, &key);
                self.store.state.delete(&key, Some(rev)).await
            } else {
                let value = serde_json::to_string(&p)
                    .map_err(|e| StoreError::Permanent(format!("partial match: {e}")))?;
                self.store
                    .state
                    .update(&key, &value, rev, ttl)
                    .await
                    .map(drop)
            };
            match r {
                Err(StoreError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(StoreError::Transient(format!(
            "the partial match of rule `{}` keeps changing",
            rule.key
        )))
    }

    /// What a correlation job's templates see: `events.<name>` (a list for `count`) and
    /// `correlation`. Events no longer in the log are `null`.
    pub(super) async fn correlation_context(
        &self,
        c: &Correlation,
        correlated: &Correlated,
    ) -> Result<(Value, Value), StoreError> {
        let mut took_part = Vec::with_capacity(correlated.events.len());
        for p in &correlated.events {
            let body = match self.store.log.event(&p.id).await? {
                Some(e) => e.body().clone(),
                None => Value::Null,
            };
            took_part.push((p, body));
        }
        Ok(c.template_context(&correlated.group, &took_part, correlated.deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::{OpenGroups, Waiting};

    #[test]
    fn waiting_jobs_count_until_their_deadline() {
        let w = Waiting::default();
        w.add(100, "a");
        w.add(200, "b");
        w.add(200, "b");
        assert_eq!(w.count(50), 2);
        w.done(200, "b");
        assert_eq!(w.count(50), 1);
        assert_eq!(w.count(101), 0, "past its deadline a job is work");
    }

    #[test]
    fn the_least_recently_touched_group_is_evicted_first() {
        let open = OpenGroups::default();
        assert!(open.touch("r", "a", 2).is_empty());
        assert!(open.touch("r", "b", 2).is_empty());
        assert!(open.touch("r", "a", 2).is_empty(), "a touched again");
        assert_eq!(open.touch("r", "c", 2), ["b"]);
        open.close("r", "a");
        assert!(open.touch("r", "d", 2).is_empty(), "a closed: room for d");
        assert!(open.touch("other", "x", 1).is_empty(), "rules count apart");
    }
}
