//! The connection state of every listening source, for `/api/status` and `/metrics`: whether
//! an MQTT session, a NATS subscription or a syslog listener is up, its last error and since
//! when. Transports write it as their state changes; the admin API reads a snapshot.
//!
//! Process-wide (like the metrics registry): one serving process has one set of transports, and
//! keeping it here lets the transports and the HTTP planes share it without importing each
//! other. The gauge `rulehook_source_connected{source}` follows every change: 1 while all of
//! the source's connections are up.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// Gauge: 1 while a source's connection (or listener) is up, else 0.
pub const CONNECTED: &str = "rulehook_source_connected";

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Trying for the first time.
    Connecting,
    /// Up: a broker session subscribed, a subscription in place, a socket bound.
    Connected,
    /// Lost (or refused); trying again with backoff.
    Reconnecting,
    /// Stopped (the service is shutting down).
    Closed,
}

/// One source's connection to one target (a broker, a NATS server, a listen address).
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub source: String,
    /// `mqtt`, `nats`, `syslog` …
    pub transport: &'static str,
    /// `mqtts://broker:8883`, `tcp://0.0.0.0:514` …
    pub target: String,
    pub state: State,
    /// The last error seen (kept after a reconnect, to say why it was lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `state` was entered (Unix milliseconds).
    pub since_ms: i64,
}

type Key = (String, String);

fn table() -> &'static Mutex<BTreeMap<Key, Connection>> {
    static TABLE: OnceLock<Mutex<BTreeMap<Key, Connection>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Records `state` for `source`'s connection to `target`; `error` (if any) becomes its last
/// error. The time moves only when the state changes.
pub fn set(
    source: &str,
    transport: &'static str,
    target: &str,
    state: State,
    error: Option<String>,
) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    let now = crate::domain::now_ms();
    let entry = t
        .entry((source.to_string(), target.to_string()))
        .or_insert_with(|| Connection {
            source: source.to_string(),
            transport,
            target: target.to_string(),
            state,
            last_error: None,
            since_ms: now,
        });
    if entry.state != state {
        entry.state = state;
        entry.since_ms = now;
    }
    if let Some(e) = error {
        entry.last_error = Some(crate::secrets::mask(&e).into_owned());
    }
    let all_up = t
        .values()
        .filter(|c| c.source == source)
        .all(|c| c.state == State::Connected);
    metrics::gauge!(CONNECTED, "source" => source.to_string()).set(if all_up { 1.0 } else { 0.0 });
}

/// Drops every row of `source` (stopped by a reload: removed, or restarted with other
/// targets); its gauge reads 0 until it connects again.
pub fn forget(source: &str) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    t.retain(|(s, _), _| s != source);
    metrics::gauge!(CONNECTED, "source" => source.to_string()).set(0.0);
}

/// Every connection, ordered by source and target.
pub fn snapshot() -> Vec<Connection> {
    let t = table().lock().unwrap_or_else(|p| p.into_inner());
    t.values().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_changes_move_the_time_and_errors_stay() {
        set("t-src", "mqtt", "mqtt://h:1", State::Connecting, None);
        let first = snapshot()
            .into_iter()
            .find(|c| c.source == "t-src")
            .unwrap();
        assert_eq!(first.state, State::Connecting);
        set(
            "t-src",
            "mqtt",
            "mqtt://h:1",
            State::Reconnecting,
            Some("refused".into()),
        );
        set("t-src", "mqtt", "mqtt://h:1", State::Connected, None);
        let now = snapshot()
            .into_iter()
            .find(|c| c.source == "t-src")
            .unwrap();
        assert_eq!(now.state, State::Connected);
        assert_eq!(now.last_error.as_deref(), Some("refused"));
        assert!(now.since_ms >= first.since_ms);
        let json = serde_json::to_value(&now).unwrap();
        assert_eq!(json["state"], "connected");
    }
}
