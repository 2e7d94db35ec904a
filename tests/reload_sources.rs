//! A reload applies listening sources: a source added starts listening, a removed one stops, a
//! changed one restarts (a syslog port, an MQTT source's topics) while an unchanged one keeps
//! its socket and loses nothing; an address that cannot be bound is reported with its source,
//! and the rest of the reload applies. `serve` names the source and address it cannot bind.

mod common;

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, Server, client};
use serde_json::Value;

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a UDP port can be bound (nobody holds it).
fn udp_free(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

fn send_udp(port: u16, message: &str) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(
        format!("<14>Dec  7 05:51:15 h1 app: {message}").as_bytes(),
        ("127.0.0.1", port),
    )
    .unwrap();
}

fn hup(server: &Server) {
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

async fn status(server: &Server) -> Value {
    client()
        .get(server.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `/api/status` until `done` holds; panics with the last status after 30 s.
async fn wait_status(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status(server).await;
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st:#}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The connections `/api/status` shows for `source`, as `(target, state)`.
fn connections(st: &Value, source: &str) -> Vec<(String, String)> {
    st["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == source)
        .flat_map(|s| s["connections"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["target"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn reloads(st: &Value) -> u64 {
    st["reload"]["reloads"].as_u64().unwrap_or(0)
}

const RECORD: &str = "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n";

fn syslog_rulebook(sources: &str, extra_rule: &str) -> String {
    format!(
        r#"sources:
{sources}
rules:
  - name: record
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ meta.source }}}}", "{{{{ event.message }}}}"] }}
{extra_rule}"#
    )
}

#[tokio::test]
async fn reload_starts_stops_and_restarts_syslog_listeners() {
    let env = Env::new();
    env.script("record.sh", RECORD);
    let (a, b, c, d, e) = (free_udp(), free_udp(), free_tcp(), free_udp(), free_udp());
    let lab = |port: u16| {
        format!("  - {{name: lab, kind: syslog, listen: [udp://127.0.0.1:{port}], keep: all}}")
    };
    env.rulebook("s.yml", &syslog_rulebook(&lab(a), ""));
    let server = Server::start(&env, &[], &[]);
    send_udp(a, "one");
    env.wait_lines("runs.txt", 1, Duration::from_secs(20));

    // Added at reload while lab takes a steady stream: lab keeps its socket, nothing is lost.
    let burst = std::thread::spawn(move || {
        for i in 0..100 {
            send_udp(a, &format!("burst-{i}"));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (traps, nats) = (free_udp(), common::nats_url());
    let added = format!(
        "{}\n  - {{name: added, kind: syslog, listen: [udp://127.0.0.1:{b}, tcp://127.0.0.1:{c}], keep: all}}\n  - {{name: traps, kind: snmp_trap, listen: udp://127.0.0.1:{traps}, communities: [public]}}\n  - {{name: bus, kind: nats, url: \"{nats}\", subjects: [\"rhreload.{}.>\"]}}",
        lab(a),
        std::process::id()
    );
    env.rulebook("s.yml", &syslog_rulebook(&added, ""));
    hup(&server);
    let up = |st: &Value, source: &str, n: usize| {
        let c = connections(st, source);
        c.len() == n && c.iter().all(|(_, state)| state == "connected")
    };
    wait_status(&server, "the added sources connected", |st| {
        up(st, "added", 2) && up(st, "traps", 1) && up(st, "bus", 1)
    })
    .await;
    burst.join().unwrap();
    send_udp(b, "two");
    let mut tcp = TcpStream::connect(("127.0.0.1", c)).unwrap();
    std::io::Write::write_all(&mut tcp, b"<14>Dec  7 05:51:15 h1 app: three\n").unwrap();
    drop(tcp);
    let lines = env.wait_lines("runs.txt", 103, Duration::from_secs(30));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("lab burst-")).count(),
        100,
        "an unchanged source lost messages across the reload: {lines:?}"
    );
    assert!(lines.contains(&"added two".to_string()), "{lines:?}");
    assert!(lines.contains(&"added three".to_string()), "{lines:?}");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rulehook_source_connected{source=\"added\"} 1"),
        "{metrics}"
    );

    // Removed, moved to another port, and one whose address is taken: that one is reported,
    // the rest (a new rule too) applies.
    let holder = UdpSocket::bind(("127.0.0.1", e)).unwrap();
    let moved = format!(
        "{}\n  - {{name: taken, kind: syslog, listen: [udp://127.0.0.1:{e}]}}",
        lab(d)
    );
    // (traps and bus go too: a removed source's rows go with it.)
    let v3 = "  - name: v3\n    sources: [lab]\n    actions:\n      - run_script: { script: record.sh, args: [\"v3\", \"{{ event.message }}\"] }\n";
    env.rulebook("s.yml", &syslog_rulebook(&moved, v3));
    hup(&server);
    let st = wait_status(&server, "the second reload", |st| {
        reloads(st) >= 2 && connections(st, "added").is_empty()
    })
    .await;
    assert!(
        udp_free(traps),
        "a removed trap source's port is still bound"
    );
    let errors = &st["reload"]["listen_errors"];
    assert_eq!(errors[0]["source"], "taken", "{st:#}");
    assert_eq!(
        errors[0]["address"],
        format!("udp://127.0.0.1:{e}"),
        "{st:#}"
    );
    assert!(
        connections(&st, "lab") == vec![(format!("udp://127.0.0.1:{d}"), "connected".into())],
        "{st:#}"
    );
    let page = client()
        .get(server.url("/console/rules"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"listen-errors\"") && page.contains("<code>taken</code>"),
        "the console's rules page does not show it: {page}"
    );
    assert!(
        server.log_text().contains(&format!(
            "source `taken` cannot listen on udp://127.0.0.1:{e}"
        )),
        "{}",
        server.log_text()
    );
    send_udp(d, "four");
    env.wait_lines("runs.txt", 105, Duration::from_secs(20));
    let lines = env.lines("runs.txt");
    assert!(lines.contains(&"lab four".to_string()), "{lines:?}");
    assert!(lines.contains(&"v3 four".to_string()), "{lines:?}");
    // The old addresses are free again.
    UdpSocket::bind(("127.0.0.1", a)).expect("lab's old port is still bound");
    UdpSocket::bind(("127.0.0.1", b)).expect("a removed source's port is still bound");
    TcpListener::bind(("127.0.0.1", c)).expect("a removed source's port is still bound");

    // Once the address is free, SIGHUP tries again.
    drop(holder);
    hup(&server);
    let st = wait_status(&server, "`taken` listening", |st| {
        reloads(st) >= 3 && st["reload"]["listen_errors"] == serde_json::json!([])
    })
    .await;
    assert_eq!(
        connections(&st, "taken"),
        vec![(format!("udp://127.0.0.1:{e}"), "connected".into())]
    );
    send_udp(e, "five");
    let lines = env.wait_lines("runs.txt", 106, Duration::from_secs(20));
    assert!(lines.contains(&"taken five".to_string()), "{lines:?}");
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

#[tokio::test]
async fn a_topic_changed_at_reload_is_subscribed_and_the_old_one_dropped() {
    let env = Env::new();
    env.script("record.sh", RECORD);
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let rulebook = |topic: &str| {
        format!(
            r#"sources:
  - {{name: tele, kind: mqtt, url: mqtt://127.0.0.1:1883, client_id: rh-reload-{id}, topics: ["rhreload/{id}/{topic}"]}}
rules:
  - name: record
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ meta.topic }}}}", "{{{{ event.n }}}}"] }}
"#
        )
    };
    env.rulebook("m.yml", &rulebook("one"));
    let server = Server::start(&env, &[], &[]);
    let connected = |st: &Value| {
        connections(st, "tele")
            .iter()
            .any(|(_, state)| state == "connected")
    };
    wait_status(&server, "the mqtt session", connected).await;
    publish(&format!("rhreload/{id}/one"), r#"{"n": 1}"#);
    env.wait_lines("runs.txt", 1, Duration::from_secs(20));

    env.rulebook("m.yml", &rulebook("two"));
    hup(&server);
    wait_status(&server, "the session restarted", |st| {
        reloads(st) >= 1 && connected(st)
    })
    .await;
    // The unsubscribe follows the subscribe on the same connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish(&format!("rhreload/{id}/one"), r#"{"n": 2}"#);
    publish(&format!("rhreload/{id}/two"), r#"{"n": 3}"#);
    env.wait_lines("runs.txt", 2, Duration::from_secs(20));
    // Time for the old topic's message, had it been delivered.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.lines("runs.txt"),
        vec![
            format!("rhreload/{id}/one 1"),
            format!("rhreload/{id}/two 3")
        ]
    );
}

/// Runs `serve` expecting it to stop on its own; its exit status and standard error.
fn serve_fails(env: &Env, listen: &str) -> (bool, String) {
    let data = env.path("data").display().to_string();
    let mut child = env
        .cmd(&["serve", "--listen", listen, "--data", &data])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not stop although its source cannot listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn serve_names_the_source_and_address_it_cannot_bind_once() {
    let env = Env::new();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    env.rulebook(
        "s.yml",
        &format!("sources:\n  - {{name: lab, kind: syslog, listen: [tcp://127.0.0.1:{port}]}}\n"),
    );
    let (ok, err) = serve_fails(&env, "127.0.0.1:0");
    assert!(!ok, "{err}");
    let want = format!("source `lab` cannot listen on tcp://127.0.0.1:{port}: ");
    assert!(err.contains(&want), "{err}");
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "said more than once: {err}"
    );
    // On the HTTP listener's own address, that is said.
    drop(held);
    let (ok, err) = serve_fails(&env, &format!("127.0.0.1:{port}"));
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "(the HTTP listener is on 127.0.0.1:{port}: --listen)"
        )),
        "{err}"
    );
}
