//! `run_job_template` / `run_workflow_template` against a local server that answers like AWX's
//! documented API (`/api/v2/`): template lookup by name and organization, the launch
//! requirements (GET on `launch/`), the launch with `ignored_fields`, job details moving through
//! pending → running → a final status, job lists (without `extra_vars`, as current AWX), cancel,
//! and a launch whose 502 answer came after the job was created.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Env, Server, client, post_signed};
use serde_json::{Value, json};

const TOKEN: &str = "awx-token-0123456789";
/// A user who may read templates but not launch them.
const VIEWER: &str = "awx-viewer-0123456789";

#[derive(Clone)]
struct Template {
    id: u64,
    name: &'static str,
    organization: &'static str,
    workflow: bool,
    ask_variables: bool,
    ask_limit: bool,
    /// The launch answers `ignored_fields` for the extra variables anyway.
    ignores: bool,
    /// The first launch creates the job, then answers 502.
    bad_gateway_once: bool,
    /// A smaller API: no GET on `launch/`, no job list (404).
    minimal: bool,
}

#[derive(Clone)]
struct Job {
    id: u64,
    template: u64,
    workflow: bool,
    extra_vars: String,
    limit: String,
    created: SystemTime,
    /// Statuses it goes through, one per GET of its detail.
    statuses: Vec<&'static str>,
    at: usize,
    canceled: bool,
}

impl Job {
    fn status(&self) -> &'static str {
        if self.canceled {
            "canceled"
        } else {
            self.statuses[self.at.min(self.statuses.len() - 1)]
        }
    }
    fn json(&self, with_vars: bool) -> Value {
        let kind = if self.workflow { "workflow_job" } else { "job" };
        let mut v = json!({
            "id": self.id, "type": kind, "status": self.status(),
            "url": format!("/api/v2/{kind}s/{}/", self.id),
            "created": humantime::format_rfc3339_micros(self.created).to_string(),
            "limit": self.limit,
        });
        v[if self.workflow {
            "workflow_job_template"
        } else {
            "job_template"
        }] = json!(self.template);
        if with_vars {
            v["extra_vars"] = json!(self.extra_vars);
        }
        v
    }
}

#[derive(Default)]
struct Awx {
    templates: Vec<Template>,
    jobs: BTreeMap<u64, Job>,
    launches: u32,
    cancels: Vec<u64>,
    requests: Vec<String>,
    next: u64,
}

type Shared = Arc<Mutex<Awx>>;

