//! `kind: gitlab`: the secret token in `X-Gitlab-Token`, delivery id from
//! `X-Gitlab-Event-UUID` when sent.

use axum::http::HeaderMap;

use super::mac;
use super::{BODY_HASH_WINDOW, Checked, VerifyError, any_secret, check, header};
use crate::secrets::Secret;

/// A GitLab webhook's secret tokens.
#[derive(Debug, Clone)]
pub struct GitLab {
    pub secrets: Vec<Secret>,
}

impl GitLab {
    /// Older GitLab versions send no event UUID: repeats of the same body are caught for 15 min.
    pub const BODY_HASH_WINDOW: Option<std::time::Duration> = Some(BODY_HASH_WINDOW);

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<Checked, VerifyError> {
        let token = header(headers, "x-gitlab-token")?;
        check(any_secret(&self.secrets, |k| {
            mac::secret_eq(k, token.as_bytes())
        }))?;
        Ok(Checked {
            sender_id: headers
                .get("x-gitlab-event-uuid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            parsed: None,
        })
    }

    /// The headers GitLab would send.
    pub fn sign(secret: &str) -> Vec<(String, String)> {
        vec![
            ("x-gitlab-token".into(), secret.into()),
            (
                "x-gitlab-event-uuid".into(),
                uuid::Uuid::now_v7().to_string(),
            ),
        ]
    }
}
