//! The storage conformance suite (`tests/conformance`) on the JetStream backend, against a real
//! nats-server (`RULEHOOK_TEST_NATS`, default `nats://127.0.0.1:4222`). Each test has its own
//! prefix (its own streams and consumers), removed afterwards.
//!
//! Not run here: `rules_take_turns`. JetStream's work queue is one FIFO consumer shared by
//! every node: rules do not take turns (docs/architecture.md says so).

mod common;
mod conformance;

use std::future::Future;
use std::time::Duration;

use common::NatsPrefix;
use conformance::{Backend, Config};
use rulehook::store::Store;
use rulehook::store::nats::NatsConfig;

/// One deployment (prefix) on the test server, removed afterwards.
struct Deployment(NatsPrefix, Duration);

impl Deployment {
    /// Short, so lease expiry tests run quickly (a held lease is kept alive regardless), and
    /// longer than leasing takes on a loaded machine (between delivery and the first progress
    /// ack).
    fn new() -> Deployment {
        Deployment(NatsPrefix::new(), Duration::from_millis(300))
    }

    /// For tests that hold hundreds of leases at once and are not about expiry: on a busy
    /// machine the keeper's progress acks can come later than 300 ms, and a redelivery would
    /// read as "leased before".
    fn patient() -> Deployment {
        Deployment(NatsPrefix::new(), Duration::from_secs(5))
    }
}

impl Backend for Deployment {
    fn open(&self, config: Config) -> impl Future<Output = Store> + Send {
        let mut c = NatsConfig::new(&self.0.url, &self.0.prefix);
        c.ack_wait = self.1;
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
    conformance::one_rule_keeps_acceptance_order(&Deployment::patient(), MANY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_rule_keeps_acceptance_order_across_a_restart() {
    conformance::one_rule_keeps_acceptance_order_across_a_restart(&Deployment::patient(), MANY)
        .await;
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
async fn deliveries_survive_a_restart() {
    conformance::deliveries_survive_a_restart(&Deployment::new()).await;
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
    let deployment = Deployment::new();
    let pruned = conformance::retention_keeps_unfinished_work(&deployment).await;
    // Expired state entries go too: the one that expired.
    assert_eq!(pruned.state, 1, "{pruned:?}");
    // Gone from the stream, not only read as absent: ask the stream for each key's message
    // (subject `<prefix>.s.<key in URL-safe base64>`).
    use base64::Engine as _;
    let prefix = &deployment.0.prefix;
    let client = async_nats::connect(&deployment.0.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(format!("{prefix}_state")).await.unwrap();
    let stored = async |key: &str| {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        stream
            .get_last_raw_message_by_subject(&format!("{prefix}.s.{token}"))
            .await
            .is_ok()
    };
    assert!(
        !stored("retention/short").await,
        "the expired entry is still in the stream"
    );
    assert!(stored("retention/long").await);
    assert!(stored("retention/forever").await);
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
    conformance::depth_counts_every_pending_job(&Deployment::new(), 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_awaiting_approval_says_so() {
    conformance::an_event_awaiting_approval_says_so(&Deployment::new()).await;
}

/// A second message of one job (the dispatcher ran twice past the duplicate window, or a node
/// stopped between recording a job finished and acking its message) is skipped: while the job
/// is leased, and after it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_message_of_a_job_is_skipped() {
    let d = Deployment::new();
    let s = d.open(Config::default()).await;
    let id = conformance::append_one(&s, "alpha", "once", 1).await;
    let lease = conformance::must_fetch(&s, conformance::TTL).await;
    assert_eq!(lease.job.id, id);
    let client = async_nats::connect(&d.0.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let job = serde_json::json!({
        "id": lease.job.id, "event_id": lease.job.event_id, "rulebook": lease.job.rulebook,
        "rule": lease.job.rule, "key": lease.job.key, "fingerprint": lease.job.fingerprint,
    });
    let stray = |n: u32| {
        let (js, job) = (js.clone(), job.clone());
        let subject = format!("{}.q", d.0.prefix);
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("stray-{n}").as_str());
            js.publish_with_headers(subject, h, job.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // Skipped is acked, so gone from the work queue: a stray the store could not read (or
    // set aside any other way) would stay, and fetch nothing just the same.
    let queue_holds = |n: u64| {
        let (js, name) = (js.clone(), format!("{}_queue", d.0.prefix));
        move || {
            let (js, name) = (js.clone(), name.clone());
            async move {
                let mut st = js.get_stream(name).await.expect("queue stream");
                st.info().await.expect("stream info").state.messages == n
            }
        }
    };
    stray(1).await;
    conformance::fetch_nothing(&s, conformance::NOTHING).await;
    let within = Duration::from_secs(5);
    conformance::eventually(within, "only the leased message left", queue_holds(1)).await;
    conformance::ack_done(&s, lease).await;
    stray(2).await;
    conformance::fetch_nothing(&s, conformance::NOTHING).await;
    conformance::eventually(within, "the queue stream emptied", queue_holds(0)).await;
    assert_eq!(
        conformance::job_state(&s, &id).await,
        Some(rulehook::domain::JobState::Done)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_events_page_in_acceptance_order() {
    conformance::stored_events_page_in_acceptance_order(&Deployment::new()).await;
}
