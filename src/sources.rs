//! A source: where one sender's webhooks come in, and how they are checked at the door.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use ipnet::IpNet;

use crate::body::BodyFormat;
use crate::verify::Verifier;

/// Which transport a source's events come by, as its `kind:` says. Conditions may read only
/// the envelope names its kind offers (`meta("…")`); `check` refuses others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An HTTP POST (every verification kind: `github`, `hmac`, `none` …).
    Webhook,
    /// Events rules emit (`post_event`).
    Internal,
    Syslog,
    SnmpTrap,
    Mqtt,
    Nats,
}

impl SourceKind {
    /// The kind a `kind:` value names (every other value is a webhook verification kind).
    pub fn of(kind: &str) -> SourceKind {
        match kind {
            "internal" => SourceKind::Internal,
            "syslog" => SourceKind::Syslog,
            "snmp_trap" => SourceKind::SnmpTrap,
            "mqtt" => SourceKind::Mqtt,
            "nats" => SourceKind::Nats,
            _ => SourceKind::Webhook,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Webhook => "webhook",
            SourceKind::Internal => "internal",
            SourceKind::Syslog => "syslog",
            SourceKind::SnmpTrap => "snmp_trap",
            SourceKind::Mqtt => "mqtt",
            SourceKind::Nats => "nats",
        }
    }

    /// The names `meta("…")` can read on its events (`headers.<name>`: any header).
    pub fn meta_names(self) -> &'static [&'static str] {
        match self {
            SourceKind::Webhook => &["headers.<name>", "peer"],
            SourceKind::Internal => &[],
            SourceKind::Syslog | SourceKind::SnmpTrap => &["peer"],
            SourceKind::Mqtt => &["topic"],
            SourceKind::Nats => &["subject"],
        }
    }

    /// Whether it listens on its own sockets (not an HTTP path).
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            SourceKind::Syslog | SourceKind::SnmpTrap | SourceKind::Mqtt | SourceKind::Nats
        )
    }

    /// Whether its events carry envelope field `name`.
    pub fn offers(self, name: &str) -> bool {
        self.meta_names()
            .iter()
            .any(|n| match n.strip_suffix("<name>") {
                Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
                None => *n == name,
            })
    }
}

/// What a source that is not served over HTTP listens on, and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub endpoints: Vec<Endpoint>,
    /// A broker it subscribes to instead (`kind: mqtt`).
    pub broker: Option<Broker>,
    /// A NATS subscription instead (`kind: nats`).
    pub nats: Option<NatsSubscription>,
    /// Who may send traps and informs (`kind: snmp_trap`).
    pub snmp: Option<Arc<crate::verify::snmp_trap::SnmpTrap>>,
    /// How a broker message's payload is decoded (`format:`; json by default).
    pub format: BodyFormat,
    pub keep: Keep,
    /// A message (a frame) longer than this is cut to it and flagged `truncated`.
    pub max_message: usize,
    /// Stream connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Of them, how many one sender address may hold ([`default_per_client`] unless set).
    pub max_connections_per_client: usize,
    /// A stream connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// The certificate `tls://` endpoints serve (RFC 5425).
    pub tls: Option<ListenTls>,
}

/// A `tls://` syslog listener's files: its certificate chain and key, and with `client_ca`
/// the CAs whose client certificates it requires (without it, clients are not asked for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub client_ca: Option<std::path::PathBuf>,
}

/// An MQTT broker subscription: a persistent session (`client_id`) at QoS 1, so what is
/// published while rulehook is down is delivered when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub topics: Vec<String>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<crate::secrets::Secret>,
    /// `mqtts://`: TLS to the broker, verified against `ca` (a PEM file) or the system's roots.
    pub tls: Option<BrokerTls>,
    /// `$share/<group>/…`: the shared-subscription group the topics are subscribed in, so
    /// several ingest nodes split the messages instead of each getting every one.
    pub share_group: Option<String>,
}

/// TLS to an MQTT broker (`mqtts://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    pub ca: Option<std::path::PathBuf>,
}

