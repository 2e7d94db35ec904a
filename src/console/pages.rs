//! The console's pages: handlers that read the history (through the `History` trait only, so
//! they work on every storage backend) and the rule set, and render templates.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::{self, Viewer};
use super::render::{page, page_with, secured};
use super::views;
use crate::app::AppState;
use crate::domain::{JobState, now_ms};
use crate::engine::Rerun;
use crate::store::{EventFilter, EventRow, EventStatus, JobFilter, StoreError};

/// Rows the event list and the dead letters show.
pub const PAGE_ROWS: usize = 100;
/// Events and jobs the overview reads at most (newest first) to draw the last hour.
pub const OVERVIEW_ROWS: usize = 2_000;

/// The status filter's choices: the stored statuses plus `duplicate` (redelivered).
const STATUSES: [&str; 6] = [
    "unmatched",
    "pending",
    "done",
    "failed",
    "throttled",
    "duplicate",
];

/// What every page's layout needs.
#[derive(Serialize)]
pub(super) struct Frame<'a> {
    nav: &'a str,
    form_token: &'a str,
    session: bool,
    /// The viewer may replay and re-run (operator or higher): the buttons are shown.
    operator: bool,
}

pub(super) fn frame<'a>(v: &'a Viewer, nav: &'a str) -> Frame<'a> {
    Frame {
        nav,
        form_token: &v.form_token,
        session: v.session,
        operator: v.may(crate::access::Role::Operator).is_ok(),
    }
}

/// A page that says one thing (an error, a refusal).
fn message(v: Option<&Viewer>, status: StatusCode, title: &str, text: &str) -> Response {
    let (form_token, session) = v.map_or((String::new(), false), |v| {
        (v.form_token.clone(), v.session)
    });
    page_with(
        status,
        "message.html",
        json!({
            "frame": Frame { nav: "", form_token: &form_token, session, operator: false },
            "title": title, "message": text,
        }),
    )
}

fn unavailable(v: &Viewer, e: StoreError) -> Response {
    tracing::warn!(error = %e, "console: the history cannot be read");
    message(
        Some(v),
        StatusCode::SERVICE_UNAVAILABLE,
        "History unavailable",
        &format!("the history cannot be read right now: {e}"),
    )
}

/// An optional query value; an empty form field means "any".
fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EventsQuery {
    pub source: Option<String>,
    pub status: Option<String>,
    pub rule: Option<String>,
    pub since: Option<String>,
}

/// `GET /`: the events, newest first, filtered; new ones arrive live.
pub async fn events(
    v: Viewer,
    State(st): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let status_name = given(&q.status);
    let duplicate = status_name.as_deref() == Some("duplicate");
    let status = match status_name.as_deref() {
        None | Some("duplicate") => None,
        Some(s) => match EventStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return message(
                    Some(&v),
                    StatusCode::BAD_REQUEST,
                    "Unknown status",
                    &format!("status `{s}`: use one of {}", STATUSES.join(", ")),
                );
            }
        },
    };
    let since = match given(&q.since) {
        None => None,
        Some(s) => match crate::app::parse_since(&s) {
            Ok(ms) => Some(ms),
            Err(e) => {
                return message(
                    Some(&v),
                    StatusCode::BAD_REQUEST,
                    "Bad time",
                    &e.to_string(),
                );
            }
        },
    };
    let filter = EventFilter {
        source: given(&q.source),
        since,
        status,
        rule: given(&q.rule),
        // Redelivered events are found among the newest thousand.
        limit: if duplicate { 1000 } else { PAGE_ROWS },
    };
    let mut rows: Vec<EventRow> = match st.engine.store().history.events(filter).await {
        Ok(r) => r,
        Err(e) => return unavailable(&v, e),
    };
    if duplicate {
        rows.retain(|r| r.duplicates > 0);
        rows.truncate(PAGE_ROWS);
    }
    let rules = st.engine.rules();
    let sources: Vec<&str> = rules.sources.iter().map(|s| s.name.as_str()).collect();
    let mut rule_names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
    rule_names.sort_unstable();
    rule_names.dedup();
    // Live rows: the same filters, except time (new events are always recent) and statuses a
    // new event cannot have yet.
    let live = if duplicate || matches!(status, Some(EventStatus::Done) | Some(EventStatus::Failed))
    {
        None
    } else {
        let mut qs = Vec::new();
        for (k, val) in [
            ("source", &q.source),
            ("rule", &q.rule),
            ("status", &q.status),
        ] {
            if let Some(x) = given(val) {
                qs.push(format!("{k}={}", auth::urlencode(&x)));
            }
        }
        Some(format!("/console/live?{}", qs.join("&")))
    };
    // `keep: matched` sources: what they did not store, a sample (live rows come over SSE).
    let sampled = rules.sources.iter().any(|s| {
        s.listening
            .as_ref()
            .is_some_and(|l| l.keep == crate::sources::Keep::Matched)
    }) && given(&q.rule).is_none();
    let unmatched: Vec<crate::unmatched::Sample> = if sampled {
        crate::unmatched::recent(given(&q.source).as_deref())
            .into_iter()
            .map(|s| (*s).clone())
            .collect()
    } else {
        Vec::new()
    };
    page(
        "events.html",
        json!({
            "frame": frame(&v, "events"),
            "rows": rows, "live": live, "sources": sources, "rules": rule_names,
            "sampled": sampled, "unmatched": unmatched,
            "statuses": STATUSES, "q": &q, "limit": PAGE_ROWS,
        }),
    )
}

