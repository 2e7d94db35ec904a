//! The storage conformance suite (`tests/conformance`) on the JetStream backend, against a real
//! nats-server (`RULEHOOK_TEST_NATS`, default `nats://127.0.0.1:4222`). Each test has its own
//! prefix (its own streams and consumers), removed afterwards.
//!
//! Not run here: `rules_take_turns`. JetStream's work queue is one FIFO consumer shared by
//! every node: rules do not take turns (docs/architecture.md says so).

mod conformance;

use std::future::Future;
use std::time::Duration;

use conformance::{Backend, Config};
use rulehook::store::Store;
use rulehook::store::nats::{Jet, NatsConfig};

/// The NATS server the tests use; a clear failure when none answers.
pub fn nats_url() -> String {
    let url =
        std::env::var("RULEHOOK_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url
        .trim_start_matches("nats://")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    if std::net::TcpStream::connect_timeout(
        &addr
            .parse()
            .unwrap_or_else(|_| panic!("RULEHOOK_TEST_NATS: `{url}` is not host:port")),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!(
            "no NATS server answers at {url}: these tests need one with JetStream. Start it with \
             `nats-server -js -a 127.0.0.1 -p 4222` (or point RULEHOOK_TEST_NATS at one)"
        );
    }
    url
}

/// One deployment (prefix) on the test server; its streams are removed when it is dropped.
struct Deployment {
    url: String,
    prefix: String,
}

impl Deployment {
    fn new() -> Deployment {
        Deployment {
            url: nats_url(),
            prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(Jet::destroy(&url, &prefix))
        })
        .join();
    }
}

impl Backend for Deployment {
    fn open(&self, config: Config) -> impl Future<Output = Store> + Send {
        let mut c = NatsConfig::new(&self.url, &self.prefix);
        // Short, so lease expiry tests run quickly (a held lease is kept alive regardless).
        c.ack_wait = Duration::from_millis(100);
        if let Some(max) = config.max_deliveries {
            c.max_deliveries = max;
        }
        async move { Store::nats(c).await.expect("open the JetStream store") }
    }
}

const MANY: usize = 2_000;
const BUDGET: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_then_fetch() {
    conformance::append_then_fetch(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rule_keeps_acceptance_order() {
    conformance::one_rule_keeps_acceptance_order(&Deployment::new(), MANY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rule_keeps_acceptance_order_across_a_restart() {
    conformance::one_rule_keeps_acceptance_order_across_a_restart(&Deployment::new(), MANY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_lease_is_redelivered_and_refused() {
    conformance::an_expired_lease_is_redelivered_and_refused(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_keeps_the_lease() {
    conformance::a_heartbeat_keeps_the_lease(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nak_delays_and_carries_the_step() {
    conformance::nak_delays_and_carries_the_step(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_and_acks_survive_a_restart() {
    conformance::progress_and_acks_survive_a_restart(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letter_after_the_delivery_budget() {
    conformance::dead_letter_after_the_delivery_budget(&Deployment::new(), BUDGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_deduplicated() {
    conformance::deliveries_are_deduplicated(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_compare_and_set() {
    conformance::state_compare_and_set(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_records_and_filters() {
    conformance::history_records_and_filters(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_unfinished_work() {
    conformance::retention_keeps_unfinished_work(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naks_do_not_spend_the_lost_lease_budget() {
    conformance::naks_do_not_spend_the_lost_lease_budget(&Deployment::new(), BUDGET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_steps_over_kept_events() {
    conformance::retention_steps_over_kept_events(&Deployment::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn depth_counts_every_pending_job() {
    conformance::depth_counts_every_pending_job(&Deployment::new(), 300).await;
}
