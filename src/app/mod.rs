//! The state and rules every HTTP plane shares, below them all: the webhook transport and the
//! admin API (`server`) and the web console (`console`) import this module; it imports neither.
//!
//! - [`AppState`]: what request handlers share (the engine, access settings, the guard);
//! - [`error`]: the one place errors become HTTP statuses ([`ApiError`]);
//! - [`roles`]: who a request is, and one extractor per role;
//! - [`guard`]: admin hosts, back pressure, live-stream caps, failed verifications;
//! - [`admin_plane`]: the gate in front of the admin API, `/metrics` and the console;
//! - [`audited`]: replay and re-run, written to the audit trail before they act;
//! - [`explain`]: why a stored event did not match a rule (the API's and console's event pages).

pub mod admin_plane;
pub mod audited;
mod error;
pub mod explain;
pub mod guard;
pub mod roles;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::HeaderMap;

use crate::engine::Engine;
pub use error::ApiError;
pub use explain::{NotMatched, not_matched};

/// What request handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// `RULEHOOK_ADMIN_TOKEN`: lets non-loopback clients use the admin API.
    pub admin_token: Option<String>,
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// How long a client may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// The web console's keys and access settings (also the admin API's loopback rule).
    pub console: Arc<session::Settings>,
    /// Admin access, back pressure, failed verifications per address.
    pub guard: Arc<guard::Guard>,
}

/// Records a write in the audit trail.
pub async fn audit(
    state: &AppState,
    who: &crate::access::Principal,
    what: &str,
    target: &str,
    comment: Option<String>,
) -> Result<(), ApiError> {
    let record = crate::access::audit::Record::new(who, what, target, comment);
    tracing::info!(who = %record.who, role = %record.role, what, target, "audit");
    crate::access::audit::append(state.engine.store().state.as_ref(), record).await?;
    Ok(())
}

/// Refuses a decision's comment longer than [`crate::domain::MAX_COMMENT_BYTES`] (the API,
/// the CLI through it, and the console check it before anything is decided).
pub fn check_comment(comment: Option<&str>) -> Result<(), ApiError> {
    match comment.map(str::len) {
        Some(len) if len > crate::domain::MAX_COMMENT_BYTES => Err(ApiError::CommentTooLong(len)),
        _ => Ok(()),
    }
}

/// The admin API answers anyone it knows (see [`roles::principal`]); kept for the console.
pub fn admin(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    roles::principal(state, peer, headers).map(drop)
}

/// `since` as RFC 3339, or as a duration back from now (`15m`).
pub fn parse_since(s: &str) -> Result<i64, ApiError> {
    if let Ok(d) = crate::units::parse_duration(s) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        return Ok(now.saturating_sub(d).as_millis() as i64);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::BadQuery(format!(
                "since `{s}` is neither RFC 3339 nor a duration like 15m"
            ))
        })
}
