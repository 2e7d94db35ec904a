//! RELP with rsyslog's own `omrelp` (Debian `rsyslog-relp`): every message forwarded arrives,
//! also when rulehook is killed (-9) in the middle of the stream and started again.
//!
//! The test runs its own rsyslogd (own config, pid file and work directory in a temp dir, in
//! the foreground) and ends it by its pid.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Server};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An rsyslogd of this test's own.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(dir: &std::path::Path, conf: &str) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("rsyslogd.log")).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rsyslogd (Debian package rsyslog) is installed");
        Rsyslog { child }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // Ends only this rsyslogd, by its own pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send(port: u16, range: std::ops::Range<usize>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in range {
        let line = format!("<134>Dec  6 23:00:00 edge1 relptest: msg-{i:04}");
        // Octet counting, as rsyslog's imtcp takes it.
        s.write_all(format!("{} {line}", line.len()).as_bytes())
            .unwrap();
    }
    s.flush().unwrap();
}

fn seen(env: &Env) -> BTreeSet<String> {
    env.lines("runs.txt").into_iter().collect()
}

#[test]
fn rsyslog_omrelp_loses_nothing_across_a_kill_9() {
    let env = Env::new();
    let relp_port = free_port();
    let in_port = free_port();
    env.rulebook(
        "relp.yml",
        &format!(
            r#"
sources:
  - name: relay
    kind: syslog
    listen: relp://127.0.0.1:{relp_port}
rules:
  - name: record
    sources: [relay]
    condition: '$.app_name == "relptest"'
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ event.message }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let mut server = Server::start(&env, &[], &[]);
    wait_port(relp_port);
    let rs_dir = env.path("rsyslog");
    let _rsyslog = Rsyslog::start(
        &rs_dir,
        &format!(
            r#"
global(workDirectory="{work}")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" port="{in_port}" address="127.0.0.1" ruleset="forward")
ruleset(name="forward") {{
  action(type="omrelp" target="127.0.0.1" port="{relp_port}"
         queue.type="LinkedList" queue.filename="relpq" queue.saveOnShutdown="on"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"#,
            work = rs_dir.join("work").display()
        ),
    );
    wait_port(in_port);
    const N: usize = 300;
    send(in_port, 0..N / 2);
    // Some arrived: kill rulehook in the middle of the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen(&env).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "nothing came over RELP: {}\n{}",
            server.log_text(),
            std::fs::read_to_string(rs_dir.join("rsyslogd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    send(in_port, N / 2..N);
    let server = Server::start(&env, &[], &[]);
    let want: BTreeSet<String> = (0..N).map(|i| format!("msg-{i:04}")).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = seen(&env);
        if want.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing after the restart: {:?}\n{}",
            want.difference(&got).take(10).collect::<Vec<_>>(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cisco and Arista lines relayed by rsyslog (its forwarding format: an RFC 3339 time, the
/// host, the TAG) keep their `cisco` object: a numeric TAG is the device's sequence number.
#[test]
fn cisco_lines_relayed_by_rsyslog_keep_their_cisco_fields() {
    let env = Env::new();
    let relp_port = free_port();
    let in_port = free_port();
    env.rulebook(
        "relp.yml",
        &format!(
            r#"
sources:
  - name: relay
    kind: syslog
    listen: relp://127.0.0.1:{relp_port}
rules:
  - name: link
    sources: [relay]
    condition: '$.cisco.mnemonic == "UPDOWN" && $.severity <= 5'
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ event.cisco.facility }}}}", "{{{{ event.cisco.sequence }}}}", "{{{{ event.cisco.time | default('-') }}}}", "{{{{ event.app_name | default('-') }}}}", "{{{{ event.message }}}}"] }}
"#
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$*\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(relp_port);
    let rs_dir = env.path("rsyslog");
    let _rsyslog = Rsyslog::start(
        &rs_dir,
        &format!(
            r#"
global(workDirectory="{work}")
module(load="imtcp")
module(load="omrelp")
input(type="imtcp" port="{in_port}" address="127.0.0.1" ruleset="forward")
ruleset(name="forward") {{
  action(type="omrelp" target="127.0.0.1" port="{relp_port}")
}}
"#,
            work = rs_dir.join("work").display()
        ),
    );
    wait_port(in_port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", in_port)).unwrap();
    for line in [
        // Cisco IOS, clock never set: no hostname, the message counter first.
        "<187>82: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
        // Arista EOS with sequence numbers.
        "<189>Dec  7 05:52:01 sw1 Ebra: 124: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to down",
    ] {
        s.write_all(format!("{} {line}", line.len()).as_bytes())
            .unwrap();
    }
    s.flush().unwrap();
    let mut got = env.wait_lines("runs.txt", 2, Duration::from_secs(60));
    got.sort();
    assert_eq!(
        got,
        [
            "LINEPROTO 124 - Ebra %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to down",
            "LINK 82 Dec  7 05:54:05.000 - %LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
        ],
        "{}",
        server.log_text()
    );
}

/// A RELP client that sends and never reads its answers: once the socket's buffers are full,
/// rulehook cannot write the next answer. Within `idle_timeout` it gives up on that client
/// (counted `idle_timeout`) and frees the connection slot, so another sender gets in.
#[test]
fn a_client_that_reads_no_answers_is_closed_and_frees_its_slot() {
    let env = Env::new();
    let port = free_port();
    env.rulebook(
        "relp.yml",
        &format!(
            "sources:\n  - name: relay\n    kind: syslog\n    listen: relp://127.0.0.1:{port}\n    max_connections: 1\n    idle_timeout: 1s\n"
        ),
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(port);
    // The probe of wait_port took the slot for a moment: let it go.
    std::thread::sleep(Duration::from_millis(300));
    let deaf = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    deaf.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    deaf.connect(&addr.into()).unwrap();
    let mut deaf: std::net::TcpStream = deaf.into();
    deaf.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // `open`, then frames in sequence, each answered (a second `open` with a refusal), until
    // the answers back up.
    let started = Instant::now();
    let mut txnr = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let frames: String = (txnr + 1..=txnr + 1000)
            .map(|n| format!("{n} open 0\n"))
            .collect();
        txnr += 1000;
        if deaf.write_all(frames.as_bytes()).is_err() {
            break;
        }
    }
    // Another sender is served once the deaf one is given up on.
    let deadline = Instant::now() + Duration::from_secs(15);
    let answered = loop {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(b"1 open 0\n");
        let mut got = [0u8; 16];
        let n = std::io::Read::read(&mut s, &mut got).unwrap_or(0);
        if got[..n].starts_with(b"1 rsp") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answered,
        "the slot is still held by a client that reads nothing: {}",
        server.log_text()
    );
    drop(deaf);
}

/// One RELP exchange on `s`: writes `frame`, reads one answer frame `TXNR rsp LEN [DATA] LF`
/// (empty when the connection was closed instead).
fn exchange(s: &mut std::net::TcpStream, frame: &str) -> String {
    s.write_all(frame.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    let mut want = None;
    loop {
        if want.is_none() {
            let text = String::from_utf8_lossy(&got).into_owned();
            let parts: Vec<&str> = text.splitn(4, [' ', '\n']).collect();
            if parts.len() == 4 || text.ends_with('\n') {
                let len: usize = parts.get(2).and_then(|l| l.parse().ok()).unwrap_or(0);
                let header = parts[..3.min(parts.len())].join(" ").len() + 1;
                want = Some(header + len + usize::from(len > 0));
            }
        }
        if want.is_some_and(|w| got.len() >= w) {
            break;
        }
        match std::io::Read::read(s, &mut b) {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A session keeps librelp's order: a `syslog` before `open` is answered `500 command
/// disabled` and not stored; a transaction number out of sequence (0, which only the server
/// uses, or a repeat) closes the connection unanswered. Both are counted as `relp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_out_of_order_is_refused_as_librelp_does() {
    let env = Env::new();
    let port = free_port();
    env.rulebook(
        "relp.yml",
        &format!(
            "sources:\n  - name: relay\n    kind: syslog\n    listen: relp://127.0.0.1:{port}\n    keep: all\nrules: []\n"
        ),
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(port);
    let line = "<134>Dec  6 23:00:00 edge1 relptest: early";
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut s = connect();
    let early = exchange(&mut s, &format!("1 syslog {} {line}\n", line.len()));
    assert_eq!(early, "1 rsp 20 500 command disabled\n");
    assert!(exchange(&mut s, "2 open 0\n").starts_with("2 rsp "), "open");
    let msg = "<134>Dec  6 23:00:00 edge1 relptest: in order";
    let ok = exchange(&mut s, &format!("3 syslog {} {msg}\n", msg.len()));
    assert_eq!(ok, "3 rsp 6 200 OK\n");
    // A repeated number: closed, nothing answered.
    assert_eq!(
        exchange(&mut s, &format!("3 syslog {} {msg}\n", msg.len())),
        ""
    );

    let mut s = connect();
    assert_eq!(exchange(&mut s, "0 open 0\n"), "", "txnr 0 is the server's");

    let stored = |text: String, n: f64| {
        let accepted = text
            .lines()
            .find(|l| l.starts_with("rulehook_events_accepted_total{source=\"relay\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        let malformed = text
            .lines()
            .find(|l| {
                l.starts_with("rulehook_messages_malformed_total{source=\"relay\",reason=\"relp\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        (accepted, malformed) == (Some(1.0), Some(n))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stored(server.metrics().await, 3.0) {
        assert!(Instant::now() < deadline, "counters: {}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A command the server does not know (`starttls`, a typo) is answered `500 unknown command`
/// and the session is closed, as librelp's server tears down a session after such an error:
/// the next frame gets no answer. It went on with the session. Counted as `relp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_is_answered_and_closes_the_session() {
    let env = Env::new();
    let port = free_port();
    env.rulebook(
        "relp.yml",
        &format!(
            "sources:\n  - name: relay\n    kind: syslog\n    listen: relp://127.0.0.1:{port}\n    keep: all\nrules: []\n"
        ),
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(port);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(exchange(&mut s, "1 open 0\n").starts_with("1 rsp "), "open");
    assert_eq!(
        exchange(&mut s, "2 starttls 0\n"),
        "2 rsp 19 500 unknown command\n"
    );
    let msg = "<134>Dec  6 23:00:00 edge1 relptest: after the error";
    // Closed: no answer (a write may already fail on the closed socket).
    let _ = s.write_all(format!("3 syslog {} {msg}\n", msg.len()).as_bytes());
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "",
        "the session went on after an unknown command"
    );
    let malformed = |text: String| {
        text.lines()
            .find(|l| {
                l.starts_with("rulehook_messages_malformed_total{source=\"relay\",reason=\"relp\"}")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while malformed(server.metrics().await) != Some(1.0) {
        assert!(Instant::now() < deadline, "counters: {}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
