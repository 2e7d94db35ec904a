//! Correlation rules through the engine and the embedded store, on a test clock: each kind at
//! its window's edge, a restart in the middle of a window, an absence whose window ends while
//! the service is down, reloads, duplicates and the cap on open partial matches.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rulehook::domain::Clock;
use rulehook::engine::{Engine, Settings, partial_key};
use rulehook::rules::{Dirs, RuleSet, load};
use rulehook::store::{EventDetail, Store};
use rulehook::verify::{Delivery, VerifiedEvent};
use serde_json::{Value, json};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

/// A data directory, rulebooks and a clock tests move by hand.
struct Bench {
    dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
}

fn rulebook(correlate: &str, message: &str) -> String {
    format!(
        "sources:\n  - {{ name: s, kind: internal }}\nrules:\n  - name: r\n    correlate:\n{correlate}    actions: [{{ log: {{ message: '{message}' }} }}]\n"
    )
}

impl Bench {
    fn new(yaml: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("rulebooks/r.yml"), yaml).unwrap();
        Bench {
            dir,
            now: Arc::new(AtomicI64::new(T0)),
        }
    }

    fn rules(&self) -> Arc<RuleSet> {
        let p = self.dir.path();
        Arc::new(
            load(&Dirs {
                rulebooks: p.join("rulebooks"),
                scripts: p.join("scripts"),
                templates: p.join("templates"),
            })
            .unwrap(),
        )
    }

    fn set(&self, at: i64) {
        self.now.store(at, Ordering::SeqCst);
    }

    fn start(&self) -> (Arc<Engine>, Store) {
        let store = Store::embedded(&self.dir.path().join("data")).unwrap();
        (self.start_on(store.clone()), store)
    }

    /// An engine on `store` (the embedded one, maybe wrapped), started.
    fn start_on(&self, store: Store) -> Arc<Engine> {
        let now = self.now.clone();
        let settings = Settings {
            concurrency: 2,
            clock: Clock::new(move || now.load(Ordering::SeqCst)),
            recheck: Duration::from_millis(20),
            ..Settings::default()
        };
        let engine = Engine::new(store, self.rules(), settings);
        engine.start();
        engine
    }
}

fn data(dir: &Path) -> std::path::PathBuf {
    dir.join("data")
}

async fn send(engine: &Engine, body: Value, delivery: &str) -> String {
    send_from(engine, "s", body, delivery).await
}

async fn send_from(engine: &Engine, source: &str, body: Value, delivery: &str) -> String {
    let d = Delivery {
        key: delivery.to_string(),
        window: Some(Duration::from_secs(3600)),
    };
    let e = VerifiedEvent::internal(source, body, 0, "test", d);
    engine.ingest(e).await.unwrap().id
}

async fn detail(store: &Store, id: &str) -> EventDetail {
    store.history.event_detail(id).await.unwrap().unwrap()
}

