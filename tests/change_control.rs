//! Change control against the real binary: shadow mode (docs/change-control.md).

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, client, post_signed};
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

async fn get(c: &reqwest::Client, server: &Server, path: &str) -> Value {
    let resp = c.get(server.url(path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// Polls `path` until `f` holds; panics with the last answer after `timeout`.
async fn wait_for<F: Fn(&Value) -> bool>(
    c: &reqwest::Client,
    server: &Server,
    path: &str,
    timeout: Duration,
    f: F,
) -> Value {
    let start = Instant::now();
    loop {
        let v = get(c, server, path).await;
        if f(&v) {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out waiting on {path}; last answer: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
