//! The HTTP edge: the only module that knows HTTP. Routes webhooks to the engine and serves the
//! history API and health check.

mod approvals;
pub mod listen;
mod windows;

// The shared HTTP state and rules live below the HTTP planes (`crate::app`); re-exported so
// `server::…` paths keep working.
pub use crate::app::{ApiError, AppState, admin_plane, guard, roles};

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::audited::{self, Queued};
use crate::engine::rerun_text;
use crate::store::{EventFilter, EventStatus, JobFilter};
use crate::telemetry::names;
use roles::{AsOperator, AsViewer};

/// The whole HTTP application: `/healthz`, the admin plane (the admin API, `/metrics` and the
/// console, behind [`admin_plane::gate`]), and the source paths.
pub fn app(state: AppState) -> Router {
    let admin = Router::new()
        .route("/api/events", get(list_events))
        .route("/api/events/{id}", get(event_detail))
        .route("/api/stored-events", get(stored_events))
        .route("/api/events/{id}/replay", post(replay))
        .route("/api/status", get(status))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}/rerun", post(rerun))
        .route("/api/jobs/{id}/approve", post(approvals::approve))
        .route("/api/jobs/{id}/reject", post(approvals::reject))
        .route("/api/approvals", get(approvals::pending))
        .route("/api/audit", get(audit_trail))
        .route("/api/windows", get(windows::list_windows))
        .route("/metrics", get(metrics_text))
        .merge(crate::console::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_plane::gate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(admin)
        .fallback(hook)
        .with_state(state)
}

/// 200 while events can be stored and read back; 503 otherwise (a load balancer should stop
/// sending), naming the part that failed. The write is a real one (a state entry, committed
/// like an event), done at most once a second however often this is polled.
async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.engine.store();
    let write = state
        .guard
        .health
        .probe(|| async {
            let key = "rulehook/health";
            let value = crate::domain::now_ms().to_string();
            let ttl = Some(std::time::Duration::from_secs(3600));
            let result = match store.state.get(key).await? {
                Some((_, rev)) => store.state.update(key, &value, rev, ttl).await,
                None => store.state.create(key, &value, ttl).await,
            };
            match result {
                // Someone else wrote it at the same moment: writes work.
                Ok(_) | Err(crate::domain::StoreError::Conflict(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await;
    let filter = EventFilter {
        limit: 1,
        ..EventFilter::default()
    };
    let read = store.history.events(filter).await.map(drop);
    let failed: Vec<_> = [("journal write", write), ("journal read", read)]
        .into_iter()
        .filter_map(|(part, r)| {
            r.err()
                .map(|e| json!({"part": part, "message": crate::secrets::mask(&e.to_string())}))
        })
        .collect();
    if failed.is_empty() {
        Ok(Json(json!({"status": "ok"})).into_response())
    } else {
        Err(ApiError::Unhealthy(failed))
    }
}

/// Prometheus text; admin like the rest of the API (a scraper elsewhere presents the token).
async fn metrics_text(_: AsViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    match &state.metrics {
        Some(h) => {
            h.run_upkeep();
            let depth = state.engine.store().queue.depth();
            metrics::gauge!(crate::telemetry::names::QUEUE).set(depth.ready as f64);
            metrics::gauge!(crate::telemetry::names::QUEUE_LEASED).set(depth.leased as f64);
            metrics::gauge!(crate::telemetry::names::QUEUE_DELAYED).set(depth.delayed as f64);
            metrics::gauge!(crate::telemetry::names::PENDING).set(depth.pending as f64);
            metrics::gauge!(crate::telemetry::names::WAITING)
                .set(state.engine.waiting_jobs() as f64);
            metrics::gauge!(crate::telemetry::names::MAX_PENDING)
                .set(state.guard.max_pending as f64);
            Ok((
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                crate::secrets::mask_owned(h.render()),
            )
                .into_response())
        }
        None => Err(ApiError::MetricsOff),
    }
}

async fn status(_: AsViewer, State(state): State<AppState>) -> Result<Response, ApiError> {
    let rules = state.engine.rules();
    let connections = crate::connections::snapshot();
    let sources: Vec<_> = rules
        .sources
        .iter()
        .map(|s| {
            let mut one = s.summary();
            // Listening sources: each listener's or broker connection's state.
            if s.listening.is_some() {
                one["connections"] = json!(
                    connections
                        .iter()
                        .filter(|c| c.source == s.name)
                        .collect::<Vec<_>>()
                );
            }
            one
        })
        .collect();
    let reload = state.reloader.as_ref().map(|r| r.status());
    let mut warnings = rules.warnings.clone();
    if let Some(users) = &state.guard.users {
        warnings.extend(crate::access::approver_warnings(&rules, users));
    }
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": format!("{:?}", state.engine.role()).to_lowercase(),
        "queue": {
            "ready": state.engine.store().queue.depth().ready,
            "leased": state.engine.store().queue.depth().leased,
        },
        "sources": sources,
        "rules": rules.rules.iter().map(|r| format!("{}/{}", r.rulebook, r.name)).collect::<Vec<_>>(),
        "reload": reload,
        "warnings": warnings,
    }))
    .into_response())
}

