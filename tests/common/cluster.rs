//! Multi-process helpers for the JetStream tests: a local HTTP receiver that records what the
//! actions sent, rulebooks, and nodes of one deployment.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::IntoResponse;

use super::{Env, NatsPrefix, Server, client, post};

/// What the local receiver saw: (path, run id from `Idempotency-Key`, body).
#[derive(Clone, Default)]
pub struct Receiver {
    pub seen: Arc<Mutex<Vec<(String, String, String)>>>,
    pub delay: Duration,
    /// Until set, paths starting with `/fail` answer 500.
    pub healed: Arc<std::sync::atomic::AtomicBool>,
    /// When each request was answered, in the order seen.
    pub answered: Arc<Mutex<Vec<Instant>>>,
}

pub async fn receive(
    State(r): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    tokio::time::sleep(r.delay).await;
    let run = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.seen.lock().unwrap().push((
        uri.path().to_string(),
        run,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    r.answered.lock().unwrap().push(Instant::now());
    // Answers as GitHub's issue API does (for the ticket test); "{}" elsewhere.
    match uri.path() {
        p if p.starts_with("/fail") && !r.healed.load(std::sync::atomic::Ordering::SeqCst) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{}")
        }
        "/repos/acme/netops/issues" => (
            axum::http::StatusCode::CREATED,
            r#"{"number": 7, "html_url": "https://github.example/acme/netops/issues/7"}"#,
        ),
        "/repos/acme/netops/issues/7" => (
            axum::http::StatusCode::OK,
            r#"{"number": 7, "state": "open"}"#,
        ),
        "/repos/acme/netops/issues/7/comments" => (axum::http::StatusCode::CREATED, r#"{"id": 1}"#),
        _ => (axum::http::StatusCode::OK, "{}"),
    }
}

impl Receiver {
    pub async fn start(delay: Duration) -> (Receiver, String) {
        let r = Receiver {
            delay,
            ..Receiver::default()
        };
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, format!("http://{addr}"))
    }
    pub fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().unwrap().clone()
    }
    /// The first and the last time a request was answered.
    pub fn answered_between(&self) -> Option<(Instant, Instant)> {
        let at = self.answered.lock().unwrap();
        Some((*at.first()?, *at.last()?))
    }
    /// Distinct run ids seen.
    pub fn runs(&self) -> HashSet<String> {
        self.seen().into_iter().map(|(_, r, _)| r).collect()
    }
    /// Waits until `n` distinct run ids were seen; false on timeout.
    pub async fn wait_runs(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.runs().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// A rulebook: a bearer source, one rule posting `{"n": …}` to `url`.
pub fn work_rulebook(url: &str) -> String {
    format!(
        r#"
sources:
  - {{ name: in, kind: bearer, secret: in-token }}
  - {{ name: gl, kind: gitlab, secret: gl-token }}
rules:
  - name: work
    condition: '$.n >= 0'
    actions:
      - post_webhook: {{ url: "{url}", body: '{{"n": {{{{ event.n }}}}}}', retries: 0 }}
"#
    )
}

pub fn bearer() -> Vec<(String, String)> {
    vec![("authorization".into(), "Bearer in-token".into())]
}

pub fn gitlab(delivery: &str) -> Vec<(String, String)> {
    vec![
        ("x-gitlab-token".into(), "gl-token".into()),
        ("x-gitlab-event-uuid".into(), delivery.into()),
    ]
}

pub fn node(env: &Env, nats: &NatsPrefix, role: &str, extra: &[&str]) -> Server {
    let mut args: Vec<String> = nats.args(role);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Each node owns its data directory (it records the node's running scripts).
    let data = env.path(&format!("data-{}", uuid::Uuid::now_v7().simple()));
    Server::start_on(env, &data, &args, &[])
}

/// Posts `n` events (0..n) to `server`, 16 at a time; every one must get 202.
pub async fn post_all(server: &Server, n: usize) -> Vec<String> {
    let c = client();
    let url = server.url("/hooks/in");
    let mut ids = vec![String::new(); n];
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= 16 {
            let (i, id) = set.join_next().await.unwrap().unwrap();
            ids[i] = id;
        }
        let (c, url) = (c.clone(), url.clone());
        set.spawn(async move {
            let body = format!(r#"{{"n": {i}}}"#);
            let (st, resp) = post(&c, &url, &bearer(), body.as_bytes()).await;
            assert_eq!(st, 202, "{resp}");
            (i, resp["id"].as_str().unwrap().to_string())
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, id) = r.unwrap();
        ids[i] = id;
    }
    ids
}
