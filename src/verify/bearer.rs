//! `kind: bearer`: `Authorization: Bearer <token>`.

use axum::http::HeaderMap;

use super::mac;
use super::{Checked, VerifyError, any_secret, check, header, strip_scheme};
use crate::secrets::Secret;

/// The tokens a bearer source accepts.
#[derive(Debug, Clone)]
pub struct Bearer {
    pub secrets: Vec<Secret>,
}

impl Bearer {
    /// A token proves no particular delivery: no de-duplication unless configured.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = None;

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<Checked, VerifyError> {
        let value = header(headers, "authorization")?;
        let token = strip_scheme(value, "bearer").ok_or(VerifyError::BadSignature)?;
        check(any_secret(&self.secrets, |k| {
            mac::secret_eq(k, token.trim().as_bytes())
        }))?;
        Ok(Checked::default())
    }

    pub fn sign(secret: &str) -> Vec<(String, String)> {
        vec![("authorization".into(), format!("Bearer {secret}"))]
    }
}
