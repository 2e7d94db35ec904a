//! The job state machine's transitions cut by a crash (kill -9 of the real server) between
//! two of their steps, and by a hot reload that changes the rule, as a user meets them: the
//! service is restarted on the same data directory and the job goes on from where it was,
//! under the rule version it should run, with a history that tells what happened and nothing
//! run twice where the docs promise once.
//!
//! Covered elsewhere: a crash while a script runs (durability.rs), between two actions and
//! inside `on_failure` (jobs.rs), while a job awaits approval and after a decision (approvals.rs),
//! while a window holds a job (windows.rs).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Env, Server, client, post_signed, wait_for};
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
    resp["id"].as_str().unwrap().to_string()
}

async fn post(c: &reqwest::Client, server: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = c.post(server.url(path)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn job_of<'a>(detail: &'a Value, job: &str) -> &'a Value {
    detail["matches"]
        .as_array()
        .and_then(|m| m.iter().find(|j| j["id"] == job))
        .unwrap_or_else(|| panic!("no job {job}: {detail}"))
}

/// The event's detail once its job `job` has `status`.
async fn wait_job(
    c: &reqwest::Client,
    server: &Server,
    event: &str,
    job: &str,
    status: &str,
) -> Value {
    wait_for(
        c,
        server,
        &format!("/api/events/{event}"),
        Duration::from_secs(30),
        |d| {
            d["matches"]
                .as_array()
                .is_some_and(|m| m.iter().any(|j| j["id"] == job && j["status"] == status))
        },
    )
    .await
}

/// The `/api/jobs?status=…` row of `job` once it is listed there.
async fn wait_row<F: Fn(&Value) -> bool>(
    c: &reqwest::Client,
    server: &Server,
    status: &str,
    job: &str,
    f: F,
) -> Value {
    let path = format!("/api/jobs?status={status}&limit=1000");
    let found = |v: &Value| {
        v["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|r| r["id"] == job).cloned())
    };
    let v = wait_for(c, server, &path, Duration::from_secs(30), |v| {
        found(v).is_some_and(|r| f(&r))
    })
    .await;
    found(&v).unwrap()
}

/// A job's attempts as `(phase, action_index, attempt, run_id, status)`.
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

fn att(index: u64, attempt: u64, run_id: &str, status: &str) -> (String, u64, u64, String, String) {
    (
        "main".to_string(),
        index,
        attempt,
        run_id.to_string(),
        status.to_string(),
    )
}

/// Kills a script the killed server left behind (its pid, written by the script to `file`).
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

async fn reloaded(c: &reqwest::Client, server: &Server, n: u64) {
    wait_for(c, server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(n)
    })
    .await;
}

/// Now plus `secs`, as RFC 3339, and as milliseconds since the epoch.
fn at(secs: i64) -> (String, i128) {
    let now = time::OffsetDateTime::now_utc();
    let t = now + time::Duration::seconds(secs);
    let text = t
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let ms = t.replace_nanosecond(0).unwrap().unix_timestamp_nanos() / 1_000_000;
    (text, ms)
}

fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

// A retry's wait ────────────────────────────────────────────────────────────────────────────

