//! The console's pages: handlers that read the store through its traits (the `History` for
//! events and jobs, `WorkQueue::depth` for the overview, so they work on every storage backend)
//! and the rule set, and render templates. A handler that fails returns a [`PageError`] (with
//! `?`), which renders itself.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::{self, Viewer};
use super::error::{OrPage, PageError};
use super::render::{page, page_with, secured};
use super::views;
use crate::app::audited::Queued;
use crate::app::{ApiError, AppState};
use crate::domain::{JobState, now_ms};
use crate::engine::ModeChange;
use crate::store::{EventFilter, EventRow, EventStatus, JobFilter, JobStatus};

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
    pub nav: &'a str,
    pub form_token: &'a str,
    pub session: bool,
    /// The viewer may replay and re-run (operator or higher): the buttons are shown.
    pub operator: bool,
}

pub(super) fn frame<'a>(v: &'a Viewer, nav: &'a str) -> Frame<'a> {
    Frame {
        nav,
        form_token: &v.form_token,
        session: v.session,
        operator: v.may(crate::access::Role::Operator).is_ok(),
    }
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
) -> Result<Response, PageError> {
    let status_name = given(&q.status);
    let duplicate = status_name.as_deref() == Some("duplicate");
    let status = match status_name.as_deref() {
        None | Some("duplicate") => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            PageError::new(
                &v,
                ApiError::BadQuery(format!("status `{s}`: use one of {}", STATUSES.join(", "))),
            )
        })?),
    };
    let since = match given(&q.since) {
        None => None,
        Some(s) => Some(crate::app::parse_since(&s).or_page(&v)?),
    };
    let filter = EventFilter {
        source: given(&q.source),
        since,
        status,
        rule: given(&q.rule),
        // Redelivered events are found among the newest thousand.
        limit: if duplicate { 1000 } else { PAGE_ROWS },
    };
    let mut rows: Vec<EventRow> = st.engine.store().history.events(filter).await.or_page(&v)?;
    if duplicate {
        rows.retain(|r| r.duplicates > 0);
        rows.truncate(PAGE_ROWS);
    }
    let rules = st.engine.rules();
    summarize(st.engine.store().history.as_ref(), &rules, &mut rows).await;
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
    Ok(page(
        "events.html",
        json!({
            "frame": frame(&v, "events"),
            "rows": rows, "live": live, "sources": sources, "rules": rule_names,
            "sampled": sampled, "unmatched": unmatched,
            "colours": views::source_colours(&sources),
            "statuses": STATUSES, "q": &q, "limit": PAGE_ROWS,
        }),
    ))
}

/// Bodies larger than this are not read for a summary (the line says the delivery id instead).
const SUMMARY_MAX_BODY: usize = 256 * 1024;