/// `?as_matched=true`: re-run on the rule version the job matched even if the rule changed.
#[derive(Debug, Default, serde::Deserialize)]
struct RerunQuery {
    #[serde(default)]
    as_matched: bool,
}

/// Re-runs a dead letter (a job that failed for good): the current version of its rule when
/// the rule changed since the match, else (or with `as_matched`) the version it matched, from
/// the action that failed.
async fn rerun(
    AsOperator(who): AsOperator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<RerunQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    // Audited before it acts (`app::audited`).
    let (version, changed, mode) = match audited::rerun(&state, &who, &id, q.as_matched).await? {
        Queued::AsMatched { changed } => ("matched", changed, None),
        Queued::OnCurrentRule { mode } => ("current", true, mode),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job": id,
            "status": "pending",
            "runs": match mode {
                Some(m) => format!("{}, {}", rerun_text(version == "current", changed), m.text()),
                None => rerun_text(version == "current", changed).to_string(),
            },
            "version": version,
            "rule_changed": changed,
            "mode_changed": mode.map(|m| m.as_str()),
        })),
    )
        .into_response())
}

async fn replay(
    AsOperator(who): AsOperator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Audited before it acts (`app::audited`).
    let audited::Replayed { done, source } = audited::replay(&state, &who, &id).await?;
    let mut answer = json!({"id": done.id, "replay_of": id, "matched": done.matched});
    // Nothing can match an event whose source left the rulebooks: say so, not just "0".
    if state.engine.rules().source(&source).is_none() {
        answer["source_gone"] = json!(source);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /api/audit`: the newest writes first (who, when, what, comment).
async fn audit_trail(
    _: AsViewer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).min(
        crate::access::audit::KEEP
            + crate::access::audit::KEEP_REFUSED
            + crate::access::audit::KEEP_LOGINS,
    );
    let records = crate::access::audit::recent(state.engine.store().state.as_ref(), limit).await?;
    Ok(Json(json!({"audit": records})).into_response())
}

/// Any request outside the fixed routes: a webhook for the source served at its path.
/// The request is taken whole (not as `Method`, `Uri` and `HeaderMap`, which
/// axum's extractors copy out of it): its parts are read in place.
async fn hook(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let rules = state.engine.rules();
    let source = rules
        .source_by_path(parts.uri.path())
        .ok_or(ApiError::NotFound)?;
    if parts.method != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    if !state.engine.role().accepts_events() {
        return Err(ApiError::NotIngest);
    }
    source.meter.received.increment(1);
    let result = receive(&state, source, peer, headers, body).await;
    if let Err(e) = &result {
        metrics::counter!(names::REJECTED, "source" => source.name.clone(), "reason" => e.code())
            .increment(1);
        tracing::info!(source = %source.name, peer = %peer.ip(), reason = e.code(), "rejected: {e}");
    }
    result
}

async fn receive(
    state: &AppState,
    source: &crate::sources::Source,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if !source.allows(peer.ip()) {
        return Err(ApiError::Forbidden);
    }
    let pending = state.engine.store().queue.depth().pending;
    if state.guard.busy(pending, state.engine.waiting_jobs()) {
        return Err(ApiError::Busy);
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        // Compressed bytes were verified and then read as JSON: `invalid_json … column 1`,
        // which said nothing of why.
        let shown: String = String::from_utf8_lossy(encoding.as_bytes())
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(32)
            .collect();
        if !shown.trim().is_empty() && !shown.trim().eq_ignore_ascii_case("identity") {
            return Err(ApiError::Encoded(shown.trim().to_string()));
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > source.max_body) {
        return Err(ApiError::TooLarge(source.max_body));
    }
    let read = tokio::time::timeout(
        state.body_timeout,
        axum::body::to_bytes(body, source.max_body),
    );
    let bytes = read
        .await
        .map_err(|_| ApiError::BodyTimeout)?
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                ApiError::TooLarge(source.max_body)
            } else {
                ApiError::BadBody(e.to_string())
            }
        })?;
    let request = crate::verify::Request {
        source: &source.name,
        headers,
        body: &bytes,
        format: source.format,
        dedup_window: source.dedup_window,
        now: SystemTime::now(),
    };
    let event = match source.verifier.verify(request, Some(peer.ip())) {
        Ok(event) => event,
        Err(e @ crate::verify::VerifyError::Body(_)) => return Err(e.into()),
        // Past its budget of failed verifications an address is told to back off (429). Its
        // verified requests still pass: behind a proxy, a forger shares its sender's address.
        Err(e) => {
            return Err(match state.guard.failures.failed(peer.ip()) {
                Ok(()) => e.into(),
                Err(wait) => ApiError::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64),
            });
        }
    };
    // Only verified requests spend the source's budget: forged ones cannot lock its sender out.
    if let Some(limit) = &source.rate_limit
        && let Err(wait) = limit.check()
    {
        return Err(ApiError::RateLimited(
            wait.as_secs_f64().ceil().max(1.0) as u64
        ));
    }
    let done = state.engine.ingest(event).await?;
    if done.duplicate {
        source.meter.duplicate.increment(1);
    } else {
        source.meter.accepted.increment(1);
    }
    // Debug, not info: a line per event costs more than storing it (see docs/benchmarks.md).
    if done.duplicate {
        tracing::debug!(source = %source.name, id = %done.id, "duplicate delivery: not processed again");
    } else {
        tracing::debug!(source = %source.name, id = %done.id, matched = done.matched, "event accepted");
    }
    Ok(accepted(&done.id, done.duplicate))
}

/// The 202 for an event: `{"id":"…","duplicate":…}`, the bytes `Json(json!(…))` writes,
/// written directly (the map, its hashing and the serializer cost ~3k instructions a request).
fn accepted(id: &str, duplicate: bool) -> Response {
    let mut body = Vec::with_capacity(id.len() + 32);
    body.extend_from_slice(b"{\"id\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, id);
    body.extend_from_slice(if duplicate {
        b",\"duplicate\":true}"
    } else {
        b",\"duplicate\":false}"
    });
    (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A query string read as the API answers every other mistake, `400 {"error": "bad_request",
/// "message": …}` naming the parameter (`limit: invalid digit found in string`), instead of
/// axum's plain-text rejection that JSON clients cannot read.
struct ApiQuery<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::BadQuery(e.body_text()))
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    source: Option<String>,
    status: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
}

async fn list_events(
    _: AsViewer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let since = match q.since {
        None => None,
        Some(s) => Some(crate::app::parse_since(&s)?),
    };
    let status = match &q.status {
        None => None,
        Some(s) => Some(EventStatus::parse(s).ok_or_else(|| {
            ApiError::BadQuery(format!(
                "status `{s}`: use one of {}",
                EventStatus::ALL.join(", ")
            ))
        })?),
    };
    let filter = EventFilter {
        source: q.source,
        since,
        status,
        rule: q.rule,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let events = state.engine.store().history.events(filter).await?;
    Ok(Json(json!({"events": events})).into_response())
}

#[derive(Debug, Deserialize)]
struct StoredQuery {
    since: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// Bytes of JSON past which a page of `/api/stored-events` ends (at least one event).
pub const STORED_PAGE_BYTES: usize = 8 << 20;
/// About how many bytes of events are read from the history at a time while a page of
/// `/api/stored-events` is built (16 to 256 events, by the largest seen so far).
const STORED_CHUNK_BYTES: usize = 1 << 20;

/// `GET /api/stored-events?since=7d&after=ID&limit=N`: stored events with their bodies and
/// the matches they were stored with, oldest first, a page after event `after`
/// (`rulehook whatif --url`). A page ends at `limit` events or once its JSON passes
/// [`STORED_PAGE_BYTES`], whichever comes first: events are read from the history a few at a
/// time into one bounded reply, so pages of large events cannot fill the memory. An event that
/// cannot be read back, or whose body nests deeper than [`crate::body::MAX_DEPTH`] (stored by an
/// earlier release; the page would be too deep for JSON readers), is named in `unreadable`
/// instead. Clients page on with `after` = `next` (the last row read) until it is null.
async fn stored_events(
    _: AsViewer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StoredQuery>,
) -> Result<Response, ApiError> {
    let since = match q.since {
        None => 0,
        Some(s) => crate::app::parse_since(&s)?,
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 5000);
    let history = &state.engine.store().history;
    let mut out = String::from("{\"events\":[");
    let (mut n, mut events, mut after, mut largest) = (0, 0, q.after, 0);
    let mut unreadable = Vec::new();
    let mut next = None;
    'page: while n < limit {
        // Few at a time while events are large, more while they are small.
        let chunk_size = (STORED_CHUNK_BYTES / largest.max(1)).clamp(16, 256);
        let chunk = history
            .stored(since, after.clone(), chunk_size.min(limit - n))
            .await?;
        let Some(last) = chunk.last() else { break };
        after = Some(last.id().to_string());
        for row in chunk {
            n += 1;
            next = Some(row.id().to_string());
            let s = match stored_row(row) {
                Ok(s) => s,
                Err(u) => {
                    unreadable.push(
                        json!({"id": u.id, "received_at_ms": u.received_at, "reason": u.reason}),
                    );
                    continue;
                }
            };
            let e = &s.event;
            let one = json!({
                "id": e.id, "source": e.source, "kind": e.kind, "received_at_ms": e.received_at,
                "headers": e.headers, "body": e.body(), "depth": e.depth,
                "delivery": e.delivery, "parent": e.parent, "matches": s.matches,
            });
            if events > 0 {
                out.push(',');
            }
            let text = one.to_string();
            largest = largest.max(text.len());
            out.push_str(&text);
            events += 1;
            if out.len() >= STORED_PAGE_BYTES {
                break 'page;
            }
        }
    }
    out.push_str(&format!(
        "],\"unreadable\":{},\"next\":{}}}",
        serde_json::Value::Array(unreadable),
        json!(next)
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// A stored row as `/api/stored-events` can carry it: an event whose body nests deeper than
/// [`crate::body::MAX_DEPTH`] (stored by an earlier release; refused at intake since) is
/// unreadable here too, since the page around it would be too deep for JSON readers
/// ([`crate::whatif::within_depth`], which `whatif --data` reads through as well).
fn stored_row(
    row: crate::store::Stored,
) -> Result<crate::store::StoredEvent, crate::store::Unreadable> {
    match crate::whatif::within_depth(row) {
        crate::store::Stored::Unreadable(u) => Err(u),
        crate::store::Stored::Event(s) => Ok(s),
    }
}

#[derive(Debug, Deserialize)]
struct JobQuery {
    status: Option<String>,
    rule: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/jobs?status=failed` lists dead letters, newest first.
async fn list_jobs(
    _: AsViewer,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<Response, ApiError> {
    let status = match &q.status {
        None => None,
        Some(s) => Some(crate::store::JobStatus::parse(s).ok_or_else(|| {
            ApiError::BadQuery(format!(
                "status `{s}`: use {}",
                crate::store::JobStatus::ALL.join(", ")
            ))
        })?),
    };
    let filter = JobFilter {
        state: status.map(crate::store::JobStatus::state),
        status,
        rule: q.rule,
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let jobs = state.engine.store().history.jobs(filter).await?;
    let jobs = windows::mark_held(&state.engine, jobs);
    Ok(Json(json!({"jobs": jobs})).into_response())
}

async fn event_detail(
    _: AsViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = state
        .engine
        .store()
        .history
        .event_detail(&id)
        .await?
        .ok_or(ApiError::NoSuchEvent)?;
    // Why the other rules did not match, evaluated against the rule set serving now.
    let not_matched = crate::app::not_matched(&state.engine.rules(), &detail);
    let mut detail = serde_json::to_value(&detail).unwrap_or_default();
    detail["not_matched"] = json!(not_matched);
    detail["evaluated_with"] = json!("the rule set serving now");
    Ok(Json(detail).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_writes_what_json_wrote() {
        for (id, duplicate) in [
            ("01938f3e-7a1b-7cc0-9e2f-3b8a8f0a1c2d", false),
            ("01938f3e-7a1b-7cc0-9e2f-3b8a8f0a1c2d", true),
            ("odd \"id\"\n", false),
        ] {
            let want = (
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "duplicate": duplicate})),
            )
                .into_response();
            let got = accepted(id, duplicate);
            assert_eq!(got.status(), want.status());
            assert_eq!(
                got.headers().get(header::CONTENT_TYPE),
                want.headers().get(header::CONTENT_TYPE)
            );
            let bytes = |r: Response| axum::body::to_bytes(r.into_body(), 1 << 16);
            assert_eq!(bytes(got).await.unwrap(), bytes(want).await.unwrap());
        }
    }
}