/// One attempt as the event page shows it.
#[derive(Serialize)]
struct AttemptView {
    run_id: String,
    attempt: u32,
    phase: &'static str,
    action_index: u32,
    action: String,
    rendered: String,
    status: &'static str,
    started_at: String,
    duration: Option<String>,
    exit_code: Option<i64>,
    stdout: Option<String>,
    stderr: Option<String>,
    error: Option<String>,
    http_status: Option<i64>,
    result: Option<String>,
    ticket: Option<String>,
}

#[derive(Serialize)]
struct JobView {
    id: String,
    rulebook: String,
    rule: String,
    status: JobState,
    /// The status badge: the job's state, or `not-fired` for an absence whose missing event
    /// came in time (done without running anything).
    badge: &'static str,
    error: Option<String>,
    /// Its rule changed since the match: a re-run runs the fix unless asked otherwise.
    rule_changed: bool,
    /// A maintenance window holds it: `window (until …)`.
    held: Option<String>,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    pub done: Option<String>,
}

/// What a redirect after a button says (fixed texts: nothing from the request is echoed).
fn notice_text(n: &Notice) -> Option<&'static str> {
    match n.done.as_deref() {
        Some("rerun") => Some("Re-run queued: the new attempt appears below when it starts."),
        Some("rerun-current") => Some(
            "Re-run queued on the current version of its rule (it changed since the match: your fix), from its first action.",
        ),
        Some("rerun-matched") => Some(
            "Re-run queued on the rule version it matched (the rule changed since), from the action that failed.",
        ),
        Some("replay") => {
            Some("This is the replay of the event you chose, matched against the current rules.")
        }
        _ => None,
    }
}

