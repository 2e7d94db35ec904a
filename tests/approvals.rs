//! Approvals against the real binary (docs/change-control.md): a rule with `approval:` makes its
//! job wait before its first action until a person decides (API, CLI), or `on_timeout` does;
//! the wait survives kill -9, restarts and reloads; `notify` tells people where to decide.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Receiver;
use common::{Env, NatsPrefix, Server, client, post_signed};
use reqwest::Method;
use serde_json::{Value, json};

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

/// `rulehook users add NAME --role ROLE --data DIR`: the token is the last line of stdout.
fn add_user(env: &Env, name: &str, role: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["users", "add", name, "--role", role, "--data"])
        .arg(env.path("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout.lines().last().unwrap().trim().to_string()
}

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

async fn call(
    c: &reqwest::Client,
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `path` (as `token`) until `f` holds; panics with the last answer after `timeout`.
async fn wait_for<F: Fn(&Value) -> bool>(
    c: &reqwest::Client,
    server: &Server,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
    f: F,
) -> Value {
    let start = Instant::now();
    loop {
        let (st, v) = call(c, server, Method::GET, path, token, None).await;
        if st == 200 && f(&v) {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out waiting on {path}; last answer: {st} {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `rel` has at least `n` lines; panics with what it has after `timeout`.
fn wait_lines(env: &Env, rel: &str, n: usize, timeout: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = env.lines(rel);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {n} line(s) in {rel}: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `rulehook ARGS` (a history command: no rulebook flags).
fn cli(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"));
    c.args(args).env_remove("RULEHOOK_ADMIN_TOKEN");
    c
}

/// The job of `rule` on `event`.
fn job_id(event: &str, rule: &str) -> String {
    format!("{event}:{rule}")
}

/// Waits until the job has `status` in `/api/jobs?status=…`; returns its row.
async fn wait_status(
    c: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
    job: &str,
    status: &str,
) -> Value {
    let path = format!("/api/jobs?status={status}");
    let v = wait_for(c, server, &path, token, Duration::from_secs(30), |v| {
        v["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|r| r["id"] == job))
    })
    .await;
    v["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|r| r["id"] == job).cloned())
        .unwrap()
}

/// Waits until `/api/approvals` lists the job's request (made just after the job records its
/// wait); returns the request.
async fn wait_request(
    c: &reqwest::Client,
    server: &Server,
    token: Option<&str>,
    job: &str,
) -> Value {
    let v = wait_for(
        c,
        server,
        "/api/approvals",
        token,
        Duration::from_secs(30),
        |v| {
            v["approvals"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["job"] == job))
        },
    )
    .await;
    v["approvals"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["job"] == job).cloned())
        .unwrap()
}

fn ran_script(env: &Env) {
    env.script(
        "ran.sh",
        "#!/bin/sh\necho \"$1 $2\" >> \"$OUT_DIR/ran.log\"\n",
    );
}

/// Who may decide: approvers and admins, narrowed by `approvers:`; viewers and operators get
/// 403 naming the role; the decision (who, when, comment) is in the job, the event's history,
/// `rulehook event`, and the audit trail; a rejected job runs nothing.
#[tokio::test]
async fn approve_and_reject_by_role_and_approvers() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval: {{ timeout: 10m, on_timeout: reject, approvers: [ann, boss] }}
    actions:
      - run_script: {{ script: ran.sh, args: ["shut-port", "{{{{ event.port }}}}"] }}
  - name: any-approver
    condition: '$.state == "down"'
    approval: {{ timeout: 10m }}
    actions:
      - run_script: {{ script: ran.sh, args: ["any-approver", "{{{{ event.port }}}}"] }}
"#
        ),
    );
    let viewer = add_user(&env, "vic", "viewer");
    let operator = add_user(&env, "olga", "operator");
    let ann = add_user(&env, "ann", "approver");
    let bob = add_user(&env, "bob", "approver");
    let admin = add_user(&env, "ada", "admin");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--approval-check", "200ms"],
        &[("RULEHOOK_ADMIN_TOKEN", "break-glass".to_string())],
    );
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/1"})).await;
    let shut = job_id(&event, "shut-port");
    let any = job_id(&event, "any-approver");
    let row = wait_status(&c, &server, Some(&viewer), &shut, "awaiting_approval").await;
    assert_eq!(row["awaiting"]["reason"], "rule approval", "{row}");
    wait_status(&c, &server, Some(&viewer), &any, "awaiting_approval").await;
    // Nothing ran while they wait; `pending` does not list them.
    let (_, pending) = call(
        &c,
        &server,
        Method::GET,
        "/api/jobs?status=pending",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(pending["jobs"], json!([]), "{pending}");
    assert!(env.lines("ran.log").is_empty());
    // The pending request shows what would run.
    let req = wait_request(&c, &server, Some(&viewer), &shut).await;
    assert_eq!(req["approvers"], json!(["ann", "boss"]));
    assert!(req["actions"].to_string().contains("Gi0/1"), "{req}");

    let approve = format!("/api/jobs/{shut}/approve");
    for (token, role) in [(&viewer, "viewer"), (&operator, "operator")] {
        let (st, body) = call(
            &c,
            &server,
            Method::POST,
            &approve,
            Some(token),
            Some(json!({})),
        )
        .await;
        assert_eq!(st, 403, "{role}: {body}");
        assert_eq!(body["error"], "forbidden_role");
        assert!(
            body["message"].as_str().unwrap().contains("approver"),
            "{body}"
        );
    }
    // bob is an approver, but not one of this rule's.
    let (st, body) = call(&c, &server, Method::POST, &approve, Some(&bob), None).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["error"], "not_an_approver");
    assert!(
        body["message"].as_str().unwrap().contains("ann, boss"),
        "{body}"
    );
    // A malformed body is refused and decides nothing.
    let (st, _) = call(
        &c,
        &server,
        Method::POST,
        &approve,
        Some(&ann),
        Some(json!({"coment": "x"})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &approve,
        Some(&ann),
        Some(json!({"comment": "CHG-42 approved"})),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(body["decision"]["by"], "ann");
    let ran = wait_lines(&env, "ran.log", 1, Duration::from_secs(20));
    assert_eq!(ran, vec!["shut-port Gi0/1"]);
    // Deciding twice is refused.
    let (st, body) = call(&c, &server, Method::POST, &approve, Some(&admin), None).await;
    assert_eq!(st, 409, "{body}");

    // Any approver (or admin) may decide the other; bob rejects it.
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{any}/reject"),
        Some(&bob),
        Some(json!({"comment": "not during the audit"})),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let row = wait_status(&c, &server, Some(&viewer), &any, "rejected").await;
    assert_eq!(row["decision"]["by"], "bob", "{row}");
    assert_eq!(row["decision"]["comment"], "not during the audit");
    let done = wait_status(&c, &server, Some(&viewer), &shut, "done").await;
    assert_eq!(done["decision"]["by"], "ann");
    assert_eq!(
        env.lines("ran.log"),
        vec!["shut-port Gi0/1"],
        "a rejected job runs nothing"
    );

    // The event's history tells who decided, when and why.
    let (_, detail) = call(
        &c,
        &server,
        Method::GET,
        &format!("/api/events/{event}"),
        Some(&viewer),
        None,
    )
    .await;
    let m = |rule: &str| {
        detail["matches"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["rule"] == rule).cloned())
            .unwrap()
    };
    assert_eq!(m("shut-port")["status"], "done");
    assert_eq!(m("shut-port")["decision"]["comment"], "CHG-42 approved");
    assert_eq!(m("any-approver")["status"], "rejected");
    assert!(
        m("any-approver")["decision"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("rejected by bob at "),
        "{detail}"
    );
    assert_eq!(m("any-approver")["attempts"], json!([]));
    // … and so does `rulehook event`; `rulehook jobs --status rejected` lists it.
    let out = cli(&["event", &event, "--url", &server.base])
        .env("RULEHOOK_ADMIN_TOKEN", &viewer)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("approved by ann at "), "{text}");
    assert!(text.contains(": CHG-42 approved"), "{text}");
    assert!(text.contains("rejected by bob at "), "{text}");
    let out = cli(&["jobs", "--status", "rejected", "--url", &server.base])
        .env("RULEHOOK_ADMIN_TOKEN", &viewer)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&any) && text.contains("rejected"), "{text}");
    assert!(!text.contains(&shut), "{text}");
    // A rejected job is not a dead letter: a re-run says it was rejected and to replay.
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{any}/rerun"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(st, 409, "{body}");
    let said = body.to_string();
    assert!(
        said.contains("this job is rejected") && said.contains("replay its event"),
        "{said}"
    );

    // The audit trail has both decisions with their comments.
    let (_, audit) = call(&c, &server, Method::GET, "/api/audit", Some(&viewer), None).await;
    let records = audit["audit"].as_array().unwrap();
    let has = |who: &str, what: &str, target: &str, comment: &str| {
        records.iter().any(|r| {
            r["who"] == who && r["what"] == what && r["target"] == target && r["comment"] == comment
        })
    };
    assert!(has("ann", "approve", &shut, "CHG-42 approved"), "{audit}");
    assert!(
        has("bob", "reject", &any, "not during the audit"),
        "{audit}"
    );
}

/// Nobody decides: `on_timeout` does — approve runs the actions, reject does not; the
/// decision is by `timeout`, in the history and the audit trail.
#[tokio::test]
async fn on_timeout_decides_both_ways() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: lenient
    condition: '$.n > 0'
    approval: {{ timeout: 1s, on_timeout: approve }}
    actions:
      - run_script: {{ script: ran.sh, args: ["lenient", "{{{{ event.n }}}}"] }}
  - name: strict
    condition: '$.n > 0'
    approval: {{ timeout: 1s, on_timeout: reject }}
    actions:
      - run_script: {{ script: ran.sh, args: ["strict", "{{{{ event.n }}}}"] }}
"#
        ),
    );
    // A long check: only the deadline wakes them.
    let server = Server::start(&env, &["--approval-check", "1m"], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"n": 1})).await;
    let lenient = wait_status(&c, &server, None, &job_id(&event, "lenient"), "done").await;
    assert_eq!(lenient["decision"]["by"], "timeout", "{lenient}");
    assert_eq!(lenient["decision"]["approved"], true);
    let strict = wait_status(&c, &server, None, &job_id(&event, "strict"), "rejected").await;
    assert_eq!(strict["decision"]["by"], "timeout", "{strict}");
    assert!(
        strict["error"]
            .as_str()
            .unwrap()
            .starts_with("rejected on timeout"),
        "{strict}"
    );
    assert_eq!(env.lines("ran.log"), vec!["lenient 1"]);
    // Too late for a person.
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{}/approve", job_id(&event, "strict")),
        None,
        None,
    )
    .await;
    assert_eq!(st, 409, "{body}");
    let (_, audit) = call(&c, &server, Method::GET, "/api/audit", None, None).await;
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["who"] == "timeout" && r["what"] == "reject"),
        "{audit}"
    );
}

