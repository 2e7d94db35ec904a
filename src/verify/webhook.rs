//! The webhook kinds as one enum: which `kind:` names exist, how each compiles its rulebook
//! spec into a [`Verifier`] and signs a body as its sender would (`rulehook send`). The kinds'
//! own logic is in their files; this only dispatches.

use std::time::SystemTime;

use super::Verifier;
#[cfg(test)]
use super::VerifyError;
use super::basic::Basic;
use super::bearer::Bearer;
use super::generic_hmac::GenericHmac;
use super::github::GitHub;
use super::gitlab::GitLab;
use super::ipfabric::IpFabric;
use super::netbox::NetBox;
use super::standard::StandardWebhooks;
use crate::rulebook::compile::Compile;
use crate::rulebook::model::SourceSpec;
use crate::secrets::Secret;

/// A `kind:` a source served over HTTP (or `internal`) may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    IpFabric,
    NetBox,
    StandardWebhooks,
    Infrahub,
    GitHub,
    GitLab,
    Basic,
    Bearer,
    Hmac,
    None,
    Internal,
}

impl WebhookKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [WebhookKind; 11] = [
        WebhookKind::IpFabric,
        WebhookKind::NetBox,
        WebhookKind::StandardWebhooks,
        WebhookKind::Infrahub,
        WebhookKind::GitHub,
        WebhookKind::GitLab,
        WebhookKind::Basic,
        WebhookKind::Bearer,
        WebhookKind::Hmac,
        WebhookKind::None,
        WebhookKind::Internal,
    ];

    /// Its name as written in rulebooks.
    pub const fn name(self) -> &'static str {
        match self {
            WebhookKind::IpFabric => "ipfabric",
            WebhookKind::NetBox => "netbox",
            WebhookKind::StandardWebhooks => "standard-webhooks",
            WebhookKind::Infrahub => "infrahub",
            WebhookKind::GitHub => "github",
            WebhookKind::GitLab => "gitlab",
            WebhookKind::Basic => "basic",
            WebhookKind::Bearer => "bearer",
            WebhookKind::Hmac => "hmac",
            WebhookKind::None => "none",
            WebhookKind::Internal => "internal",
        }
    }

    pub fn parse(name: &str) -> Option<WebhookKind> {
        WebhookKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether a source of this kind must name `secret`/`secrets`.
    pub fn needs_secret(self) -> bool {
        !matches!(
            self,
            WebhookKind::None | WebhookKind::Internal | WebhookKind::Basic
        )
    }

    /// The verifier of a source of this kind, from its spec and its secrets (already read);
    /// `None` after reporting what is wrong.
    pub fn compile(
        self,
        cx: &mut Compile,
        spec: &SourceSpec,
        secrets: Vec<Secret>,
    ) -> Option<Verifier> {
        Some(match self {
            WebhookKind::IpFabric => Verifier::IpFabric(IpFabric { secrets }),
            WebhookKind::NetBox => Verifier::NetBox(NetBox { secrets }),
            WebhookKind::StandardWebhooks | WebhookKind::Infrahub => {
                let tolerance = match &spec.tolerance {
                    Some(t) => cx.duration(t, "tolerance")?,
                    None => StandardWebhooks::DEFAULT_TOLERANCE,
                };
                Verifier::StandardWebhooks(StandardWebhooks {
                    keys: secrets,
                    tolerance,
                    infrahub: self == WebhookKind::Infrahub,
                })
            }
            WebhookKind::GitHub => Verifier::GitHub(GitHub { secrets }),
            WebhookKind::GitLab => Verifier::GitLab(GitLab { secrets }),
            WebhookKind::Bearer => Verifier::Bearer(Bearer { secrets }),
            WebhookKind::Basic => Verifier::Basic(Basic::compile(cx, spec, secrets)?),
            WebhookKind::Hmac => Verifier::Hmac(GenericHmac::compile(cx, spec, secrets)?),
            WebhookKind::None => {
                cx.warnings.push(format!(
                    "{}:{}: source `{}` has kind `none`: its requests are not authenticated",
                    cx.file,
                    spec.kind.referenced.line(),
                    spec.name.value
                ));
                Verifier::None
            }
            WebhookKind::Internal => Verifier::Internal,
        })
    }

    /// The headers its sender would send with `body` under `secret`. `None` for `hmac`
    /// (whose header is configured: see [`GenericHmac::sign`]), `internal`, and a
    /// Standard Webhooks secret that is not a key.
    pub fn sign(self, secret: &str, body: &[u8], now: SystemTime) -> Option<Vec<(String, String)>> {
        Some(match self {
            WebhookKind::IpFabric => IpFabric::sign(secret, body),
            WebhookKind::NetBox => NetBox::sign(secret, body),
            WebhookKind::GitHub => GitHub::sign(secret, body),
            WebhookKind::GitLab => GitLab::sign(secret),
            WebhookKind::Basic => Basic::sign(secret),
            WebhookKind::Bearer => Bearer::sign(secret),
            WebhookKind::StandardWebhooks | WebhookKind::Infrahub => {
                return StandardWebhooks::sign(secret, self == WebhookKind::Infrahub, body, now);
            }
            WebhookKind::None => Vec::new(),
            WebhookKind::Hmac | WebhookKind::Internal => return None,
        })
    }
}

