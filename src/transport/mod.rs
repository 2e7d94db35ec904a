//! Transports other than HTTP: each listens on its own sockets, turns bytes into a decoded
//! event and hands it to the same [`Engine::ingest`](crate::engine::Engine) as an HTTP POST.
//! The engine never learns which transport an event came by; the transport records its
//! envelope (`x-rulehook-peer`, …) as headers, which conditions read with `meta("…")`.
//!
//! HTTP itself is served by `server` (axum); `syslog` (UDP, TCP) lives here. A listening
//! source is looked up by name in the current rule set for every message, so a reload changes
//! what it keeps and which rules see it; [`Transports`] binds its `listen:` addresses (or
//! opens its broker session) at start and again when a reload changes them.

pub mod mqtt;
pub mod nats;
pub mod snmp;
pub mod syslog;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::StoreError;
use crate::engine::Engine;
use crate::rules::{Fields, RuleSet};
use crate::sources::{Keep, Listening, Scheme, Source, SourceKind};
use crate::telemetry::names;
use crate::verify::{Delivery, VerifiedEvent};

/// One bound listener, for the banner.
#[derive(Debug, Clone)]
pub struct Bound {
    pub source: String,
    pub scheme: Option<Scheme>,
    /// `udp://127.0.0.1:5514`, `mqtt://127.0.0.1:1883` …
    pub addr: String,
}

/// A listening source whose transport could not start: which source, which address, why.
#[derive(Debug, Clone, serde::Serialize, thiserror::Error)]
#[error("source `{source_name}` cannot listen on {address}: {error}")]
pub struct ListenFailure {
    #[serde(rename = "source")]
    pub source_name: String,
    /// `tcp://127.0.0.1:514`, `mqtt://broker:1883` …
    pub address: String,
    pub error: String,
}

/// What one [`Transports::apply`] changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every listener bound and session started (a restarted source's too).
    pub started: Vec<Bound>,
    /// Sources no longer in the rule set, whose transports were stopped.
    pub stopped: Vec<String>,
    /// Sources whose transport was restarted because its settings changed.
    pub restarted: Vec<String>,
    pub failed: Vec<ListenFailure>,
}

/// The transports of the listening sources, kept in step with the rule set. It exists so a
/// reload can apply `listen:`, `url:`, `topics:` … changes: a new source starts, a removed one
/// stops, one whose transport settings changed restarts, and every other keeps its sockets and
/// broker sessions untouched (no message lost on them).
///
/// `node` is this node's id when the store is shared by several nodes: broker sessions then
/// get client ids of their own and MQTT topics are shared subscriptions (NATS core subjects are
/// always subscribed in a queue group).
pub struct Transports {
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    data: PathBuf,
    node: Option<String>,
    running: tokio::sync::Mutex<HashMap<String, Running>>,
}

/// One source's transport as started.
struct Running {
    kind: SourceKind,
    listening: Arc<Listening>,
    /// Stops this source's transport only (a child of the service's shutdown).
    stop: CancellationToken,
}

/// Whether a transport started with `a` serves `b` as it is: what a listener or session
/// captures when it starts. `keep`, `allow_from` and an SNMP source's credentials are read
/// from the rule set for every message, so changing them restarts nothing.
fn same_transport(a: &Listening, b: &Listening) -> bool {
    let engine_id = |l: &Listening| l.snmp.as_ref().map(|s| s.engine_id.clone());
    a.endpoints == b.endpoints
        && a.broker == b.broker
        && a.nats == b.nats
        && a.format == b.format
        && a.max_message == b.max_message
        && a.max_connections == b.max_connections
        && a.max_connections_per_client == b.max_connections_per_client
        && a.idle_timeout == b.idle_timeout
        && a.tls == b.tls
        && engine_id(a) == engine_id(b)
}

