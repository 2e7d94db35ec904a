//! The console under load, in one process and one run:
//!
//! 1. fills the history with `EVENTS` events (default 100,000) through `Engine::ingest` — half
//!    match a `log` rule, one in 500 a rule whose script fails (dead letters) — and waits for
//!    every job to finish;
//! 2. times each console page in the server (the router called directly, no network): p50 and
//!    p90 of 41 requests after 5 warm-ups, against the admin API's JSON list of the same 100
//!    rows as the same-run baseline;
//! 3. measures ingest throughput over loopback HTTP (`SENDS` signed events from 16 keep-alive
//!    connections) with no console open and with `PAGES` (default 20) live event pages
//!    streaming, alternating (`ROUNDS`, default 10: five each); the ratio of the medians is the
//!    figure.
//!
//! `cargo bench --bench console` (`EVENTS=… PAGES=… SENDS=… ROUNDS=…` to change the sizes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use rulehook::engine::{Engine, Settings};
use rulehook::rules::Dirs;
use rulehook::server::{AppState, app};
use rulehook::store::Store;
use rulehook::verify::VerifiedEvent;
use serde_json::json;
use tower::ServiceExt;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn p(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    p(&mut v, 0.5)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let events = var("EVENTS", 100_000);
    let pages = var("PAGES", 20);
    let sends = var("SENDS", 4_000);
    let rounds = var("ROUNDS", 10);
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["rulebooks", "scripts", "templates", "data"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    std::fs::write(
        dir.path().join("rulebooks/bench.yml"),
        r#"sources:
  - { name: bench, kind: bearer, secret: bench-token }
  - { name: other, kind: bearer, secret: other-token }
rules:
  - name: deploy
    condition: '$.kind == "deploy"'
    actions:
      - log: { message: "deploy {{ event.n }}" }
  - name: page
    condition: '$.severity == "critical"'
    actions:
      - run_script: { script: fail.sh }
"#,
    )
    .expect("rulebook");
    let script = dir.path().join("scripts/fail.sh");
    std::fs::write(&script, "#!/bin/sh\necho unreachable >&2\nexit 1\n").expect("script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let dirs = Dirs {
        rulebooks: dir.path().join("rulebooks"),
        scripts: dir.path().join("scripts"),
        templates: dir.path().join("templates"),
    };
    let set = rulehook::rules::load(&dirs).expect("rulebooks load");
    let data = dir.path().join("data");
    let store = Store::embedded(&data).expect("store");
    let engine = Engine::new(store, Arc::new(set), Settings::default());
    engine.start();

    // 1. The history.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (engine, next) = (engine.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events as u64 {
                    return;
                }
                let body = json!({
                    "n": n,
                    "kind": if n % 2 == 0 { "deploy" } else { "other" },
                    "severity": if n % 500 == 0 { "critical" } else { "low" },
                    "site": format!("site-{}", n % 20),
                });
                let source = if n % 10 == 0 { "other" } else { "bench" };
                let ev = VerifiedEvent::replay(source, "bearer", body, &[], "bench-fill");
                engine.ingest(ev).await.expect("ingest");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    loop {
        let d = engine.store().queue.depth();
        if d.ready + d.delayed + d.leased == 0 && !d.spilled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "history: {events} events stored and their jobs run in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let state = AppState {
        engine: engine.clone(),
        admin_token: None,
        reloader: None,
        metrics: None,
        body_timeout: Duration::from_secs(30),
        guard: Default::default(),
        console: Arc::new(rulehook::console::Settings::new(Some(data.clone()))),
    };
    let router = app(state);
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let recent = engine
        .store()
        .history
        .events(rulehook::store::EventFilter {
            rule: Some("page".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("events")
        .pop()
        .expect("a dead letter's event");

    // 2. Page times.
    let try_body = format!(
        "token={}&source=bench&event=%7B%22kind%22%3A%22deploy%22%2C%22n%22%3A1%7D",
        form_token(&router, peer).await
    );
    let pages_timed: Vec<(&str, String, Option<String>)> = vec![
        (
            "baseline: GET /api/events (JSON, 100 rows)",
            "/api/events".into(),
            None,
        ),
        ("events", "/".into(), None),
        ("events ?source=other", "/?source=other".into(), None),
        ("events ?status=failed", "/?status=failed".into(), None),
        ("events ?rule=page", "/?rule=page".into(), None),
        (
            "events ?status=duplicate",
            "/?status=duplicate".into(),
            None,
        ),
        ("events ?since=5m", "/?since=5m".into(), None),
        (
            "event (a dead letter's)",
            format!("/console/events/{}", recent.id),
            None,
        ),
        ("dead letters", "/console/dead-letters".into(), None),
        ("rules", "/console/rules".into(), None),
        ("try (POST)", "/console/try".into(), Some(try_body)),
        ("overview", "/console/overview".into(), None),
    ];
    println!("\n| page | p50 ms | p90 ms | p50 ÷ baseline p50 |\n| --- | --- | --- | --- |");
    let mut base = None;
    for (name, path, post) in &pages_timed {
        let mut samples = Vec::new();
        for i in 0..46 {
            let mut req = match post {
                None => Request::get(path.as_str()).body(Body::empty()),
                Some(b) => Request::post(path.as_str())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(b.clone())),
            }
            .expect("request");
            req.extensions_mut().insert(ConnectInfo(peer));
            let t = Instant::now();
            let resp = router.clone().oneshot(req).await.expect("response");
            let status = resp.status();
            let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(status.is_success(), "{path}: {status}");
            if i >= 5 {
                samples.push(ms);
            }
        }
        let (p50, p90) = (p(&mut samples, 0.5), p(&mut samples, 0.9));
        let b = *base.get_or_insert(p50);
        println!("| {name} | {p50:.2} | {p90:.2} | {:.2} |", p50 / b);
    }

    // 3. Ingest with and without live pages.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rulehook::server::listen::serve(
        listener,
        router.clone(),
        None,
        rulehook::server::listen::Limits::new(1024),
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(1),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let base_url = format!("http://{addr}");
    let mut rates = [Vec::new(), Vec::new()];
    let mut least_seen = u64::MAX;
    let counter = Arc::new(AtomicU64::new(events as u64 * 10));
    for round in 0..rounds {
        let live = round % 2 == 1;
        let mut readers = tokio::task::JoinSet::new();
        let seen = Arc::new((0..pages).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        if live {
            for i in 0..pages {
                let (client, url, seen) = (
                    client.clone(),
                    format!("{base_url}/console/live"),
                    seen.clone(),
                );
                readers.spawn(async move {
                    let mut resp = client.get(url).send().await.expect("live page");
                    while let Ok(Some(chunk)) = resp.chunk().await {
                        // One `"id":` per row in the batches.
                        let n = chunk.windows(5).filter(|w| w == b"\"id\":").count();
                        seen[i].fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let t = Instant::now();
        let mut senders = tokio::task::JoinSet::new();
        let left = Arc::new(AtomicU64::new(sends as u64));
        for _ in 0..16 {
            let (client, url, left, counter) = (
                client.clone(),
                format!("{base_url}/hooks/bench"),
                left.clone(),
                counter.clone(),
            );
            senders.spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                    .is_ok()
                {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let body = json!({"n": n, "kind": if n % 2 == 0 { "deploy" } else { "other" }});
                    let resp = client
                        .post(&url)
                        .bearer_auth("bench-token")
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .expect("post");
                    assert_eq!(resp.status().as_u16(), 202);
                }
            });
        }
        while senders.join_next().await.is_some() {}
        let rate = sends as f64 / t.elapsed().as_secs_f64();
        if live {
            tokio::time::sleep(Duration::from_millis(300)).await;
            least_seen = least_seen.min(
                seen.iter()
                    .map(|s| s.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0),
            );
            readers.abort_all();
            while readers.join_next().await.is_some() {}
        }
        rates[usize::from(live)].push(rate);
        println!(
            "round {round}: {} live pages, {rate:.0} events/s",
            if live { pages } else { 0 }
        );
    }
    let (none, with) = (median(rates[0].clone()), median(rates[1].clone()));
    println!(
        "\ningest: median {none:.0} events/s with no console open, {with:.0} with {pages} live pages: ratio {:.3}",
        with / none
    );
    println!("each live page received at least {least_seen} of the {sends} events of its round");
    let _ = stop_tx.send(());
    let _ = server.await;
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The console's form token, read from a page.
async fn form_token(router: &axum::Router, peer: SocketAddr) -> String {
    let mut req = Request::get("/console/try")
        .body(Body::empty())
        .expect("request");
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = router.clone().oneshot(req).await.expect("response");
    let html = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let html = String::from_utf8_lossy(&html);
    let key = "name=\"token\" value=\"";
    let at = html.find(key).expect("a form token") + key.len();
    html[at..].split('"').next().unwrap_or_default().to_string()
}