fn waiting_book(tag: &str, timeout: &str) -> String {
    format!(
        r#"{SRC}rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval: {{ timeout: {timeout}, on_timeout: reject }}
    actions:
      - run_script: {{ script: ran.sh, args: ["{tag}", "{{{{ event.port }}}}"] }}
"#
    )
}

/// kill -9 while a job awaits approval, then a reload that changes its rule: it still waits,
/// and once approved (`rulehook approve`) runs the version it matched.
#[tokio::test]
async fn a_wait_survives_kill9_and_reload_and_the_cli_approves() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "10m"));
    let mut server = Server::start(&env, &["--approval-check", "200ms"], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/2"})).await;
    let job = job_id(&event, "shut-port");
    let before = wait_status(&c, &server, None, &job, "awaiting_approval").await;
    server.kill9();
    let server = Server::start(&env, &["--approval-check", "200ms"], &[]);
    let after = wait_status(&c, &server, None, &job, "awaiting_approval").await;
    assert_eq!(
        after["awaiting"], before["awaiting"],
        "the same wait, same deadline"
    );
    // The request is there after the restart (made again if the kill came before it was).
    let req = wait_request(&c, &server, None, &job).await;
    assert_eq!(req["deadline"], after["awaiting"]["deadline"], "{req}");
    // A reload that changes the rule: the job keeps the version it matched.
    env.rulebook("r.yml", &waiting_book("v2", "10m"));
    wait_for(
        &c,
        &server,
        "/api/status",
        None,
        Duration::from_secs(10),
        |s| s["reload"]["reloads"].as_u64() >= Some(1),
    )
    .await;
    wait_status(&c, &server, None, &job, "awaiting_approval").await;
    assert!(env.lines("ran.log").is_empty());
    let out = cli(&[
        "approve",
        &job,
        "--comment",
        "maintenance ok",
        "--url",
        &server.base,
    ])
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("approved by loopback at "), "{text}");
    assert_eq!(
        wait_lines(&env, "ran.log", 1, Duration::from_secs(20)),
        vec!["v1 Gi0/2"]
    );
    // `rulehook reject` on a job no longer waiting says so.
    let out = cli(&["reject", &job, "--url", &server.base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already decided"),
        "{out:?}"
    );
}