impl Transports {
    pub fn new(
        engine: Arc<Engine>,
        shutdown: CancellationToken,
        data: PathBuf,
        node: Option<String>,
    ) -> Transports {
        Transports {
            engine,
            shutdown,
            data,
            node,
            running: Default::default(),
        }
    }

    /// Brings the running transports in line with `rules`: stops those of removed sources,
    /// restarts those whose transport settings changed, starts new ones. A source that cannot
    /// start is reported in `failed` (and its connection state) and tried again at the next
    /// `apply`. A worker node takes no events: it neither listens nor subscribes (a RELP or
    /// MQTT message acknowledged there would be lost).
    pub async fn apply(&self, rules: &RuleSet) -> Applied {
        let mut applied = Applied::default();
        if !self.engine.role().accepts_events() {
            return applied;
        }
        let wanted: HashMap<&str, (&Source, &Arc<Listening>)> = rules
            .sources
            .iter()
            .filter_map(|s| s.listening.as_ref().map(|l| (s.name.as_str(), (s, l))))
            .collect();
        let mut running = self.running.lock().await;
        let mut previous: HashMap<String, Arc<Listening>> = HashMap::new();
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let keep = match (wanted.get(name.as_str()), running.get(&name)) {
                (Some((src, l)), Some(r)) => r.kind == src.kind && same_transport(&r.listening, l),
                _ => false,
            };
            if keep {
                continue;
            }
            let Some(old) = running.remove(&name) else {
                continue;
            };
            old.stop.cancel();
            if wanted.contains_key(name.as_str()) {
                applied.restarted.push(name.clone());
            } else {
                applied.stopped.push(name.clone());
            }
            previous.insert(name, old.listening);
        }
        if !previous.is_empty() {
            // The stopped tasks end at their next poll and write their last state; then the
            // rows of what no longer runs go.
            tokio::time::sleep(Duration::from_millis(100)).await;
            for name in previous.keys() {
                crate::connections::forget(name);
            }
        }
        let mut new: Vec<&str> = wanted
            .keys()
            .copied()
            .filter(|n| !running.contains_key(*n))
            .collect();
        new.sort_unstable();
        for name in new {
            let (source, listening) = wanted[name];
            // Rows left by an attempt that failed (or a source of that name before) go.
            crate::connections::forget(name);
            let stop = self.shutdown.child_token();
            let prev = previous.get(name).map(Arc::as_ref);
            match self
                .start(source, listening, &stop, prev, !previous.is_empty())
                .await
            {
                Ok(bound) => {
                    applied.started.extend(bound);
                    running.insert(
                        name.to_string(),
                        Running {
                            kind: source.kind,
                            listening: listening.clone(),
                            stop,
                        },
                    );
                }
                Err(f) => {
                    stop.cancel();
                    crate::connections::forget(name);
                    crate::connections::set(
                        name,
                        source.kind.name(),
                        &f.address,
                        crate::connections::State::Closed,
                        Some(format!("cannot listen: {}", f.error)),
                    );
                    applied.failed.push(f);
                }
            }
        }
        applied
    }

    /// Starts one source's transport under `stop`. `prev`: what it ran with before (an MQTT
    /// session unsubscribes the topics it no longer has). `retry`: something was just stopped,
    /// so an address still held by its ending task is tried again for a moment.
    async fn start(
        &self,
        source: &Source,
        listening: &Arc<Listening>,
        stop: &CancellationToken,
        prev: Option<&Listening>,
        retry: bool,
    ) -> Result<Vec<Bound>, ListenFailure> {
        let fail = |address: String, e: std::io::Error| ListenFailure {
            source_name: source.name.clone(),
            address,
            error: e.to_string(),
        };
        // One per source, shared by its endpoints: its log limits are per source.
        let one = Handoff::new(self.engine.clone(), &source.name, source.kind.name());
        let hand = || one.clone();
        let bound = |scheme, addr: String| Bound {
            source: source.name.clone(),
            scheme,
            addr,
        };
        if let Some(broker) = &listening.broker {
            let before = prev.and_then(|p| p.broker.as_ref());
            let node = self.node.as_deref();
            mqtt::start(
                broker,
                before,
                listening.clone(),
                hand(),
                stop.clone(),
                node,
            )
            .map_err(|e| fail(mqtt::target(broker), e))?;
            return Ok(vec![bound(None, mqtt::target(broker))]);
        }
        if let Some(sub) = &listening.nats {
            nats::start(sub, listening.clone(), hand(), stop.clone());
            return Ok(vec![bound(None, sub.url.clone())]);
        }
        let local = match &listening.snmp {
            Some(snmp) => Some(Arc::new(
                snmp::engine::LocalEngine::open(
                    &self.data,
                    &source.name,
                    snmp.engine_id.as_deref(),
                )
                .map_err(|e| fail(format!("the engine file of {}", source.name), e))?,
            )),
            None => None,
        };
        let mut out = Vec::new();
        for e in &listening.endpoints {
            let text = format!("{}://{}", e.scheme.as_str(), e.addr);
            let addr = bind_retry(retry, || async {
                match &local {
                    Some(local) => {
                        let (l, h, s) = (listening.clone(), hand(), stop.clone());
                        snmp::listen(e, l, h, local.clone(), s).await
                    }
                    None => syslog::listen(e, listening.clone(), hand(), stop.clone()).await,
                }
            })
            .await
            .map_err(|err| fail(text, err))?;
            let addr = format!("{}://{addr}", e.scheme.as_str());
            // A listener is up once bound; it stays up until its source stops.
            crate::connections::set(
                &source.name,
                source.kind.name(),
                &addr,
                crate::connections::State::Connected,
                None,
            );
            out.push(bound(Some(e.scheme), addr));
        }
        Ok(out)
    }
}

