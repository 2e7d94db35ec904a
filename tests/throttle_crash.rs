//! A throttle window opened by an event that was never stored: the service died (kill -9)
//! between opening the window and appending the event, so its sender got no answer and sends
//! it again. The resent event must run the rule, not be throttled by a window nothing fired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rulehook::engine::{Engine, Settings};
use rulehook::rules::{Dirs, load};
use rulehook::store::{StateStore, Store, StoreError};
use rulehook::verify::{Delivery, VerifiedEvent};
use serde_json::json;

/// The state store of a service that dies right after it opened a throttle window: that
/// window is stored, and the task that opened it never goes on.
struct DiesAfterOpeningAWindow {
    inner: Arc<dyn StateStore>,
    died: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl StateStore for DiesAfterOpeningAWindow {
    async fn get(&self, key: &str) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.get(key).await
    }
    async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let rev = self.inner.create(key, value, ttl).await?;
        if key.starts_with("throttle/") && !self.died.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(rev)
    }
    async fn update(
        &self,
        key: &str,
        value: &str,
        expected: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.inner.update(key, value, expected, ttl).await
    }
    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<(), StoreError> {
        self.inner.delete(key, expected).await
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn event(device: &str, delivery: &str) -> VerifiedEvent {
    let d = Delivery {
        key: delivery.to_string(),
        window: Some(Duration::from_secs(3600)),
    };
    VerifiedEvent::internal("s", json!({ "device": device }), 0, "test", d)
}

#[test]
fn an_event_resent_after_a_crash_between_its_throttle_window_and_its_append_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(
        p.join("rulebooks/r.yml"),
        "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: r\n    throttle: { once_within: 10m, group_by: ['$.device'] }\n    actions: [{ log: { message: 'ran {{ event.device }}' } }]\n",
    )
    .unwrap();
    let rules = || {
        Arc::new(
            load(&Dirs {
                rulebooks: p.join("rulebooks"),
                scripts: p.join("scripts"),
                templates: p.join("templates"),
            })
            .unwrap(),
        )
    };
    let died = Arc::new(AtomicBool::new(false));
    let rt = runtime();
    rt.block_on(async {
        let store = Store::embedded(&p.join("data")).unwrap();
        let state = Arc::new(DiesAfterOpeningAWindow {
            inner: store.state.clone(),
            died: died.clone(),
        });
        let engine = Engine::new(Store { state, ..store }, rules(), Settings::default());
        engine.start();
        let sending = tokio::spawn(async move { engine.ingest(event("r1", "a")).await });
        for _ in 0..400 {
            if died.load(Ordering::SeqCst) {
                assert!(!sending.is_finished(), "the sender got no answer");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the event never opened its throttle window");
    });
    rt.shutdown_timeout(Duration::ZERO);

    let rt = runtime();
    rt.block_on(async {
        let store = Store::embedded(&p.join("data")).unwrap();
        let engine = Engine::new(store.clone(), rules(), Settings::default());
        engine.start();
        // The sender tries again: it is not a duplicate (nothing was stored) and it runs.
        let again = engine.ingest(event("r1", "a")).await.unwrap();
        assert_eq!((again.duplicate, again.matched), (false, 1), "{again:?}");
        // The window it opened throttles what follows in its group.
        let next = engine.ingest(event("r1", "b")).await.unwrap();
        assert_eq!((next.duplicate, next.matched), (false, 0), "{next:?}");
        let other = engine.ingest(event("r2", "c")).await.unwrap();
        assert_eq!(other.matched, 1, "{other:?}");
        engine.shutdown(Duration::from_secs(2)).await;
    });
}
