//! Change control against the real binary: shadow mode (docs/change-control.md).

mod common;

use std::time::Duration;

use common::{Env, Server, client, get, post_signed, wait_for};
use serde_json::{Value, json};

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n  - { name: chain, kind: internal }\n";

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

/// The event's detail once none of its jobs is pending.
async fn settled(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    wait_for(
        c,
        server,
        &format!("/api/events/{id}"),
        Duration::from_secs(20),
        |d| {
            d["matches"]
                .as_array()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|j| j["status"] != "pending"))
        },
    )
    .await
}

fn job<'a>(detail: &'a Value, rule: &str) -> &'a Value {
    detail["matches"]
        .as_array()
        .and_then(|m| m.iter().find(|j| j["rule"] == rule))
        .unwrap_or_else(|| panic!("no job of `{rule}`: {detail}"))
}

fn book(mode_line: &str) -> String {
    format!(
        r#"{SRC}{mode_line}
rules:
  - name: shut-port
    condition: '$.state == "down"'
    throttle: {{ once_within: 1h, group_by: ['$.port'] }}
    actions:
      - run_script: {{ script: fix.sh, args: ["shut {{{{ event.port }}}}"] }}
      - post_event: {{ source: chain, body: '{{"followup": "{{{{ event.port }}}}"}}' }}
  - name: audit-log
    mode: live
    condition: '$.state == "down"'
    actions:
      - run_script: {{ script: fix.sh, args: ["logged {{{{ event.port }}}}"] }}
"#
    )
}

