//! People and the audit trail against the real binary (docs/change-control.md): refused
//! sign-ins cannot push real writes out of the trail, signing out ends the session (copies of
//! its cookie too), names the service uses itself cannot be users, user changes by the command
//! line are audited, and admins decide past `approval.approvers` as break-glass.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, post_signed};
use serde_json::{Value, json};

const ADMIN: &str = "break-glass-token-0123";

/// The binary under test (RULEHOOK_TEST_BIN: another build, to see a test fail before its fix).
fn bin() -> String {
    std::env::var("RULEHOOK_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rulehook").into())
}

fn add_user(env: &Env, name: &str, role: &str) -> String {
    let (ok, text) = env.users(&["add", name, "--role", role], None);
    assert!(ok, "{text}");
    text.lines().last().unwrap().trim().to_string()
}

/// A client that does not follow redirects.
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn hidden(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + key.len();
    html[at..].split('"').next().unwrap_or_default().to_string()
}

async fn get(c: &reqwest::Client, server: &Server, path: &str, token: &str) -> (u16, Value) {
    let resp = c
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn decide(
    c: &reqwest::Client,
    server: &Server,
    job: &str,
    token: &str,
    comment: &str,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = c
            .post(server.url(&format!("/api/jobs/{job}/approve")))
            .bearer_auth(token)
            .json(&json!({ "comment": comment }))
            .send()
            .await
            .unwrap();
        let st = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if st != 404 || Instant::now() > deadline {
            return (st, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send(c: &reqwest::Client, server: &Server, port: &str) -> String {
    let body = json!({"state": "down", "port": port}).to_string();
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

async fn audit(c: &reqwest::Client, server: &Server) -> Vec<Value> {
    let (st, v) = get(c, server, "/api/audit?limit=5000", ADMIN).await;
    assert_eq!(st, 200, "{v}");
    v["audit"].as_array().unwrap().clone()
}

/// An approval, a break-glass decision by an admin, then a flood of refused sign-ins: the
/// approvals stay in the trail, the refusals are folded and bounded; user changes made with
/// `rulehook users` while the service runs show up as `user.*` records.
#[tokio::test]
async fn refusals_cannot_wipe_the_trail_and_user_changes_are_audited() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        r#"sources:
  - { name: in, kind: bearer, secret: in-token }
rules:
  - name: strict
    condition: '$.state == "down"'
    approval: { timeout: 10m, on_timeout: reject, approvers: [Anna, nobody] }
    actions:
      - log: { message: "ran {{ event.port }}" }
"#,
    );
    let anna = add_user(&env, "anna", "approver");
    let adam = add_user(&env, "adam", "admin");
    let server = Server::start(
        &env,
        &["--admin-require-token", "--approval-check", "200ms"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN.to_string())],
    );
    let c = client();
    // `nobody` is not a user: /api/status says so; Anna is anna.
    let (_, status) = get(&c, &server, "/api/status", ADMIN).await;
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("approval.approvers nobody is not a user"),
        "{status}"
    );
    assert!(server.log_text().contains("nobody is not a user"));

    let first = format!("{}:strict", send(&c, &server, "Gi0/1").await);
    let second = format!("{}:strict", send(&c, &server, "Gi0/2").await);
    let (st, body) = decide(&c, &server, &first, &anna, "CHG-4711").await;
    assert_eq!(st, 202, "names are compared case-insensitively: {body}");
    let (st, body) = decide(&c, &server, &second, &adam, "outage").await;
    assert_eq!(st, 202, "an admin decides as break-glass: {body}");
    let comment = body["decision"]["comment"].as_str().unwrap_or_default();
    assert!(
        comment.starts_with("break-glass: admin adam") && comment.ends_with("; outage"),
        "{body}"
    );

    // The flood: far more refused sign-ins than the trail keeps records.
    let (_, html) = {
        let resp = c.get(server.url("/console/login")).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    };
    let token = hidden(&html, "token");
    let mut refused = 0;
    for i in 0..2100 {
        let resp = c
            .post(server.url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("token", &token),
                ("admin_token", &format!("x{i}")),
            ]))
            .send()
            .await
            .unwrap();
        assert!(matches!(resp.status().as_u16(), 401 | 429));
        refused += 1;
    }
    let records = audit(&c, &server).await;
    let approvals: Vec<&Value> = records.iter().filter(|r| r["what"] == "approve").collect();
    assert_eq!(approvals.len(), 2, "{:?}", &records[..5.min(records.len())]);
    assert!(
        approvals
            .iter()
            .any(|r| r["who"] == "anna" && r["comment"] == "CHG-4711")
    );
    assert!(
        approvals
            .iter()
            .any(|r| r["who"] == "adam" && r["comment"].as_str().unwrap().contains("break-glass")),
        "{approvals:?}"
    );
    let refusals: Vec<&Value> = records
        .iter()
        .filter(|r| r["what"] == "login.refused")
        .collect();
    let tries: u64 = refusals.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert!(
        !refusals.is_empty() && refusals.len() <= 3,
        "folded per address and minute: {refusals:?}"
    );
    assert!(
        tries >= 1 && tries < refused,
        "those answered 429 are not recorded: {tries} of {refused}"
    );

    // User changes by the command line, while the service runs.
    add_user(&env, "zz", "viewer");
    let (ok, text) = env.users(&["role", "zz", "--role", "operator"], None);
    assert!(
        ok && text.contains("now has role operator (was viewer)"),
        "{text}"
    );
    let (ok, text) = env.users(&["passwd", "zz"], Some("long enough pw\n"));
    assert!(ok, "{text}");
    let (ok, text) = env.users(&["remove", "zz"], None);
    assert!(ok, "{text}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let changes = loop {
        let changes: Vec<Value> = audit(&c, &server)
            .await
            .into_iter()
            .filter(|r| r["target"] == "zz")
            .collect();
        if changes.len() >= 4 || Instant::now() > deadline {
            break changes;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let whats: Vec<&str> = changes
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        ["user.remove", "user.passwd", "user.role", "user.add"],
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .all(|r| r["who"].as_str().unwrap().starts_with("cli@")),
        "{changes:?}"
    );
    // The console's Audit page filters them with its `user` kind.
    let resp = c
        .get(server.url("/console/audit?what=user"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let html = resp.text().await.unwrap();
    assert!(html.contains("<option value=\"user\""), "{html}");
    // zz's four, and anna's and adam's `user.add` from before the service started.
    assert_eq!(
        html.matches("<tr class=\"audit-row\">").count(),
        6,
        "{html}"
    );
}

/// Each sign-in gets its own session; signing out ends it, so a copy of its cookie stops
/// working while another session goes on. Reserved and case-only-different names are refused;
/// an unknown token is told so; `--public-url` must be an http(s) URL.
#[tokio::test]
async fn sign_out_ends_the_session_and_names_are_checked() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        "sources:\n  - { name: in, kind: bearer, secret: in-token }\nrules: []\n",
    );
    let anna = add_user(&env, "anna", "approver");
    for name in ["timeout", "unknown", "loopback", "admin-token", "Timeout"] {
        let (ok, text) = env.users(&["add", name, "--role", "approver"], None);
        assert!(!ok && text.contains("is reserved"), "{name}: {text}");
    }
    let (ok, text) = env.users(&["add", "Anna", "--role", "viewer"], None);
    assert!(!ok && text.contains("user `anna` exists already"), "{text}");

    let (ok, text) = {
        let out = std::process::Command::new(bin())
            .args(["serve", "--public-url", "javascript:alert(1)"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(!ok && text.contains("absolute http(s) URL"), "{text}");

    let server = Server::start(
        &env,
        &["--admin-require-token"],
        &[("RULEHOOK_ADMIN_TOKEN", ADMIN.to_string())],
    );
    let c = client();
    let (st, body) = get(&c, &server, "/api/jobs", "rh_not_a_token").await;
    assert_eq!(st, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not known"),
        "{body}"
    );

    // The command line on this host, refused: it says why, and not "from another host".
    for (token, want) in [
        (None, "even from this host"),
        (Some("rh_not_a_token"), "not one the service knows"),
    ] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["jobs", "--url", &server.url("")])
            .env_remove("RULEHOOK_ADMIN_TOKEN");
        if let Some(t) = token {
            cmd.env("RULEHOOK_ADMIN_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && text.contains(want) && !text.contains("another host"),
            "{text}"
        );
    }

    let html = c
        .get(server.url("/console/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = hidden(&html, "token");
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let resp = c
            .post(server.url("/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", &token), ("admin_token", &anna)]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303);
        let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        sessions.push(cookie.split(';').next().unwrap().to_string());
    }
    assert_ne!(sessions[0], sessions[1], "a new session per sign-in");
    let page = |cookie: String| {
        let c = c.clone();
        let url = server.url("/console/approvals");
        async move {
            let resp = c.get(url).header("cookie", cookie).send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let (st, html) = page(sessions[0].clone()).await;
    assert_eq!(st, 200, "{html}");
    let form_token = hidden(&html, "token");
    let copied = sessions[0].clone();
    let resp = c
        .post(server.url("/console/logout"))
        .header("cookie", &sessions[0])
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &form_token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let (st, _) = page(copied).await;
    assert_eq!(
        st, 303,
        "the copied cookie of a signed-out session is refused"
    );
    let (st, _) = page(sessions[1].clone()).await;
    assert_eq!(st, 200, "the other session goes on");
}