/// A NATS subscription: core subjects in the queue group `rulehook-<source>` (at most once:
/// what arrives while rulehook is down is not kept), or with `stream`/`durable` a JetStream
/// durable pull consumer acknowledged after each event is stored (at least once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSubscription {
    pub url: String,
    pub subjects: Vec<String>,
    pub stream: Option<String>,
    pub durable: Option<String>,
}

/// One `listen:` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub addr: std::net::SocketAddr,
}

impl Endpoint {
    /// Whether the two cannot both be bound: the same protocol (TCP for tcp, tls and relp)
    /// and port, and the same address or a wildcard covering the other (on Linux `[::]` also
    /// takes IPv4). Port 0 (any free port) never clashes.
    pub fn clashes(&self, other: &Endpoint) -> bool {
        let tcp = |e: &Endpoint| e.scheme != Scheme::Udp;
        if tcp(self) != tcp(other) || self.addr.port() != other.addr.port() || self.addr.port() == 0
        {
            return false;
        }
        let (x, y) = (self.addr.ip(), other.addr.ip());
        let covers = |w: IpAddr, o: IpAddr| w.is_unspecified() && (w.is_ipv6() || o.is_ipv4());
        x == y || covers(x, y) || covers(y, x)
    }
}

/// How messages arrive at an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Udp,
    Tcp,
    Tls,
    Relp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Udp => "udp",
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Relp => "relp",
        }
    }
}

/// `keep:`: whether a message that matched no rule (and moved no correlation) is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Stored only when it matched: the others are counted per source.
    Matched,
    /// Stored as a webhook event is.
    All,
}

pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// One sender address's default share of a stream listener's `max_connections`: an eighth (as
/// the HTTP listener's), but never fewer than 8 (or the whole cap when it is smaller), so a
/// relay — many devices over a few connections, and a reconnect or two while its dead ones
/// wait out `idle_timeout` — still gets in.
pub fn default_per_client(max_connections: usize) -> usize {
    (max_connections / 8).max(8).min(max_connections).max(1)
}

/// One compiled `sources:` entry.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// The transport its events come by.
    pub kind: SourceKind,
    /// URL path it is served on (`/hooks/<name>` unless set); internal sources have none.
    pub path: Option<String>,
    pub verifier: Verifier,
    /// What its body is (`format:`): decoded after verification.
    pub format: BodyFormat,
    pub max_body: usize,
    pub allow_from: Vec<IpNet>,
    /// Overrides the kind's default de-duplication window; zero disables it.
    pub dedup_window: Option<Duration>,
    /// `rate_limit`: requests beyond it are answered 429.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// This source's counters, registered once (label lookups stay off the request path).
    pub meter: SourceMeter,
    /// The rulebook file that declared it.
    pub rulebook: String,
    /// For sources that are not served over HTTP: where they listen.
    pub listening: Option<Arc<Listening>>,
}

impl Source {
    /// The kind as written in the rulebook: the verification kind of a webhook (`github`,
    /// `hmac` …), else the transport (`syslog`, `snmp_trap`, `mqtt`, `nats`, `internal`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Webhook => self.verifier.kind(),
            other => other.name(),
        }
    }

    /// Where its events come from, as people write it: the listen addresses
    /// (`udp://0.0.0.0:514`), the broker and its topics, or the NATS server and its subjects.
    pub fn listens_on(&self) -> Vec<String> {
        let Some(l) = &self.listening else {
            return Vec::new();
        };
        let mut out: Vec<String> = l
            .endpoints
            .iter()
            .map(|e| format!("{}://{}", e.scheme.as_str(), e.addr))
            .collect();
        if let Some(b) = &l.broker {
            let scheme = if b.tls.is_some() { "mqtts" } else { "mqtt" };
            out.extend(
                b.topics
                    .iter()
                    .map(|t| format!("{scheme}://{}:{} {t}", b.host, b.port)),
            );
        }
        if let Some(n) = &l.nats {
            out.extend(n.subjects.iter().map(|s| format!("{} {s}", n.url)));
        }
        out
    }

    /// The source as the API and the console list it.
    pub fn summary(&self) -> serde_json::Value {
        let mut one = serde_json::json!({
            "name": self.name, "kind": self.kind_name(), "path": self.path, "rulebook": self.rulebook,
        });
        if self.listening.is_some() {
            one["listen"] = serde_json::json!(self.listens_on());
        }
        one
    }
}

