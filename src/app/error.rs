//! The one place where errors become HTTP statuses. The admin API and webhook senders get
//! `{"error": code, "message": sentence}`; the console renders the same error as a page (its
//! `console::error::PageError` takes the status from [`ApiError::status_and_code`]). Success
//! statuses (200, 202, 303) are the handlers'.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::StoreError;
use crate::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no source is served at this path")]
    NotFound,
    #[error("only POST is accepted here")]
    MethodNotAllowed,
    #[error("your address is not allowed to post to this source")]
    Forbidden,
    #[error("the body is larger than this source's max_body of {0} bytes")]
    TooLarge(usize),
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error(
        "the body was sent with Content-Encoding `{0}`, which rulehook does not decode: send it uncompressed (no Content-Encoding)"
    )]
    Encoded(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{}", unavailable(.0))]
    Unavailable(#[from] StoreError),
    #[error("admin API: present `Authorization: Bearer $RULEHOOK_ADMIN_TOKEN`")]
    AdminOnly,
    #[error(
        "the bearer token is not known here: it is neither RULEHOOK_ADMIN_TOKEN nor a user's API token (a removed user's token stops working)"
    )]
    UnknownToken,
    #[error("this needs the `{needed}` role or higher; `{who}` is `{role}`")]
    NeedsRole {
        needed: &'static str,
        who: String,
        role: &'static str,
    },
    #[error("the users file cannot be used: {0}")]
    Users(String),
    #[error("{0}")]
    BadQuery(String),
    #[error(
        "this request came from another site (Origin or Sec-Fetch-Site): the admin API and the console take changes only from their own pages or from clients that are not browsers"
    )]
    CrossSite,
    #[error(
        "this service does not answer to host `{0}`: use localhost, a loopback or listen address, or a name given with --admin-host"
    )]
    MisdirectedHost(String),
    #[error("no event with this id")]
    NoSuchEvent,
    #[error("no job with this id")]
    NoSuchJob,
    #[error("this job is {0}, not a dead letter: {hint}", hint = not_failed_hint(.0))]
    NotFailed(&'static str),
    #[error(
        "the rule version this job matched is neither loaded nor in the rule archive; re-run it without `as_matched` to run the current version"
    )]
    VersionGone,
    #[error(
        "the rule of this job no longer exists (removed or renamed since the match): re-run the version it matched with `rulehook rerun JOB --as-matched` (`?as_matched=true`), or replay its event through the current rules (`rulehook replay EVENT`)"
    )]
    RuleGone,
    #[error("rate limit exceeded for this source; retry after {0} s")]
    RateLimited(u64),
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    #[error("this node runs jobs only (--role worker): send webhooks to an ingest node")]
    NotIngest,
    #[error(
        "too many events are waiting to be processed (--max-pending); nothing was accepted, please retry later"
    )]
    Busy,
    #[error(transparent)]
    Approval(#[from] crate::engine::approval::ApprovalError),
    #[error(
        "the comment is {0} bytes long; a decision's comment may be at most {max} bytes (4 KiB)",
        max = crate::domain::MAX_COMMENT_BYTES
    )]
    CommentTooLong(usize),
    #[error("the form token is missing or stale; reload the page and try again")]
    StaleForm,
    #[error("{0}")]
    BadLogin(&'static str),
    #[error("{0}")]
    ProxyUser(String),
    #[error("sign in at /console/login with the admin token, a user's token or a user's password")]
    SignIn,
    #[error("no such file")]
    NoSuchAsset,
    #[error("metrics are not enabled in this process")]
    MetricsOff,
    #[error("{0}")]
    Internal(String),
    /// `/healthz` when a part failed: the parts that failed, as its body lists them.
    #[error("unhealthy")]
    Unhealthy(Vec<serde_json::Value>),
    #[error(
        "too many live streams are open (from this address or in all); close a console tab, or reload later"
    )]
    LiveBusy,
}

