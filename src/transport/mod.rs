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
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::domain::StoreError;
use crate::engine::Engine;
use crate::rules::Fields;
use crate::sources::{Keep, Scheme, SourceKind};
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
            for e in &listening.endpoints {
                let hand = Handoff::new(engine.clone(), &source.name, "snmp_trap");
                let addr =
                    snmp::listen(e, listening.clone(), hand, local.clone(), shutdown.clone())
                        .await?;
                bound.push(Bound {
                    source: source.name.clone(),
                    scheme: Some(e.scheme),
                    addr: format!("{}://{addr}", e.scheme.as_str()),
                });
            }
            continue;
        }
        if source.kind != SourceKind::Syslog {
            continue;
        }
        for e in &listening.endpoints {
            let hand = Handoff::new(engine.clone(), &source.name, "syslog");
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

    /// Counts a message that could not be read well (it is still handed on), or one dropped,
    /// and logs it at most once a minute per source.
    pub fn malformed(&self, reason: &'static str, peer: IpAddr) {
        metrics::counter!(names::MALFORMED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due() {
            tracing::info!(source = %self.source, %peer, reason, "malformed message (logged once a minute)");
        }
    }

    pub fn dropped(&self, reason: &'static str, peer: Option<IpAddr>) -> Delivered {
        metrics::counter!(names::DROPPED, "source" => self.source.to_string(), "reason" => reason)
            .increment(1);
        if self.quiet.due() {
            tracing::info!(source = %self.source, peer = ?peer, reason, "message dropped (logged once a minute)");
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

/// Lets a line through at most once a minute.
#[derive(Default)]
pub struct LogEvery {
    last: AtomicU64,
}

impl LogEvery {
    pub fn due(&self) -> bool {
        let now = crate::domain::now_ms() as u64 / 60_000 + 1;
        self.last.swap(now, Ordering::Relaxed) != now
    }
}