/// Signs `body` the way a sender of `kind` would, returning the headers to send. Used by
/// `rulehook send`, the tests and the benchmarks.
pub fn sign_like(
    kind: &str,
    secret: &str,
    body: &[u8],
    now: SystemTime,
) -> Option<Vec<(String, String)>> {
    WebhookKind::parse(kind)?.sign(secret, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_kinds_list() {
        for k in WebhookKind::ALL {
            assert_eq!(WebhookKind::parse(k.name()), Some(k));
        }
        let names: Vec<_> = WebhookKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, super::super::KINDS);
        assert_eq!(WebhookKind::parse("syslog"), None);
    }

    #[test]
    fn each_signing_kind_verifies_what_it_signs() {
        use axum::http::{HeaderMap, HeaderName, HeaderValue};
        let body = bytes::Bytes::from_static(br#"{"a":1}"#);
        let now = SystemTime::now();
        let s = |v: &str| vec![Secret::new(v.to_string())];
        let whsec = "whsec_ZnV6ei1zZWNyZXQta2V5LTMyLWJ5dGVzLWxvbmchIQ==";
        let cases = [
            (
                WebhookKind::IpFabric,
                "k",
                Verifier::IpFabric(IpFabric { secrets: s("k") }),
            ),
            (
                WebhookKind::GitHub,
                "k",
                Verifier::GitHub(GitHub { secrets: s("k") }),
            ),
            (
                WebhookKind::Bearer,
                "k",
                Verifier::Bearer(Bearer { secrets: s("k") }),
            ),
            (
                WebhookKind::StandardWebhooks,
                whsec,
                Verifier::StandardWebhooks(StandardWebhooks {
                    keys: s(whsec),
                    tolerance: StandardWebhooks::DEFAULT_TOLERANCE,
                    infrahub: false,
                }),
            ),
        ];
        for (kind, secret, verifier) in cases {
            let mut headers = HeaderMap::new();
            for (n, v) in kind.sign(secret, &body, now).unwrap() {
                headers.insert(
                    HeaderName::try_from(n).unwrap(),
                    HeaderValue::try_from(v).unwrap(),
                );
            }
            let request = crate::verify::Request {
                source: "s",
                headers: &headers,
                body: &body,
                format: crate::body::BodyFormat::Json,
                dedup_window: None,
                now,
            };
            assert!(verifier.verify(request, None).is_ok());
            if kind != WebhookKind::Bearer {
                let wrong = bytes::Bytes::from_static(br#"{"a":2}"#);
                let request = crate::verify::Request {
                    body: &wrong,
                    ..request
                };
                let refused = verifier.verify(request, None);
                assert_eq!(refused.unwrap_err(), VerifyError::BadSignature);
            }
        }
    }
}
