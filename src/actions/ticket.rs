//! `open_ticket`: GitHub or GitLab issues, Jira Cloud issues, ServiceNow incidents. With a
//! `dedup_key`, the state store remembers key → ticket; while that ticket is open, a later match
//! adds a comment to it instead of opening another. Opening is claimed first (compare-and-set),
//! so two jobs with one key running at once open one ticket: the other waits and comments.

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_saphyr::Spanned;

use super::http::HttpCall;
use super::outbound::{DEFAULT_RETRIES, DEFAULT_TIMEOUT, urlencode};
use super::{Outcome, RunContext};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::OpenTicketSpec;
use crate::secrets::Secret;
use crate::store::{StateStore, StoreError};
use crate::templates::{Templates, Text};

/// How long a claim to open a ticket holds if its run dies before recording the ticket.
const CLAIM_TTL: Duration = Duration::from_secs(600);
/// How long a job waits for another run's claim on the same key to become a ticket.
pub(super) const CLAIM_WAIT: Duration = Duration::from_secs(60);

/// A ticket opened under a dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub system: String,
    pub id: String,
    pub url: String,
}

/// What the state store holds under `ticket/<dedup_key>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TicketState {
    /// A run is opening the ticket.
    Claim {
        run: String,
    },
    Open(Ticket),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Github,
    Gitlab,
    Jira,
    Servicenow,
}

impl System {
    pub fn parse(s: &str) -> Option<System> {
        match s {
            "github" => Some(System::Github),
            "gitlab" => Some(System::Gitlab),
            "jira" => Some(System::Jira),
            "servicenow" => Some(System::Servicenow),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            System::Github => "github",
            System::Gitlab => "gitlab",
            System::Jira => "jira",
            System::Servicenow => "servicenow",
        }
    }
}

/// What an `open_ticket` does with the ticket of its dedup key.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Open a ticket, or comment on the one still open for the key (a repeated firing).
    #[default]
    Open,
    /// Comment on the open ticket; nothing when none is open.
    Comment,
    /// Comment, then move the ticket to the system's resolved state.
    Resolve,
    /// Comment, then close the ticket.
    Close,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        match s.trim() {
            "open" => Some(Step::Open),
            "comment" => Some(Step::Comment),
            "resolve" => Some(Step::Resolve),
            "close" => Some(Step::Close),
            _ => None,
        }
    }
}

/// A compiled `open_ticket`.
#[derive(Debug)]
pub struct TicketAction {
    pub system: System,
    pub api_url: String,
    pub project: Option<Text>,
    pub title: Text,
    pub body: Option<Text>,
    pub labels: Vec<Text>,
    pub dedup_key: Option<Text>,
    /// Jira: the issue type's name (`Task` unless set).
    pub issue_type: Option<Text>,
    /// ServiceNow: the incident's `assignment_group` (a group name or sys_id).
    pub assignment_group: Option<Text>,
    /// `open`, `comment`, `resolve` or `close` (see [`Step`]).
    pub step: Text,
    /// ServiceNow: the `close_code` when resolving or closing.
    pub close_code: Option<Text>,
    /// `Authorization` (or `PRIVATE-TOKEN`) header value.
    pub auth: (String, String),
    pub timeout: Duration,
    pub retries: u32,
    pub secrets: Vec<String>,
}

/// A rendered `open_ticket`. Credentials are not serialized.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketCall {
    pub system: System,
    pub api_url: String,
    pub project: Option<String>,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub dedup_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_group: Option<String>,
    /// What it does with the ticket of its dedup key.
    #[serde(default, rename = "do")]
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_code: Option<String>,
    #[serde(skip)]
    pub auth: (String, String),
    #[serde(with = "super::script::millis")]
    pub timeout: Duration,
    #[serde(skip)]
    pub secrets: Vec<String>,
}