/// Binds with `bind`; with `retry`, an address in use is tried again for up to 3 s (a listener
/// just stopped gives its socket back when its task ends).
async fn bind_retry<T, F, Fut>(retry: bool, mut bind: F) -> std::io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match bind().await {
            Err(e)
                if retry
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            r => return r,
        }
    }
}

/// The events a source's transport would make of `raw` when `raw` is what it receives on the
/// wire rather than an event already decoded (`rulehook test`, the console's Try): for a
/// syslog source, text that is not JSON is taken as syslog messages, one per line. `None`:
/// decode `raw` as the source's `format` says, as for a webhook.
pub fn sample_events(kind: SourceKind, raw: &[u8]) -> Option<Vec<Value>> {
    let first = raw.iter().find(|b| !b.is_ascii_whitespace())?;
    if kind != SourceKind::Syslog || matches!(first, b'{' | b'[') {
        return None;
    }
    Some(
        raw.split(|b| *b == b'\n')
            .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
            .map(|l| syslog::parse::event(l, false))
            .collect(),
    )
}

/// What happened to one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    Stored,
    /// Matched nothing; its source keeps only what matched.
    Unmatched,
    /// A repeat of a delivery stored within its window: not stored again.
    Duplicate,
    /// Not taken (the reason is counted).
    Dropped(&'static str),
}

/// A transport's way into the engine for one source: the counters it bumps are made once.
#[derive(Clone)]
pub struct Handoff {
    engine: Arc<Engine>,
    source: Arc<str>,
    kind: &'static str,
    unmatched: metrics::Counter,
    quiet: Arc<LogEvery>,
    /// Which unmatched messages the console's live view gets a copy of.
    sampler: Arc<crate::unmatched::Sampler>,
}

