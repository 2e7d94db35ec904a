//! Verification of incoming requests, per sender kind (docs/sources.md lists the kinds).
//!
//! Everything here works on the raw body bytes and the headers, before any JSON parsing, and
//! compares in constant time. The only way to obtain a [`VerifiedEvent`] — the one type the
//! journal accepts — is [`Verifier::verify`] (or [`VerifiedEvent::internal`] for events rules
//! emit themselves).

pub mod basic;
pub mod bearer;
pub mod generic_hmac;
pub mod github;
pub mod gitlab;
pub mod ipfabric;
pub mod mac;
pub mod netbox;
mod pyjson;
pub mod snmp_trap;
pub mod standard;
pub mod usm;
pub mod webhook;

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use serde_json::Value;

use crate::body::BodyFormat;
use crate::domain::EventDoc;
use crate::secrets::Secret;
pub use generic_hmac::Encoding;
pub use mac::Algorithm;
pub use webhook::sign_like;

/// The verification scheme of one source, with its secrets (several while rotating). Each
/// webhook kind lives in its own file (its settings, check, signature and default window);
/// this enum only dispatches to them.
#[derive(Debug, Clone)]
pub enum Verifier {
    IpFabric(ipfabric::IpFabric),
    NetBox(netbox::NetBox),
    /// Standard Webhooks v1, and its Infrahub variant.
    StandardWebhooks(standard::StandardWebhooks),
    GitHub(github::GitHub),
    GitLab(gitlab::GitLab),
    Basic(basic::Basic),
    Bearer(bearer::Bearer),
    Hmac(generic_hmac::GenericHmac),
    None,
    Internal,
}

/// What a kind's check found besides "valid": the sender's delivery id, and the body when the
/// check had to parse it (Infrahub).
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) sender_id: Option<String>,
    pub(crate) parsed: Option<Value>,
}

impl Checked {
    fn sender(id: &str) -> Checked {
        Checked {
            sender_id: Some(id.to_string()),
            parsed: None,
        }
    }
}

/// Why a request was refused. Messages never contain a secret or an expected signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("the signature or credentials do not match")]
    BadSignature,
    #[error("header `{0}` is malformed")]
    Malformed(&'static str),
    #[error("webhook-timestamp is outside the allowed tolerance")]
    StaleTimestamp,
    #[error(transparent)]
    Body(#[from] crate::body::BodyError),
    #[error("internal sources are not served over HTTP")]
    NotServed,
}

/// How an event is recognised when its sender delivers it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub key: String,
    /// How long a repeat of `key` is a duplicate; `None` disables de-duplication.
    pub window: Option<Duration>,
}

/// An event whose origin has been proven (or, for `none` sources, explicitly not required).
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    source: String,
    kind: &'static str,
    delivery: Option<Delivery>,
    doc: EventDoc,
    /// The body exactly as received (stored as is), when it came over HTTP.
    raw: Option<bytes::Bytes>,
    headers: Vec<(String, String)>,
    received_at: SystemTime,
    depth: u32,
    /// The event that emitted (`post_event`) or replays this one.
    parent: Option<String>,
}

pub use crate::domain::PEER_HEADER;

