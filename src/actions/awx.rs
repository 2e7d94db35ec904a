//! `run_job_template` and `run_workflow_template`: launch a template on AWX or Ansible
//! Automation Platform's controller through its documented API (`/api/v2/`) and follow the job
//! to its end.
//!
//! The event reaches the job as `ansible_eda` in the extra variables, as the EDA controller
//! passes it. A template that would ignore them (its "Prompt on launch" is off) fails before
//! anything runs. The controller has no idempotency key, so every launch carries the run id in
//! its extra variables: before launching, and after a launch whose answer was lost, the jobs of
//! the template created since the event came in are searched for it, and a job found is
//! followed instead of starting a second one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ansible::ansible_eda;
use super::http::{client, error_chain};
use super::outbound::urlencode;
use super::ticket::basic;
use super::{Outcome, RunContext};
use crate::rulebook::ansible::JobTemplateSpec;
use crate::rulebook::compile::Compile;
use crate::templates::{TValue, Templates, Text};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const DEFAULT_RETRIES: u32 = 2;
/// Each request to the controller.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Polling starts at 1 s and backs off to this.
const POLL_MAX: Duration = Duration::from_secs(15);
const FINISHED: &[&str] = &["successful", "failed", "error", "canceled"];

/// A compiled `run_job_template` / `run_workflow_template`.
#[derive(Debug)]
pub struct AwxAction {
    workflow: bool,
    /// The API root (`https://aap.example.com/api/v2`).
    api: String,
    /// The controller's base URL, for links to the job.
    base: String,
    name: Option<String>,
    id: Option<u64>,
    organization: Option<String>,
    limit: Option<Text>,
    extra_vars: Option<TValue>,
    auth: String,
    timeout: Duration,
    pub retries: u32,
}

/// A rendered launch: what is sent (the credential is not kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AwxLaunch {
    pub kind: String,
    pub api: String,
    pub base: String,
    pub name: Option<String>,
    pub id: Option<u64>,
    pub organization: Option<String>,
    pub limit: Option<String>,
    pub extra_vars: Value,
    #[serde(with = "super::script::millis")]
    pub timeout: Duration,
    #[serde(skip)]
    pub auth: String,
}

/// `url`: the base URL, or an API root ending in `/v2` (AAP 2.5's `…/api/controller/v2`).
fn api_root(url: &str) -> (String, String) {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v2") {
        let base = url.find("/api/").map_or(url, |i| &url[..i]);
        (url.to_string(), base.to_string())
    } else {
        (format!("{url}/api/v2"), url.to_string())
    }
}

/// `run_job_template:` / `run_workflow_template:` compiled.
pub(crate) fn compile(
    cx: &mut Compile,
    s: &JobTemplateSpec,
    workflow: bool,
    prefix: &str,
    t: &mut Templates,
) -> Option<AwxAction> {
    let url = cx.api_url(Some(&s.url), "")?;
    let (api, base) = api_root(&url);
    let auth = match (&s.token, &s.username, &s.password) {
        (Some(tok), None, None) => format!("Bearer {}", cx.secret(tok, "token")?.expose()),
        (None, Some(u), Some(p)) => {
            let (u, p) = (cx.secret(u, "username")?, cx.secret(p, "password")?);
            basic(u.expose(), p.expose())
        }
        _ => {
            cx.err(
                &s.url.referenced,
                "give `token`, or `username` and `password`",
            );
            return None;
        }
    };
    let name = match (&s.name, &s.id) {
        (Some(n), None) => Some(cx.expand(n, "name")?),
        (None, Some(_)) => None,
        _ => {
            cx.err(&s.url.referenced, "give the template's `name` or its `id`");
            return None;
        }
    };
    let organization = match &s.organization {
        Some(o) => Some(cx.expand(o, "organization")?),
        None => None,
    };
    let limit = match &s.limit {
        Some(l) => Some(cx.template(t, format!("{prefix}/limit"), l, "limit")?),
        None => None,
    };
    let extra_vars = super::ansible::compile_extra_vars(cx, s.extra_vars.as_ref(), prefix, t)?;
    Some(AwxAction {
        workflow,
        api,
        base,
        name,
        id: s.id.as_ref().map(|i| i.value),
        organization,
        limit,
        extra_vars,
        auth,
        timeout: cx.timeout_or(s.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        retries: s.retries.unwrap_or(DEFAULT_RETRIES),
    })
}

impl AwxAction {
    pub fn kind(&self) -> &'static str {
        if self.workflow {
            "run_workflow_template"
        } else {
            "run_job_template"
        }
    }

    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<AwxLaunch, String> {
        Ok(AwxLaunch {
            kind: self.kind().into(),
            api: self.api.clone(),
            base: self.base.clone(),
            name: self.name.clone(),
            id: self.id,
            organization: self.organization.clone(),
            limit: self
                .limit
                .as_ref()
                .map(|l| t.render(l, ctx))
                .transpose()?
                .filter(|l| !l.trim().is_empty()),
            extra_vars: match &self.extra_vars {
                Some(v) => v.render(t, ctx)?,
                None => json!({}),
            },
            timeout: self.timeout,
            auth: self.auth.clone(),
        })
    }
}

