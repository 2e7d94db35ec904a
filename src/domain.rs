//! The types every layer shares, at the bottom of the import graph: the accepted event and its
//! envelope, the job a match creates, run ids, the outcome of an attempt, and storage errors.
//!
//! This module imports nothing from the rest of the crate. `verify` builds events, `store`
//! keeps them, `engine` and `actions` use them; none of those needs another to name them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event body in the shape conditions are evaluated on: wrapped once as `[[body, envelope]]`
/// (see `rules/condition.rs`: the filter visits one node), so evaluating many rules never
/// copies it.
/// The envelope is what `meta("…")` reads in conditions: see [`envelope`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventDoc(Value);

impl EventDoc {
    /// A body with an empty envelope (events with no transport: tests, `rulehook test`).
    pub fn new(body: Value) -> Self {
        EventDoc(Value::Array(vec![Value::Array(vec![
            body,
            Value::Object(Default::default()),
        ])]))
    }
    /// A body with the envelope its stored headers describe.
    pub fn with_headers(body: Value, headers: &[(String, String)]) -> Self {
        EventDoc(Value::Array(vec![Value::Array(vec![
            body,
            envelope(headers),
        ])]))
    }
    /// Rebuilds the envelope after the headers changed (a transport recorded its peer).
    pub fn set_envelope(&mut self, headers: &[(String, String)]) {
        if let Some(Value::Array(pair)) = self.0.get_mut(0)
            && pair.len() > 1
        {
            pair[1] = envelope(headers);
        }
    }
    /// [`EventDoc::set_envelope`] for the one change the HTTP path makes (the peer, after any
    /// `x-rulehook-…` header the request carried was dropped): the same envelope, built by
    /// moving the header map instead of copying every header again.
    pub fn set_peer(&mut self, peer: &str) {
        let Some(Value::Array(pair)) = self.0.get_mut(0) else {
            return;
        };
        let Some(Value::Object(meta)) = pair.get_mut(1) else {
            return;
        };
        let mut hs = match meta.remove("headers") {
            Some(Value::Object(hs)) => hs,
            _ => serde_json::Map::new(),
        };
        // As `envelope` builds it: the peer header last, `peer` first and `headers` after it.
        hs.shift_remove(PEER_HEADER);
        hs.insert(PEER_HEADER.into(), Value::String(peer.to_string()));
        let mut fresh = serde_json::Map::new();
        fresh.insert("peer".into(), Value::String(peer.to_string()));
        fresh.insert("headers".into(), Value::Object(hs));
        *meta = fresh;
    }
    /// The event body as the sender sent it (`$`).
    pub fn body(&self) -> &Value {
        &self.0[0][0]
    }
    /// The envelope (`meta("…")`): `headers`, `peer`, `topic`, `subject`, when present.
    pub fn meta(&self) -> &Value {
        &self.0[0][1]
    }
    /// The wrapped form (`[[body, envelope]]`) the JSONPath engine evaluates.
    pub fn wrapped(&self) -> &Value {
        &self.0
    }
}

/// The stored header naming the address an event came from (every transport sets it).
pub const PEER_HEADER: &str = "x-rulehook-peer";
/// The stored header naming the MQTT topic a message was published on.
pub const TOPIC_HEADER: &str = "x-rulehook-topic";
/// The stored header naming the NATS subject a message was published on.
pub const SUBJECT_HEADER: &str = "x-rulehook-subject";

/// The envelope of an event, built from its stored headers: `headers` (HTTP request headers,
/// lower-case, as stored), and `peer`, `topic`, `subject` when the transport recorded them.
/// Transports record their envelope as `x-rulehook-…` headers, so both stores keep it
/// without a column of its own. A field the transport did not record is absent.
pub fn envelope(headers: &[(String, String)]) -> Value {
    // Sized up front: growing an order-keeping map moves its entries and rebuilds its table.
    let mut meta = serde_json::Map::with_capacity(2);
    let mut hs = serde_json::Map::with_capacity(headers.len());
    for (k, v) in headers {
        let field = match k.as_str() {
            PEER_HEADER => Some("peer"),
            TOPIC_HEADER => Some("topic"),
            SUBJECT_HEADER => Some("subject"),
            _ => None,
        };
        if let Some(f) = field {
            meta.insert(f.into(), Value::String(v.clone()));
        }
        if field.is_none() || k == PEER_HEADER {
            hs.insert(k.clone(), Value::String(v.clone()));
        }
    }
    meta.insert("headers".into(), Value::Object(hs));
    Value::Object(meta)
}

