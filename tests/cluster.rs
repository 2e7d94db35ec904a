//! Several rulehook processes on one NATS JetStream deployment (real processes, the real local
//! nats-server): shared work, crashes of workers and ingest nodes, de-duplication, throttles
//! and tickets across nodes, and rule versions during a rolling change.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::IntoResponse;
use common::{Env, NatsPrefix, Server, client, post};

/// What the local receiver saw: (path, run id from `Idempotency-Key`, body).
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    delay: Duration,
}

async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    tokio::time::sleep(r.delay).await;
    let run = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.seen.lock().unwrap().push((
        uri.path().to_string(),
        run,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    // Answers as GitHub's issue API does (for the ticket test); "{}" elsewhere.
    match uri.path() {
        "/repos/acme/netops/issues" => (
            axum::http::StatusCode::CREATED,
            r#"{"number": 7, "html_url": "https://github.example/acme/netops/issues/7"}"#,
        ),
        "/repos/acme/netops/issues/7" => (
            axum::http::StatusCode::OK,
            r#"{"number": 7, "state": "open"}"#,
        ),
        "/repos/acme/netops/issues/7/comments" => (axum::http::StatusCode::CREATED, r#"{"id": 1}"#),
        _ => (axum::http::StatusCode::OK, "{}"),
    }
}

impl Receiver {
    async fn start(delay: Duration) -> (Receiver, String) {
        let r = Receiver {
            delay,
            ..Receiver::default()
        };
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, format!("http://{addr}"))
    }
    fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
    /// Distinct run ids seen.
    fn runs(&self) -> HashSet<String> {
        self.seen().into_iter().map(|(_, r, _)| r).collect()
    }
    /// Waits until `n` distinct run ids were seen; false on timeout.
    async fn wait_runs(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.runs().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// A rulebook: a bearer source, one rule posting `{"n": …}` to `url`.
fn work_rulebook(url: &str) -> String {
    format!(
        r#"
sources:
  - {{ name: in, kind: bearer, secret: in-token }}
  - {{ name: gl, kind: gitlab, secret: gl-token }}
rules:
  - name: work
    condition: '$.n >= 0'
    actions:
      - post_webhook: {{ url: "{url}", body: '{{"n": {{{{ event.n }}}}}}', retries: 0 }}
"#
    )
}

fn bearer() -> Vec<(String, String)> {
    vec![("authorization".into(), "Bearer in-token".into())]
}

fn gitlab(delivery: &str) -> Vec<(String, String)> {
    vec![
        ("x-gitlab-token".into(), "gl-token".into()),
        ("x-gitlab-event-uuid".into(), delivery.into()),
    ]
}

fn node(env: &Env, nats: &NatsPrefix, role: &str, extra: &[&str]) -> Server {
    let mut args: Vec<String> = nats.args(role);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(env, &args, &[])
}

/// Posts `n` events (0..n) to `server`, 16 at a time; every one must get 202.
async fn post_all(server: &Server, n: usize) -> Vec<String> {
    let c = client();
    let url = server.url("/hooks/in");
    let mut ids = vec![String::new(); n];
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= 16 {
            let (i, id) = set.join_next().await.unwrap().unwrap();
            ids[i] = id;
        }
        let (c, url) = (c.clone(), url.clone());
        set.spawn(async move {
            let body = format!(r#"{{"n": {i}}}"#);
            let (st, resp) = post(&c, &url, &bearer(), body.as_bytes()).await;
            assert_eq!(st, 202, "{resp}");
            (i, resp["id"].as_str().unwrap().to_string())
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, id) = r.unwrap();
        ids[i] = id;
    }
    ids
}

/// The time `workers` worker processes take for `events` queued ~50 ms actions.
async fn drain_time(workers: usize, events: usize, concurrency: &str) -> Duration {
    let (recv, url) = Receiver::start(Duration::from_millis(50)).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/slow")));
    let nats = NatsPrefix::new();
    let ingest = node(&env, &nats, "ingest", &[]);
    post_all(&ingest, events).await;
    let started = Instant::now();
    let _workers: Vec<Server> = (0..workers)
        .map(|_| node(&env, &nats, "worker", &["--concurrency", concurrency]))
        .collect();
    assert!(
        recv.wait_runs(events, Duration::from_secs(240)).await,
        "{workers} worker(s) ran only {} of {events} jobs",
        recv.runs().len()
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_share_the_queue() {
    const EVENTS: usize = 3_000;
    let one = drain_time(1, EVENTS, "8").await;
    let three = drain_time(3, EVENTS, "8").await;
    let ratio = three.as_secs_f64() / one.as_secs_f64();
    eprintln!(
        "{EVENTS} jobs of ~50 ms, --concurrency 8 per worker: 1 worker {one:?}, 3 workers {three:?}: ratio {ratio:.2}"
    );
    assert!(
        ratio <= 0.40,
        "3 workers took {three:?}, 1 worker {one:?} (ratio {ratio:.2} > 0.40)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_worker_mid_load_loses_nothing() {
    const EVENTS: usize = 300;
    let (recv, url) = Receiver::start(Duration::from_millis(50)).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/slow")));
    let nats = NatsPrefix::new();
    let ingest = node(&env, &nats, "ingest", &[]);
    let ids = post_all(&ingest, EVENTS).await;
    let mut a = node(
        &env,
        &nats,
        "worker",
        &["--concurrency", "4", "--lease-check", "2s"],
    );
    let _b = node(
        &env,
        &nats,
        "worker",
        &["--concurrency", "4", "--lease-check", "2s"],
    );
    assert!(recv.wait_runs(60, Duration::from_secs(60)).await);
    a.kill9();
    let before = recv.runs().len();
    assert!(before < EVENTS, "the crash came too late to test anything");
    assert!(
        recv.wait_runs(EVENTS, Duration::from_secs(120)).await,
        "after kill -9 of a worker only {} of {EVENTS} jobs ran",
        recv.runs().len()
    );
    // At least once, with the same run id: one run id per accepted event.
    let runs = recv.runs();
    for id in &ids {
        assert!(
            runs.contains(&format!("{id}:work:0")),
            "event {id} never ran"
        );
    }
    assert_eq!(
        runs.len(),
        EVENTS,
        "run ids other than one per event: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ingest_node_killed_mid_load_loses_nothing_that_got_a_202() {
    const EVENTS: usize = 300;
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/in")));
    let nats = NatsPrefix::new();
    let mut first = node(&env, &nats, "ingest", &[]);
    let second = node(&env, &nats, "ingest", &[]);
    let _worker = node(&env, &nats, "worker", &["--concurrency", "8"]);
    let c = client();
    let (url1, url2) = (first.url("/hooks/gl"), second.url("/hooks/gl"));
    let mut accepted: HashMap<usize, HashSet<String>> = HashMap::new();
    for n in 0..EVENTS {
        if n == EVENTS / 3 {
            first.kill9();
        }
        let body = format!(r#"{{"n": {n}}}"#);
        let delivery = format!("delivery-{n}");
        // The sender tries the first node, then retries on the other, as a sender with two
        // addresses behind a load balancer would.
        let mut got = None;
        for attempt in 0..50 {
            let url = if attempt % 2 == 0 { &url1 } else { &url2 };
            let resp = c
                .post(url)
                .headers(
                    gitlab(&delivery)
                        .into_iter()
                        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                        .collect(),
                )
                .body(body.clone())
                .send()
                .await;
            if let Ok(r) = resp
                && r.status().as_u16() == 202
            {
                let v: serde_json::Value = r.json().await.unwrap();
                got = Some(v["id"].as_str().unwrap().to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let id = got.unwrap_or_else(|| panic!("delivery {n} was never accepted"));
        accepted.entry(n).or_default().insert(id);
    }
    assert!(
        recv.wait_runs(EVENTS, Duration::from_secs(60)).await,
        "only {} of {EVENTS} deliveries ran",
        recv.runs().len()
    );
    let runs = recv.runs();
    for (n, ids) in &accepted {
        for id in ids {
            assert!(
                runs.contains(&format!("{id}:work:0")),
                "delivery {n} (event {id}) got a 202 and never ran"
            );
        }
    }
    // A delivery retried on the other node is one event: one run per delivery.
    let mut per_n: HashMap<String, usize> = HashMap::new();
    for (_, _, body) in recv.seen() {
        *per_n.entry(body).or_default() += 1;
    }
    assert_eq!(per_n.len(), EVENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivery_sent_to_two_ingest_nodes_acts_once() {
    const DELIVERIES: usize = 20;
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/once")));
    let nats = NatsPrefix::new();
    let a = node(&env, &nats, "ingest", &[]);
    let b = node(&env, &nats, "ingest", &[]);
    let _worker = node(&env, &nats, "worker", &[]);
    let c = client();
    for n in 0..DELIVERIES {
        let body = format!(r#"{{"n": {n}}}"#);
        let delivery = format!("redelivered-{n}");
        // Both at once, then each again until it is answered 202 (a 503 means "the other node
        // is storing it right now: try again").
        let send = |url: String| {
            let (c, body, h) = (c.clone(), body.clone(), gitlab(&delivery));
            async move {
                for _ in 0..100 {
                    let (st, resp) = post(&c, &url, &h, body.as_bytes()).await;
                    if st == 202 {
                        return resp;
                    }
                    assert_eq!(st, 503, "{resp}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                panic!("never accepted");
            }
        };
        let (ra, rb) = tokio::join!(send(a.url("/hooks/gl")), send(b.url("/hooks/gl")));
        assert_eq!(ra["id"], rb["id"], "one event for one delivery: {ra} {rb}");
        let dups = [&ra, &rb]
            .iter()
            .filter(|r| r["duplicate"] == serde_json::json!(true))
            .count();
        assert_eq!(dups, 1, "one of the two is the duplicate: {ra} {rb}");
    }
    assert!(recv.wait_runs(DELIVERIES, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recv.seen().len(), DELIVERIES, "each delivery acted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttles_and_tickets_hold_across_nodes() {
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"
sources:
  - {{ name: in, kind: bearer, secret: in-token }}
rules:
  - name: flap
    condition: '$.kind == "flap"'
    throttle: {{ once_within: 1h, group_by: ['$.device'] }}
    actions:
      - post_webhook: {{ url: "{url}/flap", body: '{{"device": "{{{{ event.device }}}}"}}' }}
  - name: broken
    condition: '$.kind == "broken"'
    actions:
      - open_ticket:
          system: github
          project: acme/netops
          token: gh-token
          api_url: "{url}"
          title: "{{{{ event.device }}}} is broken"
          body: "seen on {{{{ meta.id }}}}"
          dedup_key: "broken-{{{{ event.device }}}}"
"#
        ),
    );
    let nats = NatsPrefix::new();
    let a = node(&env, &nats, "all", &[]);
    let b = node(&env, &nats, "all", &[]);
    let c = client();
    for (i, s) in [&a, &b, &a, &b].iter().enumerate() {
        let body = format!(r#"{{"kind": "flap", "device": "sw1", "i": {i}}}"#);
        let (st, _) = post(&c, &s.url("/hooks/in"), &bearer(), body.as_bytes()).await;
        assert_eq!(st, 202);
    }
    // Two tickets at once on two nodes, one dedup key.
    let body = br#"{"kind": "broken", "device": "sw9"}"#;
    let (ua, ub, h) = (a.url("/hooks/in"), b.url("/hooks/in"), bearer());
    let (ra, rb) = tokio::join!(post(&c, &ua, &h, body), post(&c, &ub, &h, body));
    assert_eq!((ra.0, rb.0), (202, 202));
    // The fake GitHub: creating an issue answers #7 (open), comments are accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = recv.seen();
        let opened = seen
            .iter()
            .filter(|(p, _, _)| p == "/repos/acme/netops/issues")
            .count();
        let comments = seen
            .iter()
            .filter(|(p, _, _)| p.ends_with("/comments"))
            .count();
        if opened + comments >= 2 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = recv.seen();
    let flaps = seen.iter().filter(|(p, _, _)| p == "/flap").count();
    assert_eq!(
        flaps, 1,
        "one flap action across two nodes within the throttle window: {seen:?}"
    );
    let opened = seen
        .iter()
        .filter(|(p, _, _)| p == "/repos/acme/netops/issues")
        .count();
    assert_eq!(
        opened, 1,
        "one ticket for one dedup key across two nodes: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn during_a_rolling_change_each_job_runs_the_version_it_matched() {
    const EACH: usize = 20;
    let (recv, url) = Receiver::start(Duration::from_millis(20)).await;
    let old_env = Env::new();
    old_env.rulebook("r.yml", &work_rulebook(&format!("{url}/v1")));
    let new_env = Env::new();
    new_env.rulebook("r.yml", &work_rulebook(&format!("{url}/v2")));
    let nats = NatsPrefix::new();
    let old = node(&old_env, &nats, "all", &[]);
    // The other node was restarted with the changed rulebook.
    let new = node(&new_env, &nats, "all", &[]);
    let c = client();
    let mut old_ids = Vec::new();
    let mut new_ids = Vec::new();
    for n in 0..EACH {
        let body = format!(r#"{{"n": {n}}}"#);
        let (st, r) = post(&c, &old.url("/hooks/in"), &bearer(), body.as_bytes()).await;
        assert_eq!(st, 202);
        old_ids.push(r["id"].as_str().unwrap().to_string());
        let (st, r) = post(&c, &new.url("/hooks/in"), &bearer(), body.as_bytes()).await;
        assert_eq!(st, 202);
        new_ids.push(r["id"].as_str().unwrap().to_string());
    }
    assert!(
        recv.wait_runs(2 * EACH, Duration::from_secs(60)).await,
        "only {} of {} jobs ran",
        recv.runs().len(),
        2 * EACH
    );
    for (path, run, _) in recv.seen() {
        let event = run.split(':').next().unwrap().to_string();
        let want = if old_ids.contains(&event) {
            "/v1"
        } else {
            "/v2"
        };
        assert_eq!(path, want, "job {run} ran another version than it matched");
    }
    assert_eq!(recv.seen().len(), 2 * EACH, "each job once");
}
