//! Several rulehook processes on one NATS JetStream deployment (real processes, the real local
//! nats-server): shared work, crashes of workers and ingest nodes, de-duplication, throttles
//! and tickets across nodes, and rule versions during a rolling change.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::cluster::{Receiver, bearer, gitlab, node, post_all, work_rulebook};
use common::{Env, NatsPrefix, client, post};

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
        if opened + comments >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both ticket jobs did not act: {seen:?}"
        );
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
    let comments = seen
        .iter()
        .filter(|(p, _, _)| p.ends_with("/comments"))
        .count();
    assert_eq!(
        comments, 1,
        "the other job commented on that ticket: {seen:?}"
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

/// Events queued under v1, then every node stopped; the rulebook changes; a worker that only
/// ever loaded v2 runs the queued jobs on v1, loaded from the archive in the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_started_after_a_change_runs_queued_jobs_on_the_archived_version() {
    const EACH: usize = 10;
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let old_env = Env::new();
    old_env.rulebook("r.yml", &work_rulebook(&format!("{url}/v1")));
    let nats = NatsPrefix::new();
    let mut ingest = node(&old_env, &nats, "ingest", &[]);
    let old_ids = post_all(&ingest, EACH).await;
    ingest.terminate();
    let new_env = Env::new();
    new_env.rulebook("r.yml", &work_rulebook(&format!("{url}/v2")));
    let worker = node(&new_env, &nats, "worker", &[]);
    let ingest = node(&new_env, &nats, "ingest", &[]);
    let new_ids = post_all(&ingest, EACH).await;
    assert!(
        recv.wait_runs(2 * EACH, Duration::from_secs(60)).await,
        "only {} of {} jobs ran: {}",
        recv.runs().len(),
        2 * EACH,
        worker.log_text()
    );
    for (path, run, _) in recv.seen() {
        let event = run.split(':').next().unwrap().to_string();
        let want = if old_ids.contains(&event) {
            "/v1"
        } else {
            assert!(new_ids.contains(&event), "{run}");
            "/v2"
        };
        assert_eq!(path, want, "job {run} ran another version than it matched");
    }
    assert_eq!(recv.seen().len(), 2 * EACH, "each job once");
    assert!(
        worker
            .log_text()
            .contains("loaded the rule version a job matched from the archive"),
        "{}",
        worker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_shows_and_acts_on_the_whole_history() {
    let (recv, url) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/fail")));
    let nats = NatsPrefix::new();
    let ingest = node(&env, &nats, "ingest", &[]);
    let worker = node(&env, &nats, "worker", &[]);
    let c = client();
    let (st, r) = post(&c, &ingest.url("/hooks/in"), &bearer(), br#"{"n": 7}"#).await;
    assert_eq!(st, 202);
    let id = r["id"].as_str().unwrap().to_string();
    let job = format!("{id}:work");
    // The worker ran it (and failed: no retries); the worker's history shows the ingest node's
    // event, the ingest node's history shows the worker's attempt.
    let get = |u: String| {
        let c = c.clone();
        async move {
            c.get(u)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failed = get(worker.url("/api/jobs?status=failed")).await;
        if failed["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["id"] == job.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter on the worker: {failed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = get(ingest.url(&format!("/api/events/{id}"))).await;
    assert_eq!(detail["status"], "failed", "{detail}");
    assert_eq!(
        detail["matches"][0]["attempts"][0]["http_status"], 500,
        "{detail}"
    );
    // Re-run from the ingest node, replay from the worker node: both act.
    recv.healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = c
        .post(ingest.url(&format!("/api/jobs/{job}/rerun")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = c
        .post(worker.url(&format!("/api/events/{id}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let replay: serde_json::Value = r.json().await.unwrap();
    let replay_id = replay["id"].as_str().unwrap().to_string();
    assert!(
        recv.wait_runs(2, Duration::from_secs(30)).await,
        "{:?}",
        recv.seen()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = get(worker.url(&format!("/api/events/{id}"))).await;
        let b = get(ingest.url(&format!("/api/events/{replay_id}"))).await;
        if a["status"] == "done" && b["status"] == "done" {
            assert_eq!(b["parent"], id.as_str(), "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "{a}\n{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = get(worker.url("/api/status")).await;
    assert_eq!(status["role"], "worker", "{status}");
}

/// A worker killed (kill -9) while its script runs: another worker takes the job over, and the
/// history closes the attempt the dead one left running at that takeover, so it reads as
/// interrupted after running a while; it was closed at its own start ("failed in 0ms"), as if
/// the script had failed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempt_cut_short_by_a_killed_worker_is_not_shown_as_lasting_nothing() {
    let env = Env::new();
    env.script(
        "long.sh",
        "#!/bin/sh\necho started >> \"$OUT_DIR/started.log\"\nsleep 2\n",
    );
    env.rulebook(
        "r.yml",
        r#"
sources:
  - { name: in, kind: bearer, secret: in-token }
rules:
  - name: long
    actions:
      - run_script: { script: long.sh }
"#,
    );
    let nats = NatsPrefix::new();
    let mut a = node(&env, &nats, "all", &["--lease-check", "1s"]);
    let c = client();
    let (st, r) = post(&c, &a.url("/hooks/in"), &bearer(), br#"{"n": 1}"#).await;
    assert_eq!(st, 202, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.lines("started.log").is_empty() {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9();
    let b = node(&env, &nats, "all", &["--lease-check", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let d: serde_json::Value = c
            .get(b.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["status"] == "done" {
            break d;
        }
        assert!(Instant::now() < deadline, "never done: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempts = detail["matches"][0]["attempts"].as_array().unwrap();
    let cut = attempts
        .iter()
        .find(|a| {
            a["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("interrupted"))
        })
        .unwrap_or_else(|| panic!("no interrupted attempt: {detail}"));
    assert_ne!(cut["finished_at"], cut["started_at"], "{cut}");
    assert!(cut["duration_ms"].as_u64() > Some(0), "{cut}");
}