/// `mode: shadow` as the rulebook's default: the rule matches, throttles and renders as live,
/// nothing runs; the history shows "shadow" and the rendered action. A rule with `mode: live`
/// in the same rulebook runs. Switching the one line to `live` makes the next event run.
#[tokio::test]
async fn shadow_mode_matches_throttles_and_renders_but_runs_nothing() {
    let env = Env::new();
    env.script("fix.sh", "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/ran.txt\"\n");
    env.rulebook("net.yml", &book("mode: shadow"));
    let server = Server::start(&env, &[], &[]);
    let c = client();

    let first = send(&c, &server, &json!({"state": "down", "port": "ge-0/0/1"})).await;
    let d = settled(&c, &server, &first).await;
    let shadow = job(&d, "shut-port");
    assert_eq!(shadow["status"], "done", "{d}");
    assert!(
        shadow["error"].as_str().unwrap_or("").starts_with("shadow"),
        "the job says it was shadow: {d}"
    );
    let attempts = shadow["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "both actions recorded: {d}");
    assert!(
        attempts[0]["rendered"]
            .to_string()
            .contains("shut ge-0/0/1"),
        "the rendered action it would have run: {d}"
    );
    assert_eq!(attempts[0]["result"]["shadow"], true, "{d}");
    assert_eq!(attempts[1]["action"], "post_event", "{d}");
    // The live rule ran; the shadow one ran nothing (its post_event emitted nothing either).
    assert_eq!(job(&d, "audit-log")["status"], "done", "{d}");
    assert_eq!(env.lines("ran.txt"), vec!["logged ge-0/0/1"]);
    let followups = get(&c, &server, "/api/events?limit=100").await;
    assert_eq!(
        followups["events"].as_array().unwrap().len(),
        1,
        "no event emitted by the shadow post_event: {followups}"
    );

    // Throttled as live: the same port again within the hour does not match.
    let again = send(&c, &server, &json!({"state": "down", "port": "ge-0/0/1"})).await;
    let d = settled(&c, &server, &again).await;
    assert!(
        d["matches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["rule"] != "shut-port"),
        "throttled in shadow as in live: {d}"
    );

    // The console shows the badge and the action it would have run.
    let page = c
        .get(server.url(&format!("/console/events/{first}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("status shadow"), "{page}");
    assert!(page.contains("Would have run"), "{page}");

    // One line to go live.
    env.rulebook("net.yml", &book("mode: live"));
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;
    let live = send(&c, &server, &json!({"state": "down", "port": "ge-0/0/2"})).await;
    let d = settled(&c, &server, &live).await;
    let j = job(&d, "shut-port");
    assert_eq!(j["status"], "done", "{d}");
    assert!(j["error"].is_null(), "a live job has no shadow note: {d}");
    let ran = env.wait_lines("ran.txt", 3, Duration::from_secs(10));
    assert!(ran.contains(&"shut ge-0/0/2".to_string()), "{ran:?}");
    // The port the shadow rule throttled runs too: shadow throttle windows are kept apart.
    let first_live = send(&c, &server, &json!({"state": "down", "port": "ge-0/0/1"})).await;
    let d = settled(&c, &server, &first_live).await;
    assert_eq!(job(&d, "shut-port")["status"], "done", "not throttled: {d}");
    let ran = env.wait_lines("ran.txt", 5, Duration::from_secs(10));
    assert!(ran.contains(&"shut ge-0/0/1".to_string()), "{ran:?}");
}

/// A wrong mode is an error that names the file, line and what to write.
#[test]
fn a_wrong_mode_is_refused_with_its_place() {
    let env = Env::new();
    env.script("fix.sh", "#!/bin/sh\n");
    env.rulebook("net.yml", &book("mode: shadwo"));
    let out = env.cmd(&["check"]).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("net.yml:4"), "{text}");
    assert!(text.contains("mode `shadwo`"), "{text}");
}

// People and roles ─────────────────────────────────────────────────────────────────────────

/// `rulehook users add NAME --role ROLE --data DIR`: the token is the last line of stdout.
fn add_user(env: &Env, name: &str, role: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["users", "add", name, "--role", role, "--data"])
        .arg(env.path("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap().trim().to_string()
}

fn users_cmd(env: &Env, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .arg("users")
        .args(args)
        .arg("--data")
        .arg(env.path("data"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn call(
    c: &reqwest::Client,
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = c.request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Each role against each admin endpoint and console button; the admin token stays the
/// break-glass admin; a removed user's token stops working; every write is in `/api/audit`.
#[tokio::test]
async fn roles_decide_who_may_read_act_and_see_the_audit_trail() {
    use reqwest::Method;
    let env = Env::new();
    env.script("fix.sh", "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/ran.txt\"\n");
    env.rulebook("net.yml", &book("mode: live"));
    let viewer = add_user(&env, "vera", "viewer");
    let operator = add_user(&env, "otto", "operator");
    let approver = add_user(&env, "anna", "approver");
    let (ok, list) = users_cmd(&env, &["list"]);
    assert!(
        ok && list.contains("vera") && list.contains("operator"),
        "{list}"
    );
    assert!(!list.contains(&viewer), "tokens are never listed: {list}");
    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", "break-glass".to_string())],
    );
    let c = client();
    let event = send(&c, &server, &json!({"state": "down", "port": "p1"})).await;

    // Nobody known: 401 everywhere, even from loopback.
    let (st, _) = call(&c, &server, Method::GET, "/api/events", None).await;
    assert_eq!(st, 401);
    let (st, _) = call(&c, &server, Method::GET, "/api/events", Some("rh_forged")).await;
    assert_eq!(st, 401);

    let reads = [
        "/api/events".to_string(),
        format!("/api/events/{event}"),
        "/api/jobs".to_string(),
        "/api/status".to_string(),
        "/api/audit".to_string(),
        "/api/windows".to_string(),
    ];
    let replay = format!("/api/events/{event}/replay");
    let rerun = "/api/jobs/no-such-job/rerun".to_string();
    for (token, name) in [
        (&viewer, "viewer"),
        (&operator, "operator"),
        (&approver, "approver"),
        (&"break-glass".to_string(), "admin"),
    ] {
        for path in &reads {
            let (st, body) = call(&c, &server, Method::GET, path, Some(token)).await;
            assert_eq!(st, 200, "{name} reads {path}: {body}");
        }
        let (st, body) = call(&c, &server, Method::POST, &replay, Some(token)).await;
        let (st2, body2) = call(&c, &server, Method::POST, &rerun, Some(token)).await;
        if name == "viewer" {
            assert_eq!(st, 403, "{body}");
            assert_eq!(body["error"], "forbidden_role", "{body}");
            assert!(
                body["message"].as_str().unwrap().contains("`operator`"),
                "names the role needed: {body}"
            );
            assert_eq!(st2, 403, "{body2}");
        } else {
            assert_eq!(st, 202, "{name} replays: {body}");
            assert_eq!(
                st2, 404,
                "{name} may re-run (there is no such job): {body2}"
            );
        }
    }

    // Console buttons: the viewer sees the page but its replay button is refused.
    let page = c
        .get(server.url(&format!("/console/events/{event}")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let page = page.text().await.unwrap();
    assert!(
        !page.contains("id=\"replay\""),
        "no replay button for a viewer: {page}"
    );
    let op_page = c
        .get(server.url(&format!("/console/events/{event}")))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(op_page.contains("id=\"replay\""), "{op_page}");
    // The form token is the console's, the same for everyone let in: a viewer who copies it
    // from an operator's page is still refused.
    let form_token = op_page
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no form token in {page}"))
        .to_string();
    for (token, want) in [(&viewer, 403), (&operator, 303)] {
        let resp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(server.url("/console/replay"))
            .bearer_auth(token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("event={event}&token={form_token}"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, want, "{text}");
        if want == 403 {
            assert!(text.contains("operator"), "{text}");
        }
    }

    // The audit trail: every write, newest first, with who and what.
    let (st, audit) = call(&c, &server, Method::GET, "/api/audit", Some(&viewer)).await;
    assert_eq!(st, 200);
    let records = audit["audit"].as_array().unwrap();
    let who: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            let who = r["who"].as_str().unwrap();
            let who = if who.starts_with("cli@") { "cli@" } else { who };
            (who, r["what"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        who,
        vec![
            ("otto", "replay"),
            ("admin-token", "replay"),
            ("anna", "replay"),
            ("otto", "replay"),
            // `rulehook users add` before the service started: the command line's changes.
            ("cli@", "user.add"),
            ("cli@", "user.add"),
            ("cli@", "user.add"),
        ],
        "{audit}"
    );
    assert_eq!(records[0]["target"], event.as_str(), "{audit}");
    assert_eq!(records[0]["role"], "operator", "{audit}");
    assert!(records[0]["at"].as_str().unwrap().ends_with('Z'), "{audit}");

    // The console signs a user in with the user's token; the sign-in is audited.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirect
        .get(server.url("/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let login_token = login
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no login token in {login}"))
        .to_string();
    let resp = no_redirect
        .post(server.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "token={login_token}&admin_token={approver}&next=/console/rules"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303, "signed in");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let page = no_redirect
        .get(server.url("/console/rules"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200, "the session works");
    let (_, audit) = call(
        &c,
        &server,
        Method::GET,
        "/api/audit?limit=1",
        Some(&viewer),
    )
    .await;
    assert_eq!(
        (
            audit["audit"][0]["who"].clone(),
            audit["audit"][0]["what"].clone()
        ),
        (json!("anna"), json!("login")),
        "{audit}"
    );
    // Removed, the user's session ends too.
    let (ok, text) = users_cmd(&env, &["remove", "anna"]);
    assert!(ok, "{text}");
    let page = no_redirect
        .get(server.url("/console/rules"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 303, "back to the login form");

    // A removed user's token stops working at once.
    let (ok, text) = users_cmd(&env, &["remove", "otto"]);
    assert!(ok, "{text}");
    let (st, _) = call(&c, &server, Method::GET, "/api/events", Some(&operator)).await;
    assert_eq!(st, 401);
    let (ok, text) = users_cmd(&env, &["add", "vera", "--role", "admin"]);
    assert!(!ok && text.contains("exists"), "{text}");
}

/// A re-run on a rule whose mode changed since the match says so: the API's `mode_changed`
/// and `runs`, and the CLI's line.
#[tokio::test]
async fn a_rerun_says_when_the_rule_changed_mode() {
    let env = Env::new();
    env.script("fail.sh", "#!/bin/sh\nexit 3\n");
    env.script("fix.sh", "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/ran.txt\"\n");
    let rules = |mode: &str, script: &str| {
        format!(
            "{SRC}rules:\n  - name: fixme\n    mode: {mode}\n    actions:\n      - run_script: {{ script: {script}, args: [x], retries: 0 }}\n"
        )
    };
    env.rulebook("net.yml", &rules("live", "fail.sh"));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"state": "down"})).await;
    let d = settled(&c, &server, &id).await;
    let j = job(&d, "fixme");
    assert_eq!(j["status"], "failed", "{d}");
    let job_id = j["id"].as_str().unwrap().to_string();
    env.rulebook("net.yml", &rules("shadow", "fix.sh"));
    wait_for(&c, &server, "/api/status", Duration::from_secs(10), |s| {
        s["reload"]["reloads"].as_u64() >= Some(1)
    })
    .await;
    let resp = c
        .post(server.url(&format!("/api/jobs/{job_id}/rerun")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["mode_changed"], "shadow", "{v}");
    assert!(
        v["runs"]
            .as_str()
            .unwrap_or_default()
            .ends_with("and it is now in shadow mode (it matched live): its actions will not run"),
        "{v}"
    );
    let d = settled(&c, &server, &id).await;
    assert!(
        job(&d, "fixme")["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("shadow"),
        "{d}"
    );
    assert!(env.lines("ran.txt").is_empty(), "nothing ran in shadow");
}

/// `rulehook event ID` on a shadow job shows what would have run (the action as rendered), as
/// the console and `rulehook test` do; it printed `result {"shadow":true}` and nothing of the
/// action, so the history on the command line could not be read for what shadow mode is for.
#[tokio::test]
async fn the_event_command_shows_what_a_shadow_rule_would_have_run() {
    let env = Env::new();
    env.script("fix.sh", "#!/bin/sh\nexit 0\n");
    env.rulebook(
        "a.yml",
        &format!("{SRC}rules:\n  - name: fix\n    mode: shadow\n    sources: [in]\n    actions:\n      - run_script: {{ script: fix.sh, args: [\"{{{{ event.device }}}}\", \"--port\", \"{{{{ event.port }}}}\"] }}\n"),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(
        &c,
        &server,
        &json!({"device": "sw-shadow-7", "port": "Gi0/9"}),
    )
    .await;
    settled(&c, &server, &id).await;
    let bin = std::env::var("RULEHOOK_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rulehook").to_string());
    let out = std::process::Command::new(bin)
        .args(["event", &id, "--url", &server.url("")])
        .env_remove("RULEHOOK_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("shadow: nothing ran"), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("would run"))
        .unwrap_or_else(|| panic!("no `would run` line in\n{text}"));
    assert!(
        line.contains(r#""args":["sw-shadow-7","--port","Gi0/9"]"#),
        "{line}"
    );
    // Its timeout as `rulehook test` prints it (the default, 60 s), not milliseconds.
    assert!(line.contains(r#""timeout":"1m""#), "{line}");
}

/// A replay or a re-run is written to the audit trail before it acts: when the trail cannot be
/// written (here: its stored list made unreadable while the service was stopped), the request
/// is refused with 503 and nothing is replayed or re-run. It used to act first, then fail to
/// audit: the write happened with no record.
#[tokio::test]
async fn a_replay_or_rerun_the_trail_cannot_take_does_nothing() {
    let env = Env::new();
    env.script("fail.sh", "#!/bin/sh\nexit 3\n");
    env.rulebook(
        "net.yml",
        &format!(
            "{SRC}rules:\n  - name: fixme\n    actions:\n      - run_script: {{ script: fail.sh, args: [x], retries: 0 }}\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"state": "down"})).await;
    let d = settled(&c, &server, &id).await;
    let j = job(&d, "fixme");
    assert_eq!(j["status"], "failed", "{d}");
    let job_id = j["id"].as_str().unwrap().to_string();
    // The journal is the running service's alone: the trail is changed while it is stopped.
    let trail = |value: Option<&str>| {
        let db = rusqlite::Connection::open(env.path("data/journal.db")).unwrap();
        match value {
            Some(v) => db.execute(
                "INSERT INTO state (key, value, revision) VALUES ('rulehook/audit', ?1, 1000000)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [v],
            ),
            None => db.execute("DELETE FROM state WHERE key = 'rulehook/audit'", []),
        }
        .unwrap();
    };
    server.terminate();
    trail(Some("not an audit trail"));
    let mut server = Server::start(&env, &[], &[]);
    let post = |server: &Server, path: String| c.post(server.url(&path)).send();
    let resp = post(&server, format!("/api/events/{id}/replay"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let events = get(&c, &server, "/api/events").await;
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "nothing replayed: {events}"
    );
    let resp = post(&server, format!("/api/jobs/{job_id}/rerun"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let d = get(&c, &server, &format!("/api/events/{id}")).await;
    let j = job(&d, "fixme");
    assert_eq!(j["status"], "failed", "not re-run: {d}");
    assert_eq!(j["attempts"].as_array().map(Vec::len), Some(1), "{d}");
    // Once the trail can be written again, both act and both are recorded.
    server.terminate();
    trail(None);
    let server = Server::start(&env, &[], &[]);
    let resp = post(&server, format!("/api/events/{id}/replay"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let resp = post(&server, format!("/api/jobs/{job_id}/rerun"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let audit = get(&c, &server, "/api/audit").await;
    let what: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["what"].as_str())
        .collect();
    assert_eq!(what, ["rerun", "replay"], "{audit}");
}
