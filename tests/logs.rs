//! The service log tells the story: start-up, one line per action run, causes of outbound
//! errors, warnings once, and a last line when it stops.

mod common;

use std::time::Duration;

use common::{Env, Server, client, post_signed};

/// The log once it holds `needle`; panics with the log after 10 s.
fn wait_for(server: &Server, needle: &str) -> String {
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
async fn the_log_tells_the_story() {
    let env = Env::new();
    env.script("ok.sh", "#!/bin/sh\necho done\n");
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    env.rulebook(
        "t.yml",
        &format!(
            r#"sources:
  - name: net
    kind: bearer
    secret: ${{env:RULEHOOK_LOGS_TEST_UNSET:-tok}}
rules:
  - name: fix
    sources: [net]
    actions:
      - run_script: {{ script: ok.sh }}
      - post_webhook: {{ url: "http://{refused}/hook", body: '{{}}', retries: 0 }}
"#
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let log = server.log_text();
    assert!(log.contains("rulebooks loaded"), "{log}");
    assert!(
        log.contains("rulebooks=1") && log.contains("rules=1") && log.contains("sources=1"),
        "{log}"
    );
    assert!(
        log.contains("jobs recovered from the store") && log.contains("pending=0"),
        "{log}"
    );
    assert!(log.contains("embedded store"), "{log}");
    assert_eq!(log.matches("uses the fallback of").count(), 1, "{log}");

    let c = client();
    let (st, resp) = post_signed(&c, &server.url("/hooks/net"), "bearer", "tok", b"{}").await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    let log = wait_for(&server, "action failed rule=fix action=\"post_webhook\"");
    let ok_line = log
        .lines()
        .find(|l| l.contains("action ok") && l.contains("action=\"run_script\""))
        .unwrap_or_else(|| panic!("no run line for the script:\n{log}"));
    assert!(ok_line.contains("rule=fix"), "{ok_line}");
    assert!(ok_line.contains(&format!("run={id}:fix:0")), "{ok_line}");
    assert!(ok_line.contains("duration="), "{ok_line}");
    let failed = log
        .lines()
        .find(|l| l.contains("action failed rule=fix"))
        .unwrap();
    assert!(
        failed.to_lowercase().contains("refused"),
        "the cause is named: {failed}"
    );
    assert!(!log.contains("Some("), "no Debug text in the log: {log}");

    // A reload does not repeat the fallback warning.
    let before = server.log_text().matches("rule set reloaded").count();
    let text = std::fs::read_to_string(env.path("rulebooks/t.yml")).unwrap();
    std::fs::write(env.path("rulebooks/t.yml"), format!("{text}\n# edited\n")).unwrap();
    for _ in 0..100 {
        if server.log_text().matches("rule set reloaded").count() > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log_text();
    assert!(log.matches("rule set reloaded").count() > before, "{log}");
    assert_eq!(log.matches("uses the fallback of").count(), 1, "{log}");

    server.terminate();
    let log = server.log_text();
    assert!(
        log.trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .contains("stopped"),
        "{log}"
    );
}

#[test]
fn a_missing_rulebooks_directory_says_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["check", "--rulebooks", "/nonexistent/rulehook-rulebooks"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/rulehook-rulebooks:1:1: no such directory"),
        "{err}"
    );

    let env = Env::new();
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no rulebook"), "{err}");
}

/// A `log` action writes its own line (rule and event, the message as rendered, with terminal
/// controls escaped) and no second "action ok" line; other actions keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_action_is_one_line() {
    let env = Env::new();
    env.script("ok.sh", "#!/bin/sh\nexit 0\n");
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: net, kind: bearer, secret: tok }
rules:
  - name: said
    actions:
      - log: { message: 'host {{ event.host }} down' }
      - run_script: { script: ok.sh }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let body = br#"{"host": "r1\u001b[31m"}"#;
    let (st, resp) = post_signed(&c, &server.url("/hooks/net"), "bearer", "tok", body).await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    let log = wait_for(&server, "action=\"run_script\"");
    let own: Vec<&str> = log.lines().filter(|l| l.contains("host r1")).collect();
    assert_eq!(own.len(), 1, "{log}");
    assert!(
        own[0].contains(" INFO rulehook::rule: host r1\\x1b[31m down"),
        "{}",
        own[0]
    );
    assert!(
        own[0].contains("rule=\"said\"") && own[0].contains(&format!("event=\"{id}\"")),
        "{}",
        own[0]
    );
    assert!(
        !log.contains("action=\"log\""),
        "no second line for the log action:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("action ok") && l.contains("action=\"run_script\"")),
        "{log}"
    );
}

/// A sender's line break in a value a `log` action writes started a line of its own in the
/// service log, which could pass for one of rulehook's (`… ERROR rulehook::access: …`). The
/// action's line stays one line: CR and LF are written as `\r` and `\n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_action_cannot_forge_a_line() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: net, kind: bearer, secret: tok }
rules:
  - name: said
    actions:
      - log: { message: 'host {{ event.host }} down' }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let body = br#"{"host": "r1\r\n2026-12-08T01:00:00.000000Z ERROR rulehook::access: forged"}"#;
    let (st, resp) = post_signed(&c, &server.url("/hooks/net"), "bearer", "tok", body).await;
    assert_eq!(st, 202, "{resp}");
    let log = wait_for(&server, "host r1");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-08T01:00:00")),
        "a forged line:\n{log}"
    );
    let own: Vec<&str> = log.lines().filter(|l| l.contains("host r1")).collect();
    assert!(
        own[0].contains(
            r"host r1\r\n2026-12-08T01:00:00.000000Z ERROR rulehook::access: forged down"
        ),
        "{log}"
    );
}
