//! `GET /console/live`: Server-Sent Events of events as this process accepts them, for the
//! event list. Fed by the engine's broadcast of accepted events (in-process: with a shared
//! store, events other nodes accept appear on their consoles, and on this one after a reload).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::auth::Viewer;
use crate::app::AppState;
use crate::engine::Accepted;
use crate::store::{EventRow, EventStatus};
use crate::unmatched::{KEEP, Sample};

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
/// How long one stream lasts; then it ends and the page's `EventSource` connects again (so a
/// stream never holds its connection for good).
const MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// Rows one message carries at most; the rest are reported skipped (a page shows 200).
const BATCH: usize = 200;

/// The stream: an `events` message with a JSON array of list rows (oldest first) for the
/// events accepted since the last one, and a `lagged` message with the number skipped when a
/// client fell behind or a burst was larger than a page shows.
pub async fn live(
    _: Viewer,
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Query(q): Query<LiveQuery>,
) -> Response {
    // Streams have caps of their own, so they cannot take the connections webhooks need.
    let Some(slot) = st.guard.live.open(peer.ip()) else {
        return crate::app::ApiError::LiveBusy.into_response();
    };
    let rx = st.engine.subscribe();
    let mut poll = st.console.poll_history.map(|every| Poll {
        engine: st.engine.clone(),
        every,
        sent: Sent::default(),
        primed: false,
        next: tokio::time::Instant::now(),
    });
    if let Some(p) = poll.as_mut() {
        // What is there when the page opens is on it already.
        p.unseen(&q).await;
    }
    // Asked again before each message: a stream must stop when its session is signed out, its
    // user removed or given a new password or token, as every other request of the console does.
    let state = st.clone();
    let still_in: LetIn =
        Box::new(move || super::auth::who(&state, Some(peer), &headers).is_ok_and(|w| w.is_some()));
    let until = tokio::time::Instant::now() + MAX_AGE;
    let stream = batches(rx, q, poll, still_in)
        .take_until(tokio::time::sleep_until(until))
        .map(move |e| {
            let _held = &slot;
            e
        });
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
    /// Messages of `keep: matched` sources that were not stored (a sample).
    unmatched: Vec<Arc<Sample>>,
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

    /// Keeps a sample the page's filters let through: its source, and no rule or status
    /// other than `unmatched` asked for.
    fn sample(&mut self, s: Arc<Sample>, q: &LiveQuery) {
        let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let fits = given(&q.source).is_none_or(|want| want == s.source)
            && given(&q.rule).is_none()
            && given(&q.status).is_none_or(|st| st == "unmatched");
        if fits && self.unmatched.len() < KEEP {
            self.unmatched.push(s);
        }
    }

    fn events(self) -> Vec<Result<Event, Infallible>> {
        let mut out = Vec::new();
        if !self.unmatched.is_empty() {
            let list: Vec<&Sample> = self.unmatched.iter().map(|s| s.as_ref()).collect();
            let data = serde_json::to_string(&list).unwrap_or_default();
            out.push(Ok(Event::default().event("unmatched").data(data)));
        }
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

/// The ids a stream sent last (bounded), so the history poll does not repeat them.
#[derive(Default)]
struct Sent {
    order: std::collections::VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl Sent {
    const KEEP: usize = 2_000;

    /// Records `id`; false when it was sent already.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

/// The fallback for a shared store: the history read now and then for events other processes
/// accepted.
struct Poll {
    /// The history to read, and the rule set whose sources summarize the rows.
    engine: Arc<crate::engine::Engine>,
    every: Duration,
    sent: Sent,
    /// The first read only learns what is already there.
    primed: bool,
    /// When the history is read next (also under a steady stream of this process's events).
    next: tokio::time::Instant,
}

impl Poll {
    /// Events in the history this stream has not sent, oldest first.
    async fn unseen(&mut self, q: &LiveQuery) -> Vec<Arc<Accepted>> {
        let given = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        let filter = crate::store::EventFilter {
            source: given(&q.source),
            rule: given(&q.rule),
            status: given(&q.status).and_then(|s| EventStatus::parse(&s)),
            since: None,
            limit: BATCH,
        };
        let history = self.engine.store().history.clone();
        let rows = match history.events(filter).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "live page: the history cannot be read");
                return Vec::new();
            }
        };
        let mut new_rows: Vec<EventRow> = Vec::new();
        for row in rows.into_iter().rev() {
            if self.sent.insert(&row.id) && self.primed {
                new_rows.push(row);
            }
        }
        if !new_rows.is_empty() {
            super::pages::summarize(history.as_ref(), &self.engine.rules(), &mut new_rows).await;
        }
        let fresh = new_rows
            .into_iter()
            .map(|row| {
                let json = serde_json::to_string(&row).unwrap_or_default();
                Arc::new(Accepted { row, json })
            })
            .collect();
        self.primed = true;
        self.next = tokio::time::Instant::now() + self.every;
        fresh
    }
}

/// What woke a stream: an accepted event, or (with a poll) time to read the history.
enum Woke {
    Event(Result<Arc<Accepted>, RecvError>),
    /// A sampled unmatched message (a lagging receiver only loses samples).
    Sample(Option<Arc<Sample>>),
    Poll,
}

async fn wake(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Accepted>>,
    samples: &mut tokio::sync::broadcast::Receiver<Arc<Sample>>,
    poll: Option<&Poll>,
) -> Woke {
    let next = poll.map(|p| p.next);
    tokio::select! {
        r = rx.recv() => Woke::Event(r),
        r = samples.recv() => Woke::Sample(r.ok()),
        () = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        } => Woke::Poll,
    }
}

