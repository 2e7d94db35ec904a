//! The approvals page: every job awaiting a decision with its event, the actions that would
//! run (rendered, credentials masked) and Approve/Reject buttons (approver or admin; the form
//! token as for every console button). `approval.url` points here (`?job=…`).

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Viewer};
use super::error::{OrPage, PageError};
use super::pages::frame;
use super::render::{page, secured};
use super::views;
use crate::access::Role;
use crate::app::{ApiError, AppState};
use crate::engine::approval::Request;

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
fn row(r: &Request, public: Option<&str>, event: Option<Value>, if_undecided: String) -> Value {
    let mut v = r.view(public);
    v["if_undecided"] = Value::String(if_undecided);
    let actions = r.actions.iter().map(crate::actions::for_people).collect();
    v["actions_text"] = Value::String(views::pretty(&Value::Array(actions)));
    v["event_text"] = Value::String(event.as_ref().map(views::pretty).unwrap_or_default());
    v
}

/// `GET /console/approvals`: pending approvals, oldest first; with `?job=`, that job's (also
/// once decided: who, when, why).
pub async fn list(
    v: Viewer,
    State(st): State<AppState>,
    Query(q): Query<ApprovalsQuery>,
) -> Result<Response, PageError> {
    let engine = &st.engine;
    let requests = match &q.job {
        Some(job) => engine
            .approval(job)
            .await
            .or_page(&v)?
            .into_iter()
            .collect(),
        None => engine.pending_approvals(ROWS).await.or_page(&v)?,
    };
    let mut rows = Vec::with_capacity(requests.len());
    for r in &requests {
        let event = engine.store().log.event(&r.event_id).await.or_page(&v)?;
        rows.push(row(
            r,
            engine.public_url(),
            event.map(|e| e.body().clone()),
            engine.if_undecided(r),
        ));
    }
    let notice = match q.done.as_deref() {
        Some("approved") => {
            Some("Approved: the job runs its actions when it looks next (within seconds).")
        }
        Some("rejected") => Some("Rejected: the job is done without running anything."),
        _ => None,
    };
    Ok(page(
        "approvals.html",
        json!({
            "frame": frame(&v, "approvals"),
            "approver": v.may(Role::Approver).is_ok(),
            "max_comment": crate::domain::MAX_COMMENT_BYTES,
            "one": q.job.is_some(),
            "requests": rows,
            "notice": notice,
        }),
    ))
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
pub async fn decide(
    v: Viewer,
    State(st): State<AppState>,
    Form(f): Form<DecideForm>,
) -> Result<Response, PageError> {
    auth::check_post(&v, &f.token).or_page(&v)?;
    v.may(Role::Approver).or_page(&v)?;
    let approved = match f.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            let e = ApiError::BadQuery("the decision is approve or reject".into());
            return Err(PageError::new(&v, e));
        }
    };
    crate::app::check_comment(Some(&f.comment)).or_page(&v)?;
    let comment = Some(f.comment.trim().to_string()).filter(|c| !c.is_empty());
    let (_, decision) = st
        .engine
        .decide(&f.job, &v.who, approved, comment)
        .await
        .or_page(&v)?;
    let what = if approved { "approve" } else { "reject" };
    crate::app::audit(&st, &v.who, what, &f.job, decision.comment)
        .await
        .or_page(&v)?;
    let done = if approved { "approved" } else { "rejected" };
    let to = format!(
        "/console/approvals?job={}&done={done}",
        auth::urlencode(&f.job)
    );
    Ok(secured(Redirect::to(&to).into_response()))
}
