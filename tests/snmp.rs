//! SNMP notifications in, end to end, from net-snmp's own `snmptrap` and `snmpinform`
//! (Debian package `snmp`): v1, v2c and v3 (authNoPriv, authPriv SHA/AES) traps, informs
//! answered only once stored (and, sent again after a lost Response, answered again but not
//! stored again), wrong communities and keys refused and counted, and rules that match
//! `$.trap_oid`, `$.trap_name` and a varbind.

mod common;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, Server, client};

const RULES: &str = r#"
sources:
  - name: traps
    kind: snmp_trap
    listen: udp://127.0.0.1:0
    communities: [public]
    users:
      - {name: ops, auth: sha, auth_password: "${env:SNMP_AUTH}", priv: aes, priv_password: "${env:SNMP_PRIV}"}
      - {name: watcher, auth: sha256, auth_password: "${env:SNMP_AUTH}"}
rules:
  - name: link-down
    sources: [traps]
    condition: '$.trap_oid == "1.3.6.1.6.3.1.1.5.3"'
    actions:
      - run_script: { script: record.sh, args: ["down", "{{ event.version }}", "{{ event.trap_name }}", "{{ event.varbind_names['ifIndex.2'] }}", "{{ event.agent }}", "{{ event.user | default('-') }}", "{{ meta.peer }}", "{{ 'inform' if event.inform else 'trap' }}"] }
  - name: by-varbind
    sources: [traps]
    condition: '$.varbinds["1.3.6.1.2.1.2.2.1.2.7"] == "Gi0/7"'
    actions:
      - run_script: { script: record.sh, args: ["varbind", "{{ event.version }}", "{{ event.trap_name }}", "{{ event.user | default('-') }}"] }
  - name: enterprise
    sources: [traps]
    condition: '$.trap_oid == "1.3.6.1.4.1.99999.0.42"'
    actions:
      - run_script: { script: record.sh, args: ["enterprise", "{{ event.version }}", "{{ event.varbinds['1.3.6.1.4.1.99999.1'] }}"] }
"#;

const AUTH: &str = "auth-pass-123";
const PRIV: &str = "priv-pass-456";

fn setup() -> (Env, Server, String) {
    let env = Env::new();
    env.rulebook("traps.yml", RULES);
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = start(&env);
    let target = target(&server);
    (env, server, target)
}

fn start(env: &Env) -> Server {
    Server::start(
        env,
        &[],
        &[("SNMP_AUTH", AUTH.into()), ("SNMP_PRIV", PRIV.into())],
    )
}