/// An accepted event: what the event log keeps and every job of it reads. Its id is given when
/// it is accepted (a UUIDv7, so ids sort by acceptance time and never repeat across data
/// directories: they are part of run ids, which outside systems use as idempotency keys).
#[derive(Debug)]
pub struct Event {
    pub id: String,
    pub source: String,
    /// The verification kind (`ipfabric`, `internal`, …).
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    /// Request headers, lower-case, credential headers removed.
    pub headers: Vec<(String, String)>,
    pub doc: EventDoc,
    /// The body as stored: the raw text received, or the serialized body.
    pub body_text: String,
    /// How many `post_event` links led to this event (0 for events from outside).
    pub depth: u32,
    /// The delivery id, when the sender gave one (or the run id of the `post_event` that
    /// emitted it).
    pub delivery: Option<String>,
    /// The event this one was emitted by (`post_event`) or replays.
    pub parent: Option<String>,
}

impl Event {
    pub fn body(&self) -> &Value {
        self.doc.body()
    }
}

/// A new event id: UUIDv7, monotonic within the process.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// When the event with this id was accepted (milliseconds since the epoch), read from its
/// UUIDv7; `None` for an id of another form.
pub fn event_id_ms(id: &str) -> Option<i64> {
    let ts = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?;
    let (secs, nanos) = ts.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

/// What the event log appends for one accepted event: the event, the rules it matched (each
/// with the fingerprint of the compiled rule version it matched), and the throttle decisions.
/// The log makes one job per unthrottled match available to the work queue.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub event: Arc<Event>,
    pub matches: Vec<Match>,
    /// De-duplication: a repeat of `(source, delivery)` within `window` is a duplicate.
    pub dedup_window: Option<Duration>,
}

/// The serialization version of stored envelopes (the `matches` column / message header).
pub const ENVELOPE_VERSION: u32 = 1;

/// One rule an event matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub rulebook: String,
    pub rule: String,
    /// The rule's unambiguous name in job and run ids.
    pub key: String,
    /// A hash of the compiled rule version that matched.
    pub fingerprint: String,
    /// Set when the match was throttled: no job was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<Throttled>,
    /// Set for a correlation rule: what the event did to its partial match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Correlated>,
}

impl Match {
    /// The id of the job this match creates on `event`.
    pub fn job_id(&self, event: &str) -> String {
        format!("{event}:{}", self.key)
    }

    /// A correlation that only holds this event, for now.
    pub fn is_partial(&self) -> bool {
        self.correlation
            .as_ref()
            .is_some_and(|c| c.state == CorrelationState::Partial)
    }

    /// Whether the log makes a job of it: not throttled, and not a correlation that is still
    /// partial (one that fired, or an absence waiting for its deadline, makes one).
    pub fn creates_job(&self) -> bool {
        self.throttled.is_none() && !self.is_partial()
    }
}

/// What one event did to a correlation rule's partial match (kept in the envelope, so the
/// history explains it, and read by the job a correlation makes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlated {
    /// `all_of`, `sequence`, `absence` or `count`.
    pub kind: String,
    /// The `group_by` values as a JSON array text.
    pub group: String,
    pub state: CorrelationState,
    /// The events that took part so far, in arrival order.
    pub events: Vec<Participant>,
    /// Partial: when the window closes. Absence: when it fires unless the missing event comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<i64>,
    /// Partial: what it still waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// Absence: the events whose windows this one closed (the missing event came in time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<String>,
}

/// How the job of an absence whose missing event came in time ends (done, no action run): its
/// error starts with this, and the console and `rulehook event` show it as "did not fire".
pub const DID_NOT_FIRE: &str = "did not fire";

/// The note a job of a shadow rule closes with (it starts with `shadow`): every action was
/// rendered and recorded, none ran.
pub const SHADOW_NOTE: &str =
    "shadow: nothing ran; the history shows each action as it would have run";

/// Where a correlation stands after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrelationState {
    /// Held in the state store, waiting for more events: no job.
    Partial,
    /// Complete: its job runs now, with every event that took part.
    Fired,
    /// An absence opened: its job waits for the deadline, then fires unless the missing
    /// event came.
    Waiting,
}

/// One event that took part in a correlation, under its condition's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub name: String,
    pub id: String,
    /// Milliseconds since the epoch (the time the correlation saw it).
    pub at: i64,
}

