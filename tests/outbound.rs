//! Outbound actions against local servers that answer as the real APIs document.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Env, Server, client, post_signed};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
    /// When the request arrived (to measure the gap between retries).
    at: std::time::Instant,
}

type Replies = HashMap<(String, String), VecDeque<(u16, Vec<(String, String)>, String)>>;

#[derive(Clone, Default)]
struct Mock {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<Replies>>,
}

impl Mock {
    async fn start() -> (Mock, String) {
        let mock = Mock::default();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (mock, format!("http://{addr}"))
    }
    fn reply(&self, method: &str, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.replies
            .lock()
            .unwrap()
            .entry((method.into(), path.into()))
            .or_default()
            .push_back((
                status,
                headers
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                body.into(),
            ));
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    async fn wait(&self, n: usize) -> Vec<Seen> {
        for _ in 0..150 {
            if self.seen().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen()
    }
}

async fn record(
    State(m): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    m.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: std::time::Instant::now(),
    });
    let next = m
        .replies
        .lock()
        .unwrap()
        .get_mut(&(method.to_string(), path))
        .and_then(VecDeque::pop_front);
    let (status, hs, body) = next.unwrap_or((200, vec![], "{}".into()));
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    for (k, v) in hs {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

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

async fn detail(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    c.get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The event's detail once it has jobs and none is pending; panics after 10 s.
async fn settled(c: &reqwest::Client, server: &Server, id: &str) -> Value {
    for _ in 0..200 {
        let d = detail(c, server, id).await;
        if d["matches"]
            .as_array()
            .is_some_and(|m| !m.is_empty() && m.iter().all(|j| j["status"] != "pending"))
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} did not settle: {}", detail(c, server, id).await);
}

#[tokio::test]
async fn post_webhook_retries_honour_retry_after_and_keep_the_idempotency_key() {
    let (mock, url) = Mock::start().await;
    mock.reply(
        "POST",
        "/limited",
        429,
        &[("retry-after", "3")],
        "slow down",
    );
    mock.reply("POST", "/flaky", 500, &[], "oops");
    mock.reply("POST", "/flaky", 502, &[], "oops");
    mock.reply(
        "POST",
        "/bad",
        422,
        &[],
        r#"{"message":"Validation Failed"}"#,
    );
    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}
rules:
  - name: limited
    condition: '$.to == "limited"'
    actions:
      - post_webhook:
          url: "{url}/limited"
          headers: {{ X-Device: "{{{{ event.device }}}}", Authorization: "Bearer ${{env:OUT_TOKEN}}" }}
          body: '{{"device": {{{{ event.device | tojson }}}}, "id": "{{{{ meta.id }}}}"}}'
  - name: flaky
    condition: '$.to == "flaky"'
    actions:
      - post_webhook: {{ url: "{url}/flaky", body: '{{"n": 1}}' }}
  - name: bad
    condition: '$.to == "bad"'
    actions:
      - post_webhook: {{ url: "{url}/bad", body: '{{"n": 2}}' }}
    on_failure:
      - post_webhook:
          url: "{url}/failed"
          body: '{{"action": "{{{{ failure.action }}}}", "attempts": {{{{ failure.attempts }}}}, "status": {{{{ failure.status }}}}}}'
"#
        ),
    );
    let server = Server::start(&env, &[], &[("OUT_TOKEN", "out-secret-1".to_string())]);
    let c = client();
    let id = send(
        &c,
        &server,
        &json!({"to": "limited", "device": "atl1-edge1"}),
    )
    .await;
    let d = settled(&c, &server, &id).await;
    let hits: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.path == "/limited")
        .collect();
    assert_eq!(hits.len(), 2, "{hits:?}");
    // The service asked for 3 s; rulehook's own first backoff is at most 1.5 s.
    let gap = hits[1].at.duration_since(hits[0].at);
    assert!(
        gap >= Duration::from_millis(2900),
        "the retry came {gap:?} after a 429 with Retry-After: 3"
    );
    let run_id = format!("{id}:limited:0");
    for h in &hits {
        assert_eq!(h.headers["idempotency-key"], run_id);
        assert!(h.headers["user-agent"].starts_with("rulehook/"));
        assert_eq!(h.headers["x-device"], "atl1-edge1");
        assert_eq!(h.headers["authorization"], "Bearer out-secret-1");
        assert_eq!(h.headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&h.body).unwrap(),
            json!({"device": "atl1-edge1", "id": id})
        );
    }
    let attempts = d["matches"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{d}");
    assert_eq!(attempts[0]["http_status"], 429);
    assert_eq!(attempts[1]["http_status"], 200);
    let history = d.to_string();
    assert!(
        !history.contains("out-secret-1"),
        "credential in the history: {history}"
    );

    let id = send(&c, &server, &json!({"to": "flaky"})).await;
    let d = settled(&c, &server, &id).await;
    assert_eq!(d["matches"][0]["status"], "done");
    assert_eq!(mock.seen().iter().filter(|s| s.path == "/flaky").count(), 3);

    let id = send(&c, &server, &json!({"to": "bad"})).await;
    let d = settled(&c, &server, &id).await;
    assert_eq!(d["matches"][0]["status"], "failed", "{d}");
    assert_eq!(
        mock.seen().iter().filter(|s| s.path == "/bad").count(),
        1,
        "422 is not retried"
    );
    let failed: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.path == "/failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&failed[0].body).unwrap(),
        json!({"action": "post_webhook", "attempts": 1, "status": 422})
    );
    assert!(
        !server.log_text().contains("out-secret-1"),
        "credential in the log"
    );
}

