//! The JetStream backend: the four storage parts on NATS JetStream, so several rulehook nodes
//! share one event log, one work queue, one state store and one history (see
//! docs/architecture.md and docs/scale-out.md).
//!
//! | part | streams |
//! | --- | --- |
//! | event log | `<p>_events` (file storage): one message per accepted event, `Nats-Msg-Id` = event id; a dispatcher (durable consumer `<p>_dispatch`) turns each into job messages |
//! | work queue | `<p>_queue` (work-queue retention), durable pull consumer `<p>_workers` shared by every worker; `<p>_jobs`: the latest record of each job (compare-and-set by sequence) |
//! | state store | `<p>_state`: one message per key (compare-and-set with `Nats-Expected-Last-Subject-Sequence`) |
//! | history | `<p>_history` (attempts, duplicates, retention marks) plus the two above, read by every node into a local read model |
//!
//! Only stream and consumer APIs that nats-server 2.9 has are used: no key-value API (the client
//! library's needs 2.10+), no per-message TTL or scheduled messages (2.11+, 2.12+).

mod log;
mod queue;
mod state;
mod view;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use tokio::task::AbortHandle;

use super::Store;
use crate::domain::StoreError;
use crate::store::sqlite::model::ReadModel;
pub use wire::Names;

/// How one deployment uses NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (several, comma-separated, for a cluster).
    pub url: String,
    /// Starts every stream, consumer and subject name (`--store-prefix`).
    pub prefix: String,
    /// How long a job leased by a node that stopped answering (crash, `kill -9`, network cut)
    /// waits before another worker gets it: the workers' consumer's ack wait. A live node
    /// keeps its leases with progress acks (every quarter of it), whatever their length.
    pub ack_wait: Duration,
    /// Lost leases past which a job becomes a dead letter.
    pub max_deliveries: u32,
    /// Stream replicas (1 on a single server, 3 on a three-node cluster).
    pub replicas: usize,
    /// How this node proves who it is to NATS.
    pub auth: NatsAuth,
    /// TLS beyond what `tls://` in the address asks for.
    pub tls: NatsTls,
}

/// Credentials for the NATS servers (`--store-user`/`--store-password`, `--store-token`).
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
}

/// TLS to the NATS servers: a CA for servers whose certificate no public CA signed, and a
/// client certificate for servers that verify clients (`verify: true`).
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert_key: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsConfig {
    pub fn new(url: &str, prefix: &str) -> NatsConfig {
        NatsConfig {
            url: url.to_string(),
            prefix: prefix.to_string(),
            ack_wait: Duration::from_secs(10),
            max_deliveries: crate::store::sqlite::MAX_DELIVERIES,
            replicas: 1,
            auth: NatsAuth::None,
            tls: NatsTls::default(),
        }
    }
}

/// The streams every part writes to, and this node's view of them.
pub(crate) struct Shared {
    pub js: jetstream::Context,
    pub names: Names,
    pub events: stream::Stream,
    pub jobs: stream::Stream,
    pub state: stream::Stream,
    pub history: stream::Stream,
    pub view: Arc<ReadModel>,
    pub progress: Arc<view::Progress>,
    pub config: NatsConfig,
    /// This process's name in delivery claims (random per start).
    pub node: String,
    /// Delivery claims this node is appending right now, one at a time per claim.
    pub appending: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Background tasks of one open store, ended when the store is dropped.
#[derive(Default)]
struct Tasks(std::sync::Mutex<Vec<AbortHandle>>);

impl Tasks {
    fn add(&self, t: impl IntoIterator<Item = AbortHandle>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(t);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            t.abort();
        }
    }
}

/// The JetStream store: one value implements the four traits.
pub struct Jet {
    shared: Arc<Shared>,
    queue: queue::Queue,
    tasks: Tasks,
    /// The history read model is built on the first history read: a node that only runs jobs
    /// never pays for following every stream.
    view_started: tokio::sync::OnceCell<()>,
}