/// `rulehook approve` on a job already decided says who decided, whatever the answer's text
/// holds: a decision whose comment (or time) has "404" in it was reported as "not awaiting
/// approval", as if the job had never asked.
#[tokio::test]
async fn deciding_twice_says_already_decided_when_the_comment_says_404() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "10m"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/4"})).await;
    let job = job_id(&event, "shut-port");
    wait_status(&c, &server, None, &job, "awaiting_approval").await;
    let comment = "CHG-404: the 404 page of the NMS";
    let out = cli(&["approve", &job, "--comment", comment, "--url", &server.base])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for verb in ["approve", "reject"] {
        let out = cli(&[verb, &job, "--url", &server.base]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            stderr.contains("already decided: approved by loopback") && stderr.contains(comment),
            "{stderr}"
        );
    }
    // A job that never asked is still told apart (404).
    let out = cli(&[
        "approve",
        &format!("{event}:nothing"),
        "--url",
        &server.base,
    ])
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not awaiting approval"),
        "{out:?}"
    );
}

/// kill -9 after a person decided and before the job read the decision: after the restart the
/// decision stands (even past the deadline, whose `on_timeout` would have rejected) and the
/// first action runs once. A decision wakes its job at once, so the only worker is kept busy by
/// another job (a script that blocks the first time it runs) until the kill.
#[tokio::test]
async fn a_decision_survives_kill9_before_the_first_action() {
    let env = Env::new();
    ran_script(&env);
    env.script(
        "block.sh",
        "#!/bin/sh
[ -e \"$OUT_DIR/blocked\" ] && exit 0
touch \"$OUT_DIR/blocked\"
sleep 120
",
    );
    let book = format!(
        "{}  - name: blocker\n    condition: '$.state == \"block\"'\n    actions:\n      - run_script: {{ script: block.sh }}\n",
        waiting_book("v1", "3s")
    );
    env.rulebook("r.yml", &book);
    let args = ["--approval-check", "1m", "--concurrency", "1"];
    let mut server = Server::start(&env, &args, &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/3"})).await;
    let job = job_id(&event, "shut-port");
    wait_for(
        &c,
        &server,
        "/api/approvals",
        None,
        Duration::from_secs(30),
        |v| {
            v["approvals"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["job"] == job && r["notify_done"] == true)
            })
        },
    )
    .await;
    // The only worker is now busy until the kill.
    send(&c, &server, &json!({"state": "block"})).await;
    let start = Instant::now();
    while !env.path("blocked").exists() && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.path("blocked").exists(), "the blocker never ran");
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{job}/approve"),
        None,
        Some(json!({"comment": "go"})),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    assert!(
        env.lines("ran.log").is_empty(),
        "killed before the job read the decision"
    );
    let server = Server::start(&env, &args, &[]);
    let row = wait_status(&c, &server, None, &job, "done").await;
    assert_eq!(row["decision"]["by"], "loopback", "{row}");
    assert_eq!(row["decision"]["comment"], "go");
    assert_eq!(env.lines("ran.log"), vec!["v1 Gi0/3"]);
}

