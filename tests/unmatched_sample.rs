//! `keep: matched`: syslog lines that match no rule are not stored, yet the console's live view
//! shows a sample of them (over its Server-Sent Events, and on the events page), and the
//! listener's state is in `/api/status`.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Env, Server, client};

#[tokio::test]
async fn unmatched_lines_are_sampled_into_the_live_view_not_stored() {
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        r#"
sources:
  - name: routers
    kind: syslog
    listen: tcp://127.0.0.1:0
rules:
  - name: only-this
    sources: [routers]
    condition: '$.app_name == "wanted"'
    actions:
      - log: { message: "seen" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "tcp");
    let c = client();
    let status: serde_json::Value = c
        .get(server.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routers = &status["sources"][0];
    assert_eq!(routers["kind"], "syslog");
    assert_eq!(routers["connections"][0]["state"], "connected", "{status}");
    assert_eq!(
        routers["connections"][0]["target"],
        format!("tcp://127.0.0.1:{port}")
    );

    let mut live = c
        .get(server.url("/console/live?source=routers"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"<134>Dec  6 23:00:00 edge1 noise: interface flapped 7\n")
        .unwrap();
    s.flush().unwrap();
    let mut seen = String::new();
    let start = Instant::now();
    while !seen.contains("interface flapped 7") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), live.chunk())
            .await
            .expect("a sample in time")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        assert!(start.elapsed() < Duration::from_secs(10), "{seen}");
    }
    assert!(seen.contains("event: unmatched"), "{seen}");
    assert!(
        !seen.contains("event: events"),
        "nothing was stored: {seen}"
    );
    let page = c
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Not stored (keep: matched)"), "{page}");
    assert!(page.contains("interface flapped 7"), "{page}");
    let events: serde_json::Value = c
        .get(server.url("/api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"], serde_json::json!([]), "not stored");
}