/// What a sender is told when its event could not be confirmed as stored: "nothing was
/// accepted" only when that is known.
fn unavailable(e: &StoreError) -> String {
    match e {
        StoreError::Unknown(_) => format!(
            "the store did not confirm the event in time: it may have been stored; send it again with the same delivery id, it is then stored once ({e})"
        ),
        e => format!("the event could not be stored; nothing was accepted, please retry ({e})"),
    }
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Encoded(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_encoding",
            ),
            ApiError::Verify(v) => match v {
                VerifyError::Body(b) => (StatusCode::BAD_REQUEST, b.code()),
                VerifyError::MissingHeader(_) => (StatusCode::UNAUTHORIZED, "missing_credentials"),
                VerifyError::Malformed(_) | VerifyError::BadSignature => {
                    (StatusCode::UNAUTHORIZED, "invalid_signature")
                }
                VerifyError::StaleTimestamp => (StatusCode::UNAUTHORIZED, "stale_timestamp"),
                VerifyError::NotServed => (StatusCode::NOT_FOUND, "not_found"),
            },
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::AdminOnly | ApiError::UnknownToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::NeedsRole { .. } => (StatusCode::FORBIDDEN, "forbidden_role"),
            ApiError::Users(_) => (StatusCode::INTERNAL_SERVER_ERROR, "users_file"),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::CrossSite => (StatusCode::FORBIDDEN, "cross_site"),
            ApiError::MisdirectedHost(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_host"),
            ApiError::NoSuchEvent | ApiError::NoSuchJob => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RuleGone => (StatusCode::CONFLICT, "rule_gone"),
            ApiError::NotFailed(_) => (StatusCode::CONFLICT, "not_failed"),
            ApiError::VersionGone => (StatusCode::CONFLICT, "version_gone"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::NotIngest => (StatusCode::SERVICE_UNAVAILABLE, "not_an_ingest_node"),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::LiveBusy => (StatusCode::SERVICE_UNAVAILABLE, "live_busy"),
            ApiError::Approval(a) => {
                use crate::engine::approval::ApprovalError as A;
                match a {
                    A::NotFound => (StatusCode::NOT_FOUND, "not_awaiting_approval"),
                    A::Decided(_) => (StatusCode::CONFLICT, "already_decided"),
                    A::TimedOut(_) => (StatusCode::CONFLICT, "timed_out"),
                    A::NotAnApprover { .. } => (StatusCode::FORBIDDEN, "not_an_approver"),
                    A::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                }
            }
            ApiError::CommentTooLong(_) => (StatusCode::BAD_REQUEST, "comment_too_long"),
            ApiError::StaleForm => (StatusCode::FORBIDDEN, "stale_form"),
            ApiError::BadLogin(_) => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            ApiError::ProxyUser(_) => (StatusCode::FORBIDDEN, "proxy_user_refused"),
            ApiError::SignIn => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NoSuchAsset | ApiError::MetricsOff => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Unhealthy(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    /// Short machine code, also used as the `reason` of rejection logs.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Unhealthy(failed) = self {
            return (
                status,
                Json(json!({"status": "unavailable", "failed": failed})),
            )
                .into_response();
        }
        let mut resp = (
            status,
            Json(json!({"error": code, "message": crate::secrets::mask(&self.to_string())})),
        )
            .into_response();
        if matches!(self, ApiError::MethodNotAllowed) {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        if let ApiError::RateLimited(secs) = &self
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if matches!(
            self,
            ApiError::Unavailable(_)
                | ApiError::Busy
                | ApiError::LiveBusy
                | ApiError::Approval(crate::engine::approval::ApprovalError::Store(_))
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// What to do about a re-run of a job that is not a dead letter (`rejected`: an approval turned
/// it down, nothing ran; its event can be replayed).
fn not_failed_hint(state: &str) -> &'static str {
    match state {
        "rejected" => {
            "an approval turned it down, so nothing ran; re-run is for jobs that failed for good: to run it again, replay its event (`rulehook replay EVENT`)"
        }
        _ => "only jobs that failed for good can be re-run",
    }
}