/// `127.0.0.1:PORT` of the source's UDP listener, from the start banner.
fn target(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = server.stdout.lock().unwrap().clone();
        if let Some(a) = lines
            .iter()
            .find_map(|l| l.strip_prefix("source traps at udp://"))
        {
            return a.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no udp listener: {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a net-snmp tool with no MIBs loaded and its persistent state in a scratch directory.
fn net_snmp(env: &Env, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(["-M", "/nonexistent", "-m", ""])
        .args(args)
        .env("SNMP_PERSISTENT_DIR", env.path("net-snmp"))
        .env("SNMPCONFPATH", env.path("net-snmp"))
        .output()
        .unwrap_or_else(|e| panic!("{tool} (Debian package snmp): {e}"))
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const LINK_DOWN: &[&str] = &["", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.2", "i", "2"];
/// The same linkDown as a v1 trap (enterprise, agent address, generic 2, specific 0, uptime,
/// then the binding), after the target.
const V1_LINK_DOWN: &[&str] = &[
    "1.3.6.1.4.1.9",
    "10.9.8.7",
    "2",
    "0",
    "",
    "1.3.6.1.2.1.2.2.1.1.2",
    "i",
    "2",
];

async fn dropped(server: &Server, reason: &str) -> f64 {
    let prefix = format!("rulehook_messages_dropped_total{{source=\"traps\",reason=\"{reason}\"}}");
    server
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The log line of the refusal counted under `reason` names the user the device gave (the
/// operator can tell which device is set up wrong); waits up to 10 s for the line.
fn assert_refusal_names(server: &Server, reason: &str, user: &str) {
    let needle = format!("reason=\"{reason}\"");
    for _ in 0..200 {
        let log = server.log_text();
        if let Some(line) = log.lines().find(|l| l.contains(&needle)) {
            assert!(line.contains(user), "{line}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no refusal `{reason}` in the log:\n{}", server.log_text());
}

async fn wait_dropped(server: &Server, reason: &str, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped(server, reason).await < n {
        assert!(
            Instant::now() < deadline,
            "{reason} not counted: {}",
            server.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn event_count(server: &Server) -> usize {
    let v: serde_json::Value = client()
        .get(server.url("/api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"].as_array().map_or(0, Vec::len)
}

/// The detail (`GET /api/events/{id}`) of the first event stored, once there is one.
async fn first_event(server: &Server) -> serde_json::Value {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let v: serde_json::Value = c
            .get(server.url("/api/events"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = v["events"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no event: {}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.get(server.url(&format!("/api/events/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn v1_v2c_and_v3_traps_reach_the_rules() {
    let (env, server, to) = setup();
    // v1 linkDown (generic 2), translated to the v2 form (RFC 3584).
    ok(&net_snmp(
        &env,
        "snmptrap",
        &[&["-v", "1", "-c", "public", &to][..], V1_LINK_DOWN].concat(),
    ));
    // v1 enterprise-specific 42.
    ok(&net_snmp(
        &env,
        "snmptrap",
        &[
            "-v",
            "1",
            "-c",
            "public",
            &to,
            "1.3.6.1.4.1.99999",
            "10.9.8.7",
            "6",
            "42",
            "",
            "1.3.6.1.4.1.99999.1",
            "s",
            "hello",
        ],
    ));
    let mut v2c = vec!["-v", "2c", "-c", "public", &to];
    v2c.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &v2c));
    // v3 authNoPriv (SHA-256), the sender authoritative with its own engine id.
    let mut v3a = vec![
        "-v",
        "3",
        "-u",
        "watcher",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        AUTH,
        "-e",
        "0x8000000001020304",
        &to,
    ];
    v3a.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &v3a));
    // v3 authPriv SHA/AES, matched by a varbind.
    ok(&net_snmp(
        &env,
        "snmptrap",
        &[
            "-v",
            "3",
            "-u",
            "ops",
            "-l",
            "authPriv",
            "-a",
            "SHA",
            "-A",
            AUTH,
            "-x",
            "AES",
            "-X",
            PRIV,
            "-e",
            "0x8000000001020305",
            &to,
            "",
            "1.3.6.1.6.3.1.1.5.4",
            "1.3.6.1.2.1.2.2.1.2.7",
            "s",
            "Gi0/7",
        ],
    ));
    // Matches no rule: counted, not stored (`keep: matched` is the default).
    ok(&net_snmp(
        &env,
        "snmptrap",
        &["-v", "2c", "-c", "public", &to, "", "1.3.6.1.6.3.1.1.5.1"],
    ));
    let unmatched = "rulehook_events_unmatched_total{source=\"traps\"} 1";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.metrics().await.contains(unmatched) {
        assert!(Instant::now() < deadline, "{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = env.wait_lines("runs.txt", 5, Duration::from_secs(30));
    assert_eq!(event_count(&server).await, 5);
    assert_eq!(
        sorted(lines),
        vec![
            "down v1 linkDown 2 10.9.8.7 - 127.0.0.1 trap",
            "down v2c linkDown 2 127.0.0.1 - 127.0.0.1 trap",
            "down v3 linkDown 2 127.0.0.1 watcher 127.0.0.1 trap",
            "enterprise v1 hello",
            "varbind v3 linkUp ops",
        ]
    );
    // The community is never part of an event.
    let events: serde_json::Value = client()
        .get(server.url("/api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for e in events["events"].as_array().unwrap() {
        let id = e["id"].as_str().unwrap();
        let detail = client()
            .get(server.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!detail.contains("public"), "{detail}");
    }
}

/// A v2c trap with no bindings under `community`, as BER.
fn v2c_trap(community: &[u8]) -> Vec<u8> {
    let pdu = [0xa7, 0x0b, 2, 1, 1, 2, 1, 0, 2, 1, 0, 0x30, 0x00];
    let mut inner = vec![2, 1, 1, 4, community.len() as u8];
    inner.extend_from_slice(community);
    inner.extend_from_slice(&pdu);
    let mut m = vec![0x30, inner.len() as u8];
    m.extend(inner);
    m
}

/// Two devices with the wrong community, one after the other: the log names each (the
/// refusal's line was let through once a minute per reason, so the second device was never
/// named while the first kept sending); the counter's labels do not name senders.
#[tokio::test]
async fn each_device_refused_for_one_reason_is_named_in_the_log() {
    let (_env, server, to) = setup();
    for (n, from) in ["127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"]
        .iter()
        .enumerate()
    {
        let socket = UdpSocket::bind((*from, 0)).unwrap();
        socket.send_to(&v2c_trap(b"private"), &to).unwrap();
        wait_dropped(&server, "bad_community", (n + 1) as f64).await;
    }
    for from in ["127.0.0.2", "127.0.0.3"] {
        let named = |log: &str| {
            log.lines()
                .filter(|l| l.contains("reason=\"bad_community\"") && l.contains(from))
                .count()
        };
        let mut log = server.log_text();
        for _ in 0..100 {
            if named(&log) > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            log = server.log_text();
        }
        assert_eq!(named(&log), 1, "{from} named once:\n{log}");
    }
    let m = server.metrics().await;
    assert!(!m.contains("127.0.0.2"), "{m}");
}

#[tokio::test]
async fn wrong_communities_and_keys_are_refused_and_counted() {
    let (env, server, to) = setup();
    let mut bad = vec!["-v", "2c", "-c", "private", &to];
    bad.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &bad));
    wait_dropped(&server, "bad_community", 1.0).await;
    let mut wrong_auth = vec![
        "-v",
        "3",
        "-u",
        "ops",
        "-l",
        "authPriv",
        "-a",
        "SHA",
        "-A",
        "not-the-password",
        "-x",
        "AES",
        "-X",
        PRIV,
        "-e",
        "0x8000000001020306",
        &to,
    ];
    wrong_auth.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &wrong_auth));
    wait_dropped(&server, "bad_auth", 1.0).await;
    assert_refusal_names(&server, "bad_auth", "user=\"ops\"");
    let mut wrong_priv = vec![
        "-v",
        "3",
        "-u",
        "ops",
        "-l",
        "authPriv",
        "-a",
        "SHA",
        "-A",
        AUTH,
        "-x",
        "AES",
        "-X",
        "not-the-priv-key",
        "-e",
        "0x8000000001020307",
        &to,
    ];
    wrong_priv.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &wrong_priv));
    wait_dropped(&server, "undecryptable", 1.0).await;
    assert_refusal_names(&server, "undecryptable", "user=\"ops\"");
    let mut stranger = vec![
        "-v",
        "3",
        "-u",
        "stranger",
        "-l",
        "authNoPriv",
        "-a",
        "SHA",
        "-A",
        AUTH,
        "-e",
        "0x8000000001020308",
        &to,
    ];
    stranger.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &stranger));
    wait_dropped(&server, "unknown_user", 1.0).await;
    assert_refusal_names(&server, "unknown_user", "user=\"stranger\"");
    // The same engine's clock going back by more than 150 s: a replay.
    let mut fresh = vec![
        "-v",
        "3",
        "-u",
        "watcher",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        AUTH,
        "-e",
        "0x8000000001020309",
        "-Z",
        "5,1000",
        &to,
    ];
    fresh.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &fresh));
    env.wait_lines("runs.txt", 1, Duration::from_secs(30));
    let mut old = vec![
        "-v",
        "3",
        "-u",
        "watcher",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        AUTH,
        "-e",
        "0x8000000001020309",
        "-Z",
        "5,700",
        &to,
    ];
    old.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &old));
    wait_dropped(&server, "not_in_time_window", 1.0).await;
    assert_refusal_names(&server, "not_in_time_window", "user=\"watcher\"");
    assert_eq!(
        event_count(&server).await,
        1,
        "only the fresh trap is an event"
    );
    assert_eq!(env.lines("runs.txt").len(), 1);
}

#[tokio::test]
async fn informs_are_answered_once_stored() {
    let (env, mut server, to) = setup();
    let mut v2c = vec!["-v", "2c", "-c", "public", "-t", "5", "-r", "0", &to];
    v2c.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmpinform", &v2c));
    // Answered means stored: the event is there the moment the response came.
    assert_eq!(event_count(&server).await, 1);
    // v3 authPriv: discovery of rulehook's engine id, then the inform.
    let mut v3 = vec![
        "-v", "3", "-u", "ops", "-l", "authPriv", "-a", "SHA", "-A", AUTH, "-x", "AES", "-X", PRIV,
        "-t", "5", "-r", "0", &to,
    ];
    v3.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmpinform", &v3));
    assert_eq!(event_count(&server).await, 2);
    let mut v3_auth_only = vec![
        "-v",
        "3",
        "-u",
        "watcher",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        AUTH,
        "-t",
        "5",
        "-r",
        "0",
        &to,
    ];
    v3_auth_only.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmpinform", &v3_auth_only));
    assert_eq!(event_count(&server).await, 3);
    let lines = env.wait_lines("runs.txt", 3, Duration::from_secs(30));
    assert_eq!(
        sorted(lines),
        vec![
            "down v2c linkDown 2 127.0.0.1 - 127.0.0.1 inform",
            "down v3 linkDown 2 127.0.0.1 ops 127.0.0.1 inform",
            "down v3 linkDown 2 127.0.0.1 watcher 127.0.0.1 inform",
        ]
    );
    // A wrong key gets no answer and is no event.
    let mut wrong = vec![
        "-v",
        "3",
        "-u",
        "watcher",
        "-l",
        "authNoPriv",
        "-a",
        "SHA-256",
        "-A",
        "wrong-password",
        "-t",
        "1",
        "-r",
        "0",
        &to,
    ];
    wrong.extend(LINK_DOWN);
    assert!(!net_snmp(&env, "snmpinform", &wrong).status.success());
    assert_eq!(event_count(&server).await, 3);
    // Stopped before it could store: no answer; killed, nothing was stored.
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut lost = vec!["-v", "2c", "-c", "public", "-t", "1", "-r", "0", &to];
    lost.extend(LINK_DOWN);
    let out = net_snmp(&env, "snmpinform", &lost);
    server.kill9();
    assert!(!out.status.success(), "answered while stopped");
    let server = start(&env);
    assert_eq!(
        event_count(&server).await,
        3,
        "the unanswered inform was not stored"
    );
    // The engine id is kept across restarts, its boots counted.
    let engine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("data/snmp/traps.json")).unwrap()).unwrap();
    assert_eq!(engine["boots"], 2);
}

/// A UDP relay between a net-snmp tool and rulehook, as if every answer were lost once: each
/// datagram the tool sends goes to rulehook twice, from the relay's own socket, and the tool
/// gets only the second answer (the first is ignored, as a lost Response).
struct LossyRelay {
    addr: String,
    /// Per datagram relayed, the answers to its two copies.
    seen: Arc<Mutex<Vec<Answers>>>,
    stop: Arc<AtomicBool>,
}

/// The answers to a datagram's two copies (`None`: none within 3 s).
type Answers = [Option<Vec<u8>>; 2];

impl LossyRelay {
    fn start(to: &str) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(to).unwrap();
        back.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let relay = LossyRelay {
            addr: front.local_addr().unwrap().to_string(),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (seen, stop) = (relay.seen.clone(), relay.stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, tool)) = front.recv_from(&mut buf) else {
                    continue;
                };
                let sent = buf[..n].to_vec();
                let mut answer = || {
                    back.send(&sent).unwrap();
                    back.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
                };
                let answers = [answer(), answer()];
                if let Some(a) = &answers[1] {
                    front.send_to(a, tool).unwrap();
                }
                seen.lock().unwrap().push(answers);
            }
        });
        relay
    }

    /// The answers to the last datagram relayed.
    fn last_answers(&self) -> Answers {
        let seen = self.seen.lock().unwrap();
        seen.last().expect("nothing relayed").clone()
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn accepted(server: &Server, duplicate: bool) -> f64 {
    let prefix =
        format!("rulehook_events_accepted_total{{source=\"traps\",duplicate=\"{duplicate}\"}}");
    server
        .metrics()
        .await
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Sends `datagram` to `to` from a fresh socket and returns the answer, if one comes within 5 s.
fn exchange(sock: &UdpSocket, to: &str, datagram: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(datagram, to).unwrap();
    let mut buf = vec![0u8; 65_536];
    sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[tokio::test]
async fn an_inform_sent_again_after_a_lost_response_is_answered_not_stored_again() {
    let (env, server, to) = setup();
    let relay = LossyRelay::start(&to);
    // net-snmp's own v2c inform, sent twice: two Responses, one event.
    let mut v2c = vec![
        "-v",
        "2c",
        "-c",
        "public",
        "-t",
        "5",
        "-r",
        "0",
        &relay.addr,
    ];
    v2c.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmpinform", &v2c));
    let [first, second] = relay.last_answers();
    assert!(first.is_some(), "the first copy was answered");
    assert_eq!(first, second, "the repeat gets the same Response");
    assert_eq!(event_count(&server).await, 1);
    // v3 authPriv: the discovery probe and then the inform, each sent twice.
    let mut v3 = vec![
        "-v",
        "3",
        "-u",
        "ops",
        "-l",
        "authPriv",
        "-a",
        "SHA",
        "-A",
        AUTH,
        "-x",
        "AES",
        "-X",
        PRIV,
        "-t",
        "5",
        "-r",
        "0",
        &relay.addr,
    ];
    v3.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmpinform", &v3));
    let [first, second] = relay.last_answers();
    assert!(first.is_some() && second.is_some(), "both copies answered");
    assert_eq!(event_count(&server).await, 2);
    assert_eq!(
        accepted(&server, true).await,
        2.0,
        "{}",
        server.metrics().await
    );
    // The same bindings from the tool again (through the relay): a new request id, a new event.
    ok(&net_snmp(&env, "snmpinform", &v2c));
    assert_eq!(event_count(&server).await, 3);
    assert_eq!(accepted(&server, true).await, 3.0);
    drop(relay);
    // A recorded v2c inform sent twice by hand, then with another request id.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let inform = std::fs::read("tests/data/snmp/v2c-inform.bin").unwrap();
    let a = exchange(&sock, &to, &inform);
    assert!(a.is_some());
    assert_eq!(exchange(&sock, &to, &inform), a);
    assert_eq!(event_count(&server).await, 4);
    let at = inform
        .windows(4)
        .position(|w| w == 0x5d2f_68a9_u32.to_be_bytes())
        .unwrap();
    let mut other = inform.clone();
    other[at + 3] ^= 1;
    assert!(exchange(&sock, &to, &other).is_some());
    assert_eq!(event_count(&server).await, 5);
    // A trap sent twice is two events: traps are not answered, nothing tells a repeat.
    let trap = std::fs::read("tests/data/snmp/v2c-trap.bin").unwrap();
    sock.send_to(&trap, &to).unwrap();
    sock.send_to(&trap, &to).unwrap();
    let lines = env.wait_lines("runs.txt", 7, Duration::from_secs(30));
    assert_eq!(event_count(&server).await, 7);
    assert_eq!(accepted(&server, true).await, 4.0);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" inform")).count(),
        5,
        "{lines:?}"
    );
}

#[tokio::test]
async fn with_dedup_window_off_a_repeated_inform_is_a_new_event() {
    let env = Env::new();
    env.rulebook(
        "traps.yml",
        &RULES.replace(
            "    communities: [public]\n",
            "    communities: [public]\n    dedup_window: off\n",
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = start(&env);
    let to = target(&server);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let inform = std::fs::read("tests/data/snmp/v2c-inform.bin").unwrap();
    assert!(exchange(&sock, &to, &inform).is_some());
    assert!(exchange(&sock, &to, &inform).is_some());
    assert_eq!(event_count(&server).await, 2);
}

#[test]
fn check_names_what_is_wrong_in_a_trap_source() {
    let env = Env::new();
    env.rulebook(
        "traps.yml",
        r#"
sources:
  - name: traps
    kind: snmp_trap
    listen: udp://127.0.0.1:1162
    users:
      - {name: ops, auth: sha1024, auth_password: "long-enough"}
rules: []
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("traps.yml:7"), "{text}");
    assert!(
        text.contains("auth `sha1024`: expected one of: md5, sha, sha224"),
        "{text}"
    );
    env.rulebook(
        "traps.yml",
        "sources:\n  - name: traps\n    kind: snmp_trap\n    listen: udp://127.0.0.1:1162\nrules: []\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("needs `communities:` (v1/v2c) or `users:` (v3)"),
        "{text}"
    );
    // Only informs are recognised when sent again: a syslog source has no `dedup_window`.
    env.rulebook(
        "traps.yml",
        "sources:\n  - name: logs\n    kind: syslog\n    listen: udp://127.0.0.1:1514\n    dedup_window: 2m\nrules: []\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("source `logs` of kind `syslog` does not take `dedup_window`"),
        "{text}"
    );
}

#[tokio::test]
async fn without_communities_v1_and_v2c_are_refused() {
    let env = Env::new();
    env.rulebook(
        "traps.yml",
        &RULES.replace("    communities: [public]\n", ""),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = start(&env);
    let to = target(&server);
    let mut v2c = vec!["-v", "2c", "-c", "public", &to];
    v2c.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &v2c));
    wait_dropped(&server, "community_not_configured", 1.0).await;
    // v1 too (the name says both; only v2c was sent).
    let mut v1 = vec!["-v", "1", "-c", "public", &to];
    v1.extend(V1_LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &v1));
    wait_dropped(&server, "community_not_configured", 2.0).await;
    assert_eq!(event_count(&server).await, 0);
}

/// A trap listener reports its state in `/api/status` and `/metrics`, as every other
/// listening source does.
#[tokio::test]
async fn the_listener_shows_in_status_and_metrics() {
    let (_env, server, target) = setup();
    let status: serde_json::Value = client()
        .get(server.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let traps = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "traps")
        .unwrap()
        .clone();
    assert_eq!(traps["kind"], "snmp_trap", "{traps}");
    let conns = traps["connections"].as_array().unwrap();
    assert!(
        conns
            .iter()
            .any(|c| c["target"] == format!("udp://{target}") && c["state"] == "connected"),
        "{traps}"
    );
    let text = server.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("rulehook_source_connected{") && l.contains("source=\"traps\"")),
        "{text}"
    );
}