/// `GET /console/events/{id}`: the event's timeline.
pub async fn event(
    v: Viewer,
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    let detail = match st.engine.store().history.event_detail(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return message(
                Some(&v),
                StatusCode::NOT_FOUND,
                "No such event",
                "no event has this id (it may have been pruned)",
            );
        }
        Err(e) => return unavailable(&v, e),
    };
    let rules = st.engine.rules();
    let not_matched = crate::app::not_matched(&rules, &detail);
    let held = st.engine.held_jobs();
    let jobs: Vec<JobView> = detail
        .matches
        .iter()
        .map(|m| JobView {
            id: m.id.clone(),
            rulebook: m.rulebook.clone(),
            rule: m.rule.clone(),
            status: m.status,
            badge: match &m.error {
                Some(e)
                    if m.status == JobState::Done && e.starts_with(crate::domain::DID_NOT_FIRE) =>
                {
                    "not-fired"
                }
                Some(e)
                    if m.status == JobState::Done && e.starts_with(crate::domain::SHADOW_NOTE) =>
                {
                    "shadow"
                }
                // Closed by a maintenance window (engine/windows.rs).
                Some(e)
                    if m.status == JobState::Done && e.starts_with(crate::engine::SKIPPED_NOTE) =>
                {
                    "skipped"
                }
                _ => m.status.as_str(),
            },
            error: m.error.clone(),
            rule_changed: !rules.rules.iter().any(|r| {
                r.rulebook == m.rulebook && r.name == m.rule && r.fingerprint == m.fingerprint
            }),
            held: held.iter().find(|h| h.job == m.id).map(|h| {
                let until = crate::domain::rfc3339(h.until);
                format!("`{}` (during: {}) until {until}", h.window, h.during)
            }),
            attempts: m
                .attempts
                .iter()
                .map(|a| AttemptView {
                    run_id: a.run_id.clone(),
                    attempt: a.attempt,
                    phase: a.phase,
                    action_index: a.action_index,
                    action: a.action.clone(),
                    rendered: views::pretty(&a.rendered),
                    status: a.status,
                    started_at: a.started_at.clone(),
                    duration: a.duration.clone(),
                    exit_code: a.exit_code,
                    stdout: a.stdout.clone().filter(|s| !s.is_empty()),
                    stderr: a.stderr.clone().filter(|s| !s.is_empty()),
                    error: a.error.clone(),
                    http_status: a.http_status,
                    result: a.result.as_ref().map(views::pretty),
                    ticket: views::ticket_link(a.result.as_ref()),
                })
                .collect(),
        })
        .collect();
    page(
        "event.html",
        json!({
            "frame": frame(&v, "events"),
            "e": {
                "id": detail.id, "source": detail.source, "kind": detail.kind,
                "received_at": detail.received_at, "delivery_id": detail.delivery_id,
                "duplicates": detail.duplicates, "depth": detail.depth,
                "status": detail.status, "parent": detail.parent, "children": detail.children,
                "peer": detail.headers.get(crate::verify::PEER_HEADER).and_then(Value::as_str),
            },
            "headers": views::masked_headers(&detail.headers),
            "body": views::pretty(&detail.body),
            "jobs": jobs, "throttled": detail.throttled, "not_matched": not_matched,
            "correlations": detail.correlations,
            "notice": notice_text(&n),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    pub event: String,
    #[serde(default)]
    pub token: String,
}

/// `POST /console/replay`: the event again, as a new event, on the current rules.
pub async fn replay(v: Viewer, State(st): State<AppState>, Form(f): Form<ReplayForm>) -> Response {
    if let Err(e) = auth::check_post(&v, &f.token) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e.to_string());
    }
    if let Err(e) = v.may(crate::access::Role::Operator) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e);
    }
    match st.engine.replay(&f.event).await {
        Ok(Some(done)) => match crate::app::audit(&st, &v.who, "replay", &f.event, None).await {
            Err(e) => message(
                Some(&v),
                e.status_and_code().0,
                "Not recorded",
                &e.to_string(),
            ),
            Ok(()) => secured(
                Redirect::to(&format!(
                    "/console/events/{}?done=replay",
                    auth::urlencode(&done.id)
                ))
                .into_response(),
            ),
        },
        Ok(None) => message(
            Some(&v),
            StatusCode::NOT_FOUND,
            "No such event",
            "no event has this id",
        ),
        Err(e) => unavailable(&v, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct RerunForm {
    pub job: String,
    #[serde(default)]
    pub token: String,
    /// Where to go after: `dead-letters`, or the job's event page.
    pub back: Option<String>,
    /// Present: run the rule version the job matched even if the rule changed since.
    pub as_matched: Option<String>,
}

/// `POST /console/rerun`: a dead letter runs again.
pub async fn rerun(v: Viewer, State(st): State<AppState>, Form(f): Form<RerunForm>) -> Response {
    if let Err(e) = auth::check_post(&v, &f.token) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e.to_string());
    }
    if let Err(e) = v.may(crate::access::Role::Operator) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e);
    }
    let event = match st.engine.store().history.job(&f.job).await {
        Ok(Some((job, _))) => job.event_id,
        Ok(None) => {
            return message(
                Some(&v),
                StatusCode::NOT_FOUND,
                "No such job",
                "no job has this id",
            );
        }
        Err(e) => return unavailable(&v, e),
    };
    let as_matched = f.as_matched.as_deref().is_some_and(|v| !v.is_empty());
    let done = match st.engine.rerun(&f.job, as_matched).await {
        Ok(Rerun::AsMatched { changed: false }) => "rerun",
        Ok(Rerun::AsMatched { changed: true }) => "rerun-matched",
        Ok(Rerun::OnCurrentRule) => "rerun-current",
        Ok(Rerun::NotFound) => {
            return message(
                Some(&v),
                StatusCode::NOT_FOUND,
                "No such job",
                "no job has this id",
            );
        }
        Ok(Rerun::VersionGone) => {
            return message(
                Some(&v),
                StatusCode::CONFLICT,
                "Version gone",
                "the rule version this job matched is neither loaded nor archived; re-run it on the current version",
            );
        }
        Ok(Rerun::NotFailed(_)) => {
            return message(
                Some(&v),
                StatusCode::CONFLICT,
                "Not a dead letter",
                "this job has not failed for good (it may be running again already)",
            );
        }
        Ok(Rerun::RuleGone) => {
            return message(
                Some(&v),
                StatusCode::CONFLICT,
                "Rule gone",
                "the rule of this job no longer exists; it cannot be re-run",
            );
        }
        Err(e) => return unavailable(&v, e),
    };
    if let Err(e) = crate::app::audit(&st, &v.who, "rerun", &f.job, None).await {
        return message(
            Some(&v),
            e.status_and_code().0,
            "Not recorded",
            &e.to_string(),
        );
    }
    let to = if f.back.as_deref() == Some("dead-letters") {
        format!("/console/dead-letters?done={done}")
    } else {
        format!("/console/events/{}?done={done}", auth::urlencode(&event))
    };
    secured(Redirect::to(&to).into_response())
}

