//! `post_webhook` and the shortcuts built on it — `github_dispatch`, `github_workflow`,
//! `gitlab_pipeline`: compiled to one templated HTTP request.

use std::time::Duration;

use super::http::HttpCall;
use crate::rulebook::compile::{Compile, spanned_like};
use crate::rulebook::model::{
    GithubDispatchSpec, GithubWorkflowSpec, GitlabPipelineSpec, PostWebhookSpec,
};
use crate::secrets::Secret;
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
    /// A PagerDuty Events API v2 event: JSON made valid for its action once rendered.
    PagerDuty(TValue),
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

/// `post_webhook:` compiled to its HTTP request.
pub(crate) fn compile_post_webhook(
    cx: &mut Compile,
    w: &PostWebhookSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<HttpAction> {
    let url = cx.url(t, format!("{prefix}/url"), &w.url, "url")?;
    let method = w
        .method
        .as_ref()
        .map(|m| m.value.to_ascii_uppercase())
        .unwrap_or_else(|| "POST".into());
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
        cx.err(
            &w.url.referenced,
            format!("method `{method}` is not an HTTP method"),
        );
        return None;
    }
    let mark = cx.referenced.len();
    let mut headers = Vec::new();
    for (k, v) in &w.headers {
        headers.push((
            k.clone(),
            cx.template(t, format!("{prefix}/headers/{k}"), v, "headers")?,
        ));
    }
    // Header values that came from `${env:…}`/`${file:…}` are masked wherever shown.
    let secrets: Vec<String> = cx.referenced.drain(mark..).collect();
    let content_type = w
        .content_type
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| "application/json".into());
    let json = content_type.contains("json");
    let body = match (&w.body, &w.body_template) {
        (None, None) => Body::None,
        _ => Body::Text {
            text: cx.body_text(
                t,
                prefix,
                w.body.as_ref(),
                w.body_template.as_ref(),
                &w.url,
                json,
            )?,
            json,
        },
    };
    Some(HttpAction {
        kind: "post_webhook",
        method,
        url,
        headers,
        body,
        content_type: Some(content_type),
        timeout: cx.timeout_or(w.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        retries: w.retries.unwrap_or(DEFAULT_RETRIES),
        ok_statuses: Vec::new(),
        secrets,
    })
}

/// `github_dispatch:` compiled to its HTTP request.
pub(crate) fn compile_github_dispatch(
    cx: &mut Compile,
    g: &GithubDispatchSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<HttpAction> {
    let api = cx.api_url(g.api_url.as_ref(), "https://api.github.com")?;
    let token = cx.secret(&g.token, "token")?;
    let payload = g
        .client_payload
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    let payload = cx.expand_value(&payload, &g.event_type.referenced, "client_payload")?;
    let body = serde_json::json!({"event_type": g.event_type.value, "client_payload": payload});
    let body = TValue::compile(t, &format!("{prefix}/body"), &body)
        .map_err(|m| cx.err(&g.event_type.referenced, format!("template error: {m}")))
        .ok()?;
    let url = cx.template(
        t,
        format!("{prefix}/url"),
        &spanned_like(&g.repo, format!("{api}/repos/{}/dispatches", g.repo.value)),
        "repo",
    )?;
    Some(github_call(
        "github_dispatch",
        url,
        Body::Json(body),
        &token,
        vec![204],
        cx.timeout_or(g.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        g.retries,
    ))
}

/// `github_workflow:` compiled to its HTTP request.
pub(crate) fn compile_github_workflow(
    cx: &mut Compile,
    g: &GithubWorkflowSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<HttpAction> {
    let api = cx.api_url(g.api_url.as_ref(), "https://api.github.com")?;
    let token = cx.secret(&g.token, "token")?;
    let inputs: serde_json::Map<String, serde_json::Value> = g
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.value.clone())))
        .collect();
    let body = serde_json::json!({"ref": g.git_ref.value, "inputs": inputs});
    let body = TValue::compile(t, &format!("{prefix}/body"), &body)
        .map_err(|m| cx.err(&g.git_ref.referenced, format!("template error: {m}")))
        .ok()?;
    let src = format!(
        "{api}/repos/{}/actions/workflows/{}/dispatches",
        g.repo.value, g.workflow.value
    );
    let url = cx.template(
        t,
        format!("{prefix}/url"),
        &spanned_like(&g.repo, src),
        "repo",
    )?;
    Some(github_call(
        "github_workflow",
        url,
        Body::Json(body),
        &token,
        vec![204, 200],
        cx.timeout_or(g.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        g.retries,
    ))
}

/// `gitlab_pipeline:` compiled to its HTTP request.
pub(crate) fn compile_gitlab_pipeline(
    cx: &mut Compile,
    g: &GitlabPipelineSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<HttpAction> {
    let api = cx.api_url(g.api_url.as_ref(), "https://gitlab.com")?;
    let token = cx.secret(&g.token, "token")?;
    let project = cx.expand(&g.project, "project")?;
    let project = if project.contains("{{") {
        project
    } else {
        urlencode(&project)
    };
    let src = format!("{api}/api/v4/projects/{project}/trigger/pipeline");
    let url = cx.template(
        t,
        format!("{prefix}/url"),
        &spanned_like(&g.project, src),
        "project",
    )?;
    let mut fields = vec![
        (
            "token".to_string(),
            Text::Literal(token.expose().to_string()),
        ),
        (
            "ref".to_string(),
            cx.template(t, format!("{prefix}/ref"), &g.git_ref, "ref")?,
        ),
    ];
    for (k, v) in &g.variables {
        fields.push((
            format!("variables[{k}]"),
            cx.template(t, format!("{prefix}/variables/{k}"), v, "variables")?,
        ));
    }
    Some(HttpAction {
        kind: "gitlab_pipeline",
        method: "POST".into(),
        url,
        headers: Vec::new(),
        body: Body::Form(fields),
        content_type: Some("application/x-www-form-urlencoded".into()),
        timeout: cx.timeout_or(g.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        retries: g.retries.unwrap_or(DEFAULT_RETRIES),
        ok_statuses: vec![201],
        secrets: vec![token.expose().to_string()],
    })
}

fn github_call(
    kind: &'static str,
    url: Text,
    body: Body,
    token: &Secret,
    ok: Vec<u16>,
    timeout: Duration,
    retries: Option<u32>,
) -> HttpAction {
    HttpAction {
        kind,
        method: "POST".into(),
        url,
        headers: vec![
            (
                "Authorization".into(),
                Text::Literal(format!("Bearer {}", token.expose())),
            ),
            (
                "Accept".into(),
                Text::Literal("application/vnd.github+json".into()),
            ),
            (
                "X-GitHub-Api-Version".into(),
                Text::Literal("2022-11-28".into()),
            ),
        ],
        body,
        content_type: Some("application/json".into()),
        timeout,
        retries: retries.unwrap_or(DEFAULT_RETRIES),
        ok_statuses: ok,
        secrets: vec![token.expose().to_string()],
    }
}

impl HttpAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<HttpCall, String> {
        let url = t.render_url(&self.url, ctx)?;
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
            Body::PagerDuty(v) => {
                let mut event = v.render(t, ctx)?;
                super::notify::finish_pagerduty(&mut event)?;
                Some(event.to_string())
            }
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
