//! `kind: ipfabric`: HMAC-SHA256 of the body, hex, in `X-IPF-Signature`; no delivery id.

use axum::http::HeaderMap;

use super::mac::{self, Algorithm};
use super::{BODY_HASH_WINDOW, Checked, VerifyError, any_secret, check, header, hex_sig};
use crate::secrets::Secret;

/// An IP Fabric webhook's secrets.
#[derive(Debug, Clone)]
pub struct IpFabric {
    pub secrets: Vec<Secret>,
}

impl IpFabric {
    /// IP Fabric sends no delivery id: repeats of the same body are caught for 15 minutes.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = Some(BODY_HASH_WINDOW);

    pub(crate) fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<Checked, VerifyError> {
        let sig = hex_sig(header(headers, "x-ipf-signature")?, "x-ipf-signature")?;
        check(any_secret(&self.secrets, |k| {
            mac::verify(Algorithm::Sha256, k, &[body], &sig)
        }))?;
        Ok(Checked::default())
    }

    /// The header IP Fabric would send with `body`.
    pub fn sign(secret: &str, body: &[u8]) -> Vec<(String, String)> {
        vec![(
            "x-ipf-signature".into(),
            hex::encode(mac::sign(Algorithm::Sha256, secret.as_bytes(), &[body])),
        )]
    }
}
