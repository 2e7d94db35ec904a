//! `GET /api/windows`: the maintenance windows in force and next, and the jobs they hold
//! (`engine::Engine::windows_report`; the console's windows page shows the same).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use serde_json::{Value, json};

use crate::app::AppState;
use crate::app::roles::AsViewer;
use crate::engine::Engine;
use crate::store::JobRow;
use crate::store::JobStatus;

pub(super) async fn list_windows(_: AsViewer, State(state): State<AppState>) -> Response {
    Json(state.engine.windows_report()).into_response()
}

/// Job rows as JSON. Pending ones a window holds carry `held_by` (window, during, until) from
/// their recorded step (`store::HeldByRow`), so `/api/jobs` and `rulehook jobs` say why they
/// wait on every node; a job this node holds whose row does not say so yet (the step that
/// records the hold is being written) gets it from this node's list.
pub(super) fn mark_held(engine: &Engine, jobs: Vec<JobRow>) -> Vec<Value> {
    let held = engine.held_jobs();
    jobs.into_iter()
        .map(|j| {
            let local = (j.status == JobStatus::Pending && j.held_by.is_none())
                .then(|| held.iter().find(|h| h.job == j.id))
                .flatten();
            let mut v = serde_json::to_value(&j).unwrap_or_default();
            if let Some(h) = local {
                v["held_by"] = json!({
                    "window": h.window,
                    "during": h.during,
                    "until": crate::rules::windows::end_of(h.until),
                });
            }
            v
        })
        .collect()
}
