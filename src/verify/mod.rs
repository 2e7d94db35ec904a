//! Verification of incoming requests, per sender kind (docs/sources.md lists the kinds).
//!
//! Everything here works on the raw body bytes and the headers, before any JSON parsing, and
//! compares in constant time. The only way to obtain a [`VerifiedEvent`] — the one type the
//! journal accepts — is [`Verifier::verify`] (or [`VerifiedEvent::internal`] for events rules
//! emit themselves).

pub mod mac;
mod pyjson;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::body::BodyFormat;
use crate::domain::EventDoc;
use crate::secrets::Secret;
pub use mac::Algorithm;

/// How a generic `hmac` source encodes its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// The verification scheme of one source, with its secrets (several while rotating).
#[derive(Debug, Clone)]
pub enum Verifier {
    IpFabric {
        secrets: Vec<Secret>,
    },
    NetBox {
        secrets: Vec<Secret>,
    },
    /// Standard Webhooks v1; `raw_key` is the Infrahub variant (key = secret bytes, and the
    /// compact re-encoding of the body is tried when the raw body does not verify).
    StandardWebhooks {
        keys: Vec<Secret>,
        tolerance: Duration,
        infrahub: bool,
    },
    GitHub {
        secrets: Vec<Secret>,
    },
    GitLab {
        secrets: Vec<Secret>,
    },
    Basic {
        username: Secret,
        passwords: Vec<Secret>,
    },
    Bearer {
        secrets: Vec<Secret>,
    },
    Hmac {
        header: String,
        algorithm: Algorithm,
        encoding: Encoding,
        prefix: String,
        id_header: Option<String>,
        secrets: Vec<Secret>,
    },
    None,
    Internal,
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
    /// messages are two events. `headers` are its envelope (`x-rulehook-peer`, …).
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
        use crate::domain::{SUBJECT_HEADER, TOPIC_HEADER};
        self.headers
            .retain(|(k, _)| k != PEER_HEADER && k != TOPIC_HEADER && k != SUBJECT_HEADER);
        let peer = peer.to_string();
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

/// Every source kind, as written in rulebooks.
pub const KINDS: &[&str] = &[
    "ipfabric",
    "netbox",
    "standard-webhooks",
    "infrahub",
    "github",
    "gitlab",
    "basic",
    "bearer",
    "hmac",
    "none",
    "internal",
];

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

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    let v = headers.get(name).ok_or(VerifyError::MissingHeader(name))?;
    v.to_str().map_err(|_| VerifyError::Malformed(name))
}

fn hex_sig(value: &str, name: &'static str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(value.trim()).map_err(|_| VerifyError::Malformed(name))
}

fn any_secret(secrets: &[Secret], mut check: impl FnMut(&[u8]) -> bool) -> bool {
    // Every secret is tried (no early exit), so timing does not tell which one matched.
    secrets
        .iter()
        .fold(false, |ok, s| check(s.expose().as_bytes()) | ok)
}

const DAY: Duration = Duration::from_secs(86_400);
const BODY_HASH_WINDOW: Duration = Duration::from_secs(15 * 60);

