//! Admin API queries on a large journal: EVENTS events (default 100,000), each with a pending
//! job (no workers run), then every history query is timed while `/healthz` is polled.
//!
//! `cargo bench --bench admin_queries` (EVENTS=100000 RUNS=3). Prints, per query, the slowest
//! of RUNS answers and the slowest `/healthz` answer seen while it ran; the targets (docs/benchmarks.md)
//! are 100 ms and 10 ms. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::http::HeaderMap;
use rulehook::engine::{Engine, Settings};
use rulehook::rules::{Dirs, load};
use rulehook::server::{AppState, app};
use rulehook::store::Store;
use rulehook::verify::{Request, Verifier};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let events = env_num("EVENTS", 100_000);
    let runs = env_num("RUNS", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    std::fs::write(
        dir.path().join("rulebooks/a.yml"),
        "sources:\n  - { name: open, kind: none }\n  - { name: other, kind: none }\nrules:\n  - name: slow\n    sources: [open]\n    condition: '$.n >= 0'\n    actions:\n      - log: { message: x }\n",
    )
    .expect("rulebook");
    let rules = load(&Dirs {
        rulebooks: dir.path().join("rulebooks"),
        scripts: dir.path().join("scripts"),
        templates: dir.path().join("templates"),
    })
    .expect("rules");
    let store = Store::embedded(&dir.path().join("data")).expect("store");
    // Not started: every job stays pending.
    let engine = Engine::new(store, Arc::new(rules), Settings::default());
    let t = Instant::now();
    let mut last_id = String::new();
    let batch = 512;
    for start in (0..events).step_by(batch) {
        let mut tasks = Vec::new();
        for n in start..(start + batch).min(events) {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                let body =
                    bytes::Bytes::from(format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(200)));
                let request = Request {
                    source: "open",
                    headers: &HeaderMap::new(),
                    body: &body,
                    format: rulehook::body::BodyFormat::Json,
                    dedup_window: None,
                    now: SystemTime::now(),
                };
                let v = Verifier::None.verify(request, None).expect("verify");
                engine.ingest(v).await.expect("ingest").id
            }));
        }
        for task in tasks {
            last_id = task.await.expect("task");
        }
    }
    let depth = engine.store().queue.depth();
    println!(
        "{events} events stored in {:.1} s; pending jobs: {}",
        t.elapsed().as_secs_f64(),
        depth.pending
    );
    let state = AppState {
        engine: engine.clone(),
        admin_token: None,
        reloader: None,
        metrics: None,
        body_timeout: Duration::from_secs(5),
        guard: Default::default(),
        console: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let base = format!("http://{addr}");
    let c = rulehook::actions::http::client().clone();
    let queries = [
        "/api/events".to_string(),
        "/api/events?status=failed".into(),
        "/api/events?status=pending".into(),
        "/api/events?status=done".into(),
        "/api/events?status=unmatched".into(),
        "/api/events?status=throttled".into(),
        "/api/events?source=other".into(),
        "/api/events?rule=slow".into(),
        "/api/events?rule=nope".into(),
        "/api/events?since=1m".into(),
        "/api/events?limit=1000".into(),
        format!("/api/events/{last_id}"),
        "/api/jobs".into(),
        "/api/jobs?status=failed".into(),
        "/api/jobs?status=pending".into(),
        "/api/jobs?status=done".into(),
        "/api/jobs?rule=slow".into(),
        "/api/status".into(),
    ];
    println!(
        "{:<40} {:>12} {:>18}",
        "query", "slowest ms", "healthz max ms"
    );
    let mut worst = (0.0f64, 0.0f64);
    for q in &queries {
        let stop = Arc::new(AtomicBool::new(false));
        let health_max = Arc::new(AtomicU64::new(0));
        let poller = {
            let (stop, health_max, c, url) = (
                stop.clone(),
                health_max.clone(),
                c.clone(),
                format!("{base}/healthz"),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = c.get(&url).send().await.map(|r| r.status().is_success());
                    assert!(matches!(ok, Ok(true)), "healthz failed");
                    health_max.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        };
        let mut slowest = Duration::ZERO;
        for _ in 0..runs {
            let t = Instant::now();
            let resp = c.get(format!("{base}{q}")).send().await.expect("query");
            let status = resp.status();
            let _ = resp.bytes().await;
            assert!(status.is_success(), "{q}: {status}");
            slowest = slowest.max(t.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        let _ = poller.await;
        let ms = slowest.as_secs_f64() * 1000.0;
        let h = health_max.load(Ordering::Relaxed) as f64 / 1000.0;
        worst = (worst.0.max(ms), worst.1.max(h));
        println!("{q:<40} {ms:>12.1} {h:>18.1}");
    }
    println!(
        "worst query {:.1} ms (target 100), worst healthz {:.1} ms (target 10)",
        worst.0, worst.1
    );
}
