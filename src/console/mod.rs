//! The web console: server-rendered pages at `/` and under `/console/` on the service's own
//! listener, behind the admin access rule. Templates, stylesheet and script are compiled into
//! the binary; live updates come over Server-Sent Events; the store is read through its traits
//! only (`History`, and `WorkQueue::depth` on the overview), so every backend serves it.
//!
//! - [`auth`]: who is let in (loopback, bearer token, trusted proxy header, session cookie) and
//!   the form checks;
//! - `login`: signing in (admin token, a user's token or password) and out, audited;
//! - `pages`: one handler per page and button; `audit`: the audit trail;
//! - `error`: `PageError`, a failure rendered as a page (status from `server/error.rs`);
//! - `approvals`: the pending approvals and their Approve/Reject buttons;
//! - `live`: the event stream;
//! - `views`: masking, formatting and charts;
//! - `windows`: the maintenance windows in force and next, and the jobs they hold;
//! - `render`: templates, assets and the security headers.

mod approvals;
mod audit;
pub mod auth;
mod error;
mod live;
mod login;
mod pages;
mod render;
mod views;
mod windows;

use axum::Router;
use axum::routing::{get, post};

pub use auth::Settings;
pub use render::CSP;

use crate::app::AppState;

/// The console's routes, merged into the service's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::events))
        .route("/console/events/{id}", get(pages::event))
        .route("/console/replay", post(pages::replay))
        .route("/console/rerun", post(pages::rerun))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/approvals", get(approvals::list))
        .route("/console/decide", post(approvals::decide))
        .route("/console/rules", get(pages::rules))
        .route("/console/try", get(pages::try_form).post(pages::try_run))
        .route("/console/overview", get(pages::overview))
        .route("/console/windows", get(windows::windows))
        .route("/console/audit", get(audit::audit))
        .route("/console/live", get(live::live))
        .route("/console/login", get(login::login_form).post(login::login))
        .route("/console/logout", post(login::logout))
        .route("/console/static/{name}", get(render::asset))
}
