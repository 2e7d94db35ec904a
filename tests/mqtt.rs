//! MQTT in, with the local Mosquitto (127.0.0.1:1883) and its `mosquitto_pub`: QoS 1 into a
//! persistent session, so what is published while rulehook is stopped arrives when it returns.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, Server};

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn publish(topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_connected(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = server.metrics().await;
        if text.contains("rulehook_source_connected{source=\"telemetry\"} 1") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not connected: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes the test's persistent session from the broker (a clean-session connect).
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "1883",
                "-i",
                &self.0,
                "-t",
                "rh-none",
                "-E",
            ])
            .output();
    }
}

#[tokio::test]
async fn qos1_messages_published_while_stopped_arrive_after_the_restart() {
    let id = unique();
    let _session = Session(format!("rh-test-{id}"));
    let env = Env::new();
    env.rulebook(
        "mqtt.yml",
        &format!(
            r#"
sources:
  - name: telemetry
    kind: mqtt
    url: mqtt://127.0.0.1:1883
    topics: ["rh-test-{id}/#"]
    client_id: rh-test-{id}
rules:
  - name: access-switches
    sources: [telemetry]
    condition: 'search(meta("topic"), "/sw[0-9]+$")'
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ meta.topic }}}}", "{{{{ event.n }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let mut server = Server::start(&env, &[], &[]);
    wait_connected(&server).await;
    publish(&format!("rh-test-{id}/site1/rt1"), r#"{"n": 0}"#);
    publish(&format!("rh-test-{id}/site1/sw12"), r#"{"n": 1}"#);
    let lines = env.wait_lines("runs.txt", 1, Duration::from_secs(30));
    assert_eq!(
        lines,
        vec![format!("rh-test-{id}/site1/sw12 1")],
        "{}",
        server.log_text()
    );
    server.terminate();
    publish(&format!("rh-test-{id}/site2/sw3"), r#"{"n": 2}"#);
    publish(&format!("rh-test-{id}/site2/sw4"), r#"{"n": 3}"#);
    let server = Server::start(&env, &[], &[]);
    let mut lines = env.wait_lines("runs.txt", 3, Duration::from_secs(60));
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("rh-test-{id}/site1/sw12 1"),
            format!("rh-test-{id}/site2/sw3 2"),
            format!("rh-test-{id}/site2/sw4 3"),
        ],
        "{}",
        server.log_text()
    );
}

/// A QoS 1 message longer than the source's limit (1 MiB) is dropped and counted `too_long`,
/// and the session goes on: the client refused to read it, the broker sent it again first on
/// every connection, and nothing published after it ever came (a reconnect every 200 ms).
#[tokio::test]
async fn an_oversized_message_is_counted_and_does_not_stop_the_session() {
    let id = unique();
    let _session = Session(format!("rh-big-{id}"));
    let env = Env::new();
    env.rulebook(
        "mqtt.yml",
        &format!(
            r#"
sources:
  - name: telemetry
    kind: mqtt
    url: mqtt://127.0.0.1:1883
    topics: ["rh-big-{id}/#"]
    client_id: rh-big-{id}
rules:
  - name: all
    sources: [telemetry]
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ event.n }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = Server::start(&env, &[], &[]);
    wait_connected(&server).await;
    let big = env.path("big.json");
    std::fs::write(
        &big,
        format!(r#"{{"n": 0, "pad": "{}"}}"#, "a".repeat(2 << 20)),
    )
    .unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1"])
        .args(["-t", &format!("rh-big-{id}/a"), "-f"])
        .arg(&big)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    publish(&format!("rh-big-{id}/b"), r#"{"n": 1}"#);
    let lines = env.wait_lines("runs.txt", 1, Duration::from_secs(30));
    assert_eq!(lines, vec!["1".to_string()], "{}", server.log_text());
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(
            "rulehook_messages_dropped_total{source=\"telemetry\",reason=\"too_long\"} 1"
        ),
        "{metrics}"
    );
}