impl VerifiedEvent {
    /// An event emitted by a `post_event` action into an `internal` source, `depth` links down a
    /// chain of such events.
    ///
    /// `delivery` is the emitting run's id: a re-run of that action finds the child it already
    /// made instead of making a second one.
    pub fn internal(
        source: &str,
        body: Value,
        depth: u32,
        parent: &str,
        delivery: Delivery,
    ) -> VerifiedEvent {
        VerifiedEvent {
            source: source.to_string(),
            kind: "internal",
            parent: Some(parent.to_string()),
            delivery: Some(delivery),
            doc: EventDoc::new(body),
            raw: None,
            headers: Vec::new(),
            received_at: SystemTime::now(),
            depth,
        }
    }
    /// An event a listening transport decoded (`kind`: `syslog`, …). Its origin is what that
    /// transport checked (the source's `allow_from`); it has no delivery id, so two equal
    /// messages are two events, unless the transport gives one ([`VerifiedEvent::redelivered_as`]).
    /// `headers` are its envelope (`x-rulehook-peer`, …).
    pub fn from_transport(
        source: &str,
        kind: &'static str,
        body: Value,
        headers: Vec<(String, String)>,
    ) -> VerifiedEvent {
        VerifiedEvent {
            source: source.to_string(),
            kind,
            delivery: None,
            doc: EventDoc::with_headers(body, &headers),
            raw: None,
            headers,
            received_at: SystemTime::now(),
            depth: 0,
            parent: None,
        }
    }
    /// The same event with the delivery id its sender repeats when it sends it again (an SNMP
    /// inform whose Response was lost): a repeat within the window is a duplicate.
    pub fn redelivered_as(mut self, delivery: Delivery) -> VerifiedEvent {
        self.delivery = Some(delivery);
        self
    }
    /// A stored event sent through the rules again (`POST /api/events/{id}/replay`): a new
    /// event, not de-duplicated, marked with the id it replays.
    pub fn replay(
        source: &str,
        kind: &str,
        body: Value,
        headers: &[(String, String)],
        of: &str,
    ) -> VerifiedEvent {
        let kind = KINDS
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("replay");
        let mut headers = headers.to_vec();
        headers.retain(|(k, _)| k != "x-rulehook-replay-of");
        headers.push(("x-rulehook-replay-of".into(), of.to_string()));
        VerifiedEvent {
            source: source.to_string(),
            kind,
            delivery: None,
            doc: EventDoc::with_headers(body, &headers),
            raw: None,
            headers,
            received_at: SystemTime::now(),
            depth: 0,
            parent: Some(of.to_string()),
        }
    }
    /// Records the address the request came from as header `x-rulehook-peer` (replacing any
    /// the sender set, and any envelope header it tried to set), so the history can show it and
    /// conditions read it as `meta("peer")`.
    pub fn with_peer(mut self, peer: std::net::IpAddr) -> VerifiedEvent {
        self.headers.retain(|(k, _)| !is_envelope_header(k));
        let peer = ip_text(peer);
        self.doc.set_peer(&peer);
        self.headers.push((PEER_HEADER.into(), peer));
        self
    }

    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn kind(&self) -> &'static str {
        self.kind
    }
    pub fn delivery(&self) -> Option<&Delivery> {
        self.delivery.as_ref()
    }
    pub fn body(&self) -> &Value {
        self.doc.body()
    }
    /// The body in the shape conditions evaluate on.
    pub fn doc(&self) -> &EventDoc {
        &self.doc
    }
    /// The body as received, when it is available and valid UTF-8.
    pub fn raw_text(&self) -> Option<&str> {
        self.raw
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn into_doc(self) -> EventDoc {
        self.doc
    }
    /// Request headers, lower-case, with credential headers removed.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// The event as accepted: given its id, its body text ready to store.
    pub fn accept(self) -> crate::domain::Event {
        let body_text = match self.raw_text() {
            Some(raw) => raw.to_string(),
            None => serde_json::to_string(self.doc.body()).unwrap_or_else(|_| "null".into()),
        };
        crate::domain::Event {
            id: crate::domain::new_event_id(),
            source: self.source,
            kind: self.kind.to_string(),
            received_at: crate::domain::ms(self.received_at),
            headers: self.headers,
            doc: self.doc,
            body_text,
            depth: self.depth,
            delivery: self.delivery.map(|d| d.key),
            parent: self.parent,
        }
    }
}

/// Every webhook source kind (and `internal`), as written in rulebooks.
pub const KINDS: &[&str] = &{
    let mut names = [""; webhook::WebhookKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = webhook::WebhookKind::ALL[i].name();
        i += 1;
    }
    names
};

/// Headers that carry credentials or signatures: never stored, never shown to rules.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-ipf-signature",
    "x-hook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-gitlab-token",
    "webhook-signature",
    "cookie",
];

pub(crate) fn header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a str, VerifyError> {
    let v = headers.get(name).ok_or(VerifyError::MissingHeader(name))?;
    v.to_str().map_err(|_| VerifyError::Malformed(name))
}

pub(crate) fn hex_sig(value: &str, name: &'static str) -> Result<Vec<u8>, VerifyError> {
    mac::unhex(value.trim()).ok_or(VerifyError::Malformed(name))
}

pub(crate) fn any_secret(secrets: &[Secret], mut check: impl FnMut(&[u8]) -> bool) -> bool {
    // Every secret is tried (no early exit), so timing does not tell which one matched.
    secrets
        .iter()
        .fold(false, |ok, s| check(s.expose().as_bytes()) | ok)
}

const DAY: Duration = Duration::from_secs(86_400);
/// How long a repeat of a delivery id the sender gave is a duplicate, by default (a week).
pub const SENDER_ID_WINDOW: Duration = Duration::from_secs(7 * DAY.as_secs());
/// How long a repeat of a body is a duplicate for kinds whose senders give no delivery id.
const BODY_HASH_WINDOW: Duration = Duration::from_secs(15 * 60);