fn answer(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut awx = s.lock().unwrap();
    awx.requests.push(format!("{method} {}", uri));
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let viewer = auth == Some(&format!("Bearer {VIEWER}"));
    if auth != Some(&format!("Bearer {TOKEN}")) && !viewer {
        return answer(
            401,
            json!({"detail": "Authentication credentials were not provided."}),
        );
    }
    if viewer && method == Method::POST {
        return answer(
            403,
            json!({"detail": "You do not have permission to perform this action."}),
        );
    }
    let minimal = awx.templates.iter().any(|t| t.minimal);
    let q = query(&uri);
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        (
            "GET",
            [
                "api",
                "v2",
                kind @ ("job_templates" | "workflow_job_templates"),
            ],
        ) => {
            let workflow = *kind == "workflow_job_templates";
            let results: Vec<Value> = awx
                .templates
                .iter()
                .filter(|t| t.workflow == workflow)
                .filter(|t| q.get("name").is_none_or(|n| n == t.name))
                .filter(|t| {
                    q.get("organization__name")
                        .is_none_or(|o| o == t.organization)
                })
                .map(|t| json!({"id": t.id, "name": t.name}))
                .collect();
            answer(200, json!({"count": results.len(), "results": results}))
        }
        (
            m,
            [
                "api",
                "v2",
                "job_templates" | "workflow_job_templates",
                id,
                "launch",
            ],
        ) => {
            let Some(t) = awx
                .templates
                .iter()
                .find(|t| t.id.to_string() == *id)
                .cloned()
            else {
                return answer(404, json!({"detail": "Not found."}));
            };
            if m == "GET" && t.minimal {
                return answer(404, json!({"detail": "Not found."}));
            }
            if m == "GET" {
                return answer(
                    200,
                    json!({
                        "ask_variables_on_launch": t.ask_variables,
                        "ask_limit_on_launch": t.ask_limit,
                        "can_start_without_user_input": true,
                        "variables_needed_to_start": [],
                    }),
                );
            }
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            awx.launches += 1;
            awx.next += 1;
            let jid = awx.next;
            let statuses = if matches!(
                sent["extra_vars"]["make_it_fail"].as_str(),
                Some("true" | "True")
            ) {
                vec!["pending", "running", "failed"]
            } else {
                vec!["pending", "running", "running", "successful"]
            };
            let mut ignored = serde_json::Map::new();
            let extra_vars = if t.ignores || !t.ask_variables {
                ignored.insert("extra_vars".into(), sent["extra_vars"].clone());
                "{}".to_string()
            } else {
                sent["extra_vars"].to_string()
            };
            let job = Job {
                id: jid,
                template: t.id,
                workflow: t.workflow,
                extra_vars,
                limit: sent["limit"].as_str().unwrap_or("").to_string(),
                created: SystemTime::now(),
                statuses,
                at: 0,
                canceled: false,
            };
            let mut out = job.json(true);
            awx.jobs.insert(jid, job);
            if t.bad_gateway_once && awx.launches == 1 {
                return answer(502, json!({"detail": "Bad Gateway"}));
            }
            out[if t.workflow { "workflow_job" } else { "job" }] = json!(jid);
            out["ignored_fields"] = Value::Object(ignored);
            answer(201, out)
        }
        ("GET", ["api", "v2", "jobs" | "workflow_jobs"]) if minimal => {
            answer(404, json!({"detail": "Not found."}))
        }
        ("GET", ["api", "v2", kind @ ("jobs" | "workflow_jobs")]) => {
            let workflow = *kind == "workflow_jobs";
            let filter = if workflow {
                "workflow_job_template"
            } else {
                "job_template"
            };
            let since = q
                .get("created__gte")
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let results: Vec<Value> = awx
                .jobs
                .values()
                .rev()
                .filter(|j| j.workflow == workflow)
                .filter(|j| q.get(filter).is_none_or(|t| *t == j.template.to_string()))
                .filter(|j| j.created >= since)
                .map(|j| j.json(false))
                .collect();
            answer(200, json!({"count": results.len(), "results": results}))
        }
        ("GET", ["api", "v2", "jobs" | "workflow_jobs", id]) => {
            let Some(j) = id.parse().ok().and_then(|i: u64| awx.jobs.get_mut(&i)) else {
                return answer(404, json!({"detail": "Not found."}));
            };
            j.at += 1;
            answer(200, j.json(true))
        }
        ("POST", ["api", "v2", "jobs" | "workflow_jobs", id, "cancel"]) => {
            let Some(j) = id.parse().ok().and_then(|i: u64| awx.jobs.get_mut(&i)) else {
                return answer(404, json!({"detail": "Not found."}));
            };
            j.canceled = true;
            let jid = j.id;
            awx.cancels.push(jid);
            answer(202, json!({}))
        }
        _ => answer(404, json!({"detail": "Not found."})),
    }
}

/// A fresh controller with these templates, on a loopback port.
async fn controller(templates: Vec<Template>) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Awx {
        templates,
        next: 100,
        ..Awx::default()
    }));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), state)
}

fn template(id: u64, name: &'static str) -> Template {
    Template {
        id,
        name,
        organization: "Default",
        workflow: false,
        ask_variables: true,
        ask_limit: true,
        ignores: false,
        bad_gateway_once: false,
        minimal: false,
    }
}

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