/// `GET /console/dead-letters`: failed jobs, newest first.
pub async fn dead_letters(
    v: Viewer,
    State(st): State<AppState>,
    Query(n): Query<Notice>,
) -> Response {
    let filter = JobFilter {
        state: Some(JobState::Failed),
        rule: None,
        limit: PAGE_ROWS,
    };
    let jobs = match st.engine.store().history.jobs(filter).await {
        Ok(jobs) => jobs,
        Err(e) => return unavailable(&v, e),
    };
    // What explains each error: the stderr of its last failed attempt.
    let mut rows = Vec::with_capacity(jobs.len());
    for j in jobs {
        let stderr = match st.engine.store().history.event_detail(&j.event_id).await {
            Ok(Some(d)) => last_stderr(&d, &j.id),
            Ok(None) => None,
            Err(e) => return unavailable(&v, e),
        };
        let mut row = serde_json::to_value(&j).unwrap_or_default();
        row["stderr"] = json!(stderr);
        rows.push(row);
    }
    page(
        "dead_letters.html",
        json!({
            "frame": frame(&v, "dead-letters"),
            "jobs": rows, "limit": PAGE_ROWS, "notice": notice_text(&n),
        }),
    )
}

/// The stderr of a job's last failed attempt (its end, at most 2,000 characters).
fn last_stderr(d: &crate::store::EventDetail, job: &str) -> Option<String> {
    let m = d.matches.iter().find(|m| m.id == job)?;
    let a = m.attempts.iter().rev().find(|a| {
        a.status == "failed" && a.stderr.as_deref().is_some_and(|s| !s.trim().is_empty())
    })?;
    let text = a.stderr.as_deref()?.trim_end();
    let skip = text.chars().count().saturating_sub(2000);
    Some(text.chars().skip(skip).collect())
}