/// A value written into a `url` cannot move the request, with the credentials in its headers,
/// to a host the rule does not name: `https://hooks.invalid{{ event.path }}` with a path of
/// `@127.0.0.1:PORT/…` went to 127.0.0.1:PORT (userinfo), bearer token and all. Now the action
/// fails to render, visibly; a path that keeps the host still works.
#[tokio::test]
async fn event_data_cannot_change_the_host_of_a_url() {
    let (mock, url) = Mock::start().await;
    let authority = url.trim_start_matches("http://").to_string();
    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}
rules:
  - name: named-host
    condition: '$.to == "named"'
    actions:
      - post_webhook:
          url: "http://hooks.invalid{{{{ event.path }}}}"
          headers: {{ Authorization: "Bearer ${{env:OUT_TOKEN}}" }}
          retries: 0
  - name: path-only
    condition: '$.to == "path"'
    actions:
      - post_webhook: {{ url: "{url}{{{{ event.path }}}}", retries: 0 }}
  - name: header
    condition: '$.to == "header"'
    actions:
      - post_webhook: {{ url: "{url}/h", headers: {{ X-Device: "{{{{ event.device }}}}" }}, retries: 3 }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[("OUT_TOKEN", "out-secret-2".to_string())]);
    let c = client();
    let stolen = format!("@{authority}/stolen");
    let id = send(&c, &server, &json!({"to": "named", "path": stolen})).await;
    let d = settled(&c, &server, &id).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    assert!(
        job["error"].as_str().unwrap_or_default().contains("`@`"),
        "{job}"
    );
    let id = send(&c, &server, &json!({"to": "path", "path": "/kept?x=1"})).await;
    let d = settled(&c, &server, &id).await;
    assert_eq!(d["matches"][0]["status"], "done", "{d}");
    // A line break in a header value cannot add a header: the request cannot be built, the
    // same way every time, so it is not tried again (it was, `retries` times, with backoff).
    let started = std::time::Instant::now();
    let injected = json!({"to": "header", "device": "sw1\r\nX-Injected: 1"});
    let id = send(&c, &server, &injected).await;
    let d = settled(&c, &server, &id).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(1), "{job}");
    assert!(started.elapsed() < Duration::from_secs(3), "{job}");
    let seen = mock.wait(1).await;
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/kept?x=1"],
        "nothing went to /stolen or /h: {seen:?}"
    );
}

