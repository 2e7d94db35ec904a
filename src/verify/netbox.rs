//! `kind: netbox`: HMAC-SHA512 of the body, hex, in `X-Hook-Signature`; no delivery id.

use axum::http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{BODY_HASH_WINDOW, Checked, VerifyError, any_secret, check, header, hex_sig};
use crate::secrets::Secret;

/// A NetBox webhook's secrets.
#[derive(Debug, Clone)]
pub struct NetBox {
    pub secrets: Vec<Secret>,
}

impl NetBox {
    /// NetBox sends no delivery id: repeats of the same body are caught for 15 minutes.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = Some(BODY_HASH_WINDOW);

    pub(crate) fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<Checked, VerifyError> {
        let sig = hex_sig(header(headers, "x-hook-signature")?, "x-hook-signature")?;
        check(any_secret(&self.secrets, |k| {
            mac::verify(Algorithm::Sha512, k, &[body], &sig)
        }))?;
        Ok(Checked::default())
    }

    /// The header NetBox would send with `body`.
    pub fn sign(secret: &str, body: &[u8]) -> Vec<(String, String)> {
        vec![(
            "x-hook-signature".into(),
            hex::encode(mac::sign(Algorithm::Sha512, secret.as_bytes(), &[body])),
        )]
    }
}
