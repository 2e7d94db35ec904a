//! Running rulehook for real: hot reload, throttle across restarts, history, metrics, `send`,
//! HTTPS, rate limits, graceful shutdown.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Env, Server, client, post_signed};
use serde_json::Value;

const SOURCE: &str = "sources:\n  - { name: ipf, kind: ipfabric, secret: s3cret }\n";

fn record_script(env: &Env) {
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$RULEHOOK_RULE $RULEHOOK_EVENT_ID $1\" >> \"$OUT_DIR/runs.txt\"\n",
    );
}

fn rule(name: &str, cond: &str) -> String {
    format!(
        "rules:\n  - name: {name}\n    condition: '{cond}'\n    actions:\n      - run_script: {{ script: record.sh, args: [\"{{{{ event.n }}}}\"] }}\n"
    )
}

/// Posts `body` to the `ipf` source, signed with `secret`.
async fn post_ipf(c: &reqwest::Client, server: &Server, secret: &str, body: &[u8]) -> (u16, Value) {
    post_signed(c, &server.url("/hooks/ipf"), "ipfabric", secret, body).await
}

/// A server with the `ipf` source and one rule recording `$.n == 1` matches.
fn one_rule_server(extra: &[&str]) -> (Env, Server) {
    let env = Env::new();
    record_script(&env);
    env.rulebook("a.yml", &format!("{SOURCE}{}", rule("r", "$.n == 1")));
    let server = Server::start(&env, extra, &[]);
    (env, server)
}