/// Waits for the event's job to finish; returns its state, error and rendered messages.
async fn finished(store: &Store, id: &str) -> (String, Option<String>, Vec<String>) {
    for _ in 0..200 {
        let d = detail(store, id).await;
        if let Some(m) = d.matches.first()
            && m.status != rulehook::store::JobStatus::Pending
        {
            let messages = m
                .attempts
                .iter()
                .filter_map(|a| a.rendered["log"]["message"].as_str().map(str::to_string))
                .collect();
            return (m.status.as_str().to_string(), m.error.clone(), messages);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the job of {id} did not finish");
}

fn state_of(d: &EventDetail) -> Option<String> {
    d.correlations.first().map(|c| {
        serde_json::to_value(c.correlation.state)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    })
}

const ALL_OF: &str = "      within: 2m\n      group_by: ['$.device']\n      all_of:\n        - { name: down, condition: '$.state == \"down\"' }\n        - { name: up, condition: '$.state == \"up\"' }\n";
const SEQUENCE: &str = "      within: 2m\n      group_by: ['$.device']\n      sequence:\n        - { name: down, condition: '$.state == \"down\"' }\n        - { name: up, condition: '$.state == \"up\"' }\n";
const ABSENCE: &str = "      within: 2m\n      group_by: ['$.device']\n      absence:\n        after: { name: down, condition: '$.state == \"down\"' }\n        missing: { name: up, condition: '$.state == \"up\"' }\n";
const COUNT: &str = "      within: 2m\n      group_by: ['$.device']\n      count: { at_least: 3, name: flap, condition: '$.state == \"down\"' }\n";

fn ev(state: &str) -> Value {
    json!({"device": "r1", "state": state})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_of_and_sequence_fire_at_the_window_edge_and_not_a_millisecond_after() {
    for (kind, spec, first, second) in [
        ("all_of", ALL_OF, "up", "down"),
        ("sequence", SEQUENCE, "down", "up"),
    ] {
        for (late, fires) in [(0, true), (1, false)] {
            let b = Bench::new(&rulebook(
                spec,
                "{{ events.down.state }}/{{ events.up.state }} {{ correlation.kind }}",
            ));
            let (engine, store) = b.start();
            let a = send(&engine, ev(first), "a").await;
            assert_eq!(
                state_of(&detail(&store, &a).await).as_deref(),
                Some("partial")
            );
            b.set(T0 + 2 * MIN + late);
            let z = send(&engine, ev(second), "z").await;
            let d = detail(&store, &z).await;
            if fires {
                assert_eq!(state_of(&d).as_deref(), Some("fired"), "{kind}");
                let ids: Vec<&str> = d.correlations[0]
                    .correlation
                    .events
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect();
                assert_eq!(ids, [a.as_str(), z.as_str()], "{kind}: the job links both");
                let (state, _, messages) = finished(&store, &z).await;
                assert_eq!(state, "done");
                assert_eq!(messages, [format!("down/up {kind}")], "{kind}");
            } else {
                assert!(d.matches.is_empty(), "{kind}: no job past the window");
            }
            engine.shutdown(Duration::from_secs(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_fires_at_the_edge_and_once_per_window() {
    for (late, fires) in [(0, true), (1, false)] {
        let b = Bench::new(&rulebook(COUNT, "{{ events.flap | length }} flaps"));
        let (engine, store) = b.start();
        send(&engine, ev("down"), "1").await;
        b.set(T0 + MIN);
        send(&engine, ev("down"), "2").await;
        b.set(T0 + 2 * MIN + late);
        let third = send(&engine, ev("down"), "3").await;
        let d = detail(&store, &third).await;
        assert_eq!(d.matches.len(), usize::from(fires));
        if fires {
            assert_eq!(finished(&store, &third).await.2, ["3 flaps"]);
            // A fourth within the window after firing does not fire again.
            let fourth = send(&engine, ev("down"), "4").await;
            assert!(detail(&store, &fourth).await.matches.is_empty());
        }
        engine.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absence_fires_when_the_window_ends_and_not_when_the_missing_event_came_at_the_edge() {
    for (up_at, fires) in [
        (Some(2 * MIN), false),
        (Some(2 * MIN + 1), true),
        (None, true),
    ] {
        let b = Bench::new(&rulebook(ABSENCE, "{{ events.down.device }} still down"));
        let (engine, store) = b.start();
        let down = send(&engine, ev("down"), "a").await;
        let d = detail(&store, &down).await;
        assert_eq!(state_of(&d).as_deref(), Some("waiting"));
        assert_eq!(d.correlations[0].correlation.deadline, Some(T0 + 2 * MIN));
        assert!(
            d.correlations[0].deadline_at.is_some(),
            "the history shows the deadline"
        );
        if let Some(at) = up_at {
            b.set(T0 + at);
            send(&engine, ev("up"), "b").await;
        }
        // The deadline passes; the job notices the next time it is fetched.
        b.set(T0 + 2 * MIN + 1);
        let (engine, store) = {
            engine.shutdown(Duration::from_secs(2)).await;
            drop(engine);
            drop(store);
            b.start()
        };
        let (state, error, messages) = finished(&store, &down).await;
        assert_eq!(state, "done");
        if fires {
            assert_eq!(messages, ["r1 still down"], "up at {up_at:?}");
        } else {
            assert!(messages.is_empty());
            assert!(error.unwrap_or_default().contains("did not fire"));
        }
        engine.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_whose_window_ended_while_the_service_was_down_fires_at_start() {
    let b = Bench::new(&rulebook(ABSENCE, "{{ events.down.device }} still down"));
    let (engine, store) = b.start();
    let down = send(&engine, ev("down"), "a").await;
    // Not yet: the job waits for its deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(detail(&store, &down).await.matches[0].attempts.is_empty());
    engine.shutdown(Duration::from_secs(2)).await;
    drop(engine);
    drop(store);
    // An hour later (on the clock) the service starts again.
    b.set(T0 + 60 * MIN);
    let (engine, store) = b.start();
    let (state, _, messages) = finished(&store, &down).await;
    assert_eq!(
        (state.as_str(), messages),
        ("done", vec!["r1 still down".to_string()])
    );
    // Its window is gone from the state store.
    let key = partial_key("r", r#"["r1"]"#);
    assert!(store.state.get(&key).await.unwrap().is_none());
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_window_keeps_the_partial_match() {
    let b = Bench::new(&rulebook(
        SEQUENCE,
        "{{ events.down.state }} then {{ events.up.state }}",
    ));
    let (engine, store) = b.start();
    let a = send(&engine, ev("down"), "a").await;
    engine.shutdown(Duration::from_secs(2)).await;
    drop(engine);
    drop(store);
    b.set(T0 + MIN);
    let (engine, store) = b.start();
    let z = send(&engine, ev("up"), "z").await;
    let (_, _, messages) = finished(&store, &z).await;
    assert_eq!(messages, ["down then up"]);
    let ids: Vec<String> = detail(&store, &z).await.correlations[0]
        .correlation
        .events
        .iter()
        .map(|p| p.id.clone())
        .collect();
    assert_eq!(ids, [a, z]);
    engine.shutdown(Duration::from_secs(2)).await;
    assert!(data(b.dir.path()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_partial_matches_of_unchanged_rules_and_drops_those_of_changed_ones() {
    let b = Bench::new(&rulebook(ALL_OF, "both"));
    let (engine, store) = b.start();
    send(&engine, ev("down"), "a").await;
    // The same rule reloaded: the partial match is kept.
    engine.swap_rules(b.rules());
    let z = send(&engine, ev("up"), "z").await;
    assert_eq!(
        state_of(&detail(&store, &z).await).as_deref(),
        Some("fired")
    );

    send(&engine, ev("down"), "c").await;
    std::fs::write(
        b.dir.path().join("rulebooks/r.yml"),
        rulebook(&ALL_OF.replace("2m", "3m"), "both"),
    )
    .unwrap();
    engine.swap_rules(b.rules());
    let y = send(&engine, ev("up"), "y").await;
    let d = detail(&store, &y).await;
    assert_eq!(
        state_of(&d).as_deref(),
        Some("partial"),
        "a changed rule starts afresh"
    );
    assert_eq!(d.correlations[0].correlation.waiting_for, ["down"]);
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_does_not_count_twice() {
    let b = Bench::new(&rulebook(COUNT, "fired"));
    let (engine, store) = b.start();
    send(&engine, ev("down"), "1").await;
    send(&engine, ev("down"), "1").await;
    let third = send(&engine, ev("down"), "2").await;
    let d = detail(&store, &third).await;
    assert!(d.matches.is_empty(), "two distinct events of three");
    assert_eq!(d.correlations[0].correlation.events.len(), 2);
    engine.shutdown(Duration::from_secs(2)).await;
}

/// Three copies of a delivery sent at once plus one distinct event are two events: a count of
/// three never fires, and every participant is a stored event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_a_delivery_sent_at_once_count_once() {
    let b = Bench::new(&rulebook(COUNT, "fired"));
    let (engine, store) = b.start();
    let mut tasks = tokio::task::JoinSet::new();
    for g in 0..60 {
        for _ in 0..3 {
            let engine = engine.clone();
            tasks.spawn(async move {
                let body = json!({"device": format!("d{g}"), "state": "down"});
                send(&engine, body, &format!("{g}-a")).await
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let mut fired = 0;
    for g in 0..60 {
        let body = json!({"device": format!("d{g}"), "state": "down"});
        let last = send(&engine, body, &format!("{g}-b")).await;
        let d = detail(&store, &last).await;
        let c = &d.correlations[0].correlation;
        if state_of(&d).as_deref() == Some("fired") {
            fired += 1;
        }
        // Counted, and as two: the copies once, the distinct event once.
        assert_eq!(c.events.len(), 2, "group {g}: {:?}", c.events);
        for p in &c.events {
            assert!(
                store.history.event_detail(&p.id).await.unwrap().is_some(),
                "group {g}: participant {} was never stored",
                p.id
            );
        }
    }
    assert_eq!(fired, 0, "groups of two stored events fired");
    engine.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_partial_matches_are_capped_per_rule_and_the_oldest_is_evicted() {
    let spec = format!("{ALL_OF}      max_open: 2\n");
    let b = Bench::new(&rulebook(&spec, "both"));
    let (engine, store) = b.start();
    for (i, device) in ["r1", "r2", "r3"].iter().enumerate() {
        b.set(T0 + i as i64);
        send(&engine, json!({"device": device, "state": "down"}), device).await;
    }
    let gone = partial_key("r", r#"["r1"]"#);
    assert!(
        store.state.get(&gone).await.unwrap().is_none(),
        "r1 evicted"
    );
    for device in ["r2", "r3"] {
        let key = partial_key("r", &format!(r#"["{device}"]"#));
        assert!(store.state.get(&key).await.unwrap().is_some());
    }
    let z = send(&engine, json!({"device": "r1", "state": "up"}), "z").await;
    assert_eq!(
        state_of(&detail(&store, &z).await).as_deref(),
        Some("partial"),
        "the evicted partial match does not complete"
    );
    let z = send(&engine, json!({"device": "r3", "state": "up"}), "z3").await;
    assert_eq!(
        state_of(&detail(&store, &z).await).as_deref(),
        Some("fired")
    );
    engine.shutdown(Duration::from_secs(2)).await;
}

/// An absence window evicted past `max_open` before its deadline fires, marked evicted, instead
/// of ending as "did not fire"; one source's groups cannot evict another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_absence_fires_marked_evicted_and_sources_evict_only_their_own() {
    let spec = format!("{ABSENCE}      max_open: 2\n");
    let yaml = rulebook(
        &spec,
        "{{ events.down.device }} down{% if correlation.evicted %} (evicted){% endif %}",
    )
    .replace(
        "  - { name: s, kind: internal }\n",
        "  - { name: s, kind: internal }\n  - { name: other, kind: internal }\n",
    );
    let b = Bench::new(&yaml);
    let (engine, store) = b.start();
    let down = |d: &str| json!({"device": d, "state": "down"});
    let r1 = send(&engine, down("r1"), "r1").await;
    for (i, d) in ["o1", "o2", "o3"].iter().enumerate() {
        b.set(T0 + 1 + i as i64);
        send_from(&engine, "other", down(d), d).await;
    }
    let r1_key = partial_key("r", r#"["r1"]"#);
    assert!(
        store.state.get(&r1_key).await.unwrap().is_some(),
        "another source's groups do not evict r1"
    );
    b.set(T0 + 10);
    let r2 = send(&engine, down("r2"), "r2").await;
    send(&engine, down("r3"), "r3").await;
    assert!(
        store.state.get(&r1_key).await.unwrap().is_none(),
        "r1 evicted by its own source's groups"
    );
    b.set(T0 + 2 * MIN + 20);
    let (engine, store) = {
        engine.shutdown(Duration::from_secs(2)).await;
        drop(engine);
        drop(store);
        b.start()
    };
    let (state, error, messages) = finished(&store, &r1).await;
    assert_eq!(
        (state.as_str(), messages),
        ("done", vec!["r1 down (evicted)".to_string()]),
        "{error:?}"
    );
    let (_, _, messages) = finished(&store, &r2).await;
    assert_eq!(messages, ["r2 down"]);
    engine.shutdown(Duration::from_secs(2)).await;
}

#[test]
fn correlation_mistakes_are_load_errors_at_their_place() {
    let b = Bench::new(&rulebook(
        "      within: 2m\n      all_of:\n        - { name: Down, condition: '$.a' }\n        - { name: up, condition: '$.b' }\n      count: { at_least: 2, name: x, condition: '$.c' }\n",
        "m",
    ));
    let p = b.dir.path();
    let err = load(&Dirs {
        rulebooks: p.join("rulebooks"),
        scripts: p.join("scripts"),
        templates: p.join("templates"),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("r.yml:6:") && err.contains("exactly one of"),
        "{err}"
    );
}

/// What `check` and a reload must refuse, each with a clear sentence at its place: a template
/// naming no event of the correlation, a negative or unbounded number, a file too large.
#[test]
fn check_gaps_are_clear_located_errors() {
    let load_err = |yaml: &str| {
        let b = Bench::new(yaml);
        let p = b.dir.path();
        load(&Dirs {
            rulebooks: p.join("rulebooks"),
            scripts: p.join("scripts"),
            templates: p.join("templates"),
        })
        .unwrap_err()
        .to_string()
    };
    let err = load_err(&rulebook(COUNT, "{{ events.c.g }}"));
    assert!(
        err.contains("r.yml:9:")
            && err.contains("`events.c` names no event of this correlation (its names: flap)"),
        "{err}"
    );
    let err = load_err(&rulebook(
        &COUNT.replace("at_least: 3", "at_least: -3"),
        "m",
    ));
    assert!(
        err.contains("r.yml:8:")
            && err.contains("`at_least` must be a whole number of 0 or more, not `-3`"),
        "{err}"
    );
    let spec = format!("{ALL_OF}      max_open: 18446744073709551615\n");
    let err = load_err(&rulebook(&spec, "m"));
    assert!(
        err.contains("r.yml:") && err.contains("correlate.max_open must be between 1 and 1000000"),
        "{err}"
    );
    let mut big = String::from("sources:\n  - { name: s, kind: internal }\nrules:\n");
    for i in 0..10_000 {
        big.push_str(&format!(
            "  - name: r{i}\n    enabled: true\n    condition: '$.a == {i}'\n    actions:\n      - log: {{ message: 'x', level: info }}\n      - log: {{ message: 'y', level: info }}\n      - log: {{ message: 'z', level: info }}\n"
        ));
    }
    // Past the real limit (`MAX_YAML_NODES`, 250,000 nodes; the file has ~310,000): one error,
    // located (src/rules/load.rs tests the guard at a small limit too).
    let err = load_err(&big);
    assert!(
        err.contains("r.yml:")
            && err.contains("250001 YAML nodes")
            && err.contains("split its rules into several files")
            && !err.contains("Nodes {"),
        "{err}"
    );
    assert_eq!(err.matches("split its rules").count(), 1, "{err}");
    // Names the correlation has pass.
    let b = Bench::new(&rulebook(
        COUNT,
        "{{ events.flap | length }} on {{ event.device }}",
    ));
    assert!(b.rules().rules.len() == 1);
}

/// `rulehook test` on a folder of events shows, event by event, what each correlation holds,
/// what it waits for, and what fires (an absence when its window ends within the sequence).
#[test]
fn rulehook_test_explains_a_sequence_event_by_event() {
    let b = Bench::new(&rulebook(ABSENCE, "{{ events.down.device }} still down"));
    let p = b.dir.path();
    std::fs::write(
        p.join("rulebooks/s.yml"),
        format!(
            "rules:\n  - name: pair\n    correlate:\n{}    actions: [{{ log: {{ message: 'back {{{{ events.up.device }}}}' }} }}, {{ post_webhook: {{ url: 'http://127.0.0.1:9/', timeout: 5m }} }}]\n",
            SEQUENCE.replace("2m", "5m")
        ),
    )
    .unwrap();
    let events = p.join("events");
    std::fs::create_dir_all(&events).unwrap();
    for (i, body) in [
        ev("down"),
        ev("up"),
        json!({"device": "r2", "state": "down"}),
        json!({"x": 1}),
        json!({"x": 2}),
        json!({"x": 3}),
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(events.join(format!("{i}.json")), body.to_string()).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["test", "--every", "1m", "--event"])
        .arg(&events)
        .arg("--rulebooks")
        .arg(p.join("rulebooks"))
        .arg("--scripts")
        .arg(p.join("scripts"))
        .arg("--templates")
        .arg(p.join("templates"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "event e1 at +0ms",
        "WAIT     r/r: absence window opened by e1; fires at +2m 0s unless `up` comes",
        "HOLD     s/pair: holds down=e1; waits for up until +5m 0s",
        "event e2 at +1m 0s",
        "CLOSE    r/r: `up` came in time for e1",
        "FIRE     s/pair with down=e1, up=e2",
        r#"would run: {"log":{"message":"back r1","level":"info"}}"#,
        "event e3 at +2m 0s",
        "event e4 at +3m 0s",
        "(no rule)",
        "event e5 at +4m 0s",
        "FIRE     r/r: the window opened by e3 ended at +4m 0s without `up`",
        r#"would run: {"log":{"message":"r2 still down","level":"info"}}"#,
        "event e6 at +5m 0s",
    ];
    let mut at = 0;
    for w in want {
        let found = text[at..]
            .find(w)
            .unwrap_or_else(|| panic!("`{w}` after byte {at} in:\n{text}"));
        at += found + w.len();
    }
    // A fired correlation's actions read as a single event's do: timeouts as durations.
    assert!(
        text.contains(r#""timeout":"5m""#) && !text.contains("300000"),
        "{text}"
    );
}

/// An absence whose action fails and is retried decides the same on the retry: its window
/// stays in the state store until the job is done, then goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fired_absence_retried_after_a_failure_still_fires_and_then_closes_its_window() {
    let yaml = format!(
        "sources:\n  - {{ name: s, kind: internal }}\nrules:\n  - name: r\n    correlate:\n{ABSENCE}    actions: [{{ run_script: {{ script: once.sh, retries: 2 }} }}]\n"
    );
    let b = Bench::new(&yaml);
    let p = b.dir.path();
    let marker = p.join("tried");
    let script = p.join("scripts/once.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > /dev/null\nif [ -e {m} ]; then echo fired; exit 0; fi\ntouch {m}\nexit 1\n",
            m = marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (engine, store) = b.start();
    let down = send(&engine, ev("down"), "a").await;
    let key = partial_key("r", r#"["r1"]"#);
    b.set(T0 + 2 * MIN + 1);
    // The first attempt fails; the retry comes after a backoff of a second or two.
    let (mut done, mut seen_between) = (None, false);
    for _ in 0..200 {
        let d = detail(&store, &down).await;
        if d.matches[0].status != rulehook::store::JobStatus::Pending {
            done = Some(d);
            break;
        }
        if d.matches[0].attempts.len() == 1 && d.matches[0].attempts[0].status == "failed" {
            assert!(
                store.state.get(&key).await.unwrap().is_some(),
                "the window stays open while the job is not done"
            );
            seen_between = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = done.expect("the job finished");
    assert!(
        seen_between,
        "never looked between the failure and the retry: the open window went unchecked"
    );
    let m = &d.matches[0];
    assert_eq!(m.status, rulehook::store::JobStatus::Done, "{:?}", m.error);
    let results: Vec<&str> = m.attempts.iter().map(|a| a.status).collect();
    assert_eq!(results, ["failed", "ok"]);
    // Removed just after the job is recorded done (a crash between the two leaves a window
    // past its deadline, not a job that finds its own window gone).
    let mut closed = false;
    for _ in 0..100 {
        closed = store.state.get(&key).await.unwrap().is_none();
        if closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "closed once done");
    engine.shutdown(Duration::from_secs(2)).await;
}

/// On JetStream, a partial match begun on one node is completed on another (the state store is
/// shared), and an absence opened on one node fires on the other after the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_jetstream_a_partial_match_is_shared_by_the_nodes() {
    use rulehook::store::nats::NatsConfig;
    let deployment = common::NatsPrefix::new();
    let node = |b: &Bench| {
        let now = b.now.clone();
        let c = NatsConfig::new(&deployment.url, &deployment.prefix);
        let rules = b.rules();
        async move {
            let store = Store::nats(c).await.expect("JetStream store");
            let settings = Settings {
                concurrency: 2,
                clock: Clock::new(move || now.load(Ordering::SeqCst)),
                recheck: Duration::from_millis(20),
                shared: true,
                ..Settings::default()
            };
            let engine = Engine::new(store.clone(), rules, settings);
            engine.start();
            (engine, store)
        }
    };
    let yaml = format!(
        "sources:\n  - {{ name: s, kind: internal }}\nrules:\n  - name: r\n    correlate:\n{ALL_OF}    actions: [{{ log: {{ message: '{{{{ events.down.state }}}}+{{{{ events.up.state }}}}' }} }}]\n  - name: gone\n    correlate:\n{}    actions: [{{ log: {{ message: '{{{{ events.down.device }}}} still down' }} }}]\n",
        ABSENCE.replace("'$.device'", "'$.site'")
    );
    let b = Bench::new(&yaml);
    let (one, _) = node(&b).await;
    let (two, store_two) = node(&b).await;
    send(
        &one,
        json!({"device": "r1", "site": "s1", "state": "down"}),
        "a",
    )
    .await;
    b.set(T0 + MIN);
    let z = send(
        &two,
        json!({"device": "r1", "site": "s2", "state": "up"}),
        "z",
    )
    .await;
    let d = detail(&store_two, &z).await;
    let fired = d
        .correlations
        .iter()
        .find(|c| c.rule == "r")
        .expect("rule r saw it");
    assert_eq!(
        serde_json::to_value(fired.correlation.state).unwrap(),
        "fired",
        "node two completes what node one began"
    );
    // The absence of site s1 (opened on node one) fires once node one is gone.
    one.shutdown(Duration::from_secs(2)).await;
    drop(one);
    b.set(T0 + 10 * MIN);
    let mut messages = Vec::new();
    for _ in 0..400 {
        let jobs = store_two
            .history
            .jobs(rulehook::store::JobFilter {
                rule: Some("gone".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(j) = jobs.first()
            && j.status == rulehook::store::JobStatus::Done
        {
            let d = detail(&store_two, &j.event_id).await;
            messages = d.matches[0]
                .attempts
                .iter()
                .filter_map(|a| a.rendered["log"]["message"].as_str().map(str::to_string))
                .collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(messages, ["r1 still down"]);
    two.shutdown(Duration::from_secs(2)).await;
}

/// `rulehook test` renders a correlation rule's actions with what a live job sees:
/// `correlation.kind`, `.group`, `.events` and `.deadline`, and `events` (a sequence of events
/// and one event alone).
#[test]
fn rulehook_test_gives_correlation_templates_what_a_job_sees() {
    let msg = "{{ correlation.kind }} {{ correlation.group[0] }} {{ correlation.events | length }} deadline={{ correlation.deadline }} {{ events.down.device }}";
    for (spec, kind) in [(SEQUENCE, "sequence"), (ABSENCE, "absence")] {
        let b = Bench::new(&rulebook(spec, msg));
        let p = b.dir.path();
        let run = |event: &std::path::Path| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
                .args(["test", "--every", "1m", "--event"])
                .arg(event)
                .arg("--rulebooks")
                .arg(p.join("rulebooks"))
                .arg("--scripts")
                .arg(p.join("scripts"))
                .arg("--templates")
                .arg(p.join("templates"))
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let seq = p.join("seq.json");
        let events = if kind == "absence" {
            vec![
                ev("down"),
                json!({"x": 1}),
                json!({"x": 2}),
                json!({"x": 3}),
            ]
        } else {
            vec![ev("down"), ev("up")]
        };
        let text: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        std::fs::write(&seq, text.join("\n")).unwrap();
        let out = run(&seq);
        assert!(!out.contains("render_error"), "{kind}: {out}");
        // An absence fires at its deadline; a sequence that fired has none (as live).
        let deadline = if kind == "absence" {
            "deadline=1970-01-01T00:02:00"
        } else {
            "deadline=none"
        };
        assert!(
            out.to_lowercase().contains(&format!("{kind} r1 "))
                && out.to_lowercase().contains(&deadline.to_lowercase()),
            "{kind}: {out}"
        );
        assert!(out.contains(" r1\""), "{kind}: events.down: {out}");
        let one = p.join("one.json");
        std::fs::write(&one, ev("down").to_string()).unwrap();
        let out = run(&one);
        assert!(!out.contains("render_error"), "{kind}, one event: {out}");
        assert!(
            out.contains(&format!("{kind} r1 1 deadline=")),
            "{kind}: {out}"
        );
    }
}

/// An event a correlation only holds is not listed as matching it (held is not matched), in
/// the stored list and in the live one; the event that makes it fire is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_correlation_only_holds_is_not_listed_as_matched() {
    let b = Bench::new(&rulebook(SEQUENCE, "back"));
    let (engine, store) = b.start();
    let mut live = engine.subscribe();
    let down = send(&engine, ev("down"), "d1").await;
    let row = live.recv().await.unwrap();
    assert_eq!(row.row.id, down);
    assert!(row.row.rules.is_empty(), "live: {:?}", row.row.rules);
    assert_eq!(
        row.row.status,
        rulehook::store::EventStatus::Unmatched,
        "live"
    );
    let up = send(&engine, ev("up"), "d2").await;
    let row = live.recv().await.unwrap();
    assert_eq!(row.row.rules, vec!["r".to_string()], "live");
    finished(&store, &up).await;
    let rows = store
        .history
        .events(rulehook::store::EventFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let rules_of = |id: &str| rows.iter().find(|r| r.id == id).unwrap().rules.clone();
    assert!(rules_of(&down).is_empty(), "{rows:?}");
    let held = rows.iter().find(|r| r.id == down).unwrap();
    assert_eq!(held.throttled, 0, "held is not throttled either: {rows:?}");
    assert_eq!(
        held.status,
        rulehook::store::EventStatus::Unmatched,
        "{rows:?}"
    );
    assert_eq!(rules_of(&up), vec!["r".to_string()]);
    // The list's status filter agrees: a held event is not among the throttled ones.
    let by_status = |status| rulehook::store::EventFilter {
        status: Some(status),
        limit: 10,
        ..Default::default()
    };
    let throttled = store
        .history
        .events(by_status(rulehook::store::EventStatus::Throttled))
        .await
        .unwrap();
    assert!(throttled.is_empty(), "{throttled:?}");
    let unmatched = store
        .history
        .events(by_status(rulehook::store::EventStatus::Unmatched))
        .await
        .unwrap();
    assert_eq!(
        unmatched.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [down.as_str()]
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

/// An event a correlation holds and another rule matches is listed as that rule's match, with
/// its job's status (the held match neither counts nor hides it), and filtered so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_held_by_a_correlation_and_matched_by_a_rule_shows_its_job() {
    let yaml = format!(
        "{}  - name: plain\n    condition: '$.state == \"down\"'\n    actions: [{{ log: {{ message: p }} }}]\n",
        rulebook(SEQUENCE, "back")
    );
    let b = Bench::new(&yaml);
    let (engine, store) = b.start();
    let down = send(&engine, ev("down"), "d1").await;
    let listed = |status: Option<rulehook::store::EventStatus>| {
        let history = store.history.clone();
        async move {
            history
                .events(rulehook::store::EventFilter {
                    status,
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let mut row = None;
    for _ in 0..200 {
        let rows = listed(None).await;
        let r = rows.into_iter().find(|r| r.id == down).unwrap();
        if r.status != rulehook::store::EventStatus::Pending {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let row = row.expect("the job of the plain rule did not finish");
    assert_eq!(row.rules, vec!["plain".to_string()], "{row:?}");
    assert_eq!(row.throttled, 0, "{row:?}");
    assert_eq!(row.status, rulehook::store::EventStatus::Done, "{row:?}");
    let done = listed(Some(rulehook::store::EventStatus::Done)).await;
    assert!(done.iter().any(|r| r.id == down), "{done:?}");
    for other in [
        rulehook::store::EventStatus::Unmatched,
        rulehook::store::EventStatus::Throttled,
    ] {
        let rows = listed(Some(other)).await;
        assert!(rows.iter().all(|r| r.id != down), "{other:?}: {rows:?}");
    }
    engine.shutdown(Duration::from_secs(1)).await;
}

/// The state store of a service that dies (kill -9) right after it first wrote a correlation
/// window (`Write::Open`: created it; `Write::Close`: removed it): that write is made, and the
/// task that made it never goes on.
struct DiesAfter {
    write: Write,
    inner: Arc<dyn rulehook::store::StateStore>,
    died: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(PartialEq)]
enum Write {
    Open,
    Close,
}

impl DiesAfter {
    async fn maybe_die(&self, write: Write, key: &str) {
        if write == self.write
            && key.starts_with("correlate/")
            && !self.died.swap(true, Ordering::SeqCst)
        {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl rulehook::store::StateStore for DiesAfter {
    async fn get(&self, key: &str) -> Result<Option<(String, u64)>, rulehook::store::StoreError> {
        self.inner.get(key).await
    }
    async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<u64, rulehook::store::StoreError> {
        let rev = self.inner.create(key, value, ttl).await?;
        self.maybe_die(Write::Open, key).await;
        Ok(rev)
    }
    async fn update(
        &self,
        key: &str,
        value: &str,
        expected: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, rulehook::store::StoreError> {
        self.inner.update(key, value, expected, ttl).await
    }
    async fn delete(
        &self,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), rulehook::store::StoreError> {
        self.inner.delete(key, expected).await?;
        self.maybe_die(Write::Close, key).await;
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A crash (the process gone at once: its runtime dropped) just after a fired absence's job
/// removed its window: after the restart the job is not "did not fire" (its own window gone,
/// as if `up` had come), since it ran and was recorded done before the window went.
#[test]
fn a_crash_as_a_fired_absence_closes_its_window_does_not_turn_it_into_did_not_fire() {
    let b = Bench::new(&rulebook(ABSENCE, "{{ events.down.device }} still down"));
    let died = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = runtime();
    let down = rt.block_on(async {
        let store = Store::embedded(&data(b.dir.path())).unwrap();
        let state = Arc::new(DiesAfter {
            write: Write::Close,
            inner: store.state.clone(),
            died: died.clone(),
        });
        let store = Store { state, ..store };
        let engine = b.start_on(store);
        let down = send(&engine, ev("down"), "a").await;
        b.set(T0 + 2 * MIN + 1);
        for _ in 0..400 {
            if died.load(Ordering::SeqCst) {
                return down;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the fired absence never closed its window");
    });
    rt.shutdown_timeout(Duration::ZERO);

    let rt = runtime();
    rt.block_on(async {
        let (engine, store) = b.start();
        let (state, error, messages) = finished(&store, &down).await;
        assert_eq!(
            (state.as_str(), error),
            ("done", None),
            "it fired: {messages:?}"
        );
        assert_eq!(messages, ["r1 still down"]);
        engine.shutdown(Duration::from_secs(2)).await;
    });
}

/// A crash (the process gone at once) just after an absence's `after` event opened its group's
/// window and before the event was stored: its sender had no answer and sends it again. With
/// `windows: per_group` the resent event was held by the window of an event that does not exist
/// (no job, the incident never opened); it opens the window and fires.
#[test]
fn an_after_event_resent_after_a_crash_before_it_was_stored_opens_the_window() {
    let per_group = ABSENCE.replace(
        "missing: { name: up,",
        "windows: per_group\n        missing: { name: up,",
    );
    let b = Bench::new(&rulebook(&per_group, "{{ events.down.device }} still down"));
    let died = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rt = runtime();
    rt.block_on(async {
        let store = Store::embedded(&data(b.dir.path())).unwrap();
        let state = Arc::new(DiesAfter {
            write: Write::Open,
            inner: store.state.clone(),
            died: died.clone(),
        });
        let engine = b.start_on(Store { state, ..store });
        let sending = tokio::spawn(async move {
            let d = Delivery {
                key: "a".into(),
                window: Some(Duration::from_secs(3600)),
            };
            engine
                .ingest(VerifiedEvent::internal("s", ev("down"), 0, "test", d))
                .await
        });
        for _ in 0..400 {
            if died.load(Ordering::SeqCst) {
                assert!(!sending.is_finished(), "the sender got no answer");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the after event never opened its window");
    });
    rt.shutdown_timeout(Duration::ZERO);

    let rt = runtime();
    rt.block_on(async {
        let (engine, store) = b.start();
        let down = send(&engine, ev("down"), "a").await;
        b.set(T0 + 2 * MIN + 1);
        let (state, error, messages) = finished(&store, &down).await;
        assert_eq!((state.as_str(), error), ("done", None), "{messages:?}");
        assert_eq!(messages, ["r1 still down"]);
        engine.shutdown(Duration::from_secs(2)).await;
    });
}
