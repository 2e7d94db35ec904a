//! Transports other than HTTP: each listens on its own sockets, turns bytes into a decoded
//! event and hands it to the same [`Engine::ingest`](crate::engine::Engine) as an HTTP POST.
//! The engine never learns which transport an event came by; the transport records its
//! envelope (`x-rulehook-peer`, …) as headers, which conditions read with `meta("…")`.
//!
//! HTTP itself is served by `server` (axum); `syslog` (UDP, TCP) lives here. A listening
//! source is looked up by name in the current rule set for every message, so a reload changes
//! what it keeps and which rules see it; its `listen:` addresses are bound at start.

pub mod mqtt;
pub mod nats;
pub mod snmp;
pub mod syslog;

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::StoreError;
use crate::engine::Engine;
use crate::sources::{Keep, Scheme, SourceKind};
use crate::telemetry::names;
use crate::verify::VerifiedEvent;

/// One bound listener, for the banner.
#[derive(Debug, Clone)]
pub struct Bound {
    pub source: String,
    pub scheme: Option<Scheme>,
    /// `udp://127.0.0.1:5514`, `mqtt://127.0.0.1:1883` …
    pub addr: String,
}

/// Binds every endpoint of every listening source and serves them until `shutdown`.
///
/// `node` is this node's id when the store is shared by several nodes: broker sessions then
/// get client ids of their own and MQTT topics are shared subscriptions (NATS core subjects are
/// always subscribed in a queue group).
pub async fn start(
    engine: &Arc<Engine>,
    shutdown: &CancellationToken,
    data: &std::path::Path,
    node: Option<&str>,
) -> std::io::Result<Vec<Bound>> {
    let rules = engine.rules();
    let mut bound = Vec::new();
    // A worker node takes no events: it neither listens nor subscribes (a RELP or MQTT
    // message acknowledged here would be lost).
    if !engine.role().accepts_events() {
        return Ok(bound);
    }
    for source in &rules.sources {
        let Some(listening) = &source.listening else {
            continue;
        };
        if let Some(broker) = &listening.broker {
            let hand = Handoff::new(engine.clone(), &source.name, source.kind.name());
            mqtt::start(broker, listening.clone(), hand, shutdown.clone(), node)?;
            bound.push(Bound {
                source: source.name.clone(),
                scheme: None,
                addr: mqtt::target(broker),
            });
            continue;
        }
        if let Some(sub) = &listening.nats {
            let hand = Handoff::new(engine.clone(), &source.name, source.kind.name());
            nats::start(sub, listening.clone(), hand, shutdown.clone());
            bound.push(Bound {
                source: source.name.clone(),
                scheme: None,
                addr: sub.url.clone(),
            });
            continue;
        }
        if let Some(snmp) = &listening.snmp {
            let local = Arc::new(snmp::engine::LocalEngine::open(
                data,
                &source.name,
                snmp.engine_id.as_deref(),
            )?);
            let hand = Handoff::new(engine.clone(), &source.name, "snmp_trap");
            for e in &listening.endpoints {
                let hand = hand.clone();
                let addr =
                    snmp::listen(e, listening.clone(), hand, local.clone(), shutdown.clone())
                        .await?;
                let addr = format!("{}://{addr}", e.scheme.as_str());
                // As for syslog: a listener is up once bound, until the service stops.
                crate::connections::set(
                    &source.name,
                    "snmp_trap",
                    &addr,
                    crate::connections::State::Connected,
                    None,
                );
                bound.push(Bound {
                    source: source.name.clone(),
                    scheme: Some(e.scheme),
                    addr,
                });
            }
            continue;
        }
        if source.kind != SourceKind::Syslog {
            continue;
        }
        let hand = Handoff::new(engine.clone(), &source.name, "syslog");
        for e in &listening.endpoints {
            let hand = hand.clone();
            let addr = syslog::listen(e, listening.clone(), hand, shutdown.clone()).await?;
            let addr = format!("{}://{addr}", e.scheme.as_str());
            // A listener is up once bound; it stays up until the service stops.
            crate::connections::set(
                &source.name,
                "syslog",
                &addr,
                crate::connections::State::Connected,
                None,
            );
            bound.push(Bound {
                source: source.name.clone(),
                scheme: Some(e.scheme),
                addr,
            });
        }
    }
    Ok(bound)
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
    /// most once a minute per source and reason.
    pub fn malformed(&self, reason: &'static str, peer: IpAddr) {
        metrics::counter!(names::MALFORMED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due(reason) {
            tracing::info!(source = %self.source, %peer, reason, "malformed message (each reason logged at most once a minute)");
        }
    }

    /// Counts a broker message whose payload could not be decoded (`at`: its topic or
    /// subject), logged as [`Handoff::malformed`] is.
    pub fn undecodable(&self, at: &str, error: &dyn std::fmt::Display) {
        let reason = "undecodable";
        metrics::counter!(names::MALFORMED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due(reason) {
            tracing::info!(source = %self.source, at, %error, reason, "malformed message (each reason logged at most once a minute)");
        }
    }

    /// Counts a message not taken, and logs it at most once a minute per source and reason.
    pub fn dropped(&self, reason: &'static str, peer: Option<IpAddr>) -> Delivered {
        metrics::counter!(names::DROPPED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due(reason) {
            match peer {
                Some(peer) => {
                    tracing::info!(source = %self.source, %peer, reason, "message dropped (each reason logged at most once a minute)")
                }
                None => {
                    tracing::info!(source = %self.source, reason, "message dropped (each reason logged at most once a minute)")
                }
            }
        }
        Delivered::Dropped(reason)
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

    /// [`Handoff::deliver`] for a message with no peer of its own (from a broker).
    pub async fn deliver_from(
        &self,
        body: Value,
        peer: Option<IpAddr>,
        mut envelope: Vec<(String, String)>,
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
        let event = VerifiedEvent::from_transport(&self.source, self.kind, body, envelope);
        let done = self.engine.ingest_kept(event, keep_all).await?;
        if done.stored {
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

/// Lets a line about each reason through at most once a minute, so a flood of one kind of bad
/// input neither fills the log nor hides another kind.
#[derive(Default)]
pub struct LogEvery {
    /// When each reason was last let through (milliseconds since the epoch).
    last: std::sync::Mutex<std::collections::HashMap<&'static str, i64>>,
}

impl LogEvery {
    pub fn due(&self, reason: &'static str) -> bool {
        self.due_at(reason, crate::domain::now_ms())
    }

    fn due_at(&self, reason: &'static str, now: i64) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(reason) {
            Some(&at) if now - at < 60_000 => false,
            _ => {
                last.insert(reason, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod log_every_tests {
    use super::LogEvery;

    #[test]
    fn each_reason_once_a_minute_not_once_per_calendar_minute() {
        let quiet = LogEvery::default();
        let t = 59_999; // a millisecond before a minute's end
        assert!(quiet.due_at("truncated", t));
        assert!(!quiet.due_at("truncated", t + 1));
        assert!(
            quiet.due_at("bad_auth", t + 1),
            "another reason is not hidden"
        );
        assert!(!quiet.due_at("truncated", t + 59_999));
        assert!(quiet.due_at("truncated", t + 60_000));
    }
}