/// A trap the store refuses (its data directory deleted) is lost, and counted as such:
/// `store_failed`, as syslog counts it, not only a line in the log.
#[tokio::test]
async fn a_trap_the_store_refuses_is_counted() {
    let (env, server, to) = setup();
    std::fs::remove_dir_all(env.path("data")).unwrap();
    let mut v2c = vec!["-v", "2c", "-c", "public", &to];
    v2c.extend(LINK_DOWN);
    ok(&net_snmp(&env, "snmptrap", &v2c));
    wait_dropped(&server, "store_failed", 1.0).await;
}

/// docs/sources.md's trap source, as a reader copies it (`keep: all` uncommented, the
/// passwords its commands use), and its "By hand" commands, run as written against it: every
/// trap and inform is an event. The example's `ops` user had `priv: aes256` while the commands
/// (and the snmpd and Cisco lines) use AES-128: each v3 message was refused as `undecryptable`.
#[tokio::test]
async fn the_docs_trap_example_takes_the_docs_commands() {
    let doc = std::fs::read_to_string(common::repo_path("docs/sources.md")).unwrap();
    let section = &doc[doc.find("## `kind: snmp_trap`").unwrap()..];
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .replace("udp://0.0.0.0:162", "udp://127.0.0.1:0")
        .replace("# keep: all", "keep: all");
    let env = Env::new();
    env.rulebook("traps.yml", &yaml);
    env.script("bgp.sh", "#!/bin/sh\n");
    let server = Server::start(
        &env,
        &[],
        &[
            ("SNMP_AUTH", "auth-password".into()),
            ("SNMP_PRIV", "priv-password".into()),
            ("SNMP_MONITOR_AUTH", "monitor-password".into()),
        ],
    );
    let to = target(&server);
    let by_hand = &section[section.find("By hand, with the `snmp` tools").unwrap()..];
    let block = by_hand.split("```\n").nth(1).unwrap().replace("\\\n", " ");
    let mut sent = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| match w {
                "''" => String::new(),
                "192.0.2.10" => to.clone(),
                w => w.to_string(),
            })
            .collect();
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let out = net_snmp(&env, &words[0], &args);
        assert!(
            out.status.success(),
            "{line}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.metrics().await
        );
        sent += 1;
    }
    assert_eq!(sent, 4, "{block}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while event_count(&server).await < sent {
        assert!(Instant::now() < deadline, "{}", server.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dropped(&server, "undecryptable").await, 0.0);
}

