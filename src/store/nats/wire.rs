//! What the JetStream backend writes into messages: versioned JSON mirrors of the domain types
//! (which stay free of serialization concerns), and the names of streams and subjects.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{
    Attempt, ENVELOPE_VERSION, Envelope, Event, EventDoc, Job, JobState, Match, Outcome, Phase,
    Step,
};

/// A key or job id as one subject token: ids may hold `.`, spaces or `*`, which subjects
/// cannot.
pub fn token(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Stream and subject names of one deployment (`--store-prefix`).
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Result<Names, String> {
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "store prefix `{prefix}`: use letters, digits, `_` and `-` only (it starts stream and subject names)"
            ));
        }
        Ok(Names {
            prefix: prefix.to_string(),
        })
    }
    fn stream(&self, part: &str) -> String {
        format!("{}_{part}", self.prefix)
    }
    pub fn events_stream(&self) -> String {
        self.stream("events")
    }
    pub fn queue_stream(&self) -> String {
        self.stream("queue")
    }
    pub fn jobs_stream(&self) -> String {
        self.stream("jobs")
    }
    pub fn state_stream(&self) -> String {
        self.stream("state")
    }
    pub fn history_stream(&self) -> String {
        self.stream("history")
    }
    pub fn workers(&self) -> String {
        self.stream("workers")
    }
    pub fn dispatch(&self) -> String {
        self.stream("dispatch")
    }
    pub fn event(&self, id: &str) -> String {
        format!("{}.ev.{}", self.prefix, token(id))
    }
    pub fn events_all(&self) -> String {
        format!("{}.ev.*", self.prefix)
    }
    pub fn queue(&self) -> String {
        format!("{}.q", self.prefix)
    }
    pub fn job(&self, id: &str) -> String {
        format!("{}.j.{}", self.prefix, token(id))
    }
    pub fn jobs_all(&self) -> String {
        format!("{}.j.*", self.prefix)
    }
    pub fn state(&self, key: &str) -> String {
        format!("{}.s.{}", self.prefix, token(key))
    }
    pub fn state_all(&self) -> String {
        format!("{}.s.*", self.prefix)
    }
    pub fn attempt(&self, job: &str) -> String {
        format!("{}.h.a.{}", self.prefix, token(job))
    }
    pub fn duplicate(&self, event: &str) -> String {
        format!("{}.h.d.{}", self.prefix, token(event))
    }
    pub fn forget(&self, event: &str) -> String {
        format!("{}.h.f.{}", self.prefix, token(event))
    }
    pub fn interrupted(&self, job: &str) -> String {
        format!("{}.h.i.{}", self.prefix, token(job))
    }
    pub fn is_interrupted(&self, subject: &str) -> bool {
        subject.starts_with(&format!("{}.h.i.", self.prefix))
    }
    pub fn history_all(&self) -> String {
        format!("{}.h.>", self.prefix)
    }
    pub fn is_attempt(&self, subject: &str) -> bool {
        subject.starts_with(&format!("{}.h.a.", self.prefix))
    }
    pub fn is_duplicate(&self, subject: &str) -> bool {
        subject.starts_with(&format!("{}.h.d.", self.prefix))
    }
}

/// An accepted event with its matches: one message of the event stream.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireEvent {
    pub v: u32,
    pub id: String,
    pub source: String,
    pub kind: String,
    pub received_at: i64,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub depth: u32,
    pub delivery: Option<String>,
    pub parent: Option<String>,
    pub matches: Vec<Match>,
}

impl WireEvent {
    pub fn of(e: &Envelope) -> WireEvent {
        let ev = &e.event;
        WireEvent {
            v: ENVELOPE_VERSION,
            id: ev.id.clone(),
            source: ev.source.clone(),
            kind: ev.kind.clone(),
            received_at: ev.received_at,
            headers: ev.headers.clone(),
            body: ev.body_text.clone(),
            depth: ev.depth,
            delivery: ev.delivery.clone(),
            parent: ev.parent.clone(),
            matches: e.matches.clone(),
        }
    }