/// A decision on the node where the job waits acts at once, not at the job's next check
/// (`--approval-check 10m` here): approved right after the request, while the job may still be
/// finishing its own look at it, and approved while it waits out its check.
#[tokio::test]
async fn a_decision_acts_at_once_on_its_node() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "30m"));
    let server = Server::start(&env, &["--approval-check", "10m"], &[]);
    let c = client();
    for (i, port) in ["Gi0/4", "Gi0/5"].into_iter().enumerate() {
        let event = send(&c, &server, &json!({"state": "down", "port": port})).await;
        let job = job_id(&event, "shut-port");
        if i == 0 {
            wait_status(&c, &server, None, &job, "awaiting_approval").await;
        } else {
            wait_request(&c, &server, None, &job).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (st, body) = call(
            &c,
            &server,
            Method::POST,
            &format!("/api/jobs/{job}/approve"),
            None,
            Some(json!({})),
        )
        .await;
        assert_eq!(st, 202, "{body}");
        assert_eq!(
            wait_lines(&env, "ran.log", i + 1, Duration::from_secs(20))[i],
            format!("v1 {port}")
        );
    }
}

/// A decision's comment is at most 4096 bytes (`MAX_COMMENT_BYTES`) by the API, the CLI and the
/// console: a longer one is refused with `400 comment_too_long` naming the limit, and nothing is
/// decided; one of exactly 4096 bytes is taken.
#[tokio::test]
async fn a_comment_over_4_kib_is_refused_naming_the_limit() {
    use common::console::{form, hidden};
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "30m"));
    let server = Server::start(
        &env,
        &["--admin-require-token", "--approval-check", "200ms"],
        &[("RULEHOOK_ADMIN_TOKEN", "the-admin".to_string())],
    );
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/7"})).await;
    let job = job_id(&event, "shut-port");
    wait_request(&c, &server, Some("the-admin"), &job).await;
    let long = "x".repeat(4097);
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{job}/reject"),
        Some("the-admin"),
        Some(json!({"comment": long})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"], "comment_too_long", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("4096 bytes"),
        "{body}"
    );
    // The CLI says what the service said.
    let out = cli(&["reject", &job, "--comment", &long, "--url", &server.base])
        .env("RULEHOOK_ADMIN_TOKEN", "the-admin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most 4096 bytes"), "{err}");
    // The console's form too.
    let html = c
        .get(server.url("/console/approvals"))
        .bearer_auth("the-admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = hidden(&html, "token");
    let resp = c
        .post(server.url("/console/decide"))
        .bearer_auth("the-admin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("job", &job),
            ("token", &token),
            ("decision", "reject"),
            ("comment", &long),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("4096 bytes"));
    // Nothing was decided: the job still waits, and a comment of exactly 4 KiB is taken.
    wait_status(&c, &server, Some("the-admin"), &job, "awaiting_approval").await;
    let (st, body) = call(
        &c,
        &server,
        Method::POST,
        &format!("/api/jobs/{job}/approve"),
        Some("the-admin"),
        Some(json!({"comment": "y".repeat(4096)})),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    assert_eq!(
        wait_lines(&env, "ran.log", 1, Duration::from_secs(20)),
        vec!["v1 Gi0/7"]
    );
}

/// `notify` runs once when approval is requested, with `approval.url` (under `--public-url`)
/// and the request's fields; a template that reads `approval` elsewhere is refused at load.
#[tokio::test]
async fn notify_tells_where_to_decide() {
    let (receiver, base) = Receiver::start(Duration::ZERO).await;
    let env = Env::new();
    ran_script(&env);
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval:
      timeout: 10m
      approvers: [ann]
      notify:
        - post_webhook:
            url: "{base}/chat"
            body: '{{"text": "approve {{{{ event.port }}}} ({{{{ approval.reason }}}}): {{{{ approval.url }}}}", "who": "{{{{ approval.approvers | join(",") }}}}"}}'
    actions:
      - run_script: {{ script: ran.sh, args: ["v1", "{{{{ event.port }}}}"] }}
"#
        ),
    );
    let server = Server::start(
        &env,
        &[
            "--approval-check",
            "200ms",
            "--public-url",
            "https://rulehook.example.net/",
        ],
        &[],
    );
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/4"})).await;
    let job = job_id(&event, "shut-port");
    assert!(receiver.wait_runs(1, Duration::from_secs(20)).await);
    let seen = receiver.seen();
    let (path, run, body) = &seen[0];
    assert_eq!(path, "/chat");
    assert_eq!(run, &format!("{job}:approval:0"));
    let body: Value = serde_json::from_str(body).unwrap();
    let encoded: String = form_urlencoded::byte_serialize(job.as_bytes()).collect();
    assert_eq!(
        body["text"],
        format!(
            "approve Gi0/4 (rule approval): https://rulehook.example.net/console/approvals?job={encoded}"
        )
    );
    assert_eq!(body["who"], "ann");
    // Looked at again and again while it waits: notified once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.seen().len(), 1);
    let req = wait_request(&c, &server, None, &job).await;
    assert_eq!(req["notified"][0]["ok"], true, "{req}");

    // `approval` outside `approval.notify` is a load error with its place.
    env.rulebook(
        "bad.yml",
        "rules:\n  - name: bad\n    actions:\n      - log: { message: '{{ approval.url }}' }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("bad.yml:4:") && text.contains("`approval` exists only"),
        "{text}"
    );
}

