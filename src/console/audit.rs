//! The audit trail as a console page (`GET /console/audit`): who changed what, when and why,
//! newest first — the same records as `GET /api/audit`, for people who do not read JSON.
//! Anyone let into the console may read it (viewer and up), as the API allows.

use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Viewer;
use super::error::{OrPage, PageError};
use super::pages::frame;
use super::render::page;
use crate::app::AppState;

/// Records the page shows at most.
const ROWS: usize = 500;

/// The page's filters: a person, a kind of write (`login`, `rerun`, `login.refused` …).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AuditQuery {
    pub who: Option<String>,
    pub what: Option<String>,
}

/// `GET /console/audit`: the newest writes first, filtered by person and kind.
pub async fn audit(
    v: Viewer,
    State(st): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let state = st.engine.store().state.clone();
    let all = crate::access::audit::recent(
        state.as_ref(),
        crate::access::audit::KEEP
            + crate::access::audit::KEEP_REFUSED
            + crate::access::audit::KEEP_LOGINS,
    )
    .await
    .or_page(&v)?;
    let mut whats: Vec<&str> = KINDS.to_vec();
    whats.extend(all.iter().map(|r| r.what.as_str()));
    whats.sort_unstable();
    whats.dedup();
    let want = |f: &Option<String>, value: &str| {
        f.as_deref()
            .map(str::trim)
            .is_none_or(|f| f.is_empty() || f == value)
    };
    let rows: Vec<_> = all
        .iter()
        .filter(|r| want(&q.who, &r.who) && kind_is(q.what.as_deref(), &r.what))
        .take(ROWS)
        .map(|r| json!({"record": r, "event": event_of(&r.what, &r.target)}))
        .collect();
    Ok(page(
        "audit.html",
        json!({
            "frame": frame(&v, "audit"),
            "rows": rows, "whats": whats, "q": &q, "limit": ROWS,
        }),
    ))
}

/// The kinds the filter always offers; `user` stands for every user change (`user.add` …).
const KINDS: [&str; 11] = [
    "approve",
    "login",
    "login.refused",
    "reject",
    "replay",
    "rerun",
    "user",
    "user.add",
    "user.passwd",
    "user.remove",
    "user.role",
];

/// Whether a record of kind `what` passes the filter `want`: the same kind, or a kind under it
/// (`user` takes `user.add`, `user.remove` …).
fn kind_is(want: Option<&str>, what: &str) -> bool {
    match want.map(str::trim) {
        None | Some("") => true,
        Some(w) => {
            what == w
                || what
                    .strip_prefix(w)
                    .is_some_and(|rest| rest.starts_with('.'))
                    && w != "login"
        }
    }
}

/// The event a record is about, for a link: a replayed event, or the event of a job (a job id
/// is `<event id>:<rule key>`).
fn event_of(what: &str, target: &str) -> Option<String> {
    match what {
        "replay" => Some(target.to_string()),
        "rerun" | "approve" | "reject" => target.split_once(':').map(|(e, _)| e.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_kind_takes_every_user_change() {
        assert!(super::kind_is(Some("user"), "user.add"));
        assert!(super::kind_is(Some("user"), "user.passwd"));
        assert!(!super::kind_is(Some("user"), "username"));
        assert!(!super::kind_is(Some("login"), "login.refused"));
        assert!(super::kind_is(Some("login.refused"), "login.refused"));
        assert!(super::kind_is(None, "rerun"));
    }

    #[test]
    fn jobs_and_replays_link_to_their_event() {
        assert_eq!(
            super::event_of("rerun", "ev1:deploy").as_deref(),
            Some("ev1")
        );
        assert_eq!(super::event_of("replay", "ev2").as_deref(), Some("ev2"));
        assert_eq!(super::event_of("login", "console"), None);
    }
}