impl Verifier {
    /// The kind name as written in rulebooks.
    pub fn kind(&self) -> &'static str {
        match self {
            Verifier::IpFabric(_) => "ipfabric",
            Verifier::NetBox(_) => "netbox",
            Verifier::StandardWebhooks(s) => s.kind(),
            Verifier::GitHub(_) => "github",
            Verifier::GitLab(_) => "gitlab",
            Verifier::Basic(_) => "basic",
            Verifier::Bearer(_) => "bearer",
            Verifier::Hmac(_) => "hmac",
            Verifier::None => "none",
            Verifier::Internal => "internal",
        }
    }

    /// The default de-duplication window of this kind, for a delivery id that came from the
    /// sender (`true`: a week) or from the body hash (`false`: as the kind says).
    fn default_window(&self, from_sender: bool) -> Option<Duration> {
        if from_sender {
            return Some(SENDER_ID_WINDOW);
        }
        match self {
            Verifier::IpFabric(_) => ipfabric::IpFabric::BODY_HASH_WINDOW,
            Verifier::NetBox(_) => netbox::NetBox::BODY_HASH_WINDOW,
            Verifier::StandardWebhooks(_) => standard::StandardWebhooks::BODY_HASH_WINDOW,
            Verifier::GitHub(_) => github::GitHub::BODY_HASH_WINDOW,
            Verifier::GitLab(_) => gitlab::GitLab::BODY_HASH_WINDOW,
            Verifier::Basic(_) => basic::Basic::BODY_HASH_WINDOW,
            Verifier::Bearer(_) => bearer::Bearer::BODY_HASH_WINDOW,
            Verifier::Hmac(_) => generic_hmac::GenericHmac::BODY_HASH_WINDOW,
            Verifier::None | Verifier::Internal => None,
        }
    }

    /// Checks the request's body and headers; on success decodes the body as its `format` says
    /// and returns the verified event. `peer`, when given, is put in the envelope as it is
    /// built (what the HTTP path does for every request; the same as a later
    /// [`VerifiedEvent::with_peer`], without building the envelope twice).
    pub fn verify(
        &self,
        r: Request<'_>,
        peer: Option<std::net::IpAddr>,
    ) -> Result<VerifiedEvent, VerifyError> {
        let Request {
            source,
            headers,
            body,
            format,
            dedup_window,
            now,
        } = r;
        let checked = match self {
            Verifier::IpFabric(k) => k.check(headers, body)?,
            Verifier::NetBox(k) => k.check(headers, body)?,
            Verifier::StandardWebhooks(k) => k.check(headers, body, now)?,
            Verifier::GitHub(k) => k.check(headers, body)?,
            Verifier::GitLab(k) => k.check(headers)?,
            Verifier::Basic(k) => k.check(headers)?,
            Verifier::Bearer(k) => k.check(headers)?,
            Verifier::Hmac(k) => k.check(headers, body)?,
            Verifier::None => Checked::default(),
            Verifier::Internal => return Err(VerifyError::NotServed),
        };
        let (body_value, raw_is_body) = match checked.parsed {
            Some(v) => (v, true),
            None => format.decode(
                headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                body,
            )?,
        };
        let mut headers = safe_headers(headers, self.credential_header(), peer.is_some());
        if let Some(peer) = peer {
            headers.push((PEER_HEADER.into(), ip_text(peer)));
        }
        let from_sender = checked.sender_id.is_some();
        let key = checked.sender_id.unwrap_or_else(|| mac::body_hash(body));
        let window = dedup_window
            .map(Some)
            .unwrap_or_else(|| self.default_window(from_sender))
            .filter(|w| !w.is_zero());
        Ok(VerifiedEvent {
            source: source.to_string(),
            kind: self.kind(),
            delivery: Some(Delivery { key, window }),
            doc: EventDoc::with_headers(body_value, &headers),
            // A body decoded from text or a form is stored as its event (what rules saw).
            raw: raw_is_body.then(|| body.clone()),
            headers,
            received_at: now,
            depth: 0,
            parent: None,
        })
    }

    /// The header carrying this source's credential when it is configured, not fixed.
    fn credential_header(&self) -> Option<&str> {
        match self {
            Verifier::Hmac(h) => Some(h.header.as_str()),
            _ => None,
        }
    }
}

