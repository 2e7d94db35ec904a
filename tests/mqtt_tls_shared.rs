//! MQTT beyond the plain local broker: `mqtts://` to a Mosquitto of the test's own (a TLS
//! listener with a generated certificate, a password file), with the connection state in
//! `/api/status`; and shared subscriptions on the local Mosquitto (127.0.0.1:1883), where two
//! ingest nodes of one JetStream deployment split the messages without duplicates.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, NatsPrefix, Server, client};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A CA and a server certificate for `localhost`/127.0.0.1, as PEM files in `dir`.
fn pki(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Subject names of their own: OpenSSL takes a leaf whose issuer is its own subject for a
    // self-signed certificate.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "mqtts test CA");
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let mut leaf = leaf;
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
}

/// A Mosquitto of this test's own, ended by its pid.
struct Mosquitto {
    child: Child,
}

impl Mosquitto {
    fn start_tls(dir: &Path, port: u16) -> Mosquitto {
        pki(dir);
        let passwords = dir.join("passwords");
        let out = Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(&passwords)
            .args(["ops", "s3cret"])
            .output()
            .expect("mosquitto_passwd (Debian package mosquitto)");
        assert!(out.status.success(), "{out:?}");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nallow_anonymous false\npassword_file {pw}\n\
                 listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server-key.pem\n",
                pw = passwords.display(),
                d = dir.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian package mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto { child }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(args: &[&str], topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(args)
        .args(["-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn status(server: &Server) -> serde_json::Value {
    client()
        .get(server.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The state of `source`'s first connection in `/api/status`, waited for.
async fn wait_state(server: &Server, source: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(server).await;
        let conn = s["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == source))
            .map(|x| x["connections"][0].clone())
            .unwrap_or_default();
        if conn["state"] == want {
            return conn;
        }
        assert!(
            Instant::now() < deadline,
            "{source} not {want}: {conn}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn record_script(env: &Env) {
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
}

#[tokio::test]
async fn mqtts_with_a_ca_file_and_a_password_and_its_state_in_the_status() {
    let env = Env::new();
    let dir = env.path("broker");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _broker = Mosquitto::start_tls(&dir, port);
    let ca = dir.join("ca.pem");
    env.rulebook(
        "mqtts.yml",
        &format!(
            r#"
sources:
  - name: secure
    kind: mqtt
    url: mqtts://localhost:{port}
    tls: {{ca: {ca}}}
    username: ops
    password: ${{env:MQTT_PASSWORD}}
    topics: ["netops/#"]
  - name: wrongpass
    kind: mqtt
    url: mqtts://localhost:{port}
    tls: {{ca: {ca}}}
    username: ops
    password: nope
    topics: ["netops/#"]
rules:
  - name: record
    sources: [secure]
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ meta.topic }}}}", "{{{{ event.n }}}}"] }}
"#,
            ca = ca.display()
        ),
    );
    record_script(&env);
    let server = Server::start(&env, &[], &[("MQTT_PASSWORD", "s3cret".to_string())]);
    let up = wait_state(&server, "secure", "connected").await;
    assert_eq!(up["target"], format!("mqtts://localhost:{port}"));
    assert!(up["since_ms"].as_i64().unwrap() > 0);
    let refused = wait_state(&server, "wrongpass", "reconnecting").await;
    assert!(
        refused["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{refused}"
    );
    let port_s = port.to_string();
    let tls_args = [
        "-h",
        "localhost",
        "-p",
        &port_s,
        "--cafile",
        ca.to_str().unwrap(),
        "-u",
        "ops",
        "-P",
        "s3cret",
    ];
    publish(&tls_args, "netops/sw1", r#"{"n": 7}"#);
    let runs = env.wait_lines("runs.txt", 1, Duration::from_secs(30));
    assert_eq!(runs, vec!["netops/sw1 7".to_string()]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rulehook_source_connected{source=\"secure\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rulehook_source_connected{source=\"wrongpass\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_share_mqtt_topics_without_duplicates() {
    let id = unique();
    let env = Env::new();
    env.rulebook(
        "mqtt.yml",
        &format!(
            r#"
sources:
  - name: telemetry
    kind: mqtt
    url: mqtt://127.0.0.1:1883
    topics: ["rh-share-{id}/#"]
    client_id: rh-share-{id}
rules:
  - name: record
    sources: [telemetry]
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ event.n }}}}"] }}
"#
        ),
    );
    record_script(&env);
    let nats = NatsPrefix::new();
    let a = common::cluster::node(&env, &nats, "all", &[]);
    let b = common::cluster::node(&env, &nats, "all", &[]);
    wait_state(&a, "telemetry", "connected").await;
    wait_state(&b, "telemetry", "connected").await;
    const N: usize = 40;
    let local = ["-h", "127.0.0.1", "-p", "1883"];
    for i in 0..N {
        publish(
            &local,
            &format!("rh-share-{id}/sw{i}"),
            &format!(r#"{{"n": {i}}}"#),
        );
    }
    env.wait_lines("runs.txt", N, Duration::from_secs(60));
    // Copies a node would take beside the other arrive with the rest: one more message, and
    // its run, show that both nodes are through.
    publish(&local, &format!("rh-share-{id}/last"), r#"{"n": "last"}"#);
    common::wait_until("the last message's run", Duration::from_secs(30), || {
        env.lines("runs.txt").iter().any(|l| l == "last")
    });
    let mut got: Vec<String> = env
        .lines("runs.txt")
        .into_iter()
        .filter(|l| l != "last")
        .collect();
    got.sort_by_key(|n| n.parse::<usize>().unwrap_or(usize::MAX));
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "each message once, across both nodes");
    let events = |s: &Server| {
        let url = s.url("/api/events?limit=1000");
        async move {
            let v: serde_json::Value = client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["events"].as_array().map(Vec::len).unwrap_or(0)
        }
    };
    // The shared history: every node's events, once each (read models catch up).
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&a).await < N + 1 {
        assert!(Instant::now() < deadline, "the history lacks events");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events(&a).await, N + 1, "one stored event per message");
}
