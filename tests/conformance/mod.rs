//! The storage conformance suite: what every backend of `rulehook::store` must do, written once
//! against the four traits (`EventLog`, `WorkQueue`, `StateStore`, `History`).
//!
//! A backend runs it from a small test file: implement [`Backend`] (open the storage under
//! test; opening it again on the same value is a restart) and call each `pub async fn` here
//! from its own `#[tokio::test(flavor = "multi_thread")]`, with a fresh `Backend` (an empty
//! storage) per test. `tests/store_embedded.rs` is the runner of the embedded SQLite store.
//!
//! Nothing here assumes one process owns the storage: leases from before a restart may come
//! back only when their ttl ran out (JetStream), so the suite leases with short ttls before a
//! restart and waits for jobs that must come with [`WAIT`]. A lease may come without its
//! event (`Lease::event` is `None`): then `log.event(id)` must have it. `ack` and `nak` may
//! return before they are durable: the suite calls `queue.flush()` before it reads what they
//! wrote and before a restart (as a graceful shutdown does).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rulehook::domain::{
    Attempt, Envelope, Event, EventDoc, Job, JobState, Match, Outcome, Phase, Step, StoreError,
    Throttled, new_event_id, now_ms,
};
use rulehook::store::{
    Appended, EventFilter, EventStatus, JobFilter, JobStatus, Lease, Pruned, Revision, Store,
};
use serde_json::json;
use tokio::task::JoinSet;

/// How the storage under test is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// Leases of one job without an ack before it becomes a dead letter (`None`: the
    /// backend's default).
    pub max_deliveries: Option<u32>,
}

/// A backend under test: one storage, empty when the test starts.
pub trait Backend: Send + Sync {
    /// Opens the storage under test. Every call on one `Backend` opens the *same* storage; the
    /// suite drops every handle of the previous open first, so a second call is a restart.
    fn open(&self, config: Config) -> impl Future<Output = Store> + Send;
}

/// The worker name the suite leases as.
pub const OWNER: &str = "conformance";
/// A lease that does not run out during a test.
pub const TTL: Duration = Duration::from_secs(60);
/// How long a fetch waits for a job that must come (a fetch returns as soon as one does).
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a fetch waits before the suite concludes that no job is fetchable.
pub const NOTHING: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Building blocks

/// A new event from `source`, received now, body `{"n": n, "source": source}`.
pub fn event(source: &str, n: u64) -> Event {
    let body = json!({ "n": n, "source": source });
    Event {
        id: new_event_id(),
        source: source.to_string(),
        kind: "generic".to_string(),
        received_at: now_ms(),
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-test".to_string(), n.to_string()),
        ],
        body_text: body.to_string(),
        doc: EventDoc::new(body),
        depth: 0,
        delivery: None,
        parent: None,
    }
}

/// A match of rule `rule` (its key is the rule name).
pub fn rule(rule: &str) -> Match {
    Match {
        rulebook: "book.yml".to_string(),
        rule: rule.to_string(),
        key: rule.to_string(),
        fingerprint: format!("fp-{rule}"),
        throttled: None,
        correlation: None,
    }
}

/// A match of `rule` that a throttle window held back (no job).
pub fn throttled(rule_name: &str) -> Match {
    Match {
        throttled: Some(Throttled {
            group: format!("{rule_name}/group"),
            fired_by: "an-earlier-event".to_string(),
            until: now_ms() + 60_000,
        }),
        ..rule(rule_name)
    }
}

pub fn envelope(event: Event, matches: Vec<Match>) -> Envelope {
    Envelope {
        event: Arc::new(event),
        matches,
        dedup_window: None,
    }
}

/// The jobs of an append that must have been new.
pub fn new_jobs(a: Appended) -> Vec<Job> {
    match a {
        Appended::New { jobs } => jobs,
        Appended::Duplicate { id } => panic!("expected a new event, got a duplicate of {id}"),
    }
}

/// Appends `event` with `matches`; the event id and the job ids.
pub async fn append(s: &Store, event: Event, matches: Vec<Match>) -> (String, Vec<String>) {
    let id = event.id.clone();
    let jobs = new_jobs(s.log.append(envelope(event, matches)).await.unwrap());
    (id, jobs.into_iter().map(|j| j.id).collect())
}

/// Appends one event from `src` matching `rule_name`; its job id.
pub async fn append_one(s: &Store, src: &str, rule_name: &str, n: u64) -> String {
    let (_, jobs) = append(s, event(src, n), vec![rule(rule_name)]).await;
    assert_eq!(jobs.len(), 1);
    jobs.into_iter().next().unwrap()
}

/// A fetch that must lease a job.
pub async fn must_fetch(s: &Store, ttl: Duration) -> Lease {
    s.queue
        .fetch(OWNER, ttl, WAIT)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no job was fetchable within {WAIT:?}"))
}

/// A fetch (waiting `wait`) that must find nothing.
pub async fn fetch_nothing(s: &Store, wait: Duration) {
    if let Some(l) = s.queue.fetch(OWNER, TTL, wait).await.unwrap() {
        panic!(
            "expected no fetchable job, got {} (delivery {}, step {:?})",
            l.job.id, l.deliveries, l.job.step
        );
    }
}

/// The lease's event, from the lease or else from the log.
pub async fn event_of(s: &Store, lease: &Lease) -> Arc<Event> {
    match &lease.event {
        Some(e) => e.clone(),
        None => s
            .log
            .event(&lease.job.event_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the log lost event {}", lease.job.event_id)),
    }
}

/// Fetches `n` jobs; by job id.
pub async fn fetch_n(s: &Store, n: usize, ttl: Duration) -> HashMap<String, Lease> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let l = must_fetch(s, ttl).await;
        let id = l.job.id.clone();
        assert!(out.insert(id.clone(), l).is_none(), "{id} leased twice");
    }
    out
}

/// Acks `Done`, then waits until that is durable (`ack` may return before).
pub async fn ack_done(s: &Store, lease: Lease) {
    let step = lease.job.step.clone();
    s.queue
        .ack(lease, step, JobState::Done, None)
        .await
        .unwrap();
    s.queue.flush().await.unwrap();
}

/// Acks a dead letter, then waits until that is durable.
pub async fn ack_failed(s: &Store, lease: Lease, error: &str) {
    let step = lease.job.step.clone();
    s.queue
        .ack(lease, step, JobState::Failed, Some(error.to_string()))
        .await
        .unwrap();
    s.queue.flush().await.unwrap();
}

