//! The storage conformance suite (`tests/conformance`) on the embedded SQLite store, each test
//! in its own data directory.

mod conformance;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use conformance::{Backend, Config};
use rulehook::store::sqlite::{MAX_DELIVERIES, MEMORY_CAP};
use rulehook::store::{Embedded, Store};
use tempfile::TempDir;

/// One data directory; each `open` is a process starting on it.
struct EmbeddedDir(TempDir);

impl EmbeddedDir {
    fn new() -> EmbeddedDir {
        EmbeddedDir(tempfile::tempdir().unwrap())
    }
}

impl Backend for EmbeddedDir {
    fn open(&self, config: Config) -> impl Future<Output = Store> + Send {
        let dir: PathBuf = self.0.path().join("data");
        async move {
            match config.max_deliveries {
                None => Store::embedded(&dir).unwrap(),
                Some(max) => {
                    let e = Arc::new(Embedded::open_with(&dir, max).unwrap());
                    Store {
                        log: e.clone(),
                        queue: e.clone(),
                        state: e.clone(),
                        history: e,
                    }
                }
            }
        }
    }
}

/// More jobs than the queue holds in memory: spilled, then refilled several times.
const MANY: usize = 10_000;
// Half of them (queued up front, or left after a restart) are already more than memory holds.
const _: () = assert!(MANY / 2 > MEMORY_CAP);
/// A delivery budget other than the default, so the test sees that it is the one applied.
const BUDGET: u32 = 3;
const _: () = assert!(BUDGET < MAX_DELIVERIES);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_then_fetch() {
    conformance::append_then_fetch(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rule_keeps_acceptance_order() {
    conformance::one_rule_keeps_acceptance_order(&EmbeddedDir::new(), MANY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rule_keeps_acceptance_order_across_a_restart() {
    conformance::one_rule_keeps_acceptance_order_across_a_restart(&EmbeddedDir::new(), MANY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_take_turns() {
    conformance::rules_take_turns(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_lease_is_redelivered_and_refused() {
    conformance::an_expired_lease_is_redelivered_and_refused(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_keeps_the_lease() {
    conformance::a_heartbeat_keeps_the_lease(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nak_delays_and_carries_the_step() {
    conformance::nak_delays_and_carries_the_step(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_and_acks_survive_a_restart() {
    conformance::progress_and_acks_survive_a_restart(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_after_the_delivery_budget() {
    conformance::dead_letter_after_the_delivery_budget(&EmbeddedDir::new(), BUDGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_deduplicated() {
    conformance::deliveries_are_deduplicated(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_survive_a_restart() {
    conformance::deliveries_survive_a_restart(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_compare_and_set() {
    conformance::state_compare_and_set(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_records_and_filters() {
    conformance::history_records_and_filters(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_unfinished_work() {
    let dir = EmbeddedDir::new();
    let pruned = conformance::retention_keeps_unfinished_work(&dir).await;
    // The embedded store deletes expired state entries itself: the one that expired.
    assert_eq!(pruned.state, 1, "{pruned:?}");
    // Gone from the file, not only read as absent: count the rows themselves.
    let db = rusqlite::Connection::open(dir.0.path().join("data").join("journal.db")).unwrap();
    let rows = |key: &str| -> i64 {
        db.query_row("SELECT count(*) FROM state WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(
        rows("retention/short"),
        0,
        "the expired entry is still stored"
    );
    assert_eq!(rows("retention/long"), 1);
    assert_eq!(rows("retention/forever"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naks_do_not_spend_the_lost_lease_budget() {
    conformance::naks_do_not_spend_the_lost_lease_budget(&EmbeddedDir::new(), BUDGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_steps_over_kept_events() {
    conformance::retention_steps_over_kept_events(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_events_page_in_acceptance_order() {
    conformance::stored_events_page_in_acceptance_order(&EmbeddedDir::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn depth_counts_every_pending_job() {
    conformance::depth_counts_every_pending_job(&EmbeddedDir::new(), MANY / 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_awaiting_approval_says_so() {
    conformance::an_event_awaiting_approval_says_so(&EmbeddedDir::new()).await;
}