impl Handoff {
    pub fn new(engine: Arc<Engine>, source: &str, kind: &'static str) -> Handoff {
        Handoff {
            engine,
            source: source.into(),
            kind,
            unmatched: metrics::counter!(names::UNMATCHED, "source" => source.to_string()),
            quiet: Arc::new(LogEvery::default()),
            sampler: Arc::default(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The rule set in force now (a listener reads its source's current settings from it).
    pub fn rules(&self) -> Arc<crate::rules::RuleSet> {
        self.engine.rules()
    }

    /// Counts a message that could not be read well (it is still handed on), and logs it at
    /// most once a minute per source, reason and sender ([`LogEvery`]).
    pub fn malformed(&self, reason: &'static str, peer: IpAddr) {
        metrics::counter!(names::MALFORMED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        match self.quiet.due(reason, Some(peer)) {
            Due::No => {}
            Due::Yes => {
                tracing::info!(source = %self.source, %peer, reason, "malformed message (logged at most once a minute per reason and sender)")
            }
            Due::Others => {
                tracing::info!(source = %self.source, %peer, reason, "malformed message, from this and other senders (logged at most once a minute per reason for senders past the first 1024)")
            }
        }
    }

    /// Counts a broker message whose payload could not be decoded (`at`: its topic or
    /// subject), logged as [`Handoff::malformed`] is.
    pub fn undecodable(&self, at: &str, error: &dyn std::fmt::Display) {
        let reason = "undecodable";
        metrics::counter!(names::MALFORMED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due(reason, None) != Due::No {
            tracing::info!(source = %self.source, at, %error, reason, "malformed message (each reason logged at most once a minute)");
        }
    }

    /// Counts a message not taken that named a user (SNMPv3), and logs it with the user
    /// (`shown`: already escaped and cut, since the sender chose it) at most once a minute per
    /// source, reason and sender. The user and the sender are in the log only: the counter's
    /// labels stay bounded.
    pub fn dropped_from_user(&self, reason: &'static str, peer: IpAddr, shown: &str) -> Delivered {
        metrics::counter!(names::DROPPED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        match self.quiet.due(reason, Some(peer)) {
            Due::No => {}
            Due::Yes => {
                tracing::info!(source = %self.source, %peer, reason, user = %shown, "message dropped (logged at most once a minute per reason and sender)")
            }
            Due::Others => {
                tracing::info!(source = %self.source, %peer, reason, user = %shown, "message dropped, from this and other senders (logged at most once a minute per reason for senders past the first 1024)")
            }
        }
        Delivered::Dropped(reason)
    }

    /// Counts a message not taken, and logs it at most once a minute per source, reason and
    /// sender ([`LogEvery`]; the counter's labels are source and reason only).
    pub fn dropped(&self, reason: &'static str, peer: Option<IpAddr>) -> Delivered {
        metrics::counter!(names::DROPPED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        match (self.quiet.due(reason, peer), peer) {
            (Due::No, _) => {}
            (Due::Yes, Some(peer)) => {
                tracing::info!(source = %self.source, %peer, reason, "message dropped (logged at most once a minute per reason and sender)")
            }
            (Due::Others, Some(peer)) => {
                tracing::info!(source = %self.source, %peer, reason, "message dropped, from this and other senders (logged at most once a minute per reason for senders past the first 1024)")
            }
            (_, None) => {
                tracing::info!(source = %self.source, reason, "message dropped (each reason logged at most once a minute)")
            }
        }
        Delivered::Dropped(reason)
    }

    /// Counts a message the store refused (`store_failed`) and logs why, at most once a minute
    /// per source as every reason is: a flood during a store outage does not fill the log.
    /// `what`: the message's kind and what becomes of it (`a syslog message`, `an mqtt
    /// message (the broker will send it again)`).
    pub fn store_failed(&self, peer: Option<IpAddr>, what: &str, error: &dyn std::fmt::Display) {
        let reason = "store_failed";
        metrics::counter!(names::DROPPED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        // One line a minute whoever sent it: a store outage is not the senders' doing.
        if self.quiet.due(reason, None) != Due::No {
            match peer {
                Some(peer) => {
                    tracing::warn!(source = %self.source, %peer, reason, "{what} could not be stored (logged at most once a minute): {error}")
                }
                None => {
                    tracing::warn!(source = %self.source, reason, "{what} could not be stored (logged at most once a minute): {error}")
                }
            }
        }
    }

    /// Hands one decoded message to the engine; returns once it is stored (or known not to
    /// be kept). `Err` only when the store failed.
    pub async fn deliver(
        &self,
        body: Value,
        peer: IpAddr,
        envelope: Vec<(String, String)>,
    ) -> Result<Delivered, StoreError> {
        self.deliver_from(body, Some(peer), envelope).await
    }

    /// [`Handoff::deliver`] for a message its sender repeats under `delivery` until answered
    /// (an SNMP inform): a repeat within the delivery's window is [`Delivered::Duplicate`].
    pub async fn deliver_once(
        &self,
        body: Value,
        peer: IpAddr,
        envelope: Vec<(String, String)>,
        delivery: Delivery,
    ) -> Result<Delivered, StoreError> {
        self.hand_on(body, Some(peer), envelope, Some(delivery))
            .await
    }

    /// [`Handoff::deliver_from`] for a message a broker delivers again until acknowledged (a
    /// JetStream message): a redelivery within the delivery's window is
    /// [`Delivered::Duplicate`].
    pub async fn deliver_from_once(
        &self,
        body: Value,
        peer: Option<IpAddr>,
        envelope: Vec<(String, String)>,
        delivery: Delivery,
    ) -> Result<Delivered, StoreError> {
        self.hand_on(body, peer, envelope, Some(delivery)).await
    }

    /// Takes a message read in place (`fields`) without building its event, when its source
    /// keeps only what matched and the rule index rules out every rule on the fields it reads:
    /// the message is counted unmatched (and `event()` built only when the console's sample is
    /// due by `now_ms`) and `true` returned. `false`: the event is to be built and delivered.
    /// Not async, so a line no rule wants costs no future.
    pub fn ruled_out(
        &self,
        fields: &dyn Fields,
        peer: IpAddr,
        now_ms: i64,
        event: impl FnOnce() -> Value,
    ) -> bool {
        let rules = self.engine.rules();
        let Some((source, index)) = rules.source_with_index(&self.source) else {
            return false;
        };
        if !source.allows(peer)
            || !self.engine.role().accepts_events()
            || source
                .listening
                .as_ref()
                .is_none_or(|l| l.keep == Keep::All)
            || index.any_candidate_in(fields)
        {
            return false;
        }
        source.meter.received.increment(1);
        self.unmatched.increment(1);
        if self.sampler.due_at(now_ms) {
            crate::unmatched::record(&self.source, Some(peer), &event());
        }
        true
    }

    /// [`Handoff::deliver`] for a message with no peer of its own (from a broker).
    pub async fn deliver_from(
        &self,
        body: Value,
        peer: Option<IpAddr>,
        envelope: Vec<(String, String)>,
    ) -> Result<Delivered, StoreError> {
        self.hand_on(body, peer, envelope, None).await
    }

    async fn hand_on(
        &self,
        body: Value,
        peer: Option<IpAddr>,
        mut envelope: Vec<(String, String)>,
        delivery: Option<Delivery>,
    ) -> Result<Delivered, StoreError> {
        let rules = self.engine.rules();
        let Some(source) = rules.source(&self.source) else {
            return Ok(self.dropped("source_removed", peer));
        };
        if let Some(peer) = peer
            && !source.allows(peer)
        {
            return Ok(self.dropped("forbidden", Some(peer)));
        }
        if !self.engine.role().accepts_events() {
            return Ok(self.dropped("not_ingest", peer));
        }
        source.meter.received.increment(1);
        let keep_all = source
            .listening
            .as_ref()
            .is_none_or(|l| l.keep == Keep::All);
        // The unmatched fast path: when the rule index already rules out every rule, nothing
        // is built (no envelope, no event) — most syslog lines under `keep: matched`.
        if !keep_all && !rules.may_match(&self.source, &body) {
            self.unmatched.increment(1);
            if self.sampler.due() {
                crate::unmatched::record(&self.source, peer, &body);
            }
            return Ok(Delivered::Unmatched);
        }
        if let Some(peer) = peer {
            envelope.push((crate::domain::PEER_HEADER.into(), peer.to_string()));
        }
        // A copy for the console's sample, taken only when one is due.
        let sample = (!keep_all && self.sampler.due()).then(|| body.clone());
        let mut event = VerifiedEvent::from_transport(&self.source, self.kind, body, envelope);
        if let Some(d) = delivery {
            event = event.redelivered_as(d);
        }
        let done = self.engine.ingest_kept(event, keep_all).await?;
        if done.duplicate {
            source.meter.duplicate.increment(1);
            Ok(Delivered::Duplicate)
        } else if done.stored {
            source.meter.accepted.increment(1);
            Ok(Delivered::Stored)
        } else {
            self.unmatched.increment(1);
            if let Some(body) = sample {
                crate::unmatched::record(&self.source, peer, &body);
            }
            Ok(Delivered::Unmatched)
        }
    }
}

/// Lets a line about each reason from each sender through at most once a minute, so a flood of
/// one kind of bad input neither fills the log nor hides another kind, and two devices set up
/// wrong the same way are each named (they used to share one line a minute per reason, and the
/// one that sent second was never named). The table is bounded ([`LogEvery::SENDERS`] per
/// source): past it, senders not in it share one line a minute per reason (`peer` absent).
#[derive(Default)]
pub struct LogEvery {
    inner: std::sync::Mutex<Quiet>,
}

#[derive(Default)]
struct Quiet {
    /// When each (reason, sender) was last let through (milliseconds since the epoch).
    last: std::collections::HashMap<(&'static str, Option<IpAddr>), i64>,
    /// When lines older than a minute were last cleared out of a full table.
    cleared: i64,
}

/// Whether a line is let through, and about whom.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Due {
    No,
    /// Naming the sender.
    Yes,
    /// The table is full: the line stands for every sender not in it.
    Others,
}

impl LogEvery {
    /// Senders (with a reason each) remembered per source; each entry is some 40 bytes.
    pub const SENDERS: usize = 1024;

    pub fn due(&self, reason: &'static str, peer: Option<IpAddr>) -> Due {
        self.due_at(reason, peer, crate::domain::now_ms())
    }

    fn due_at(&self, reason: &'static str, peer: Option<IpAddr>, now: i64) -> Due {
        let mut q = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (reason, peer);
        if let Some(at) = q.last.get_mut(&key) {
            if now - *at < 60_000 {
                return Due::No;
            }
            *at = now;
            return Due::Yes;
        }
        // A full table is cleared of lines older than a minute at most once a second, so a
        // flood of new senders costs no scan per message.
        if q.last.len() >= Self::SENDERS && now - q.cleared >= 1_000 {
            q.cleared = now;
            q.last.retain(|_, at| now - *at < 60_000);
        }
        if q.last.len() < Self::SENDERS {
            q.last.insert(key, now);
            return Due::Yes;
        }
        // Full of senders named within the minute: the others share one line per reason.
        match q.others(reason, now) {
            true => Due::Others,
            false => Due::No,
        }
    }
}

impl Quiet {
    /// The shared line for senders past the table, once a minute per reason (kept beside the
    /// table's entries, with no sender: at most one per reason, so the bound holds).
    fn others(&mut self, reason: &'static str, now: i64) -> bool {
        match self.last.get_mut(&(reason, None)) {
            Some(at) if now - *at < 60_000 => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                self.last.insert((reason, None), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod log_every_tests {
    use super::{Due, LogEvery};
    use std::net::IpAddr;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn each_reason_once_a_minute_not_once_per_calendar_minute() {
        let quiet = LogEvery::default();
        let t = 59_999; // a millisecond before a minute's end
        assert_eq!(quiet.due_at("truncated", ip(1), t), Due::Yes);
        assert_eq!(quiet.due_at("truncated", ip(1), t + 1), Due::No);
        assert_eq!(
            quiet.due_at("bad_auth", ip(1), t + 1),
            Due::Yes,
            "another reason is not hidden"
        );
        assert_eq!(quiet.due_at("truncated", ip(1), t + 59_999), Due::No);
        assert_eq!(quiet.due_at("truncated", ip(1), t + 60_000), Due::Yes);
    }

    /// Two devices with the wrong community, sending in turn: each is named once a minute
    /// (one line per reason and source let only the first through, and hid the second).
    #[test]
    fn two_senders_with_one_reason_are_each_named() {
        let quiet = LogEvery::default();
        assert_eq!(quiet.due_at("bad_community", ip(1), 0), Due::Yes);
        assert_eq!(quiet.due_at("bad_community", ip(2), 10), Due::Yes);
        for t in (20..60_000).step_by(5_000) {
            assert_eq!(quiet.due_at("bad_community", ip(1), t), Due::No);
            assert_eq!(quiet.due_at("bad_community", ip(2), t + 1), Due::No);
        }
        assert_eq!(quiet.due_at("bad_community", ip(1), 60_000), Due::Yes);
        assert_eq!(quiet.due_at("bad_community", ip(2), 60_010), Due::Yes);
    }

    /// Senders past the table share one line per reason and minute; the table never grows past
    /// its bound, and frees up as its lines age.
    #[test]
    fn the_table_is_bounded_and_senders_past_it_share_a_line() {
        let quiet = LogEvery::default();
        let full = LogEvery::SENDERS as u32;
        for n in 0..full {
            assert_eq!(quiet.due_at("malformed", ip(n), 0), Due::Yes);
        }
        assert_eq!(quiet.due_at("malformed", ip(full), 5), Due::Others);
        assert_eq!(quiet.due_at("malformed", ip(full + 1), 6), Due::No);
        assert_eq!(quiet.due_at("too_long", ip(full + 2), 7), Due::Others);
        let len = quiet.inner.lock().unwrap().last.len();
        assert!(len <= LogEvery::SENDERS + 2, "{len}");
        // A minute on, the old lines are cleared and a new sender is named again.
        assert_eq!(quiet.due_at("malformed", ip(full + 3), 60_001), Due::Yes);
        assert!(quiet.inner.lock().unwrap().last.len() <= 3);
    }
}

#[cfg(test)]
mod reload_tests {
    use super::same_transport;
    use crate::sources::{DEFAULT_IDLE_TIMEOUT, Endpoint, Keep, Listening, Scheme};

    fn at(addr: &str) -> Vec<Endpoint> {
        vec![Endpoint {
            scheme: Scheme::Udp,
            addr: addr.parse().unwrap(),
        }]
    }

    #[test]
    fn only_what_a_transport_captures_at_start_restarts_it() {
        let base = Listening {
            endpoints: at("127.0.0.1:514"),
            broker: None,
            nats: None,
            snmp: None,
            format: crate::body::BodyFormat::Json,
            keep: Keep::Matched,
            max_message: 1024,
            max_connections: 1,
            max_connections_per_client: 1,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls: None,
        };
        let kept = Listening {
            keep: Keep::All,
            ..base.clone()
        };
        assert!(same_transport(&base, &kept), "keep is read per message");
        let moved = Listening {
            endpoints: at("127.0.0.1:515"),
            ..base.clone()
        };
        assert!(!same_transport(&base, &moved));
        let bigger = Listening {
            max_message: 2048,
            ..base.clone()
        };
        assert!(!same_transport(&base, &bigger));
    }
}