/// `Ok` when a check passed, else the one refusal that does not say why.
pub(crate) fn check(ok: bool) -> Result<(), VerifyError> {
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

pub(crate) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// The request headers to keep: not the credential headers of any kind, nor `extra` (a generic
/// `hmac` source's configured signature header), nor with `no_envelope` the `x-rulehook-…`
/// headers the envelope is made of (a request cannot set them: see [`VerifiedEvent::with_peer`]).
fn safe_headers(
    headers: &HeaderMap,
    extra: Option<&str>,
    no_envelope: bool,
) -> Vec<(String, String)> {
    let mut kept = Vec::with_capacity(headers.len() + 1);
    for (n, v) in headers {
        let n = n.as_str();
        if CREDENTIAL_HEADERS.contains(&n)
            || extra.is_some_and(|x| n.eq_ignore_ascii_case(x))
            || (no_envelope && is_envelope_header(n))
        {
            continue;
        }
        // A value with bytes that are not UTF-8 (HTTP allows them) is kept with each such
        // byte shown as U+FFFD, not left out: the history shows that the header came.
        let v = match v.to_str() {
            Ok(v) => v.to_string(),
            Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        };
        kept.push((n.to_string(), v));
    }
    kept
}

/// The parts of a request [`Verifier::verify`] reads.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The source's name, as the rulebook gives it.
    pub source: &'a str,
    pub headers: &'a HeaderMap,
    /// The raw body, as received.
    pub body: &'a bytes::Bytes,
    /// How the body is decoded after the check.
    pub format: BodyFormat,
    /// Overrides the kind's default de-duplication window.
    pub dedup_window: Option<Duration>,
    pub now: SystemTime,
}

/// A stored header that is the envelope (`x-rulehook-peer`, `-topic`, `-subject`): set by the
/// transport, never by the request.
fn is_envelope_header(name: &str) -> bool {
    use crate::domain::{SUBJECT_HEADER, TOPIC_HEADER};
    name == PEER_HEADER || name == TOPIC_HEADER || name == SUBJECT_HEADER
}

/// An address as `IpAddr`'s `Display` writes it; IPv4 without the formatting machinery (~1.3k
/// instructions per request through `to_string`).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_header_that_is_not_utf8_is_kept_with_replacement_characters() {
        let mut headers = HeaderMap::new();
        headers.insert("x-site", HeaderValue::from_bytes(b"caf\xe9 1").unwrap());
        headers.insert("x-plain", HeaderValue::from_static("ok"));
        let kept = safe_headers(&headers, None, false);
        assert!(
            kept.contains(&("x-plain".to_string(), "ok".to_string())),
            "{kept:?}"
        );
        assert!(
            kept.contains(&("x-site".to_string(), "caf\u{fffd} 1".to_string())),
            "{kept:?}"
        );
    }

    #[test]
    fn ip_text_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "192.168.1.255",
            "255.255.255.255",
            "::1",
            "2001:db8::42",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn verify_with_a_peer_is_verify_then_with_peer() {
        let body = bytes::Bytes::from_static(b"{\"type\":\"snapshot\",\"a\":[1,2]}");
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("x-rulehook-peer", "203.0.113.9"),
            ("x-rulehook-topic", "forged"),
            ("user-agent", "ipf"),
            ("x-rulehook-subject", "forged"),
        ] {
            headers.insert(k, HeaderValue::from_static(v));
        }
        headers.extend(
            ipfabric::IpFabric::sign("s3cret", &body)
                .into_iter()
                .map(|(k, v)| {
                    (
                        axum::http::HeaderName::try_from(k).unwrap(),
                        HeaderValue::try_from(v).unwrap(),
                    )
                }),
        );
        let v = Verifier::IpFabric(ipfabric::IpFabric {
            secrets: vec![Secret::new("s3cret".into())],
        });
        let now = SystemTime::now();
        let peer: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let r = Request {
            source: "s",
            headers: &headers,
            body: &body,
            format: BodyFormat::Json,
            dedup_window: None,
            now,
        };
        let a = v.verify(r, None).unwrap().with_peer(peer);
        let b = v.verify(r, Some(peer)).unwrap();
        assert_eq!(a.headers(), b.headers());
        assert_eq!(a.doc(), b.doc());
        assert_eq!(
            serde_json::to_string(a.doc().meta()).unwrap(),
            serde_json::to_string(b.doc().meta()).unwrap()
        );
        assert_eq!(a.delivery(), b.delivery());
        assert_eq!(b.doc().meta()["peer"], "10.1.2.3");
        assert!(!b.headers().iter().any(|(k, _)| k == "x-rulehook-topic"));
    }
}
