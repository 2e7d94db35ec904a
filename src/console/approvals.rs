//! The approvals page: every job awaiting a decision with its event, the actions that would
//! run (rendered, credentials masked) and Approve/Reject buttons (approver or admin; the form
//! token as for every console button). `approval.url` points here (`?job=…`).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Viewer};
use super::pages::{frame, message, unavailable};
use super::render::{page, secured};
use super::views;
use crate::access::Role;
use crate::app::AppState;
use crate::engine::approval::{ApprovalError, Request};

/// How many pending approvals the page shows.
const ROWS: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct ApprovalsQuery {
    /// One job's approval (the page `approval.url` names).
    pub job: Option<String>,
    /// What the button before did (`approved`, `rejected`).
    pub done: Option<String>,
}

/// One request as the page shows it.
fn row(r: &Request, public: Option<&str>, event: Option<Value>) -> Value {
    let mut v = r.view(public);
    v["actions_text"] = Value::String(views::pretty(&Value::Array(r.actions.clone())));
    v["event_text"] = Value::String(event.as_ref().map(views::pretty).unwrap_or_default());
    v
}

/// `GET /console/approvals`: pending approvals, oldest first; with `?job=`, that job's (also
/// once decided: who, when, why).
pub async fn list(
    v: Viewer,
    State(st): State<AppState>,
    Query(q): Query<ApprovalsQuery>,
) -> Response {
    let engine = &st.engine;
    let requests = match &q.job {
        Some(job) => match engine.approval(job).await {
            Ok(r) => r.into_iter().collect(),
            Err(e) => return unavailable(&v, e),
        },
        None => match engine.pending_approvals(ROWS).await {
            Ok(r) => r,
            Err(e) => return unavailable(&v, e),
        },
    };
    let mut rows = Vec::with_capacity(requests.len());
    for r in &requests {
        let event = match engine.store().log.event(&r.event_id).await {
            Ok(e) => e.map(|e| e.body().clone()),
            Err(e) => return unavailable(&v, e),
        };
        rows.push(row(r, engine.public_url(), event));
    }
    let notice = match q.done.as_deref() {
        Some("approved") => {
            Some("Approved: the job runs its actions when it looks next (within seconds).")
        }
        Some("rejected") => Some("Rejected: the job is done without running anything."),
        _ => None,
    };
    page(
        "approvals.html",
        json!({
            "frame": frame(&v, "approvals"),
            "approver": v.may(Role::Approver).is_ok(),
            "one": q.job.is_some(),
            "requests": rows,
            "notice": notice,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    pub job: String,
    #[serde(default)]
    pub token: String,
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(default)]
    pub comment: String,
}

/// `POST /console/decide`: the Approve and Reject buttons.
pub async fn decide(v: Viewer, State(st): State<AppState>, Form(f): Form<DecideForm>) -> Response {
    if let Err(e) = auth::check_post(&v, &f.token) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e.to_string());
    }
    if let Err(e) = v.may(Role::Approver) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e);
    }
    let approved = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return message(
                Some(&v),
                StatusCode::BAD_REQUEST,
                "Unknown decision",
                "the decision is approve or reject",
            );
        }
    };
    let comment = Some(f.comment.trim().to_string()).filter(|c| !c.is_empty());
    match st
        .engine
        .decide(&f.job, &v.who, approved, comment.clone())
        .await
    {
        Ok(_) => {}
        Err(ApprovalError::Store(e)) => return unavailable(&v, e),
        Err(e) => {
            let status = crate::app::ApiError::from(e);
            let (code, _) = status.status_and_code();
            return message(Some(&v), code, "Not decided", &status.to_string());
        }
    }
    let what = if approved { "approve" } else { "reject" };
    if let Err(e) = crate::app::audit(&st, &v.who, what, &f.job, comment).await {
        return message(
            Some(&v),
            e.status_and_code().0,
            "Not recorded",
            &e.to_string(),
        );
    }
    let done = if approved { "approved" } else { "rejected" };
    let to = format!(
        "/console/approvals?job={}&done={done}",
        auth::urlencode(&f.job)
    );
    secured(Redirect::to(&to).into_response())
}
