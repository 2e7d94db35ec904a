//! The envelope: `meta("…")` in conditions, `meta.headers`/`meta.peer` in templates, and
//! `check` refusing names a source kind does not offer.

mod common;

use std::time::Duration;

use common::{Env, Server, client, post};

fn github(env: &Env) {
    env.rulebook(
        "github.yml",
        r#"
sources:
  - { name: gh, kind: github, secret: gh-secret }
rules:
  - name: on-push
    sources: [gh]
    condition: 'meta("headers.x-github-event") == "push"'
    actions:
      - run_script: { script: record.sh, args: ["push", "{{ meta.headers['x-github-event'] }}", "{{ meta.peer }}", "{{ event.ref }}"] }
  - name: on-pull-request
    sources: [gh]
    condition: 'meta("headers.X-GitHub-Event") == "pull_request" && $.action == "opened"'
    actions:
      - run_script: { script: record.sh, args: ["pr", "{{ meta.headers['x-github-event'] }}", "{{ meta.peer }}", "{{ event.number }}"] }
  - name: from-loopback
    sources: [gh]
    condition: 'search(meta("peer"), "^127\\.") && meta("headers.x-github-event") == "ping"'
    actions:
      - run_script: { script: record.sh, args: ["ping", "{{ meta.peer }}"] }
"#,
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
}

async fn send(server: &Server, event: &str, body: &str) -> String {
    let mut headers = rulehook::verify::sign_like(
        "github",
        "gh-secret",
        body.as_bytes(),
        std::time::SystemTime::now(),
    )
    .expect("github signs");
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("x-github-event"));
    headers.push(("X-GitHub-Event".into(), event.into()));
    let (st, resp) = post(
        &client(),
        &server.url("/hooks/gh"),
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    resp["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn github_push_and_pull_request_told_apart_by_the_event_header() {
    let env = Env::new();
    github(&env);
    let server = Server::start(&env, &[], &[]);
    send(&server, "push", r#"{"ref":"refs/heads/main"}"#).await;
    send(&server, "pull_request", r#"{"action":"opened","number":7}"#).await;
    let closed = send(&server, "pull_request", r#"{"action":"closed","number":8}"#).await;
    send(&server, "ping", r#"{"zen":"Keep it logically awesome."}"#).await;
    let lines = env.wait_lines("runs.txt", 3, Duration::from_secs(30));
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "ping 127.0.0.1".to_string(),
            "pr pull_request 127.0.0.1 7".to_string(),
            "push push 127.0.0.1 refs/heads/main".to_string(),
        ],
        "{}",
        server.log_text()
    );
    // The closed pull request matched nothing.
    let detail: serde_json::Value = client()
        .get(server.url(&format!("/api/events/{closed}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["matches"], serde_json::json!([]), "{detail}");
    assert_eq!(
        detail["headers"]["x-github-event"], "pull_request",
        "{detail}"
    );
    assert_eq!(env.lines("runs.txt").len(), 3);
}

#[test]
fn check_refuses_envelope_names_a_source_kind_does_not_offer() {
    let env = Env::new();
    env.rulebook(
        "bad.yml",
        r#"
sources:
  - { name: gh, kind: github, secret: gh-secret }
  - { name: tele, kind: internal }
rules:
  - name: wrong-topic
    sources: [gh]
    condition: 'meta("topic") == "x"'
    actions:
      - log: { message: "x" }
  - name: internal-peer
    sources: [tele]
    condition: 'meta("peer") == "1.2.3.4"'
    actions:
      - log: { message: "x" }
  - name: nobody
    condition: 'meta("colour") == "red"'
    actions:
      - log: { message: "x" }
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("meta(\"topic\"): source `gh` (webhook) does not offer it; it offers: headers.<name>, peer"),
        "{err}"
    );
    assert!(
        err.contains("meta(\"peer\"): source `tele` (internal) does not offer it"),
        "{err}"
    );
    assert!(
        err.contains("meta(\"colour\"): no declared source offers it"),
        "{err}"
    );
    assert!(err.contains("bad.yml:8:16: meta(\"topic\")"), "{err}");

    env.rulebook(
        "bad.yml",
        r#"
sources:
  - { name: gh, kind: github, secret: gh-secret }
rules:
  - name: fine
    condition: 'meta("headers.x-github-event") == "push" || meta("peer") == "::1"'
    actions:
      - log: { message: "x" }
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