/// Fills each row's one-line summary from its stored headers and body and its source's
/// template. A history that cannot be read leaves the lines empty: the list still shows.
pub(super) async fn summarize(
    history: &dyn crate::store::History,
    rules: &crate::rules::RuleSet,
    rows: &mut [EventRow],
) {
    let ids = rows.iter().map(|r| r.id.clone()).collect();
    let contents = match history.contents(ids, SUMMARY_MAX_BODY).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "console: no summaries");
            return;
        }
    };
    let by_id: std::collections::HashMap<&str, &crate::store::EventContent> =
        contents.iter().map(|c| (c.id.as_str(), c)).collect();
    for row in rows.iter_mut() {
        let Some(c) = by_id.get(row.id.as_str()) else {
            continue;
        };
        let headers = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let line = rules
            .summaries
            .summarize(&row.source, &row.kind, &headers, &c.body);
        row.summary = Some(crate::secrets::mask_owned(line));
    }
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
    status: JobStatus,
    /// Who approved or rejected it, when and why, in one line.
    decision: Option<String>,
    /// Awaiting approval: why and until when.
    awaiting: Option<String>,
    /// Awaiting approval: its page on the console.
    approval_link: Option<String>,
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
        Some("rerun-current-live") => Some(
            "Re-run queued on the current version of its rule (it changed since the match: your fix), from its first action, and it is now live (it matched in shadow mode): its actions will really run.",
        ),
        Some("rerun-current-shadow") => Some(
            "Re-run queued on the current version of its rule (it changed since the match: your fix), from its first action, and it is now in shadow mode (it matched live): its actions will not run.",
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
) -> Result<Response, PageError> {
    let detail = st
        .engine
        .store()
        .history
        .event_detail(&id)
        .await
        .or_page(&v)?
        .ok_or(ApiError::NoSuchEvent)
        .or_page(&v)?;
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
            decision: m.decision.as_ref().map(|d| d.summary.clone()),
            awaiting: m
                .awaiting
                .as_ref()
                .map(|a| format!("{} (on_timeout decides at {})", a.reason, a.deadline)),
            approval_link: m
                .awaiting
                .as_ref()
                .map(|_| format!("/console/approvals?job={}", auth::urlencode(&m.id))),
            badge: match &m.error {
                Some(e)
                    if m.status == JobStatus::Done
                        && e.starts_with(crate::domain::DID_NOT_FIRE) =>
                {
                    "not-fired"
                }
                Some(e)
                    if m.status == JobStatus::Done && e.starts_with(crate::domain::SHADOW_NOTE) =>
                {
                    "shadow"
                }
                // Closed by a maintenance window (engine/windows.rs).
                Some(e)
                    if m.status == JobStatus::Done
                        && e.starts_with(crate::engine::SKIPPED_NOTE) =>
                {
                    "skipped"
                }
                _ => m.status.as_str(),
            },
            error: m.error.clone(),
            rule_changed: !rules.rules.iter().any(|r| {
                r.rulebook == m.rulebook && r.name == m.rule && r.fingerprint == m.fingerprint
            }),
            // From the job's recorded step (every node), else this node's list.
            held: match &m.held_by {
                Some(h) => Some(format!(
                    "`{}` (during: {}) {}",
                    h.window,
                    h.during,
                    h.until
                        .as_ref()
                        .map_or("with no end".to_string(), |u| format!("until {u}"))
                )),
                None => held.iter().find(|h| h.job == m.id).map(|h| {
                    let until = crate::domain::rfc3339(h.until);
                    format!("`{}` (during: {}) until {until}", h.window, h.during)
                }),
            },
            attempts: m
                .attempts
                .iter()
                .map(|a| AttemptView {
                    run_id: a.run_id.clone(),
                    attempt: a.attempt,
                    phase: a.phase,
                    action_index: a.action_index,
                    action: a.action.clone(),
                    rendered: views::readable_action(&a.rendered),
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
    Ok(page(
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
    ))
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    pub event: String,
    #[serde(default)]
    pub token: String,
}

/// `POST /console/replay`: the event again, as a new event, on the current rules.
pub async fn replay(
    v: Viewer,
    State(st): State<AppState>,
    Form(f): Form<ReplayForm>,
) -> Result<Response, PageError> {
    auth::check_post(&v, &f.token).or_page(&v)?;
    v.may(crate::access::Role::Operator).or_page(&v)?;
    // Audited before it acts (`app::audited`).
    let done = crate::app::audited::replay(&st, &v.who, &f.event)
        .await
        .or_page(&v)?;
    Ok(secured(
        Redirect::to(&format!(
            "/console/events/{}?done=replay",
            auth::urlencode(&done.done.id)
        ))
        .into_response(),
    ))
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
pub async fn rerun(
    v: Viewer,
    State(st): State<AppState>,
    Form(f): Form<RerunForm>,
) -> Result<Response, PageError> {
    auth::check_post(&v, &f.token).or_page(&v)?;
    v.may(crate::access::Role::Operator).or_page(&v)?;
    let (job, _) = st
        .engine
        .store()
        .history
        .job(&f.job)
        .await
        .or_page(&v)?
        .ok_or(ApiError::NoSuchJob)
        .or_page(&v)?;
    let event = job.event_id;
    let as_matched = f.as_matched.as_deref().is_some_and(|v| !v.is_empty());
    // Audited before it acts (`app::audited`).
    let queued = crate::app::audited::rerun(&st, &v.who, &f.job, as_matched)
        .await
        .or_page(&v)?;
    let done = match queued {
        Queued::AsMatched { changed: false } => "rerun",
        Queued::AsMatched { changed: true } => "rerun-matched",
        Queued::OnCurrentRule { mode: None } => "rerun-current",
        Queued::OnCurrentRule {
            mode: Some(ModeChange::NowLive),
        } => "rerun-current-live",
        Queued::OnCurrentRule {
            mode: Some(ModeChange::NowShadow),
        } => "rerun-current-shadow",
    };
    let to = if f.back.as_deref() == Some("dead-letters") {
        format!("/console/dead-letters?done={done}")
    } else {
        format!("/console/events/{}?done={done}", auth::urlencode(&event))
    };
    Ok(secured(Redirect::to(&to).into_response()))
}

/// `GET /console/dead-letters`: failed jobs, newest first.
pub async fn dead_letters(
    v: Viewer,
    State(st): State<AppState>,
    Query(n): Query<Notice>,
) -> Result<Response, PageError> {
    let filter = JobFilter {
        state: Some(JobState::Failed),
        status: None,
        rule: None,
        limit: PAGE_ROWS,
    };
    let jobs = st.engine.store().history.jobs(filter).await.or_page(&v)?;
    // What explains each error: the stderr of its last failed attempt.
    let mut rows = Vec::with_capacity(jobs.len());
    for j in jobs {
        let detail = st
            .engine
            .store()
            .history
            .event_detail(&j.event_id)
            .await
            .or_page(&v)?;
        let stderr = detail.and_then(|d| last_stderr(&d, &j.id));
        let mut row = serde_json::to_value(&j).unwrap_or_default();
        row["stderr"] = json!(stderr);
        rows.push(row);
    }
    Ok(page(
        "dead_letters.html",
        json!({
            "frame": frame(&v, "dead-letters"),
            "jobs": rows, "limit": PAGE_ROWS, "notice": notice_text(&n),
        }),
    ))
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
    let sources: Vec<Value> = set.sources.iter().map(|s| s.summary()).collect();
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
pub async fn try_run(
    v: Viewer,
    State(st): State<AppState>,
    Form(f): Form<TryForm>,
) -> Result<Response, PageError> {
    auth::check_post(&v, &f.token).or_page(&v)?;
    let set = st.engine.rules();
    let source = given(&f.source);
    if let Some(s) = &source
        && set.source(s).is_none()
    {
        let err = format!("no source named `{s}`");
        return Ok(try_page(&v, &st, &f, None, Some(err)));
    }
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
                return Ok(try_page(&v, &st, &f, None, Some(err)));
            }
        }
    }
    // For a syslog source, a message as sent (its first line) is parsed as the listener would;
    // for any other, the body is decoded by the source's `format` (a text or form body as the
    // sender posts it), as `rulehook test` does.
    let chosen = source.as_deref().and_then(|s| set.source(s));
    let sampled = chosen
        .and_then(|s| crate::transport::sample_events(s.kind, f.event.as_bytes()))
        .and_then(|events| events.into_iter().next());
    let body: Value = match sampled {
        Some(b) => b,
        None => {
            let format = chosen.map_or(crate::body::BodyFormat::Json, |s| s.format);
            let content_type = hdrs.get("content-type").and_then(Value::as_str);
            match format.decode(content_type, f.event.as_bytes()) {
                Ok((b, _)) => b,
                Err(crate::body::BodyError::Json(e)) => {
                    let err = format!("the event is not valid JSON: {e}");
                    return Ok(try_page(&v, &st, &f, None, Some(err)));
                }
                Err(e) => {
                    let err = format!(
                        "the event is not what `format: {}` takes: {e}",
                        format.name()
                    );
                    return Ok(try_page(&v, &st, &f, None, Some(err)));
                }
            }
        }
    };
    let report: Vec<Value> = crate::rules::dry_run(&set, source.as_deref(), &body, &hdrs)
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "rulebook": r.rulebook, "rule": r.rule, "matched": r.matched, "why_not": r.why_not,
                "other_source": r.other_source,
                "actions": r.actions.iter().map(views::readable_action).collect::<Vec<_>>(),
                "on_failure": r.on_failure.iter().map(views::readable_action).collect::<Vec<_>>(),
                "throttle": views::readable_duration(&r.throttle, "once_within"), "shadow": r.shadow,
                "approval": views::readable_duration(&r.approval, "timeout"), "correlation": r.correlation,
            })
        })
        .collect();
    Ok(try_page(&v, &st, &f, Some(report), None))
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
    let status = error.as_ref().map_or(StatusCode::OK, |e| {
        ApiError::BadQuery(e.clone()).status_and_code().0
    });
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
pub async fn overview(v: Viewer, State(st): State<AppState>) -> Result<Response, PageError> {
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
    let (events, jobs) = (events.or_page(&v)?, jobs.or_page(&v)?);
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
    Ok(page(
        "overview.html",
        json!({
            "frame": frame(&v, "overview"),
            "by_source": by_source, "by_result": by_result,
            "events_last_hour": events.len(), "capped": capped, "cap": OVERVIEW_ROWS,
            "results_last_hour": results.len(),
            "depth": { "ready": depth.ready, "delayed": depth.delayed, "leased": depth.leased },
            "journal": journal,
        }),
    ))
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
