//! Hardening, end to end: secrets never recorded or logged, JSON bodies escaped, the
//! admin token for loopback too, forged requests kept off a sender's budget, back pressure, idle
//! connections.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, Server, client, post};
use serde_json::Value;

/// A local receiver that keeps every body it is sent.
async fn receiver() -> (Arc<Mutex<Vec<String>>>, String) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = seen.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let keep = keep.clone();
        async move {
            keep.lock().unwrap().push(body);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, format!("http://{addr}"))
}

async fn get_text(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

async fn wait_jobs_finished(c: &reqwest::Client, server: &Server, n: usize) -> Value {
    let start = Instant::now();
    loop {
        let v: Value = c
            .get(server.url("/api/events?limit=100"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let finished = events.iter().filter(|e| e["status"] != "pending").count();
        if finished >= n {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{finished} of {n} event(s) finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn no_secret_in_the_history_logs_errors_or_metrics() {
    let env = Env::new();
    let (_seen, base) = receiver().await;
    let file_secret = env.path("token.txt");
    std::fs::write(&file_secret, "file-secret-7f3a\n").unwrap();
    let secrets = [
        ("RH_T_SCRIPT_ENV", "script-env-secret-91c2"),
        ("RH_T_SCRIPT_ARG", "script-arg-secret-44de"),
        ("RH_T_LOG", "log-secret-0b7e"),
        ("RH_T_URL", "url-secret-5a61"),
        ("RH_T_BODY", "body-secret-c0d9"),
        ("RH_T_BAD", "bad-body-secret-8e21"),
        ("RH_T_HMAC", "hmac-source-secret-3f0c"),
        ("RULEHOOK_ADMIN_TOKEN", "admin-token-secret-77aa"),
    ];
    env.rulebook(
        "s.yml",
        &format!(
            r#"
sources:
  - name: gen
    kind: hmac
    header: X-Sig
    algorithm: sha256
    encoding: hex
    secret: "${{env:RH_T_HMAC}}"
rules:
  - name: all
    sources: [gen]
    actions:
      - run_script:
          script: echo.sh
          args: ["${{env:RH_T_SCRIPT_ARG}}", "${{file:{file}}}"]
          env: {{ TOKEN: "${{env:RH_T_SCRIPT_ENV}}" }}
      - log: {{ message: "using ${{env:RH_T_LOG}} for {{{{ event.n }}}}" }}
      - post_webhook:
          url: "{base}/hook?key=${{env:RH_T_URL}}"
          body: '{{"token": "${{env:RH_T_BODY}}", "n": {{{{ event.n }}}}}}'
          retries: 0
      - post_webhook:
          url: "http://127.0.0.1:9/?key=${{env:RH_T_URL}}"
          retries: 0
  - name: bad
    sources: [gen]
    actions:
      - post_webhook:
          url: "{base}/bad"
          body: '{{"token": "${{env:RH_T_BAD}}", oops}}'
          retries: 0
"#,
            file = file_secret.display()
        ),
    );
    // The script prints what it was given: its output is recorded too.
    env.script(
        "echo.sh",
        "#!/bin/sh\necho \"$1 $2 $TOKEN\"\necho \"$TOKEN\" >&2\n",
    );
    let vars: Vec<(&str, String)> = secrets
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .chain([("RUST_LOG", "trace".to_string())])
        .collect();
    let server = Server::start(&env, &[], &vars);
    let c = client();
    let body = br#"{"n": 1}"#;
    let sig = hex::encode(rulehook::verify::mac::sign(
        rulehook::verify::Algorithm::Sha256,
        b"hmac-source-secret-3f0c",
        &[body],
    ));
    let (st, _) = post(
        &c,
        &server.url("/hooks/gen"),
        &[("x-sig".into(), sig.clone())],
        body,
    )
    .await;
    assert_eq!(st, 202);
    // A refused request's error body.
    let (st, refused) = post(
        &c,
        &server.url("/hooks/gen"),
        &[("x-sig".into(), "00".into())],
        body,
    )
    .await;
    assert_eq!(st, 401);
    let listing = wait_jobs_finished(&c, &server, 1).await;
    let id = listing["events"][0]["id"].as_str().unwrap().to_string();
    let detail = get_text(&c, &server.url(&format!("/api/events/{id}"))).await;
    let jobs = get_text(&c, &server.url("/api/jobs?status=failed")).await;
    let metrics = get_text(&c, &server.url("/metrics")).await;
    // Let the log lines of the last actions reach the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_text();
    let detail_json: Value = serde_json::from_str(&detail).unwrap();
    // The history still shows what ran, masked.
    assert!(detail.contains("***"), "{detail}");
    assert!(detail.contains("does not render to valid JSON"), "{detail}");
    assert!(
        !detail_json["headers"]
            .as_object()
            .map(|h| h.contains_key("x-sig"))
            .unwrap_or(false)
            && !detail.contains(&sig),
        "the hmac source's signature header is kept: {detail}"
    );
    assert!(log.contains("using *** for 1"), "the log action ran");
    assert!(
        jobs.contains(&format!("{id}:bad")),
        "the bad job is a dead letter (else that place is checked empty): {jobs}"
    );
    for (name, secret) in secrets.iter().chain([("file", "file-secret-7f3a")].iter()) {
        for (place, text) in [
            ("history", &detail),
            ("dead letters", &jobs),
            ("log", &log),
            ("metrics", &metrics),
            ("error body", &refused.to_string()),
            ("listing", &listing.to_string()),
        ] {
            assert!(
                !text.contains(secret),
                "{name}'s value appears in the {place}"
            );
        }
    }
}

#[tokio::test]
async fn inline_json_bodies_escape_event_data() {
    let env = Env::new();
    let (seen, base) = receiver().await;
    env.rulebook(
        "j.yml",
        &format!(
            r#"
sources:
  - {{ name: open, kind: none }}
rules:
  - name: fwd
    sources: [open]
    actions:
      - post_webhook: {{ url: "{base}/x", body: '{{"v": "{{{{ event.t }}}}"}}', retries: 0 }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let evil = r#"x", "admin": true, "y": "z"#;
    let body = serde_json::to_vec(&serde_json::json!({ "t": evil })).unwrap();
    let (st, _) = post(&c, &server.url("/hooks/open"), &[], &body).await;
    assert_eq!(st, 202);
    let start = Instant::now();
    while seen.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("the webhook was sent");
    let v: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(v["v"], evil, "{sent}");
    assert!(v.get("admin").is_none(), "{sent}");
}

#[tokio::test]
async fn forged_requests_do_not_spend_the_senders_rate_limit() {
    let env = Env::new();
    env.rulebook(
        "a.yml",
        "sources:\n  - { name: eem, kind: bearer, secret: right-token, rate_limit: { per_second: 1, burst: 2 } }\n",
    );
    let server = Server::start(&env, &["--failed-auth-per-second", "1"], &[]);
    let c = client();
    let send = |token: &'static str, i: u32| {
        let c = c.clone();
        let url = server.url("/hooks/eem");
        async move {
            c.post(url)
                .header("authorization", format!("Bearer {token}"))
                .body(format!(r#"{{"i":{i}}}"#))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut forged = Vec::new();
    for i in 0..3 {
        forged.push(send("wrong", i).await);
    }
    assert_eq!(forged, vec![401, 401, 401]);
    // The real sender still has its whole burst.
    assert_eq!(send("right-token", 10).await, 202);
    assert_eq!(send("right-token", 11).await, 202);
    assert_eq!(
        send("right-token", 12).await,
        429,
        "its own limit still holds"
    );
    // Failed verifications are limited per client address: past 50 at once, 429 (back off)...
    let mut last = 0;
    for i in 0..60 {
        last = send("wrong", 100 + i).await;
    }
    assert_eq!(last, 429);
    // ... while the real sender at the same address still gets through (after its own limit
    // refilled).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(send("right-token", 13).await, 202);
}

#[tokio::test]
async fn past_max_pending_new_events_get_503_with_retry_after() {
    let env = Env::new();
    env.rulebook(
        "p.yml",
        "sources:\n  - { name: open, kind: none }\nrules:\n  - name: slow\n    sources: [open]\n    actions:\n      - run_script: { script: wait.sh }\n",
    );
    env.script(
        "wait.sh",
        "#!/bin/sh\nwhile [ ! -e \"$OUT_DIR/go\" ]; do sleep 0.05; done\n",
    );
    let server = Server::start(&env, &["--max-pending", "3", "--concurrency", "1"], &[]);
    let c = client();
    let mut statuses = Vec::new();
    let mut retry = None;
    for i in 0..5 {
        let resp = c
            .post(server.url("/hooks/open"))
            .body(format!(r#"{{"i":{i}}}"#))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 503 {
            retry = resp.headers().get("retry-after").cloned();
        }
    }
    assert_eq!(statuses, vec![202, 202, 202, 503, 503]);
    assert!(retry.is_some(), "503 carries Retry-After");
    let metrics = get_text(&c, &server.url("/metrics")).await;
    assert!(metrics.contains("rulehook_jobs_pending 3"), "{metrics}");
    assert!(metrics.contains("rulehook_jobs_max_pending 3"), "{metrics}");
    std::fs::write(env.path("go"), "").unwrap();
    let start = Instant::now();
    loop {
        let resp = c
            .post(server.url("/hooks/open"))
            .body(r#"{"i":99}"#)
            .send()
            .await
            .unwrap();
        if resp.status() == 202 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Absence jobs that only wait for their deadline do no work: they do not lock every source
/// out (up to --max-pending of them), while jobs that run still do.
#[tokio::test]
async fn waiting_absences_are_not_back_pressure() {
    let env = Env::new();
    env.rulebook(
        "p.yml",
        r#"sources:
  - { name: open, kind: none }
  - { name: mon, kind: none }
rules:
  - name: slow
    sources: [open]
    actions:
      - run_script: { script: wait.sh }
  - name: stays-down
    sources: [mon]
    correlate:
      within: 1h
      group_by: ['$.device']
      absence:
        after: { name: down, condition: '$.state == "down"' }
        missing: { name: up, condition: '$.state == "up"' }
    actions:
      - log: { message: down }
"#,
    );
    env.script(
        "wait.sh",
        "#!/bin/sh
while [ ! -e \"$OUT_DIR/go\" ]; do sleep 0.05; done\n",
    );
    let server = Server::start(&env, &["--max-pending", "4", "--concurrency", "1"], &[]);
    let c = client();
    let send = |path: &'static str, body: String| {
        let req = c.post(server.url(path)).body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for i in 0..4 {
        let body = format!(r#"{{"device":"d{i}","state":"down"}}"#);
        assert_eq!(send("/hooks/mon", body).await, 202, "down {i}");
    }
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(send("/hooks/open", format!(r#"{{"i":{i}}}"#)).await);
    }
    assert_eq!(
        statuses,
        vec![202, 202, 202, 202, 503],
        "4 waiting + 4 that run"
    );
    let metrics = get_text(&c, &server.url("/metrics")).await;
    assert!(metrics.contains("rulehook_jobs_waiting 4"), "{metrics}");
    std::fs::write(env.path("go"), "").unwrap();
}

#[tokio::test]
async fn admin_token_can_be_required_from_loopback_too() {
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    let token = ("RULEHOOK_ADMIN_TOKEN", "adm-tok-123".to_string());
    let server = Server::start(&env, &["--admin-require-token"], &[token]);
    let c = client();
    for path in ["/api/events", "/metrics", "/api/status"] {
        let code = |auth: Option<&'static str>| {
            let mut req = c.get(server.url(path));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(code(None).await, 401, "{path} without the token");
        assert_eq!(code(Some("Bearer wrong")).await, 401, "{path}");
        assert_eq!(code(Some("bearer adm-tok-123")).await, 200, "{path}");
        assert_eq!(code(Some("BEARER  adm-tok-123")).await, 200, "{path}");
    }
    // /healthz stays open for load balancers.
    let st = c.get(server.url("/healthz")).send().await.unwrap().status();
    assert_eq!(st, 200);
    // Without a token to require, it does not start.
    let out = env
        .cmd(&["serve", "--admin-require-token", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(env.path("data2"))
        .env_remove("RULEHOOK_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RULEHOOK_ADMIN_TOKEN"));
}

/// Raises this process's open-file limit to its hard limit (2,000 sockets need it).
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

#[tokio::test]
async fn idle_connections_do_not_lock_anyone_out() {
    let limit = raise_fd_limit();
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    let server = Server::start(&env, &["--header-timeout", "2s"], &[]);
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let want = 2000usize.min(limit.saturating_sub(200) as usize);
    // Idle connections from another loopback address, and half-sent requests.
    let mut idle = Vec::new();
    for i in 0..want {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(mut s) = sock.connect(addr).await {
            if i % 2 == 0 {
                use tokio::io::AsyncWriteExt;
                let _ = s
                    .write_all(b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nX-Half: ")
                    .await;
            }
            idle.push(s);
        }
    }
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    // A new client still gets its answer, at once.
    let c = client();
    let started = Instant::now();
    let st = c.get(server.url("/healthz")).send().await.unwrap().status();
    assert_eq!(st, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The idle connections are closed after the header timeout, freeing the cap.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut closed = 0;
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => closed += 1, // an error answer (408), then the close
            Err(_) => {}
        }
    }
    assert_eq!(closed, idle.len(), "every idle connection was closed");
    // The same address is served again.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn alive(pid: i32) -> bool {
    // A zombie is not running: look at its state too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

fn slow_script_env() -> Env {
    let env = Env::new();
    env.rulebook(
        "s.yml",
        "sources:\n  - { name: open, kind: none }\nrules:\n  - name: slow\n    sources: [open]\n    actions:\n      - run_script: { script: slow.sh, timeout: 5m }\n",
    );
    // Records its pid and its child's, then works for a long time.
    env.script(
        "slow.sh",
        "#!/bin/sh\nsleep 600 &\necho \"$$ $!\" >> \"$OUT_DIR/started.txt\"\nwait\n",
    );
    env
}

#[tokio::test]
async fn after_a_crash_a_surviving_script_is_ended_before_it_runs_again() {
    let env = slow_script_env();
    let mut server = Server::start(&env, &[], &[]);
    let c = client();
    let (st, _) = post(&c, &server.url("/hooks/open"), &[], br#"{"a":1}"#).await;
    assert_eq!(st, 202);
    let first = env.wait_lines("started.txt", 1, Duration::from_secs(15));
    assert_eq!(first.len(), 1);
    let pids: Vec<i32> = first[0].split(' ').map(|p| p.parse().unwrap()).collect();
    server.kill9();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "the script outlives a kill -9"
    );
    let _server = Server::start(&env, &[], &[]);
    // The job runs again (at least once), but never alongside the survivor.
    let lines = env.wait_lines("started.txt", 2, Duration::from_secs(30));
    assert_eq!(lines.len(), 2, "the job ran again");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "the previous run's group was ended"
    );
}

#[tokio::test]
async fn after_the_shutdown_grace_script_groups_are_killed() {
    let env = slow_script_env();
    let mut server = Server::start(&env, &["--grace", "1s"], &[]);
    let c = client();
    let (st, _) = post(&c, &server.url("/hooks/open"), &[], br#"{"a":1}"#).await;
    assert_eq!(st, 202);
    let first = env.wait_lines("started.txt", 1, Duration::from_secs(15));
    let pids: Vec<i32> = first[0].split(' ').map(|p| p.parse().unwrap()).collect();
    server.terminate();
    let start = Instant::now();
    while pids.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "a script group outlived the service"
    );
}

#[test]
fn a_symlink_loop_under_templates_is_reported_not_followed() {
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    std::os::unix::fs::symlink("..", env.path("templates/x")).unwrap();
    let mut child = env
        .cmd(&["check"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("check hangs on a symlink loop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("templates/x") && text.contains("loop"),
        "{text}"
    );
}

#[tokio::test]
async fn huge_windows_in_a_rulebook_are_errors_not_panics() {
    let env = Env::new();
    env.rulebook(
        "w.yml",
        "sources:\n  - { name: open, kind: none, dedup_window: 9999999999d }\nrules:\n  - name: r\n    sources: [open]\n    throttle: { once_within: 99999999999d }\n    actions:\n      - log: { message: hi }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("too large"), "{text}");
    // The largest window accepted still works end to end (no overflow in the journal).
    env.rulebook(
        "w.yml",
        "sources:\n  - { name: open, kind: none, dedup_window: 36500d }\nrules:\n  - name: r\n    sources: [open]\n    throttle: { once_within: 36500d }\n    actions:\n      - log: { message: hi }\n",
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    for i in 0..2 {
        let (st, _) = post(
            &c,
            &server.url("/hooks/open"),
            &[],
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
        assert_eq!(st, 202);
    }
    let v: Value = c
        .get(server.url("/api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 2, "{v}");
    let id = v["events"][0]["id"].as_str().unwrap();
    let st = c
        .get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, 200);
    assert!(server.log_text().find("panicked").is_none());
}

#[tokio::test]
async fn a_deleted_data_directory_answers_503_not_202() {
    let env = Env::new();
    env.rulebook(
        "a.yml",
        "sources:\n  - { name: open, kind: none }\nrules:\n  - name: r\n    sources: [open]\n    actions:\n      - log: { message: hi }\n",
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let (st, _) = post(&c, &server.url("/hooks/open"), &[], br#"{"i":0}"#).await;
    assert_eq!(st, 202);
    let health = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    std::fs::remove_dir_all(env.path("data")).unwrap();
    for i in 1..4 {
        let (st, body) = post(
            &c,
            &server.url("/hooks/open"),
            &[],
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
        assert_eq!(st, 503, "{body}");
    }
    // Wait out the probe's cache: /healthz says which part failed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let health = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let v: Value = health.json().await.unwrap();
    assert_eq!(v["failed"][0]["part"], "journal write", "{v}");
    assert!(
        server.log_text().contains("deleted or replaced"),
        "said loudly"
    );
}

#[tokio::test]
async fn no_shared_memory_file_can_bring_the_service_down() {
    let env = Env::new();
    env.rulebook("a.yml", "sources:\n  - { name: open, kind: none }\n");
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let (st, _) = post(&c, &server.url("/hooks/open"), &[], br#"{"i":0}"#).await;
    assert_eq!(st, 202);
    let shm = env.path("data/journal.db-shm");
    assert!(
        !shm.exists(),
        "the WAL index is in memory, not in a shared file"
    );
    // Even a truncated one in its place changes nothing.
    std::fs::write(&shm, b"").unwrap();
    for i in 1..20 {
        let (st, _) = post(
            &c,
            &server.url("/hooks/open"),
            &[],
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
        assert_eq!(st, 202);
    }
    let st = c.get(server.url("/healthz")).send().await.unwrap().status();
    assert_eq!(st, 200);
}
