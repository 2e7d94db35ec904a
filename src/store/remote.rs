//! The history of a running service, read through its admin API (`rulehook whatif --url`):
//! for a deployment whose data directory is not at hand (another host, or the JetStream
//! backend). Read-only; only what `whatif` reads is available (`stored`, `event_detail`).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::{Attempt, Event, EventDoc, Job, JobState, Match, StoreError};
use crate::store::{
    AttemptRow, EventDetail, EventFilter, EventRow, EventStatus, History, JobFilter, JobRow,
    MatchRow, Stored, StoredEvent, Unreadable,
};

/// A service's admin API as a (read-only) history.
pub struct Remote {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

fn unavailable(what: &str) -> StoreError {
    StoreError::Permanent(format!(
        "{what} is not available through the admin API view"
    ))
}

fn http(e: reqwest::Error) -> StoreError {
    StoreError::Transient(format!("admin API: {e}"))
}

impl Remote {
    /// `base`: the service's URL (`http://127.0.0.1:8080`); `token`: `RULEHOOK_ADMIN_TOKEN`.
    pub fn new(base: &str, token: Option<String>, insecure: bool) -> Result<Remote, StoreError> {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("rulehook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Remote {
            client,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, StoreError> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| StoreError::Permanent(format!("URL `{}{path}`: {e}", self.base)))?;
        let mut req = self.client.get(url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(http)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND && path != "/api/stored-events" {
            return Ok(None);
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let e = format!("{path} answered {status}: {}", body.trim());
            return Err(if status.is_server_error() {
                StoreError::Transient(e)
            } else {
                StoreError::Permanent(e)
            });
        }
        resp.json().await.map(Some).map_err(http)
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The parts of an attempt `whatif` compares (what was rendered, and what it produced).
fn attempt(a: &Value) -> AttemptRow {
    AttemptRow {
        run_id: text(&a["run_id"]).unwrap_or_default(),
        attempt: a["attempt"].as_u64().unwrap_or(0) as u32,
        phase: if a["phase"] == "on_failure" {
            "on_failure"
        } else {
            "main"
        },
        action_index: a["action_index"].as_u64().unwrap_or(0) as u32,
        action: text(&a["action"]).unwrap_or_default(),
        rendered: a["rendered"].clone(),
        status: match a["status"].as_str() {
            Some("ok") => "ok",
            Some("failed") => "failed",
            _ => "running",
        },
        started_at: text(&a["started_at"]).unwrap_or_default(),
        finished_at: text(&a["finished_at"]),
        duration: text(&a["duration"]),
        duration_ms: a["duration_ms"].as_i64(),
        exit_code: a["exit_code"].as_i64(),
        stdout: text(&a["stdout"]),
        stderr: text(&a["stderr"]),
        error: text(&a["error"]),
        http_status: a["http_status"].as_i64(),
        result: (!a["result"].is_null()).then(|| a["result"].clone()),
    }
}

#[async_trait]
impl History for Remote {
    async fn record(&self, _: Attempt) -> Result<(), StoreError> {
        Err(unavailable("recording"))
    }

    fn record_later(&self, _: Attempt) {
        tracing::error!("{}", unavailable("recording"));
    }

    async fn events(&self, _: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        Err(unavailable("the event list"))
    }

    /// The event's jobs and their attempts (the rest of the detail is left empty).
    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError> {
        let Some(d) = self.get(&format!("/api/events/{id}"), &[]).await? else {
            return Ok(None);
        };
        let matches = d["matches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| MatchRow {
                id: text(&m["id"]).unwrap_or_default(),
                rulebook: text(&m["rulebook"]).unwrap_or_default(),
                rule: text(&m["rule"]).unwrap_or_default(),
                fingerprint: text(&m["fingerprint"]).unwrap_or_default(),
                status: m["status"]
                    .as_str()
                    .and_then(crate::store::JobStatus::parse)
                    .unwrap_or(crate::store::JobStatus::Pending),
                error: text(&m["error"]),
                awaiting: None,
                decision: None,
                held_by: m["held_by"].is_object().then(|| crate::store::HeldByRow {
                    window: text(&m["held_by"]["window"]).unwrap_or_default(),
                    during: text(&m["held_by"]["during"]).unwrap_or_default(),
                    until: text(&m["held_by"]["until"]),
                }),
                attempts: m["attempts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(attempt)
                    .collect(),
            })
            .collect();
        Ok(Some(EventDetail {
            id: id.to_string(),
            source: text(&d["source"]).unwrap_or_default(),
            kind: text(&d["kind"]).unwrap_or_default(),
            received_at: text(&d["received_at"]).unwrap_or_default(),
            headers: Default::default(),
            depth: d["depth"].as_u64().unwrap_or(0) as u32,
            duplicates: d["duplicates"].as_i64().unwrap_or(0),
            delivery_id: text(&d["delivery_id"]),
            parent: text(&d["parent"]),
            children: Vec::new(),
            status: EventStatus::Done,
            body: d["body"].clone(),
            matches,
            throttled: Vec::new(),
            correlations: Vec::new(),
        }))
    }

    async fn jobs(&self, _: JobFilter) -> Result<Vec<JobRow>, StoreError> {
        Err(unavailable("the job list"))
    }

    async fn job(&self, _: &str) -> Result<Option<(Job, JobState)>, StoreError> {
        Err(unavailable("a job"))
    }

    async fn stored(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut query = vec![
            ("since", crate::domain::rfc3339(since_ms)),
            ("limit", limit.to_string()),
        ];
        if let Some(a) = after {
            query.push(("after", a));
        }
        let page = self
            .get("/api/stored-events", &query)
            .await?
            .unwrap_or_default();
        // The rows the service could not send, each in its place only as far as paging needs:
        // the one read last (`next`) stays last, so the next page starts after it.
        let next = text(&page["next"]);
        let unreadable: Vec<Stored> = page["unreadable"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                Stored::Unreadable(Unreadable {
                    id: text(&u["id"]).unwrap_or_default(),
                    received_at: u["received_at_ms"].as_i64().unwrap_or(0),
                    reason: text(&u["reason"]).unwrap_or_default(),
                })
            })
            .collect();
        let (last, mut out): (Vec<Stored>, Vec<Stored>) = unreadable
            .into_iter()
            .partition(|u| next.as_deref() == Some(u.id()));
        for e in page["events"].as_array().into_iter().flatten() {
            let body = e["body"].clone();
            let headers: Vec<(String, String)> =
                serde_json::from_value(e["headers"].clone()).unwrap_or_default();
            let matches: Vec<Match> = serde_json::from_value(e["matches"].clone())
                .map_err(|err| StoreError::Permanent(format!("stored matches: {err}")))?;
            out.push(Stored::Event(StoredEvent {
                event: Arc::new(Event {
                    id: text(&e["id"]).unwrap_or_default(),
                    source: text(&e["source"]).unwrap_or_default(),
                    kind: text(&e["kind"]).unwrap_or_default(),
                    received_at: e["received_at_ms"].as_i64().unwrap_or(0),
                    body_text: body.to_string(),
                    doc: EventDoc::with_headers(body, &headers),
                    headers,
                    depth: e["depth"].as_u64().unwrap_or(0) as u32,
                    delivery: text(&e["delivery"]),
                    parent: text(&e["parent"]),
                }),
                matches,
            }));
        }
        out.extend(last);
        Ok(out)
    }
}