/// Where "now" comes from: the system clock, or a test's. Correlation windows are decided by
/// it (not by storage expiry), so tests move time instead of sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn new(f: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }
    /// Milliseconds since the epoch.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new(now_ms)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// A throttle decision: the match fell in a window opened by an earlier event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttled {
    pub group: String,
    pub fired_by: String,
    /// Milliseconds since the epoch.
    pub until: i64,
}

/// Where a job is: which part of the rule and which action, with how many attempts that
/// action has had. Recorded durably whenever it moves, so a crash resumes exactly here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Step {
    pub phase: Phase,
    pub index: u32,
    /// Attempts the action at `index` has already had.
    pub attempts: u32,
    /// Attempts in the current run of the action (a re-run starts a fresh retry budget).
    pub tries: u32,
    /// What `on_failure` actions see as `failure` (set when the phase is `OnFailure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Value>,
    /// What the action before `index` produced (`previous` in templates), kept so a resumed
    /// or re-run job renders exactly as the first run would have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
    /// `previous` of the main action that failed for good, for a re-run of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_previous: Option<Value>,
    /// The step that failed for good, where a re-run starts again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<(u32, u32)>,
    /// Bumped when a re-run moves the job to a changed rule version: run ids of a new
    /// generation never repeat an old one's.
    pub generation: u32,
    /// How many times a person re-ran the job (either kind of re-run). A re-run is an explicit
    /// request, so a `skip` window holds it rather than dropping it: a resumed re-run of a job
    /// that failed before its first action meets the gate again in the same generation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reruns: u32,
    /// The attempts each `on_failure` action had in this generation's earlier runs (by index):
    /// a re-run that fails again runs `on_failure` under the same run ids, and its attempts
    /// count on from these (`attempt 2`), so the history tells the re-run's from the first's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure_attempts: Vec<u32>,
    /// Set while the job waits for a decision before its first action (`awaiting_approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Awaiting>,
    /// The decision that let the job start, or turned it down (`rejected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Set while a maintenance window holds the job before its first action (absent in
    /// records written before it existed: not held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldBy>,
}

/// Which maintenance window holds a job and until when: kept in its step when the window gate
/// gives the job back, so that every node of a cluster (and a restarted one) shows the job as
/// held (`held_by`), not only the node whose gate held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBy {
    pub window: String,
    /// `hold` (a `skip` window holds a re-run as `hold`).
    pub during: String,
    /// When the window ends (milliseconds since the epoch; `rules::windows::ENDLESS` for a
    /// window that never ends).
    pub until: i64,
}

impl Step {
    /// A person asked for this run (a re-run of a dead letter, on a changed rule or not):
    /// a `skip` window holds it until the window ends instead of dropping it.
    pub fn asked_again(&self) -> bool {
        self.generation > 0 || self.reruns > 0
    }
}

/// Why and until when a job waits for approval: kept in its step, so the wait is as durable
/// as the job and every node that leases it knows its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    /// `rule approval`, or `window <name>` for a maintenance window with `during: approve`.
    pub reason: String,
    /// Milliseconds since the epoch.
    pub requested_at: i64,
    /// When `on_timeout` decides (milliseconds since the epoch).
    pub deadline: i64,
}

/// The longest comment a person may give with a decision (approve or reject, by the API, the
/// CLI or the console), in bytes of UTF-8: the comment is kept with the decision in the job, the
/// history and the audit trail, so a client must not be able to make it any size.
pub const MAX_COMMENT_BYTES: usize = 4096;

/// Who decided about a job waiting for approval, when and why: shown in the history, the
/// console and `rulehook event`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approved: bool,
    /// A user's name, `admin-token`, `loopback`, `timeout` when `on_timeout` decided, or
    /// `window end` when the window that asked was over before anyone decided.
    pub by: String,
    /// Milliseconds since the epoch.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The reason approval was asked for.
    pub reason: String,
}

impl Decision {
    /// The decision in one line: `approved by ann (…): comment`.
    pub fn summary(&self) -> String {
        let verb = if self.approved {
            "approved"
        } else {
            "rejected"
        };
        let who = match self.by.as_str() {
            "timeout" => "on timeout".to_string(),
            "window end" => "at the window's end".to_string(),
            by => format!("by {by}"),
        };
        let comment = self
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("{verb} {who} at {}{comment}", rfc3339(self.at))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Main,
    OnFailure,
}

/// A job: the work one match created. What the work queue leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `<event id>:<rule key>`.
    pub id: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    pub key: String,
    /// The compiled rule version it must run.
    pub fingerprint: String,
    pub step: Step,
}