async fn get(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `url` until `f` holds; panics with the last answer after 10 s, so a test never
/// carries on as if the state had come.
async fn wait_for<F: Fn(&Value) -> bool>(c: &reqwest::Client, url: &str, f: F) -> Value {
    let mut v = Value::Null;
    for _ in 0..100 {
        v = get(c, url).await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting on {url}; last answer: {v}");
}

#[tokio::test]
async fn reload_adds_rules_and_a_broken_file_changes_nothing() {
    let env = Env::new();
    record_script(&env);
    env.rulebook("a.yml", &format!("{SOURCE}{}", rule("first", "$.n == 1")));
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let hook = server.url("/hooks/ipf");
    assert_eq!(
        post_signed(&c, &hook, "ipfabric", "s3cret", br#"{"n":2}"#)
            .await
            .0,
        202
    );

    // Add a rule in a new file: the next event uses it.
    env.rulebook("b.yml", &rule("second", "$.n == 2"));
    let status = wait_for(&c, &server.url("/api/status"), |s| {
        s["rules"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    assert_eq!(status["reload"]["last_error"], Value::Null, "{status}");
    assert_eq!(
        post_signed(&c, &hook, "ipfabric", "s3cret", br#"{"n":2,"x":1}"#)
            .await
            .0,
        202
    );
    let runs = env.wait_lines("runs.txt", 1, Duration::from_secs(10));
    assert_eq!(
        runs.len(),
        1,
        "only the event after the reload matches: {runs:?}"
    );
    assert!(runs[0].starts_with("second "), "{runs:?}");

    // A broken file: the old set keeps serving, the error shows in /api/status.
    env.rulebook(
        "b.yml",
        "rules:\n  - name: second\n    condition: '$.n === 2'\n    actions: []\n",
    );
    let status = wait_for(&c, &server.url("/api/status"), |s| {
        !s["reload"]["last_error"].is_null()
    })
    .await;
    let err = &status["reload"]["last_error"]["locations"][0];
    assert!(err["file"].as_str().unwrap().ends_with("b.yml"), "{status}");
    assert_eq!(err["line"], 3, "{status}");
    assert_eq!(status["rules"].as_array().unwrap().len(), 2);
    assert_eq!(
        post_signed(&c, &hook, "ipfabric", "s3cret", br#"{"n":2,"x":2}"#)
            .await
            .0,
        202
    );
    assert_eq!(
        env.wait_lines("runs.txt", 2, Duration::from_secs(10)).len(),
        2
    );
    assert!(
        server.log_text().contains("reload refused"),
        "the error is logged"
    );

    // Fixed again, and SIGHUP also reloads.
    env.rulebook("b.yml", &rule("second", "$.n == 3"));
    wait_for(&c, &server.url("/api/status"), |s| {
        s["reload"]["last_error"].is_null()
    })
    .await;
    // A source added in a file is served at once; removed, its path is gone.
    env.rulebook(
        "c.yml",
        "sources:\n  - { name: eem, kind: bearer, secret: tok }\n",
    );
    let added = wait_for(&c, &server.url("/api/status"), |s| {
        s["sources"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "eem"))
    })
    .await;
    assert_eq!(added["sources"][1]["path"], "/hooks/eem", "{added}");
    let resp = c
        .post(server.url("/hooks/eem"))
        .header("authorization", "Bearer tok")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    std::fs::remove_file(env.path("rulebooks").join("c.yml")).unwrap();
    // `reload.sources` is written with `reload.reloads`: this reload is counted.
    let removed = wait_for(&c, &server.url("/api/status"), |s| {
        s["sources"].as_array().is_some_and(|a| a.len() == 1) && s["reload"]["sources"] == 1
    })
    .await;
    let resp = c
        .post(server.url("/hooks/eem"))
        .header("authorization", "Bearer tok")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);

    // No file changed since: only the signal can count one more reload (a watcher event
    // with no change does not reload).
    let before = removed["reload"]["reloads"]
        .as_u64()
        .expect("a reload count");
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(&c, &server.url("/api/status"), |s| {
        s["reload"]["reloads"].as_u64() > Some(before)
    })
    .await;
}

#[tokio::test]
async fn events_during_many_rewrites_are_each_acted_on_once() {
    let env = Env::new();
    record_script(&env);
    env.rulebook("a.yml", &format!("{SOURCE}{}", rule("all", "$.n >= 0")));
    let server = Server::start(&env, &["--concurrency", "4"], &[]);
    let c = client();
    let hook = server.url("/hooks/ipf");
    const N: usize = 150;
    let writer = {
        let dir = env.path("rulebooks");
        std::thread::spawn(move || {
            for i in 0..30 {
                // Editors save by writing a temporary file and renaming it over the old one.
                let tmp = dir.join(".a.yml.tmp");
                let text = format!(
                    "{SOURCE}{}",
                    rule("all", &format!("$.n >= 0 && $.v != {i}"))
                );
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, dir.join("a.yml")).unwrap();
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let mut ids = Vec::new();
    for n in 0..N {
        let body = format!(r#"{{"n":{n}}}"#);
        let (st, resp) = post_signed(&c, &hook, "ipfabric", "s3cret", body.as_bytes()).await;
        assert_eq!(st, 202, "{resp}");
        ids.push(resp["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.join().unwrap();
    env.wait_lines("runs.txt", N, Duration::from_secs(30));
    // Long enough for an extra run to show if an event had run twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = env.lines("runs.txt");
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for r in &runs {
        *per_event
            .entry(r.split(' ').nth(1).unwrap().to_string())
            .or_default() += 1;
    }
    for id in &ids {
        assert_eq!(
            per_event.get(id),
            Some(&1),
            "event {id} ran {:?} times",
            per_event.get(id)
        );
    }
    let status = get(&c, &server.url("/api/status")).await;
    assert!(
        status["reload"]["reloads"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[tokio::test]
async fn throttle_survives_a_restart_and_history_shows_it() {
    let env = Env::new();
    record_script(&env);
    env.rulebook(
        "t.yml",
        &format!(
            "{SOURCE}rules:\n  - name: once\n    condition: '$.status == \"completed\"'\n    throttle: {{ once_within: 1h, group_by: ['$.snapshot.id'] }}\n    actions:\n      - run_script: {{ script: record.sh, args: [\"{{{{ event.snapshot.id }}}}\"] }}\n  - name: never\n    condition: '$.status == \"failed\"'\n    actions:\n      - log: {{ message: x }}\n"
        ),
    );
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let (st, _) = post_ipf(
        &c,
        &server,
        "s3cret",
        br#"{"status":"completed","snapshot":{"id":"s1"},"t":1}"#,
    )
    .await;
    assert_eq!(st, 202);
    assert_eq!(
        env.wait_lines("runs.txt", 1, Duration::from_secs(10)).len(),
        1
    );
    server.terminate();

    let server = Server::start(&env, &[], &[]);
    let (_, second) = post_ipf(
        &c,
        &server,
        "s3cret",
        br#"{"status":"completed","snapshot":{"id":"s1"},"t":2}"#,
    )
    .await;
    let (_, other) = post_ipf(
        &c,
        &server,
        "s3cret",
        br#"{"status":"completed","snapshot":{"id":"s2"},"t":3}"#,
    )
    .await;
    env.wait_lines("runs.txt", 2, Duration::from_secs(10));
    // Long enough for a third run to show if the throttle had let one through.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = env.lines("runs.txt");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[1].ends_with(" s2"), "{runs:?}");

    let id = second["id"].as_str().unwrap();
    let detail = get(&c, &server.url(&format!("/api/events/{id}"))).await;
    assert_eq!(detail["throttled"][0]["rule"], "once", "{detail}");
    assert_eq!(detail["matches"].as_array().unwrap().len(), 0);
    let why = &detail["not_matched"];
    assert!(
        why.to_string().contains("$.status == \\\"failed\\\""),
        "{why}"
    );
    let other_id = other["id"].as_str().unwrap();
    let detail = wait_for(&c, &server.url(&format!("/api/events/{other_id}")), |d| {
        d["matches"][0]["status"] == "done"
    })
    .await;
    assert_eq!(
        detail["matches"][0]["attempts"][0]["stdout"], "",
        "{detail}"
    );
    // Filters.
    let list = get(
        &c,
        &server.url("/api/events?source=ipf&status=throttled&limit=10"),
    )
    .await;
    let ids: Vec<&str> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    // A match that was throttled shows as throttled, not as unmatched.
    assert_eq!(ids, vec![id], "{list}");
    assert_eq!(list["events"][0]["status"], "throttled", "{list}");
    let unmatched = get(
        &c,
        &server.url("/api/events?source=ipf&status=unmatched&limit=10"),
    )
    .await;
    assert!(!unmatched.to_string().contains(id), "{unmatched}");
    let by_rule = get(&c, &server.url("/api/events?rule=once&limit=10")).await;
    assert!(by_rule.to_string().contains(id), "{by_rule}");
}

#[tokio::test]
async fn history_shows_retries_and_replay_runs_again() {
    let env = Env::new();
    env.script(
        "flaky.sh",
        "#!/bin/sh\nif [ ! -e \"$OUT_DIR/flag-$RULEHOOK_EVENT_ID\" ]; then touch \"$OUT_DIR/flag-$RULEHOOK_EVENT_ID\"; echo first-fails >&2; exit 1; fi\necho \"ok $RULEHOOK_RUN_ID\" | tee -a \"$OUT_DIR/runs.txt\"\n",
    );
    env.rulebook(
        "r.yml",
        &format!("{SOURCE}rules:\n  - name: flaky\n    actions:\n      - run_script: {{ script: flaky.sh, retries: 2 }}\n"),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let (_, resp) = post_ipf(&c, &server, "s3cret", br#"{"a":1}"#).await;
    let id = resp["id"].as_str().unwrap().to_string();
    let detail = wait_for(&c, &server.url(&format!("/api/events/{id}")), |d| {
        d["matches"][0]["status"] == "done"
    })
    .await;
    let attempts = detail["matches"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["exit_code"], 1);
    assert_eq!(attempts[0]["stderr"], "first-fails\n");
    assert_eq!(attempts[1]["status"], "ok");
    assert_eq!(
        attempts[0]["run_id"], attempts[1]["run_id"],
        "retries keep the run id"
    );

    let replay: Value = c
        .post(server.url(&format!("/api/events/{id}/replay")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["replay_of"], id.as_str());
    assert_ne!(replay["id"], id.as_str());
    let replay_id = replay["id"].as_str().unwrap();
    assert_eq!(
        env.wait_lines("runs.txt", 2, Duration::from_secs(15)),
        vec![
            format!("ok {id}:flaky:0"),
            format!("ok {replay_id}:flaky:0")
        ],
        "the replay ran the rule again as a new event"
    );
    let missing = c
        .post(server.url("/api/events/nope/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_health_answers() {
    let (env, server) = one_rule_server(&[]);
    let c = client();
    post_ipf(&c, &server, "s3cret", br#"{"n":1}"#).await;
    post_ipf(&c, &server, "wrong", br#"{"n":1}"#).await;
    env.wait_lines("runs.txt", 1, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let text = server.metrics().await;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            assert!(
                rest.starts_with(" HELP ") || rest.starts_with(" TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN",
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
            "bad name: {line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
    }
    for name in [
        "rulehook_events_received_total",
        "rulehook_events_accepted_total",
        "rulehook_events_rejected_total{source=\"ipf\",reason=\"invalid_signature\"} 1",
        "rulehook_rule_matches_total",
        "rulehook_action_runs_total{action=\"run_script\",result=\"ok\"} 1",
        "rulehook_action_duration_seconds_bucket",
        "rulehook_jobs_in_memory",
        "rulehook_journal_commit_seconds_bucket",
        "rulehook_jobs_pending",
        "rulehook_jobs_max_pending",
        // Before any reload, at 0: an alert on `increase(…[5m]) > 0` sees the first failed
        // reload only if the series was there before it (it appeared at 1, unseen).
        "\nrulehook_reloads_total 0\n",
        "\nrulehook_reload_errors_total 0\n",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // As `promtool check metrics` requires: every metric family has its HELP text.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split(' ').next().unwrap();
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no HELP text:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn send_signs_like_every_kind() {
    let env = Env::new();
    record_script(&env);
    env.rulebook(
        "s.yml",
        r#"
sources:
  - { name: ipf, kind: ipfabric, secret: k1 }
  - { name: nb, kind: netbox, secret: k2 }
  - { name: sw, kind: standard-webhooks, secret: "whsec_c2VjcmV0LWtleS1mb3Itc3RhbmRhcmQtd2ViaG9va3M=" }
  - { name: ih, kind: infrahub, secret: k4 }
  - { name: gh, kind: github, secret: k5 }
  - { name: gl, kind: gitlab, secret: k6 }
  - { name: dn, kind: basic, username: u, password: k7 }
  - { name: eem, kind: bearer, secret: k8 }
  - { name: gen, kind: hmac, header: X-Sig, algorithm: sha512, encoding: base64, prefix: "v=", secret: k9 }
  - { name: open, kind: none }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let body = env.path("body.json");
    std::fs::write(&body, r#"{"hello":"world"}"#).unwrap();
    let cases = [
        ("ipf", "ipfabric", "k1", vec![]),
        ("nb", "netbox", "k2", vec![]),
        (
            "sw",
            "standard-webhooks",
            "whsec_c2VjcmV0LWtleS1mb3Itc3RhbmRhcmQtd2ViaG9va3M=",
            vec![],
        ),
        ("ih", "infrahub", "k4", vec![]),
        ("gh", "github", "k5", vec![]),
        ("gl", "gitlab", "k6", vec![]),
        ("dn", "basic", "u:k7", vec![]),
        ("eem", "bearer", "k8", vec![]),
        (
            "gen",
            "hmac",
            "k9",
            vec![
                "--header",
                "X-Sig",
                "--algorithm",
                "sha512",
                "--encoding",
                "base64",
                "--prefix",
                "v=",
            ],
        ),
        ("open", "none", "", vec![]),
    ];
    for (src, kind, secret, extra) in cases {
        let run = |secret: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
                .args([
                    "send",
                    &server.url(&format!("/hooks/{src}")),
                    "--kind",
                    kind,
                    "--secret",
                    secret,
                    "--file",
                ])
                .arg(&body)
                .args(&extra)
                .output()
                .unwrap()
        };
        let ok = run(secret);
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(
            ok.status.success() && out.starts_with("202"),
            "{kind}: {out} {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        if kind != "none" {
            let wrong = if kind == "standard-webhooks" {
                "whsec_b3RoZXIta2V5LW9mLXRoZS1zYW1lLWxlbmd0aC0xMjM0NTY3OA==".to_string()
            } else {
                format!("{secret}x")
            };
            let bad = run(&wrong);
            let out = String::from_utf8_lossy(&bad.stdout);
            assert!(
                !bad.status.success() && out.starts_with("401"),
                "{kind} wrong secret: {out}"
            );
        }
    }
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let (env, server) = one_rule_server(&["--tls-self-signed"]);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let lines = server.stdout.lock().unwrap().clone();
    let fp = lines
        .iter()
        .find_map(|l| l.strip_prefix("tls certificate sha256 fingerprint "))
        .expect("fingerprint printed")
        .to_string();
    assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
    // The certificate served is the one whose fingerprint was printed.
    let port = server.base.rsplit(':').next().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256")])
        .output()
        .unwrap();
    let served = String::from_utf8_lossy(&out.stdout);
    assert!(
        served.trim().ends_with(&fp),
        "served {served}, printed {fp}"
    );
    let body = env.path("b.json");
    std::fs::write(&body, r#"{"n":1}"#).unwrap();
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args([
            "send",
            &server.url("/hooks/ipf"),
            "--kind",
            "ipfabric",
            "--secret",
            "s3cret",
            "--insecure",
            "--file",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        env.wait_lines("runs.txt", 1, Duration::from_secs(10)).len(),
        1
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: eem, kind: bearer, secret: t, rate_limit: { per_second: 0.5, burst: 2 } }\n");
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let mut statuses = Vec::new();
    let mut retry = None;
    for i in 0..4 {
        let resp = c
            .post(server.url("/hooks/eem"))
            .header("authorization", "Bearer t")
            .body(format!(r#"{{"i":{i}}}"#))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status().as_u16() == 429 {
            retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, vec![202, 202, 429, 429]);
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&secs), "{secs}");
}

#[tokio::test]
async fn sigterm_lets_running_scripts_finish() {
    let env = Env::new();
    env.script(
        "slow.sh",
        "#!/bin/sh\necho started >> \"$OUT_DIR/started.txt\"\nsleep 1\necho done >> \"$OUT_DIR/runs.txt\"\n",
    );
    env.rulebook("a.yml", &format!("{SOURCE}rules:\n  - name: slow\n    actions:\n      - run_script: {{ script: slow.sh }}\n"));
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let (_, resp) = post_ipf(&c, &server, "s3cret", br#"{"x":1}"#).await;
    env.wait_lines("started.txt", 1, Duration::from_secs(10));
    assert!(
        env.lines("runs.txt").is_empty(),
        "the script ended too soon"
    );
    server.terminate();
    assert_eq!(
        env.lines("runs.txt"),
        vec!["done"],
        "the running script finished before the exit"
    );
    // The job is recorded as done: a restart does not run it again.
    let server = Server::start(&env, &[], &[]);
    let id = resp["id"].as_str().unwrap();
    let detail = get(&c, &server.url(&format!("/api/events/{id}"))).await;
    assert_eq!(detail["matches"][0]["status"], "done", "{detail}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.lines("runs.txt").len(), 1);
}

#[test]
fn slow_bodies_time_out_and_connections_are_capped() {
    use std::io::{Read, Write};
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    let server = Server::start(
        &env,
        &["--body-timeout", "500ms", "--max-connections", "2"],
        &[],
    );
    let addr = server.base.trim_start_matches("http://").to_string();

    // Headers promise 100 bytes; none come.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        slow,
        "POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(slow);
    std::thread::sleep(Duration::from_millis(100));

    // Two idle connections fill the cap; a third is closed without an answer.
    let _a = std::net::TcpStream::connect(&addr).unwrap();
    let _b = std::net::TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = write!(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    // Closed, not left hanging: the read ends at once with end of stream or a reset, never by
    // the read timeout (which would also leave `buf` empty).
    let asked = std::time::Instant::now();
    let mut buf = String::new();
    match third.read_to_string(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("over the cap, yet answered {n} bytes: {buf}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "over the cap: expected the connection closed, got {e:?} after {:?}",
            asked.elapsed()
        ),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "over the cap: the connection was left open for {:?}",
        asked.elapsed()
    );
    drop(_a);
    drop(_b);
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = std::net::TcpStream::connect(&addr).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        fourth,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut ok = String::new();
    let _ = fourth.read_to_string(&mut ok);
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn log_json_writes_one_json_object_per_line() {
    let (env, server) = one_rule_server(&["--log-json"]);
    let c = client();
    post_ipf(&c, &server, "s3cret", br#"{"n":1}"#).await;
    post_ipf(&c, &server, "nope", br#"{"n":1}"#).await;
    // Accepted events are logged at debug (no line per event by default); rejections at info.
    post_ipf(&c, &server, "nope", br#"{"n":2}"#).await;
    env.wait_lines("runs.txt", 1, Duration::from_secs(10));
    let log = server.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("invalid_signature")),
        "{log}"
    );
    assert!(!log.contains("s3cret"));
}
