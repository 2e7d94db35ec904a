//! `kind: basic`: HTTP Basic authentication (`username`, `password`, more passwords in
//! `secrets` while rotating).

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::mac;
use super::{Checked, VerifyError, any_secret, check, header, strip_scheme};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::SourceSpec;
use crate::secrets::Secret;

/// A Basic-auth source's credentials.
#[derive(Debug, Clone)]
pub struct Basic {
    pub username: Secret,
    pub passwords: Vec<Secret>,
}

impl Basic {
    /// Credentials prove no particular delivery: no de-duplication unless configured.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = None;

    /// From `username`, `password` and any `secrets` (more passwords).
    pub fn compile(cx: &mut Compile, spec: &SourceSpec, secrets: Vec<Secret>) -> Option<Basic> {
        let (Some(u), Some(p)) = (&spec.username, &spec.password) else {
            cx.err(
                &spec.kind.referenced,
                format!(
                    "source `{}` of kind `basic` needs `username` and `password`",
                    spec.name.value
                ),
            );
            return None;
        };
        let username = cx.secret(u, "username")?;
        let mut passwords = vec![cx.secret(p, "password")?];
        passwords.extend(secrets);
        Some(Basic {
            username,
            passwords,
        })
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<Checked, VerifyError> {
        let value = header(headers, "authorization")?;
        let encoded = strip_scheme(value, "basic").ok_or(VerifyError::BadSignature)?;
        let decoded = B64
            .decode(encoded.trim())
            .map_err(|_| VerifyError::BadSignature)?;
        let text = String::from_utf8(decoded).map_err(|_| VerifyError::BadSignature)?;
        let (user, pass) = text.split_once(':').ok_or(VerifyError::BadSignature)?;
        let user_ok = mac::secret_eq(self.username.expose().as_bytes(), user.as_bytes());
        let pass_ok = any_secret(&self.passwords, |k| mac::secret_eq(k, pass.as_bytes()));
        check(user_ok & pass_ok)?;
        Ok(Checked::default())
    }

    /// `secret` is `user:password`.
    pub fn sign(secret: &str) -> Vec<(String, String)> {
        vec![(
            "authorization".into(),
            format!("Basic {}", B64.encode(secret)),
        )]
    }
}