pub(crate) fn transient(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Transient(format!("NATS: {what}: {e}"))
}

/// How long one write may keep trying across a leader election before it gives an answer: a
/// little under the 10 s that senders such as GitHub wait for a webhook's answer.
pub(crate) const WRITE_BUDGET: Duration = Duration::from_secs(7);

/// How long one publish waits for its acknowledgement before it is tried again (with the
/// same `Nats-Msg-Id`, so a publish that did land is not stored twice).
const ACK_WAIT: Duration = Duration::from_secs(2);

/// What one publish attempt came to.
enum Attempt {
    Acked(jetstream::publish::PublishAck),
    /// No stream answered (no leader during an election, or the stream's servers are down):
    /// nothing was stored.
    NotStored(String),
    /// The acknowledgement did not come (timeout, connection lost after sending): it may or
    /// may not have been stored.
    Unknown(String),
    /// A compare-and-set lost.
    WrongSequence,
    /// Will not succeed if tried again (too large, refused).
    Refused(String),
}

async fn attempt(
    js: &jetstream::Context,
    subject: &str,
    msg: PublishMessage,
    wait: Duration,
) -> Attempt {
    use jetstream::context::PublishErrorKind as K;
    let sent = match tokio::time::timeout(wait, js.send_publish(subject.to_string(), msg)).await {
        Err(_) => return Attempt::Unknown("the publish was not sent in time".into()),
        Ok(Err(e)) => return Attempt::NotStored(format!("publish: {e}")),
        Ok(Ok(ack)) => ack,
    };
    match tokio::time::timeout(wait, sent).await {
        Err(_) => Attempt::Unknown(format!("no acknowledgement within {wait:?}")),
        Ok(Ok(a)) => Attempt::Acked(a),
        Ok(Err(e)) => match e.kind() {
            K::WrongLastSequence => Attempt::WrongSequence,
            K::StreamNotFound => Attempt::NotStored(format!("publish: {e}")),
            K::MaxPayloadExceeded | K::WrongLastMessageId => Attempt::Refused(e.to_string()),
            K::TimedOut | K::BrokenPipe | K::MaxAckPending | K::Other => {
                Attempt::Unknown(format!("publish: {e}"))
            }
        },
    }
}

/// The pause between tries of one write: short at first (an election takes a few seconds).
fn backoff(try_no: u32) -> Duration {
    Duration::from_millis((100u64 << try_no.min(3)).min(800))
}

/// How a publish may be repeated after an attempt whose outcome is unknown.
#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    /// Not at all (a plain publish: a repeat could store it twice).
    Never,
    /// Under its `Nats-Msg-Id`: the stream drops a second copy within its duplicate window.
    ById,
    /// A compare-and-set: a repeat after one that landed is refused (wrong last sequence), and
    /// the caller then looks whether what is there is its own write.
    Cas,
}

/// What `publish_retrying` came to, and whether an attempt's outcome was unknown on the way.
struct Published {
    result: Result<jetstream::publish::PublishAck, StoreError>,
    unknown: bool,
}