/// kill -9 while a failed action waits for its retry: after the restart it is tried again
/// under the same run id, its attempts counted on and its retry budget not renewed (3 tries in
/// all for `retries: 2`), and the dead letter says 3 attempts.
#[tokio::test]
async fn a_crash_during_a_retrys_wait_neither_renews_its_budget_nor_restarts_its_count() {
    let env = Env::new();
    env.script(
        "fail.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\nexit 3\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            "{SRC}rules:\n  - name: r\n    actions:\n      - run_script: {{ script: fail.sh, retries: 2 }}\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:r");
    // The first try failed and the wait for the second is recorded (backoff ≥ 1 s).
    wait_row(&c, &server, "pending", &job, |r| r["attempts"] == 1).await;
    server.kill9();
    assert_eq!(
        env.lines("runs.txt").len(),
        1,
        "the crash came during the retry's wait"
    );

    let server = Server::start(&env, &[], &[]);
    let d = wait_job(&c, &server, &id, &job, "failed").await;
    let run = format!("{job}:0");
    assert_eq!(
        env.lines("runs.txt"),
        vec![run.clone(), run.clone(), run.clone()],
        "retries: 2 means three tries in all, across the crash"
    );
    assert_eq!(
        attempts(job_of(&d, &job)),
        (1..=3)
            .map(|n| att(0, n, &run, "failed"))
            .collect::<Vec<_>>(),
        "{d}"
    );
    let row = wait_row(&c, &server, "failed", &job, |_| true).await;
    assert_eq!(row["attempts"], 3, "{row}");
}

/// A hot reload that changes the rule while a failed action waits for its retry, then kill -9
/// and a restart: the retries still run the version the job matched (restored from the rule
/// archive after the restart), under the same run id; a new event runs the new version.
#[tokio::test]
async fn a_retry_runs_the_version_it_matched_across_a_reload_and_a_crash() {
    let env = Env::new();
    // Fails until `go` exists.
    env.script(
        "s.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\n[ -e \"$OUT_DIR/go\" ]\n",
    );
    let book = |v: &str| {
        format!(
            "{SRC}rules:\n  - name: r\n    actions:\n      - run_script: {{ script: s.sh, args: [{v}], retries: 6 }}\n"
        )
    };
    env.rulebook("r.yml", &book("v1"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:r");
    wait_row(&c, &server, "pending", &job, |r| r["attempts"] == 1).await;
    env.rulebook("r.yml", &book("v2"));
    reloaded(&c, &server, 1).await;
    // Still waiting for a retry (the first waits are 1, 2, 4 … s).
    let row = wait_row(&c, &server, "pending", &job, |_| true).await;
    let tries = row["attempts"].as_u64().unwrap();
    assert!(tries < 7, "{row}");
    server.kill9();

    std::fs::write(env.path("go"), "").unwrap();
    let server = Server::start(&env, &[], &[]);
    let d = wait_job(&c, &server, &id, &job, "done").await;
    let run = format!("{job}:0");
    let runs = env.lines("runs.txt");
    assert!(
        runs.iter().all(|l| *l == format!("{run} v1")),
        "every try ran the version matched, under one run id: {runs:?}"
    );
    let j = job_of(&d, &job);
    assert!(
        j["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["rendered"]["run_script"]["args"] == json!(["v1"])),
        "the history shows the version each try ran: {d}"
    );
    let tried = attempts(j);
    let last = tried.last().unwrap();
    assert_eq!((&last.3, last.4.as_str()), (&run, "ok"), "{d}");
    assert!(
        last.2 >= 2,
        "attempts counted on across the reload and the crash: {d}"
    );
    let e2 = send(&c, &server, &json!({"n": 2})).await;
    wait_job(&c, &server, &e2, &format!("{e2}:r"), "done").await;
    assert_eq!(
        env.lines("runs.txt").last(),
        Some(&format!("{e2}:r:0 v2")),
        "a new event runs the new version"
    );
}

// Approvals: notify, a decision, a deadline ───────────────────────────────────────────────

/// kill -9 while an approval's `notify` runs, and again while the approved action runs: the
/// notify is run again (same run id) and marked done; the job still awaits the decision; once
/// approved, the action cut short runs again as itself and the job is not asked a second time.
#[tokio::test]
async fn crashes_during_notify_and_the_approved_action_neither_lose_nor_repeat_the_decision() {
    let env = Env::new();
    // Each hangs the first time it runs (the crash comes then), and returns afterwards.
    for name in ["notify", "act"] {
        env.script(
            &format!("{name}.sh"),
            &format!(
                "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/{name}.txt\"\nif [ ! -e \"$OUT_DIR/{name}.hung\" ]; then\n  touch \"$OUT_DIR/{name}.hung\"\n  echo $$ > \"$OUT_DIR/{name}.pid\"\n  exec sleep 30\nfi\n"
            ),
        );
    }
    env.rulebook(
        "r.yml",
        &format!(
            "{SRC}rules:\n  - name: r\n    approval:\n      timeout: 10m\n      notify: [{{ run_script: {{ script: notify.sh }} }}]\n    actions:\n      - run_script: {{ script: act.sh }}\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let job = format!("{id}:r");
    env.wait_lines("notify.pid", 1, Duration::from_secs(20));
    server.kill9();
    kill_orphan(&env.path("notify.pid"));

    let mut server = Server::start(&env, &[], &[]);
    let notify_run = format!("{job}:approval:0");
    let approvals = wait_for(
        &c,
        &server,
        "/api/approvals",
        Duration::from_secs(30),
        |v| {
            v["approvals"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["job"] == job && r["notify_done"] == true)
            })
        },
    )
    .await;
    assert_eq!(
        env.lines("notify.txt"),
        vec![notify_run.clone(), notify_run.clone()],
        "notify ran again after the crash cut it short, under its run id"
    );
    assert_eq!(
        approvals["approvals"][0]["notified"][0]["ok"], true,
        "{approvals}"
    );
    assert!(
        env.lines("act.txt").is_empty(),
        "nothing ran before a decision"
    );
    let (st, body) = post(
        &c,
        &server,
        &format!("/api/jobs/{job}/approve"),
        json!({"comment": "CHG-1"}),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    env.wait_lines("act.pid", 1, Duration::from_secs(20));
    server.kill9();
    kill_orphan(&env.path("act.pid"));

    let server = Server::start(&env, &[], &[]);
    let d = wait_job(&c, &server, &id, &job, "done").await;
    let j = job_of(&d, &job);
    assert_eq!(j["decision"]["by"], "loopback", "{d}");
    assert_eq!(j["decision"]["comment"], "CHG-1", "{d}");
    let run = format!("{job}:0");
    assert_eq!(env.lines("act.txt"), vec![run.clone(), run.clone()]);
    assert_eq!(env.lines("notify.txt").len(), 2, "nobody was asked again");
    let tried = attempts(j);
    assert_eq!(tried.last(), Some(&att(0, 1, &run, "ok")), "{d}");
    assert!(
        j["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["status"] == "failed"
                && a["error"].as_str().unwrap_or("").starts_with("interrupted")),
        "the try cut short is in the history: {d}"
    );
}

/// An approval's deadline passes while the service is down: at the restart `on_timeout`
/// decides (by `timeout`) both ways; the approved job runs once, the rejected one runs nothing,
/// and a person's decision after the deadline is refused.
#[tokio::test]
async fn a_deadline_that_passes_while_the_service_is_down_is_decided_by_on_timeout() {
    let env = Env::new();
    env.script(
        "ran.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/ran.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            "{SRC}rules:\n  - name: yes\n    approval: {{ timeout: 5s, on_timeout: approve }}\n    actions: [{{ run_script: {{ script: ran.sh }} }}]\n  - name: no\n    approval: {{ timeout: 5s, on_timeout: reject }}\n    actions: [{{ run_script: {{ script: ran.sh }} }}]\n"
        ),
    );
    let args = ["--approval-check", "1m"];
    let mut server = Server::start(&env, &args, &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let (yes, no) = (format!("{id}:yes"), format!("{id}:no"));
    let mut deadline = 0;
    for j in [&yes, &no] {
        let row = wait_row(&c, &server, "awaiting_approval", j, |_| true).await;
        let text = row["awaiting"]["deadline"].as_str().unwrap().to_string();
        let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
            .unwrap();
        deadline = deadline.max(t.unix_timestamp_nanos() / 1_000_000);
    }
    server.kill9();
    common::wait_until("the deadline", Duration::from_secs(10), || {
        now_ms() > deadline + 200
    });

    let server = Server::start(&env, &args, &[]);
    let d = wait_job(&c, &server, &id, &yes, "done").await;
    let d2 = wait_job(&c, &server, &id, &no, "rejected").await;
    assert_eq!(job_of(&d, &yes)["decision"]["by"], "timeout", "{d}");
    assert_eq!(job_of(&d2, &no)["decision"]["by"], "timeout", "{d2}");
    assert_eq!(job_of(&d2, &no)["decision"]["approved"], false, "{d2}");
    assert_eq!(env.lines("ran.txt"), vec![format!("{yes}:0")]);
    let (st, body) = post(&c, &server, &format!("/api/jobs/{no}/approve"), json!({})).await;
    assert_eq!(st, 409, "{body}");
    assert_eq!(
        env.lines("ran.txt").len(),
        1,
        "the refused decision ran nothing"
    );
}

// Windows whose end passes during downtime ─────────────────────────────────────────────────

/// A `hold` window and an `approve` window end while the service is down: at the restart the
/// held job runs (no reload needed) and the job the window asked approval for is approved by
/// `window end` and runs; each once.
#[tokio::test]
async fn windows_that_end_while_the_service_is_down_release_their_jobs_at_the_restart() {
    let env = Env::new();
    env.script(
        "ran.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/ran.txt\"\n",
    );
    let (start, _) = at(-3600);
    let (end, end_ms) = at(8);
    env.rulebook(
        "r.yml",
        &format!(
            "windows:\n  - {{ name: freeze, start: \"{start}\", end: \"{end}\", rules: [held], during: hold }}\n  - {{ name: ask, start: \"{start}\", end: \"{end}\", rules: [asked], during: approve }}\n{SRC}rules:\n  - name: held\n    actions: [{{ run_script: {{ script: ran.sh }} }}]\n  - name: asked\n    actions: [{{ run_script: {{ script: ran.sh }} }}]\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"n": 1})).await;
    let (held, asked) = (format!("{id}:held"), format!("{id}:asked"));
    wait_for(&c, &server, "/api/windows", Duration::from_secs(20), |w| {
        w["held"]
            .as_array()
            .is_some_and(|h| h.iter().any(|j| j["job"] == held))
    })
    .await;
    wait_row(&c, &server, "awaiting_approval", &asked, |_| true).await;
    server.kill9();
    assert!(now_ms() < end_ms, "killed before the windows ended");
    assert!(env.lines("ran.txt").is_empty());
    common::wait_until("the windows' end", Duration::from_secs(20), || {
        now_ms() > end_ms + 200
    });

    let server = Server::start(&env, &[], &[]);
    wait_job(&c, &server, &id, &held, "done").await;
    let d = wait_job(&c, &server, &id, &asked, "done").await;
    assert_eq!(job_of(&d, &asked)["decision"]["by"], "window end", "{d}");
    let mut ran = env.lines("ran.txt");
    ran.sort();
    let mut want = vec![format!("{held}:0"), format!("{asked}:0")];
    want.sort();
    assert_eq!(ran, want, "each ran once");
}

// Re-runs ─────────────────────────────────────────────────────────────────────────────────

/// Two dead letters; the rule is fixed while the service is down. After the restart a re-run
/// runs the fix (new run ids), a re-run `as_matched` the version matched (restored from the
/// rule archive, attempts counted on); then kill -9 while a re-run's action runs: after the
/// restart it goes on as itself and what ran before it does not run again.
#[tokio::test]
async fn reruns_after_a_fix_made_while_the_service_was_down() {
    let env = Env::new();
    env.script(
        "first.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID\" >> \"$OUT_DIR/first.txt\"\n",
    );
    // Fails for v1; for v2 hangs the first time it is run for event 3 (the crash comes then).
    env.script(
        "s.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1 $2\" >> \"$OUT_DIR/runs.txt\"\n[ \"$1\" = v2 ] || exit 3\nif [ \"$2\" = 3 ] && [ ! -e \"$OUT_DIR/hung\" ]; then\n  touch \"$OUT_DIR/hung\"\n  echo $$ > \"$OUT_DIR/s.pid\"\n  exec sleep 30\nfi\n",
    );
    let book = |v: &str| {
        format!(
            "{SRC}rules:\n  - name: r\n    actions:\n      - run_script: {{ script: first.sh }}\n      - run_script: {{ script: s.sh, args: [{v}, \"{{{{ event.n }}}}\"], retries: 0 }}\n"
        )
    };
    env.rulebook("r.yml", &book("v1"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let id = send(&c, &server, &json!({"n": n})).await;
        wait_job(&c, &server, &id, &format!("{id}:r"), "failed").await;
        ids.push(id);
    }
    let jobs: Vec<String> = ids.iter().map(|id| format!("{id}:r")).collect();
    server.kill9();
    env.rulebook("r.yml", &book("v2"));

    let mut server = Server::start(&env, &[], &[]);
    let rerun = |job: &str, q: &str| format!("/api/jobs/{job}/rerun{q}");
    let (st, body) = post(&c, &server, &rerun(&jobs[0], ""), json!({})).await;
    assert_eq!(
        (st, body["version"].as_str()),
        (202, Some("current")),
        "{body}"
    );
    let (st, body) = post(&c, &server, &rerun(&jobs[1], "?as_matched=true"), json!({})).await;
    assert_eq!(
        (st, body["version"].as_str()),
        (202, Some("matched")),
        "{body}"
    );
    let d0 = wait_job(&c, &server, &ids[0], &jobs[0], "done").await;
    let d1 = wait_for(
        &c,
        &server,
        &format!("/api/events/{}", ids[1]),
        Duration::from_secs(30),
        |d| {
            let j = job_of(d, &jobs[1]);
            j["status"] == "failed" && j["attempts"].as_array().is_some_and(|a| a.len() == 3)
        },
    )
    .await;
    let j0 = &jobs[0];
    assert_eq!(
        attempts(job_of(&d0, j0)),
        vec![
            att(0, 1, &format!("{j0}:0"), "ok"),
            att(1, 1, &format!("{j0}:1"), "failed"),
            att(0, 1, &format!("{j0}:v1:0"), "ok"),
            att(1, 1, &format!("{j0}:v1:1"), "ok"),
        ],
        "the fix from its first action, under new run ids: {d0}"
    );
    let j1 = &jobs[1];
    assert_eq!(
        attempts(job_of(&d1, j1)),
        vec![
            att(0, 1, &format!("{j1}:0"), "ok"),
            att(1, 1, &format!("{j1}:1"), "failed"),
            att(1, 2, &format!("{j1}:1"), "failed"),
        ],
        "the version matched, resumed at the action that failed: {d1}"
    );

    // A re-run on the fix cut short by a crash while its second action runs.
    let j2 = &jobs[2];
    let (st, body) = post(&c, &server, &rerun(j2, ""), json!({})).await;
    assert_eq!(st, 202, "{body}");
    env.wait_lines("s.pid", 1, Duration::from_secs(20));
    server.kill9();
    kill_orphan(&env.path("s.pid"));
    let server = Server::start(&env, &[], &[]);
    let d2 = wait_job(&c, &server, &ids[2], j2, "done").await;
    let runs = env.lines("runs.txt");
    let hung = format!("{j2}:v1:1 v2 3");
    assert_eq!(
        runs.iter().filter(|l| **l == hung).count(),
        2,
        "the action cut short ran again as itself: {runs:?}"
    );
    let first = env.lines("first.txt");
    assert_eq!(
        first.iter().filter(|l| l.starts_with(j2.as_str())).count(),
        2,
        "its first action ran once per generation, not again after the crash: {first:?}"
    );
    let tried = attempts(job_of(&d2, j2));
    assert_eq!(
        tried.last(),
        Some(&att(1, 1, &format!("{j2}:v1:1"), "ok")),
        "{d2}"
    );
}

// Absence correlations ─────────────────────────────────────────────────────────────────────

/// An absence (`windows: per_group`) whose deadline passes while the service is down, killed
/// while its fired action runs: after the restart the action runs again as itself (its window
/// was still open: not "did not fire"); a group whose `missing` event came in time does not
/// fire; and the group's next `after` event opens a new window and fires again.
#[tokio::test]
async fn an_absence_cut_short_by_a_crash_fires_again_and_then_frees_its_group() {
    let env = Env::new();
    // Hangs the first time it runs (the crash comes then).
    env.script(
        "incident.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RUN_ID $1\" >> \"$OUT_DIR/runs.txt\"\nif [ ! -e \"$OUT_DIR/hung\" ]; then\n  touch \"$OUT_DIR/hung\"\n  echo $$ > \"$OUT_DIR/incident.pid\"\n  exec sleep 30\nfi\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            "{SRC}rules:\n  - name: stays-down\n    correlate:\n      within: 3s\n      group_by: ['$.device']\n      absence:\n        after: {{ name: down, condition: '$.state == \"down\"' }}\n        missing: {{ name: up, condition: '$.state == \"up\"' }}\n        windows: per_group\n    actions:\n      - run_script: {{ script: incident.sh, args: ['{{{{ events.down.device }}}}'] }}\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let r1 = send(&c, &server, &json!({"device": "r1", "state": "down"})).await;
    let r2 = send(&c, &server, &json!({"device": "r2", "state": "down"})).await;
    send(&c, &server, &json!({"device": "r2", "state": "up"})).await;
    env.wait_lines("incident.pid", 1, Duration::from_secs(20));
    server.kill9();
    kill_orphan(&env.path("incident.pid"));

    let server = Server::start(&env, &[], &[]);
    let (j1, j2) = (format!("{r1}:stays-down"), format!("{r2}:stays-down"));
    let d1 = wait_job(&c, &server, &r1, &j1, "done").await;
    assert!(job_of(&d1, &j1)["error"].is_null(), "it fired: {d1}");
    let d2 = wait_job(&c, &server, &r2, &j2, "done").await;
    assert!(
        job_of(&d2, &j2)["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("did not fire")),
        "{d2}"
    );
    let run = format!("{j1}:0 r1");
    assert_eq!(
        env.lines("runs.txt"),
        vec![run.clone(), run],
        "the fired action ran again as itself; r2 never ran"
    );
    let again = send(&c, &server, &json!({"device": "r1", "state": "down"})).await;
    let ja = format!("{again}:stays-down");
    let d = wait_job(&c, &server, &again, &ja, "done").await;
    assert!(
        job_of(&d, &ja)["error"].is_null(),
        "a new window fired: {d}"
    );
    assert_eq!(env.lines("runs.txt").last(), Some(&format!("{ja}:0 r1")));
}