/// Acks every lease `Done`, concurrently, then waits until that is durable.
pub async fn ack_all(s: &Store, leases: Vec<Lease>) {
    let mut set = JoinSet::new();
    for lease in leases {
        let q = s.queue.clone();
        set.spawn(async move {
            let step = lease.job.step.clone();
            q.ack(lease, step, JobState::Done, None).await
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    s.queue.flush().await.unwrap();
}

pub async fn job_state(s: &Store, id: &str) -> Option<JobState> {
    s.history.job(id).await.unwrap().map(|(_, st)| st)
}

/// Polls `check` until it holds or `within` passed (for effects a backend may apply a moment
/// after the call that caused them).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < until, "{what}: not so after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

fn step_at(index: u32, attempts: u32) -> Step {
    Step {
        index,
        attempts,
        tries: attempts,
        previous: Some(json!({ "from": index, "ok": true })),
        ..Step::default()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. append → fetch

/// An append makes one job per unthrottled match (`<event id>:<key>`, in match order); a fetch
/// leases each with its event; throttled matches and unmatched events make no job.
pub async fn append_then_fetch(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let mut e = event("alpha", 7);
    e.delivery = Some("delivery-1".to_string());
    e.parent = Some("parent-event".to_string());
    e.depth = 2;
    let id = e.id.clone();
    let received = e.received_at;
    let keyed = Match {
        key: "book.yml/deploy".to_string(),
        ..rule("deploy")
    };
    let matches = vec![keyed.clone(), throttled("held"), rule("page")];
    let jobs = new_jobs(s.log.append(envelope(e, matches)).await.unwrap());

    assert_eq!(jobs.len(), 2, "one job per unthrottled match: {jobs:?}");
    assert_eq!(jobs[0].id, format!("{id}:book.yml/deploy"));
    assert_eq!(jobs[1].id, format!("{id}:page"));
    for (j, m) in jobs.iter().zip([&keyed, &rule("page")]) {
        assert_eq!(j.event_id, id);
        assert_eq!(
            (&j.rulebook, &j.rule, &j.key, &j.fingerprint),
            (&m.rulebook, &m.rule, &m.key, &m.fingerprint)
        );
        assert_eq!(j.step, Step::default());
    }

    let leases = fetch_n(&s, 2, TTL).await;
    fetch_nothing(&s, NOTHING).await; // the throttled match made no job
    for j in &jobs {
        let l = &leases[&j.id];
        assert_eq!(&l.job, j, "the lease carries the job as appended");
        assert_eq!(l.deliveries, 1);
        let ev = event_of(&s, l).await;
        assert_eq!(ev.id, id);
        assert_eq!(ev.source, "alpha");
        assert_eq!(ev.kind, "generic");
        assert_eq!(ev.body(), &json!({"n": 7, "source": "alpha"}));
        assert_eq!(ev.delivery.as_deref(), Some("delivery-1"));
        assert_eq!(ev.parent.as_deref(), Some("parent-event"));
        assert_eq!(ev.depth, 2);
        assert_eq!(ev.received_at, received);
        assert!(
            ev.headers
                .contains(&("x-test".to_string(), "7".to_string()))
        );
    }
    // The log has the event whether or not the lease carried it.
    let logged = s
        .log
        .event(&id)
        .await
        .unwrap()
        .expect("the event is logged");
    assert_eq!(logged.body(), &json!({"n": 7, "source": "alpha"}));
    assert_eq!(logged.received_at, received);
    assert_eq!(logged.source, "alpha");

    // An unmatched event and an all-throttled one are logged with no job.
    let (quiet, none) = append(&s, event("alpha", 8), vec![]).await;
    assert!(none.is_empty());
    let (held, none) = append(&s, event("alpha", 9), vec![throttled("deploy")]).await;
    assert!(none.is_empty());
    assert!(s.log.event(&quiet).await.unwrap().is_some());
    assert!(s.log.event(&held).await.unwrap().is_some());
    assert!(s.log.event("no-such-event").await.unwrap().is_none());
    fetch_nothing(&s, NOTHING).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Order within a rule

/// Appends `n` events (one after the other, so acceptance order is known), each matching
/// `rule_name` once; their job ids in acceptance order.
pub async fn append_many(s: &Store, rule_name: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(append_one(s, "bulk", rule_name, i as u64).await);
    }
    ids
}

/// Fetches `n` jobs one after the other, acking them in chunks (concurrently) so no lease runs
/// out; their ids in the order they were leased. Positions (`Lease::seq`) must grow.
pub async fn fetch_in_order(s: &Store, n: usize) -> Vec<String> {
    let mut order = Vec::with_capacity(n);
    let mut chunk = Vec::new();
    let mut last_seq = None;
    for _ in 0..n {
        let l = must_fetch(s, TTL).await;
        assert_eq!(l.deliveries, 1, "{} was leased before", l.job.id);
        if let Some(prev) = last_seq {
            assert!(
                l.seq > prev,
                "{} has position {} after a job at {prev}",
                l.job.id,
                l.seq
            );
        }
        last_seq = Some(l.seq);
        order.push(l.job.id.clone());
        chunk.push(l);
        if chunk.len() == 256 {
            ack_all(s, std::mem::take(&mut chunk)).await;
        }
    }
    ack_all(s, chunk).await;
    order
}

/// Fails with where `got` first leaves `want`, and what is missing or repeated.
pub fn assert_same_order(want: &[String], got: &[String]) {
    if want == got {
        return;
    }
    let seen: HashSet<&String> = got.iter().collect();
    let missing = want.iter().filter(|w| !seen.contains(w)).count();
    let repeated = got.len() - seen.len();
    let first = want.iter().zip(got).position(|(w, g)| w != g);
    let at = first.map(|i| {
        format!(
            "at {i}: expected {}, got {} (which was accepted {})",
            want[i],
            got[i],
            want.iter()
                .position(|w| w == &got[i])
                .map_or("never".to_string(), |p| format!("at {p}"))
        )
    });
    panic!(
        "jobs out of acceptance order: {} wanted, {} got, {missing} missing, {repeated} repeated; {}",
        want.len(),
        got.len(),
        at.unwrap_or_else(|| "the common prefix agrees".to_string())
    );
}

/// `n` jobs of one rule start in acceptance order, none missing, none twice: the first half
/// queued up front (pass more than the backend holds in memory), the second half appended
/// while the first drains.
pub async fn one_rule_keeps_acceptance_order(b: &impl Backend, n: usize) {
    let s = b.open(Config::default()).await;
    let half = n / 2;
    let mut accepted = append_many(&s, "ordered", half).await;
    let producer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(n - half);
            for i in half..n {
                ids.push(append_one(&s, "bulk", "ordered", i as u64).await);
            }
            ids
        })
    };
    let leased = fetch_in_order(&s, n).await;
    accepted.extend(producer.await.unwrap());
    assert_same_order(&accepted, &leased);
    fetch_nothing(&s, NOTHING).await;
}

/// The same with a restart after half of them were acked: the rest come back in order, none
/// lost, none twice.
pub async fn one_rule_keeps_acceptance_order_across_a_restart(b: &impl Backend, n: usize) {
    let s = b.open(Config::default()).await;
    let accepted = append_many(&s, "ordered", n).await;
    let half = n / 2;
    let first = fetch_in_order(&s, half).await;
    assert_same_order(&accepted[..half], &first);
    drop(s);

    let s = b.open(Config::default()).await;
    let rest = fetch_in_order(&s, n - half).await;
    assert_same_order(&accepted[half..], &rest);
    fetch_nothing(&s, NOTHING).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Fairness

/// Rules take turns: a job of rule B queued behind 200 of rule A is among the first two.
#[allow(dead_code)] // not a promise of every backend (JetStream: one FIFO)
pub async fn rules_take_turns(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let a = append_many(&s, "busy", 200).await;
    let b_job = append_one(&s, "bulk", "quiet", 0).await;
    let first = must_fetch(&s, TTL).await.job.id;
    let second = must_fetch(&s, TTL).await.job.id;
    assert!(
        first == b_job || second == b_job,
        "the quiet rule's job waited behind the busy rule: first {first}, second {second}"
    );
    let busy = if first == b_job { second } else { first };
    assert_eq!(busy, a[0], "the busy rule starts with its oldest job");
}

// ---------------------------------------------------------------------------------------------
// 4. Lease expiry

/// A copy of a lease (same token), to use it after the original was given back.
pub fn copy_of(l: &Lease) -> Lease {
    Lease {
        job: l.job.clone(),
        event: None,
        token: l.token,
        seq: l.seq,
        deliveries: l.deliveries,
    }
}

/// A lease that runs out makes its job fetchable again (same job, delivery 2); the old lease
/// is then refused (`Conflict`) for heartbeat, progress, nak and ack, and changes nothing.
pub async fn an_expired_lease_is_redelivered_and_refused(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let id = append_one(&s, "alpha", "slow", 1).await;
    let mut old = must_fetch(&s, Duration::from_millis(150)).await;
    assert_eq!((old.job.id.as_str(), old.deliveries), (id.as_str(), 1));

    let new = must_fetch(&s, TTL).await;
    assert_eq!(new.job.id, id, "the same job comes back");
    assert_eq!(new.deliveries, 2);
    assert_eq!(new.job.step, Step::default());
    assert_eq!(event_of(&s, &new).await.id, new.job.event_id);

    let hb = s.queue.heartbeat(&old, TTL).await;
    assert!(is_conflict(&hb), "heartbeat of a lost lease: {hb:?}");
    let pr = s.queue.progress(&mut old, step_at(3, 0)).await;
    assert!(is_conflict(&pr), "progress of a lost lease: {pr:?}");
    let nak = s
        .queue
        .nak(copy_of(&old), step_at(4, 0), Duration::ZERO)
        .await;
    assert!(is_conflict(&nak), "nak of a lost lease: {nak:?}");
    let ack = s.queue.ack(old, step_at(5, 0), JobState::Done, None).await;
    assert!(is_conflict(&ack), "ack of a lost lease: {ack:?}");

    // None of that changed the job, and the new lease still holds it.
    let (job, state) = s.history.job(&id).await.unwrap().unwrap();
    assert_eq!((job.step, state), (Step::default(), JobState::Pending));
    fetch_nothing(&s, NOTHING).await; // the refused nak queued nothing
    s.queue.heartbeat(&new, TTL).await.unwrap();
    ack_done(&s, new).await;
    assert_eq!(job_state(&s, &id).await, Some(JobState::Done));
    fetch_nothing(&s, NOTHING).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Heartbeats

/// Heartbeats keep a lease past its ttl: a concurrent fetch waiting meanwhile gets nothing,
/// and the lease can still ack.
pub async fn a_heartbeat_keeps_the_lease(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let id = append_one(&s, "alpha", "long", 1).await;
    let ttl = Duration::from_millis(300);
    let lease = must_fetch(&s, ttl).await;
    assert_eq!(lease.job.id, id);

    let other = s.clone();
    let contender_wait = Duration::from_secs(1);
    let mut contender = tokio::spawn(async move {
        let started = Instant::now();
        let got = other.queue.fetch("contender", TTL, contender_wait).await;
        (got, started.elapsed())
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut beats = 0;
    let (got, waited) = loop {
        tokio::select! {
            r = &mut contender => break r.unwrap(),
            _ = tick.tick() => {
                s.queue.heartbeat(&lease, ttl).await.unwrap();
                beats += 1;
            }
        }
    };
    if let Some(l) = got.unwrap() {
        panic!(
            "a heartbeating lease was taken over: {} (delivery {})",
            l.job.id, l.deliveries
        );
    }
    // The contender waited past the ttl: the heartbeats, not the ttl, kept the job.
    assert!(waited >= ttl * 2, "the contender gave up after {waited:?}");
    assert!(beats >= 3, "only {beats} heartbeats");
    s.queue.heartbeat(&lease, ttl).await.unwrap();
    ack_done(&s, lease).await;
    assert_eq!(job_state(&s, &id).await, Some(JobState::Done));
}

// ---------------------------------------------------------------------------------------------
// 6. nak

/// A job given back with a delay is not fetchable before it, is after, and carries the step
/// given to `nak`; with no delay it is fetchable at once; the delay survives a restart.
pub async fn nak_delays_and_carries_the_step(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let id = append_one(&s, "alpha", "flaky", 1).await;
    let l = must_fetch(&s, TTL).await;
    let retry = step_at(1, 2);
    // Timed from before the nak, so a slow test process cannot make an early redelivery look
    // late (nor a correct one look early).
    let naked = std::time::Instant::now();
    s.queue
        .nak(l, retry.clone(), Duration::from_millis(800))
        .await
        .unwrap();
    let again = must_fetch(&s, TTL).await;
    // (10 ms for the store's millisecond clock against this one.)
    assert!(
        naked.elapsed() >= Duration::from_millis(790),
        "redelivered {:?} after a nak with an 800 ms delay",
        naked.elapsed()
    );
    assert_eq!(again.job.id, id);
    assert_eq!(
        again.job.step, retry,
        "the lease carries the step given to nak"
    );
    assert_eq!(again.deliveries, 2);
    let (stored, state) = s.history.job(&id).await.unwrap().unwrap();
    assert_eq!((stored.step, state), (retry.clone(), JobState::Pending));

    let next = step_at(2, 0);
    s.queue
        .nak(again, next.clone(), Duration::ZERO)
        .await
        .unwrap();
    let third = must_fetch(&s, TTL).await;
    assert_eq!(
        (third.job.id.as_str(), &third.job.step),
        (id.as_str(), &next)
    );
    assert_eq!(third.deliveries, 3);
    ack_done(&s, third).await;
    fetch_nothing(&s, NOTHING).await;

    // The delay is durable: after a restart the job still waits for it.
    let later = append_one(&s, "alpha", "flaky", 2).await;
    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, later);
    // Long enough that the restart (connecting, on a networked backend) usually ends within
    // it; timed from before the nak, so a slow restart cannot fail the test, only prove less.
    let delay = Duration::from_secs(4);
    let naked = std::time::Instant::now();
    s.queue.nak(l, retry.clone(), delay).await.unwrap();
    s.queue.flush().await.unwrap(); // as a graceful shutdown does
    drop(s);
    let s = b.open(Config::default()).await;
    let back = s
        .queue
        .fetch(OWNER, TTL, delay + WAIT)
        .await
        .unwrap()
        .expect("the job comes back after its delay");
    assert!(
        naked.elapsed() >= delay - Duration::from_millis(10),
        "back {:?} after a nak with a {delay:?} delay, across a restart",
        naked.elapsed()
    );
    assert_eq!(
        (back.job.id.as_str(), &back.job.step),
        (later.as_str(), &retry)
    );
    ack_done(&s, back).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Restart

/// Progress is durable: after a restart a job leased at the time comes back at the step last
/// recorded (and one never moved, at its first step); a job acked `Done` does not come back.
pub async fn progress_and_acks_survive_a_restart(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let moved = append_one(&s, "alpha", "r", 1).await;
    let done = append_one(&s, "alpha", "r", 2).await;
    let untouched = append_one(&s, "alpha", "r", 3).await;
    // Short leases: a backend whose leases outlive the process gives them back soon.
    let mut leases = fetch_n(&s, 3, Duration::from_secs(2)).await;

    let step = step_at(2, 1);
    let mut l = leases.remove(&moved).unwrap();
    s.queue.progress(&mut l, step.clone()).await.unwrap();
    assert_eq!(l.job.step, step, "progress updates the lease's job");
    s.queue.heartbeat(&l, Duration::from_secs(2)).await.unwrap(); // the lease is kept
    ack_done(&s, leases.remove(&done).unwrap()).await;
    let (stored, state) = s.history.job(&moved).await.unwrap().unwrap();
    assert_eq!((stored.step, state), (step.clone(), JobState::Pending));
    drop((l, leases, s));

    let s = b.open(Config::default()).await;
    let back = fetch_n(&s, 2, TTL).await;
    let ids: HashSet<&str> = back.keys().map(String::as_str).collect();
    assert_eq!(ids, HashSet::from([moved.as_str(), untouched.as_str()]));
    assert_eq!(back[&moved].job.step, step, "resumes at the recorded step");
    assert_eq!(back[&untouched].job.step, Step::default());
    for l in back.values() {
        assert_eq!(event_of(&s, l).await.id, l.job.event_id);
    }
    fetch_nothing(&s, NOTHING).await; // the acked job stays done
    assert_eq!(job_state(&s, &done).await, Some(JobState::Done));
    assert_eq!(job_state(&s, &moved).await, Some(JobState::Pending));
}

// ---------------------------------------------------------------------------------------------
// 8. Dead letters

fn failed_filter() -> JobFilter {
    JobFilter {
        state: Some(JobState::Failed),
        rule: None,
        limit: 100,
        status: None,
    }
}

/// With a budget of `max` deliveries, a job leased `max` times and never acked becomes a dead
/// letter; `rerun` makes it fetchable again at the step given (with a fresh budget), and is
/// `false` for jobs that are not dead letters.
pub async fn dead_letter_after_the_delivery_budget(b: &impl Backend, max: u32) {
    let s = b
        .open(Config {
            max_deliveries: Some(max),
        })
        .await;
    let finished = append_one(&s, "alpha", "fine", 1).await;
    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, finished);
    ack_done(&s, l).await;

    let id = append_one(&s, "alpha", "crashy", 2).await;
    for n in 1..=max {
        let l = must_fetch(&s, Duration::from_millis(150)).await;
        assert_eq!((l.job.id.as_str(), l.deliveries), (id.as_str(), n));
        // Never acked: its worker "crashed".
    }
    // The last lease runs out: no further delivery.
    fetch_nothing(&s, Duration::from_secs(1)).await;
    eventually(
        Duration::from_secs(5),
        "the job is a dead letter",
        || async { job_state(&s, &id).await == Some(JobState::Failed) },
    )
    .await;
    let failed = s.history.jobs(failed_filter()).await.unwrap();
    assert_eq!(
        failed.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    assert_eq!(failed[0].status, JobStatus::Failed);
    assert!(failed[0].error.is_some(), "a dead letter says why");

    // Only dead letters re-run.
    let (done_job, _) = s.history.job(&finished).await.unwrap().unwrap();
    assert!(!s.queue.rerun(done_job).await.unwrap(), "re-ran a done job");
    let mut ghost = s.history.job(&id).await.unwrap().unwrap().0;
    ghost.id = format!("{}:no-such-rule", ghost.event_id);
    assert!(
        !s.queue.rerun(ghost).await.unwrap(),
        "re-ran a job that does not exist"
    );

    let (mut job, _) = s.history.job(&id).await.unwrap().unwrap();
    job.step = step_at(1, 0);
    assert!(s.queue.rerun(job.clone()).await.unwrap());
    assert!(!s.queue.rerun(job).await.unwrap(), "re-ran a pending job");
    assert_eq!(job_state(&s, &id).await, Some(JobState::Pending));
    assert!(s.history.jobs(failed_filter()).await.unwrap().is_empty());

    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, id);
    assert_eq!(
        l.job.step,
        step_at(1, 0),
        "the re-run starts at the step given"
    );
    assert_eq!(l.deliveries, 1, "a re-run starts a fresh delivery budget");
    assert_eq!(event_of(&s, &l).await.id, l.job.event_id);
    ack_done(&s, l).await;
    assert_eq!(job_state(&s, &id).await, Some(JobState::Done));

    // A pending job that was never leased is not a dead letter either, and stays as it was.
    let waiting = append_one(&s, "alpha", "fine", 3).await;
    let (mut job, _) = s.history.job(&waiting).await.unwrap().unwrap();
    job.step = step_at(4, 0);
    assert!(!s.queue.rerun(job).await.unwrap(), "re-ran a pending job");
    let l = must_fetch(&s, TTL).await;
    assert_eq!(
        (l.job.id.as_str(), &l.job.step),
        (waiting.as_str(), &Step::default())
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Delivery de-duplication

fn delivered(source: &str, n: u64, delivery: &str, window: Duration) -> Envelope {
    let mut e = event(source, n);
    e.delivery = Some(delivery.to_string());
    Envelope {
        event: Arc::new(e),
        matches: vec![rule("r")],
        dedup_window: Some(window),
    }
}

/// Concurrent appends of one delivery id from one source: exactly one is new, the rest are
/// duplicates of it and store nothing; another source's same id is new; no delivery id is
/// never a duplicate; once the window has passed the id is new again.
pub async fn deliveries_are_deduplicated(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let mut set = JoinSet::new();
    for n in 0..16 {
        let log = s.log.clone();
        let env = delivered("alpha", n, "d-1", Duration::from_secs(60));
        set.spawn(async move {
            let id = env.event.id.clone();
            (id, log.append(env).await.unwrap())
        });
    }
    let mut new = Vec::new();
    let mut dups = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            (id, Appended::New { jobs }) => new.push((id, jobs)),
            (id, Appended::Duplicate { id: of }) => dups.push((id, of)),
        }
    }
    assert_eq!(new.len(), 1, "exactly one new: {new:?}");
    assert_eq!(dups.len(), 15);
    let (winner, jobs) = &new[0];
    assert_eq!(jobs.len(), 1);
    for (id, of) in &dups {
        assert_eq!(of, winner, "a duplicate names the stored event");
        assert!(s.log.event(id).await.unwrap().is_none(), "{id} was stored");
    }
    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, jobs[0].id);
    fetch_nothing(&s, NOTHING).await; // duplicates queued nothing
    ack_done(&s, l).await;
    let detail = s.history.event_detail(winner).await.unwrap().unwrap();
    assert_eq!(detail.duplicates, 15);
    assert_eq!(detail.delivery_id.as_deref(), Some("d-1"));
    let listed = s.history.events(all_events()).await.unwrap();
    let row = listed.iter().find(|r| r.id == *winner).expect("listed");
    assert_eq!(row.delivery_id.as_deref(), Some("d-1"));
    assert_eq!(row.duplicates, 15);

    // Another source with the same delivery id is another delivery.
    let other = s
        .log
        .append(delivered("beta", 0, "d-1", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(matches!(other, Appended::New { .. }), "{other:?}");
    // No delivery id: nothing to de-duplicate on.
    for n in 0..2 {
        let mut env = delivered("alpha", n, "x", Duration::from_secs(60));
        Arc::get_mut(&mut env.event).unwrap().delivery = None;
        new_jobs(s.log.append(env).await.unwrap());
    }

    // A short window passes.
    let window = Duration::from_millis(400);
    let first = delivered("alpha", 1, "d-2", window);
    let first_id = first.event.id.clone();
    new_jobs(s.log.append(first).await.unwrap());
    match s
        .log
        .append(delivered("alpha", 2, "d-2", window))
        .await
        .unwrap()
    {
        Appended::Duplicate { id } => assert_eq!(id, first_id),
        a => panic!("a repeat within the window was not a duplicate: {a:?}"),
    }
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    let third = delivered("alpha", 3, "d-2", window);
    let third_id = third.event.id.clone();
    new_jobs(s.log.append(third).await.unwrap());
    // …and opens a new window.
    match s
        .log
        .append(delivered("alpha", 4, "d-2", window))
        .await
        .unwrap()
    {
        Appended::Duplicate { id } => assert_eq!(id, third_id),
        a => panic!("a repeat within the new window was not a duplicate: {a:?}"),
    }
}

/// A delivery id stays claimed across a restart for the rest of its window (a sender that
/// repeats a delivery after the service restarted gets a duplicate naming the stored event),
/// the state store reads the claim under `dedup/<source>/<delivery>`, and a window that ends
/// while the service is down ends.
pub async fn deliveries_survive_a_restart(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let long = delivered("alpha", 0, "kept", Duration::from_secs(60));
    let long_id = long.event.id.clone();
    new_jobs(s.log.append(long).await.unwrap());
    let short = Duration::from_millis(300);
    new_jobs(
        s.log
            .append(delivered("alpha", 1, "brief", short))
            .await
            .unwrap(),
    );
    drop(s);
    tokio::time::sleep(short + Duration::from_millis(200)).await;

    let s = b.open(Config::default()).await;
    match s
        .log
        .append(delivered("alpha", 2, "kept", Duration::from_secs(60)))
        .await
        .unwrap()
    {
        Appended::Duplicate { id } => assert_eq!(id, long_id),
        a => panic!("a repeat after the restart was not a duplicate: {a:?}"),
    }
    // The log names the event stored under a live delivery id, and no other.
    let stored = s.log.delivered("alpha", "kept").await.unwrap();
    assert_eq!(stored.as_deref(), Some(long_id.as_str()));
    assert_eq!(s.log.delivered("beta", "kept").await.unwrap(), None);
    assert_eq!(s.log.delivered("alpha", "brief").await.unwrap(), None);
    let again = s
        .log
        .append(delivered("alpha", 3, "brief", short))
        .await
        .unwrap();
    assert!(matches!(again, Appended::New { .. }), "{again:?}");
    let detail = s.history.event_detail(&long_id).await.unwrap().unwrap();
    assert_eq!(detail.duplicates, 1);
}

// ---------------------------------------------------------------------------------------------
// 10. State store

/// Compare-and-set: create conflicts with a live entry; update and delete need the current
/// revision; expiry frees the key; of concurrent creates (and updates from one revision)
/// exactly one wins.
pub async fn state_compare_and_set(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let st = &s.state;
    let k = "conformance/key";
    assert_eq!(st.get(k).await.unwrap(), None);
    let r1 = st.create(k, "one", None).await.unwrap();
    let again = st.create(k, "two", None).await;
    assert!(is_conflict(&again), "create over a live entry: {again:?}");
    assert_eq!(st.get(k).await.unwrap(), Some(("one".to_string(), r1)));

    let r2 = st.update(k, "two", r1, None).await.unwrap();
    assert!(r2 > r1, "a new revision: {r1} then {r2}");
    assert_eq!(st.get(k).await.unwrap(), Some(("two".to_string(), r2)));
    let stale = st.update(k, "three", r1, None).await;
    assert!(is_conflict(&stale), "update at a stale revision: {stale:?}");
    let stale = st.delete(k, Some(r1)).await;
    assert!(is_conflict(&stale), "delete at a stale revision: {stale:?}");
    assert_eq!(st.get(k).await.unwrap(), Some(("two".to_string(), r2)));
    st.delete(k, Some(r2)).await.unwrap();
    assert_eq!(st.get(k).await.unwrap(), None);
    let r3 = st.create(k, "four", None).await.unwrap();
    st.delete(k, None).await.unwrap();
    assert_eq!(st.get(k).await.unwrap(), None);
    let gone = st.update(k, "five", r3, None).await;
    assert!(is_conflict(&gone), "update of a deleted key: {gone:?}");

    // Expiry.
    let t = "conformance/ttl";
    let rt = st
        .create(t, "short", Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(st.get(t).await.unwrap(), Some(("short".to_string(), rt)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(st.get(t).await.unwrap(), None, "an expired entry is gone");
    let late = st.update(t, "late", rt, None).await;
    assert!(is_conflict(&late), "update of an expired entry: {late:?}");
    let rt2 = st.create(t, "again", None).await.unwrap();
    assert_eq!(st.get(t).await.unwrap(), Some(("again".to_string(), rt2)));
    // An update may set a ttl too.
    let rt3 = st
        .update(t, "brief", rt2, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(st.get(t).await.unwrap(), Some(("brief".to_string(), rt3)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(st.get(t).await.unwrap(), None);

    // Concurrent creates of one key: one wins (throttle windows and ticket claims).
    let c = "conformance/claim";
    let mut set = JoinSet::new();
    for n in 0..16 {
        let st = s.state.clone();
        set.spawn(async move {
            let v = format!("claimant-{n}");
            let r = st.create(c, &v, Some(Duration::from_secs(60))).await;
            (v, r)
        });
    }
    let (won, lost) = joined(&mut set).await;
    assert_eq!(won.len(), 1, "exactly one create wins: {won:?}");
    assert_eq!(lost, 15);
    let (value, rev) = won.into_iter().next().unwrap();
    assert_eq!(st.get(c).await.unwrap(), Some((value, rev)));

    // Concurrent updates from one revision: one wins.
    let mut set = JoinSet::new();
    for n in 0..16 {
        let st = s.state.clone();
        set.spawn(async move {
            let v = format!("update-{n}");
            let r = st.update(c, &v, rev, None).await;
            (v, r)
        });
    }
    let (won, lost) = joined(&mut set).await;
    assert_eq!(won.len(), 1, "exactly one update wins: {won:?}");
    assert_eq!(lost, 15);
    let (value, rev) = won.into_iter().next().unwrap();
    assert_eq!(st.get(c).await.unwrap(), Some((value, rev)));
}

/// The winners (value, revision) and the number of `Conflict`s; any other error fails.
async fn joined(
    set: &mut JoinSet<(String, Result<Revision, StoreError>)>,
) -> (Vec<(String, Revision)>, usize) {
    let mut won = Vec::new();
    let mut lost = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            (v, Ok(rev)) => won.push((v, rev)),
            (_, Err(StoreError::Conflict(_))) => lost += 1,
            (v, Err(e)) => panic!("{v}: {e}"),
        }
    }
    (won, lost)
}

// ---------------------------------------------------------------------------------------------
// 11. History

fn attempt(job: &Job, started_at: i64, outcome: Option<Outcome>, finished: Option<i64>) -> Attempt {
    Attempt {
        job_id: job.id.clone(),
        run_id: job.run_id(Phase::Main, 0),
        phase: Phase::Main,
        index: 0,
        attempt: 1,
        action: "run_script",
        rendered: json!({ "script": "work.sh", "args": ["1"] }).to_string(),
        started_at,
        outcome,
        finished_at: finished,
    }
}

fn all_events() -> EventFilter {
    EventFilter {
        limit: 100,
        ..EventFilter::default()
    }
}

async fn event_ids(s: &Store, filter: EventFilter) -> HashSet<String> {
    let rows = s.history.events(filter).await.unwrap();
    let ids: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), rows.len(), "an event listed twice");
    ids
}

async fn job_ids(s: &Store, state: Option<JobState>, rule: Option<&str>) -> HashSet<String> {
    let filter = JobFilter {
        state,
        rule: rule.map(str::to_string),
        limit: 100,
        status: None,
    };
    s.history
        .jobs(filter)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

fn set_of(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Attempts recorded at their start and again at their end are one attempt with a status and
/// a duration; the event list filters by status (throttled and unmatched included), rule,
/// source and time; the job list by state and rule.
pub async fn history_records_and_filters(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let (done_ev, done_jobs) = append(&s, event("alpha", 1), vec![rule("deploy")]).await;
    let (failed_ev, failed_jobs) = append(&s, event("alpha", 2), vec![rule("page")]).await;
    let (pending_ev, pending_jobs) = append(&s, event("beta", 3), vec![rule("deploy")]).await;
    let (throttled_ev, none) = append(&s, event("beta", 4), vec![throttled("deploy")]).await;
    assert!(none.is_empty());
    let (unmatched_ev, _) = append(&s, event("gamma", 5), vec![]).await;
    let mut old = event("alpha", 6);
    old.received_at = now_ms() - 3_600_000;
    let (old_ev, _) = append(&s, old, vec![]).await;

    let mut leases = fetch_n(&s, 3, TTL).await;
    let done_lease = leases.remove(&done_jobs[0]).unwrap();
    let failed_lease = leases.remove(&failed_jobs[0]).unwrap();

    // An attempt that runs, then succeeds.
    let started = now_ms() - 1500;
    let job = done_lease.job.clone();
    s.history
        .record(attempt(&job, started, None, None))
        .await
        .unwrap();
    let detail = s.history.event_detail(&done_ev).await.unwrap().unwrap();
    assert_eq!(detail.status, EventStatus::Pending);
    assert_eq!(detail.matches.len(), 1);
    let a = &detail.matches[0].attempts;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].status, "running");
    assert!(a[0].finished_at.is_none() && a[0].duration_ms.is_none());
    let ok = Outcome {
        ok: true,
        exit_code: Some(0),
        stdout: "fine".to_string(),
        ..Outcome::default()
    };
    s.history
        .record(attempt(&job, started, Some(ok), Some(started + 1500)))
        .await
        .unwrap();
    ack_done(&s, done_lease).await;
    let detail = s.history.event_detail(&done_ev).await.unwrap().unwrap();
    assert_eq!(detail.status, EventStatus::Done);
    let m = &detail.matches[0];
    assert_eq!(
        (m.id.as_str(), m.status),
        (done_jobs[0].as_str(), JobStatus::Done)
    );
    assert_eq!(m.attempts.len(), 1, "start and finish are one attempt");
    let a = &m.attempts[0];
    assert_eq!(a.status, "ok");
    assert_eq!(a.run_id, job.run_id(Phase::Main, 0));
    assert_eq!((a.attempt, a.phase, a.action_index), (1, "main", 0));
    assert_eq!(a.action, "run_script");
    assert_eq!(a.duration_ms, Some(1500));
    assert_eq!(a.duration.as_deref(), Some("1.5s"));
    assert!(a.finished_at.is_some());
    assert_eq!(a.exit_code, Some(0));
    assert_eq!(a.stdout.as_deref(), Some("fine"));
    assert_eq!(a.rendered, json!({ "script": "work.sh", "args": ["1"] }));

    // An attempt that fails; the job becomes a dead letter.
    let job = failed_lease.job.clone();
    let started = now_ms() - 250;
    s.history
        .record(attempt(&job, started, None, None))
        .await
        .unwrap();
    let bad = Outcome {
        ok: false,
        exit_code: Some(3),
        stderr: "boom".to_string(),
        error: Some("exit status 3".to_string()),
        ..Outcome::default()
    };
    // Finished without waiting: durable once a later write is (here the ack, then a flush).
    s.history
        .record_later(attempt(&job, started, Some(bad), Some(started + 250)));
    ack_failed(&s, failed_lease, "exit status 3").await;
    let detail = s.history.event_detail(&failed_ev).await.unwrap().unwrap();
    assert_eq!(detail.status, EventStatus::Failed);
    let m = &detail.matches[0];
    assert_eq!(m.status, JobStatus::Failed);
    assert_eq!(m.error.as_deref(), Some("exit status 3"));
    assert_eq!(m.attempts.len(), 1);
    let a = &m.attempts[0];
    assert_eq!(a.status, "failed");
    assert_eq!(a.duration_ms, Some(250));
    assert_eq!(a.exit_code, Some(3));
    assert_eq!(a.stderr.as_deref(), Some("boom"));
    assert_eq!(a.error.as_deref(), Some("exit status 3"));

    // Statuses in the detail and the list.
    let throttled_detail = s
        .history
        .event_detail(&throttled_ev)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(throttled_detail.status, EventStatus::Throttled);
    assert!(throttled_detail.matches.is_empty());
    assert_eq!(throttled_detail.throttled.len(), 1);
    assert_eq!(throttled_detail.throttled[0].rule, "deploy");
    assert_eq!(
        s.history
            .event_detail(&unmatched_ev)
            .await
            .unwrap()
            .unwrap()
            .status,
        EventStatus::Unmatched
    );
    assert!(
        s.history
            .event_detail("no-such-event")
            .await
            .unwrap()
            .is_none()
    );
    let rows = s.history.events(all_events()).await.unwrap();
    assert_eq!(rows.len(), 6);
    let row = |id: &String| rows.iter().find(|r| &r.id == id).unwrap().clone();
    assert_eq!(row(&done_ev).status, EventStatus::Done);
    assert_eq!(row(&failed_ev).status, EventStatus::Failed);
    assert_eq!(row(&pending_ev).status, EventStatus::Pending);
    assert_eq!(row(&throttled_ev).status, EventStatus::Throttled);
    assert_eq!(
        (
            row(&throttled_ev).matched_rules,
            row(&throttled_ev).throttled
        ),
        (0, 1)
    );
    assert_eq!(
        (row(&pending_ev).matched_rules, row(&pending_ev).throttled),
        (1, 0)
    );
    assert_eq!(row(&unmatched_ev).status, EventStatus::Unmatched);
    assert_eq!(row(&old_ev).status, EventStatus::Unmatched);
    assert_eq!(row(&done_ev).source, "alpha");
    // Rows name the rules matched (throttled ones too) and carry the delivery id.
    assert_eq!(row(&done_ev).rules, vec!["deploy".to_string()]);
    assert_eq!(row(&throttled_ev).rules, vec!["deploy".to_string()]);
    assert!(row(&unmatched_ev).rules.is_empty());
    assert_eq!(row(&done_ev).delivery_id, None);

    let by_status = |status| EventFilter {
        status: Some(status),
        ..all_events()
    };
    let cases = [
        (EventStatus::Done, set_of(&[&done_ev])),
        (EventStatus::Failed, set_of(&[&failed_ev])),
        (EventStatus::Pending, set_of(&[&pending_ev])),
        (EventStatus::Throttled, set_of(&[&throttled_ev])),
        (EventStatus::Unmatched, set_of(&[&unmatched_ev, &old_ev])),
    ];
    for (status, want) in cases {
        assert_eq!(event_ids(&s, by_status(status)).await, want, "{status:?}");
    }
    let by_source = |src: &str| EventFilter {
        source: Some(src.to_string()),
        ..all_events()
    };
    assert_eq!(
        event_ids(&s, by_source("alpha")).await,
        set_of(&[&done_ev, &failed_ev, &old_ev])
    );
    assert_eq!(
        event_ids(&s, by_source("beta")).await,
        set_of(&[&pending_ev, &throttled_ev])
    );
    assert!(event_ids(&s, by_source("nobody")).await.is_empty());
    let by_rule = |r: &str| EventFilter {
        rule: Some(r.to_string()),
        ..all_events()
    };
    assert_eq!(
        event_ids(&s, by_rule("deploy")).await,
        set_of(&[&done_ev, &pending_ev, &throttled_ev]),
        "the rule filter includes throttled matches"
    );
    assert_eq!(event_ids(&s, by_rule("page")).await, set_of(&[&failed_ev]));
    let since = EventFilter {
        since: Some(now_ms() - 600_000),
        ..all_events()
    };
    let recent = event_ids(&s, since).await;
    assert_eq!(recent.len(), 5);
    assert!(!recent.contains(&old_ev));
    let combined = EventFilter {
        source: Some("beta".to_string()),
        status: Some(EventStatus::Pending),
        rule: Some("deploy".to_string()),
        ..all_events()
    };
    assert_eq!(event_ids(&s, combined).await, set_of(&[&pending_ev]));
    let two = EventFilter {
        limit: 2,
        ..all_events()
    };
    assert_eq!(s.history.events(two).await.unwrap().len(), 2);

    // The job list.
    assert_eq!(
        job_ids(&s, Some(JobState::Done), None).await,
        set_of(&[&done_jobs[0]])
    );
    assert_eq!(
        job_ids(&s, Some(JobState::Failed), None).await,
        set_of(&[&failed_jobs[0]])
    );
    assert_eq!(
        job_ids(&s, Some(JobState::Pending), None).await,
        set_of(&[&pending_jobs[0]])
    );
    assert_eq!(job_ids(&s, None, None).await.len(), 3);
    assert_eq!(
        job_ids(&s, None, Some("deploy")).await,
        set_of(&[&done_jobs[0], &pending_jobs[0]])
    );
    assert!(
        job_ids(&s, Some(JobState::Pending), Some("page"))
            .await
            .is_empty()
    );
    let (job, state) = s.history.job(&pending_jobs[0]).await.unwrap().unwrap();
    assert_eq!(
        (job.event_id.as_str(), state),
        (pending_ev.as_str(), JobState::Pending)
    );
    assert_eq!(
        (job.rule.as_str(), job.fingerprint.as_str()),
        ("deploy", "fp-deploy")
    );
    assert!(s.history.job("no-such-job:rule").await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// 12. Retention

/// `prune(before)` removes events older than `before` that are finished (every job done, or
/// none made) or unmatched and whose jobs last changed before `before`, with their jobs and
/// attempts; never one with a pending job or a dead letter, nor an old one a user just acted on
/// (a re-run: its new attempts stay too); and expired state entries. Returns what the first pass pruned (the runner
/// checks `state`, which a backend whose storage expires entries by itself may report as 0).
pub async fn retention_keeps_unfinished_work(b: &impl Backend) -> Pruned {
    let s = b.open(Config::default()).await;
    let long_ago = || {
        let mut e = event("alpha", 0);
        e.received_at = now_ms() - 2 * 3_600_000;
        e
    };
    let (old_done, old_done_jobs) = append(&s, long_ago(), vec![rule("a")]).await;
    let (old_unmatched, _) = append(&s, long_ago(), vec![]).await;
    let (old_throttled, _) = append(&s, long_ago(), vec![throttled("a")]).await;
    let (old_pending, old_pending_jobs) = append(&s, long_ago(), vec![rule("b")]).await;
    let (old_failed, old_failed_jobs) = append(&s, long_ago(), vec![rule("c")]).await;
    let (old_mixed, mixed_jobs) = append(&s, long_ago(), vec![rule("d"), rule("e")]).await;
    let mut leases = fetch_n(&s, 5, TTL).await;
    let l = leases.remove(&old_done_jobs[0]).unwrap();
    let started = now_ms() - 100;
    let ok = Outcome {
        ok: true,
        ..Outcome::default()
    };
    s.history
        .record(attempt(
            &l.job,
            started,
            Some(ok.clone()),
            Some(started + 50),
        ))
        .await
        .unwrap();
    ack_done(&s, l).await;
    let l = leases.remove(&old_failed_jobs[0]).unwrap();
    s.history
        .record(attempt(
            &l.job,
            started,
            Some(Outcome::failed("no")),
            Some(started + 50),
        ))
        .await
        .unwrap();
    ack_failed(&s, l, "no").await;
    let l = leases.remove(&mixed_jobs[0]).unwrap();
    s.history
        .record(attempt(
            &l.job,
            started,
            Some(ok.clone()),
            Some(started + 50),
        ))
        .await
        .unwrap();
    ack_done(&s, l).await;
    let pending_lease = leases.remove(&old_pending_jobs[0]).unwrap();
    let mixed_lease = leases.remove(&mixed_jobs[1]).unwrap();

    let st = &s.state;
    st.create("retention/short", "x", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    st.create("retention/long", "y", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    st.create("retention/forever", "z", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The retention boundary: every job above changed before it, the recent event comes after.
    let cut = now_ms();
    let (recent_done, recent_jobs) = append(&s, event("alpha", 1), vec![rule("a")]).await;
    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, recent_jobs[0]);
    ack_done(&s, l).await;

    let pruned = s.log.prune(cut).await.unwrap();
    assert_eq!(
        (pruned.events, pruned.jobs, pruned.attempts),
        (3, 1, 1),
        "the old done, unmatched and throttled events, one job, one attempt: {pruned:?}"
    );
    for gone in [&old_done, &old_unmatched, &old_throttled] {
        assert!(s.log.event(gone).await.unwrap().is_none(), "{gone} kept");
        assert!(s.history.event_detail(gone).await.unwrap().is_none());
    }
    assert!(s.history.job(&old_done_jobs[0]).await.unwrap().is_none());
    for kept in [&old_pending, &old_failed, &old_mixed, &recent_done] {
        assert!(s.log.event(kept).await.unwrap().is_some(), "{kept} pruned");
    }
    assert_eq!(
        event_ids(&s, all_events()).await,
        set_of(&[&old_pending, &old_failed, &old_mixed, &recent_done])
    );
    let failed = s.history.event_detail(&old_failed).await.unwrap().unwrap();
    assert_eq!(
        failed.matches[0].attempts.len(),
        1,
        "a dead letter keeps its attempts"
    );
    let mixed = s.history.event_detail(&old_mixed).await.unwrap().unwrap();
    assert_eq!(
        mixed.matches.len(),
        2,
        "an unfinished event keeps all its jobs"
    );
    assert_eq!(mixed.matches[0].attempts.len(), 1);
    assert_eq!(st.get("retention/short").await.unwrap(), None);
    assert!(st.get("retention/long").await.unwrap().is_some());
    assert!(st.get("retention/forever").await.unwrap().is_some());

    // What was kept still works: the pending job finishes, the dead letter re-runs.
    ack_done(&s, pending_lease).await;
    let (job, _) = s.history.job(&old_failed_jobs[0]).await.unwrap().unwrap();
    assert!(s.queue.rerun(job).await.unwrap());
    // Finished just now, the old pending event stays (its job changed within the period), as
    // does the re-run one and the mixed one.
    let again = s.log.prune(now_ms() - 3_600_000).await.unwrap();
    assert_eq!((again.events, again.jobs), (0, 0), "{again:?}");
    for kept in [&old_pending, &old_failed, &old_mixed] {
        assert!(s.log.event(kept).await.unwrap().is_some(), "{kept} pruned");
    }
    ack_done(&s, mixed_lease).await;
    let l = must_fetch(&s, TTL).await;
    assert_eq!(l.job.id, old_failed_jobs[0]);
    assert_eq!(event_of(&s, &l).await.id, old_failed);
    // The re-run succeeds; the next pass keeps the old event with both its attempts.
    let started = now_ms();
    s.history
        .record(attempt(&l.job, started, Some(ok), Some(started + 5)))
        .await
        .unwrap();
    ack_done(&s, l).await;
    let third = s.log.prune(now_ms() - 3_600_000).await.unwrap();
    assert_eq!((third.events, third.jobs), (0, 0), "{third:?}");
    let rerun = s.history.event_detail(&old_failed).await.unwrap().unwrap();
    assert_eq!(
        rerun.matches[0].attempts.len(),
        2,
        "the re-run event keeps its attempts, the new one too"
    );
    // Once that activity is older than the period too, they all go.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = s.log.prune(now_ms()).await.unwrap();
    assert_eq!(last.events, 4, "{last:?}");
    for gone in [&old_pending, &old_failed, &old_mixed, &recent_done] {
        assert!(s.log.event(gone).await.unwrap().is_none(), "{gone} kept");
    }
    pruned
}

/// Retries (`nak`) are the engine's to count, not the queue's: many of them never make a dead
/// letter. Abandoned leases (a panicking worker) count like expired ones.
pub async fn naks_do_not_spend_the_lost_lease_budget(b: &impl Backend, max: u32) {
    let s = b
        .open(Config {
            max_deliveries: Some(max),
        })
        .await;
    let id = append_one(&s, "alpha", "flaky", 1).await;
    for n in 1..=(max * 3) {
        let l = must_fetch(&s, TTL).await;
        assert_eq!((l.job.id.as_str(), l.deliveries), (id.as_str(), n));
        let step = l.job.step.clone();
        s.queue.nak(l, step, Duration::ZERO).await.unwrap();
    }
    s.queue.flush().await.unwrap();
    assert_eq!(job_state(&s, &id).await, Some(JobState::Pending));
    for _ in 0..max {
        let l = must_fetch(&s, TTL).await;
        assert_eq!(l.job.id, id);
        let step = l.job.step.clone();
        s.queue.abandon(l, step, Duration::ZERO).await.unwrap();
    }
    s.queue.flush().await.unwrap();
    fetch_nothing(&s, NOTHING).await;
    eventually(
        Duration::from_secs(5),
        "the abandoned job is a dead letter",
        || async { job_state(&s, &id).await == Some(JobState::Failed) },
    )
    .await;
}

/// Any number of events that must stay (here more than one pruning batch of them, with pending
/// jobs) never stops retention from removing the finished ones after them.
pub async fn retention_steps_over_kept_events(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let long_ago = |n| {
        let mut e = event("alpha", n);
        e.received_at = now_ms() - 2 * 3_600_000;
        e
    };
    let kept = rulehook::store::PRUNE_BATCH + 100;
    for chunk in 0..kept.div_ceil(100) {
        let mut set = tokio::task::JoinSet::new();
        for n in (chunk * 100)..((chunk + 1) * 100).min(kept) {
            let (s, e) = (s.clone(), long_ago(n));
            set.spawn(async move { append(&s, e, vec![rule("kept")]).await });
        }
        set.join_all().await;
    }
    let mut finished = Vec::new();
    for n in 0..20 {
        finished.push(append(&s, long_ago(kept + n), vec![]).await.0);
    }
    let before = now_ms() - 3_600_000;
    let mut removed = 0;
    for _ in 0..100 {
        let p = s.log.prune(before).await.unwrap();
        removed += p.events;
        if p.events < rulehook::store::PRUNE_BATCH {
            break;
        }
    }
    assert_eq!(removed, 20, "the finished events after the kept ones went");
    for id in &finished {
        assert!(s.log.event(id).await.unwrap().is_none(), "{id} was pruned");
    }
    let left = s
        .history
        .events(EventFilter {
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1000, "the kept events stay");
}

/// `History::stored`: events since a time, in acceptance order, paged by the last id, each
/// with the matches it was stored with (every field of `Match`, correlations included).
pub async fn stored_events_page_in_acceptance_order(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let mut old = event("alpha", 0);
    old.received_at = now_ms() - 3_600_000;
    append(&s, old, vec![rule("deploy")]).await;
    let since = now_ms() - 60_000;
    let partial = Match {
        correlation: Some(rulehook::domain::Correlated {
            kind: "all_of".into(),
            group: "[\"r1\"]".into(),
            state: rulehook::domain::CorrelationState::Partial,
            events: vec![rulehook::domain::Participant {
                name: "down".into(),
                id: "e0".into(),
                at: 1,
            }],
            deadline: Some(120_001),
            waiting_for: vec!["up".into()],
            closed: Vec::new(),
        }),
        ..rule("pair")
    };
    let mut want = Vec::new();
    for n in 1..=5 {
        let matches = match n {
            2 => vec![rule("deploy"), throttled("page")],
            3 => vec![partial.clone()],
            _ => vec![],
        };
        want.push((
            append(&s, event("alpha", n), matches.clone()).await.0,
            matches,
        ));
    }
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = s.history.stored(since, after.clone(), 2).await.unwrap();
        assert!(page.len() <= 2, "a page holds at most `limit` events");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.id().to_string());
        got.extend(page.into_iter().map(|row| match row {
            rulehook::store::Stored::Event(s) => s,
            rulehook::store::Stored::Unreadable(u) => panic!("unreadable: {u:?}"),
        }));
    }
    let ids: Vec<&str> = got.iter().map(|e| e.event.id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids, want_ids,
        "since excludes the old event; order is acceptance order"
    );
    for (g, (_, m)) in got.iter().zip(&want) {
        assert_eq!(&g.matches, m, "matches come back as stored");
    }
    assert_eq!(got[0].event.body()["n"], 1);
    // A partial correlation makes no job.
    let detail = s.history.event_detail(&want[2].0).await.unwrap().unwrap();
    assert!(detail.matches.is_empty());
    assert_eq!(detail.correlations.len(), 1);
}

/// `depth().pending` counts every pending job — in memory, leased, delayed, or only in storage
/// (`n` should be above what the backend holds in memory) — across a restart, and acks and
/// re-runs move it. `serve --max-pending` is checked against it.
pub async fn depth_counts_every_pending_job(b: &impl Backend, n: usize) {
    let s = b.open(Config::default()).await;
    append_many(&s, "many", n).await;
    let counted = |s: &Store| s.queue.depth().pending;
    eventually(WAIT, "pending after appends", || async { counted(&s) == n }).await;
    let first = must_fetch(&s, TTL).await;
    let id = first.job.id.clone();
    assert_eq!(counted(&s), n, "a leased job is still pending");
    ack_failed(&s, first, "for the count").await;
    eventually(WAIT, "pending after an ack", || async {
        counted(&s) == n - 1
    })
    .await;
    s.queue.flush().await.unwrap();
    drop(s);
    let s = b.open(Config::default()).await;
    eventually(WAIT, "pending after a restart", || async {
        counted(&s) == n - 1
    })
    .await;
    let job = s
        .history
        .job(&id)
        .await
        .unwrap()
        .expect("the dead letter")
        .0;
    assert!(s.queue.rerun(job).await.unwrap(), "re-run queued");
    eventually(WAIT, "pending after a re-run", || async {
        counted(&s) == n
    })
    .await;
}

/// An event whose job waits for a person's approval says so in the event list
/// (`awaiting_approval`, how many of its jobs wait), beside its `pending` status: the status
/// values stay as they are. Once the decision is recorded the count is 0 again.
pub async fn an_event_awaiting_approval_says_so(b: &impl Backend) {
    let s = b.open(Config::default()).await;
    let (asked_ev, _) = append(&s, event("alpha", 1), vec![rule("asked")]).await;
    let (plain_ev, _) = append(&s, event("alpha", 2), vec![rule("plain")]).await;
    let mut leases = fetch_n(&s, 2, TTL).await;
    let mut lease = leases
        .drain()
        .map(|(_, l)| l)
        .find(|l| l.job.event_id == asked_ev)
        .unwrap();
    let waiting = Step {
        awaiting: Some(rulehook::domain::Awaiting {
            reason: "rule approval".to_string(),
            requested_at: now_ms(),
            deadline: now_ms() + 3_600_000,
        }),
        ..lease.job.step.clone()
    };
    s.queue.progress(&mut lease, waiting).await.unwrap();
    s.queue.flush().await.unwrap();
    // As the admin API and `rulehook events` show the rows.
    let rows = serde_json::to_value(s.history.events(all_events()).await.unwrap()).unwrap();
    let row = |id: &String| {
        let row = rows.as_array().unwrap().iter().find(|r| r["id"] == **id);
        row.unwrap().clone()
    };
    assert_eq!(row(&asked_ev)["status"], "pending", "{rows}");
    assert_eq!(row(&asked_ev)["awaiting_approval"], 1, "{rows}");
    assert_eq!(row(&plain_ev)["status"], "pending", "{rows}");
    assert_eq!(row(&plain_ev)["awaiting_approval"], 0, "{rows}");

    // Decided (approved): it runs its actions, no longer awaiting.
    let approved = Step {
        awaiting: None,
        ..lease.job.step.clone()
    };
    s.queue.progress(&mut lease, approved).await.unwrap();
    s.queue.flush().await.unwrap();
    let rows = serde_json::to_value(s.history.events(all_events()).await.unwrap()).unwrap();
    let again = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == *asked_ev);
    let again = again.unwrap();
    assert_eq!(again["status"], "pending", "{rows}");
    assert_eq!(again["awaiting_approval"], 0, "{rows}");
}