/// `GET /console/rules`: sources, rules with their counts, the last reload.
pub async fn rules(v: Viewer, State(st): State<AppState>) -> Response {
    let set = st.engine.rules();
    let counts = st.engine.rule_counts();
    let sources: Vec<Value> = set
        .sources
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "kind": s.verifier.kind(), "path": s.path, "rulebook": s.rulebook}))
        .collect();
    let rules: Vec<Value> = set
        .rules
        .iter()
        .map(|r| {
            let [matched, throttled] = counts.get(&r.key).copied().unwrap_or([0, 0]);
            serde_json::json!({
                "rulebook": r.rulebook, "name": r.name,
                "sources": r.sources.as_ref().map(|s| s.join(", ")),
                "condition": r.condition.describe(),
                "actions": r.actions.len(), "on_failure": r.on_failure.len(),
                "throttle": r.throttle.as_ref().map(|t| humantime::format_duration(t.window).to_string()),
                "matched": matched, "throttled": throttled,
            })
        })
        .collect();
    let reload = st.reloader.as_ref().map(|r| r.status());
    page(
        "rules.html",
        json!({
            "frame": frame(&v, "rules"),
            "sources": sources, "rules": rules, "reload": reload, "warnings": &set.warnings,
        }),
    )
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct TryForm {
    pub source: Option<String>,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub token: String,
}

/// `GET /console/try`: the form.
pub async fn try_form(v: Viewer, State(st): State<AppState>) -> Response {
    try_page(&v, &st, &TryForm::default(), None, None)
}

/// `POST /console/try`: which rules an event would match and why, and the rendered actions,
/// without running anything (what `rulehook test` prints).
pub async fn try_run(v: Viewer, State(st): State<AppState>, Form(f): Form<TryForm>) -> Response {
    if let Err(e) = auth::check_post(&v, &f.token) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e.to_string());
    }
    let set = st.engine.rules();
    let source = given(&f.source);
    if let Some(s) = &source
        && set.source(s).is_none()
    {
        let err = format!("no source named `{s}`");
        return try_page(&v, &st, &f, None, Some(err));
    }
    let body: Value = match serde_json::from_str(&f.event) {
        Ok(b) => b,
        Err(e) => {
            return try_page(
                &v,
                &st,
                &f,
                None,
                Some(format!("the event is not valid JSON: {e}")),
            );
        }
    };
    let mut hdrs = Map::new();
    for line in f.headers.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((n, val)) => {
                hdrs.insert(
                    n.trim().to_ascii_lowercase(),
                    Value::String(val.trim().to_string()),
                );
            }
            None => {
                let err = format!("header `{line}` must be `Name: value`");
                return try_page(&v, &st, &f, None, Some(err));
            }
        }
    }
    let report: Vec<Value> = crate::rules::dry_run(&set, source.as_deref(), &body, &hdrs)
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "rulebook": r.rulebook, "rule": r.rule, "matched": r.matched, "why_not": r.why_not,
                "other_source": r.other_source,
                "actions": r.actions.iter().map(views::pretty).collect::<Vec<_>>(),
                "on_failure": r.on_failure.iter().map(views::pretty).collect::<Vec<_>>(),
                "throttle": r.throttle,
            })
        })
        .collect();
    try_page(&v, &st, &f, Some(report), None)
}

fn try_page(
    v: &Viewer,
    st: &AppState,
    f: &TryForm,
    report: Option<Vec<Value>>,
    error: Option<String>,
) -> Response {
    let set = st.engine.rules();
    let sources: Vec<&str> = set.sources.iter().map(|s| s.name.as_str()).collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page_with(
        status,
        "try.html",
        json!({
            "frame": frame(v, "try"),
            "sources": sources, "report": report, "error": error,
            "form": { "source": given(&f.source), "event": f.event, "headers": f.headers },
        }),
    )
}