/// Publishes until the stream acknowledges or `WRITE_BUDGET` is spent (each attempt waits at
/// most `ACK_WAIT`, and never past the budget). `Transient` when it was certainly not stored;
/// `Unknown` when an attempt may have been.
async fn publish_retrying(
    js: &jetstream::Context,
    subject: &str,
    make: impl Fn() -> PublishMessage,
    repeat: Repeat,
) -> Published {
    let start = std::time::Instant::now();
    let mut unknown: Option<String> = None;
    let mut try_no = 0;
    let done = |result, unknown: &Option<String>| Published {
        result,
        unknown: unknown.is_some(),
    };
    loop {
        let wait = ACK_WAIT.min(WRITE_BUDGET.saturating_sub(start.elapsed()));
        let why = match attempt(js, subject, make(), wait.max(Duration::from_millis(100))).await {
            Attempt::Acked(a) => return done(Ok(a), &unknown),
            Attempt::WrongSequence => {
                let e = StoreError::Conflict(format!("{subject} changed"));
                return done(Err(e), &unknown);
            }
            Attempt::Refused(e) => {
                return done(Err(StoreError::Permanent(format!("NATS: {e}"))), &unknown);
            }
            Attempt::NotStored(e) => e,
            Attempt::Unknown(e) => {
                unknown = Some(e.clone());
                if repeat == Repeat::Never {
                    return done(Err(StoreError::Unknown(format!("NATS: {e}"))), &unknown);
                }
                e
            }
        };
        if start.elapsed() + backoff(try_no) >= WRITE_BUDGET {
            let e = match &unknown {
                Some(e) => StoreError::Unknown(format!("NATS: {e}")),
                None => StoreError::Transient(format!("NATS: {why}")),
            };
            return done(Err(e), &unknown);
        }
        tokio::time::sleep(backoff(try_no)).await;
        try_no += 1;
    }
}

/// A publish that must land after the subject's last message is `expected` (0: the subject
/// is empty): compare-and-set. `Conflict` when another write came first. Tried again across
/// an election; when an attempt's answer was lost and a later one is refused, the subject's
/// last message tells whether that attempt was this write (then it succeeded).
pub(crate) async fn publish_cas(
    js: &jetstream::Context,
    stream: &stream::Stream,
    subject: String,
    payload: Vec<u8>,
    expected: u64,
) -> Result<u64, StoreError> {
    let payload = Bytes::from(payload);
    let make = || {
        PublishMessage::build()
            .payload(payload.clone())
            .expected_last_subject_sequence(expected)
    };
    let out = publish_retrying(js, &subject, make, Repeat::Cas).await;
    match out.result {
        Ok(a) => Ok(a.sequence),
        Err(StoreError::Conflict(_)) if out.unknown => match last(stream, &subject).await? {
            Some((there, seq)) if there == payload && seq > expected => Ok(seq),
            _ => Err(StoreError::Conflict(format!(
                "{subject} changed since revision {expected}"
            ))),
        },
        Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
            "{subject} changed since revision {expected}"
        ))),
        Err(e) => Err(e),
    }
}

/// A publish acknowledged by the stream. With `msg_id` it is tried again across an election
/// (the stream keeps one copy per id); the ack's `duplicate` says an earlier attempt landed.
pub(crate) async fn publish(
    js: &jetstream::Context,
    subject: String,
    payload: Vec<u8>,
    msg_id: Option<&str>,
) -> Result<jetstream::publish::PublishAck, StoreError> {
    let payload = Bytes::from(payload);
    let make = || {
        let m = PublishMessage::build().payload(payload.clone());
        match msg_id {
            Some(id) => m.message_id(id),
            None => m,
        }
    };
    let repeat = match msg_id {
        Some(_) => Repeat::ById,
        None => Repeat::Never,
    };
    publish_retrying(js, &subject, make, repeat).await.result
}

/// The last message on `subject`, with its sequence number; `None` when there is none.
///
/// On a replicated stream the stream's leader answers: a direct get may be answered by a
/// follower that has not copied the newest messages yet, and its "not found" would be taken
/// for "gone" (a job failing as "its event is no longer in the event log" right after its
/// 202), its older revision for a conflict.
pub(crate) async fn last(
    s: &stream::Stream,
    subject: &str,
) -> Result<Option<(Bytes, u64)>, StoreError> {
    let config = &s.cached_info().config;
    if config.allow_direct && config.num_replicas <= 1 {
        // Direct get: the message itself, not a JSON answer with a base64 payload.
        return match s.direct_get_last_for_subject(subject).await {
            Ok(m) => Ok(Some((m.payload, m.sequence))),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(transient("read", e)),
        };
    }
    let start = std::time::Instant::now();
    let mut try_no = 0;
    loop {
        // One attempt waits at most ACK_WAIT (the client's own request timeout is 10 s).
        let wait = ACK_WAIT.min(WRITE_BUDGET.saturating_sub(start.elapsed()));
        let got = tokio::time::timeout(wait, s.get_last_raw_message_by_subject(subject)).await;
        let e = match got {
            Ok(Ok(m)) => return Ok(Some((m.payload, m.sequence))),
            Ok(Err(e)) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {wait:?}"),
        };
        if start.elapsed() + backoff(try_no) >= WRITE_BUDGET {
            return Err(transient("read", e));
        }
        tokio::time::sleep(backoff(try_no)).await;
        try_no += 1;
    }
}

