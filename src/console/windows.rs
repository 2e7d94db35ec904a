//! `GET /console/windows`: the maintenance windows in force and next, and the jobs this node
//! holds for them (the same report as `/api/windows`).

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::auth::Viewer;
use super::pages::frame;
use super::render::page;
use crate::app::AppState;

pub async fn windows(v: Viewer, State(st): State<AppState>) -> Response {
    let report = st.engine.windows_report();
    page(
        "windows.html",
        json!({ "frame": frame(&v, "windows"), "report": report }),
    )
}
