//! Maintenance windows against the real binary (docs/change-control.md): absolute windows in
//! the past, in force and in the future relative to now; a hold released when its window ends,
//! when a reload removes it, and kept across a crash and restart; skip recorded as skipped;
//! `/api/windows`, the console page, `rulehook jobs|event|check|test`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Env, NatsPrefix, Server, client, get, post_signed, wait_for};
use serde_json::{Value, json};

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

const RULES: &str = r#"rules:
  - name: frozen
    actions:
      - run_script: { script: mark.sh, args: ["frozen {{ event.n }}"] }
  - name: free
    actions:
      - run_script: { script: mark.sh, args: ["free {{ event.n }}"] }
"#;

/// A rulebook with one absolute window from `start` to `end` (RFC 3339) over `frozen`.
fn book(start: &str, end: &str, during: &str) -> String {
    format!(
        "windows:\n  - name: freeze\n    start: \"{start}\"\n    end: \"{end}\"\n    rules: [frozen]\n    during: {during}\n{SRC}{RULES}"
    )
}

fn no_windows() -> String {
    format!("{SRC}{RULES}")
}

/// Now plus `secs` (may be negative), as RFC 3339.
fn at(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t = time::OffsetDateTime::from_unix_timestamp(now + secs).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn env() -> Env {
    let env = Env::new();
    env.script(
        "mark.sh",
        "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/ran.txt\"\n",
    );
    env
}

async fn send(c: &reqwest::Client, server: &Server, n: u32) -> String {
    let body = json!({ "n": n }).to_string();
    let (st, resp) = post_signed(
        c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        body.as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    resp["id"].as_str().unwrap().to_string()
}

fn job<'a>(detail: &'a Value, rule: &str) -> &'a Value {
    detail["matches"]
        .as_array()
        .and_then(|m| m.iter().find(|j| j["rule"] == rule))
        .unwrap_or_else(|| panic!("no job of `{rule}`: {detail}"))
}

/// The event once its job of `rule` has the status `status`.
async fn job_status(
    c: &reqwest::Client,
    server: &Server,
    id: &str,
    rule: &str,
    status: &str,
    timeout: Duration,
) -> Value {
    let path = format!("/api/events/{id}");
    wait_for(c, server, &path, timeout, |d| {
        d["matches"]
            .as_array()
            .is_some_and(|m| m.iter().any(|j| j["rule"] == rule && j["status"] == status))
    })
    .await
}

/// `/api/windows` once it lists the job as held.
async fn held(c: &reqwest::Client, server: &Server, job_id: &str) -> Value {
    wait_for(c, server, "/api/windows", Duration::from_secs(20), |w| {
        w["held"]
            .as_array()
            .is_some_and(|h| h.iter().any(|j| j["job"] == job_id))
    })
    .await
}

fn rulehook(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A window in force holds `frozen`'s job (listed by `/api/windows`, the console, `/api/jobs`
/// and `rulehook jobs`) while `free` runs; a reload that removes the window releases it.
#[tokio::test]
async fn a_hold_keeps_the_job_until_a_reload_removes_the_window() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "hold"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    let w = held(&c, &server, &frozen_id).await;
    assert_eq!(w["windows"][0]["name"], "freeze", "{w}");
    assert_eq!(w["windows"][0]["in_force"], true, "{w}");
    assert_eq!(w["windows"][0]["during"], "hold", "{w}");
    assert_eq!(w["held"][0]["window"], "freeze", "{w}");
    assert_eq!(env.lines("ran.txt"), vec!["free 1"], "frozen did not run");
    // The job list and the CLI say why it waits; so do the console's pages.
    let jobs = get(&c, &server, "/api/jobs?status=pending").await;
    assert_eq!(jobs["jobs"][0]["held_by"]["window"], "freeze", "{jobs}");
    let (ok, out, err) = rulehook(&["jobs", "--status", "pending", "--url", &server.base]);
    assert!(ok, "{err}");
    assert!(
        out.contains("held by maintenance window `freeze` (hold) until"),
        "{out}"
    );
    // So does the event's timeline (it printed `pending` alone).
    let (ok, out, err) = rulehook(&["event", &id, "--url", &server.base]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "matched net/frozen  job {frozen_id}  pending\n  held by maintenance window `freeze` (hold) until"
        )),
        "{out}"
    );
    let page = c
        .get(server.url("/console/windows"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("freeze") && page.contains(&frozen_id),
        "{page}"
    );
    assert!(page.contains("in force"), "{page}");
    let page = c
        .get(server.url(&format!("/console/events/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Held by maintenance window"), "{page}");

    // The window removed: released within a recheck (15 s), no restart needed.
    env.rulebook("net.yml", &no_windows());
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(40)).await;
    let ran = env.wait_lines("ran.txt", 2, Duration::from_secs(5));
    assert!(ran.contains(&"frozen 1".to_string()), "{ran:?}");
    let w = get(&c, &server, "/api/windows").await;
    assert_eq!(w["windows"], json!([]), "{w}");
    assert_eq!(w["held"], json!([]), "{w}");
}