/// On JetStream the wait and the decision live in the shared store: a job asked for on one node
/// is approved through another, and runs once.
#[tokio::test]
async fn on_jetstream_any_node_sees_and_decides() {
    let nats = NatsPrefix::new();
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "10m"));
    let node = |env: &Env| {
        let mut args = nats.args("all");
        args.extend(["--approval-check".into(), "200ms".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let data = env.path(&format!("data-{}", uuid::Uuid::now_v7().simple()));
        Server::start_on(env, &data, &args, &[])
    };
    let mut a = node(&env);
    let c = client();
    let event = send(&c, &a, &json!({"state": "down", "port": "Gi0/5"})).await;
    let job = job_id(&event, "shut-port");
    wait_status(&c, &a, None, &job, "awaiting_approval").await;
    let b = node(&env);
    wait_status(&c, &b, None, &job, "awaiting_approval").await;
    wait_request(&c, &b, None, &job).await;
    // The node that asked is gone (kill -9); the other decides and runs it.
    a.kill9();
    let (st, body) = call(
        &c,
        &b,
        Method::POST,
        &format!("/api/jobs/{job}/approve"),
        None,
        Some(json!({"comment": "from node b"})),
    )
    .await;
    assert_eq!(st, 202, "{body}");
    let row = wait_status(&c, &b, None, &job, "done").await;
    assert_eq!(row["decision"]["comment"], "from node b", "{row}");
    assert_eq!(
        wait_lines(&env, "ran.log", 1, Duration::from_secs(30)),
        vec!["v1 Gi0/5"]
    );
}

/// The console's approvals page lists the waiting job with its event and the action that would
/// run (a credential masked); its buttons carry the form token; a viewer is refused, a forged
/// form is refused, an approver's Approve runs the job and the page then shows the decision.
#[tokio::test]
async fn the_console_page_lists_and_decides() {
    use common::console::{form, hidden};
    let env = Env::new();
    ran_script(&env);
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval: {{ timeout: 10m }}
    actions:
      - run_script: {{ script: ran.sh, args: ["v1", "{{{{ event.port }}}}"] }}
      - post_webhook: {{ url: "http://127.0.0.1:9/never", headers: {{ Authorization: "Bearer ${{env:CHAT_TOKEN}}" }}, body: '{{"p": "{{{{ event.port }}}}"}}' }}
"#
        ),
    );
    let viewer = add_user(&env, "vic", "viewer");
    let ann = add_user(&env, "ann", "approver");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--approval-check", "200ms"],
        &[
            ("RULEHOOK_ADMIN_TOKEN", "break-glass".to_string()),
            ("CHAT_TOKEN", "s3cret-chat-token".to_string()),
        ],
    );
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "eth9"})).await;
    let job = job_id(&event, "shut-port");
    wait_status(&c, &server, Some(&viewer), &job, "awaiting_approval").await;
    wait_request(&c, &server, Some(&viewer), &job).await;
    let page = |token: &str| {
        let req = c.get(server.url("/console/approvals")).bearer_auth(token);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            resp.text().await.unwrap()
        }
    };
    let event_page = |token: String| {
        let req = c
            .get(server.url(&format!("/console/events/{event}")))
            .bearer_auth(token);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let ev = event_page(viewer.clone()).await;
    assert!(ev.contains("Awaiting approval: rule approval"), "{ev}");
    assert!(ev.contains("approvals?job="), "{ev}");
    let html = page(&ann).await;
    assert!(html.contains(&job) && html.contains(&event), "{html}");
    assert!(html.contains("eth9"), "the rendered actions: {html}");
    assert!(
        !html.contains("s3cret-chat-token"),
        "credentials masked: {html}"
    );
    assert!(html.contains("value=\"approve\"") && html.contains("value=\"reject\""));
    // The comment field takes what the API takes (4 KiB): a browser cuts what is typed or
    // pasted at `maxlength`, silently; it was 500.
    assert!(
        html.contains(&format!(
            "name=\"comment\" maxlength=\"{}\"",
            rulehook::domain::MAX_COMMENT_BYTES
        )),
        "{html}"
    );
    // A viewer sees the page without buttons, and its POST is refused.
    let vhtml = page(&viewer).await;
    assert!(
        vhtml.contains(&job) && !vhtml.contains("value=\"approve\""),
        "{vhtml}"
    );
    let token = hidden(&html, "token");
    let post = |who: &str, body: String| {
        c.post(server.url("/console/decide"))
            .bearer_auth(who)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let resp = post(
        &viewer,
        form(&[("job", &job), ("token", &token), ("decision", "approve")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // A form without the console's token is refused.
    let resp = post(
        &ann,
        form(&[("job", &job), ("token", "forged"), ("decision", "approve")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(env.lines("ran.log").is_empty());
    let resp = post(
        &ann,
        form(&[
            ("job", &job),
            ("token", &token),
            ("decision", "approve"),
            ("comment", "looks right"),
        ]),
    )
    .await
    .unwrap();
    // Redirected (followed) to the job's approval, saying what was done.
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.url().as_str().contains("done=approved"),
        "{}",
        resp.url()
    );
    assert_eq!(
        wait_lines(&env, "ran.log", 1, Duration::from_secs(20)),
        vec!["v1 eth9"]
    );
    let encoded: String = form_urlencoded::byte_serialize(job.as_bytes()).collect();
    let resp = c
        .get(server.url(&format!("/console/approvals?job={encoded}")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("approved by ann at ") && html.contains("looks right"),
        "{html}"
    );
    assert!(!page(&ann).await.contains(&job), "no longer pending");
    let ev = event_page(viewer.clone()).await;
    assert!(ev.contains("approved by ann at "), "{ev}");
}

/// Jobs awaiting approval do no work: they do not count against `--max-pending`, even when
/// more of them wait than `--max-pending` allows.
#[tokio::test]
async fn awaiting_jobs_are_not_back_pressure() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "10m"));
    let server = Server::start(
        &env,
        &["--approval-check", "200ms", "--max-pending", "1"],
        &[],
    );
    let c = client();
    let first = send(&c, &server, &json!({"state": "down", "port": "p1"})).await;
    wait_status(
        &c,
        &server,
        None,
        &job_id(&first, "shut-port"),
        "awaiting_approval",
    )
    .await;
    // Seen by this node as only waiting once it has looked (it looks every 200 ms).
    // Five of them, past --max-pending 1: intake goes on (`send` asserts 202).
    for port in ["p2", "p3", "p4", "p5"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let next = send(&c, &server, &json!({"state": "down", "port": port})).await;
        wait_status(
            &c,
            &server,
            None,
            &job_id(&next, "shut-port"),
            "awaiting_approval",
        )
        .await;
    }
}

/// A `notify` that fails is shown with the request: in the API (`notified`) and on the console's
/// Approvals page (with its error), and the job still waits.
#[tokio::test]
async fn a_failed_notify_shows_on_the_approvals_page() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}rules:
  - name: shut-port
    condition: '$.state == "down"'
    approval:
      timeout: 10m
      notify:
        - post_webhook: {{ url: "http://127.0.0.1:9/chat", body: 'approve', retries: 0 }}
    actions:
      - run_script: {{ script: ran.sh, args: ["v1", "{{{{ event.port }}}}"] }}
"#
        ),
    );
    let server = Server::start(&env, &["--approval-check", "200ms"], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "Gi0/9"})).await;
    let job = job_id(&event, "shut-port");
    let v = wait_for(
        &c,
        &server,
        "/api/approvals",
        None,
        Duration::from_secs(30),
        |v| {
            v["approvals"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["job"] == job && r["notified"][0]["ok"] == false)
            })
        },
    )
    .await;
    let error = v["approvals"][0]["notified"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!error.is_empty(), "{v}");
    let page = c
        .get(server.url("/console/approvals"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Notified"), "{page}");
    assert!(
        page.contains("post_webhook: <span class=\"failed\">failed: "),
        "{page}"
    );
    // Approved, it runs; its own page no longer says that nothing has run.
    let resp = c
        .post(server.url(&format!("/api/jobs/{job}/approve")))
        .json(&json!({"comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    wait_lines(&env, "ran.log", 1, Duration::from_secs(20));
    let encoded: String = form_urlencoded::byte_serialize(job.as_bytes()).collect();
    let page = c
        .get(server.url(&format!("/console/approvals?job={encoded}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("approved by "), "{page}");
    assert!(!page.contains("Nothing has run yet"), "{page}");
}

/// An event whose job waits for a decision is `pending` in the event list, and says that it
/// waits for a person: `awaiting_approval` in `GET /api/events`, `awaiting approval` at the end
/// of its `rulehook events` row and beside its status on the console's events page. It was
/// only `pending`.
#[tokio::test]
async fn the_event_list_says_an_event_awaits_approval() {
    let env = Env::new();
    ran_script(&env);
    env.rulebook("r.yml", &waiting_book("v1", "10m"));
    let server = Server::start(&env, &["--approval-check", "200ms"], &[]);
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "eth9"})).await;
    wait_status(
        &c,
        &server,
        None,
        &job_id(&event, "shut-port"),
        "awaiting_approval",
    )
    .await;
    let (st, v) = call(&c, &server, Method::GET, "/api/events", None, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["events"][0]["id"], event.as_str(), "{v}");
    assert_eq!(v["events"][0]["status"], "pending", "{v}");
    assert_eq!(v["events"][0]["awaiting_approval"], 1, "{v}");
    let out = cli(&["events", "--url", &server.base]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(&event))
        .unwrap_or_default();
    assert!(row.ends_with("  awaiting approval"), "{text}");
    let html = c
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"<a class="note" href="/console/approvals">awaiting approval</a>"#),
        "{html}"
    );
}
