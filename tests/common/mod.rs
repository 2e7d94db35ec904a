//! Test harness: a scratch directory with rulebooks and scripts, the real `rulehook` binary
//! started on a loopback port, and signing helpers.
#![allow(dead_code)]

pub mod cluster;
pub mod console;
pub mod nats_cluster;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["rulebooks", "scripts", "templates", "data"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Env { dir }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn rulebook(&self, name: &str, yaml: &str) {
        std::fs::write(self.path("rulebooks").join(name), yaml).expect("write rulebook");
    }
    pub fn script(&self, name: &str, body: &str) {
        let p = self.path("scripts").join(name);
        std::fs::write(&p, body).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    /// Lines of a file the scripts append to (empty when it does not exist yet).
    pub fn lines(&self, rel: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(rel))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
    /// Waits until `rel` holds at least `n` lines; panics (with what it holds) on timeout, so a
    /// test never carries on as if the lines had come.
    pub fn wait_lines(&self, rel: &str, n: usize, timeout: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        wait_until(&format!("{n} line(s) in {rel}"), timeout, || {
            lines = self.lines(rel);
            lines.len() >= n
        });
        lines
    }
    /// `rulehook users ARGS --data DIR` (with `stdin`, if any): success and all it printed.
    pub fn users(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        use std::io::Write;
        use std::process::Stdio;
        let bin = std::env::var("RULEHOOK_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rulehook").to_string());
        let mut child = Command::new(bin)
            .arg("users")
            .args(args)
            .arg("--data")
            .arg(self.path("data"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        // RULEHOOK_TEST_BIN: run the tests against another build (an earlier one, to see a
        // test fail before its fix).
        let bin = std::env::var("RULEHOOK_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rulehook").to_string());
        let mut c = Command::new(bin);
        c.args(args)
            .arg("--rulebooks")
            .arg(self.path("rulebooks"))
            .arg("--scripts")
            .arg(self.path("scripts"))
            .arg("--templates")
            .arg(self.path("templates"));
        c
    }
}

/// A running `rulehook serve`.
pub struct Server {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    /// Every line the server printed on stdout so far.
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(env: &Env, extra: &[&str], vars: &[(&str, String)]) -> Server {
        Server::start_on(env, &env.path("data"), extra, vars)
    }

    /// `start` with its own data directory (one per node of a deployment).
    pub fn start_on(env: &Env, data: &Path, extra: &[&str], vars: &[(&str, String)]) -> Server {
        let log = env.path(&format!(
            "serve-{}.log",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = env.cmd(&["serve"]);
        cmd.arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("OUT_DIR", env.dir.path())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rulehook");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        std::thread::sleep(Duration::from_millis(50));
        Server {
            child,
            base,
            log,
            stdout: lines,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// The loopback port a listening source bound (`at` = `tcp` or `udp`), from its
    /// `source <name> at <at>://127.0.0.1:<port>` line; panics after 20 s without it.
    pub fn source_port(&self, source: &str, at: &str) -> u16 {
        let prefix = format!("source {source} at {at}://127.0.0.1:");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.stdout.lock().unwrap().clone();
            if let Some(p) = lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix.as_str()).and_then(|p| p.parse().ok()))
            {
                return p;
            }
            assert!(Instant::now() < deadline, "no listener: {lines:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The service's `/metrics` page, as text.
    #[allow(dead_code)] // not every test binary reads metrics
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Signs like a sender of `kind` and posts; returns status and JSON body.
pub async fn post_signed(
    c: &reqwest::Client,
    url: &str,
    kind: &str,
    secret: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let headers =
        rulehook::verify::sign_like(kind, secret, body, SystemTime::now()).expect("known kind");
    post(c, url, &headers, body).await
}

pub async fn post(
    c: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut req = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The NATS server tests use (`RULEHOOK_TEST_NATS`, default `nats://127.0.0.1:4222`); fails
/// with how to start one when none answers.
pub fn nats_url() -> String {
    let url =
        std::env::var("RULEHOOK_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let addr = url
        .trim_start_matches("nats://")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let reachable = addr
        .parse()
        .ok()
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no NATS server answers at {url}: these tests need one with JetStream. Start it with \
         `nats-server -js -a 127.0.0.1 -p 4222` (or point RULEHOOK_TEST_NATS at one)"
    );
    url
}

/// One deployment's names on the test NATS server (`--store-prefix`); its streams are removed
/// when it is dropped.
pub struct NatsPrefix {
    pub url: String,
    pub prefix: String,
}

impl NatsPrefix {
    pub fn new() -> NatsPrefix {
        NatsPrefix {
            url: nats_url(),
            prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// `serve` arguments for a node of this deployment.
    pub fn args(&self, role: &str) -> Vec<String> {
        vec![
            "--store".into(),
            self.url.clone(),
            "--store-prefix".into(),
            self.prefix.clone(),
            "--role".into(),
            role.into(),
        ]
    }
}

impl Drop for NatsPrefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(rulehook::store::nats::Jet::destroy(&url, &prefix))
        })
        .join();
    }
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`. The one way
/// the tests wait for something (never a fixed sleep hoping it happened).
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if done() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GETs `path` from `server`, asserting 200, and returns its JSON.
pub async fn get(c: &reqwest::Client, server: &Server, path: &str) -> serde_json::Value {
    let resp = c.get(server.url(path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// Polls `path` (as [`get`]) until `f` holds; panics with the last answer after `timeout`.
pub async fn wait_for<F: Fn(&serde_json::Value) -> bool>(
    c: &reqwest::Client,
    server: &Server,
    path: &str,
    timeout: Duration,
    f: F,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = get(c, server, path).await;
        if f(&v) {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting on {path}; last answer: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