/// A window that ends a few seconds from now: the job waits for exactly that, then runs.
/// A window in the past and one in the future hold nothing now; the future one is "next".
#[tokio::test]
async fn a_hold_ends_with_its_window_and_past_or_future_windows_do_not_hold() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-60), &at(8), "hold"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = get(&c, &server, &format!("/api/events/{id}")).await;
    assert_eq!(job(&d, "frozen")["status"], "pending", "{d}");
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(30)).await;
    assert!(env.lines("ran.txt").contains(&"frozen 1".to_string()));

    // The window is over: a new event's job runs at once.
    let id = send(&c, &server, 2).await;
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;

    // A window in the future: not in force, shown as next; jobs run.
    env.rulebook("net.yml", &book(&at(3600), &at(7200), "hold"));
    let w = wait_for(&c, &server, "/api/windows", Duration::from_secs(10), |w| {
        w["windows"][0]["next"].is_object()
    })
    .await;
    assert_eq!(w["windows"][0]["in_force"], false, "{w}");
    assert!(w["next_change"].is_string(), "{w}");
    let id = send(&c, &server, 3).await;
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;
}

/// `during: skip`: the job closes as done, noted skipped, with no attempt; the console and
/// `rulehook event` say "skipped".
#[tokio::test]
async fn skip_records_the_job_as_skipped() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "skip"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;
    let j = job(&d, "frozen");
    let note = j["error"].as_str().unwrap_or("");
    assert!(
        note.starts_with("skipped") && note.contains("`freeze`"),
        "{d}"
    );
    assert_eq!(j["attempts"], json!([]), "nothing ran: {d}");
    job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    assert_eq!(
        env.wait_lines("ran.txt", 1, Duration::from_secs(5)),
        vec!["free 1"]
    );
    let (ok, out, err) = rulehook(&["event", &id, "--url", &server.base]);
    assert!(ok, "{err}");
    assert!(
        out.contains("skipped: maintenance window `freeze`"),
        "{out}"
    );
    assert!(!out.contains("skipped: skipped"), "one prefix: {out}");
    let page = c
        .get(server.url(&format!("/console/events/{id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("status skipped"), "{page}");
}

/// A held job survives a crash (kill -9) and a restart: still held afterwards, then released
/// by a reload that removes the window.
#[tokio::test]
async fn a_held_job_survives_a_crash_and_restart() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "hold"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    held(&c, &server, &frozen_id).await;
    server.kill9();

    let server = Server::start(&env, &[], &[]);
    let d = get(&c, &server, &format!("/api/events/{id}")).await;
    assert_eq!(job(&d, "frozen")["status"], "pending", "{d}");
    held(&c, &server, &frozen_id).await;
    assert_eq!(env.lines("ran.txt"), vec!["free 1"], "frozen did not run");
    env.rulebook("net.yml", &no_windows());
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(40)).await;
    let ran = env.wait_lines("ran.txt", 2, Duration::from_secs(5));
    assert_eq!(ran, vec!["free 1", "frozen 1"], "it ran once");
}

