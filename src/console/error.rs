//! Why a console page could not do what was asked, as a page that says so.
//!
//! It exists so that every handler can use `?`: the error carries what the page's layout needs
//! (the viewer's form token, whether a sign-out button belongs), and its status comes from
//! [`ApiError::status_and_code`] in `server/error.rs`, the one place errors become statuses.

use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::{Forged, Viewer};
use super::pages::Frame;
use super::render::page_with;
use crate::app::ApiError;

/// An error shown as the console's message page.
#[derive(Debug)]
pub struct PageError {
    error: ApiError,
    form_token: String,
    session: bool,
}

impl PageError {
    /// `error` as `v` would see it (their layout: sign-out button and form token).
    pub fn new(v: &Viewer, error: impl Into<ApiError>) -> PageError {
        PageError {
            error: error.into(),
            form_token: v.form_token.clone(),
            session: v.session,
        }
    }
}

/// `result.or_page(&v)?`: any error a page meets, shown to that viewer.
pub trait OrPage<T> {
    fn or_page(self, v: &Viewer) -> Result<T, PageError>;
}

impl<T, E: Into<ApiError>> OrPage<T> for Result<T, E> {
    fn or_page(self, v: &Viewer) -> Result<T, PageError> {
        self.map_err(|e| PageError::new(v, e))
    }
}

impl From<Forged> for ApiError {
    fn from(e: Forged) -> ApiError {
        match e {
            Forged::BadToken => ApiError::StaleForm,
        }
    }
}

/// The page's heading: what kind of problem this is.
fn title(e: &ApiError) -> &'static str {
    match e {
        ApiError::Unavailable(_) => "History unavailable",
        ApiError::NoSuchEvent => "No such event",
        ApiError::NoSuchJob => "No such job",
        ApiError::VersionGone => "Version gone",
        ApiError::NotFailed(_) => "Not a dead letter",
        ApiError::RuleGone => "Rule gone",
        ApiError::StaleForm | ApiError::NeedsRole { .. } | ApiError::CrossSite => "Refused",
        ApiError::BadQuery(_) => "Bad request",
        _ => "Error",
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, code) = self.error.status_and_code();
        if status.is_server_error() {
            tracing::warn!(error = %self.error, code, "console: a page failed");
        }
        page_with(
            status,
            "message.html",
            json!({
                "frame": Frame { nav: "", form_token: &self.form_token, session: self.session, operator: false },
                "title": title(&self.error),
                "message": crate::secrets::mask(&self.error.to_string()),
            }),
        )
    }
}
