//! The job state machine against the real binary: re-runs, crashes inside `on_failure`, retries
//! that give the worker back, rule versions, job keys, `post_event` re-runs, ticket claims,
//! retention and throttled matches.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Env, Server, client, get, post_signed, wait_for};
use serde_json::{Value, json};

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

/// Posts `body` to the `in` source; returns the event id.
async fn send(c: &reqwest::Client, server: &Server, body: &Value) -> String {
    let (st, resp) = post_signed(
        c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    assert_eq!(resp["duplicate"], false, "{resp}");
    resp["id"].as_str().unwrap().to_string()
}

async fn detail(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    get(c, server, &format!("/api/events/{id}")).await
}

/// Waits until the event's job `job` has `status`; returns the event detail.
async fn wait_job(
    c: &reqwest::Client,
    server: &Server,
    event: &str,
    job: &str,
    status: &str,
    timeout: Duration,
) -> Value {
    wait_for(c, server, &format!("/api/events/{event}"), timeout, |d| {
        job_of(d, job).is_some_and(|j| j["status"] == status)
    })
    .await
}

fn job_of<'a>(detail: &'a Value, job: &str) -> Option<&'a Value> {
    detail["matches"]
        .as_array()?
        .iter()
        .find(|j| j["id"] == job)
}

/// The dead letters `GET /api/jobs?status=failed` lists.
async fn failed_jobs(c: &reqwest::Client, server: &Server) -> Vec<Value> {
    get(c, server, "/api/jobs?status=failed&limit=1000").await["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

async fn rerun(c: &reqwest::Client, server: &Server, job: &str) -> (u16, Value) {
    let resp = c
        .post(server.url(&format!("/api/jobs/{job}/rerun")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Kills a script the server started and left behind when it was killed (its pid, written by
/// the script itself to `file`).
fn kill_orphan(file: &Path) {
    let pid: i32 = std::fs::read_to_string(file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = std::fs::remove_file(file);
}

/// Attempts of a job (from an event detail) as `(phase, action_index, attempt, run_id, status)`.
fn attempts(job: &Value) -> Vec<(String, u64, u64, String, String)> {
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["phase"].as_str().unwrap().to_string(),
                a["action_index"].as_u64().unwrap(),
                a["attempt"].as_u64().unwrap(),
                a["run_id"].as_str().unwrap().to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn att(
    phase: &str,
    index: u64,
    attempt: u64,
    run_id: &str,
    status: &str,
) -> (String, u64, u64, String, String) {
    (
        phase.to_string(),
        index,
        attempt,
        run_id.to_string(),
        status.to_string(),
    )
}

// 1 ──────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn rerun_after_on_failure_runs_the_failed_action_again_with_its_run_id() {
    let env = Env::new();
    env.script(
        "fix-me.sh",
        "#!/bin/sh\necho \"main $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\nif [ -e \"$OUT_DIR/fixed\" ]; then exit 0; fi\necho broken >&2\nexit 1\n",
    );
    env.script(
        "alert.sh",
        "#!/bin/sh\necho \"alert $RULEHOOK_RUN_ID $1 $2\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: fixme
    actions:
      - run_script: {{ script: fix-me.sh }}
    on_failure:
      - run_script: {{ script: alert.sh, args: ["{{{{ failure.attempts }}}}", "{{{{ failure.exit_code }}}}"] }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:fixme");

    // A dead letter, listed as one.
    let start = Instant::now();
    while !failed_jobs(&c, &server)
        .await
        .iter()
        .any(|j| j["id"] == job)
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the job never became a dead letter: {}",
            detail(&c, &server, &id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = failed_jobs(&c, &server).await;
    let row = listed.iter().find(|j| j["id"] == job).unwrap();
    assert_eq!(row["event_id"], id.as_str(), "{row}");
    assert_eq!(row["rule"], "fixme", "{row}");
    assert_eq!(
        row["action_index"], 0,
        "a re-run starts at the failed action: {row}"
    );
    assert_eq!(row["attempts"], 1, "{row}");
    assert_eq!(
        row["error"], "fix-me.sh exited with status 1",
        "the job closes with the main action's error: {row}"
    );
    assert_eq!(
        env.lines("runs.txt"),
        vec![
            format!("main {id}:fixme:0"),
            format!("alert {id}:fixme:on_failure:0 1 1"),
        ]
    );

    // Fixed; re-run.
    std::fs::write(env.path("fixed"), "").unwrap();
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["job"], job.as_str(), "{body}");
    let d = wait_job(&c, &server, &id, &job, "done", Duration::from_secs(15)).await;
    let j = job_of(&d, &job).unwrap();
    assert_eq!(j["error"], Value::Null, "{d}");
    assert_eq!(
        attempts(j),
        vec![
            att("main", 0, 1, &format!("{id}:fixme:0"), "failed"),
            att(
                "on_failure",
                0,
                1,
                &format!("{id}:fixme:on_failure:0"),
                "ok"
            ),
            att("main", 0, 2, &format!("{id}:fixme:0"), "ok"),
        ],
        "{d}"
    );
    // Nothing else runs afterwards: on_failure ran once, the main action twice, same run id.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![
            format!("main {id}:fixme:0"),
            format!("alert {id}:fixme:on_failure:0 1 1"),
            format!("main {id}:fixme:0"),
        ]
    );
    assert!(
        !failed_jobs(&c, &server)
            .await
            .iter()
            .any(|j| j["id"] == job),
        "no longer a dead letter"
    );
    let done = get(&c, &server, "/api/jobs?status=done").await;
    assert!(
        done["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job),
        "{done}"
    );
    let listed = get(&c, &server, "/api/events?status=done").await;
    assert!(listed.to_string().contains(&id), "{listed}");
    // A job that is not a dead letter cannot be re-run (409 not_failed; 404 is for no such job).
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 409, "{body}");
}

// 2 ──────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_crash_inside_on_failure_resumes_it_with_the_real_failure() {
    let env = Env::new();
    env.script(
        "fail.sh",
        "#!/bin/sh\necho \"main $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\necho 'it broke' >&2\nexit 3\n",
    );
    // The first run records its pid and sleeps (the crash comes then); later runs return.
    env.script(
        "alert.sh",
        "#!/bin/sh\nif [ ! -e \"$OUT_DIR/slept\" ]; then\n  touch \"$OUT_DIR/slept\"\n  echo $$ > \"$OUT_DIR/alert.pid\"\n  echo \"alert $RULEHOOK_RUN_ID $1|$2|$3|$4\" >> \"$OUT_DIR/runs.txt\"\n  exec sleep 30\nfi\necho \"alert $RULEHOOK_RUN_ID $1|$2|$3|$4\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: r
    actions:
      - run_script: {{ script: fail.sh, retries: 1 }}
    on_failure:
      - run_script:
          script: alert.sh
          args: ["{{{{ failure.attempts }}}}", "{{{{ failure.exit_code }}}}", "{{{{ failure.error }}}}", "{{{{ failure.stderr | trim }}}}"]
"#
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let expected_alert =
        format!("alert {id}:r:on_failure:0 2|3|fail.sh exited with status 3|it broke");
    let runs = env.wait_lines("runs.txt", 3, Duration::from_secs(15));
    assert_eq!(
        runs,
        vec![
            format!("main {id}:r:0"),
            format!("main {id}:r:0"),
            expected_alert.clone(),
        ]
    );
    // on_failure is running (sleeping): crash.
    server.kill9();
    kill_orphan(&env.path("alert.pid"));

    let server = Server::start(&env, &[], &[]);
    let job = format!("{id}:r");
    let d = wait_job(&c, &server, &id, &job, "failed", Duration::from_secs(15)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![
            format!("main {id}:r:0"),
            format!("main {id}:r:0"),
            expected_alert.clone(),
            expected_alert,
        ],
        "on_failure resumed with the same run id and the real failure; the main action did not run again"
    );
    let j = job_of(&d, &job).unwrap();
    assert_eq!(
        j["error"], "fail.sh exited with status 3",
        "the job closes with the main action's error: {d}"
    );
    let rendered = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["phase"] == "on_failure")
        .map(|a| a["rendered"]["run_script"]["args"].clone());
    assert_eq!(
        rendered,
        Some(json!([
            "2",
            "3",
            "fail.sh exited with status 3",
            "it broke"
        ])),
        "{d}"
    );
    let listed = failed_jobs(&c, &server).await;
    let row = listed
        .iter()
        .find(|j| j["id"] == job.as_str())
        .expect("listed as failed");
    assert_eq!(row["error"], "fail.sh exited with status 3", "{row}");
    assert_eq!(row["action_index"], 0, "{row}");
    assert_eq!(row["attempts"], 2, "{row}");
}

// 3 ──────────────────────────────────────────────────────────────────────────────────────────

fn ns(line: &str) -> u128 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_retry_waits_in_the_queue_and_frees_the_only_worker() {
    let env = Env::new();
    env.script(
        "a.sh",
        "#!/bin/sh\necho \"A start $(date +%s%N)\" >> \"$OUT_DIR/order.txt\"\nsleep 0.3\necho \"A end $(date +%s%N)\" >> \"$OUT_DIR/order.txt\"\nexit 1\n",
    );
    env.script(
        "b.sh",
        "#!/bin/sh\necho \"B $RULEHOOK_RUN_ID $(date +%s%N)\" >> \"$OUT_DIR/order.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: a
    condition: '$.kind == "a"'
    actions:
      - run_script: {{ script: a.sh, retries: 3 }}
  - name: b
    condition: '$.kind == "b"'
    actions:
      - run_script: {{ script: b.sh }}
"#
        ),
    );
    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    let a = send(&c, &server, &json!({"kind": "a"})).await;
    // B arrives while A's first attempt holds the only slot.
    env.wait_lines("order.txt", 1, Duration::from_secs(10));
    let b = send(&c, &server, &json!({"kind": "b"})).await;
    let job_a = format!("{a}:a");
    let d = wait_job(&c, &server, &a, &job_a, "failed", Duration::from_secs(30)).await;
    let order = env.lines("order.txt");
    let kinds: Vec<&str> = order
        .iter()
        .map(|l| {
            let mut w = l.split(' ');
            match (w.next(), w.next()) {
                (Some("B"), _) => "B",
                (_, Some("start")) => "A start",
                _ => "A end",
            }
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "A start", "A end", "B", "A start", "A end", "A start", "A end", "A start", "A end"
        ],
        "B runs in A's backoff, before A's second attempt: {order:?}"
    );
    assert_eq!(order[2], format!("B {b}:b:0 {}", ns(&order[2])));
    // B started promptly after A's first attempt; A's second attempt waited its backoff.
    let (a1_end, b_start, a2_start) = (ns(&order[1]), ns(&order[2]), ns(&order[3]));
    assert!(
        b_start - a1_end < 900_000_000,
        "B waited {} ms after A's first attempt",
        (b_start - a1_end) / 1_000_000
    );
    assert!(
        a2_start - a1_end >= 1_000_000_000,
        "A's second attempt came {} ms after the first (backoff is ≥ 1 s)",
        (a2_start - a1_end) / 1_000_000
    );
    let run = format!("{a}:a:0");
    assert_eq!(
        attempts(job_of(&d, &job_a).unwrap()),
        (1..=4)
            .map(|n| att("main", 0, n, &run, "failed"))
            .collect::<Vec<_>>(),
        "{d}"
    );
    let db = detail(&c, &server, &b).await;
    assert_eq!(db["matches"][0]["status"], "done", "{db}");
}

// 4 ──────────────────────────────────────────────────────────────────────────────────────────

fn slow_rule(version: &str) -> String {
    slow_rule_with(version, "slow.sh")
}

fn slow_rule_with(version: &str, script: &str) -> String {
    format!(
        r#"{SRC}rules:
  - name: slow
    actions:
      - run_script: {{ script: {script}, args: ["{version}", "{{{{ event.n }}}}"] }}
"#
    )
}

#[tokio::test]
async fn a_job_runs_only_the_rule_version_it_matched() {
    let env = Env::new();
    // Version v1 sleeps (the crash comes then); v2 returns.
    env.script(
        "slow.sh",
        "#!/bin/sh\nif [ \"$1\" = v1 ]; then echo $$ > \"$OUT_DIR/slow.pid\"; fi\necho \"$RULEHOOK_RUN_ID $1 $2\" >> \"$OUT_DIR/runs.txt\"\nif [ \"$1\" = v1 ]; then exec sleep 30; fi\n",
    );
    env.rulebook("r.yml", &slow_rule("v1"));
    let mut server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    let e1 = send(&c, &server, &json!({"n": 1})).await;
    assert_eq!(
        env.wait_lines("runs.txt", 1, Duration::from_secs(10)),
        vec![format!("{e1}:slow:0 v1 1")]
    );
    let e2 = send(&c, &server, &json!({"n": 2})).await;
    let d2 = detail(&c, &server, &e2).await;
    assert_eq!(d2["matches"][0]["status"], "pending", "queued: {d2}");
    server.kill9();
    kill_orphan(&env.path("slow.pid"));

    // The rule changes while the service is down, and the version the jobs matched can no
    // longer be loaded from the archive either: its script is gone (renamed).
    let script = std::fs::read_to_string(env.path("scripts/slow.sh")).unwrap();
    std::fs::remove_file(env.path("scripts/slow.sh")).unwrap();
    env.script("slow2.sh", &script);
    env.rulebook("r.yml", &slow_rule_with("v2", "slow2.sh"));
    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    let (j1, j2) = (format!("{e1}:slow"), format!("{e2}:slow"));
    for (e, j) in [(&e1, &j1), (&e2, &j2)] {
        let d = wait_job(&c, &server, e, j, "failed", Duration::from_secs(15)).await;
        let err = job_of(&d, j).unwrap()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(err.contains("changed since the match"), "{d}");
    }
    let listed = failed_jobs(&c, &server).await;
    for j in [&j1, &j2] {
        let row = listed
            .iter()
            .find(|r| r["id"] == j.as_str())
            .unwrap_or_else(|| panic!("{j} is not listed as failed: {listed:?}"));
        assert!(
            row["error"]
                .as_str()
                .is_some_and(|e| e.contains("changed since the match")),
            "{row}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![format!("{e1}:slow:0 v1 1")],
        "the new version did not run under the old run ids"
    );

    // Re-run: the current version, from its first action, under new run ids.
    for j in [&j1, &j2] {
        let (st, body) = rerun(&c, &server, j).await;
        assert_eq!(st, 202, "{body}");
        assert!(
            body["runs"]
                .as_str()
                .is_some_and(|r| r.contains("current version")),
            "{body}"
        );
    }
    for (e, j) in [(&e1, &j1), (&e2, &j2)] {
        let d = wait_job(&c, &server, e, j, "done", Duration::from_secs(15)).await;
        let job = job_of(&d, j).unwrap();
        assert_eq!(job["error"], Value::Null, "{d}");
        assert_ne!(
            job["fingerprint"], d2["matches"][0]["fingerprint"],
            "the job now runs the current version: {d}"
        );
    }
    // The job that never ran before the crash has one attempt, the new version's. (The
    // history of the one that did is `a_rerun_on_a_changed_rule_keeps_both_runs_in_the_history`.)
    let d = detail(&c, &server, &e2).await;
    let job = job_of(&d, &j2).unwrap();
    assert_eq!(
        attempts(job),
        vec![att("main", 0, 1, &format!("{j2}:v1:0"), "ok")],
        "{d}"
    );
    assert_eq!(
        job["attempts"][0]["rendered"]["run_script"]["args"],
        json!(["v2", "2"])
    );
    let mut runs = env.lines("runs.txt");
    runs.sort();
    let mut want = vec![
        format!("{e1}:slow:0 v1 1"),
        format!("{e1}:slow:v1:0 v2 1"),
        format!("{e2}:slow:v1:0 v2 2"),
    ];
    want.sort();
    assert_eq!(runs, want);
}

// 5 ──────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn a_rule_name_with_a_slash_is_a_load_error_at_its_location() {
    let env = Env::new();
    env.rulebook(
        "bad.yml",
        &format!("{SRC}rules:\n  - name: a/b\n    actions:\n      - log: {{ message: hi }}\n"),
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = env.path("rulebooks").join("bad.yml");
    assert!(
        err.contains(&format!("{}:4:11:", file.display())) && err.contains("must not contain"),
        "{err}"
    );
}

#[tokio::test]
async fn rules_sharing_a_name_in_two_rulebooks_make_two_distinct_jobs() {
    let env = Env::new();
    // c.yml's `b` fails until fixed, to be re-run by its id.
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\n[ \"$1\" = a ] || [ -e \"$OUT_DIR/fixed\" ]\n",
    );
    let rule = |from: &str| {
        format!(
            "rules:\n  - name: b\n    actions:\n      - run_script: {{ script: record.sh, args: [{from}] }}\n"
        )
    };
    env.rulebook("a.yml", &format!("{SRC}{}", rule("a")));
    env.rulebook("c.yml", &rule("c"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let d = wait_for(
        &c,
        &server,
        &format!("/api/events/{id}"),
        Duration::from_secs(15),
        |d| d["status"] == "failed",
    )
    .await;
    let jobs = |d: &Value| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = d["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap().to_string(),
                    m["rulebook"].as_str().unwrap().to_string(),
                    m["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let (ab, cb) = (format!("{id}:a/b"), format!("{id}:c/b"));
    assert_eq!(
        jobs(&d),
        vec![
            (ab.clone(), "a".to_string(), "done".to_string()),
            (cb.clone(), "c".to_string(), "failed".to_string()),
        ],
        "{d}"
    );
    let mut runs = env.wait_lines("runs.txt", 2, Duration::from_secs(5));
    runs.sort();
    assert_eq!(runs, vec![format!("{ab}:0 a"), format!("{cb}:0 c")]);
    let list = get(&c, &server, "/api/events").await;
    assert_eq!(list["events"][0]["matched_rules"], 2, "{list}");
    let failed: Vec<Value> = failed_jobs(&c, &server).await;
    assert_eq!(
        failed.iter().map(|j| j["id"].clone()).collect::<Vec<_>>(),
        vec![json!(cb)],
        "only c.yml's job is a dead letter"
    );

    // The dead letter is re-run by its id (the `/` percent-encoded in the path).
    std::fs::write(env.path("fixed"), "").unwrap();
    let (st, body) = rerun(&c, &server, &format!("{id}:c%2Fb")).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["job"], cb.as_str(), "{body}");
    let d = wait_job(&c, &server, &id, &cb, "done", Duration::from_secs(15)).await;
    assert_eq!(
        jobs(&d),
        vec![
            (ab.clone(), "a".to_string(), "done".to_string()),
            (cb.clone(), "c".to_string(), "done".to_string()),
        ],
        "{d}"
    );
    assert_eq!(
        env.lines("runs.txt").last().cloned(),
        Some(format!("{cb}:0 c")),
        "c.yml's rule ran again under its own run id; a.yml's did not"
    );
    assert_eq!(env.lines("runs.txt").len(), 3);
}

// 6 ──────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_rerun_never_emits_a_post_event_child_twice() {
    let env = Env::new();
    env.script(
        "flaky.sh",
        "#!/bin/sh\necho \"flaky $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\n[ -e \"$OUT_DIR/fixed\" ] || exit 1\n",
    );
    env.script(
        "child.sh",
        "#!/bin/sh\necho \"$RULEHOOK_EVENT_ID $1\" >> \"$OUT_DIR/children.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        r#"sources:
  - { name: in, kind: bearer, secret: in-token }
  - { name: chain, kind: internal }
rules:
  - name: x
    sources: [in]
    actions:
      - post_event: { source: chain, body: '{"from": "main", "parent": "{{ meta.id }}"}' }
      - run_script: { script: flaky.sh }
    on_failure:
      - post_event: { source: chain, body: '{"from": "alert", "attempts": {{ failure.attempts }}}' }
  - name: y
    sources: [chain]
    actions:
      - run_script: { script: child.sh, args: ["{{ event.from }}"] }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:x");
    wait_job(&c, &server, &id, &job, "failed", Duration::from_secs(15)).await;
    let children = env.wait_lines("children.txt", 2, Duration::from_secs(10));
    assert_eq!(children.len(), 2, "{children:?}");
    let main_child = children.iter().find(|l| l.ends_with(" main")).unwrap();
    let main_child = main_child.split(' ').next().unwrap().to_string();
    let alert_child = children.iter().find(|l| l.ends_with(" alert")).unwrap();
    let alert_child = alert_child.split(' ').next().unwrap().to_string();
    let d = detail(&c, &server, &id).await;
    assert_eq!(d["children"], json!([main_child, alert_child]), "{d}");

    // Re-run while the script still fails: it fails again and on_failure's post_event runs
    // again under the same run id; it finds the child it made instead of making another.
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 202, "{body}");
    let d = wait_for(
        &c,
        &server,
        &format!("/api/events/{id}"),
        Duration::from_secs(15),
        |d| {
            job_of(d, &job).is_some_and(|j| {
                j["status"] == "failed"
                    && j["attempts"].as_array().unwrap().iter().any(|a| {
                        a["phase"] == "main" && a["action_index"] == 1 && a["attempt"] == 2
                    })
            })
        },
    )
    .await;
    let j = job_of(&d, &job).unwrap();
    let alerts: Vec<&Value> = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phase"] == "on_failure")
        .collect();
    let last = alerts.last().unwrap();
    assert_eq!(last["run_id"], format!("{id}:x:on_failure:0"), "{d}");
    assert_eq!(last["status"], "ok", "{d}");
    assert_eq!(last["result"]["already_emitted"], true, "{d}");
    assert_eq!(last["result"]["event_id"], alert_child.as_str(), "{d}");

    // Fixed; re-run: the script runs again, the main post_event before it does not.
    std::fs::write(env.path("fixed"), "").unwrap();
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 202, "{body}");
    let d = wait_job(&c, &server, &id, &job, "done", Duration::from_secs(15)).await;
    let j = job_of(&d, &job).unwrap();
    let posts: Vec<&Value> = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phase"] == "main" && a["action_index"] == 0)
        .collect();
    assert_eq!(
        posts.len(),
        1,
        "the post_event before the failed action is not re-run: {d}"
    );
    assert_eq!(posts[0]["run_id"], format!("{id}:x:0"));
    assert_eq!(posts[0]["result"]["already_emitted"], false, "{d}");
    assert_eq!(posts[0]["result"]["event_id"], main_child.as_str(), "{d}");
    assert_eq!(
        env.lines("runs.txt"),
        vec![format!("flaky {id}:x:1"); 3],
        "the failed action ran again under its run id"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.lines("children.txt").len(),
        2,
        "y ran once per child: {:?}",
        env.lines("children.txt")
    );
    let d = detail(&c, &server, &id).await;
    assert_eq!(d["children"], json!([main_child, alert_child]), "{d}");
    let chain = get(&c, &server, "/api/events?source=chain").await;
    assert_eq!(chain["events"].as_array().unwrap().len(), 2, "{chain}");
}

// 7 ──────────────────────────────────────────────────────────────────────────────────────────

/// A GitHub-like issues API: creating an issue takes 300 ms; every issue is open.
#[derive(Clone, Default)]
struct Issues {
    next: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

async fn issues_api(State(s): State<Issues>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    s.seen
        .lock()
        .unwrap()
        .push((method.to_string(), path.clone()));
    match (method.as_str(), path.as_str()) {
        ("POST", "/repos/acme/netops/issues") => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let n = s.next.fetch_add(1, Ordering::SeqCst) + 1;
            (
                StatusCode::CREATED,
                json!({"number": n, "html_url": format!("https://github.example/acme/netops/issues/{n}")})
                    .to_string(),
            )
                .into_response()
        }
        ("GET", p) if p.starts_with("/repos/acme/netops/issues/") => {
            let n = p.rsplit('/').next().unwrap_or_default();
            (
                StatusCode::OK,
                json!({"number": n.parse::<u64>().unwrap_or(0), "state": "open"}).to_string(),
            )
                .into_response()
        }
        ("POST", p) if p.ends_with("/comments") => {
            (StatusCode::CREATED, json!({"id": 1}).to_string()).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time from the history.
fn ms(t: &str) -> i128 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    t.unix_timestamp_nanos() / 1_000_000
}

#[tokio::test]
async fn two_jobs_with_one_dedup_key_at_once_open_one_ticket() {
    let issues = Issues::default();
    let app = axum::Router::new()
        .fallback(issues_api)
        .with_state(issues.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: ticket
    actions:
      - open_ticket:
          system: github
          project: acme/netops
          token: gh-tok
          api_url: "http://{addr}"
          title: "device {{{{ event.device }}}} ({{{{ event.n }}}})"
          dedup_key: "dev-{{{{ event.device }}}}"
"#
        ),
    );
    let server = Server::start(&env, &["--concurrency", "4"], &[]);
    let c = client();
    let (one, two) = (
        json!({"device": "atl1", "n": 1}),
        json!({"device": "atl1", "n": 2}),
    );
    let (a, b) = tokio::join!(send(&c, &server, &one), send(&c, &server, &two));
    let (mut results, mut starts) = (Vec::new(), Vec::new());
    for id in [&a, &b] {
        let job = format!("{id}:ticket");
        let d = wait_job(&c, &server, id, &job, "done", Duration::from_secs(20)).await;
        let j = job_of(&d, &job).unwrap();
        let atts = j["attempts"].as_array().unwrap();
        assert_eq!(atts.len(), 1, "{d}");
        results.push(atts[0]["result"].clone());
        starts.push(ms(atts[0]["started_at"].as_str().unwrap()));
    }
    // Both started before the first issue existed (creating one takes 300 ms): they raced.
    assert!(
        starts[0].abs_diff(starts[1]) < 250,
        "the two jobs did not run at once: {starts:?}"
    );
    let seen = issues.seen.lock().unwrap().clone();
    let creates = seen
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/repos/acme/netops/issues")
        .count();
    assert_eq!(creates, 1, "one issue for one dedup key: {seen:?}");
    let comments: Vec<_> = seen
        .iter()
        .filter(|(m, p)| m == "POST" && p.ends_with("/comments"))
        .collect();
    assert_eq!(
        comments,
        vec![&(
            "POST".to_string(),
            "/repos/acme/netops/issues/1/comments".to_string()
        )],
        "{seen:?}"
    );
    results.sort_by_key(|r| r["commented"].as_bool());
    assert_eq!(
        results,
        vec![
            json!({"ticket_id": "1", "url": "https://github.example/acme/netops/issues/1", "system": "github", "commented": false}),
            json!({"ticket_id": "1", "url": "https://github.example/acme/netops/issues/1", "system": "github", "commented": true}),
        ]
    );
}

// 8 ──────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn retention_prunes_finished_events_and_keeps_dead_letters_and_pending_jobs() {
    let env = Env::new();
    env.script("ok.sh", "#!/bin/sh\nexit 0\n");
    env.script("fail.sh", "#!/bin/sh\nexit 1\n");
    env.script("slow.sh", "#!/bin/sh\nsleep 4\n");
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: ok
    condition: '$.kind == "ok"'
    actions:
      - run_script: {{ script: ok.sh }}
  - name: fail
    condition: '$.kind == "fail"'
    actions:
      - run_script: {{ script: fail.sh }}
  - name: slow
    condition: '$.kind == "slow"'
    actions:
      - run_script: {{ script: slow.sh }}
"#
        ),
    );
    let server = Server::start(&env, &["--retain", "1s"], &[]);
    let c = client();
    let ok = send(&c, &server, &json!({"kind": "ok"})).await;
    let failed = send(&c, &server, &json!({"kind": "fail"})).await;
    let unmatched = send(&c, &server, &json!({"kind": "none"})).await;
    let slow = send(&c, &server, &json!({"kind": "slow"})).await;
    wait_job(
        &c,
        &server,
        &ok,
        &format!("{ok}:ok"),
        "done",
        Duration::from_secs(10),
    )
    .await;
    wait_job(
        &c,
        &server,
        &failed,
        &format!("{failed}:fail"),
        "failed",
        Duration::from_secs(10),
    )
    .await;

    let ids = |v: &Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Within a few seconds the finished events are gone; the slow one is still pending.
    let list = wait_for(&c, &server, "/api/events", Duration::from_secs(5), |v| {
        let ids = ids(v);
        !ids.contains(&ok) && !ids.contains(&unmatched)
    })
    .await;
    let listed = ids(&list);
    assert!(
        listed.contains(&failed),
        "a dead letter's event stays: {list}"
    );
    assert!(
        listed.contains(&slow),
        "a pending job's event stays: {list}"
    );
    let resp = c
        .get(server.url(&format!("/api/events/{ok}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let d = detail(&c, &server, &failed).await;
    assert_eq!(d["matches"][0]["status"], "failed", "{d}");
    assert_eq!(
        d["matches"][0]["attempts"].as_array().unwrap().len(),
        1,
        "{d}"
    );
    assert!(
        failed_jobs(&c, &server)
            .await
            .iter()
            .any(|j| j["id"] == format!("{failed}:fail")),
        "the dead letter is still listed"
    );

    // Once the slow job is done, its event goes too; the dead letter still stays.
    let list = wait_for(&c, &server, "/api/events", Duration::from_secs(10), |v| {
        !ids(v).contains(&slow)
    })
    .await;
    assert_eq!(ids(&list), vec![failed.clone()], "{list}");
    // And a re-run of the kept dead letter still works.
    let (st, body) = rerun(&c, &server, &format!("{failed}:fail")).await;
    assert_eq!(st, 202, "{body}");
}

// 9 ──────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn throttled_matches_are_listed_and_found_by_status_and_rule() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: once
    condition: '$.status == "down"'
    throttle: {{ once_within: 1h, group_by: ['$.device'] }}
    actions:
      - log: {{ message: "down {{{{ event.device }}}}" }}
  - name: always
    condition: '$.also == true'
    actions:
      - log: {{ message: "also" }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let first = send(&c, &server, &json!({"status": "down", "device": "d1"})).await;
    let second = send(
        &c,
        &server,
        &json!({"status": "down", "device": "d1", "n": 2}),
    )
    .await;
    // Throttled on `once`, and matched by `always`.
    let third = send(
        &c,
        &server,
        &json!({"status": "down", "device": "d1", "n": 3, "also": true}),
    )
    .await;
    let other = send(&c, &server, &json!({"status": "down", "device": "d2"})).await;
    let list = wait_for(&c, &server, "/api/events", Duration::from_secs(10), |v| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] != "pending")
    })
    .await;
    let row = |id: &str| -> Value {
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
    };
    assert_eq!(row(&first)["status"], "done", "{list}");
    assert_eq!(row(&other)["status"], "done", "another group fires: {list}");
    let r = row(&second);
    assert_eq!(
        (
            r["status"].clone(),
            r["matched_rules"].clone(),
            r["throttled"].clone()
        ),
        (json!("throttled"), json!(0), json!(1)),
        "{r}"
    );
    let r = row(&third);
    assert_eq!(
        (
            r["status"].clone(),
            r["matched_rules"].clone(),
            r["throttled"].clone()
        ),
        (json!("done"), json!(1), json!(1)),
        "{r}"
    );

    let ids = |v: Value| -> Vec<String> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(get(&c, &server, "/api/events?status=throttled").await),
        vec![third.clone(), second.clone()],
        "every event with a throttled match, newest first"
    );
    assert_eq!(
        ids(get(&c, &server, "/api/events?rule=once").await),
        vec![other.clone(), third.clone(), second.clone(), first.clone()],
    );
    assert_eq!(
        ids(get(&c, &server, "/api/events?rule=always").await),
        vec![third.clone()],
    );
    assert_eq!(
        ids(get(&c, &server, "/api/events?status=throttled&rule=always").await),
        vec![third.clone()],
    );
    let d = detail(&c, &server, &second).await;
    assert_eq!(d["status"], "throttled", "{d}");
    assert_eq!(d["matches"], json!([]), "{d}");
    assert_eq!(d["throttled"][0]["rule"], "once", "{d}");
    assert_eq!(d["throttled"][0]["fired_by"], first.as_str(), "{d}");
    assert!(
        d["throttled"][0]["group"]
            .as_str()
            .is_some_and(|g| g.contains("\"d1\"")),
        "{d}"
    );
}

// History of re-runs ─────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn a_rerun_on_a_changed_rule_keeps_both_runs_in_the_history() {
    let env = Env::new();
    env.script(
        "s.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\n[ \"$1\" = v2 ]\n",
    );
    let rule = |v: &str| {
        format!(
            "{SRC}rules:\n  - name: r\n    actions:\n      - run_script: {{ script: s.sh, args: [{v}] }}\n"
        )
    };
    env.rulebook("r.yml", &rule("v1"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:r");
    wait_job(&c, &server, &id, &job, "failed", Duration::from_secs(15)).await;
    server.terminate();
    env.rulebook("r.yml", &rule("v2"));
    let server = Server::start(&env, &[], &[]);
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 202, "{body}");
    let d = wait_job(&c, &server, &id, &job, "done", Duration::from_secs(15)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![format!("{job}:0 v1"), format!("{job}:v1:0 v2")]
    );
    let rows: Vec<(String, Value, String)> = job_of(&d, &job).unwrap()["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["run_id"].as_str().unwrap().to_string(),
                a["rendered"]["run_script"]["args"].clone(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (format!("{job}:0"), json!(["v1"]), "failed".to_string()),
            (format!("{job}:v1:0"), json!(["v2"]), "ok".to_string()),
        ],
        "each run as it ran: {d}"
    );
}

/// A re-run that fails again runs `on_failure` under the same run id (a repeat, not a second
/// child) as `attempt 2`: it used to be `attempt 1` again, so the history (`rulehook event`, the
/// console) showed two identical-looking first attempts and could not tell the re-run's.
#[tokio::test]
async fn a_rerun_that_fails_again_keeps_the_first_on_failure_run_in_the_history() {
    let env = Env::new();
    env.script("fail.sh", "#!/bin/sh\nexit 1\n");
    env.rulebook(
        "r.yml",
        r#"sources:
  - { name: in, kind: bearer, secret: in-token }
  - { name: chain, kind: internal }
rules:
  - name: x
    sources: [in]
    actions:
      - run_script: { script: fail.sh }
    on_failure:
      - post_event: { source: chain, body: '{"attempts": {{ failure.attempts }}}' }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:x");
    wait_job(&c, &server, &id, &job, "failed", Duration::from_secs(15)).await;
    let (st, body) = rerun(&c, &server, &job).await;
    assert_eq!(st, 202, "{body}");
    let d = wait_for(
        &c,
        &server,
        &format!("/api/events/{id}"),
        Duration::from_secs(15),
        |d| {
            job_of(d, &job).is_some_and(|j| {
                j["status"] == "failed"
                    && j["attempts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["phase"] == "main" && a["attempt"] == 2)
            })
        },
    )
    .await;
    let alerts: Vec<(String, Value, Value, Value)> = job_of(&d, &job).unwrap()["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["phase"] == "on_failure")
        .map(|a| {
            (
                a["run_id"].as_str().unwrap().to_string(),
                a["attempt"].clone(),
                a["rendered"]["post_event"]["body"]["attempts"].clone(),
                a["result"]["already_emitted"].clone(),
            )
        })
        .collect();
    let run = format!("{job}:on_failure:0");
    assert_eq!(
        alerts,
        vec![
            (run.clone(), json!(1), json!(1), json!(false)),
            (run, json!(2), json!(2), json!(true)),
        ],
        "both on_failure runs, as each ran: {d}"
    );
}

// A crash between two actions ───────────────────────────────────────────────────────────────
/// Action 0 finished and its step was recorded; the crash comes while action 1 runs. After the
/// restart action 0 does not run again, action 1 runs again with the same run id, and it still
/// sees action 0's output as `previous` (recorded with the step, not kept in memory).
#[tokio::test]
async fn a_crash_between_two_actions_resumes_at_the_second_with_its_previous() {
    let env = Env::new();
    env.script(
        "first.sh",
        "#!/bin/sh\necho \"first $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\necho from-first-$RULEHOOK_EVENT_ID\n",
    );
    env.script(
        "second.sh",
        "#!/bin/sh\necho \"second $RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\nif [ ! -e \"$OUT_DIR/slept\" ]; then\n  touch \"$OUT_DIR/slept\"\n  echo $$ > \"$OUT_DIR/second.pid\"\n  exec sleep 30\nfi\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: two
    actions:
      - run_script: {{ script: first.sh }}
      - run_script: {{ script: second.sh, args: ["{{{{ previous.stdout | trim }}}}"] }}
"#
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let want_second = format!("second {id}:two:1 from-first-{id}");
    let runs = env.wait_lines("runs.txt", 2, Duration::from_secs(15));
    assert_eq!(runs, vec![format!("first {id}:two:0"), want_second.clone()]);
    server.kill9();
    kill_orphan(&env.path("second.pid"));

    let server = Server::start(&env, &[], &[]);
    let job = format!("{id}:two");
    let d = wait_job(&c, &server, &id, &job, "done", Duration::from_secs(15)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![
            format!("first {id}:two:0"),
            want_second.clone(),
            want_second
        ],
        "only the second action ran again, with the same run id and the first one's output"
    );
    let j = job_of(&d, &job).unwrap();
    let statuses: Vec<_> = attempts(j)
        .into_iter()
        .map(|(_, i, _, run, st)| (i, run, st))
        .collect();
    assert!(
        statuses.contains(&(0, format!("{id}:two:0"), "ok".to_string()))
            && statuses.contains(&(1, format!("{id}:two:1"), "ok".to_string())),
        "{d}"
    );
    let interrupted = j["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action_index"] == 1 && a["status"] == "failed")
        .unwrap_or_else(|| panic!("the crashed try is closed in the history: {d}"));
    assert!(
        interrupted["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("interrupted"),
        "{interrupted}"
    );
}

// A reload while jobs wait ────────────────────────────────────────────────────────────────
/// Jobs queued before a reload that changes their rule still run the version they matched (the
/// engine keeps it); events after the reload run the new one.
#[tokio::test]
async fn jobs_queued_before_a_reload_run_the_version_they_matched() {
    let env = Env::new();
    env.script(
        "slow.sh",
        "#!/bin/sh\necho \"$1 $2\" >> \"$OUT_DIR/runs.txt\"\nsleep 1\n",
    );
    env.rulebook("r.yml", &slow_rule("v1"));
    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    send(&c, &server, &json!({"n": 1})).await;
    send(&c, &server, &json!({"n": 2})).await;
    send(&c, &server, &json!({"n": 3})).await;
    env.wait_lines("runs.txt", 1, Duration::from_secs(10));
    // Jobs 2 and 3 wait for the only worker; the rule changes meanwhile.
    env.rulebook("r.yml", &slow_rule("v2"));
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        env.lines("runs.txt").len() < 3,
        "the reload came while job 3 still waited"
    );
    send(&c, &server, &json!({"n": 4})).await;
    let runs = env.wait_lines("runs.txt", 4, Duration::from_secs(15));
    assert_eq!(runs, vec!["v1 1", "v1 2", "v1 3", "v2 4"]);
}

/// A job pending at a crash whose rule is edited before the restart runs the version it
/// matched: every rule set loaded (at start or by a reload) is archived in the store and
/// loaded again for it. Events after the restart run the new version.
#[tokio::test]
async fn a_rule_edited_while_the_service_was_down_runs_the_version_its_jobs_matched() {
    let env = Env::new();
    // v1 hangs until the crash (the first job is running then, the others wait), not after.
    env.script(
        "slow.sh",
        "#!/bin/sh\nif [ \"$1\" = v1 ] && [ ! -e \"$OUT_DIR/crashed\" ]; then echo $$ > \"$OUT_DIR/slow.pid\"; echo \"hang $2\" >> \"$OUT_DIR/hung.txt\"; exec sleep 30; fi\necho \"$RULEHOOK_RUN_ID $1 $2\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    // v1 comes in by a hot reload: only the reload archived it.
    env.rulebook("r.yml", &slow_rule("v0"));
    let mut server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    env.rulebook("r.yml", &slow_rule("v1"));
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(send(&c, &server, &json!({"n": n})).await);
    }
    env.wait_lines("hung.txt", 1, Duration::from_secs(10));
    let v1 = detail(&c, &server, &ids[2]).await["matches"][0]["fingerprint"].clone();
    assert!(
        v1.as_str().is_some_and(|f| !f.is_empty()),
        "no fingerprint: {v1}"
    );
    server.kill9();
    kill_orphan(&env.path("slow.pid"));
    std::fs::write(env.path("crashed"), "").unwrap();

    env.rulebook("r.yml", &slow_rule("v2"));
    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    let e4 = send(&c, &server, &json!({"n": 4})).await;
    for e in ids.iter().chain([&e4]) {
        wait_job(
            &c,
            &server,
            e,
            &format!("{e}:slow"),
            "done",
            Duration::from_secs(20),
        )
        .await;
    }
    let mut runs = env.lines("runs.txt");
    runs.sort();
    let mut want: Vec<String> = ids
        .iter()
        .zip(1..)
        .map(|(e, n)| format!("{e}:slow:0 v1 {n}"))
        .chain([format!("{e4}:slow:0 v2 4")])
        .collect();
    want.sort();
    assert_eq!(
        runs, want,
        "pending jobs ran v1 under their run ids, the new event v2"
    );
    let d3 = detail(&c, &server, &ids[2]).await;
    assert_eq!(d3["matches"][0]["fingerprint"], v1, "{d3}");
    let d4 = detail(&c, &server, &e4).await;
    assert_ne!(d4["matches"][0]["fingerprint"], v1, "{d4}");
    assert!(
        server
            .log_text()
            .contains("loaded the rule version a job matched from the archive"),
        "{}",
        server.log_text()
    );
}

// Fairness after a restart ──────────────────────────────────────────────────────────────────
/// A backlog of one rule (found pending at start) does not hold up another rule beyond its
/// turn: rules take turns for the workers.
#[tokio::test]
async fn a_backlog_of_one_rule_does_not_hold_up_the_others_after_a_restart() {
    let env = Env::new();
    env.script(
        "slow.sh",
        "#!/bin/sh\necho \"slow $2\" >> \"$OUT_DIR/runs.txt\"\nsleep 1\n",
    );
    env.script(
        "quick.sh",
        "#!/bin/sh\necho quick >> \"$OUT_DIR/runs.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: slow
    condition: '$.kind == "slow"'
    actions:
      - run_script: {{ script: slow.sh, args: ["x", "{{{{ event.n }}}}"] }}
  - name: quick
    condition: '$.kind == "quick"'
    actions:
      - run_script: {{ script: quick.sh }}
"#
        ),
    );
    let mut server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    for n in 0..30 {
        send(&c, &server, &json!({"kind": "slow", "n": n})).await;
    }
    server.kill9();
    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    send(&c, &server, &json!({"kind": "quick"})).await;
    let runs = env.wait_lines("runs.txt", 1, Duration::from_secs(20));
    let runs = loop {
        let lines = env.lines("runs.txt");
        if lines.iter().any(|l| l == "quick") {
            break lines;
        }
        assert!(
            lines.len() < 8,
            "the quick rule waited behind the backlog: {lines:?} (first {runs:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let slow_before = runs.iter().take_while(|l| *l != "quick").count();
    assert!(
        slow_before <= 4,
        "quick ran after {slow_before} slow jobs: {runs:?}"
    );
}

// Re-run after a fix ────────────────────────────────────────────────────────────────────────
async fn rerun_as_matched(c: &reqwest::Client, server: &Server, job: &str) -> (u16, Value) {
    let resp = c
        .post(server.url(&format!("/api/jobs/{job}/rerun?as_matched=true")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A user who fixed a rule re-runs its dead letter: it runs the fix (the current version of that
/// one rule, saying so), while `as_matched` keeps the version it matched. No other rule runs.
#[tokio::test]
async fn a_rerun_after_fixing_the_rule_runs_the_fix_unless_asked_for_the_version_matched() {
    let env = Env::new();
    env.script(
        "s.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\n[ \"$1\" = v2 ]\n",
    );
    env.script(
        "other.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/other.txt\"\n",
    );
    let rule = |v: &str| {
        format!(
            "{SRC}rules:\n  - name: r\n    actions:\n      - run_script: {{ script: s.sh, args: [{v}] }}\n  - name: other\n    actions:\n      - run_script: {{ script: other.sh }}\n"
        )
    };
    env.rulebook("r.yml", &rule("v1"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let e1 = send(&c, &server, &json!({"n": 1})).await;
    let e2 = send(&c, &server, &json!({"n": 2})).await;
    let (j1, j2) = (format!("{e1}:r"), format!("{e2}:r"));
    for (e, j) in [(&e1, &j1), (&e2, &j2)] {
        wait_job(&c, &server, e, j, "failed", Duration::from_secs(15)).await;
    }
    env.wait_lines("other.txt", 2, Duration::from_secs(15));
    // The fix, by a hot reload: the version the jobs matched stays in memory.
    env.rulebook("r.yml", &rule("v2"));
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;

    let (st, body) = rerun(&c, &server, &j1).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["version"], "current", "{body}");
    assert_eq!(body["rule_changed"], true, "{body}");
    assert!(
        body["runs"]
            .as_str()
            .is_some_and(|r| r.contains("changed since the match")),
        "{body}"
    );
    wait_job(&c, &server, &e1, &j1, "done", Duration::from_secs(15)).await;

    let (st, body) = rerun_as_matched(&c, &server, &j2).await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["version"], "matched", "{body}");
    assert_eq!(body["rule_changed"], true, "{body}");
    wait_for(
        &c,
        &server,
        &format!("/api/events/{e2}"),
        Duration::from_secs(15),
        |d| {
            job_of(d, &j2).is_some_and(|j| {
                j["status"] == "failed" && j["attempts"].as_array().is_some_and(|a| a.len() == 2)
            })
        },
    )
    .await;
    let mut runs = env.lines("runs.txt");
    runs.sort();
    let mut want = vec![
        format!("{j1}:0 v1"),
        format!("{j2}:0 v1"),
        format!("{j1}:v1:0 v2"),
        format!("{j2}:0 v1"),
    ];
    want.sort();
    assert_eq!(runs, want, "the fix ran for j1, the version matched for j2");
    assert_eq!(env.lines("other.txt").len(), 2, "no other rule ran again");

    // A job that is not a dead letter, and one that does not exist, say which.
    let (st, body) = rerun(&c, &server, &j1).await;
    assert_eq!(
        (st, body["error"].as_str()),
        (409, Some("not_failed")),
        "{body}"
    );
    let (st, body) = rerun(&c, &server, "nope:x").await;
    assert_eq!(
        (st, body["error"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
}

/// A rule added after an event arrived is on the event's page: it matches now, and a replay
/// runs it (issue: it was neither matched nor not matched).
#[tokio::test]
async fn a_rule_added_after_an_event_is_listed_on_its_page_as_such() {
    let env = Env::new();
    let first = format!(
        "{SRC}rules:\n  - name: a\n    condition: '$.n == 9'\n    actions: [{{ log: {{ message: a }} }}]\n"
    );
    env.rulebook("r.yml", &first);
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    env.rulebook(
        "r.yml",
        &format!("{first}  - name: later\n    actions: [{{ log: {{ message: later }} }}]\n"),
    );
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;
    let d = detail(&c, &server, &id).await;
    let later = d["not_matched"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["rule"] == "later")
        .unwrap_or_else(|| panic!("`later` is missing from the page: {d}"))
        .clone();
    assert_eq!(later["matches_now"], true, "{later}");
    assert!(
        later["why"][0]
            .as_str()
            .is_some_and(|w| w.contains("added after this event") && w.contains("replay")),
        "{later}"
    );
}

/// The start's log line counts every pending job in the journal, not what the queue's memory
/// held yet (its first load takes half of its cap, 512, at a time, in the background).
#[tokio::test]
async fn the_start_counts_every_pending_job() {
    let env = Env::new();
    env.script(
        "hang.sh",
        "#!/bin/sh\necho $$ > \"$OUT_DIR/hang.pid\"\nexec sleep 30\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            "{SRC}rules:\n  - name: hang\n    actions: [{{ run_script: {{ script: hang.sh }} }}]\n"
        ),
    );
    let mut server = Server::start(&env, &["--concurrency", "1"], &[]);
    let c = client();
    for n in 0..600 {
        send(&c, &server, &json!({"n": n})).await;
    }
    env.wait_lines("hang.pid", 1, Duration::from_secs(10));
    server.kill9();
    kill_orphan(&env.path("hang.pid"));

    let server = Server::start(&env, &["--concurrency", "1"], &[]);
    common::wait_until(
        "the start's count of recovered jobs",
        Duration::from_secs(10),
        || server.log_text().contains("jobs recovered from the store"),
    );
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("jobs recovered from the store"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("pending=600"), "{line}");
    drop(server);
    if env.path("hang.pid").exists() {
        kill_orphan(&env.path("hang.pid"));
    }
}