/// `rulehook check` lists the windows and refuses a wrong one with file, line and column;
/// `rulehook test --at` says what a window would do to a matching rule's job.
#[test]
fn check_and_test_speak_of_windows() {
    let env = env();
    env.rulebook(
        "net.yml",
        &book("2026-12-20T00:00:00Z", "2027-01-04T00:00:00Z", "hold"),
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 maintenance window(s)"), "{text}");
    assert!(
        text.contains("window freeze (net): hold net/frozen"),
        "{text}"
    );

    std::fs::write(env.path("e.json"), "{\"n\": 1}").unwrap();
    let event = env.path("e.json").display().to_string();
    let out = env
        .cmd(&["test", "--event", &event, "--at", "2026-12-24T12:00:00Z"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "window `freeze` is in force at 2026-12-24T12:00:00.000Z: its job would be held until 2027-01-04T00:00:00.000Z"
        ),
        "{text}"
    );
    let out = env
        .cmd(&["test", "--event", &event, "--at", "2026-12-01T12:00:00Z"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("window `freeze` (hold) is next in force from 2026-12-20T00:00:00.000Z"),
        "{text}"
    );

    let bad = book("2026-12-20T00:00:00Z", "2027-01-04T00:00:00Z", "hold")
        .replace("rules: [frozen]", "rules: [frozn]");
    env.rulebook("net.yml", &bad);
    let out = env.cmd(&["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("net.yml:5:13: window `freeze`: no rule named `frozn`"),
        "{text}"
    );
}

/// `rulehook whatif` with candidate rulebooks that add a window: per rule, how many of the
/// replayed events' jobs it would have met at their time.
#[tokio::test]
async fn whatif_counts_the_jobs_a_candidate_window_would_meet() {
    let env = env();
    env.rulebook("net.yml", &no_windows());
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;
    job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    std::fs::create_dir_all(env.path("candidate")).unwrap();
    std::fs::write(
        env.path("candidate/net.yml"),
        book(&at(-3600), &at(3600), "skip"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["whatif", "--since", "1h", "--url", &server.base])
        .arg("--rulebooks")
        .arg(env.path("candidate"))
        .arg("--scripts")
        .arg(env.path("scripts"))
        .arg("--templates")
        .arg(env.path("templates"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("window freeze (skip): 1 of its job(s) would meet it"),
        "{text}"
    );
    let free = text
        .lines()
        .skip_while(|l| !l.contains("net/free"))
        .nth(1)
        .unwrap_or("");
    assert!(!free.contains("window"), "free is not covered: {text}");
}

/// On JetStream the same: a held job is a queued job with a delay, still held after its node
/// is killed and another starts, and released by a reload that removes the window.
#[tokio::test]
async fn on_jetstream_a_held_job_survives_its_node_and_a_reload_releases_it() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "hold"));
    let nats = NatsPrefix::new();
    let args = nats.args("all");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start(&env, &args, &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "free", "done", Duration::from_secs(30)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    held(&c, &server, &frozen_id).await;
    server.kill9();

    let server = Server::start_on(&env, &env.path("data2"), &args, &[]);
    held(&c, &server, &frozen_id).await;
    assert_eq!(env.lines("ran.txt"), vec!["free 1"], "frozen did not run");
    env.rulebook("net.yml", &no_windows());
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(60)).await;
    let ran = env.wait_lines("ran.txt", 2, Duration::from_secs(5));
    assert_eq!(ran, vec!["free 1", "frozen 1"], "it ran once");
}

/// `during: approve`: the job waits in `awaiting_approval` (reason `window freeze`) and runs
/// once approved, although the window is still in force.
#[tokio::test]
async fn an_approve_window_makes_the_job_wait_for_an_approval() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "approve"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(
        &c,
        &server,
        &id,
        "frozen",
        "awaiting_approval",
        Duration::from_secs(20),
    )
    .await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    let waiting = get(&c, &server, "/api/jobs?status=awaiting_approval").await;
    assert_eq!(waiting["jobs"][0]["id"], frozen_id, "{waiting}");
    // The approvals page says what happens if nobody decides: the window ends (in an hour)
    // before the request's deadline (an hour after it asked), so it is approved then.
    let page = c
        .get(server.url("/console/approvals"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("approved (by window end) when window freeze ends at "),
        "{page}"
    );
    assert!(!page.contains("then: reject"), "{page}");
    assert!(!page.contains(": reject"), "{page}");
    // The API and `rulehook event` say the same (it said "on_timeout decides at <deadline>").
    let approvals = get(&c, &server, "/api/approvals").await;
    let then = approvals["approvals"][0]["if_undecided"]
        .as_str()
        .unwrap_or("");
    assert!(
        then.starts_with("approved (by window end) when window freeze ends at "),
        "{approvals}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["event", &id, "--url", &server.url("")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("; if nobody decides: {then}"))
            && !text.contains("on_timeout decides"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.wait_lines("ran.txt", 1, Duration::from_secs(10)),
        vec!["free 1"]
    );
    let resp = c
        .post(server.url(&format!("/api/jobs/{frozen_id}/approve")))
        .json(&json!({"comment": "CAB ok"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;
    let ran = env.wait_lines("ran.txt", 2, Duration::from_secs(5));
    assert_eq!(ran, vec!["free 1", "frozen 1"], "it ran once, approved");
}

/// An `approve` window removed by a reload before anyone decided: its job goes on as if no
/// window were in force, approved by `window end` (not left waiting to be rejected at its
/// deadline).
#[tokio::test]
async fn a_window_approval_goes_on_when_its_window_is_removed() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "approve"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    job_status(
        &c,
        &server,
        &id,
        "frozen",
        "awaiting_approval",
        Duration::from_secs(20),
    )
    .await;
    env.rulebook("net.yml", &no_windows());
    let d = job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(30)).await;
    let j = job(&d, "frozen");
    let summary = j["decision"]["summary"].as_str().unwrap_or("");
    assert!(
        summary.starts_with("approved at the window's end"),
        "recorded in its history: {d}"
    );
    let ran = env.wait_lines("ran.txt", 2, Duration::from_secs(5));
    assert!(ran.contains(&"frozen 1".to_string()), "{ran:?}");
}

/// A rulebook whose `frozen` rule runs mark.sh, then `second` (fail.sh: a dead letter), with a
/// `skip` window over it when `skip`.
fn rerun_book(second: &str, skip: bool) -> String {
    let windows = if skip {
        format!(
            "windows:\n  - name: freeze\n    start: \"{}\"\n    end: \"{}\"\n    rules: [frozen]\n    during: skip\n",
            at(-3600),
            at(3600)
        )
    } else {
        String::new()
    };
    format!(
        "{windows}{SRC}rules:\n  - name: frozen\n    actions:\n      - run_script: {{ script: mark.sh, args: [\"first {{{{ event.n }}}}\"] }}\n      - run_script: {{ script: {second}, args: [\"fixed {{{{ event.n }}}}\"], retries: 0 }}\n"
    )
}

/// A re-run of a dead letter during a `skip` window (the rule fixed meanwhile) is a person's
/// request after earlier actions ran: held until the window is gone, then it runs; never
/// closed as "skipped".
#[tokio::test]
async fn a_rerun_during_a_skip_window_is_held_not_skipped() {
    let env = env();
    env.script("fail.sh", "#!/bin/sh\nexit 3\n");
    env.rulebook("net.yml", &rerun_book("fail.sh", false));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(
        &c,
        &server,
        &id,
        "frozen",
        "failed",
        Duration::from_secs(20),
    )
    .await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    env.rulebook("net.yml", &rerun_book("mark.sh", true));
    wait_for(&c, &server, "/api/windows", Duration::from_secs(20), |w| {
        w["windows"].as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    let resp = c
        .post(server.url(&format!("/api/jobs/{frozen_id}/rerun")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    held(&c, &server, &frozen_id).await;
    let d = get(&c, &server, &format!("/api/events/{id}")).await;
    assert_eq!(job(&d, "frozen")["status"], "pending", "not skipped: {d}");
    env.rulebook("net.yml", &rerun_book("mark.sh", false));
    let d = job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(40)).await;
    assert!(job(&d, "frozen")["error"].is_null(), "{d}");
    let ran = env.wait_lines("ran.txt", 3, Duration::from_secs(5));
    assert!(ran.contains(&"fixed 1".to_string()), "the fix ran: {ran:?}");
}

/// A shadow rule under an `approve` window asks nobody (nothing would run): its job goes on in
/// shadow and never appears among the approvals.
#[tokio::test]
async fn a_shadow_rule_under_an_approve_window_asks_nobody() {
    let env = env();
    let shadow = format!("mode: shadow\n{}", book(&at(-3600), &at(3600), "approve"));
    env.rulebook("net.yml", &shadow);
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(20)).await;
    let j = job(&d, "frozen");
    assert!(
        j["error"].as_str().unwrap_or("").starts_with("shadow"),
        "{d}"
    );
    assert!(j["decision"].is_null(), "nobody decided: {d}");
    let approvals = get(&c, &server, "/api/approvals").await;
    assert_eq!(approvals["approvals"], json!([]), "{approvals}");
    assert!(env.lines("ran.txt").is_empty(), "nothing ran");
}

/// A window in force all day on every day never ends: the held job's `until` is `null` in
/// `/api/windows` and `/api/jobs`, the CLI says "with no end" and the console "no end" (it
/// showed a date in the year 9999).
#[tokio::test]
async fn a_job_held_by_a_window_that_never_ends_says_so() {
    let env = env();
    env.rulebook(
        "net.yml",
        &format!(
            "windows:\n  - name: freeze\n    weekly: {{days: [mon, tue, wed, thu, fri, sat, sun], from: \"00:00\", to: \"00:00\", timezone: UTC}}\n    rules: [frozen]\n    during: hold\n{SRC}{RULES}"
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    let w = held(&c, &server, &frozen_id).await;
    assert_eq!(w["held"][0]["until"], Value::Null, "{w}");
    let jobs = get(&c, &server, "/api/jobs?status=pending").await;
    assert_eq!(jobs["jobs"][0]["held_by"]["window"], "freeze", "{jobs}");
    assert_eq!(jobs["jobs"][0]["held_by"]["until"], Value::Null, "{jobs}");
    let (ok, out, err) = rulehook(&["jobs", "--status", "pending", "--url", &server.base]);
    assert!(ok, "{err}");
    assert!(
        out.contains("held by maintenance window `freeze` (hold) with no end"),
        "{out}"
    );
    let (ok, out, err) = rulehook(&["event", &id, "--url", &server.base]);
    assert!(ok, "{err}");
    assert!(
        out.contains("held by maintenance window `freeze` (hold) with no end"),
        "{out}"
    );
    let page = c
        .get(server.url("/console/windows"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&frozen_id), "{page}");
    assert!(!page.contains("9999"), "{page}");
}

/// The pending job of `rule` in `GET /api/jobs`, once listed.
async fn listed_job(c: &reqwest::Client, server: &Server, rule: &str) -> Value {
    let jobs = wait_for(c, server, "/api/jobs", Duration::from_secs(30), |v| {
        v["jobs"]
            .as_array()
            .is_some_and(|js| js.iter().any(|j| j["rule"] == rule))
    })
    .await;
    let found = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["rule"] == rule);
    found.cloned().unwrap()
}

/// Event `id` once its job of `frozen` is recorded as held (the nak that records it follows the
/// gate's decision, which `/api/windows` already lists).
async fn recorded_held(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    let path = format!("/api/events/{id}");
    wait_for(c, server, &path, Duration::from_secs(20), |d| {
        d["matches"].as_array().is_some_and(|m| {
            m.iter()
                .any(|j| j["rule"] == "frozen" && j["held_by"].is_object())
        })
    })
    .await
}

/// A held job is shown held (`held_by`) right after a restart, in `/api/jobs` and the event:
/// the hold is recorded with the job, not only in the memory of the node that held it (a
/// restarted node used to list it as plain `pending` until its gate looked again, up to 15 s
/// later).
#[tokio::test]
async fn a_held_job_is_shown_held_right_after_a_restart() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "hold"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, 1).await;
    let d = job_status(&c, &server, &id, "free", "done", Duration::from_secs(20)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    held(&c, &server, &frozen_id).await;
    recorded_held(&c, &server, &id).await;
    server.terminate();

    let server = Server::start(&env, &[], &[]);
    let j = listed_job(&c, &server, "frozen").await;
    assert_eq!(j["status"], "pending", "{j}");
    assert_eq!(j["held_by"]["window"], "freeze", "{j}");
    assert_eq!(j["held_by"]["during"], "hold", "{j}");
    assert!(j["held_by"]["until"].is_string(), "{j}");
    let d = get(&c, &server, &format!("/api/events/{id}")).await;
    assert_eq!(job(&d, "frozen")["held_by"]["window"], "freeze", "{d}");
    assert!(job(&d, "free").get("held_by").is_none(), "{d}");
    // Released by a reload that removes the window: no longer shown held once it ran.
    env.rulebook("net.yml", &no_windows());
    let d = job_status(&c, &server, &id, "frozen", "done", Duration::from_secs(40)).await;
    assert!(job(&d, "frozen").get("held_by").is_none(), "{d}");
}

/// On JetStream, a second node shows the job another node holds as held (`held_by`), not as
/// plain `pending`: it used to say so only on the node whose gate held it.
#[tokio::test]
async fn on_jetstream_every_node_shows_a_held_job_as_held() {
    let env = env();
    env.rulebook("net.yml", &book(&at(-3600), &at(3600), "hold"));
    let nats = NatsPrefix::new();
    let args = nats.args("all");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Server::start(&env, &args, &[]);
    let c = client();
    let id = send(&c, &first, 1).await;
    let d = job_status(&c, &first, &id, "free", "done", Duration::from_secs(30)).await;
    let frozen_id = job(&d, "frozen")["id"].as_str().unwrap().to_string();
    held(&c, &first, &frozen_id).await;
    recorded_held(&c, &first, &id).await;

    let second = Server::start_on(&env, &env.path("data2"), &args, &[]);
    let j = listed_job(&c, &second, "frozen").await;
    assert_eq!(j["status"], "pending", "{j}");
    assert_eq!(j["held_by"]["window"], "freeze", "{j}");
    assert_eq!(j["held_by"]["during"], "hold", "{j}");
    assert_eq!(env.lines("ran.txt"), vec!["free 1"], "frozen did not run");
}
