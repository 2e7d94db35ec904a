//! NATS in, against the local nats-server (RULEHOOK_TEST_NATS, default 127.0.0.1:4222): core
//! subjects with `meta("subject")`, and a JetStream durable consumer that gets what was
//! published while rulehook was stopped. Subjects and the stream are unique to each run.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Server, nats_url};

fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn wait_connected(server: &Server, source: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = server.metrics().await;
        if text.contains(&format!(
            "rulehook_source_connected{{source=\"{source}\"}} 1"
        )) {
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

#[tokio::test]
async fn core_subjects_and_a_jetstream_durable_across_a_restart() {
    let url = nats_url();
    let id = unique();
    let nc = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let stream_name = format!("RHTEST_SRC_{id}");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("rhtest.js.{id}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let env = Env::new();
    env.rulebook(
        "nats.yml",
        &format!(
            r#"
sources:
  - name: bus
    kind: nats
    url: {url}
    subjects: ["rhtest.core.{id}.>"]
  - name: durable
    kind: nats
    url: {url}
    subjects: ["rhtest.js.{id}.>"]
    stream: {stream_name}
    durable: rulehook_{id}
rules:
  - name: from-core
    sources: [bus]
    condition: 'search(meta("subject"), "\\.sw[0-9]+$")'
    actions:
      - run_script: {{ script: record.sh, args: ["core", "{{{{ meta.subject }}}}", "{{{{ event.n }}}}"] }}
  - name: from-jetstream
    sources: [durable]
    actions:
      - run_script: {{ script: record.sh, args: ["js", "{{{{ event.n }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let mut server = Server::start(&env, &[], &[]);
    wait_connected(&server, "bus").await;
    wait_connected(&server, "durable").await;
    nc.publish(format!("rhtest.core.{id}.rt1"), r#"{"n":0}"#.into())
        .await
        .unwrap();
    nc.publish(format!("rhtest.core.{id}.sw7"), r#"{"n":1}"#.into())
        .await
        .unwrap();
    js.publish(format!("rhtest.js.{id}.a"), r#"{"n":10}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    nc.flush().await.unwrap();
    let mut lines = env.wait_lines("runs.txt", 2, Duration::from_secs(30));
    lines.sort();
    assert_eq!(
        lines,
        vec![format!("core rhtest.core.{id}.sw7 1"), "js 10".to_string()],
        "{}",
        server.log_text()
    );
    server.terminate();
    // While rulehook is stopped: the durable keeps these for it.
    for n in [11, 12] {
        js.publish(
            format!("rhtest.js.{id}.b"),
            format!(r#"{{"n":{n}}}"#).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let server = Server::start(&env, &[], &[]);
    let mut lines = env.wait_lines("runs.txt", 4, Duration::from_secs(60));
    lines.sort();
    assert_eq!(
        lines,
        vec![
            format!("core rhtest.core.{id}.sw7 1"),
            "js 10".to_string(),
            "js 11".to_string(),
            "js 12".to_string(),
        ],
        "{}",
        server.log_text()
    );
    drop(server);
    let _ = js.delete_stream(&stream_name).await;
}

/// A JetStream message delivered again (its ack lost: rulehook killed between storing it and
/// acknowledging it, or the durable consumer made again) became a second event, and its rule
/// ran twice. A redelivery is now recognised by the message's stream sequence (with its
/// subject and payload) and not stored again.
#[tokio::test]
async fn a_jetstream_message_delivered_again_is_stored_once() {
    let url = nats_url();
    let id = unique();
    let nc = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let stream_name = format!("RHTEST_REDO_{id}");
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("rhtest.redo.{id}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
    let env = Env::new();
    env.rulebook(
        "nats.yml",
        &format!(
            r#"
sources:
  - name: durable
    kind: nats
    url: {url}
    subjects: ["rhtest.redo.{id}.>"]
    stream: {stream_name}
    durable: rulehook_{id}
rules:
  - name: from-jetstream
    sources: [durable]
    actions:
      - run_script: {{ script: record.sh, args: ["js", "{{{{ event.n }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let mut server = Server::start(&env, &[], &[]);
    wait_connected(&server, "durable").await;
    for n in [1, 2] {
        js.publish(
            format!("rhtest.redo.{id}.a"),
            format!(r#"{{"n":{n}}}"#).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    env.wait_lines("runs.txt", 2, Duration::from_secs(30));
    server.terminate();
    // Everything the durable had acknowledged is delivered again from the start.
    stream
        .delete_consumer(&format!("rulehook_{id}"))
        .await
        .unwrap();
    js.publish(format!("rhtest.redo.{id}.a"), r#"{"n":3}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let server = Server::start(&env, &[], &[]);
    env.wait_lines("runs.txt", 3, Duration::from_secs(30));
    // Time for the redelivered 1 and 2 to have run again, had they been stored again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lines = env.lines("runs.txt");
    lines.sort();
    assert_eq!(lines, ["js 1", "js 2", "js 3"], "{}", server.log_text());
    drop(server);
    let _ = js.delete_stream(&stream_name).await;
}