fn rulebook(env: &Env, url: &str, action: &str, fields: &str) {
    env.rulebook(
        "aap.yml",
        &format!(
            r#"{SRC}rules:
  - name: remediate
    actions:
      - {action}:
          url: {url}
          token: ${{env:AAP_TOKEN}}
          organization: Default
          limit: "{{{{ event.device }}}}"
          extra_vars: {{ticket: "{{{{ event.ticket }}}}", make_it_fail: "{{{{ event.fail | default(false) }}}}"}}
          timeout: 1m
{fields}"#
        ),
    );
}

async fn run(env: &Env, event: Value) -> (Value, Server) {
    let server = Server::start(env, &[], &[("AAP_TOKEN", TOKEN.to_string())]);
    let c = client();
    let (st, resp) = post_signed(
        &c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        event.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    let id = resp["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let d: Value = c
            .get(server.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(d["matches"][0]["status"].as_str(), Some("done" | "failed")) {
            return (d, server);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {d}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_template_is_found_launched_with_the_event_and_followed() {
    let (url, awx) = controller(vec![template(7, "Fix interface"), template(8, "Other")]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "INC42"})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "done", "{d}");
    let attempt = &job["attempts"][0];
    let r = &attempt["result"];
    assert_eq!(r["job_id"], 101, "{attempt}");
    assert_eq!(r["status"], "successful");
    assert_eq!(r["url"], format!("{url}/#/jobs/playbook/101/output"));
    assert!(
        !d.to_string().contains(TOKEN),
        "the token is in the history: {d}"
    );

    let awx = awx.lock().unwrap();
    assert_eq!(awx.launches, 1);
    let j = &awx.jobs[&101];
    assert_eq!(j.template, 7);
    assert_eq!(j.limit, "sw1");
    let vars: Value = serde_json::from_str(&j.extra_vars).unwrap();
    assert_eq!(vars["ticket"], "INC42");
    assert_eq!(vars["ansible_eda"]["event"]["device"], "sw1");
    assert_eq!(vars["ansible_eda"]["rule"], "remediate");
    assert_eq!(vars["ansible_eda"]["ruleset"], "aap");
    assert_eq!(vars["ansible_eda"]["run_id"], attempt["run_id"]);
    // It polled until the job ended.
    let polls = awx
        .requests
        .iter()
        .filter(|r| r.starts_with("GET /api/v2/jobs/101/"))
        .count();
    assert!(polls >= 3, "{:?}", awx.requests);
}

#[tokio::test]
async fn a_failed_job_fails_the_action() {
    let (url, _awx) = controller(vec![template(7, "Fix interface")]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n          retries: 0\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1", "fail": true})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    let e = job["attempts"][0]["error"].as_str().unwrap();
    assert!(e.contains("job 101 ended failed"), "{e}");
    assert_eq!(job["attempts"][0]["result"]["job_id"], 101);
}

#[tokio::test]
async fn a_template_that_would_ignore_the_event_is_not_launched() {
    let mut t = template(7, "Fix interface");
    t.ask_variables = false;
    let (url, awx) = controller(vec![t]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "not retried: {job}");
    let e = attempts[0]["error"].as_str().unwrap();
    assert!(e.contains("\"Prompt on launch\" for Variables"), "{e}");
    assert_eq!(awx.lock().unwrap().launches, 0);
}

#[tokio::test]
async fn a_launch_answering_ignored_fields_is_canceled_and_fails() {
    let mut t = template(7, "Fix interface");
    t.ignores = true;
    let (url, awx) = controller(vec![t]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    let e = job["attempts"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("Prompt on launch") && e.contains("job 101 was canceled"),
        "{e}"
    );
    let awx = awx.lock().unwrap();
    assert_eq!(awx.launches, 1);
    assert_eq!(awx.cancels, vec![101]);
}

#[tokio::test]
async fn a_502_after_the_job_was_created_does_not_start_a_second_job() {
    let mut t = template(7, "Fix interface");
    t.bad_gateway_once = true;
    let (url, awx) = controller(vec![t]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "done", "{d}");
    assert_eq!(job["attempts"][0]["result"]["job_id"], 101, "{job}");
    let awx = awx.lock().unwrap();
    assert_eq!(awx.launches, 1, "{:?}", awx.requests);
    assert_eq!(awx.jobs.len(), 1);
}

#[tokio::test]
async fn a_refused_token_and_an_unknown_template_fail_at_once_saying_what_to_fix() {
    let (url, awx) = controller(vec![template(7, "Fix interface")]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let server = Server::start(&env, &[], &[("AAP_TOKEN", "wrong-token-xyz".to_string())]);
    let c = client();
    let (_, resp) = post_signed(
        &c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        br#"{"device":"a","ticket":"1"}"#,
    )
    .await;
    let id = resp["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    let d = loop {
        let d: Value = c
            .get(server.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["matches"][0]["status"] == "failed" {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = d["matches"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 401 is not retried: {d}");
    let e = attempts[0]["error"].as_str().unwrap();
    assert!(
        e.contains("refused the credentials (401") && e.contains("check `token`"),
        "{e}"
    );
    assert_eq!(awx.lock().unwrap().launches, 0);
    drop(server);

    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix everything\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    let e = d["matches"][0]["attempts"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("no job template `Fix everything` in organization `Default` is visible"),
        "{e}"
    );
    assert_eq!(d["matches"][0]["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_workflow_template_is_launched_and_followed() {
    let mut t = template(9, "Remediate site");
    t.workflow = true;
    let (url, awx) = controller(vec![template(7, "Remediate site"), t]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_workflow_template",
        "          name: Remediate site\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "done", "{d}");
    let r = &job["attempts"][0]["result"];
    assert_eq!(r["template_id"], 9, "{r}");
    assert_eq!(r["url"], format!("{url}/#/jobs/workflow/101/output"));
    let awx = awx.lock().unwrap();
    assert!(awx.jobs[&101].workflow);
}

#[tokio::test]
async fn a_user_who_may_not_launch_is_told_which_role_is_missing() {
    let (url, awx) = controller(vec![template(7, "Fix interface")]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let server = Server::start(&env, &[], &[("AAP_TOKEN", VIEWER.to_string())]);
    let c = client();
    let (_, resp) = post_signed(
        &c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        br#"{"device":"a","ticket":"1"}"#,
    )
    .await;
    let id = resp["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    let d = loop {
        let d: Value = c
            .get(server.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if d["matches"][0]["status"] == "failed" {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let attempts = d["matches"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 403 is not retried: {d}");
    let e = attempts[0]["error"].as_str().unwrap();
    assert!(
        e.contains("answered 403") && e.contains("Execute role"),
        "{e}"
    );
    assert_eq!(awx.lock().unwrap().jobs.len(), 0);
}

#[tokio::test]
async fn a_smaller_api_without_launch_requirements_or_job_lists_still_works() {
    let mut t = template(7, "Fix interface");
    t.minimal = true;
    let mut ignoring = template(8, "Old template");
    ignoring.minimal = true;
    ignoring.ignores = true;
    let (url, awx) = controller(vec![t, ignoring]).await;
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Fix interface\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    assert_eq!(d["matches"][0]["status"], "done", "{d}");
    assert_eq!(d["matches"][0]["attempts"][0]["result"]["job_id"], 101);
    // Without the requirements, `ignored_fields` still stops a job that would run blind.
    let env = Env::new();
    rulebook(
        &env,
        &url,
        "run_job_template",
        "          name: Old template\n",
    );
    let (d, _server) = run(&env, json!({"device": "sw1", "ticket": "1"})).await;
    assert_eq!(d["matches"][0]["status"], "failed", "{d}");
    let e = d["matches"][0]["attempts"][0]["error"].as_str().unwrap();
    assert!(
        e.contains("Prompt on launch") && e.contains("job 102 was canceled"),
        "{e}"
    );
    assert_eq!(awx.lock().unwrap().cancels, vec![102]);
}
