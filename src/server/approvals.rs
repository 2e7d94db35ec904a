//! The approval endpoints: `POST /api/jobs/{id}/approve` and `/reject` with
//! `{"comment": "…"}` (approver or admin; a rule's `approval.approvers` narrows who, but an
//! admin may always decide, as break-glass), and `GET /api/approvals` (the requests awaiting a
//! decision, with what would run).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::roles::{AsApprover, AsViewer};
use super::{ApiError, AppState};
use crate::app::audit;

/// The body of a decision: an optional comment (an empty body is no comment).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

fn comment(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<DecisionBody>(body)
        .map(|b| b.comment)
        .map_err(|e| ApiError::BadBody(format!("expected {{\"comment\": \"…\"}}: {e}")))
}

/// `POST /api/jobs/{id}/approve`
pub async fn approve(
    who: AsApprover,
    state: State<AppState>,
    id: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(who, state, id, body, true).await
}

/// `POST /api/jobs/{id}/reject`
pub async fn reject(
    who: AsApprover,
    state: State<AppState>,
    id: Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(who, state, id, body, false).await
}

async fn decide(
    AsApprover(who): AsApprover,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
    approved: bool,
) -> Result<Response, ApiError> {
    let comment = comment(&body)?;
    crate::app::check_comment(comment.as_deref())?;
    let (_, decision) = state.engine.decide(&id, &who, approved, comment).await?;
    let what = if approved { "approve" } else { "reject" };
    // The decision's comment: the one given, and whether an admin decided as break-glass.
    audit(&state, &who, what, &id, decision.comment.clone()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job": id,
            "status": if approved { "approved" } else { "rejected" },
            "decision": crate::store::DecisionRow::of(&decision),
        })),
    )
        .into_response())
}

/// `GET /api/approvals`: the requests awaiting a decision, oldest first, each with what
/// happens if nobody decides (`if_undecided`).
pub async fn pending(_: AsViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let requests = state.engine.pending_approvals(500).await?;
    let public = state.engine.public_url();
    let list: Vec<_> = requests
        .iter()
        .map(|r| {
            let mut v = r.view(public);
            v["if_undecided"] = serde_json::Value::String(state.engine.if_undecided(r));
            v
        })
        .collect();
    Ok(Json(json!({"approvals": list})).into_response())
}
