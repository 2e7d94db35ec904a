//! The gate inside a running engine, on a test clock: hold until the window ends, a reload
//! that removes the window releases, skip closes as skipped, a job past its start is not
//! stopped, and a held job survives a restart of the engine on the same store.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::super::{Engine, Settings};
use super::{Gate, about_to_start};
use crate::domain::{Clock, JobState, Phase, Step};
use crate::rules::{Dirs, RuleSet, load};
use crate::store::Store;
use crate::verify::{Delivery, VerifiedEvent};

/// 2026-12-24T12:00:00Z, inside the freeze below.
const XMAS: i64 = 1_798_113_600_000;
/// 2027-01-04T00:00:00Z, its end.
const FREEZE_END: i64 = 1_799_020_800_000;

const RULES: &str = "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: frozen\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n  - name: free\n    actions: [{ log: { message: 'n={{ event.n }}' } }]\n";

fn freeze(during: &str) -> String {
    format!(
        "windows:\n  - name: freeze\n    start: \"2026-12-20T00:00:00Z\"\n    end: \"2027-01-04T00:00:00Z\"\n    rules: [frozen]\n    during: {during}\n{RULES}"
    )
}

struct Bench {
    dir: tempfile::TempDir,
    now: Arc<AtomicI64>,
}

impl Bench {
    fn new(rulebook: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("rulebooks/r.yml"), rulebook).unwrap();
        Bench {
            dir,
            now: Arc::new(AtomicI64::new(XMAS)),
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

    fn start(&self) -> (Arc<Engine>, Store) {
        let store = Store::embedded(&self.dir.path().join("data")).unwrap();
        let now = self.now.clone();
        let settings = Settings {
            concurrency: 2,
            clock: Clock::new(move || now.load(Ordering::SeqCst)),
            recheck: Duration::from_millis(30),
            approval_check: Duration::from_millis(30),
            ..Settings::default()
        };
        let engine = Engine::new(store.clone(), self.rules(), settings);
        engine.start();
        (engine, store)
    }
}

async fn send(engine: &Engine, n: u32) -> String {
    let d = Delivery {
        key: format!("d{n}"),
        window: None,
    };
    let e = VerifiedEvent::internal("s", serde_json::json!({"n": n}), 0, "test", d);
    engine.ingest(e).await.unwrap().id
}

/// The state and note of the event's job of `rule`, once `f` holds (bounded wait).
async fn job_of(
    store: &Store,
    event: &str,
    rule: &str,
    f: impl Fn(JobState) -> bool,
) -> (JobState, Option<String>) {
    let mut last = None;
    for _ in 0..200 {
        let d = store.history.event_detail(event).await.unwrap().unwrap();
        if let Some(m) = d.matches.iter().find(|m| m.rule == rule) {
            let state = m.status.state();
            last = Some((state, m.error.clone()));
            if f(state) {
                return (state, m.error.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job of {rule} never got there: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_waits_for_the_window_end_and_other_rules_run() {
    let b = Bench::new(&freeze("hold"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    job_of(&store, &id, "free", |s| s == JobState::Done).await;
    // Held, looked at again every recheck, listed with its window and end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (state, _) = job_of(&store, &id, "frozen", |_| true).await;
    assert_eq!(state, JobState::Pending);
    let held = engine.held_jobs();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (
            held[0].window.as_str(),
            held[0].until,
            held[0].rule.as_str()
        ),
        ("freeze", FREEZE_END, "frozen")
    );
    assert_eq!(engine.waiting_jobs(), 1, "a held job is not back pressure");
    // The clock reaches the end: it runs, and is no longer held.
    b.now.store(FREEZE_END, Ordering::SeqCst);
    let (state, note) = job_of(&store, &id, "frozen", |s| s != JobState::Pending).await;
    assert_eq!((state, note), (JobState::Done, None));
    assert!(engine.held_jobs().is_empty());
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_the_window_releases_held_jobs() {
    let b = Bench::new(&freeze("hold"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(engine.held_jobs().len(), 1);
    std::fs::write(b.dir.path().join("rulebooks/r.yml"), RULES).unwrap();
    engine.swap_rules(b.rules());
    let (state, _) = job_of(&store, &id, "frozen", |s| s != JobState::Pending).await;
    assert_eq!(state, JobState::Done);
    assert!(engine.held_jobs().is_empty());
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_closes_the_job_as_skipped_without_running_it() {
    let b = Bench::new(&freeze("skip"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    let (state, note) = job_of(&store, &id, "frozen", |s| s != JobState::Pending).await;
    assert_eq!(state, JobState::Done);
    let note = note.unwrap_or_default();
    assert!(
        note.starts_with(super::SKIPPED_NOTE) && note.contains("`freeze`"),
        "{note}"
    );
    let d = store.history.event_detail(&id).await.unwrap().unwrap();
    let frozen = d.matches.iter().find(|m| m.rule == "frozen").unwrap();
    assert!(frozen.attempts.is_empty(), "no action ran");
    // After the window, a new event's job runs.
    b.now.store(FREEZE_END + 1, Ordering::SeqCst);
    let id2 = send(&engine, 2).await;
    let (state, note) = job_of(&store, &id2, "frozen", |s| s != JobState::Pending).await;
    assert_eq!((state, note), (JobState::Done, None));
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_survives_a_restart_and_runs_when_the_window_ends() {
    let b = Bench::new(&freeze("hold"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(engine.held_jobs().len(), 1);
    engine.shutdown(Duration::from_secs(1)).await;
    drop((engine, store));
    // Started again on the same store, still in the window: held again.
    let (engine, store) = b.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (state, _) = job_of(&store, &id, "frozen", |_| true).await;
    assert_eq!(state, JobState::Pending);
    assert_eq!(engine.held_jobs().len(), 1);
    b.now.store(FREEZE_END, Ordering::SeqCst);
    let (state, _) = job_of(&store, &id, "frozen", |s| s != JobState::Pending).await;
    assert_eq!(state, JobState::Done);
    engine.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_is_met_only_before_the_first_action() {
    let b = Bench::new(&freeze("skip"));
    let store = Store::embedded(&b.dir.path().join("data")).unwrap();
    let now = b.now.clone();
    let settings = Settings {
        clock: Clock::new(move || now.load(Ordering::SeqCst)),
        ..Settings::default()
    };
    let engine = Engine::new(store, b.rules(), settings);
    let job = crate::domain::Job {
        id: "e:frozen".into(),
        event_id: "e".into(),
        rulebook: "r".into(),
        rule: "frozen".into(),
        key: "frozen".into(),
        fingerprint: String::new(),
        step: Step::default(),
    };
    assert!(about_to_start(&job.step));
    assert!(matches!(
        engine.window_gate(&job, &job.step),
        Gate::Skip { .. }
    ));
    // A retry of the first action, a later action, `on_failure`: already started, not stopped.
    let retry = Step {
        attempts: 1,
        ..Step::default()
    };
    let later = Step {
        index: 1,
        ..Step::default()
    };
    let failing = Step {
        phase: Phase::OnFailure,
        ..Step::default()
    };
    for step in [retry, later, failing] {
        assert_eq!(engine.window_gate(&job, &step), Gate::Go, "{step:?}");
    }
    // A re-run a person asked for, resumed where a job that never started failed: held.
    let resumed = crate::engine::state::rerun(&Step::default(), true);
    assert!(matches!(
        engine.window_gate(&job, &resumed),
        Gate::Skip { ref note, .. } if note.is_empty()
    ));
    assert_eq!(engine.held_jobs().len(), 1, "listed as held");
    // Another rule, or after the window: it starts.
    let free = crate::domain::Job {
        rule: "free".into(),
        ..job.clone()
    };
    assert_eq!(engine.window_gate(&free, &free.step), Gate::Go);
    b.now.store(FREEZE_END, Ordering::SeqCst);
    assert_eq!(engine.window_gate(&job, &job.step), Gate::Go);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_window_never_lets_the_job_run_unapproved() {
    let b = Bench::new(&freeze("approve"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    job_of(&store, &id, "free", |s| s == JobState::Done).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (state, _) = job_of(&store, &id, "frozen", |_| true).await;
    assert_eq!(
        state,
        JobState::Pending,
        "not run while the window is in force"
    );
    // An approval now, no longer listed as held.
    assert!(engine.held_jobs().is_empty(), "{:?}", engine.held_jobs());
    engine.shutdown(Duration::from_secs(1)).await;
}

/// `during: approve` puts the job into `awaiting_approval` (reason `window freeze`); once a
/// person approves, it runs although the window is still in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_window_turns_the_job_into_an_approval() {
    let b = Bench::new(&freeze("approve"));
    let (engine, store) = b.start();
    let id = send(&engine, 1).await;
    let mut status = String::new();
    for _ in 0..200 {
        let d = store.history.event_detail(&id).await.unwrap().unwrap();
        if let Some(m) = d.matches.iter().find(|m| m.rule == "frozen") {
            status = m.status.as_str().to_string();
            if status == "awaiting_approval" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "awaiting_approval");
    let job = format!("{id}:frozen");
    // The job makes its request just after recording its wait.
    let mut request = None;
    for _ in 0..200 {
        request = engine.approval(&job).await.unwrap();
        if request.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let request = request.expect("a request");
    assert_eq!(request.reason, "window freeze");
    let who = crate::access::Principal {
        name: "ann".into(),
        role: crate::access::Role::Approver,
    };
    engine
        .decide(&job, &who, true, Some("CAB ok".into()))
        .await
        .unwrap();
    let (state, _) = job_of(&store, &id, "frozen", |s| s == JobState::Done).await;
    assert_eq!(state, JobState::Done);
    let d = store.history.event_detail(&id).await.unwrap().unwrap();
    let m = d.matches.iter().find(|m| m.rule == "frozen").unwrap();
    assert_eq!(m.decision.as_ref().map(|d| d.by.as_str()), Some("ann"));
    engine.shutdown(Duration::from_secs(1)).await;
}