/// `GET /console/overview`: the last hour per source and per action result, the journal
/// size, jobs pending.
pub async fn overview(v: Viewer, State(st): State<AppState>) -> Response {
    let now = now_ms();
    let hour = now - 3_600_000;
    let history = &st.engine.store().history;
    let events = history
        .events(EventFilter {
            since: Some(hour),
            limit: OVERVIEW_ROWS,
            ..EventFilter::default()
        })
        .await;
    let jobs = history
        .jobs(JobFilter {
            limit: OVERVIEW_ROWS,
            ..JobFilter::default()
        })
        .await;
    let (events, jobs) = match (events, jobs) {
        (Ok(e), Ok(j)) => (e, j),
        (Err(e), _) | (_, Err(e)) => return unavailable(&v, e),
    };
    let capped = events.len() >= OVERVIEW_ROWS;
    let points: Vec<(i64, String)> = events
        .iter()
        .map(|e| (views::parse_ms(&e.received_at), e.source.clone()))
        .collect();
    let by_source = views::chart(&points, &[], now, 12, 300_000);
    let results: Vec<(i64, String)> = jobs
        .iter()
        .map(|j| {
            (
                views::parse_ms(&j.updated_at),
                j.status.as_str().to_string(),
            )
        })
        .filter(|(t, _)| *t >= hour)
        .collect();
    let by_result = views::chart(&results, &["done", "failed", "pending"], now, 12, 300_000);
    let depth = st.engine.store().queue.depth();
    let journal = st
        .console
        .data_dir
        .as_deref()
        .map(journal_size)
        .map(views::human_bytes);
    page(
        "overview.html",
        json!({
            "frame": frame(&v, "overview"),
            "by_source": by_source, "by_result": by_result,
            "events_last_hour": events.len(), "capped": capped, "cap": OVERVIEW_ROWS,
            "results_last_hour": results.len(),
            "depth": { "ready": depth.ready, "delayed": depth.delayed, "leased": depth.leased },
            "journal": journal,
        }),
    )
}

/// Bytes the embedded store's files take.
fn journal_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    pub next: Option<String>,
}

/// `GET /console/login`: the admin token form.
pub async fn login_form(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    login_page(
        &st,
        &auth::safe_next(q.next.as_deref()),
        None,
        StatusCode::OK,
    )
}

fn login_page(st: &AppState, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    page_with(
        status,
        "login.html",
        json!({
            "frame": Frame { nav: "login", form_token: &st.console.login_token(), session: false, operator: false },
            "next": next, "error": error, "configured": st.admin_token.is_some()
                || st.guard.users.as_ref().is_some_and(|u| u.list().is_ok_and(|l| !l.is_empty())),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub admin_token: String,
    pub next: Option<String>,
}

/// `POST /console/login`: the admin token in exchange for a session cookie.
pub async fn login(State(st): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = auth::safe_next(f.next.as_deref());
    if let Err(e) = auth::check_login_post(&st, &f.token) {
        return login_page(&st, &next, Some(&e.to_string()), StatusCode::FORBIDDEN);
    }
    let given = f.admin_token.trim();
    let admin = st
        .admin_token
        .as_ref()
        .filter(|want| crate::verify::mac::secret_eq(want.as_bytes(), given.as_bytes()));
    let user = match (&st.guard.users, admin, given.is_empty()) {
        (Some(users), None, false) => users.user_by_token(given).ok().flatten(),
        _ => None,
    };
    let (value, who) = match (admin, user) {
        (Some(want), _) => (
            st.console.session_for(want),
            crate::access::Principal {
                name: "admin-token".into(),
                role: crate::access::Role::Admin,
            },
        ),
        (None, Some(u)) => (
            st.console.user_session(&u.name, &u.token_sha256),
            crate::access::Principal {
                name: u.name,
                role: u.role,
            },
        ),
        (None, None) => {
            tracing::info!("console: a sign-in with a wrong token");
            return login_page(
                &st,
                &next,
                Some("that is neither the admin token nor a user's token"),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    if let Err(e) = crate::app::audit(&st, &who, "login", "console", None).await {
        return login_page(
            &st,
            &next,
            Some(&e.to_string()),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        auth::COOKIE,
        value
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(resp)
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    pub token: String,
}

/// `POST /console/logout`: forgets the session cookie.
pub async fn logout(v: Viewer, Form(f): Form<LogoutForm>) -> Response {
    if let Err(e) = auth::check_post(&v, &f.token) {
        return message(Some(&v), StatusCode::FORBIDDEN, "Refused", &e.to_string());
    }
    let mut resp = Redirect::to("/console/login").into_response();
    let gone = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(v) = gone.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    secured(resp)
}
