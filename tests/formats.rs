//! Every sender's body: the shipped EEM (bearer, text), Alertmanager (bearer, JSON), GitHub push
//! (JSON and form-encoded) and GitLab merge request examples, sent signed to the real server
//! with the content types those senders use; and what the history keeps of a text body.

mod common;

use std::time::Duration;

use common::{Env, Server, client, repo_path};
use rulehook::verify::sign_like;

fn event(name: &str) -> Vec<u8> {
    std::fs::read(repo_path(&format!("rulebooks/events/{name}"))).expect("example event")
}

/// Posts `body` signed like `kind`, with `content_type` and extra headers.
async fn send(
    c: &reqwest::Client,
    url: &str,
    kind: &str,
    secret: &str,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let signed = sign_like(kind, secret, body, std::time::SystemTime::now()).expect("kind");
    let mut req = c.post(url).body(body.to_vec());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in signed {
        if !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(&k)) {
            req = req.header(k, v);
        }
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// An env serving the repository's shipped rulebooks, scripts and templates.
fn shipped() -> Env {
    let env = Env::new();
    for dir in ["rulebooks", "scripts", "templates"] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap().flatten() {
            let p = entry.path();
            if p.is_file() {
                let to = env.path(dir).join(p.file_name().unwrap());
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
    env
}

/// The log once it holds `needle`; panics with the log after 10 s.
fn wait_log(server: &Server, needle: &str) -> String {
    for _ in 0..200 {
        let log = server.log_text();
        if log.contains(needle) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("`{needle}` never reached the log:\n{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_senders_body_reaches_its_rule() {
    let env = shipped();
    let out = |n: &str| env.path(n).display().to_string();
    let server = Server::start(
        &env,
        &[],
        &[
            ("EEM_LOG", out("eem.log")),
            ("ALERT_LOG", out("alerts.log")),
        ],
    );
    let c = client();

    // Cisco EEM: a line of text, sent the way `curl -d` and Tcl's http package send it
    // (application/x-www-form-urlencoded), with a device header the rule's template uses.
    let (st, resp) = send(
        &c,
        &server.url("/hooks/eem"),
        "bearer",
        "change-me-eem",
        Some("application/x-www-form-urlencoded"),
        &[("X-Device", "atl1-edge3")],
        &event("eem-link-down.txt"),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let eem = env.wait_lines("eem.log", 1, Duration::from_secs(10));
    assert_eq!(eem.len(), 1, "{eem:?}");
    assert!(
        eem[0].contains("device=atl1-edge3 interface=GigabitEthernet0/1 state=down"),
        "{eem:?}"
    );

    // Alertmanager: bearer, JSON.
    let (st, resp) = send(
        &c,
        &server.url("/hooks/alertmanager"),
        "bearer",
        "change-me-alertmanager",
        Some("application/json"),
        &[("User-Agent", "Alertmanager/0.28.1")],
        &event("alertmanager-firing.json"),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let alerts = env.wait_lines("alerts.log", 1, Duration::from_secs(10));
    assert!(
        alerts[0].contains("alert=InstanceDown instance=10.20.0.5:9100"),
        "{alerts:?}"
    );
    let log = wait_log(&server, "alert(s) firing");
    assert!(
        log.contains("1 alert(s) firing for InstanceDown: Instance 10.20.0.5:9100 down"),
        "{log}"
    );

    // GitHub push as JSON, then the same push form-encoded (`payload=<json>`).
    let push = event("github-push.json");
    let (st, resp) = send(
        &c,
        &server.url("/hooks/github"),
        "github",
        "change-me-github-hook",
        Some("application/json"),
        &[("X-GitHub-Event", "push")],
        &push,
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let log = wait_log(&server, "GitHub push");
    assert!(
        log.contains("GitHub push: ada-netops pushed 1 commit(s) to acme/netops (7c2f9e1)"),
        "{log}"
    );
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&push).unwrap())
        .finish();
    let (st, resp) = send(
        &c,
        &server.url("/hooks/github"),
        "github",
        "change-me-github-hook",
        Some("application/x-www-form-urlencoded"),
        &[("X-GitHub-Event", "push")],
        form.as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let form_id = resp["id"].as_str().unwrap().to_string();

    // GitLab merge request.
    let (st, resp) = send(
        &c,
        &server.url("/hooks/gitlab"),
        "gitlab",
        "change-me-gitlab-hook",
        Some("application/json"),
        &[("X-Gitlab-Event", "Merge Request Hook")],
        &event("gitlab-merge-request.json"),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let log = wait_log(&server, "GitLab MR");
    assert!(
        log.contains(
            "GitLab MR !42 \"Raise OSPF cost on atl1 uplinks\" merged into main of acme/netops by brouter"
        ),
        "{log}"
    );

    // Both GitHub deliveries matched the same rule.
    for _ in 0..100 {
        if server.log_text().matches("GitHub push:").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.log_text().matches("GitHub push:").count(), 2);
    let detail: serde_json::Value = c
        .get(server.url(&format!("/api/events/{form_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["body"]["ref"], "refs/heads/main", "{detail}");
    assert!(
        !server.log_text().contains("change-me-"),
        "a secret reached the log"
    );
}

/// A body nested deeper than 64 levels is refused with `400 too_deep` and counted; one of 127
/// levels used to be stored, after which `whatif --url` failed for its whole period (its page
/// of stored events could not be read) and `rulehook event` showed an empty event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_nested_too_deep_is_refused_with_a_reason() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: json, kind: bearer, secret: tok }\nrules: []\n",
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let url = server.url("/hooks/json");
    let deep = format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127));
    let (st, resp) = send(&c, &url, "bearer", "tok", None, &[], deep.as_bytes()).await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (400, Some("too_deep")),
        "{resp}"
    );
    assert!(
        resp["message"].as_str().unwrap_or("").contains("64 levels"),
        "{resp}"
    );
    let fine = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let (st, resp) = send(&c, &url, "bearer", "tok", None, &[], fine.as_bytes()).await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap();
    // Read back whole by a JSON reader with serde_json's limits.
    let detail: serde_json::Value = c
        .get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("the event's detail reads back");
    assert_eq!(detail["id"], id);
    let metrics = server.metrics().await;
    assert!(metrics.contains(r#"reason="too_deep"} 1"#), "{metrics}");
}

/// A compressed body (`Content-Encoding: gzip`) is refused with `415
/// unsupported_content_encoding`, saying to send it uncompressed; it used to be verified and
/// read as JSON, answered `400 invalid_json … at line 1 column 1`, which said nothing of why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_is_refused_saying_why() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: json, kind: bearer, secret: tok }\nrules: []\n",
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let url = server.url("/hooks/json");
    let gzip = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
    let (st, resp) = send(
        &c,
        &url,
        "bearer",
        "tok",
        Some("application/json"),
        &[("content-encoding", "gzip")],
        &gzip,
    )
    .await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (415, Some("unsupported_content_encoding")),
        "{resp}"
    );
    let message = resp["message"].as_str().unwrap_or("");
    assert!(
        message.contains("`gzip`") && message.contains("uncompressed"),
        "{resp}"
    );
    // `identity` is no encoding at all.
    let (st, resp) = send(
        &c,
        &url,
        "bearer",
        "tok",
        None,
        &[("content-encoding", "identity")],
        br#"{"a": 1}"#,
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"reason="unsupported_content_encoding"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_runs_on_the_raw_bytes_before_decoding() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"
sources:
  - name: text
    kind: bearer
    secret: tok
    format: text
  - name: json
    kind: bearer
    secret: tok
  - name: auto
    kind: gitlab
    secret: key
    format: auto
rules:
  - name: flap
    sources: [text]
    condition: 'search($.text, "changed state to (up|down)")'
    actions:
      - log: { message: "flap: {{ event.text }}" }
  - name: anything
    sources: [auto]
    actions:
      - log: { message: "auto: {{ event | tojson }}" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let line = b"Interface Gi0/1, changed state to up";

    // Wrong token: refused before the body is looked at.
    let (st, resp) = send(
        &c,
        &server.url("/hooks/text"),
        "bearer",
        "nope",
        None,
        &[],
        line,
    )
    .await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (401, Some("invalid_signature"))
    );

    // A JSON source refuses text with 400 and says why; a text source takes it.
    let (st, resp) = send(
        &c,
        &server.url("/hooks/json"),
        "bearer",
        "tok",
        None,
        &[],
        line,
    )
    .await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (400, Some("invalid_json")),
        "{resp}"
    );
    let (st, resp) = send(
        &c,
        &server.url("/hooks/text"),
        "bearer",
        "tok",
        Some("text/plain"),
        &[],
        &[0xff, 0xfe, 0x00],
    )
    .await;
    assert_eq!(
        (st, resp["error"].as_str()),
        (400, Some("invalid_text")),
        "{resp}"
    );
    let (st, resp) = send(
        &c,
        &server.url("/hooks/text"),
        "bearer",
        "tok",
        None,
        &[],
        line,
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    let log = wait_log(&server, "flap:");
    assert!(
        log.contains("flap: Interface Gi0/1, changed state to up"),
        "{log}"
    );

    // A trailing slash reaches the same source (EEM configs often have one).
    let (st, resp) = send(
        &c,
        &server.url("/hooks/text/"),
        "bearer",
        "tok",
        None,
        &[],
        b"Interface Gi0/2, changed state to down",
    )
    .await;
    assert_eq!(st, 202, "{resp}");

    // The history keeps the event as rules saw it; a replay matches again.
    let detail: serde_json::Value = c
        .get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["body"],
        serde_json::json!({"text": "Interface Gi0/1, changed state to up"})
    );
    let replay: serde_json::Value = c
        .post(server.url(&format!("/api/events/{id}/replay")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["matched"], 1, "{replay}");

    // auto: a form without JSON payload is an object of its fields.
    let (st, _) = send(
        &c,
        &server.url("/hooks/auto"),
        "gitlab",
        "key",
        Some("application/x-www-form-urlencoded"),
        &[],
        b"device=atl1&state=down",
    )
    .await;
    assert_eq!(st, 202);
    let log = wait_log(&server, "auto:");
    assert!(
        log.contains(r#"auto: {"device": "atl1", "state": "down"}"#),
        "{log}"
    );
}

#[test]
fn an_unknown_format_is_a_load_error_at_its_line() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - name: s\n    kind: bearer\n    secret: x\n    format: xml\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("t.yml:5:13: format `xml`: expected one of: json, text, form, auto"),
        "{err}"
    );
}

#[test]
fn test_decodes_the_event_as_its_source_does() {
    let env = shipped();
    let out = env
        .cmd(&[
            "test",
            "--event",
            repo_path("rulebooks/events/eem-link-down.txt")
                .to_str()
                .unwrap(),
            "--source",
            "eem",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("MATCH    eem/interface-down"), "{text}");
}