/// A notification may bind one OID more than once (BER does not forbid it; an agent listing the
/// members of a bundle does); only the last value was kept, the others silently lost. Now a
/// repeated OID holds every value in the order sent, as a list, in `varbinds` and
/// `varbind_names`; an OID bound once is still its value.
#[tokio::test]
async fn a_repeated_varbind_keeps_every_value() {
    let (env, server, to) = setup();
    ok(&net_snmp(
        &env,
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            "public",
            &to,
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.2",
            "i",
            "2",
            "1.3.6.1.2.1.2.2.1.2.2",
            "s",
            "Gi0/2",
            "1.3.6.1.2.1.2.2.1.1.2",
            "i",
            "3",
        ],
    ));
    let detail = first_event(&server).await;
    let body = &detail["body"];
    assert_eq!(
        body["varbinds"]["1.3.6.1.2.1.2.2.1.1.2"],
        serde_json::json!([2, 3]),
        "{body}"
    );
    assert_eq!(
        body["varbind_names"]["ifIndex.2"],
        serde_json::json!([2, 3]),
        "{body}"
    );
    assert_eq!(body["varbinds"]["1.3.6.1.2.1.2.2.1.2.2"], "Gi0/2", "{body}");
}

/// Agents that write a DisplayString into a fixed-size buffer send it padded with NULs
/// (`Gi0/3\0\0\0`); only one trailing NUL was dropped, so the text was shown as hex
/// (`4769302f33000000`). Every trailing NUL is dropped now; binary stays hex.
#[tokio::test]
async fn a_nul_padded_string_is_text() {
    let (env, server, to) = setup();
    ok(&net_snmp(
        &env,
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            "public",
            &to,
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.3",
            "i",
            "3",
            "1.3.6.1.2.1.2.2.1.2.3",
            "x",
            "4769302f33000000",
            "1.3.6.1.4.1.9.9.1",
            "x",
            "00ff000000",
        ],
    ));
    let detail = first_event(&server).await;
    let body = &detail["body"];
    assert_eq!(body["varbind_names"]["ifDescr.3"], "Gi0/3", "{body}");
    assert_eq!(
        body["varbinds"]["1.3.6.1.4.1.9.9.1"], "00ff000000",
        "{body}"
    );
}
