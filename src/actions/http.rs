//! An outbound HTTP request, rendered: what `post_webhook`, the GitHub/GitLab shortcuts and the
//! ticket systems send. One client for the process; retries are decided here (what is worth
//! retrying, how long the server asked to wait) and carried out by the engine.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Outcome, RunContext};

const BODY_CAP: usize = 64 * 1024;

/// The `User-Agent` of every outbound request.
pub const USER_AGENT: &str = concat!("rulehook/", env!("CARGO_PKG_VERSION"));

/// A request ready to send. `secrets` (credentials it carries) are masked wherever it is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpCall {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    #[serde(with = "super::script::millis")]
    pub timeout: Duration,
    /// Statuses that count as success; empty: any 2xx.
    #[serde(default)]
    pub ok_statuses: Vec<u16>,
    #[serde(skip)]
    pub secrets: Vec<String>,
}

pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

impl HttpCall {
    /// A copy fit for the history and logs: credentials replaced by `***`.
    pub fn masked(&self) -> HttpCall {
        let mask = |s: &str| {
            self.secrets
                .iter()
                .filter(|x| x.len() >= 3)
                .fold(s.to_string(), |acc, x| acc.replace(x.as_str(), "***"))
        };
        HttpCall {
            method: self.method.clone(),
            url: mask(&self.url),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| {
                    let sensitive = matches!(
                        k.to_ascii_lowercase().as_str(),
                        "authorization" | "private-token" | "cookie" | "x-api-key"
                    );
                    (k.clone(), if sensitive { "***".into() } else { mask(v) })
                })
                .collect(),
            body: self.body.as_deref().map(mask),
            timeout: self.timeout,
            ok_statuses: self.ok_statuses.clone(),
            secrets: Vec::new(),
        }
    }

    fn mask_text(&self, s: &str) -> String {
        self.secrets
            .iter()
            .filter(|x| x.len() >= 3)
            .fold(s.to_string(), |acc, x| acc.replace(x.as_str(), "***"))
    }

    pub async fn execute(&self, run: &RunContext) -> Outcome {
        let method = match reqwest::Method::from_bytes(self.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Outcome::failed(format!("`{}` is not an HTTP method", self.method)),
        };
        let mut req = client()
            .request(method, &self.url)
            .timeout(self.timeout)
            .header("idempotency-key", &run.run_id);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(b) = &self.body {
            req = req.body(b.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let mut o = Outcome::failed(self.mask_text(&format!(
                    "request to {} failed: {}",
                    self.masked().url,
                    error_chain(&e)
                )));
                // A request that cannot even be built (a header value from the event with a
                // line break, a URL that does not parse) fails the same way every time.
                o.retryable = !e.is_builder();
                return o;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        // Read up to the cap, not whole: an endless answer cannot fill memory.
        let mut body = Vec::new();
        let mut resp = resp;
        while body.len() < BODY_CAP {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = BODY_CAP - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let ok = if self.ok_statuses.is_empty() {
            (200..300).contains(&status)
        } else {
            self.ok_statuses.contains(&status)
        };
        Outcome {
            ok,
            status: Some(status),
            stdout: text,
            error: (!ok)
                .then(|| format!("{} {} answered {status}", self.method, self.masked().url)),
            retryable: !ok && (status == 408 || status == 429 || status >= 500),
            retry_after,
            ..Outcome::default()
        }
    }
}

/// An error with its causes (`… : connection refused`, `… : dns error: …`, TLS reasons):
/// reqwest's own message names only the URL.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// `Retry-After` (seconds or an HTTP date), or GitHub's `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0.
pub fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    if text("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = text("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
    {
        // A reset far in the future is the same as an hour (the longest wait honoured).
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(reset));
        return Some(match at {
            Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
            None => Duration::from_secs(3600),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = reqwest::Client::new()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        let text = error_chain(&e);
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("Some("), "{text}");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let mut g = HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        g.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        g.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        let d = retry_after(&g).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn a_reset_far_in_the_future_does_not_panic() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("18446744073709551615"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn masks_credentials() {
        let call = HttpCall {
            method: "POST".into(),
            url: "https://x/api?token=tok-123".into(),
            headers: vec![
                ("Authorization".into(), "Bearer tok-123".into()),
                ("X-Other".into(), "tok-123".into()),
            ],
            body: Some(r#"{"token":"tok-123"}"#.into()),
            timeout: Duration::from_secs(1),
            ok_statuses: vec![],
            secrets: vec!["tok-123".into()],
        };
        let masked = call.masked();
        let shown = serde_json::to_string(&masked).unwrap();
        assert!(!shown.contains("tok-123"), "{shown}");
        // Masked, not dropped: the rest of what was sent is still shown.
        assert_eq!(masked.url, "https://x/api?token=***");
        assert_eq!(
            masked.headers,
            vec![
                ("Authorization".to_string(), "***".to_string()),
                ("X-Other".to_string(), "***".to_string()),
            ]
        );
        assert_eq!(masked.body.as_deref(), Some(r#"{"token":"***"}"#));
    }
}
