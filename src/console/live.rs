//! `GET /console/live`: Server-Sent Events of events as this process accepts them, for the
//! event list. Fed by the engine's broadcast of accepted events (in-process: with a shared
//! store, events other nodes accept appear on their consoles, and on this one after a reload).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::auth::Viewer;
use crate::server::AppState;
use crate::store::{EventRow, EventStatus};

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub source: Option<String>,
    pub rule: Option<String>,
    pub status: Option<String>,
}

impl LiveQuery {
    fn wants(&self, row: &EventRow) -> bool {
        let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        given(&self.source).is_none_or(|s| row.source == s)
            && given(&self.rule).is_none_or(|r| row.rules.contains(&r))
            && given(&self.status).is_none_or(|s| {
                EventStatus::parse(&s) == Some(row.status)
                    || (s == "throttled" && row.throttled > 0)
            })
    }
}

/// The stream: one `event` message per accepted event (its list row as JSON), a `lagged`
/// message when this client fell so far behind that some were skipped.
pub async fn live(_: Viewer, State(st): State<AppState>, Query(q): Query<LiveQuery>) -> Response {
    let rx = st.engine.subscribe();
    let stream = rows(rx, q);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn rows(
    rx: tokio::sync::broadcast::Receiver<Arc<EventRow>>,
    q: LiveQuery,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, q), |(mut rx, q)| async move {
        loop {
            match rx.recv().await {
                Ok(row) => {
                    if !q.wants(&row) {
                        continue;
                    }
                    let ev = Event::default()
                        .event("event")
                        .json_data(&*row)
                        .unwrap_or_else(|_| Event::default().comment("unserializable row"));
                    return Some((Ok(ev), (rx, q)));
                }
                Err(RecvError::Lagged(n)) => {
                    let ev = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(ev), (rx, q)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, rules: &[&str], status: EventStatus) -> EventRow {
        EventRow {
            id: "e".into(),
            source: source.into(),
            kind: "generic".into(),
            received_at: String::new(),
            delivery_id: None,
            duplicates: 0,
            matched_rules: rules.len(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
            throttled: 0,
            status,
            parent: None,
        }
    }

    #[test]
    fn live_rows_follow_the_list_filters() {
        let q = |s: &str, r: &str, st: &str| LiveQuery {
            source: Some(s.into()),
            rule: Some(r.into()),
            status: Some(st.into()),
        };
        let r = row("ipf", &["remediate"], EventStatus::Pending);
        assert!(q("", "", "").wants(&r));
        assert!(q("ipf", "remediate", "pending").wants(&r));
        assert!(!q("netbox", "", "").wants(&r));
        assert!(!q("", "other", "").wants(&r));
        assert!(!q("", "", "unmatched").wants(&r));
        assert!(q("", "", "unmatched").wants(&row("ipf", &[], EventStatus::Unmatched)));
    }
}