impl Job {
    /// The run id of action `index` in `phase`: `<job>:<i>`, `<job>:on_failure:<i>`; after a
    /// re-run on a changed rule, `<job>:v<generation>:<i>`.
    pub fn run_id(&self, phase: Phase, index: u32) -> String {
        // `id[:v<generation>][:on_failure]:<index>`, pushed in place (`format!` cost ~0.9k
        // instructions per run).
        let g = self.step.generation;
        let mut id = String::with_capacity(self.id.len() + 24);
        id.push_str(&self.id);
        if g != 0 {
            id.push_str(":v");
            push_decimal(&mut id, u64::from(g));
        }
        if phase == Phase::OnFailure {
            id.push_str(":on_failure");
        }
        id.push(':');
        push_decimal(&mut id, u64::from(index));
        id
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Done,
    /// A dead letter: failed for good, kept until re-run.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        match s {
            "pending" => Some(JobState::Pending),
            "done" => Some(JobState::Done),
            "failed" => Some(JobState::Failed),
            _ => None,
        }
    }
}

/// What one attempt of an action produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub exit_code: Option<i32>,
    /// A script's stdout, or an HTTP response body (first 64 KiB).
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
    /// The HTTP status of an outbound request.
    pub status: Option<u16>,
    /// What the action produced for the history and for `previous` (ticket id and URL…).
    pub result: Option<Value>,
    /// A failure worth retrying (connection error, 408, 429, 5xx); scripts: always.
    #[serde(skip)]
    pub retryable: bool,
    /// The server asked to wait this long (Retry-After, GitHub's rate-limit reset).
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Outcome {
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            error: Some(error.into()),
            ..Outcome::default()
        }
    }

    /// What the next action sees as `previous`.
    pub fn previous(&self) -> Value {
        if let Some(status) = self.status {
            let body = serde_json::from_str::<Value>(&self.stdout)
                .unwrap_or_else(|_| Value::String(self.stdout.clone()));
            let mut v = serde_json::json!({"status": status, "body": body});
            if let Some(r) = &self.result {
                v["result"] = r.clone();
            }
            return v;
        }
        match &self.result {
            Some(r) => r.clone(),
            None => serde_json::json!({"exit_code": self.exit_code, "stdout": self.stdout}),
        }
    }
}

/// One attempt of one action, as the history records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job_id: String,
    pub run_id: String,
    pub phase: Phase,
    pub index: u32,
    /// 1-based, counting across restarts and re-runs.
    pub attempt: u32,
    pub action: &'static str,
    /// The rendered action as JSON text, credentials masked.
    pub rendered: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// `None` while it runs.
    pub outcome: Option<Outcome>,
    pub finished_at: Option<i64>,
}

/// What storage errors are, so callers know what to do about them.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Worth trying again (storage busy, connection lost, shut down for a moment).
    #[error("storage unavailable: {0}")]
    Transient(String),
    /// Will not succeed if tried again (corrupt data, incompatible format).
    #[error("storage error: {0}")]
    Permanent(String),
    /// A compare-and-set lost, or a lease is no longer held.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The write was sent but its confirmation did not come: it may have been stored. Trying
    /// again with the same delivery id is safe (a stored one is then answered as a duplicate).
    #[error("storage did not confirm the write in time: {0}")]
    Unknown(String),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    ms(SystemTime::now())
}

pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch as RFC 3339 in UTC, always with exactly three digits of
/// fractions (`2026-12-07T10:02:11.000Z`): the one form every time the service shows takes (the
/// API, the CLI, the console, the log, templates), so times line up and sort as text. Readers
/// of times (`--since`, `--at`, stored texts) take any RFC 3339 form.
pub fn rfc3339(ms: i64) -> String {
    // RFC 3339 has four-digit years: later instants (a window of centuries) show as the last
    // instant of 9999, earlier ones as the epoch.
    const LAST: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let ms = ms.clamp(0, LAST);
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        })
        .unwrap_or_default()
}