impl Verifier {
    /// The kind name as written in rulebooks.
    pub fn kind(&self) -> &'static str {
        match self {
            Verifier::IpFabric { .. } => "ipfabric",
            Verifier::NetBox { .. } => "netbox",
            Verifier::StandardWebhooks { infrahub: true, .. } => "infrahub",
            Verifier::StandardWebhooks { .. } => "standard-webhooks",
            Verifier::GitHub { .. } => "github",
            Verifier::GitLab { .. } => "gitlab",
            Verifier::Basic { .. } => "basic",
            Verifier::Bearer { .. } => "bearer",
            Verifier::Hmac { .. } => "hmac",
            Verifier::None => "none",
            Verifier::Internal => "internal",
        }
    }

    /// The default de-duplication window of this kind (docs/sources.md), for a delivery id that came
    /// from the sender (`true`) or from the body hash (`false`).
    fn default_window(&self, from_sender: bool) -> Option<Duration> {
        match self {
            _ if from_sender => Some(7 * DAY),
            Verifier::IpFabric { .. } | Verifier::NetBox { .. } => Some(BODY_HASH_WINDOW),
            Verifier::GitLab { .. } => Some(BODY_HASH_WINDOW),
            _ => None,
        }
    }

    /// Checks `body` and `headers`; on success decodes the body as `format` says and returns
    /// the verified event. `dedup_window` overrides the kind's default window.
    pub fn verify(
        &self,
        source: &str,
        headers: &HeaderMap,
        body: &bytes::Bytes,
        format: BodyFormat,
        dedup_window: Option<Duration>,
        now: SystemTime,
    ) -> Result<VerifiedEvent, VerifyError> {
        let mut parsed: Option<Value> = None;
        let sender_id: Option<String> = match self {
            Verifier::IpFabric { secrets } => {
                let sig = hex_sig(header(headers, "x-ipf-signature")?, "x-ipf-signature")?;
                self.check(any_secret(secrets, |k| {
                    mac::verify(Algorithm::Sha256, k, &[body], &sig)
                }))?;
                None
            }
            Verifier::NetBox { secrets } => {
                let sig = hex_sig(header(headers, "x-hook-signature")?, "x-hook-signature")?;
                self.check(any_secret(secrets, |k| {
                    mac::verify(Algorithm::Sha512, k, &[body], &sig)
                }))?;
                None
            }
            Verifier::GitHub { secrets } => {
                let value = header(headers, "x-hub-signature-256")?;
                let hexpart = value
                    .strip_prefix("sha256=")
                    .ok_or(VerifyError::Malformed("x-hub-signature-256"))?;
                let sig = hex_sig(hexpart, "x-hub-signature-256")?;
                self.check(any_secret(secrets, |k| {
                    mac::verify(Algorithm::Sha256, k, &[body], &sig)
                }))?;
                Some(header(headers, "x-github-delivery")?.to_string())
            }
            Verifier::GitLab { secrets } => {
                let token = header(headers, "x-gitlab-token")?;
                self.check(any_secret(secrets, |k| mac::secret_eq(k, token.as_bytes())))?;
                headers
                    .get("x-gitlab-event-uuid")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            }
            Verifier::Basic {
                username,
                passwords,
            } => {
                let value = header(headers, "authorization")?;
                let encoded = strip_scheme(value, "basic").ok_or(VerifyError::BadSignature)?;
                let decoded = B64
                    .decode(encoded.trim())
                    .map_err(|_| VerifyError::BadSignature)?;
                let text = String::from_utf8(decoded).map_err(|_| VerifyError::BadSignature)?;
                let (user, pass) = text.split_once(':').ok_or(VerifyError::BadSignature)?;
                let user_ok = mac::secret_eq(username.expose().as_bytes(), user.as_bytes());
                let pass_ok = any_secret(passwords, |k| mac::secret_eq(k, pass.as_bytes()));
                self.check(user_ok & pass_ok)?;
                None
            }
            Verifier::Bearer { secrets } => {
                let value = header(headers, "authorization")?;
                let token = strip_scheme(value, "bearer").ok_or(VerifyError::BadSignature)?;
                self.check(any_secret(secrets, |k| {
                    mac::secret_eq(k, token.trim().as_bytes())
                }))?;
                None
            }
            Verifier::Hmac {
                header: name,
                algorithm,
                encoding,
                prefix,
                id_header,
                secrets,
            } => {
                let value = headers
                    .get(name.as_str())
                    .ok_or(VerifyError::MissingHeader("signature"))?
                    .to_str()
                    .map_err(|_| VerifyError::Malformed("signature"))?;
                let value = value
                    .strip_prefix(prefix.as_str())
                    .ok_or(VerifyError::Malformed("signature"))?;
                let sig = match encoding {
                    Encoding::Hex => hex::decode(value.trim()).ok(),
                    Encoding::Base64 => B64.decode(value.trim()).ok(),
                }
                .ok_or(VerifyError::Malformed("signature"))?;
                self.check(any_secret(secrets, |k| {
                    mac::verify(*algorithm, k, &[body], &sig)
                }))?;
                match id_header {
                    Some(h) => Some(
                        headers
                            .get(h.as_str())
                            .and_then(|v| v.to_str().ok())
                            .ok_or(VerifyError::MissingHeader("id header"))?
                            .to_string(),
                    ),
                    None => None,
                }
            }
            Verifier::StandardWebhooks {
                keys,
                tolerance,
                infrahub,
            } => {
                let id = header(headers, "webhook-id")?;
                let ts_text = header(headers, "webhook-timestamp")?;
                let sigs = header(headers, "webhook-signature")?;
                let ts: u64 = ts_text
                    .trim()
                    .parse()
                    .map_err(|_| VerifyError::Malformed("webhook-timestamp"))?;
                let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                if now_s.abs_diff(ts) > tolerance.as_secs() {
                    return Err(VerifyError::StaleTimestamp);
                }
                let given: Vec<Vec<u8>> = sigs
                    .split_whitespace()
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| B64.decode(s).ok())
                    .collect();
                let key_bytes: Vec<Vec<u8>> = keys
                    .iter()
                    .map(|k| standard_key(k, *infrahub))
                    .collect::<Result<_, _>>()?;
                let check_body = |b: &[u8]| {
                    key_bytes.iter().fold(false, |ok, k| {
                        let prefix = format!("{id}.{ts_text}.");
                        given.iter().fold(false, |hit, g| {
                            mac::verify(Algorithm::Sha256, k, &[prefix.as_bytes(), b], g) | hit
                        }) | ok
                    })
                };
                let mut ok = check_body(body);
                // Infrahub signs its own re-serialisation of the payload, not the bytes it
                // sends: the one check that needs the body parsed first. Only a request with a
                // fresh timestamp and a well-formed signature gets that far (the body is already
                // within max_body, and failures count against the client's budget).
                if !ok
                    && *infrahub
                    && !given.is_empty()
                    && let Ok(v) = serde_json::from_slice::<Value>(body)
                {
                    ok = check_body(&pyjson::compact_ascii(&v));
                    parsed = Some(v);
                }
                self.check(ok)?;
                Some(id.to_string())
            }
            Verifier::None => None,
            Verifier::Internal => return Err(VerifyError::NotServed),
        };
        let (body_value, raw_is_body) = match parsed {
            Some(v) => (v, true),
            None => format.decode(
                headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                body,
            )?,
        };
        let headers = safe_headers(headers, self.credential_header());
        let from_sender = sender_id.is_some();
        let key = sender_id.unwrap_or_else(|| mac::body_hash(body));
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
            Verifier::Hmac { header, .. } => Some(header.as_str()),
            _ => None,
        }
    }

    fn check(&self, ok: bool) -> Result<(), VerifyError> {
        if ok {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn standard_key(secret: &Secret, raw: bool) -> Result<Vec<u8>, VerifyError> {
    let s = secret.expose();
    if raw {
        return Ok(s.as_bytes().to_vec());
    }
    B64.decode(s.strip_prefix("whsec_").unwrap_or(s))
        .map_err(|_| VerifyError::BadSignature)
}

/// The request headers to keep: not the credential headers of any kind, nor `extra` (a generic
/// `hmac` source's configured signature header).
fn safe_headers(headers: &HeaderMap, extra: Option<&str>) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| !CREDENTIAL_HEADERS.contains(&n.as_str()))
        .filter(|(n, _)| !extra.is_some_and(|x| n.as_str().eq_ignore_ascii_case(x)))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// Signs `body` the way a sender of `kind` would, returning the headers to send. Used by
/// `rulehook send`, the tests and the benchmarks.
pub fn sign_like(
    kind: &str,
    secret: &str,
    body: &[u8],
    now: SystemTime,
) -> Option<Vec<(String, String)>> {
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let ts = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let h = |n: &str, v: String| (n.to_string(), v);
    Some(match kind {
        "ipfabric" => vec![h(
            "x-ipf-signature",
            hex::encode(mac::sign(Algorithm::Sha256, secret.as_bytes(), &[body])),
        )],
        "netbox" => vec![h(
            "x-hook-signature",
            hex::encode(mac::sign(Algorithm::Sha512, secret.as_bytes(), &[body])),
        )],
        "github" => vec![
            h(
                "x-hub-signature-256",
                format!(
                    "sha256={}",
                    hex::encode(mac::sign(Algorithm::Sha256, secret.as_bytes(), &[body]))
                ),
            ),
            h("x-github-delivery", uuid::Uuid::now_v7().to_string()),
            h("x-github-event", "ping".into()),
        ],
        "gitlab" => vec![
            h("x-gitlab-token", secret.into()),
            h("x-gitlab-event-uuid", uuid::Uuid::now_v7().to_string()),
        ],
        "basic" => vec![h("authorization", format!("Basic {}", B64.encode(secret)))],
        "bearer" => vec![h("authorization", format!("Bearer {secret}"))],
        "standard-webhooks" | "infrahub" => {
            let key = standard_key(&Secret::new(secret.into()), kind == "infrahub").ok()?;
            let prefix = format!("{id}.{ts}.");
            let sig = B64.encode(mac::sign(
                Algorithm::Sha256,
                &key,
                &[prefix.as_bytes(), body],
            ));
            vec![
                h("webhook-id", id),
                h("webhook-timestamp", ts),
                h("webhook-signature", format!("v1,{sig}")),
            ]
        }
        "none" => vec![],
        _ => return None,
    })
}
