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
use futures_util::StreamExt;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::auth::Viewer;
use crate::server::AppState;
use crate::engine::Accepted;
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

/// How long the stream gathers events before it sends them: under load a page gets a few
/// messages a second, not one per event.
const GATHER: Duration = Duration::from_millis(100);
/// Rows one message carries at most; the rest are reported skipped (a page shows 200).
const BATCH: usize = 200;

/// The stream: an `events` message with a JSON array of list rows (oldest first) for the
/// events accepted since the last one, and a `lagged` message with the number skipped when a
/// client fell behind or a burst was larger than a page shows.
pub async fn live(_: Viewer, State(st): State<AppState>, Query(q): Query<LiveQuery>) -> Response {
    let rx = st.engine.subscribe();
    let stream = batches(rx, q);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// What one gathering produced.
#[derive(Default)]
struct Batch {
    rows: Vec<Arc<Accepted>>,
    skipped: u64,
}

impl Batch {
    fn take(&mut self, a: Arc<Accepted>, q: &LiveQuery) {
        if !q.wants(&a.row) {
            return;
        }
        if self.rows.len() < BATCH {
            self.rows.push(a);
        } else {
            self.skipped += 1;
        }
    }

    fn events(self) -> Vec<Result<Event, Infallible>> {
        let mut out = Vec::new();
        if !self.rows.is_empty() {
            let mut data = String::from("[");
            for (i, a) in self.rows.iter().enumerate() {
                if i > 0 {
                    data.push(',');
                }
                data.push_str(&a.json);
            }
            data.push(']');
            out.push(Ok(Event::default().event("events").data(data)));
        }
        if self.skipped > 0 {
            out.push(Ok(Event::default()
                .event("lagged")
                .data(self.skipped.to_string())));
        }
        out
    }
}

fn batches(
    rx: tokio::sync::broadcast::Receiver<Arc<Accepted>>,
    q: LiveQuery,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((rx, q), |(mut rx, q)| async move {
        loop {
            let mut batch = Batch::default();
            match rx.recv().await {
                Ok(a) => batch.take(a, &q),
                Err(RecvError::Lagged(n)) => batch.skipped += n,
                Err(RecvError::Closed) => return None,
            }
            tokio::time::sleep(GATHER).await;
            loop {
                match rx.try_recv() {
                    Ok(a) => batch.take(a, &q),
                    Err(TryRecvError::Lagged(n)) => batch.skipped += n,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => break,
                }
            }
            let events = batch.events();
            if !events.is_empty() {
                return Some((futures_util::stream::iter(events), (rx, q)));
            }
        }
    })
    .flatten()
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

    #[test]
    fn a_batch_is_one_json_array_and_a_count_of_the_rest() {
        let all = LiveQuery::default();
        let mut b = Batch::default();
        for i in 0..BATCH + 3 {
            let mut r = row("ipf", &[], EventStatus::Unmatched);
            r.id = format!("e{i}");
            let json = serde_json::to_string(&r).unwrap();
            b.take(Arc::new(Accepted { row: r, json }), &all);
        }
        let out = b.events();
        assert_eq!(out.len(), 2, "rows, then the skipped count");
    }
}