#[tokio::test]
async fn github_and_gitlab_shortcuts_send_what_the_apis_expect() {
    let (mock, url) = Mock::start().await;
    mock.reply("POST", "/repos/acme/netops/dispatches", 204, &[], "");
    mock.reply(
        "POST",
        "/repos/acme/netops/actions/workflows/deploy.yml/dispatches",
        204,
        &[],
        "",
    );
    mock.reply(
        "POST",
        "/api/v4/projects/group%2Fnet/trigger/pipeline",
        201,
        &[],
        r#"{"id": 99, "web_url": "x"}"#,
    );
    let env = Env::new();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}
rules:
  - name: ship
    actions:
      - github_dispatch:
          repo: acme/netops
          event_type: infrahub-device-changed
          client_payload: {{ node: "{{{{ event.node }}}}", branch: main, fields: ["{{{{ event.f }}}}"] }}
          token: gh-tok-123
          api_url: "{url}"
      - github_workflow:
          repo: acme/netops
          workflow: deploy.yml
          ref: main
          inputs: {{ device: "{{{{ event.node }}}}" }}
          token: gh-tok-123
          api_url: "{url}"
      - gitlab_pipeline:
          project: group/net
          ref: main
          variables: {{ DEVICE: "{{{{ event.node }}}}" }}
          token: gl-trigger-456
          api_url: "{url}"
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(
        &c,
        &server,
        &json!({"node": "atl1-edge1", "f": "description"}),
    )
    .await;
    let d = settled(&c, &server, &id).await;
    assert_eq!(d["matches"][0]["status"], "done", "{d}");
    let seen = mock.wait(3).await;
    assert_eq!(seen[0].path, "/repos/acme/netops/dispatches");
    assert_eq!(seen[0].headers["authorization"], "Bearer gh-tok-123");
    assert_eq!(seen[0].headers["accept"], "application/vnd.github+json");
    assert_eq!(
        serde_json::from_str::<Value>(&seen[0].body).unwrap(),
        json!({"event_type": "infrahub-device-changed", "client_payload": {"node": "atl1-edge1", "branch": "main", "fields": ["description"]}})
    );
    assert_eq!(
        seen[1].path,
        "/repos/acme/netops/actions/workflows/deploy.yml/dispatches"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&seen[1].body).unwrap(),
        json!({"ref": "main", "inputs": {"device": "atl1-edge1"}})
    );
    assert_eq!(
        seen[2].path,
        "/api/v4/projects/group%2Fnet/trigger/pipeline"
    );
    assert_eq!(
        seen[2].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        seen[2].body,
        "token=gl-trigger-456&ref=main&variables%5BDEVICE%5D=atl1-edge1"
    );
    let history = d.to_string();
    assert!(
        !history.contains("gh-tok-123") && !history.contains("gl-trigger-456"),
        "{history}"
    );
    assert_eq!(d["matches"][0]["attempts"][2]["http_status"], 201);
}