/// Per-source metric handles.
#[derive(Debug, Clone)]
pub struct SourceMeter {
    pub received: metrics::Counter,
    pub accepted: metrics::Counter,
    pub duplicate: metrics::Counter,
}

impl SourceMeter {
    pub fn new(source: &str) -> SourceMeter {
        use crate::telemetry::names;
        let s = source.to_string();
        SourceMeter {
            received: metrics::counter!(names::RECEIVED, "source" => s.clone()),
            accepted: metrics::counter!(names::ACCEPTED, "source" => s.clone(), "duplicate" => "false"),
            duplicate: metrics::counter!(names::ACCEPTED, "source" => s, "duplicate" => "true"),
        }
    }
}

/// A per-source token bucket (`rate_limit: {per_second, burst}`).
pub struct RateLimit {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimit")
    }
}

impl RateLimit {
    pub fn new(per_second: f64, burst: Option<u32>) -> Result<RateLimit, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err("per_second must be a positive number".into());
        }
        let period = Duration::try_from_secs_f64(1.0 / per_second)
            .ok()
            .filter(|p| *p <= crate::units::MAX_DURATION)
            .ok_or("per_second is too small: at least one request per 100 years")?;
        let burst = burst.unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
        let burst = NonZeroU32::new(burst).ok_or("burst must be at least 1")?;
        let quota = Quota::with_period(period)
            .ok_or("per_second is too large")?
            .allow_burst(burst);
        Ok(RateLimit {
            limiter: RateLimiter::direct(quota),
            clock: DefaultClock::default(),
        })
    }

    /// `Ok` when a request may pass now, else how long until one may.
    pub fn check(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

pub const DEFAULT_MAX_BODY: usize = 1 << 20;

impl Source {
    /// Whether a client at `ip` may post to this source.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.allow_from.is_empty() || self.allow_from.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_or_odd_rate_is_an_error_not_a_panic() {
        assert!(
            RateLimit::new(1e-300, None)
                .unwrap_err()
                .contains("too small")
        );
        assert!(RateLimit::new(0.0, None).is_err());
        assert!(RateLimit::new(f64::NAN, None).is_err());
        assert!(RateLimit::new(1e300, Some(1)).is_err());
        assert!(RateLimit::new(0.5, Some(2)).is_ok());
    }

    #[test]
    fn allow_from_cidrs_and_mapped_addresses() {
        let s = Source {
            name: "x".into(),
            kind: SourceKind::Webhook,
            path: None,
            verifier: Verifier::None,
            format: BodyFormat::Json,
            max_body: 1,
            allow_from: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            dedup_window: None,
            rate_limit: None,
            meter: SourceMeter::new("x"),
            rulebook: "r".into(),
            listening: None,
        };
        assert!(s.allows("10.1.2.3".parse().unwrap()));
        assert!(s.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(s.allows("::1".parse().unwrap()));
        assert!(!s.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn each_kind_offers_its_envelope_names() {
        assert!(SourceKind::of("github").offers("headers.x-github-event"));
        assert!(SourceKind::of("github").offers("peer"));
        assert!(!SourceKind::of("github").offers("headers."));
        assert!(!SourceKind::of("github").offers("topic"));
        assert!(SourceKind::of("mqtt").offers("topic"));
        assert!(!SourceKind::of("mqtt").offers("headers.x"));
        assert!(SourceKind::of("nats").offers("subject"));
        assert!(SourceKind::of("syslog").offers("peer"));
        assert!(!SourceKind::of("internal").offers("peer"));
    }
}
