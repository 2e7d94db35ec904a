//! rulehook on a real three-server nats-server cluster (R3 streams) under server faults: the
//! leader of the event stream, of the queue and of the state stream is killed with SIGKILL
//! under load and started again. Every accepted event's action runs, no delivery id is stored
//! twice, nothing is dead-lettered that the load did not cause. Needs `nats-server` on PATH
//! (Debian's package; `.ci/run` installs it).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{Receiver, gitlab, work_rulebook};
use common::nats_cluster::NatsCluster;
use common::{Env, Server, client, post};

/// A node of a deployment on the cluster, with R3 streams.
fn node(env: &Env, store: &str, prefix: &str, role: &str) -> Server {
    let data = env.path(&format!("data-{}", uuid::Uuid::now_v7().simple()));
    let args = [
        "--store",
        store,
        "--store-prefix",
        prefix,
        "--store-replicas",
        "3",
        "--role",
        role,
        "--lease-check",
        "3s",
        "--concurrency",
        "8",
    ];
    Server::start_on(env, &data, &args, &[])
}

/// What a sender saw over one run.
#[derive(Debug, Default)]
struct Sent {
    /// Delivery number → the event id its 202 named (new or duplicate).
    accepted: HashMap<usize, String>,
    not_accepted: Vec<usize>,
    /// 503 answers, and the longest time one event waited from its first 503 to its 202.
    unavailable: u64,
    longest_stall: Duration,
    /// The longest time one request took to be answered.
    slowest: Duration,
    /// Messages of the 503 answers, one of each.
    messages: HashSet<String>,
}

