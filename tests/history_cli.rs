//! `rulehook events / event / jobs / replay / rerun` against a running service.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Env, Server, client, post_signed};

fn rulehook(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(args)
        .env_remove("RULEHOOK_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `{"device": "atl1"}` to source `net` (bearer `tok`) with `rulehook send`.
fn send_device_event(env: &Env, server: &Server) {
    let body = env.path("ev.json");
    std::fs::write(&body, r#"{"device": "atl1"}"#).unwrap();
    let hook = server.url("/hooks/net");
    let (ok, _, err) = rulehook(&[
        "send",
        &hook,
        "--kind",
        "bearer",
        "--secret",
        "tok",
        "--file",
        body.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
}

/// Waits until `/api/status` of the service at `url` mentions `text` (a reload has landed).
fn wait_for_status(url: &str, text: &str) {
    common::wait_until("the reload", Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(url.trim_start_matches("http://")) else {
            return false;
        };
        let mut got = String::new();
        s.write_all(b"GET /api/status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .and_then(|_| s.read_to_string(&mut got))
            .is_ok_and(|_| got.contains(text))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_from_the_command_line() {
    let env = Env::new();
    env.script(
        "flaky.sh",
        "#!/bin/sh\necho \"trying $1\"\necho 'no route to atl1' >&2\nexit 2\n",
    );
    env.rulebook(
        "t.yml",
        r#"
sources:
  - { name: net, kind: bearer, secret: tok }
rules:
  - name: fix
    sources: [net]
    condition: '$.device'
    actions:
      - run_script: { script: flaky.sh, args: ["{{ event.device }}"] }
    on_failure:
      - log: { message: "fix failed for {{ event.device }}" }
  - name: other
    sources: [net]
    condition: '$.kind == "link"'
    actions:
      - log: { message: "never" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let base = server.base.clone();
    let c = client();
    let (st, resp) = post_signed(
        &c,
        &server.url("/hooks/net"),
        "bearer",
        "tok",
        br#"{"device": "atl1"}"#,
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    common::wait_until(
        "the script's failure in the log",
        Duration::from_secs(10),
        || server.log_text().contains("fix failed for atl1"),
    );

    let (ok, out, err) = rulehook(&["events", "--url", &base, "--source", "net"]);
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("failed"), "{out}");
    let (ok, out, _) = rulehook(&["events", "--url", &base, "--status", "done"]);
    assert!(ok && out.contains("no events"), "{out}");

    let (ok, out, err) = rulehook(&["event", &id, "--url", &base]);
    assert!(ok, "{err}");
    for want in [
        format!("event {id}  source net (bearer)"),
        format!("matched t/fix  job {id}:fix  failed"),
        "#0 run_script  attempt 1  failed in ".to_string(),
        "exit 2".to_string(),
        "stdout  trying atl1".to_string(),
        "stderr  no route to atl1".to_string(),
        "on_failure #0 log  attempt 1  ok".to_string(),
        "no match t/other".to_string(),
        "\"device\": \"atl1\"".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }

    let (ok, out, err) = rulehook(&["jobs", "--status", "failed", "--url", &base]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{id}:fix  failed")), "{out}");

    let (ok, out, err) = rulehook(&["rerun", &format!("{id}:fix"), "--url", &base]);
    assert!(ok, "{err}");
    assert!(out.contains("queued again"), "{out}");

    let (ok, out, err) = rulehook(&["replay", &id, "--url", &base]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("replayed {id} as event ")), "{out}");
    assert!(out.contains("1 rule(s) matched"), "{out}");

    let (ok, out, err) = rulehook(&["event", &id, "--url", &base, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["id"], id.as_str());

    let (ok, _, err) = rulehook(&["event", "nope", "--url", &base]);
    assert!(!ok);
    assert!(err.contains("no event with id nope"), "{err}");
    let (ok, _, err) = rulehook(&["rerun", "nope:x", "--url", &base]);
    assert!(!ok);
    assert!(err.contains("no job with id nope:x"), "{err}");
}

#[test]
fn an_unreachable_service_says_where_it_looked() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let (ok, _, err) = rulehook(&["events", "--url", &url]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot reach the service at {url}")),
        "{err}"
    );
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(err.contains("RULEHOOK_URL"), "{err}");
}

/// `--url` without its scheme (`127.0.0.1:8080`, as curl takes it) is refused as such: not
/// "cannot reach the service … builder error" with a hint to check that it runs.
#[test]
fn a_service_url_without_its_scheme_is_refused_as_such() {
    for args in [
        vec!["events", "--url", "127.0.0.1:8080"],
        vec!["jobs", "--url", "localhost:8080"],
        vec!["whatif", "--url", "127.0.0.1:8080"],
    ] {
        let (ok, _, err) = rulehook(&args);
        assert!(!ok);
        assert!(
            err.contains("is not an http:// or https:// URL: give the service's address, e.g. http://127.0.0.1:8080"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("builder error"), "{err}");
    }
}

/// A dead letter whose rule was removed (or renamed) since the match: `rulehook rerun` says that
/// `--as-matched` still runs the version it matched (it does), instead of "it cannot be
/// re-run", which sent people to replay the event.
#[test]
fn a_rerun_of_a_removed_rule_points_at_as_matched() {
    let env = Env::new();
    env.script("fail.sh", "#!/bin/sh\nexit 3\n");
    let book = |name: &str| {
        format!(
            "sources:\n  - {{ name: net, kind: bearer, secret: tok }}\nrules:\n  - name: {name}\n    sources: [net]\n    actions:\n      - run_script: {{ script: fail.sh }}\n"
        )
    };
    env.rulebook("t.yml", &book("fix"));
    let server = Server::start(&env, &[], &[]);
    send_device_event(&env, &server);
    let url = server.base.clone();
    let mut job = String::new();
    common::wait_until("the dead letter", Duration::from_secs(20), || {
        let (_, out, _) = rulehook(&["jobs", "--status", "failed", "--json", "--url", &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        job = v["jobs"][0]["id"].as_str().unwrap_or_default().to_string();
        !job.is_empty()
    });
    env.rulebook("t.yml", &book("fix-renamed"));
    wait_for_status(&url, "t/fix-renamed");
    let (ok, _, err) = rulehook(&["rerun", &job, "--url", &url]);
    assert!(!ok);
    assert!(
        err.contains("the rule of this job no longer exists (removed or renamed since the match): re-run the version it matched with `rulehook rerun JOB --as-matched`"),
        "{err}"
    );
    let (ok, out, err) = rulehook(&["rerun", &job, "--as-matched", "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("runs the rule version it matched"), "{out}");
}

/// Replaying an event whose source has left the rulebooks says why nothing matched (the answer
/// names the source as `source_gone`); it said "0 rule(s) matched" alone. With the source
/// there, the answer has no `source_gone`.
#[test]
fn a_replay_of_an_event_whose_source_is_gone_says_so() {
    let env = Env::new();
    let book = |source: &str| {
        format!(
            "sources:\n  - {{ name: {source}, kind: bearer, secret: tok }}\nrules:\n  - name: r\n    sources: [{source}]\n    actions:\n      - log: {{ message: hi }}\n"
        )
    };
    env.rulebook("t.yml", &book("net"));
    let server = Server::start(&env, &[], &[]);
    send_device_event(&env, &server);
    let url = server.base.clone();
    let mut id = String::new();
    common::wait_until("the event", Duration::from_secs(20), || {
        let (_, out, _) = rulehook(&["events", "--json", "--url", &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        id = v["events"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !id.is_empty()
    });
    let (ok, out, err) = rulehook(&["replay", &id, "--json", "--url", &url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["matched"], 1, "{v}");
    assert!(v.get("source_gone").is_none(), "{v}");

    env.rulebook("t.yml", &book("relocated"));
    wait_for_status(&url, "relocated");
    let (ok, out, err) = rulehook(&["replay", &id, "--url", &url]);
    assert!(ok, "{err}");
    assert!(out.contains("0 rule(s) matched"), "{out}");
    assert!(
        out.contains("its source `net` is no longer in the rulebooks, so no rule can match it"),
        "{out}"
    );
}