/// The receivers one stream reads.
struct Feeds {
    rx: tokio::sync::broadcast::Receiver<Arc<Accepted>>,
    samples: tokio::sync::broadcast::Receiver<Arc<Sample>>,
    still_in: LetIn,
}

/// Whether the stream's viewer is still let in.
type LetIn = Box<dyn Fn() -> bool + Send + Sync>;

fn batches(
    rx: tokio::sync::broadcast::Receiver<Arc<Accepted>>,
    q: LiveQuery,
    poll: Option<Poll>,
    still_in: LetIn,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let feeds = Feeds {
        rx,
        samples: crate::unmatched::subscribe(),
        still_in,
    };
    futures_util::stream::unfold((feeds, q, poll), |(mut feeds, q, mut poll)| async move {
        loop {
            let mut batch = Batch::default();
            match wake(&mut feeds.rx, &mut feeds.samples, poll.as_ref()).await {
                Woke::Event(Ok(a)) => batch.take(a, &q),
                Woke::Event(Err(RecvError::Lagged(n))) => batch.skipped += n,
                Woke::Event(Err(RecvError::Closed)) => return None,
                Woke::Sample(Some(s)) => batch.sample(s, &q),
                Woke::Sample(None) | Woke::Poll => {}
            }
            tokio::time::sleep(GATHER).await;
            let rx = &mut feeds.rx;
            loop {
                match rx.try_recv() {
                    Ok(a) => batch.take(a, &q),
                    Err(TryRecvError::Lagged(n)) => batch.skipped += n,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => break,
                }
            }
            while let Ok(s) = feeds.samples.try_recv() {
                batch.sample(s, &q);
            }
            if let Some(p) = poll.as_mut() {
                batch.rows.retain(|a| p.sent.insert(&a.row.id));
                if tokio::time::Instant::now() >= p.next {
                    let own = std::mem::take(&mut batch.rows);
                    for a in p.unseen(&q).await.into_iter().chain(own) {
                        batch.take(a, &q);
                    }
                }
            }
            let events = batch.events();
            if !events.is_empty() {
                if !(feeds.still_in)() {
                    // Signed out (or no longer a user) since the stream opened: it ends here.
                    return None;
                }
                return Some((futures_util::stream::iter(events), (feeds, q, poll)));
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
            awaiting_approval: 0,
            parent: None,
            summary: None,
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
        assert_eq!(b.rows.len(), BATCH, "one array of BATCH rows");
        assert_eq!(b.skipped, 3, "the rest are counted");
        let out = b.events();
        assert_eq!(out.len(), 2, "rows, then the skipped count");
    }
}
