//! `rulehook whatif` on 100,000 stored events: the replay through a candidate rule set (one
//! rule unchanged, one changed, one added, a correlation) against the baseline of only reading
//! the same events through `History::stored`, in the same run.
//!
//! `cargo bench --bench whatif` (EVENTS=n to change the count).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rulehook::engine::{Engine, Settings};
use rulehook::rules::{Dirs, RuleSet, load};
use rulehook::store::{History, ReadOnly, Store};
use rulehook::verify::{Delivery, VerifiedEvent};

const BEFORE: &str = "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: down\n    condition: '$.state == \"down\"'\n    actions: [{ log: { message: '{{ event.device }} down' } }]\n  - name: busy\n    condition: '$.load == 0'\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n  - name: flapping\n    correlate:\n      within: 10m\n      group_by: ['$.device']\n      count: { at_least: 3, name: flap, condition: '$.state == \"down\"' }\n    actions: [{ log: { message: 'flaps' } }]\n";

fn rules(dir: &std::path::Path, yaml: &str) -> RuleSet {
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(dir.join("rulebooks/r.yml"), yaml).expect("write");
    load(&Dirs {
        rulebooks: dir.join("rulebooks"),
        scripts: dir.join("scripts"),
        templates: dir.join("templates"),
    })
    .expect("rules load")
}

fn main() {
    let n: usize = std::env::var("EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let before = rules(&tmp.path().join("before"), BEFORE);
    let candidate = BEFORE
        .replace("'$.load == 0'", "'$.load <= 1'")
        .replace("'n={{ event.n }}'", "'now n={{ event.n }}'")
        + "  - name: up\n    condition: '$.state == \"up\"'\n    actions: [{ log: { message: 'up' } }]\n";
    let after = rules(&tmp.path().join("after"), &candidate);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::embedded(&data).expect("store");
        let engine = Engine::new(store.clone(), Arc::new(before), Settings::default());
        let began = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let per = n.div_ceil(64);
        for t in 0..64 {
            let engine = engine.clone();
            tasks.spawn(async move {
                for i in t * per..((t + 1) * per).min(n) {
                    let state = if i % 3 == 0 { "up" } else { "down" };
                    let body = serde_json::json!({"device": format!("r{}", i % 500), "state": state, "n": i, "load": i % 10});
                    let d = Delivery { key: format!("d{i}"), window: None };
                    let e = VerifiedEvent::internal("s", body, 0, "bench", d);
                    engine.ingest(e).await.expect("ingest");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        eprintln!("stored {n} events in {:.1}s", began.elapsed().as_secs_f64());
        drop(engine);
        drop(store);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let history = ReadOnly::open(&data).expect("read-only");
        let since = Duration::from_secs(3600);
        let from = rulehook::domain::now_ms() - since.as_millis() as i64;
        let began = Instant::now();
        let (mut read, mut after_id) = (0usize, None);
        loop {
            let page = history.stored(from, after_id.clone(), 2_000).await.expect("read");
            let Some(last) = page.last() else { break };
            after_id = Some(last.id().to_string());
            read += page.len();
        }
        let baseline = began.elapsed();
        let began = Instant::now();
        let report = rulehook::whatif::replay(&after, &history, since, false)
            .await
            .expect("replay");
        let replay = began.elapsed();
        assert_eq!(report.events as usize, read);
        println!(
            "whatif over {read} events: read only {:.2}s (baseline), replay {:.2}s = {:.1}x the baseline, {:.0} events/s; {} change(s)",
            baseline.as_secs_f64(),
            replay.as_secs_f64(),
            replay.as_secs_f64() / baseline.as_secs_f64(),
            read as f64 / replay.as_secs_f64(),
            report.changes()
        );
    });
}
