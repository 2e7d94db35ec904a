//! `post_webhook` and the shortcuts built on it — `github_dispatch`, `github_workflow`,
//! `gitlab_pipeline`: compiled to one templated HTTP request.

use std::time::Duration;

use super::http::HttpCall;
use crate::templates::{TValue, Templates, Text};

/// How the body is made.
#[derive(Debug)]
pub enum Body {
    None,
    /// A template; when `json`, the rendered text must parse as JSON.
    Text {
        text: Text,
        json: bool,
    },
    /// A JSON value whose strings are templates.
    Json(TValue),
    /// `application/x-www-form-urlencoded` fields.
    Form(Vec<(String, Text)>),
}

/// A compiled outbound request.
#[derive(Debug)]
pub struct HttpAction {
    pub kind: &'static str,
    pub method: String,
    pub url: Text,
    pub headers: Vec<(String, Text)>,
    pub body: Body,
    pub content_type: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub ok_statuses: Vec<u16>,
    /// Credential values, masked wherever the request is shown.
    pub secrets: Vec<String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRIES: u32 = 3;

impl HttpAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<HttpCall, String> {
        let url = t.render(&self.url, ctx)?;
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers.push((k.clone(), t.render(v, ctx)?));
        }
        let body = match &self.body {
            Body::None => None,
            Body::Text { text, json } => {
                let b = t.render(text, ctx)?;
                if *json {
                    serde_json::from_str::<serde_json::Value>(&b).map_err(|e| {
                        format!("the body does not render to valid JSON ({e}): {b}")
                    })?;
                }
                Some(b)
            }
            Body::Json(v) => Some(v.render(t, ctx)?.to_string()),
            Body::Form(fields) => {
                let mut pairs = Vec::new();
                for (k, v) in fields {
                    pairs.push(format!(
                        "{}={}",
                        urlencode(k),
                        urlencode(&t.render(v, ctx)?)
                    ));
                }
                Some(pairs.join("&"))
            }
        };
        if let Some(ct) = &self.content_type
            && body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), ct.clone()));
        }
        Ok(HttpCall {
            method: self.method.clone(),
            url,
            headers,
            body,
            timeout: self.timeout,
            ok_statuses: self.ok_statuses.clone(),
            secrets: self.secrets.clone(),
        })
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
