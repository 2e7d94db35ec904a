//! A sample of the messages a `keep: matched` source did not store (they matched no rule), so
//! the console's live view can still show what arrives: at most a few per second per source,
//! the newest [`KEEP`] per source kept in memory, and each one broadcast to live pages.
//!
//! Process-wide (like the metrics registry), so the transports that take the messages and the
//! console that shows them share it without importing each other. Costs one clock read per
//! unmatched message (or one per batch: `Sampler::due_at`); a sampled one is copied (masked and cut to [`MAX_TEXT`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

/// Samples kept per source.
pub const KEEP: usize = 20;
/// A sample's text is cut to this many characters.
pub const MAX_TEXT: usize = 400;
/// At most one sample per source in this many milliseconds.
const EVERY_MS: u64 = 200;

/// One message that was not stored.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub source: String,
    pub received_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The message as rules saw it (JSON), masked and cut.
    pub text: String,
}

struct Shared {
    recent: Mutex<BTreeMap<String, VecDeque<Arc<Sample>>>>,
    live: tokio::sync::broadcast::Sender<Arc<Sample>>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        recent: Mutex::new(BTreeMap::new()),
        live: tokio::sync::broadcast::channel(256).0,
    })
}

/// Decides, per source, which unmatched messages are sampled.
#[derive(Debug, Default)]
pub struct Sampler {
    last: AtomicU64,
}

impl Sampler {
    /// True at most once per [`EVERY_MS`].
    pub fn due(&self) -> bool {
        self.due_at(crate::domain::now_ms())
    }

    /// [`Sampler::due`] with the clock already read (`now_ms`, once for a batch of messages).
    pub fn due_at(&self, now_ms: i64) -> bool {
        let slot = now_ms as u64 / EVERY_MS + 1;
        // Read first: most messages of a busy source find the slot taken, and a load leaves
        // the cache line shared between the threads that take messages.
        self.last.load(Ordering::Relaxed) != slot && self.last.swap(slot, Ordering::Relaxed) != slot
    }
}

/// Records a message of `source` that was not stored.
pub fn record(source: &str, peer: Option<std::net::IpAddr>, body: &serde_json::Value) {
    let mut text = crate::secrets::mask(&body.to_string()).into_owned();
    if let Some((cut, _)) = text.char_indices().nth(MAX_TEXT) {
        text.truncate(cut);
        text.push('…');
    }
    let sample = Arc::new(Sample {
        source: source.to_string(),
        received_at: crate::domain::rfc3339(crate::domain::now_ms()),
        peer: peer.map(|p| p.to_string()),
        text,
    });
    let s = shared();
    {
        let mut recent = s.recent.lock().unwrap_or_else(|p| p.into_inner());
        let ring = recent.entry(source.to_string()).or_default();
        if ring.len() >= KEEP {
            ring.pop_front();
        }
        ring.push_back(sample.clone());
    }
    // Nobody watching is not an error.
    let _ = s.live.send(sample);
}

/// The kept samples, newest first; of one source, or of all.
pub fn recent(source: Option<&str>) -> Vec<Arc<Sample>> {
    let recent = shared().recent.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<Arc<Sample>> = recent
        .iter()
        .filter(|(name, _)| source.is_none_or(|s| s == name.as_str()))
        .flat_map(|(_, ring)| ring.iter().cloned())
        .collect();
    out.sort_by(|a, b| b.received_at.cmp(&a.received_at));
    out
}

/// Samples as they are recorded (for live pages).
pub fn subscribe() -> tokio::sync::broadcast::Receiver<Arc<Sample>> {
    shared().live.subscribe()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_bounded_cut_and_broadcast() {
        let mut rx = subscribe();
        for i in 0..KEEP + 5 {
            record(
                "u-test",
                None,
                &serde_json::json!({"message": format!("m{i}")}),
            );
        }
        let kept = recent(Some("u-test"));
        assert_eq!(kept.len(), KEEP);
        assert!(
            kept.iter()
                .any(|s| s.text.contains(&format!("m{}", KEEP + 4)))
        );
        assert!(!kept.iter().any(|s| s.text.contains("\"m0\"")));
        assert!(rx.try_recv().is_ok());
        record(
            "u-test2",
            None,
            &serde_json::json!({"message": "x".repeat(2 * MAX_TEXT)}),
        );
        let long = &recent(Some("u-test2"))[0];
        assert_eq!(long.text.chars().count(), MAX_TEXT + 1);
        let s = Sampler::default();
        assert!(s.due());
        assert!(!s.due(), "a second one in the same slot is not sampled");
    }
}
