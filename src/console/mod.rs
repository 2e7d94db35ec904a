//! The web console: server-rendered pages at `/` and under `/console/` on the service's own
//! listener, behind the admin access rule. Templates, stylesheet and script are compiled into
//! the binary; live updates come over Server-Sent Events; the history is read through the
//! `History` trait only.
//!
//! - [`auth`]: who is let in (loopback, bearer token, session cookie) and the form checks;
//! - `pages`: one handler per page and button;
//! - `live`: the event stream;
//! - `views`: masking, formatting and charts;
//! - `windows`: the maintenance windows in force and next, and the jobs they hold;
//! - `render`: templates, assets and the security headers.

pub mod auth;
mod live;
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
        .route("/console/rules", get(pages::rules))
        .route("/console/try", get(pages::try_form).post(pages::try_run))
        .route("/console/overview", get(pages::overview))
        .route("/console/windows", get(windows::windows))
        .route("/console/live", get(live::live))
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/static/{name}", get(render::asset))
}