#[tokio::test]
async fn tickets_dedup_then_comment_in_every_system() {
    let (mock, url) = Mock::start().await;
    mock.reply(
        "POST",
        "/repos/acme/netops/issues",
        201,
        &[],
        r#"{"number": 7, "html_url": "https://github.example/acme/netops/issues/7"}"#,
    );
    mock.reply(
        "GET",
        "/repos/acme/netops/issues/7",
        200,
        &[],
        r#"{"number": 7, "state": "open"}"#,
    );
    mock.reply(
        "POST",
        "/repos/acme/netops/issues/7/comments",
        201,
        &[],
        r#"{"id": 1}"#,
    );
    mock.reply(
        "GET",
        "/repos/acme/netops/issues/7",
        200,
        &[],
        r#"{"number": 7, "state": "closed"}"#,
    );
    mock.reply(
        "POST",
        "/repos/acme/netops/issues",
        201,
        &[],
        r#"{"number": 8, "html_url": "https://github.example/acme/netops/issues/8"}"#,
    );
    mock.reply(
        "POST",
        "/api/v4/projects/net%2Fops/issues",
        201,
        &[],
        r#"{"iid": 3, "web_url": "https://gitlab.example/net/ops/-/issues/3"}"#,
    );
    mock.reply(
        "POST",
        "/rest/api/3/issue",
        201,
        &[],
        r#"{"id": "10001", "key": "NET-5", "self": "x"}"#,
    );
    mock.reply(
        "POST",
        "/api/now/table/incident",
        201,
        &[],
        r#"{"result": {"sys_id": "abc123", "number": "INC0010001"}}"#,
    );
    let env = Env::new();
    std::fs::write(
        env.path("templates").join("ticket.md.j2"),
        "Snapshot {{ event.snapshot }} failed remediation.\n\nSee {{ meta.id }}.",
    )
    .unwrap();
    env.rulebook(
        "r.yml",
        &format!(
            r#"{SRC}
rules:
  - name: gh
    condition: '$.system == "github"'
    actions:
      - open_ticket:
          system: github
          project: acme/netops
          token: gh-ticket-tok
          api_url: "{url}"
          title: "Remediation failed for {{{{ event.snapshot }}}}"
          body_template: ticket.md.j2
          labels: [netops, "{{{{ event.snapshot }}}}"]
          dedup_key: "ipf-{{{{ event.snapshot }}}}"
  - name: gl
    condition: '$.system == "gitlab"'
    actions:
      - open_ticket: {{ system: gitlab, project: net/ops, token: gl-ticket-tok, api_url: "{url}", title: "t {{{{ event.snapshot }}}}", body: b, labels: [a, b] }}
  - name: jira
    condition: '$.system == "jira"'
    actions:
      - open_ticket: {{ system: jira, project: NET, email: bot@example.com, token: jira-tok, api_url: "{url}", title: "t", body: "line one\n\nline two", issue_type: Bug }}
  - name: snow
    condition: '$.system == "servicenow"'
    actions:
      - open_ticket: {{ system: servicenow, username: svc, password: snow-pw, api_url: "{url}", title: "t", body: "b", dedup_key: "k-{{{{ event.snapshot }}}}", assignment_group: "Network Ops" }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    // GitHub: open, then comment (still open), then a new one (closed meanwhile).
    let first = send(
        &c,
        &server,
        &json!({"system": "github", "snapshot": "s1", "n": 1}),
    )
    .await;
    let d = settled(&c, &server, &first).await;
    assert_eq!(
        d["matches"][0]["attempts"][0]["result"]["ticket_id"], "7",
        "{d}"
    );
    assert_eq!(
        d["matches"][0]["attempts"][0]["result"]["url"],
        "https://github.example/acme/netops/issues/7"
    );
    let second = send(
        &c,
        &server,
        &json!({"system": "github", "snapshot": "s1", "n": 2}),
    )
    .await;
    let d = settled(&c, &server, &second).await;
    assert_eq!(
        d["matches"][0]["attempts"][0]["result"]["commented"], true,
        "{d}"
    );
    let third = send(
        &c,
        &server,
        &json!({"system": "github", "snapshot": "s1", "n": 3}),
    )
    .await;
    let d = settled(&c, &server, &third).await;
    assert_eq!(
        d["matches"][0]["attempts"][0]["result"]["ticket_id"], "8",
        "{d}"
    );
    let gh: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/repos/"))
        .collect();
    let calls: Vec<(String, String)> = gh
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("POST".into(), "/repos/acme/netops/issues".into()),
            ("GET".into(), "/repos/acme/netops/issues/7".into()),
            ("POST".into(), "/repos/acme/netops/issues/7/comments".into()),
            ("GET".into(), "/repos/acme/netops/issues/7".into()),
            ("POST".into(), "/repos/acme/netops/issues".into()),
        ]
    );
    assert_eq!(gh[0].headers["authorization"], "Bearer gh-ticket-tok");
    assert_eq!(
        serde_json::from_str::<Value>(&gh[0].body).unwrap(),
        json!({"title": "Remediation failed for s1", "body": format!("Snapshot s1 failed remediation.\n\nSee {first}."), "labels": ["netops", "s1"]})
    );

    for (sys, n) in [("gitlab", 4), ("jira", 5), ("servicenow", 6)] {
        let id = send(
            &c,
            &server,
            &json!({"system": sys, "snapshot": "s9", "n": n}),
        )
        .await;
        let d = settled(&c, &server, &id).await;
        assert_eq!(d["matches"][0]["status"], "done", "{sys}: {d}");
    }
    let seen = mock.seen();
    let gl = seen
        .iter()
        .find(|s| s.path == "/api/v4/projects/net%2Fops/issues")
        .unwrap();
    assert_eq!(gl.headers["private-token"], "gl-ticket-tok");
    assert_eq!(
        serde_json::from_str::<Value>(&gl.body).unwrap(),
        json!({"title": "t s9", "description": "b", "labels": "a,b"})
    );
    let jira = seen.iter().find(|s| s.path == "/rest/api/3/issue").unwrap();
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("bot@example.com:jira-tok");
    assert_eq!(jira.headers["authorization"], format!("Basic {basic}"));
    let jb: Value = serde_json::from_str(&jira.body).unwrap();
    assert_eq!(jb["fields"]["project"]["key"], "NET");
    assert_eq!(jb["fields"]["summary"], "t");
    assert_eq!(jb["fields"]["issuetype"]["name"], "Bug");
    assert_eq!(jb["fields"]["description"]["type"], "doc");
    assert_eq!(
        jb["fields"]["description"]["content"][1]["content"][0]["text"],
        "line two"
    );
    let snow = seen
        .iter()
        .find(|s| s.path == "/api/now/table/incident")
        .unwrap();
    let sb: Value = serde_json::from_str(&snow.body).unwrap();
    assert_eq!(
        sb,
        json!({"short_description": "t", "description": "b", "correlation_id": "k-s9", "assignment_group": "Network Ops"})
    );
    let log = server.log_text();
    for secret in ["gh-ticket-tok", "gl-ticket-tok", "jira-tok", "snow-pw"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn a_failed_script_opens_one_ticket_and_chains_and_loops_are_bounded() {
    let (mock, url) = Mock::start().await;
    mock.reply(
        "POST",
        "/repos/acme/netops/issues",
        201,
        &[],
        r#"{"number": 1, "html_url": "u"}"#,
    );
    let env = Env::new();
    env.script(
        "fail.sh",
        "#!/bin/sh\necho partial\necho broken >&2\nexit 3\n",
    );
    env.rulebook(
        "r.yml",
        &format!(
            r#"sources:
  - {{ name: in, kind: bearer, secret: in-token }}
  - {{ name: step2, kind: internal }}
  - {{ name: step3, kind: internal }}
  - {{ name: loop, kind: internal }}
rules:
  - name: remediate
    condition: '$.kind == "remediate"'
    actions:
      - run_script: {{ script: fail.sh, retries: 1 }}
    on_failure:
      - open_ticket:
          system: github
          project: acme/netops
          token: t0k
          api_url: "{url}"
          title: "exit {{{{ failure.exit_code }}}} after {{{{ failure.attempts }}}} attempts: {{{{ failure.stderr | trim }}}}"
  - name: one
    sources: [in]
    condition: '$.kind == "chain"'
    actions:
      - post_event: {{ source: step2, body: '{{"from": "one", "device": {{{{ event.device | tojson }}}}}}' }}
  - name: two
    sources: [step2]
    actions:
      - post_event: {{ source: step3, body: '{{"from": "two", "device": {{{{ event.device | tojson }}}}}}' }}
  - name: three
    sources: [step3]
    actions:
      - post_webhook: {{ url: "{url}/chain", body: '{{"device": {{{{ event.device | tojson }}}}, "depth": "{{{{ meta.source }}}}"}}' }}
  - name: start-loop
    sources: [in]
    condition: '$.kind == "loop"'
    actions:
      - post_event: {{ source: loop, body: '{{"n": 0}}' }}
  - name: feed-loop
    sources: [loop]
    actions:
      - post_event: {{ source: loop, body: '{{"n": {{{{ event.n + 1 }}}}}}' }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"kind": "remediate"})).await;
    let d = settled(&c, &server, &id).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "two script attempts and the ticket: {d}");
    assert_eq!(
        attempts[2]["run_id"],
        format!("{id}:remediate:on_failure:0")
    );
    let issues: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.path == "/repos/acme/netops/issues")
        .collect();
    assert_eq!(issues.len(), 1);
    let title = serde_json::from_str::<Value>(&issues[0].body).unwrap()["title"].clone();
    assert_eq!(title, "exit 3 after 2 attempts: broken");

    send(&c, &server, &json!({"kind": "chain", "device": "atl1"})).await;
    let chain = mock
        .wait(2)
        .await
        .into_iter()
        .filter(|s| s.path == "/chain")
        .collect::<Vec<_>>();
    assert_eq!(chain.len(), 1);
    assert_eq!(
        serde_json::from_str::<Value>(&chain[0].body).unwrap(),
        json!({"device": "atl1", "depth": "step3"})
    );

    let loop_start = send(&c, &server, &json!({"kind": "loop"})).await;
    // Depth 1..=8 are journaled; the ninth link is refused with an error in the history.
    let mut stopped = None;
    for _ in 0..100 {
        let list: Value = c
            .get(server.url("/api/events?source=loop&limit=50"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = list["events"].as_array().unwrap().clone();
        if events.len() == 8 && events.iter().all(|e| e["status"] != "pending") {
            stopped = Some(events);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = stopped.expect("the loop stops after 8 links");
    let last = events
        .iter()
        .find(|e| e["status"] == "failed")
        .expect("the last link failed");
    let d = detail(&c, &server, last["id"].as_str().unwrap()).await;
    let err = d["matches"][0]["error"].as_str().unwrap();
    assert!(err.contains("deeper than 8"), "{err}");
    assert!(server.log_text().contains("deeper than 8"));
    // The eight links hang from the event that started the loop, one after another.
    let first = events
        .iter()
        .find(|e| e["parent"] == loop_start.as_str())
        .expect("a link whose parent is the event that started the loop");
    let mut depth = 1;
    let mut at = first["id"].as_str().unwrap().to_string();
    while let Some(next) = events.iter().find(|e| e["parent"] == at.as_str()) {
        at = next["id"].as_str().unwrap().to_string();
        depth += 1;
    }
    assert_eq!(depth, 8, "the links do not form one chain: {events:?}");
    // Still serving.
    assert_eq!(
        c.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // And still accepting (send asserts the 202).
    send(&c, &server, &json!({"kind": "nothing"})).await;
}

#[test]
fn a_template_typo_fails_check() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        "sources:\n  - { name: in, kind: none }\nrules:\n  - name: r\n    actions:\n      - post_webhook: { url: 'http://127.0.0.1:9/x', body: '{{ event.a ' }\n      - open_ticket: { system: github, project: a/b, token: t, title: x, body_template: nope.md.j2 }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r.yml:6:") && err.contains("template error"),
        "{err}"
    );
    assert!(
        err.contains("r.yml:7:") && err.contains("nope.md.j2"),
        "{err}"
    );
}