    pub fn event(&self) -> Event {
        let body = serde_json::from_str::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(self.body.clone()));
        Event {
            id: self.id.clone(),
            source: self.source.clone(),
            kind: self.kind.clone(),
            received_at: self.received_at,
            headers: self.headers.clone(),
            doc: EventDoc::with_headers(body, &self.headers),
            body_text: self.body.clone(),
            depth: self.depth,
            delivery: self.delivery.clone(),
            parent: self.parent.clone(),
        }
    }

    /// One job per match that makes one (unthrottled, not a partial correlation), in match
    /// order.
    pub fn jobs(&self) -> Vec<Job> {
        self.matches
            .iter()
            .filter(|m| m.creates_job())
            .map(|m| Job {
                id: m.job_id(&self.id),
                event_id: self.id.clone(),
                rulebook: m.rulebook.clone(),
                rule: m.rule.clone(),
                key: m.key.clone(),
                fingerprint: m.fingerprint.clone(),
                step: Step::default(),
            })
            .collect()
    }
}

/// A job without its step: what a queue message carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireJob {
    pub id: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    pub key: String,
    pub fingerprint: String,
}

impl WireJob {
    pub fn of(j: &Job) -> WireJob {
        WireJob {
            id: j.id.clone(),
            event_id: j.event_id.clone(),
            rulebook: j.rulebook.clone(),
            rule: j.rule.clone(),
            key: j.key.clone(),
            fingerprint: j.fingerprint.clone(),
        }
    }
    pub fn with_step(&self, step: Step) -> Job {
        Job {
            id: self.id.clone(),
            event_id: self.event_id.clone(),
            rulebook: self.rulebook.clone(),
            rule: self.rule.clone(),
            key: self.key.clone(),
            fingerprint: self.fingerprint.clone(),
            step,
        }
    }
}

/// A job's latest state: the last message on its subject of the jobs stream; its sequence
/// number is the revision every change compares and sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: WireJob,
    pub state: JobState,
    #[serde(default)]
    pub step: Step,
    #[serde(default)]
    pub error: Option<String>,
    pub updated_at: i64,
    /// The queue message this record follows (0: the next message of the job adopts it).
    #[serde(default)]
    pub msg: u64,
    /// Retries (`nak`) of that message: deliveries beyond them are lost leases.
    #[serde(default)]
    pub naks: u32,
    /// Who holds the lease (worker id), for people.
    #[serde(default)]
    pub owner: Option<String>,
}

/// An attempt, as the history stream keeps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireAttempt {
    pub job_id: String,
    pub run_id: String,
    pub phase: Phase,
    pub index: u32,
    pub attempt: u32,
    pub action: String,
    pub rendered: String,
    pub started_at: i64,
    pub outcome: Option<Outcome>,
    pub finished_at: Option<i64>,
}

impl WireAttempt {
    pub fn of(a: &Attempt) -> WireAttempt {
        WireAttempt {
            job_id: a.job_id.clone(),
            run_id: a.run_id.clone(),
            phase: a.phase,
            index: a.index,
            attempt: a.attempt,
            action: a.action.to_string(),
            rendered: a.rendered.clone(),
            started_at: a.started_at,
            outcome: a.outcome.clone(),
            finished_at: a.finished_at,
        }
    }
    /// The attempt, and its action's kind as text.
    pub fn attempt(self) -> (Attempt, String) {
        (
            Attempt {
                job_id: self.job_id,
                run_id: self.run_id,
                phase: self.phase,
                index: self.index,
                attempt: self.attempt,
                action: "",
                rendered: self.rendered,
                started_at: self.started_at,
                outcome: self.outcome,
                finished_at: self.finished_at,
            },
            self.action,
        )
    }
}

/// A state entry: the value and when it expires; `deleted` marks a tombstone.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateValue {
    pub value: String,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
}

/// The claim on a delivery id: which event took it, when, and on which node (so a node that
/// finds its own earlier attempt's claim says so, and takes it over once that attempt ended).
#[derive(Debug, Serialize, Deserialize)]
pub struct DedupClaim {
    pub event: String,
    pub at: i64,
    #[serde(default)]
    pub node: String,
    /// The `Nats-Msg-Id` the claim's event is published under: its own id, or that of the
    /// attempt it took over (so a late copy of that attempt and this one are stored once).
    #[serde(default)]
    pub msg_id: String,
}
