//! A real three-server nats-server cluster with JetStream on free loopback ports, for the fault
//! tests: each server can be killed with SIGKILL and started again on the same store.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One nats-server of the cluster.
struct Member {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three clustered nats-servers (`n1`, `n2`, `n3`), each with its own JetStream store.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
        .is_ok()
}

impl NatsCluster {
    /// Starts the three servers and waits until JetStream has a meta leader.
    pub async fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut members = Vec::new();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, c))| format!("\"nats-route://127.0.0.1:{c}\""))
                .collect();
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n\
                     cluster {{ name: rh, listen: 127.0.0.1:{cport}, routes: [{}] }}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .expect("write nats config");
            members.push(Member {
                log: dir.path().join(format!("{name}.log")),
                name,
                port: *port,
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { dir, members };
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_answers(i);
        }
        cluster.wait_meta_leader().await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("nats log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&m.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed (Debian package nats-server)");
        m.child = Some(child);
    }

    fn wait_answers(&self, i: usize) {
        let start = Instant::now();
        while !answers(self.members[i].port) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nats-server {} did not start: {}",
                self.members[i].name,
                std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the cluster answers JetStream API requests (a meta leader is elected).
    async fn wait_meta_leader(&self) {
        let client = async_nats::connect(self.urls_list())
            .await
            .expect("connect");
        let start = Instant::now();
        // `$JS.API.INFO` answers with the account's limits once a meta leader is elected, with
        // an error ("temporarily unavailable") before.
        let ready = || async {
            let Ok(Ok(m)) = tokio::time::timeout(
                Duration::from_secs(2),
                client.request("$JS.API.INFO", "".into()),
            )
            .await
            else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            v.get("error").is_none() && v.get("limits").is_some()
        };
        while !ready().await {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the NATS cluster elected no JetStream leader"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn urls_list(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("nats://127.0.0.1:{}", m.port))
            .collect()
    }

    /// The `--store` value naming every server.
    pub fn urls(&self) -> String {
        self.urls_list().join(",")
    }

    /// `nats://…` of server `i` alone.
    pub fn url(&self, i: usize) -> String {
        self.urls_list()[i].clone()
    }

    /// The index of the server leading `stream` (waits for an election).
    pub async fn leader_of(&self, stream: &str) -> usize {
        let client = async_nats::connect(self.urls_list())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let start = Instant::now();
        loop {
            if let Ok(mut s) = js.get_stream(stream).await
                && let Ok(info) = s.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
                && let Some(i) = self.members.iter().position(|m| m.name == leader)
            {
                return i;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "stream {stream} has no leader"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether `stream` has a leader other than server `old` (one quick look).
    pub async fn leader_other_than(&self, stream: &str, old: usize) -> bool {
        let alive: Vec<String> = self
            .urls_list()
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != old)
            .map(|(_, u)| u)
            .collect();
        let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(3), async_nats::connect(alive)).await
        else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        let look = async {
            let mut s = js.get_stream(stream).await.ok()?;
            let info = s.info().await.ok()?;
            info.cluster.clone()?.leader
        };
        match tokio::time::timeout(Duration::from_secs(3), look).await {
            Ok(Some(leader)) => leader != self.members[old].name,
            _ => false,
        }
    }

    /// SIGKILL server `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `i` again on its store and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_answers(i);
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
