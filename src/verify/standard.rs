//! `kind: standard-webhooks` (Standard Webhooks v1: `webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) and `kind: infrahub`, its variant (the key is the secret's bytes, and
//! Infrahub signs its own compact re-encoding of the body).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use super::mac::{self, Algorithm};
use super::{Checked, VerifyError, check, header, pyjson};
use crate::secrets::Secret;

/// A Standard Webhooks (or Infrahub) source's keys and timestamp tolerance.
#[derive(Debug, Clone)]
pub struct StandardWebhooks {
    pub keys: Vec<Secret>,
    pub tolerance: Duration,
    /// The Infrahub variant.
    pub infrahub: bool,
}

impl StandardWebhooks {
    /// Every message carries a `webhook-id`: the sender window applies.
    pub const BODY_HASH_WINDOW: Option<Duration> = None;
    /// `tolerance` when not set.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

    /// The shortest delivery-id window that recognises every replay of a message this source
    /// takes: a `webhook-timestamp` is taken within `tolerance` either side of now, so a message
    /// first seen at its earliest (its timestamp `tolerance` ahead) is still taken until twice
    /// `tolerance` later.
    pub fn replay_window(&self) -> Duration {
        self.tolerance.saturating_mul(2)
    }

    pub fn kind(&self) -> &'static str {
        if self.infrahub {
            "infrahub"
        } else {
            "standard-webhooks"
        }
    }

    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Checked, VerifyError> {
        let id = header(headers, "webhook-id")?;
        let ts_text = header(headers, "webhook-timestamp")?;
        let sigs = header(headers, "webhook-signature")?;
        let ts: u64 = ts_text
            .trim()
            .parse()
            .map_err(|_| VerifyError::Malformed("webhook-timestamp"))?;
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now_s.abs_diff(ts) > self.tolerance.as_secs() {
            return Err(VerifyError::StaleTimestamp);
        }
        let given: Vec<Vec<u8>> = sigs
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| B64.decode(s).ok())
            .collect();
        let key_bytes: Vec<Vec<u8>> = self
            .keys
            .iter()
            .map(|k| key(k, self.infrahub))
            .collect::<Result<_, _>>()?;
        // One HMAC per key, compared with each signature given: a header may list thousands
        // of signatures, and an HMAC of the body per signature made one forged request hash
        // gigabytes.
        let prefix = format!("{id}.{ts_text}.");
        let check_body = |b: &[u8]| {
            key_bytes.iter().fold(false, |ok, k| {
                let want = mac::sign(Algorithm::Sha256, k, &[prefix.as_bytes(), b]);
                given
                    .iter()
                    .fold(false, |hit, g| bool::from(want.as_slice().ct_eq(g)) | hit)
                    | ok
            })
        };
        let mut ok = check_body(body);
        let mut parsed = None;
        // Infrahub signs its own re-serialisation of the payload, not the bytes it sends: the
        // one check that needs the body parsed first. Only a request with a fresh timestamp and
        // a well-formed signature gets that far (the body is already within max_body, and
        // failures count against the client's budget).
        if !ok
            && self.infrahub
            && !given.is_empty()
            && let Ok(v) = serde_json::from_slice::<Value>(body)
        {
            ok = check_body(&pyjson::compact_ascii(&v));
            parsed = Some(v);
        }
        check(ok)?;
        Ok(Checked {
            sender_id: Some(id.to_string()),
            parsed,
        })
    }

    /// The headers a Standard Webhooks sender would send; `None` when `secret` is not a key.
    pub fn sign(
        secret: &str,
        infrahub: bool,
        body: &[u8],
        now: SystemTime,
    ) -> Option<Vec<(String, String)>> {
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let ts = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let key = key(&Secret::new(secret.into()), infrahub).ok()?;
        let prefix = format!("{id}.{ts}.");
        let sig = B64.encode(mac::sign(
            Algorithm::Sha256,
            &key,
            &[prefix.as_bytes(), body],
        ));
        Some(vec![
            ("webhook-id".into(), id),
            ("webhook-timestamp".into(), ts),
            ("webhook-signature".into(), format!("v1,{sig}")),
        ])
    }
}

/// The HMAC key: base64 after `whsec_`, or for Infrahub the secret's bytes.
fn key(secret: &Secret, raw: bool) -> Result<Vec<u8>, VerifyError> {
    let s = secret.expose();
    if raw {
        return Ok(s.as_bytes().to_vec());
    }
    B64.decode(s.strip_prefix("whsec_").unwrap_or(s))
        .map_err(|_| VerifyError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forged request listing 20,000 signatures over a 1 MiB body: each was an HMAC of the
    /// whole body (20 GB hashed for one request, answered 401 at the end); now one per key.
    /// Counted in bytes hashed, not timed.
    #[test]
    fn many_signatures_cost_one_hmac_per_key() {
        let v = StandardWebhooks {
            keys: vec![Secret::new("whsec_MDEyMzQ1Njc4OWFiY2RlZg==".into())],
            tolerance: StandardWebhooks::DEFAULT_TOLERANCE,
            infrahub: false,
        };
        let now = SystemTime::now();
        let body = vec![b'x'; 1 << 20];
        let ts = now
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let forged = vec!["v1,AAAA"; 20_000].join(" ");
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_1".parse().unwrap());
        h.insert("webhook-timestamp", ts.parse().unwrap());
        h.insert("webhook-signature", forged.parse().unwrap());
        mac::HASHED.with(|b| b.set(0));
        assert!(v.check(&h, &body, now).is_err());
        let hashed = mac::HASHED.with(|b| b.get());
        assert!(
            hashed <= body.len() + 64,
            "{hashed} bytes hashed for one request"
        );
        // The right signature among many still passes.
        let signed =
            StandardWebhooks::sign("whsec_MDEyMzQ1Njc4OWFiY2RlZg==", false, &body, now).unwrap();
        for (k, val) in signed {
            let val = if k == "webhook-signature" {
                format!("v1,AAAA {val} v1,AAAA")
            } else {
                val
            };
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                val.parse().unwrap(),
            );
        }
        assert!(v.check(&h, &body, now).is_ok());
    }
}