/// Sends deliveries `0..n` (GitLab-signed, delivery id `d-<tag>-<i>`) at about `rate` per
/// second from 16 senders; each sender retries a delivery with the same id after a 503 until a
/// 202, within `give_up`.
async fn send(server: &Server, tag: &str, n: usize, rate: u64, give_up: Duration) -> Sent {
    let c = client();
    let url = server.url("/hooks/gl");
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (c, url, next, tag) = (c.clone(), url.clone(), next.clone(), tag.to_string());
        set.spawn(async move {
            let mut out = Sent::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= n {
                    return out;
                }
                // Paced: delivery i is sent no earlier than i / rate seconds after the start.
                let due = start + Duration::from_millis(i as u64 * 1000 / rate);
                tokio::time::sleep_until(due.into()).await;
                let body = format!(r#"{{"n": {i}}}"#);
                let headers = gitlab(&format!("d-{tag}-{i}"));
                let first = Instant::now();
                let mut stalled: Option<Instant> = None;
                loop {
                    let asked = Instant::now();
                    let (st, resp) = post(&c, &url, &headers, body.as_bytes()).await;
                    out.slowest = out.slowest.max(asked.elapsed());
                    if st == 202 {
                        let id = resp["id"].as_str().unwrap_or_default().to_string();
                        out.accepted.insert(i, id);
                        if let Some(s) = stalled {
                            out.longest_stall = out.longest_stall.max(s.elapsed());
                        }
                        break;
                    }
                    assert_eq!(st, 503, "delivery {i}: {resp}");
                    out.unavailable += 1;
                    out.messages
                        .insert(resp["message"].as_str().unwrap_or_default().to_string());
                    stalled.get_or_insert(first);
                    if first.elapsed() > give_up {
                        out.not_accepted.push(i);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
    }
    let mut all = Sent::default();
    while let Some(r) = set.join_next().await {
        let r = r.expect("sender");
        all.accepted.extend(r.accepted);
        all.not_accepted.extend(r.not_accepted);
        all.unavailable += r.unavailable;
        all.longest_stall = all.longest_stall.max(r.longest_stall);
        all.slowest = all.slowest.max(r.slowest);
        all.messages.extend(r.messages);
    }
    all
}

fn tail(text: &str, n: usize) -> &str {
    let mut from = text.len().saturating_sub(n);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

/// The `n` of each run the receiver saw, by run id.
fn runs_by_n(recv: &Receiver) -> HashMap<u64, HashSet<String>> {
    let mut out: HashMap<u64, HashSet<String>> = HashMap::new();
    for (_, run, body) in recv.seen() {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(n) = v["n"].as_u64() {
            out.entry(n).or_default().insert(run);
        }
    }
    out
}

async fn dead_letters(server: &Server) -> Vec<serde_json::Value> {
    let resp: serde_json::Value = client()
        .get(server.url("/api/jobs?status=failed"))
        .send()
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    resp["jobs"].as_array().cloned().unwrap_or_default()
}

/// What one run came to.
#[derive(Debug)]
struct Figures {
    fault: Option<String>,
    /// From the kill to a new leader of the stream.
    election: Option<Duration>,
    sent: Sent,
    /// Deliveries whose action ran (at least once).
    ran: usize,
    dead: Vec<serde_json::Value>,
    /// Deliveries that ran under more than one run id (stored as two events).
    twice: Vec<u64>,
    /// Deliveries that ran under another event than the one their 202 named.
    mismatched: Vec<usize>,
    /// Accepted deliveries that did not run, with their event's history.
    missing: Vec<String>,
    ingest_log: String,
}

impl Figures {
    fn line(&self, n: usize) -> String {
        format!(
            "fault {:<8} events {n}: election {}, accepted {}, ran {}, dead-lettered {}, stored twice {}, answers 503 {}, longest 503 stall {:.1} s, slowest answer {:.1} s",
            self.fault.as_deref().unwrap_or("none"),
            self.election
                .map_or("not seen".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            self.sent.accepted.len(),
            self.ran,
            self.dead.len(),
            self.twice.len(),
            self.sent.unavailable,
            self.sent.longest_stall.as_secs_f64(),
            self.sent.slowest.as_secs_f64()
        )
    }
}

/// One run: `n` events at `rate`/s through one ingest and two worker nodes; the leader of
/// `stream` (if any) killed with SIGKILL a third of the way in and started again two thirds in.
async fn measure(stream: Option<&str>, n: usize, rate: u64) -> Figures {
    let mut cluster = NatsCluster::start().await;
    let (recv, url) = Receiver::start(Duration::from_millis(5)).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/work")));
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    // RULEHOOK_TEST_ONE_SEED: give the nodes the first server only (how a build that could not
    // read a server list ran here; the client learns the others from it).
    let store = match std::env::var_os("RULEHOOK_TEST_ONE_SEED") {
        Some(_) => cluster.url(0),
        None => cluster.urls(),
    };
    let ingest = node(&env, &store, &prefix, "ingest");
    let _w1 = node(&env, &store, &prefix, "worker");
    let _w2 = node(&env, &store, &prefix, "worker");
    let load = send(&ingest, &prefix, n, rate, Duration::from_secs(60));
    let fault = async {
        let stream = stream?;
        let name = format!("{prefix}_{stream}");
        tokio::time::sleep(Duration::from_millis(n as u64 * 1000 / rate / 3)).await;
        let leader = cluster.leader_of(&name).await;
        let killed = Instant::now();
        cluster.kill9(leader);
        let mut election = None;
        let back = killed + Duration::from_millis(n as u64 * 1000 / rate / 3);
        while Instant::now() < back {
            if election.is_none() && cluster.leader_other_than(&name, leader).await {
                election = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.restart(leader);
        Some(election)
    };
    let (sent, killed) = tokio::join!(load, fault);
    assert!(
        stream.is_none() || killed.is_some(),
        "the fault was not injected"
    );
    let election = killed.flatten();
    // Wait until every accepted delivery ran, or nothing moved for 30 s.
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let ran = runs_by_n(&recv).len();
        if ran >= sent.accepted.len() || since.elapsed() > Duration::from_secs(30) {
            break;
        }
        if ran != last {
            (last, since) = (ran, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = runs_by_n(&recv);
    // What the history says of each accepted delivery that did not run.
    let mut missing = Vec::new();
    for (i, id) in &sent.accepted {
        if !seen.contains_key(&(*i as u64)) {
            let detail = client()
                .get(ingest.url(&format!("/api/events/{id}")))
                .send()
                .await
                .expect("event detail")
                .text()
                .await
                .unwrap_or_default();
            missing.push(format!("delivery {i} event {id}: {detail}"));
        }
    }
    if !missing.is_empty() {
        missing.push(nats_state(&cluster, &prefix).await);
    }
    let twice = seen
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|(n, _)| *n)
        .collect();
    let mismatched = sent
        .accepted
        .iter()
        .filter(|(i, id)| {
            seen.get(&(**i as u64))
                .is_some_and(|runs| !runs.contains(&format!("{id}:work:0")))
        })
        .map(|(i, _)| *i)
        .collect();
    Figures {
        fault: stream.map(str::to_string),
        election,
        ran: seen.len(),
        dead: dead_letters(&ingest).await,
        twice,
        mismatched,
        missing,
        ingest_log: ingest.log_text(),
        sent,
    }
}

/// The streams' and consumers' state, for a failure's message.
async fn nats_state(cluster: &NatsCluster, prefix: &str) -> String {
    let client = async_nats::connect(cluster.urls_list())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut out = String::new();
    for (stream, consumer) in [
        ("events", Some("dispatch")),
        ("queue", Some("workers")),
        ("jobs", None),
    ] {
        let Ok(mut st) = js.get_stream(format!("{prefix}_{stream}")).await else {
            continue;
        };
        if let Ok(i) = st.info().await {
            out += &format!(
                "{stream}: {:?} leader {:?}\n",
                i.state,
                i.cluster.as_ref().and_then(|c| c.leader.clone())
            );
        }
        if let Some(c) = consumer {
            let info = st
                .consumer_info(format!("{prefix}_{c}"))
                .await
                .map(|i| {
                    format!(
                        "delivered {:?} ack floor {:?} pending {} ack pending {} redelivered {} waiting {} leader {:?}",
                        i.delivered,
                        i.ack_floor,
                        i.num_pending,
                        i.num_ack_pending,
                        i.num_redelivered,
                        i.num_waiting,
                        i.cluster.as_ref().and_then(|c| c.leader.clone())
                    )
                });
            out += &format!("  {c}: {info:?}\n");
        }
    }
    out
}

/// A run and what the deployment promises of it.
async fn run(stream: Option<&str>, n: usize, rate: u64) {
    let f = measure(stream, n, rate).await;
    eprintln!("{}", f.line(n));
    assert!(
        f.sent.not_accepted.is_empty(),
        "{} deliveries were never accepted within 60 s (503 messages: {:?}); the ingest node's log ends:\n{}",
        f.sent.not_accepted.len(),
        f.sent.messages,
        tail(&f.ingest_log, 6000)
    );
    assert_eq!(f.sent.accepted.len(), n);
    assert_eq!(
        f.ran, n,
        "only {} of {n} accepted events ran; dead letters: {:?}; not run: {:#?}",
        f.ran, f.dead, f.missing
    );
    assert!(f.twice.is_empty(), "deliveries stored twice: {:?}", f.twice);
    assert!(
        f.mismatched.is_empty(),
        "deliveries that ran as another event than their 202 named: {:?}",
        f.mismatched
    );
    assert!(f.dead.is_empty(), "dead letters: {:?}", f.dead);
}

/// The fault-injection benchmark (benches/jetstream_faults.sh): RULEHOOK_FAULT_RUNS rounds
/// (default 1) of RULEHOOK_FAULT_EVENTS events (default 3,000) at ~110/s, each round killing the
/// leader of the events, queue and state streams in turn; one line of figures per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: benches/jetstream_faults.sh"]
async fn fault_injection_bench() {
    let var = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (rounds, n) = (
        var("RULEHOOK_FAULT_RUNS", 1),
        var("RULEHOOK_FAULT_EVENTS", 3000),
    );
    for round in 1..=rounds {
        for stream in [None, Some("events"), Some("queue"), Some("state")] {
            let f = measure(stream, n, 110).await;
            println!("round {round}: {}", f.line(n));
            for m in &f.missing {
                println!("    not run: {m}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_fault_every_accepted_event_runs_once() {
    run(None, 600, 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_stream_leader_killed_under_load() {
    run(Some("events"), 1500, 110).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_leader_killed_under_load() {
    run(Some("queue"), 600, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_stream_leader_killed_under_load() {
    run(Some("state"), 600, 100).await;
}

/// The documented server list parses, and a node starts while the first listed server is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_list_starts_with_one_server_down() {
    let mut cluster = NatsCluster::start().await;
    cluster.kill9(0);
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/work")));
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let all = node(&env, &cluster.urls(), &prefix, "all");
    let sent = send(&all, &prefix, 20, 50, Duration::from_secs(30)).await;
    assert_eq!(sent.accepted.len(), 20, "{sent:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_by_n(&recv).len() < 20 {
        assert!(Instant::now() < deadline, "the events did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On one ingest node, a delivery sent again while its first request is still being stored is
/// not said to be "stored by another node".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_on_one_node_say_what_happened() {
    let cluster = NatsCluster::start().await;
    let (_recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/work")));
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let server = node(&env, &cluster.urls(), &prefix, "all");
    let c = client();
    let target = server.url("/hooks/gl");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        for _ in 0..3 {
            let (c, target) = (c.clone(), target.clone());
            set.spawn(async move {
                let headers = gitlab(&format!("same-{i}"));
                post(&c, &target, &headers, format!(r#"{{"n": {i}}}"#).as_bytes()).await
            });
        }
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    while let Some(r) = set.join_next().await {
        let (st, resp) = r.expect("post");
        match st {
            202 => {
                *ids.entry(resp["id"].as_str().unwrap().to_string())
                    .or_default() += 1
            }
            503 => {
                let msg = resp["message"].as_str().unwrap_or_default();
                assert!(
                    !msg.contains("another node"),
                    "one node said another node was storing: {msg}"
                );
            }
            other => panic!("unexpected {other}: {resp}"),
        }
    }
    // Each delivery once: none twice, and none lost (every request refused also fits `<= 40`).
    assert_eq!(ids.len(), 40, "40 deliveries, each stored once: {ids:?}");
}

/// A nats-server that requires a user and password: a node connects with --store-user and
/// --store-password (the password never in its log); without them it stops with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_for_a_server_that_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("auth.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n\
             authorization {{ user: rh, password: \"pw-9f3c1e\" }}\n",
            dir.path().join("js").display()
        ),
    )
    .unwrap();
    let mut nats = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/work")));
    let store = format!("nats://127.0.0.1:{port}");
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());

    let refused = env
        .cmd(&["serve", "--store", &store, "--store-prefix", &prefix])
        .arg("--data")
        .arg(env.path("data-refused"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run rulehook");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cannot reach NATS") && err.to_lowercase().contains("authorization"),
        "{err}"
    );

    let server = Server::start_on(
        &env,
        &env.path("data-ok"),
        &[
            "--store",
            &store,
            "--store-prefix",
            &prefix,
            "--store-user",
            "rh",
        ],
        &[("RULEHOOK_STORE_PASSWORD", "pw-9f3c1e".to_string())],
    );
    let sent = send(&server, &prefix, 3, 50, Duration::from_secs(20)).await;
    assert_eq!(sent.accepted.len(), 3, "{sent:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs_by_n(&recv).len() < 3 {
        assert!(Instant::now() < deadline, "the events did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!server.log_text().contains("pw-9f3c1e"));
    drop(server);
    let _ = nats.kill();
    let _ = nats.wait();
}

/// A job message that cannot be decoded is neither acked away nor silently dropped: it is
/// counted in /metrics, logged, and stays in the queue stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_job_message_stays_visible() {
    let nats = common::NatsPrefix::new();
    let (_recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/work")));
    let args = nats.args("all");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_on(&env, &env.path("data-u"), &args, &[]);
    let client = async_nats::connect(nats.url.as_str())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(format!("{}.q", nats.prefix), "{not a job".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = server.metrics().await;
        if text.contains("rulehook_store_unreadable_total{stream=\"queue\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut queue = js
        .get_stream(format!("{}_queue", nats.prefix))
        .await
        .expect("queue stream");
    let info = queue.info().await.expect("info");
    assert_eq!(info.state.messages, 1, "the message left the queue stream");
    assert!(server.log_text().contains("{not a job"), "not logged");
}
