//! `kind: github`: HMAC-SHA256 of the body in `X-Hub-Signature-256`, delivery id from
//! `X-GitHub-Delivery`.

use axum::http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{Checked, VerifyError, any_secret, check, header, hex_sig};
use crate::secrets::Secret;

/// A GitHub webhook's secrets (several while rotating).
#[derive(Debug, Clone)]
pub struct GitHub {
    pub secrets: Vec<Secret>,
}

impl GitHub {
    /// Repeats are recognised by GitHub's delivery id (the common sender window).
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = None;

    pub(crate) fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<Checked, VerifyError> {
        let value = header(headers, "x-hub-signature-256")?;
        let hexpart = value
            .strip_prefix("sha256=")
            .ok_or(VerifyError::Malformed("x-hub-signature-256"))?;
        let sig = hex_sig(hexpart, "x-hub-signature-256")?;
        check(any_secret(&self.secrets, |k| {
            mac::verify(Algorithm::Sha256, k, &[body], &sig)
        }))?;
        Ok(Checked::sender(header(headers, "x-github-delivery")?))
    }

    /// The headers GitHub would send with `body`.
    pub fn sign(secret: &str, body: &[u8]) -> Vec<(String, String)> {
        let sig = hex::encode(mac::sign(Algorithm::Sha256, secret.as_bytes(), &[body]));
        vec![
            ("x-hub-signature-256".into(), format!("sha256={sig}")),
            ("x-github-delivery".into(), uuid::Uuid::now_v7().to_string()),
            ("x-github-event".into(), "ping".into()),
        ]
    }
}
