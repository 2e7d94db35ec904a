//! Workers share one queue: three worker processes against one (real processes, real
//! nats-server). Alone in its test binary, so no other test competes for the CPU meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Receiver, node, post_all, work_rulebook};
use common::{Env, NatsPrefix, Server};

/// The time `workers` worker processes take for `events` queued ~50 ms actions.
async fn drain_time(workers: usize, events: usize, concurrency: &str) -> Duration {
    let (recv, url) = Receiver::start(Duration::from_millis(50)).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/slow")));
    let nats = NatsPrefix::new();
    let ingest = node(&env, &nats, "ingest", &[]);
    post_all(&ingest, events).await;
    let started = Instant::now();
    let _workers: Vec<Server> = (0..workers)
        .map(|_| node(&env, &nats, "worker", &["--concurrency", concurrency]))
        .collect();
    assert!(
        recv.wait_runs(events, Duration::from_secs(240)).await,
        "{workers} worker(s) ran only {} of {events} jobs",
        recv.runs().len()
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_share_the_queue() {
    const EVENTS: usize = 3_000;
    let one = drain_time(1, EVENTS, "8").await;
    let three = drain_time(3, EVENTS, "8").await;
    let ratio = three.as_secs_f64() / one.as_secs_f64();
    eprintln!(
        "{EVENTS} jobs of ~50 ms, --concurrency 8 per worker: 1 worker {one:?}, 3 workers {three:?}: ratio {ratio:.2}"
    );
    assert!(
        ratio <= 0.40,
        "3 workers took {three:?}, 1 worker {one:?} (ratio {ratio:.2} > 0.40)"
    );
}
