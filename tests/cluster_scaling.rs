//! Workers share one queue: three worker processes against one (real processes, real
//! nats-server), 3,000 events whose action takes ~50 ms, the same `--concurrency` per worker.
//! Alone in its test binary, so no other test competes for the CPU meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Receiver, node, post_all, work_rulebook};
use common::{Env, NatsPrefix, Server};

const EVENTS: usize = 3_000;
const CONCURRENCY: usize = 4;
const ACTION: Duration = Duration::from_millis(50);

/// The one-minute load average (runnable processes), 0 when unknown.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Actions a node ran, from its own `/metrics`.
async fn runs_of(node: &Server) -> u64 {
    let text = node.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("rulehook_action_runs_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// How long `workers` worker processes take for the queued events: from their start (process
/// start-up included) and from the first action answered to the last (the draining alone);
/// and how many actions each worker ran.
async fn drain(workers: usize) -> (Duration, Duration, Vec<u64>) {
    let (recv, url) = Receiver::start(ACTION).await;
    let env = Env::new();
    env.rulebook("r.yml", &work_rulebook(&format!("{url}/slow")));
    let nats = NatsPrefix::new();
    let ingest = node(&env, &nats, "ingest", &[]);
    post_all(&ingest, EVENTS).await;
    let started = Instant::now();
    let nodes: Vec<Server> = (0..workers)
        .map(|_| {
            node(
                &env,
                &nats,
                "worker",
                &["--concurrency", &CONCURRENCY.to_string()],
            )
        })
        .collect();
    assert!(
        recv.wait_runs(EVENTS, Duration::from_secs(300)).await,
        "{workers} worker(s) ran only {} of {EVENTS} jobs",
        recv.runs().len()
    );
    let took = started.elapsed();
    let (first, last) = recv.answered_between().expect("actions were answered");
    let mut shares = Vec::new();
    for n in &nodes {
        shares.push(runs_of(n).await);
    }
    (took, last - first, shares)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_share_the_queue() {
    // Others' load before this test starts anything (its own processes load the CPU later).
    let load_before = load_average();
    let (one_wall, one, _) = drain(1).await;
    let (three_wall, three, shares) = drain(3).await;
    // Judged on the draining, first action to last: starting a process (a debug binary that
    // connects, creates its consumers and loads the rulebooks) is a fixed cost of a second or
    // so that has nothing to do with sharing the queue, and three starting at once on two
    // cores pay it together. Both figures are printed.
    let ratio = three.as_secs_f64() / one.as_secs_f64();
    let wall_ratio = three_wall.as_secs_f64() / one_wall.as_secs_f64();
    let ideal_one = ACTION * (EVENTS / CONCURRENCY) as u32;
    eprintln!(
        "{EVENTS} jobs of ~50 ms, --concurrency {CONCURRENCY} per worker: draining took 1 worker \
         {one:?} (ideal {ideal_one:?}), 3 workers {three:?} (shares {shares:?}): ratio \
         {ratio:.2}; from the workers' start: {one_wall:?} and {three_wall:?}, ratio {wall_ratio:.2}"
    );
    // Every worker took a real share of the queue.
    assert_eq!(shares.iter().sum::<u64>(), EVENTS as u64, "{shares:?}");
    for s in &shares {
        assert!(
            *s as usize >= EVENTS / 6,
            "a worker ran only {s} of {EVENTS}: {shares:?}"
        );
    }
    // The time ratio means something only when the workers are bound by their slots, not by a
    // CPU other processes hold (this machine has 2 cores): one worker within 1.5x of what its
    // slots allow, and no more runnable processes than cores before the test began.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = load_before > cores;
    // RULEHOOK_PERF=required: judge the ratio whatever the machine is doing (a quiet machine
    // kept for benchmarks), so a slow sharing cannot hide behind a busy CPU.
    let required = std::env::var("RULEHOOK_PERF").is_ok_and(|v| v == "required");
    if required || (one.as_secs_f64() <= ideal_one.as_secs_f64() * 1.5 && !busy) {
        assert!(
            ratio <= 0.40,
            "3 workers took {three:?}, 1 worker {one:?} (ratio {ratio:.2} > 0.40)"
        );
    } else {
        eprintln!(
            "WARNING: the CPU is saturated (1 worker took {one:?}, its slots allow {ideal_one:?}; \
             load average {load_before:.1} on {cores} cores before the test): the time ratio \
             {ratio:.2} was not checked (RULEHOOK_PERF=required checks it); the shares were"
        );
    }
}
