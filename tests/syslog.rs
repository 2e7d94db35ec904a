//! Syslog in, end to end: util-linux `logger` over UDP and TCP (RFC 5424 and 3164, octet
//! counting and LF), real vendor lines over one TCP connection, `keep: matched`, cut frames.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, Server, client};

const RULES: &str = r#"
sources:
  - name: routers
    kind: syslog
    listen: [udp://127.0.0.1:0, tcp://127.0.0.1:0]
    max_message: 600
rules:
  - name: from-logger
    sources: [routers]
    condition: '$.app_name == "rhtest" && meta("peer") == "127.0.0.1"'
    actions:
      - run_script: { script: record.sh, args: ["logger", "{{ event.format }}", "{{ event.message }}", "{% if event.structured_data is defined and event.structured_data['test@32473'] is defined %}{{ event.structured_data['test@32473'].k }}{% else %}-{% endif %}", "{{ meta.peer }}"] }
  - name: config-changed
    sources: [routers]
    condition: '$.cisco.mnemonic == "CONFIG_I" || $.cisco.mnemonic == "UPDOWN" || $.cisco.mnemonic == "IF_DOWN_LINK_FAILURE"'
    actions:
      - run_script: { script: record.sh, args: ["cisco", "{{ event.cisco.facility }}-{{ event.cisco.severity }}-{{ event.cisco.mnemonic }}", "{{ event.hostname | default('-') }}", "{{ event.cisco.sequence | default('-') }}", "{{ event.timestamp | default('-') }}", "{{ event.severity_name }}"] }
  - name: logger-tag
    sources: [routers]
    condition: '$.app_name == "myapp"'
    actions:
      - run_script: { script: record.sh, args: ["myapp", "{{ event.hostname | default('-') }}", "{{ event.timestamp | default('-') }}", "{% if event.cisco is defined %}{{ event.cisco.mnemonic }}{% else %}-{% endif %}", "{{ event.message }}"] }
  - name: unread
    sources: [routers]
    condition: '$.parse_error == true && $.severity <= 5'
    actions:
      - run_script: { script: record.sh, args: ["unread", "{{ event.format }}", "{{ event.severity_name }}", "{{ event.message }}"] }
  - name: junos-logout
    sources: [routers]
    condition: '$.msgid == "UI_DBASE_LOGOUT_EVENT"'
    actions:
      - run_script: { script: record.sh, args: ["junos", "{{ event.hostname }}", "{{ event.structured_data['junos@2636.1.1.1.2.18'].username }}"] }
  - name: cut
    sources: [routers]
    condition: '$.truncated == true'
    actions:
      - run_script: { script: record.sh, args: ["cut", "{{ event.message | length }}"] }
"#;

fn setup() -> (Env, Server, u16, u16) {
    let env = Env::new();
    env.rulebook("syslog.yml", RULES);
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = |scheme: &str| -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = server.stdout.lock().unwrap().clone();
            if let Some(p) = lines.iter().find_map(|l| {
                l.strip_prefix(&format!("source routers at {scheme}://127.0.0.1:"))
                    .and_then(|p| p.parse().ok())
            }) {
                return p;
            }
            assert!(Instant::now() < deadline, "no {scheme} listener: {lines:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (udp, tcp) = (port("udp"), port("tcp"));
    (env, server, udp, tcp)
}

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("util-linux logger");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn metric(server: &Server, prefix: &str) -> Option<f64> {
    let text = server.metrics().await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn logger_over_udp_and_tcp_in_both_formats_and_framings() {
    let (env, server, udp, tcp) = setup();
    let (udp, tcp) = (udp.to_string(), tcp.to_string());
    let sd = ["--sd-id", "test@32473", "--sd-param", "k=\"v1\""];
    let mut a = vec![
        "--rfc5424",
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &udp,
        "-t",
        "rhtest",
    ];
    a.extend(sd);
    a.push("five-udp");
    logger(&a);
    logger(&[
        "--rfc3164",
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &udp,
        "-t",
        "rhtest",
        "three-udp",
    ]);
    logger(&[
        "--rfc5424",
        "--tcp",
        "--octet-count",
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "-t",
        "rhtest",
        "five-tcp-counted",
    ]);
    logger(&[
        "--rfc3164",
        "--tcp",
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "-t",
        "rhtest",
        "three-tcp-lf",
    ]);
    logger(&[
        "--rfc3164",
        "--tcp",
        "--octet-count",
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "-t",
        "other",
        "matches-nothing",
    ]);
    let lines = env.wait_lines("runs.txt", 4, Duration::from_secs(30));
    assert_eq!(
        sorted(lines),
        vec![
            "logger rfc3164 three-tcp-lf - 127.0.0.1",
            "logger rfc3164 three-udp - 127.0.0.1",
            "logger rfc5424 five-tcp-counted - 127.0.0.1",
            "logger rfc5424 five-udp v1 127.0.0.1",
        ],
        "{}",
        server.log_text()
    );
    // The message that matched nothing was counted, not stored (`keep: matched`).
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &server,
        "rulehook_events_unmatched_total{source=\"routers\"}",
    )
    .await
        != Some(1.0)
    {
        assert!(Instant::now() < deadline, "unmatched not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events: serde_json::Value = client()
        .get(server.url("/api/events?limit=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = events.to_string();
    assert_eq!(text.matches("\"source\":\"routers\"").count(), 4, "{text}");
}

/// util-linux `logger`'s RFC 3164 line with its default `TAG:` (no `[pid]`) and a
/// `%FAC-SEV-MNEMONIC:` text keeps its hostname, TAG and time; text ahead of a `%` stays in
/// the message.
#[tokio::test]
async fn logger_tag_without_pid_before_a_cisco_tag() {
    let (env, server, udp, _) = setup();
    let udp_port = udp.to_string();
    logger(&[
        "--rfc3164",
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &udp_port,
        "-t",
        "myapp",
        "-p",
        "local7.err",
        "%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
    ]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(
        b"<187>Dec  7 05:53:01 vm myapp: hello %LINK-3-UPDOWN: x",
        ("127.0.0.1", udp),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.lines("runs.txt").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            env.lines("runs.txt"),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = sorted(env.lines("runs.txt"));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().split('.').next().unwrap().to_string();
    let logged: Vec<&str> = got
        .iter()
        .find(|l| l.starts_with(&format!("myapp {host} ")) && l.ends_with("down"))
        .map(|l| l.splitn(5, ' ').collect())
        .unwrap_or_default();
    assert_eq!(logged.len(), 5, "{got:?}\n{}", server.log_text());
    let stamp = chrono::DateTime::parse_from_rfc3339(logged[2]);
    assert!(stamp.is_ok(), "a timestamp: {got:?}");
    assert_eq!(
        logged[3..],
        [
            "UPDOWN",
            "%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down"
        ]
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with(&format!("cisco LINK-3-UPDOWN {host} - "))),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("myapp vm ") && l.ends_with(" - hello %LINK-3-UPDOWN: x")),
        "{got:?}"
    );
}

/// Lines as the vendors' documentation shows them, over one TCP connection (LF framing).
#[tokio::test]
async fn vendor_lines_over_one_tcp_connection() {
    let (env, server, _, tcp) = setup();
    let lines = [
        // Cisco IOS, clock never set, sequence number, no hostname.
        "<189>49: *Mar  1 00:09:07.555: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
        // Cisco IOS-XE through a relay: two sequence numbers, milliseconds.
        "<190>Nov  5 14:01:20 10.1.186.49 87117903: 87117909: Nov  5 14:01:19.115: %FMANFP-6-IPACCESSLOGP: F0: fman_fp_image: list 101 denied udp 10.1.1.1(1) -> 10.2.2.2(2), 1 packet",
        // Cisco IOS with `logging origin-id hostname`, NTP sync lost, year and zone.
        "<187>1234: edge-rtr1: .Jan 12 2026 10:11:12.123 UTC: %LINEPROTO-5-UPDOWN: Line protocol on Interface GigabitEthernet0/1, changed state to down",
        // Cisco NX-OS.
        "<189>: 2026 Mar 15 11:06:26 UTC: %ETHPORT-5-IF_DOWN_LINK_FAILURE: Interface Ethernet1/1 is down (Link failure)",
        // Junos with `structured-data`.
        r#"<165>1 2026-10-03T19:49:00.437-07:00 router1 mgd 3046 UI_DBASE_LOGOUT_EVENT [junos@2636.1.1.1.2.18 username="regress"] User 'regress' exiting configuration mode"#,
        // Arista EOS (BSD format).
        "<189>Jan 12 10:11:12 leaf1 Ebra: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
        // Cisco IOS-XR with `logging hostnameprefix`: node, process, ` :` after the tag.
        "<187>94307: gw2 LC/0/2/CPU0:Jul  7 2026 20:16:14.834 UTC: ifmgr[214]: %PKT_INFRA-LINK-3-UPDOWN : Interface TenGigE0/2/0/4, changed state to Down",
        // Cisco IOS stamping its uptime (`service timestamps log uptime`).
        "<187>12: 1w2d: %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
        // FortiGate: no syslog header after the PRI, which still gives the severity.
        r#"<189>date=2026-12-07 time=05:52:01 devname="fw1" logid="0000000013" type="traffic""#,
    ];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    for l in lines {
        s.write_all(l.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
    }
    // Over max_message (600): cut and flagged, and the next frame still read.
    s.write_all(format!("<13>Jan 12 10:11:12 host app: {}\n", "x".repeat(2000)).as_bytes())
        .unwrap();
    s.write_all(b"<189>50: *Mar  1 00:09:08.000: %SYS-5-CONFIG_I: Configured again\n")
        .unwrap();
    drop(s);
    let got = sorted(env.wait_lines("runs.txt", 10, Duration::from_secs(30)));
    assert_eq!(
        got,
        vec![
            "cisco ETHPORT-5-IF_DOWN_LINK_FAILURE - - 2026-03-15T11:06:26Z notice",
            "cisco LINEPROTO-5-UPDOWN edge-rtr1 1234 2026-01-12T10:11:12.123Z err",
            &format!(
                "cisco LINEPROTO-5-UPDOWN leaf1 - {}-01-12T10:11:12Z notice",
                got.iter()
                    .find_map(|l| l
                        .strip_prefix("cisco LINEPROTO-5-UPDOWN leaf1 - ")?
                        .get(..4))
                    .unwrap_or("????")
            ),
            "cisco LINK-3-UPDOWN - 12 - err",
            "cisco PKT_INFRA-LINK-3-UPDOWN gw2 94307 2026-07-07T20:16:14.834Z err",
            &format!(
                "cisco SYS-5-CONFIG_I - 49 {}-03-01T00:09:07.555Z notice",
                got.iter()
                    .find_map(|l| l.strip_prefix("cisco SYS-5-CONFIG_I - 49 ")?.get(..4))
                    .unwrap_or("????")
            ),
            &format!(
                "cisco SYS-5-CONFIG_I - 50 {}-03-01T00:09:08Z notice",
                got.iter()
                    .find_map(|l| l.strip_prefix("cisco SYS-5-CONFIG_I - 50 ")?.get(..4))
                    .unwrap_or("????")
            ),
            "cut 570",
            "junos router1 regress",
            r#"unread unknown notice date=2026-12-07 time=05:52:01 devname="fw1" logid="0000000013" type="traffic""#,
        ],
        "{}",
        server.log_text()
    );
    assert_eq!(
        metric(
            &server,
            "rulehook_messages_malformed_total{source=\"routers\",reason=\"truncated\"}"
        )
        .await,
        Some(1.0)
    );
}

/// The connection cap closes what is over it at once; a silent connection is closed after
/// `idle_timeout`; both are counted.
#[tokio::test]
async fn connection_cap_and_idle_timeout() {
    use std::io::Read;
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        r#"
sources:
  - name: routers
    kind: syslog
    listen: tcp://127.0.0.1:0
    max_connections: 1
    idle_timeout: 1s
rules:
  - name: any
    sources: [routers]
    actions:
      - log: { message: "x" }
"#,
    );
    let server = Server::start(&env, &[], &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = server.source_port("routers", "tcp");
    let mut first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    first
        .write_all(b"<13>Jan 12 10:11:12 host app: one\n")
        .unwrap();
    // The first connection holds the only slot once accepted: wait for its message.
    while metric(
        &server,
        "rulehook_events_received_total{source=\"routers\"}",
    )
    .await
        != Some(1.0)
    {
        assert!(Instant::now() < deadline, "first message not received");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(second.read(&mut b).unwrap_or(0), 0, "over the cap: closed");
    // The first one, silent from now on, is closed after the idle timeout.
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(first.read(&mut b).unwrap_or(0), 0, "idle: closed");
    for reason in ["connection_cap", "idle_timeout"] {
        let name =
            format!("rulehook_messages_dropped_total{{source=\"routers\",reason=\"{reason}\"}}");
        let mut seen = metric(&server, &name).await;
        let until = Instant::now() + Duration::from_secs(10);
        while seen != Some(1.0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = metric(&server, &name).await;
        }
        assert_eq!(seen, Some(1.0), "{reason}");
    }
}

/// A connection closed for silence hands on its last message, sent without an LF, as a close
/// by the sender does; it was dropped with the connection (counted only as `idle_timeout`).
#[tokio::test]
async fn an_idle_connection_closed_keeps_its_last_message() {
    use std::io::Read;
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        "sources:\n  - name: routers\n    kind: syslog\n    listen: tcp://127.0.0.1:0\n    keep: all\n    idle_timeout: 1s\nrules: []\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "tcp");
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"<13>Jan 12 10:11:12 host app: last words")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(conn.read(&mut b).unwrap_or(0), 0, "idle: closed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(
        &server,
        "rulehook_events_accepted_total{source=\"routers\",duplicate=\"false\"}",
    )
    .await
        != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the last message was not stored: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The console's rules page and `/api/status` list a syslog source by its kind and where it
/// listens, not as an unauthenticated webhook.
#[tokio::test]
async fn the_rules_page_shows_the_kind_and_the_listeners() {
    let (_env, server, _, _) = setup();
    let page = client()
        .get(server.url("/console/rules"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<tr><td>routers</td><td>syslog</td><td><code>udp:&#x2f;&#x2f;127.0.0.1:0</code><br><code>tcp:&#x2f;&#x2f;127.0.0.1:0</code></td>"),
        "{page}"
    );
    let status: serde_json::Value = client()
        .get(server.url("/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routers = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "routers")
        .unwrap()
        .clone();
    assert_eq!(routers["kind"], "syslog", "{routers}");
    assert_eq!(
        routers["listen"],
        serde_json::json!(["udp://127.0.0.1:0", "tcp://127.0.0.1:0"])
    );
}

/// A store that fails (here: its data directory deleted) loses the UDP messages of that time,
/// each counted `store_failed`; the listener keeps reading, so every later datagram is counted
/// too (and stored again once the store is back), not dropped by a closed socket.
#[tokio::test]
async fn udp_keeps_listening_after_a_store_failure() {
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        "sources:\n  - name: routers\n    kind: syslog\n    listen: udp://127.0.0.1:0\n    keep: all\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "udp");
    std::fs::remove_dir_all(env.path("data")).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let name = "rulehook_messages_dropped_total{source=\"routers\",reason=\"store_failed\"}";
    for i in 1..=3 {
        udp.send_to(
            format!("<13>Jan 12 10:11:12 host app: lost {i}").as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let mut seen = metric(&server, name).await;
        while seen != Some(f64::from(i)) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = metric(&server, name).await;
        }
        assert_eq!(seen, Some(f64::from(i)), "{}", server.log_text());
    }
    // Logged once a minute, as every reason is: a flood during an outage does not fill the log.
    let log = server.log_text();
    assert_eq!(log.matches("could not be stored").count(), 1, "{log}");
}

/// A TCP sender outside `allow_from` is closed as it connects (counted `forbidden`), before it
/// takes one of the `max_connections` slots: idle connections from outside cannot lock the
/// allowed devices out until `idle_timeout`.
#[tokio::test]
async fn a_forbidden_tcp_sender_is_closed_at_connect() {
    use std::io::Read;
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        "sources:\n  - name: routers\n    kind: syslog\n    listen: tcp://127.0.0.1:0\n    max_connections: 1\n    idle_timeout: 1m\n    allow_from: [10.0.0.0/8]\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "tcp");
    let mut outsider = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    outsider
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    let read = outsider.read(&mut b);
    assert!(
        matches!(read, Ok(0)),
        "closed at once, not after idle_timeout: {read:?}"
    );
    let name = "rulehook_messages_dropped_total{source=\"routers\",reason=\"forbidden\"}";
    assert_eq!(metric(&server, name).await, Some(1.0));
    let cap = "rulehook_messages_dropped_total{source=\"routers\",reason=\"connection_cap\"}";
    assert_eq!(metric(&server, cap).await, None);
}

/// A TCP connection to `port` from the loopback address `from` (127.0.0.x).
fn connect_from(from: &str, port: u16) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// One sender address holds at most its share of `max_connections` (an eighth, at least 8):
/// past it its next connection is closed at once and counted, while another address still
/// gets in.
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    use std::io::Read;
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        "sources:\n  - name: routers\n    kind: syslog\n    listen: tcp://127.0.0.1:0\n    keep: all\n    max_connections: 64\nrules: []\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "tcp");
    let received = "rulehook_events_received_total{source=\"routers\"}";
    let wait_for = |n: f64| {
        let server = &server;
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while metric(server, received).await != Some(n) {
                assert!(Instant::now() < deadline, "{n} messages not received");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut held = Vec::new();
    for i in 0..8 {
        let mut c = connect_from("127.0.0.1", port);
        c.write_all(format!("<13>Jan 12 10:11:12 host app: {i}\n").as_bytes())
            .unwrap();
        held.push(c);
        // Accepted (it holds a slot) once its message is in.
        wait_for(f64::from(i + 1)).await;
    }
    let mut ninth = connect_from("127.0.0.1", port);
    ninth
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 1];
    let read = ninth.read(&mut b);
    assert!(matches!(read, Ok(0)), "past its share: closed, {read:?}");
    let mut other = connect_from("127.0.0.2", port);
    other
        .write_all(b"<13>Jan 12 10:11:12 other app: in\n")
        .unwrap();
    wait_for(9.0).await;
    let name =
        "rulehook_messages_dropped_total{source=\"routers\",reason=\"connection_cap_client\"}";
    assert_eq!(metric(&server, name).await, Some(1.0));
    let cap = "rulehook_messages_dropped_total{source=\"routers\",reason=\"connection_cap\"}";
    assert_eq!(metric(&server, cap).await, None);
    assert!(
        server.log_text().contains("connection_cap_client"),
        "the refusal is logged: {}",
        server.log_text()
    );
    drop(held);
}

/// A `keep: all` UDP syslog source and its port.
fn keep_all_udp() -> (Env, Server, u16) {
    let env = Env::new();
    env.rulebook(
        "syslog.yml",
        "sources:\n  - name: routers\n    kind: syslog\n    listen: udp://127.0.0.1:0\n    keep: all\nrules: []\n",
    );
    let server = Server::start(&env, &[], &[]);
    let port = server.source_port("routers", "udp");
    (env, server, port)
}

/// The body of the one event stored with `msgid`, waited for.
async fn body_with_msgid(server: &Server, msgid: &str) -> serde_json::Value {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list: serde_json::Value = c
            .get(server.url("/api/events?limit=50"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in list["events"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap();
            let detail: serde_json::Value = c
                .get(server.url(&format!("/api/events/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if detail["body"]["msgid"] == msgid {
                return detail["body"].clone();
            }
        }
        assert!(Instant::now() < deadline, "no event {msgid}: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 5424 §6.3.3 lets an SD-PARAM repeat in its element (`logger --sd-param` twice); only the
/// last value was kept, the others silently lost. Now a repeated name holds every value, in
/// order, as a list; a name given once is still a string.
#[tokio::test]
async fn a_repeated_sd_param_keeps_every_value() {
    let (_env, server, port) = keep_all_udp();
    let port = port.to_string();
    logger(&[
        "--rfc5424",
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-t",
        "rhsd",
        "--msgid",
        "REPEAT",
        "--sd-id",
        "tags@32473",
        "--sd-param",
        "tag=\"core\"",
        "--sd-param",
        "tag=\"edge\"",
        "--sd-param",
        "site=\"ams\"",
        "--sd-param",
        "tag=\"lab\"",
        "repeated",
    ]);
    let body = body_with_msgid(&server, "REPEAT").await;
    let sd = &body["structured_data"]["tags@32473"];
    assert_eq!(
        sd["tag"],
        serde_json::json!(["core", "edge", "lab"]),
        "{body}"
    );
    assert_eq!(sd["site"], "ams", "{body}");
}

/// RFC 5424 §6.3.3: only `\"`, `\\` and `\]` are escapes in a PARAM-VALUE; any other backslash
/// is kept with the character after it. A Windows path sent unescaped (`C:\new\temp`) had its
/// `\n` turned into a line break.
#[tokio::test]
async fn only_rfc5424_escapes_are_read_in_sd_values() {
    let (_env, server, port) = keep_all_udp();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = r#"<13>1 2026-12-08T00:00:00Z host app - PATHS [win@1 path="C:\new\temp" q="a\"b\\c\]d"] m"#;
    udp.send_to(line.as_bytes(), ("127.0.0.1", port)).unwrap();
    let body = body_with_msgid(&server, "PATHS").await;
    let sd = &body["structured_data"]["win@1"];
    assert_eq!(sd["path"], r"C:\new\temp", "{body}");
    assert_eq!(sd["q"], r#"a"b\c]d"#, "{body}");
}

/// A device sending Latin-1 (or any bytes that are not UTF-8) had each such byte replaced by
/// U+FFFD: what it sent was lost, and nothing said so. Now each byte that is not UTF-8 is kept
/// as `\xNN`, the event says `invalid_utf8: true`, and the message is counted
/// (`rulehook_messages_malformed_total{reason="invalid_utf8"}`).
#[tokio::test]
async fn bytes_that_are_not_utf8_are_kept_escaped_and_counted() {
    let (_env, server, port) = keep_all_udp();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = b"<13>1 2026-12-08T00:00:00Z host app - LATIN1 - St\xf6rung \xff\xfe end \xc3\xa9";
    udp.send_to(line, ("127.0.0.1", port)).unwrap();
    let body = body_with_msgid(&server, "LATIN1").await;
    assert_eq!(body["message"], r"St\xf6rung \xff\xfe end é", "{body}");
    assert_eq!(body["invalid_utf8"], true, "{body}");
    let counted = "rulehook_messages_malformed_total{source=\"routers\",reason=\"invalid_utf8\"}";
    assert_eq!(metric(&server, counted).await, Some(1.0));
}

/// An RFC 5424 SD element that could not be read (a value without its closing quote, a space
/// before `]`) vanished: neither in `structured_data` nor in `message`, and nothing counted.
/// Now it is kept as sent in `structured_data_unread` and the message is counted
/// (`rulehook_messages_malformed_total{reason="structured_data"}`); the elements around it are
/// read as before.
#[tokio::test]
async fn an_unreadable_sd_element_is_kept_and_counted() {
    let (_env, server, port) = keep_all_udp();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = r#"<13>1 2026-12-08T00:00:00Z host app - SDBAD [ok@1 a="1"][bad@1 a="unterminated][also@1 b="2"][sp@1 c="3" ] text"#;
    udp.send_to(line.as_bytes(), ("127.0.0.1", port)).unwrap();
    let body = body_with_msgid(&server, "SDBAD").await;
    assert_eq!(
        body["structured_data"],
        serde_json::json!({"ok@1": {"a": "1"}, "also@1": {"b": "2"}}),
        "{body}"
    );
    assert_eq!(
        body["structured_data_unread"],
        serde_json::json!([r#"[bad@1 a="unterminated]"#, r#"[sp@1 c="3" ]"#]),
        "{body}"
    );
    assert_eq!(body["message"], "text", "{body}");
    let counted =
        "rulehook_messages_malformed_total{source=\"routers\",reason=\"structured_data\"}";
    assert_eq!(metric(&server, counted).await, Some(1.0));
}