/// A stored RFC 3339 text (any offset, any number of fraction digits, as older releases wrote
/// them) in the form [`rfc3339`] shows; a text that is not RFC 3339 is shown as it is.
pub fn rfc3339_text(text: &str) -> String {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| rfc3339((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
#[test]
fn rfc3339_past_year_9999_is_clamped() {
    assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
    assert_eq!(rfc3339(i64::MIN), "1970-01-01T00:00:00.000Z");
}

#[cfg(test)]
#[test]
fn rfc3339_always_has_three_fraction_digits() {
    let at = 1_796_637_905_000; // 2026-12-07T10:05:05Z
    assert_eq!(rfc3339(at), "2026-12-07T10:05:05.000Z");
    assert_eq!(rfc3339(at + 100), "2026-12-07T10:05:05.100Z");
    assert_eq!(rfc3339(at + 120), "2026-12-07T10:05:05.120Z");
    assert_eq!(rfc3339(at + 123), "2026-12-07T10:05:05.123Z");
    assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01.000Z");
    // Stored texts of older releases, and other offsets, are shown the same way.
    for (old, shown) in [
        ("2026-12-07T10:05:05Z", "2026-12-07T10:05:05.000Z"),
        ("2026-12-07T10:05:05.1Z", "2026-12-07T10:05:05.100Z"),
        ("2026-12-07T11:05:05.1+01:00", "2026-12-07T10:05:05.100Z"),
        ("2026-12-07T10:05:05.100999Z", "2026-12-07T10:05:05.100Z"),
    ] {
        assert_eq!(rfc3339_text(old), shown, "{old}");
    }
    assert_eq!(rfc3339_text("not a time"), "not a time");
}

/// A duration for people: `850ms`, `1.2s`, `3m 5s`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h {}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// For `skip_serializing_if`: a counter at zero is left out of a job's record.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_peer_gives_the_envelope_set_envelope_builds() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let body = serde_json::json!({"a": 1});
        // Without a peer header, and with a forged one (and a topic) the request carried.
        for sent in [
            h(&[("host", "x"), ("content-type", "application/json")]),
            h(&[
                ("x-rulehook-peer", "6.6.6.6"),
                ("host", "x"),
                ("x-rulehook-topic", "t"),
            ]),
        ] {
            let mut fast = EventDoc::with_headers(body.clone(), &sent);
            fast.set_peer("127.0.0.1");
            let mut kept: Vec<_> = sent
                .into_iter()
                .filter(|(k, _)| k != PEER_HEADER && k != TOPIC_HEADER && k != SUBJECT_HEADER)
                .collect();
            kept.push((PEER_HEADER.into(), "127.0.0.1".into()));
            let mut slow = EventDoc::with_headers(body.clone(), &[]);
            slow.set_envelope(&kept);
            assert_eq!(fast.meta(), slow.meta());
            // The same order too (the envelope is shown as JSON).
            assert_eq!(fast.meta().to_string(), slow.meta().to_string());
        }
    }

    fn job(generation: u32) -> Job {
        Job {
            id: "e:r".into(),
            event_id: "e".into(),
            rulebook: "b".into(),
            rule: "r".into(),
            key: "r".into(),
            fingerprint: "f".into(),
            step: Step {
                generation,
                ..Step::default()
            },
        }
    }

    #[test]
    fn run_ids_follow_the_contract_and_never_repeat_across_generations() {
        assert_eq!(job(0).run_id(Phase::Main, 2), "e:r:2");
        assert_eq!(job(0).run_id(Phase::OnFailure, 0), "e:r:on_failure:0");
        assert_eq!(job(1).run_id(Phase::Main, 2), "e:r:v1:2");
        assert_eq!(
            job(12).run_id(Phase::OnFailure, 4_000_000_000),
            "e:r:v12:on_failure:4000000000"
        );
        assert_eq!(job(0).run_id(Phase::Main, 10), "e:r:10");
        assert_ne!(job(1).run_id(Phase::Main, 0), job(0).run_id(Phase::Main, 0));
    }

    #[test]
    fn an_event_id_tells_when_it_was_accepted() {
        let before = now_ms();
        let at = event_id_ms(&new_event_id()).expect("a v7 id");
        assert!(at >= before - 1 && at <= now_ms(), "{before} {at}");
        assert_eq!(event_id_ms("not-a-uuid"), None);
        assert_eq!(event_id_ms("6ba7b810-9dad-41d1-80b4-00c04fd430c8"), None); // v4: no time
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(1250), "1.2s");
        assert_eq!(human_duration(185_000), "3m 5s");
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = new_event_id();
        let b = new_event_id();
        assert!(a < b, "{a} < {b}");
    }
}
