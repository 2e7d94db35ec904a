//! Console fixtures shared by the HTTP and the browser tests: a rulebook with a rule that
//! fails until fixed (a dead letter to re-run), a rule that never matches the payloads sent
//! (a false clause to read), and form helpers.

use std::time::{Duration, Instant};

use super::{Env, Server, post_signed};
use serde_json::Value;

pub const SOURCE_TOKEN: &str = "in-token";
pub const ADMIN_TOKEN: &str = "console-admin-token-0123";

/// Payloads that must render inert wherever an event value is shown.
pub const XSS_SCRIPT: &str = "<script>window.pwned = 1</script>";
pub const XSS_ATTR: &str = "\"><img src=x onerror=\"window.pwned = 2\">";
pub const XSS_LINK: &str = "javascript:window.pwned = 3";

/// A scratch environment: source `in` (bearer), rules `deploy` (a script that fails until
/// `$OUT_DIR/fixed` exists) and `page-oncall` (`$.severity == "critical"`).
pub fn env() -> Env {
    let env = Env::new();
    env.rulebook(
        "ops.yml",
        &format!(
            r#"sources:
  - {{ name: in, kind: bearer, secret: {SOURCE_TOKEN} }}
rules:
  - name: deploy
    condition: '$.kind == "deploy"'
    actions:
      - run_script: {{ script: fix-me.sh, args: ["{{{{ event.service }}}}"] }}
  - name: page-oncall
    condition: '$.severity == "critical"'
    actions:
      - run_script: {{ script: ok.sh }}
"#
        ),
    );
    env.script(
        "fix-me.sh",
        "#!/bin/sh\necho \"deploying $1 ($RULEHOOK_RUN_ID)\"\nif [ -e \"$OUT_DIR/fixed\" ]; then exit 0; fi\necho 'deploy target unreachable' >&2\nexit 1\n",
    );
    env.script("ok.sh", "#!/bin/sh\necho paged\n");
    env
}

/// Posts an event to source `in`; returns its id.
pub async fn send(c: &reqwest::Client, server: &Server, body: &Value) -> String {
    let (st, resp) = post_signed(
        c,
        &server.url("/hooks/in"),
        "bearer",
        SOURCE_TOKEN,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    resp["id"].as_str().expect("id").to_string()
}

/// Waits until job `job` is a dead letter (through the admin API, from loopback).
pub async fn wait_dead_letter(c: &reqwest::Client, server: &Server, job: &str) {
    let start = Instant::now();
    loop {
        let v: Value = c
            .get(server.url("/api/jobs?status=failed"))
            .send()
            .await
            .expect("jobs")
            .json()
            .await
            .expect("json");
        if v["jobs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|j| j["id"] == job))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{job} never became a dead letter: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of the first hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + key.len();
    html[at..].split('"').next().unwrap_or_default().to_string()
}