/// Why a step stopped: worth another attempt (`Transient`), or not.
#[derive(Debug)]
enum Stop {
    Transient(String),
    Fatal(String),
    /// 404: fatal, except where an API older (or smaller) than AWX's lacks an optional read.
    Absent(String),
}

impl Stop {
    fn outcome(self) -> Outcome {
        match self {
            Stop::Transient(m) => Outcome {
                retryable: true,
                ..Outcome::failed(m)
            },
            Stop::Fatal(m) | Stop::Absent(m) => Outcome::failed(m),
        }
    }
}

/// The paths of one template family.
struct Paths {
    templates: &'static str,
    jobs: &'static str,
    filter: &'static str,
    ui: &'static str,
}

impl AwxLaunch {
    fn workflow(&self) -> bool {
        self.kind == "run_workflow_template"
    }

    fn paths(&self) -> Paths {
        if self.workflow() {
            Paths {
                templates: "workflow_job_templates",
                jobs: "workflow_jobs",
                filter: "workflow_job_template",
                ui: "workflow",
            }
        } else {
            Paths {
                templates: "job_templates",
                jobs: "jobs",
                filter: "job_template",
                ui: "playbook",
            }
        }
    }

    fn what(&self) -> String {
        let kind = if self.workflow() {
            "workflow job template"
        } else {
            "job template"
        };
        match (&self.name, self.id) {
            (Some(n), _) => format!("{kind} `{n}`"),
            (None, Some(id)) => format!("{kind} {id}"),
            _ => kind.to_string(),
        }
    }