/// `nats://a:4222,nats://b:4222,…` (or `a:4222,b:4222`): every server of a cluster, so the
/// node starts while any one of them answers and fails over to the others.
pub fn server_list(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let mut out = Vec::new();
    for part in url.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let addr = part
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("`{part}` in --store `{url}` is not a NATS address: {e}"))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(format!("--store `{url}` names no NATS server"));
    }
    Ok(out)
}

fn unreachable_hint(url: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Transient(format!(
        "cannot reach NATS at {url}: {e} (start one with JetStream enabled: `nats-server -js`)"
    ))
}

/// The client's options: name, timeouts, credentials, TLS; reconnects to any listed or
/// discovered server without end (a node waits out an outage rather than exiting).
fn connect_options(config: &NatsConfig) -> async_nats::ConnectOptions {
    let mut o = async_nats::ConnectOptions::new()
        .name("rulehook")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    o = match &config.auth {
        NatsAuth::None => o,
        NatsAuth::UserPassword(u, p) => o.user_and_password(u.clone(), p.clone()),
        NatsAuth::Token(t) => o.token(t.clone()),
    };
    if let Some(ca) = &config.tls.ca {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &config.tls.cert_key {
        o = o
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    o
}

impl Jet {
    /// Connects, creates what is missing (streams, consumers), and starts this node's
    /// background work: the dispatcher, the history followers and the queue depth.
    pub async fn open(config: NatsConfig) -> Result<Jet, StoreError> {
        let names = Names::new(&config.prefix).map_err(StoreError::Permanent)?;
        let servers = server_list(&config.url).map_err(StoreError::Permanent)?;
        let client = connect_options(&config).connect(servers);
        let client = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .map_err(|_| unreachable_hint(&config.url, "no answer within 5 s"))?
            .map_err(|e| unreachable_hint(&config.url, e))?;
        let js = jetstream::new(client);
        let make = |name: String, subjects: Vec<String>| stream::Config {
            name,
            subjects,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        };
        // A node started while the cluster elects its JetStream leader (a server just lost)
        // waits for the election rather than exiting: tried again for up to 30 s.
        let create = |c: stream::Config| {
            let js = js.clone();
            async move {
                let start = std::time::Instant::now();
                loop {
                    match js.get_or_create_stream(c.clone()).await {
                        Ok(s) => return Ok(s),
                        Err(e) if start.elapsed() < Duration::from_secs(30) => {
                            tracing::info!(error = %e, "NATS: cannot create a stream yet; trying again");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            return Err(StoreError::Transient(format!(
                                "NATS: cannot create a stream (is JetStream enabled? `nats-server -js`): {e}"
                            )));
                        }
                    }
                }
            }
        };
        let events = create(make(names.events_stream(), vec![names.events_all()])).await?;
        let queue_stream = create(stream::Config {
            retention: stream::RetentionPolicy::WorkQueue,
            ..make(names.queue_stream(), vec![names.queue()])
        })
        .await?;
        let jobs = create(stream::Config {
            max_messages_per_subject: 1,
            ..make(names.jobs_stream(), vec![names.jobs_all()])
        })
        .await?;
        let state = create(stream::Config {
            max_messages_per_subject: 1,
            ..make(names.state_stream(), vec![names.state_all()])
        })
        .await?;
        let history = create(make(names.history_stream(), vec![names.history_all()])).await?;
        let view = Arc::new(ReadModel::open()?);
        let progress = Arc::new(view::Progress::default());
        let shared = Arc::new(Shared {
            js,
            names,
            events,
            jobs,
            state,
            history,
            view,
            progress,
            config,
            node: uuid::Uuid::now_v7().simple().to_string(),
            appending: Default::default(),
        });
        let mut tasks = Vec::new();
        let queue = queue::Queue::open(shared.clone(), &queue_stream, &mut tasks).await?;
        tasks.push(log::start_dispatcher(shared.clone()).await?);
        let jet = Jet {
            shared,
            queue,
            tasks: Tasks::default(),
            view_started: tokio::sync::OnceCell::new(),
        };
        jet.tasks.add(tasks);
        Ok(jet)
    }

    /// The history read model, following the streams from the first call on, caught up with
    /// this node's writes.
    pub(crate) async fn view(&self) -> &ReadModel {
        self.view_started
            .get_or_init(|| async {
                // Reads wait until what the streams held at this moment is applied.
                let s = &self.shared;
                let p = &s.progress;
                for (stream, wrote) in [
                    (&s.events, &p.wrote_events),
                    (&s.jobs, &p.wrote_jobs),
                    (&s.history, &p.wrote_history),
                ] {
                    if let Ok(info) = stream.get_info().await {
                        raise(wrote, info.state.last_sequence);
                    }
                }
                self.tasks.add(view::start_followers(self.shared.clone()));
            })
            .await;
        self.shared.progress.catch_up().await;
        &self.shared.view
    }

    /// Removes every stream of this prefix (tests; `rulehook` never does this on its own).
    pub async fn destroy(url: &str, prefix: &str) -> Result<(), StoreError> {
        let names = Names::new(prefix).map_err(StoreError::Permanent)?;
        let servers = server_list(url).map_err(StoreError::Permanent)?;
        let client = async_nats::connect(servers)
            .await
            .map_err(|e| unreachable_hint(url, e))?;
        let js = jetstream::new(client);
        for s in [
            names.events_stream(),
            names.queue_stream(),
            names.jobs_stream(),
            names.state_stream(),
            names.history_stream(),
        ] {
            let _ = js.delete_stream(&s).await;
        }
        Ok(())
    }
}

impl Store {
    /// The JetStream store described by `config`.
    pub async fn nats(config: NatsConfig) -> Result<Store, StoreError> {
        let j = Arc::new(Jet::open(config).await?);
        Ok(Store {
            log: j.clone(),
            queue: j.clone(),
            state: j.clone(),
            history: j,
        })
    }
}

/// Messages this node could not decode, by stream (`rulehook_store_unreadable_total`).
pub const UNREADABLE: &str = "rulehook_store_unreadable_total";

/// How long a message that cannot be decoded waits before it is delivered (and reported)
/// again: it stays in its stream for someone to look at, never acked away.
pub(crate) const UNREADABLE_AGAIN: Duration = Duration::from_secs(3600);

/// Reports a message that cannot be decoded: counted, and logged with its (masked, shortened)
/// content, so that what a 202 promised is never silently gone.
pub(crate) fn unreadable(
    stream: &'static str,
    subject: &str,
    payload: &[u8],
    e: impl std::fmt::Display,
) {
    metrics::counter!(UNREADABLE, "stream" => stream).increment(1);
    let raw = String::from_utf8_lossy(&payload[..payload.len().min(2048)]).into_owned();
    tracing::error!(
        stream,
        %subject,
        error = %e,
        raw = %crate::secrets::mask(&raw),
        "a stored message cannot be read: kept in its stream and delivered again in an hour; see rulehook_store_unreadable_total"
    );
}

/// A counter that only grows (the highest sequence number seen).
pub(crate) fn raise(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::AcqRel);
}
