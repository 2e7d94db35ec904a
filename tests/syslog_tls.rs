//! Syslog over TLS (RFC 5425) with rsyslog's own `omfwd` and its GnuTLS driver (Debian
//! `rsyslog-gnutls`): rsyslog presents a client certificate from the CA the source names in
//! `client_ca` and its messages arrive; clients without a certificate, or with one from another
//! CA, are refused in the handshake and counted, and nothing they send becomes an event.
//!
//! The test runs its own rsyslogd (own config, pid file and work directory in a temp dir, in
//! the foreground) and ends it by its pid.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Env, Server};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA that signs server and client certificates, written as PEM files into `dir`.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Ca { params, key }
    }

    /// A leaf certificate for `names`; returns (cert file, key file).
    fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// An rsyslogd of this test's own.
struct Rsyslog {
    child: Child,
}

impl Rsyslog {
    fn start(dir: &Path, conf: &str) -> Rsyslog {
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

/// Sends `line` over TLS as a client with `identity` (or none); the handshake's outcome is
/// not asserted here (a refused client may only learn it on its next read).
fn send_as(port: u16, ca: &Path, identity: Option<(&Path, &Path)>, line: &str) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let _ = tls.write_all(format!("{} {line}", line.len()).as_bytes());
    let _ = tls.flush();
    let mut buf = [0u8; 16];
    // The server's verdict on the certificate (an alert, or the close) comes back here.
    let _ = std::io::Read::read(&mut tls, &mut buf);
}

async fn metric(server: &Server, prefix: &str) -> f64 {
    let text = server.metrics().await;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_over_tls_with_a_client_certificate_and_strangers_are_refused() {
    let env = Env::new();
    let pki = env.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let (server_cert, server_key) = ca.issue(&pki, "server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = ca.issue(&pki, "client", &["rsyslog-client"]);
    let other = Ca::new(&pki, "other");
    let (stranger_cert, stranger_key) = other.issue(&pki, "stranger", &["stranger"]);
    let tls_port = free_port();
    let in_port = free_port();
    env.rulebook(
        "tls.yml",
        &format!(
            r#"
sources:
  - name: secure
    kind: syslog
    listen: tls://127.0.0.1:{tls_port}
    tls: {{cert: {cert}, key: {key}, client_ca: {client_ca}}}
rules:
  - name: record
    sources: [secure]
    condition: '$.app_name == "tlstest"'
    actions:
      - run_script: {{ script: record.sh, args: ["{{{{ event.message }}}}"] }}
"#,
            cert = server_cert.display(),
            key = server_key.display(),
            client_ca = pki.join("ca.pem").display(),
        ),
    );
    env.script(
        "record.sh",
        "#!/bin/sh\necho \"$1\" >> \"$OUT_DIR/runs.txt\"\n",
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(tls_port);

    // Strangers first: no certificate, and one from another CA.
    send_as(
        tls_port,
        &pki.join("ca.pem"),
        None,
        "<134>Dec  6 23:00:00 edge1 tlstest: from-nobody",
    );
    send_as(
        tls_port,
        &pki.join("ca.pem"),
        Some((&stranger_cert, &stranger_key)),
        "<134>Dec  6 23:00:00 edge1 tlstest: from-stranger",
    );
    let refused = "rulehook_messages_dropped_total{source=\"secure\",reason=\"tls_handshake\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, refused).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "handshakes not refused: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // rsyslog with the CA's client certificate, octet-counted over TLS.
    let rs_dir = env.path("rsyslog");
    let _rsyslog = Rsyslog::start(
        &rs_dir,
        &format!(
            r#"
global(workDirectory="{work}"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" port="{in_port}" address="127.0.0.1" ruleset="forward")
ruleset(name="forward") {{
  action(type="omfwd" target="127.0.0.1" port="{tls_port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
         StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"#,
            work = rs_dir.join("work").display(),
            ca = pki.join("ca.pem").display(),
            cert = client_cert.display(),
            key = client_key.display(),
        ),
    );
    wait_port(in_port);
    const N: usize = 50;
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", in_port)).unwrap();
        for i in 0..N {
            let line = format!("<134>Dec  6 23:00:00 edge1 tlstest: msg-{i:03}");
            s.write_all(format!("{} {line}", line.len()).as_bytes())
                .unwrap();
        }
        s.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = env.lines("runs.txt");
        if got.len() >= N {
            let mut got = got;
            got.sort();
            let want: Vec<String> = (0..N).map(|i| format!("msg-{i:03}")).collect();
            assert_eq!(
                got, want,
                "exactly rsyslog's messages, none of the strangers'"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} came over TLS: {}\n{}",
            got.len(),
            server.log_text(),
            std::fs::read_to_string(rs_dir.join("rsyslogd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_tls_listener_without_its_files_does_not_load() {
    let env = Env::new();
    env.rulebook(
        "tls.yml",
        r#"
sources:
  - name: secure
    kind: syslog
    listen: tls://127.0.0.1:0
    tls: {cert: /nonexistent/cert.pem, key: /nonexistent/key.pem}
rules: []
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("/nonexistent/cert.pem"), "{text}");
    env.rulebook(
        "tls.yml",
        r#"
sources:
  - name: secure
    kind: syslog
    listen: tls://127.0.0.1:0
rules: []
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("tls:// needs `tls:"), "{text}");
}

/// A TLS client that ends the TCP connection without a TLS close_notify (many do) has its last
/// line, sent without a line end, taken as over plain TCP: what was read is handed on, not
/// dropped with the read error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_line_before_a_close_without_close_notify_is_kept() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let env = Env::new();
    let pki = env.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new(&pki, "ca");
    let (cert, key) = ca.issue(&pki, "server", &["localhost", "127.0.0.1"]);
    let port = free_port();
    env.rulebook(
        "tls.yml",
        &format!(
            "sources:\n  - name: secure\n    kind: syslog\n    listen: tls://127.0.0.1:{port}\n    tls: {{cert: {}, key: {}}}\n    keep: all\n",
            cert.display(),
            key.display()
        ),
    );
    let server = Server::start(&env, &[], &[]);
    wait_port(port);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"<13>Jan 12 10:11:12 host app: first\n<13>Jan 12 10:11:12 host app: last")
        .unwrap();
    tls.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The TCP connection ends; no close_notify was sent.
    tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
    let name = "rulehook_events_accepted_total{source=\"secure\",duplicate=\"false\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, name).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the last line was lost: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