    /// One request; 401/403/404 are fatal with what to fix, 5xx and lost answers transient.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Stop> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{}", self.api, path.trim_start_matches('/'))
        };
        let mut req = client()
            .request(method.clone(), &url)
            .timeout(REQUEST_TIMEOUT)
            .header("Authorization", &self.auth)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Stop::Transient(format!("{method} {url} failed: {}", error_chain(&e))))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let detail = || {
            value["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        };
        match status {
            200..=299 => Ok((status, value)),
            401 => Err(Stop::Fatal(format!(
                "the controller at {} refused the credentials (401{}): check `token` (or `username`/`password`)",
                self.base,
                detail()
            ))),
            403 => Err(Stop::Fatal(format!(
                "the controller answered 403 to {method} {url}{}: the user lacks a permission on {} (launching needs its Execute role)",
                detail(),
                self.what()
            ))),
            404 => Err(Stop::Absent(format!(
                "the controller answered 404 to {method} {url}: check `url` (the controller's base URL) and the template's name or id"
            ))),
            408 | 429 | 500..=599 => {
                Err(Stop::Transient(format!("{method} {url} answered {status}")))
            }
            _ => Err(Stop::Fatal(format!(
                "{method} {url} answered {status}: {}",
                crate::secrets::mask(&value.to_string())
            ))),
        }
    }

    /// The template's id: given, or found by name (and organization).
    async fn template_id(&self) -> Result<u64, Stop> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let name = self.name.as_deref().unwrap_or_default();
        let mut path = format!("{}/?name={}", self.paths().templates, urlencode(name));
        if let Some(o) = &self.organization {
            path.push_str(&format!("&organization__name={}", urlencode(o)));
        }
        let (_, v) = self.call(reqwest::Method::GET, &path, None).await?;
        // Only exact names (and the organization, where the answer names it).
        let found: Vec<Value> = v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t.get("name").is_none_or(|n| n == name))
            .filter(|t| {
                let org = t.pointer("/summary_fields/organization/name");
                match (&self.organization, org) {
                    (Some(o), Some(x)) => x == o,
                    _ => true,
                }
            })
            .cloned()
            .collect();
        let inside = match &self.organization {
            Some(o) => format!(" in organization `{o}`"),
            None => String::new(),
        };
        match found.as_slice() {
            [one] => one["id"].as_u64().ok_or_else(|| {
                Stop::Fatal(format!(
                    "the controller's answer for {} has no id",
                    self.what()
                ))
            }),
            [] => Err(Stop::Fatal(format!(
                "no {}{inside} is visible to this user",
                self.what()
            ))),
            many => Err(Stop::Fatal(format!(
                "{} {}s{inside}: give `organization` or the template's `id`",
                many.len(),
                self.what()
            ))),
        }
    }

    /// Fails unless the template takes our extra variables (and limit) at launch.
    async fn check_prompts(&self, id: u64) -> Result<(), Stop> {
        let path = format!("{}/{id}/launch/", self.paths().templates);
        let v = match self.call(reqwest::Method::GET, &path, None).await {
            Ok((_, v)) => v,
            // Without the launch requirements, the launch's `ignored_fields` still guards.
            Err(Stop::Absent(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut off = Vec::new();
        if v["ask_variables_on_launch"] != json!(true) {
            off.push("Variables");
        }
        if self.limit.is_some() && v["ask_limit_on_launch"] != json!(true) {
            off.push("Limit");
        }
        if off.is_empty() {
            return Ok(());
        }
        Err(Stop::Fatal(self.prompt_message(&off)))
    }

    fn prompt_message(&self, fields: &[&str]) -> String {
        format!(
            "{} would ignore the event: turn on \"Prompt on launch\" for {} in the template (without it the controller drops extra_vars, so the job would run without ansible_eda)",
            self.what(),
            fields.join(" and ")
        )
    }

    /// The job of template `id` that carries this run id, created since the event came in.
    async fn find_ours(&self, id: u64, run: &RunContext) -> Result<Option<Value>, Stop> {
        let p = self.paths();
        let since = run
            .input
            .pointer("/meta/received_at")
            .and_then(Value::as_str)
            .unwrap_or("1970-01-01T00:00:00Z");
        let path = format!(
            "{}/?{}={id}&created__gte={}&order_by=-id&page_size=50",
            p.jobs,
            p.filter,
            urlencode(since)
        );
        let (_, v) = self.call(reqwest::Method::GET, &path, None).await?;
        for job in v["results"].as_array().cloned().unwrap_or_default() {
            // Newer controllers leave `extra_vars` out of lists: read the job itself then.
            let vars = match job.get("extra_vars") {
                Some(x) => x.clone(),
                None => {
                    let jid = job["id"].as_u64().unwrap_or_default();
                    let (_, detail) = self
                        .call(reqwest::Method::GET, &format!("{}/{jid}/", p.jobs), None)
                        .await?;
                    detail["extra_vars"].clone()
                }
            };
            let text = match vars {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if text.contains(&run.run_id) {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    fn job_result(&self, job: &Value, template: u64) -> Value {
        let id = job["id"].as_u64().unwrap_or_default();
        json!({
            "template_id": template,
            "job_id": id,
            "status": job["status"],
            "url": format!("{}/#/jobs/{}/{id}/output", self.base, self.paths().ui),
            "api_url": format!("{}/{}/{id}/", self.api, self.paths().jobs),
        })
    }

    pub async fn execute(&self, run: &RunContext) -> Outcome {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let template = match self.template_id().await {
            Ok(id) => id,
            Err(s) => return s.outcome(),
        };
        // A job of an earlier attempt that is running or succeeded is this run's job.
        let earlier = match self.find_ours(template, run).await {
            // No job list to search: nothing can be found there, so none was launched.
            Err(Stop::Absent(_)) => None,
            Ok(j) => {
                j.filter(|j| !matches!(j["status"].as_str(), Some("failed" | "error" | "canceled")))
            }
            Err(s) => return s.outcome(),
        };
        let job = match earlier {
            Some(j) => j,
            None => match self.launch(template, run).await {
                Ok(j) => j,
                Err(s) => return s.outcome(),
            },
        };
        self.follow(template, job, deadline).await
    }

    /// Launches; a lost answer is followed by a search for the job it may have started.
    async fn launch(&self, template: u64, run: &RunContext) -> Result<Value, Stop> {
        self.check_prompts(template).await?;
        let mut vars = match &self.extra_vars {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        vars.insert("ansible_eda".into(), ansible_eda(run));
        let mut body = json!({ "extra_vars": vars });
        if let Some(l) = &self.limit {
            body["limit"] = json!(l);
        }
        let path = format!("{}/{template}/launch/", self.paths().templates);
        match self.call(reqwest::Method::POST, &path, Some(&body)).await {
            Ok((_, mut answer)) => {
                let ignored: Vec<String> = answer["ignored_fields"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                let jid = ["id", "job", "workflow_job"]
                    .iter()
                    .find_map(|k| answer[*k].as_u64())
                    .unwrap_or_default();
                answer["id"] = json!(jid);
                if !ignored.is_empty() {
                    // It started without the event: stop it before it changes anything.
                    let cancel = format!("{}/{jid}/cancel/", self.paths().jobs);
                    let _ = self.call(reqwest::Method::POST, &cancel, None).await;
                    let names: Vec<&str> = ignored
                        .iter()
                        .map(|f| match f.as_str() {
                            "extra_vars" => "Variables",
                            "limit" => "Limit",
                            other => other,
                        })
                        .collect();
                    return Err(Stop::Fatal(format!(
                        "{} (the launch ignored {}; job {jid} was canceled)",
                        self.prompt_message(&names),
                        ignored.join(", ")
                    )));
                }
                Ok(answer)
            }
            Err(Stop::Transient(lost)) => {
                // The job may exist even though the answer was lost: look before launching again.
                for wait in [0u64, 1, 2] {
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                    match self.find_ours(template, run).await {
                        Ok(Some(job)) => return Ok(job),
                        Ok(None) => {}
                        // No job list to search: the next attempt launches again.
                        Err(Stop::Absent(_)) => break,
                        Err(e) => return Err(e),
                    }
                }
                Err(Stop::Transient(format!(
                    "{lost}; no job of {} carries run {}, so it will be launched again",
                    self.what(),
                    run.run_id
                )))
            }
            Err(fatal) => Err(fatal),
        }
    }

    /// Polls the job (1 s, backing off) until it finishes or the timeout passes.
    async fn follow(
        &self,
        template: u64,
        mut job: Value,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let jid = job["id"].as_u64().unwrap_or_default();
        let path = format!("{}/{jid}/", self.paths().jobs);
        let mut interval = Duration::from_secs(1);
        let mut last_error = None;
        loop {
            let status = job["status"].as_str().unwrap_or("").to_string();
            if FINISHED.contains(&status.as_str()) {
                let result = self.job_result(&job, template);
                let ok = status == "successful";
                return Outcome {
                    ok,
                    error: (!ok).then(|| {
                        format!(
                            "{} job {jid} ended {status}: {}",
                            self.what(),
                            result["url"].as_str().unwrap_or_default()
                        )
                    }),
                    retryable: true,
                    result: Some(result),
                    ..Outcome::default()
                };
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let result = self.job_result(&job, template);
                let why = last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Outcome {
                    error: Some(format!(
                        "job {jid} is still {status} after {}; it was left running and a retry follows it{why}",
                        humantime::format_duration(self.timeout)
                    )),
                    retryable: true,
                    result: Some(result),
                    ..Outcome::default()
                };
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval.mul_f64(1.5)).min(POLL_MAX);
            match self.call(reqwest::Method::GET, &path, None).await {
                Ok((_, v)) => job = v,
                Err(Stop::Transient(e)) => last_error = Some(e),
                Err(Stop::Fatal(e) | Stop::Absent(e)) => {
                    return Outcome {
                        result: Some(self.job_result(&job, template)),
                        ..Outcome::failed(e)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_root_comes_from_the_base_url_or_is_given() {
        assert_eq!(
            api_root("https://aap.example.com/"),
            (
                "https://aap.example.com/api/v2".into(),
                "https://aap.example.com".into()
            )
        );
        assert_eq!(
            api_root("https://aap.example.com/api/controller/v2"),
            (
                "https://aap.example.com/api/controller/v2".into(),
                "https://aap.example.com".into()
            )
        );
    }
}