/// `Basic base64(user:secret)`.
pub fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// `open_ticket:` compiled: the system's credential header, API URL and templates.
pub(crate) fn compile(
    cx: &mut Compile,
    o: &OpenTicketSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<TicketAction> {
    let Some(system) = System::parse(&o.system.value) else {
        cx.err(
            &o.system.referenced,
            "system must be github, gitlab, jira or servicenow",
        );
        return None;
    };
    let (auth, secrets) = credentials(cx, o, system)?;
    let default_api = match system {
        System::Github => Some("https://api.github.com"),
        System::Gitlab => Some("https://gitlab.com"),
        _ => None,
    };
    let api = match (o.api_url.as_ref(), default_api) {
        (None, None) => {
            cx.err(
                &o.system.referenced,
                format!("open_ticket for {} needs `api_url`", o.system.value),
            );
            return None;
        }
        (given, d) => cx.api_url(given, d.unwrap_or_default())?,
    };
    let project = match (&o.project, system) {
        (Some(p), _) => Some(cx.template(t, format!("{prefix}/project"), p, "project")?),
        (None, System::Servicenow) => None,
        (None, _) => {
            cx.err(
                &o.system.referenced,
                format!("open_ticket for {} needs `project`", o.system.value),
            );
            return None;
        }
    };
    let body = match (&o.body, &o.body_template) {
        (None, None) => None,
        _ => Some(cx.body_text(
            t,
            prefix,
            o.body.as_ref(),
            o.body_template.as_ref(),
            &o.title,
            false,
        )?),
    };
    let mut labels = Vec::new();
    for (i, l) in o.labels.iter().enumerate() {
        labels.push(cx.template(t, format!("{prefix}/labels/{i}"), l, "labels")?);
    }
    let dedup_key = match &o.dedup_key {
        Some(k) => Some(cx.template(t, format!("{prefix}/dedup_key"), k, "dedup_key")?),
        None => None,
    };
    let mut only = |name: &str, field: Option<&Spanned<String>>, for_system: System| {
        system_only(cx, t, prefix, name, field, (system, for_system))
    };
    let issue_type = only("issue_type", o.issue_type.as_ref(), System::Jira)?;
    let assignment_group = only(
        "assignment_group",
        o.assignment_group.as_ref(),
        System::Servicenow,
    )?;
    let close_code = only("close_code", o.close_code.as_ref(), System::Servicenow)?;
    let step = compile_step(cx, o, prefix, t)?;
    Some(TicketAction {
        system,
        api_url: api,
        issue_type,
        assignment_group,
        step,
        close_code,
        project,
        title: cx.template(t, format!("{prefix}/title"), &o.title, "title")?,
        body,
        labels,
        dedup_key,
        auth,
        timeout: cx.timeout_or(o.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        retries: o.retries.unwrap_or(DEFAULT_RETRIES),
        secrets,
    })
}

/// The credential header each system expects (name, value), and the secret to mask.
fn credentials(
    cx: &mut Compile,
    o: &OpenTicketSpec,
    system: System,
) -> Option<((String, String), Vec<String>)> {
    let need = |cx: &mut Compile, f: Option<&Spanned<String>>, name: &str| -> Option<Secret> {
        match f {
            Some(s) => cx.secret(s, name),
            None => {
                cx.err(
                    &o.system.referenced,
                    format!("open_ticket for {} needs `{name}`", o.system.value),
                );
                None
            }
        }
    };
    let (header, value, secret) = match system {
        System::Github => {
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("Authorization", format!("Bearer {}", tok.expose()), tok)
        }
        System::Gitlab => {
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("PRIVATE-TOKEN", tok.expose().to_string(), tok)
        }
        System::Jira => {
            let email = need(cx, o.email.as_ref(), "email")?;
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("Authorization", basic(email.expose(), tok.expose()), tok)
        }
        System::Servicenow => {
            let user = need(cx, o.username.as_ref(), "username")?;
            let pw = need(cx, o.password.as_ref(), "password")?;
            ("Authorization", basic(user.expose(), pw.expose()), pw)
        }
    };
    Some((
        (header.to_string(), value),
        vec![secret.expose().to_string()],
    ))
}

/// A field only one system has (`issue_type` for Jira …): its template, none when absent,
/// and an error (outer `None`) when given for another system. `systems`: (this, the one).
fn system_only(
    cx: &mut Compile,
    t: &mut Templates,
    prefix: &str,
    name: &str,
    field: Option<&Spanned<String>>,
    systems: (System, System),
) -> Option<Option<Text>> {
    match field {
        None => Some(None),
        Some(v) if systems.0 == systems.1 => {
            Some(Some(cx.template(t, format!("{prefix}/{name}"), v, name)?))
        }
        Some(v) => {
            let only = match systems.1 {
                System::Github => "github",
                System::Gitlab => "gitlab",
                System::Jira => "jira",
                System::Servicenow => "servicenow",
            };
            cx.err(
                &v.referenced,
                format!("`{name}` applies to `system: {only}` only"),
            );
            None
        }
    }
}

/// `do:` (open, comment, resolve, close, or a template choosing one); all but `open` act on
/// the ticket of a `dedup_key`, so they need one.
fn compile_step(
    cx: &mut Compile,
    o: &OpenTicketSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<Text> {
    let step_text = o
        .step
        .as_ref()
        .map(|s| s.value.clone())
        .unwrap_or_else(|| "open".into());
    let templated = step_text.contains("{{") || step_text.contains("{%");
    if !templated && Step::parse(&step_text).is_none() {
        let at = o.step.as_ref().unwrap_or(&o.system);
        cx.err(
            &at.referenced,
            format!("do `{step_text}`: use open, comment, resolve or close"),
        );
        return None;
    }
    if (templated || step_text != "open") && o.dedup_key.is_none() {
        let at = o.step.as_ref().unwrap_or(&o.system);
        cx.err(
            &at.referenced,
            "comment, resolve and close act on the ticket opened under a `dedup_key`: add one",
        );
        return None;
    }
    match &o.step {
        Some(s) => cx.template(t, format!("{prefix}/do"), s, "do"),
        None => Some(Text::Literal("open".into())),
    }
}

impl TicketAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<TicketCall, String> {
        Ok(TicketCall {
            system: self.system,
            api_url: self.api_url.clone(),
            project: self
                .project
                .as_ref()
                .map(|p| t.render(p, ctx))
                .transpose()?,
            title: t.render(&self.title, ctx)?,
            body: self
                .body
                .as_ref()
                .map(|b| t.render(b, ctx))
                .transpose()?
                .unwrap_or_default(),
            labels: self
                .labels
                .iter()
                .map(|l| t.render(l, ctx))
                .collect::<Result<_, _>>()?,
            dedup_key: self
                .dedup_key
                .as_ref()
                .map(|k| t.render(k, ctx))
                .transpose()?,
            issue_type: self
                .issue_type
                .as_ref()
                .map(|k| t.render(k, ctx))
                .transpose()?,
            assignment_group: self
                .assignment_group
                .as_ref()
                .map(|k| t.render(k, ctx))
                .transpose()?,
            step: {
                let text = t.render(&self.step, ctx)?;
                Step::parse(&text).ok_or_else(|| {
                    format!("do `{}`: use open, comment, resolve or close", text.trim())
                })?
            },
            close_code: self
                .close_code
                .as_ref()
                .map(|k| t.render(k, ctx))
                .transpose()?,
            auth: self.auth.clone(),
            timeout: self.timeout,
            secrets: self.secrets.clone(),
        })
    }
}

/// Jira's Atlassian Document Format: one paragraph per blank-line-separated block.
pub(super) fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| json!({"type": "paragraph", "content": [{"type": "text", "text": p}]}))
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

impl TicketCall {
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        ok: &[u16],
    ) -> HttpCall {
        let mut headers = vec![
            (self.auth.0.clone(), self.auth.1.clone()),
            ("Accept".into(), "application/json".into()),
        ];
        if self.system == System::Github {
            headers[1].1 = "application/vnd.github+json".into();
            headers.push(("X-GitHub-Api-Version".into(), "2022-11-28".into()));
        }
        if body.is_some() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        HttpCall {
            method: method.into(),
            url: format!("{}{path}", self.api_url.trim_end_matches('/')),
            headers,
            body: body.map(|b| b.to_string()),
            timeout: self.timeout,
            ok_statuses: ok.to_vec(),
            secrets: self.secrets.clone(),
        }
    }

    pub(super) fn project(&self) -> &str {
        self.project.as_deref().unwrap_or_default()
    }

    /// Opens a ticket, or comments on the open one with the same dedup key.
    pub async fn execute(&self, run: &RunContext, state: &dyn StateStore) -> Outcome {
        let Some(key) = &self.dedup_key else {
            return self.create(run).await;
        };
        if self.step != Step::Open {
            return self.follow_up(key, run, state).await;
        }
        let key = format!("ticket/{key}");
        let transient = |e: StoreError| Outcome {
            retryable: true,
            ..Outcome::failed(e.to_string())
        };
        let waited = std::time::Instant::now();
        // The revision of our claim once we hold it.
        let claim = loop {
            let current = match state.get(&key).await {
                Ok(c) => c,
                Err(e) => return transient(e),
            };
            let Some((text, rev)) = current else {
                let mine = serde_json::to_string(&TicketState::Claim {
                    run: run.run_id.clone(),
                })
                .unwrap_or_default();
                match state.create(&key, &mine, Some(CLAIM_TTL)).await {
                    Ok(rev) => break rev,
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return transient(e),
                }
            };
            match serde_json::from_str::<TicketState>(&text) {
                Ok(TicketState::Open(t)) if t.system == self.system.name() => {
                    match self.still_open(&t, run).await {
                        Err(o) => return o,
                        Ok(true) => return self.comment(&t, run).await,
                        Ok(false) => match state.delete(&key, Some(rev)).await {
                            Ok(()) | Err(StoreError::Conflict(_)) => continue,
                            Err(e) => return transient(e),
                        },
                    }
                }
                // A claim of this very run (it crashed while opening): open again, at least once.
                Ok(TicketState::Claim { run: r }) if r == run.run_id => break rev,
                Ok(TicketState::Claim { run: other }) => {
                    if waited.elapsed() > CLAIM_WAIT {
                        return Outcome {
                            retryable: true,
                            ..Outcome::failed(format!(
                                "run {other} is still opening the ticket for this dedup key"
                            ))
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Another system's ticket, or unreadable: this one replaces it.
                _ => {
                    let mine = serde_json::to_string(&TicketState::Claim {
                        run: run.run_id.clone(),
                    })
                    .unwrap_or_default();
                    match state.update(&key, &mine, rev, Some(CLAIM_TTL)).await {
                        Ok(rev) => break rev,
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return transient(e),
                    }
                }
            }
        };
        let mut out = self.create(run).await;
        if !out.ok {
            // Let the next one try.
            let _ = state.delete(&key, Some(claim)).await;
            return out;
        }
        if let Some(r) = &out.result {
            let t = Ticket {
                system: self.system.name().into(),
                id: r["ticket_id"].as_str().unwrap_or_default().into(),
                url: r["url"].as_str().unwrap_or_default().into(),
            };
            let text = serde_json::to_string(&TicketState::Open(t.clone())).unwrap_or_default();
            if let Err(e) = state.update(&key, &text, claim, None).await {
                out.ok = false;
                out.error = Some(format!("ticket {} opened but not recorded: {e}", t.url));
            }
        }
        out
    }

    async fn create(&self, run: &RunContext) -> Outcome {
        let p = self.project();
        let call = match self.system {
            System::Github => self.call(
                "POST",
                &format!("/repos/{p}/issues"),
                Some(json!({"title": self.title, "body": self.body, "labels": self.labels})),
                &[201],
            ),
            System::Gitlab => self.call(
                "POST",
                &format!("/api/v4/projects/{}/issues", urlencode(p)),
                Some(json!({"title": self.title, "description": self.body, "labels": self.labels.join(",")})),
                &[201],
            ),
            System::Jira => self.call(
                "POST",
                "/rest/api/3/issue",
                Some(json!({"fields": {
                    "project": {"key": p},
                    "summary": self.title,
                    "description": adf(&self.body),
                    "issuetype": {"name": self.issue_type.as_deref().unwrap_or("Task")},
                    "labels": self.labels,
                }})),
                &[201],
            ),
            System::Servicenow => self.call(
                "POST",
                "/api/now/table/incident",
                Some({
                    let mut v = json!({
                        "short_description": self.title,
                        "description": self.body,
                        "correlation_id": self.dedup_key.clone().unwrap_or_else(|| run.run_id.clone()),
                    });
                    if let Some(g) = &self.assignment_group {
                        v["assignment_group"] = json!(g);
                    }
                    v
                }),
                &[201],
            ),
        };
        let mut out = call.execute(run).await;
        if out.ok {
            let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            let base = self.api_url.trim_end_matches('/');
            let (id, url) = match self.system {
                System::Github => (
                    v["number"].to_string(),
                    v["html_url"].as_str().unwrap_or_default().to_string(),
                ),
                System::Gitlab => (
                    v["iid"].to_string(),
                    v["web_url"].as_str().unwrap_or_default().to_string(),
                ),
                System::Jira => {
                    let key = v["key"].as_str().unwrap_or_default().to_string();
                    (key.clone(), format!("{base}/browse/{key}"))
                }
                System::Servicenow => {
                    let id = v["result"]["sys_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    (
                        id.clone(),
                        format!("{base}/nav_to.do?uri=incident.do?sys_id={id}"),
                    )
                }
            };
            out.result = Some(
                json!({"ticket_id": id, "url": url, "system": self.system.name(), "commented": false}),
            );
        }
        out
    }

    /// Asks the system whether the ticket is still open.
    pub(super) async fn still_open(&self, t: &Ticket, run: &RunContext) -> Result<bool, Outcome> {
        let p = self.project();
        let call = match self.system {
            System::Github => {
                self.call("GET", &format!("/repos/{p}/issues/{}", t.id), None, &[200])
            }
            System::Gitlab => self.call(
                "GET",
                &format!("/api/v4/projects/{}/issues/{}", urlencode(p), t.id),
                None,
                &[200],
            ),
            System::Jira => self.call(
                "GET",
                &format!("/rest/api/3/issue/{}?fields=status", t.id),
                None,
                &[200],
            ),
            System::Servicenow => self.call(
                "GET",
                &format!("/api/now/table/incident/{}?sysparm_fields=state", t.id),
                None,
                &[200],
            ),
        };
        let out = call.execute(run).await;
        if out.status == Some(404) {
            return Ok(false);
        }
        if !out.ok {
            return Err(out);
        }
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        Ok(match self.system {
            System::Github => v["state"] == "open",
            System::Gitlab => v["state"] == "opened",
            System::Jira => v["fields"]["status"]["statusCategory"]["key"] != "done",
            // 6 resolved, 7 closed, 8 canceled
            System::Servicenow => !matches!(v["result"]["state"].as_str(), Some("6" | "7" | "8")),
        })
    }

    pub(super) async fn comment(&self, t: &Ticket, run: &RunContext) -> Outcome {
        let p = self.project();
        let text = format!("{}\n\n{}", self.title, self.body);
        let call = match self.system {
            System::Github => self.call(
                "POST",
                &format!("/repos/{p}/issues/{}/comments", t.id),
                Some(json!({"body": text})),
                &[201],
            ),
            System::Gitlab => self.call(
                "POST",
                &format!("/api/v4/projects/{}/issues/{}/notes", urlencode(p), t.id),
                Some(json!({"body": text})),
                &[201],
            ),
            System::Jira => self.call(
                "POST",
                &format!("/rest/api/3/issue/{}/comment", t.id),
                Some(json!({"body": adf(&text)})),
                &[201],
            ),
            System::Servicenow => self.call(
                "PATCH",
                &format!("/api/now/table/incident/{}", t.id),
                Some(json!({"work_notes": text})),
                &[200],
            ),
        };
        let mut out = call.execute(run).await;
        if out.ok {
            out.result = Some(
                json!({"ticket_id": t.id, "url": t.url, "system": t.system, "commented": true}),
            );
        }
        out
    }
}
