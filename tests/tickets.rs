//! Ticket lifecycle against local servers that keep tickets and answer as GitHub, GitLab, Jira
//! Cloud and ServiceNow do: a firing opens a ticket, a repeat comments on it, the resolved
//! event comments and resolves it by the system's own transition, and the next firing opens a
//! new one.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Env, Server, client, post_signed};
use serde_json::{Value, json};

/// One ticket as its system keeps it.
#[derive(Debug, Clone, Default)]
struct Kept {
    state: String,
    comments: usize,
}

#[derive(Clone, Default)]
struct Systems {
    /// (system, id) → ticket.
    tickets: Arc<Mutex<HashMap<(String, String), Kept>>>,
    base: Arc<Mutex<String>>,
}

fn j(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

async fn answer(State(s): State<Systems>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let base = s.base.lock().unwrap().clone();
    let mut t = s.tickets.lock().unwrap();
    let count = |sys: &str, t: &HashMap<(String, String), Kept>| {
        t.keys().filter(|(s, _)| s == sys).count() + 1
    };
    match (method.as_str(), seg.as_slice()) {
        // GitHub
        ("POST", ["repos", _, _, "issues"]) => {
            let n = count("github", &t);
            t.insert(
                ("github".into(), n.to_string()),
                Kept {
                    state: "open".into(),
                    comments: 0,
                },
            );
            j(
                StatusCode::CREATED,
                json!({"number": n, "html_url": format!("{base}/o/r/issues/{n}"), "state": "open"}),
            )
        }
        ("GET", ["repos", _, _, "issues", n]) => match t.get(&("github".into(), n.to_string())) {
            Some(k) => j(
                StatusCode::OK,
                json!({"number": n.parse::<u64>().unwrap_or(0), "state": k.state}),
            ),
            None => j(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
        },
        ("POST", ["repos", _, _, "issues", n, "comments"]) => {
            match t.get_mut(&("github".into(), n.to_string())) {
                Some(k) => {
                    k.comments += 1;
                    j(StatusCode::CREATED, json!({"id": 1}))
                }
                None => j(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("PATCH", ["repos", _, _, "issues", n]) => {
            let valid = matches!(v["state"].as_str(), Some("open" | "closed"))
                && matches!(
                    v["state_reason"].as_str(),
                    None | Some("completed" | "not_planned" | "reopened")
                );
            if !valid {
                return j(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"message": "Validation Failed"}),
                );
            }
            match t.get_mut(&("github".into(), n.to_string())) {
                Some(k) => {
                    k.state = v["state"].as_str().unwrap_or_default().into();
                    j(StatusCode::OK, json!({"state": k.state}))
                }
                None => j(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        // GitLab (the project path stays encoded: `g%2Fp`)
        ("POST", ["api", "v4", "projects", _, "issues"]) => {
            let n = count("gitlab", &t);
            t.insert(
                ("gitlab".into(), n.to_string()),
                Kept {
                    state: "opened".into(),
                    comments: 0,
                },
            );
            j(
                StatusCode::CREATED,
                json!({"iid": n, "web_url": format!("{base}/g/p/-/issues/{n}"), "state": "opened"}),
            )
        }
        ("GET", ["api", "v4", "projects", _, "issues", n]) => {
            match t.get(&("gitlab".into(), n.to_string())) {
                Some(k) => j(
                    StatusCode::OK,
                    json!({"iid": n.parse::<u64>().unwrap_or(0), "state": k.state}),
                ),
                None => j(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
            }
        }
        ("POST", ["api", "v4", "projects", _, "issues", n, "notes"]) => {
            match t.get_mut(&("gitlab".into(), n.to_string())) {
                Some(k) => {
                    k.comments += 1;
                    j(StatusCode::CREATED, json!({"id": 1}))
                }
                None => j(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
            }
        }
        ("PUT", ["api", "v4", "projects", _, "issues", n]) => {
            let next = match v["state_event"].as_str() {
                Some("close") => "closed",
                Some("reopen") => "opened",
                _ => {
                    return j(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "state_event does not have a valid value"}),
                    );
                }
            };
            match t.get_mut(&("gitlab".into(), n.to_string())) {
                Some(k) => {
                    k.state = next.into();
                    j(StatusCode::OK, json!({"state": next}))
                }
                None => j(StatusCode::NOT_FOUND, json!({"message": "404 Not found"})),
            }
        }
        // Jira Cloud
        ("POST", ["rest", "api", "3", "issue"]) => {
            let n = count("jira", &t);
            t.insert(
                ("jira".into(), format!("OPS-{n}")),
                Kept {
                    state: "To Do".into(),
                    comments: 0,
                },
            );
            j(
                StatusCode::CREATED,
                json!({"id": "1000", "key": format!("OPS-{n}"), "self": base}),
            )
        }
        ("GET", ["rest", "api", "3", "issue", key]) => {
            match t.get(&("jira".into(), key.to_string())) {
                Some(k) => {
                    let cat = if k.state == "Resolved" || k.state == "Done" {
                        "done"
                    } else {
                        "new"
                    };
                    j(
                        StatusCode::OK,
                        json!({"key": key, "fields": {"status": {"name": k.state, "statusCategory": {"key": cat}}}}),
                    )
                }
                None => j(
                    StatusCode::NOT_FOUND,
                    json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."]}),
                ),
            }
        }
        ("POST", ["rest", "api", "3", "issue", key, "comment"]) => {
            if v["body"]["type"] != "doc" {
                return j(
                    StatusCode::BAD_REQUEST,
                    json!({"errorMessages": ["Comment body is not valid!"]}),
                );
            }
            match t.get_mut(&("jira".into(), key.to_string())) {
                Some(k) => {
                    k.comments += 1;
                    j(StatusCode::CREATED, json!({"id": "1"}))
                }
                None => j(
                    StatusCode::NOT_FOUND,
                    json!({"errorMessages": ["Issue does not exist"]}),
                ),
            }
        }
        ("GET", ["rest", "api", "3", "issue", _, "transitions"]) => j(
            StatusCode::OK,
            json!({"transitions": [
                {"id": "11", "name": "Start progress", "to": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}}},
                {"id": "31", "name": "Done", "to": {"name": "Done", "statusCategory": {"key": "done"}}},
                {"id": "41", "name": "Resolve issue", "to": {"name": "Resolved", "statusCategory": {"key": "done"}}}
            ]}),
        ),
        ("POST", ["rest", "api", "3", "issue", key, "transitions"]) => {
            let to = match v["transition"]["id"].as_str() {
                Some("11") => "In Progress",
                Some("31") => "Done",
                Some("41") => "Resolved",
                other => {
                    return j(
                        StatusCode::BAD_REQUEST,
                        json!({"errorMessages": [format!("Transition id '{}' is not valid for this issue.", other.unwrap_or(""))]}),
                    );
                }
            };
            match t.get_mut(&("jira".into(), key.to_string())) {
                Some(k) => {
                    k.state = to.into();
                    StatusCode::NO_CONTENT.into_response()
                }
                None => j(
                    StatusCode::NOT_FOUND,
                    json!({"errorMessages": ["Issue does not exist"]}),
                ),
            }
        }
        // ServiceNow Table API
        ("POST", ["api", "now", "table", "incident"]) => {
            let n = count("servicenow", &t);
            let id = format!("sys{n:030}");
            t.insert(
                ("servicenow".into(), id.clone()),
                Kept {
                    state: "1".into(),
                    comments: 0,
                },
            );
            j(
                StatusCode::CREATED,
                json!({"result": {"sys_id": id, "number": format!("INC{n:07}"), "state": "1"}}),
            )
        }
        ("GET", ["api", "now", "table", "incident", id]) => {
            match t.get(&("servicenow".into(), id.to_string())) {
                Some(k) => j(StatusCode::OK, json!({"result": {"state": k.state}})),
                None => j(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"message": "No Record found"}, "status": "failure"}),
                ),
            }
        }
        ("PATCH", ["api", "now", "table", "incident", id]) => {
            let Some(k) = t.get_mut(&("servicenow".into(), id.to_string())) else {
                return j(
                    StatusCode::NOT_FOUND,
                    json!({"error": {"message": "No Record found"}, "status": "failure"}),
                );
            };
            if let Some(st) = v["state"].as_str() {
                // The default data policy: resolving or closing needs a close code and notes.
                let closing = st == "6" || st == "7";
                if closing
                    && (v["close_code"].as_str().is_none_or(str::is_empty)
                        || v["close_notes"].as_str().is_none_or(str::is_empty))
                {
                    return j(
                        StatusCode::FORBIDDEN,
                        json!({"error": {"message": "Operation Failed", "detail": "Data Policy Exception: Resolution code, Resolution notes are mandatory"}, "status": "failure"}),
                    );
                }
                k.state = st.into();
            }
            if v["work_notes"].is_string() {
                k.comments += 1;
            }
            j(
                StatusCode::OK,
                json!({"result": {"sys_id": id, "state": k.state}}),
            )
        }
        _ => j(
            StatusCode::NOT_FOUND,
            json!({"message": format!("no route {method} {path}")}),
        ),
    }
}

async fn start() -> (Systems, String) {
    let s = Systems::default();
    let app = axum::Router::new().fallback(answer).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    *s.base.lock().unwrap() = base.clone();
    (s, base)
}

async fn send(c: &reqwest::Client, server: &Server, body: &Value) -> String {
    let (st, resp) = post_signed(
        c,
        &server.url("/hooks/am"),
        "bearer",
        "am-token",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    resp["id"].as_str().unwrap().to_string()
}

async fn settled(c: &reqwest::Client, server: &Server, id: &str, jobs: usize) -> Value {
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
        let m = d["matches"].as_array().cloned().unwrap_or_default();
        if m.len() == jobs && m.iter().all(|j| j["status"] != "pending") {
            for j in &m {
                assert_eq!(j["status"], "done", "{d}");
            }
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_follows_the_incident_in_every_system() {
    let (systems, base) = start().await;
    let env = Env::new();
    let lifecycle = r#"do: '{% if event.status == "resolved" %}resolve{% else %}open{% endif %}'"#;
    // One dedup key per system: a key names one ticket.
    let common = |sys: &str| {
        format!(
            "title: '{{{{ event.alert }}}} on {{{{ event.device }}}}', body: 'status {{{{ event.status }}}}', dedup_key: '{sys}/{{{{ event.device }}}}/{{{{ event.alert }}}}', {lifecycle}, retries: 0"
        )
    };
    let (gh, gl, jr, sn) = (common("gh"), common("gl"), common("jira"), common("snow"));
    env.rulebook(
        "t.yml",
        &format!(
            r#"sources:
  - {{ name: am, kind: bearer, secret: am-token }}
rules:
  - name: gh
    actions: [{{ open_ticket: {{ system: github, api_url: '{base}', token: t0ken-gh, project: o/r, {gh} }} }}]
  - name: gl
    actions: [{{ open_ticket: {{ system: gitlab, api_url: '{base}', token: t0ken-gl, project: g/p, {gl} }} }}]
  - name: jira
    actions: [{{ open_ticket: {{ system: jira, api_url: '{base}', email: a@b.c, token: t0ken-j, project: OPS, {jr} }} }}]
  - name: snow
    actions: [{{ open_ticket: {{ system: servicenow, api_url: '{base}', username: u, password: pa55word, {sn} }} }}]
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let firing = json!({"status": "firing", "alert": "LinkDown", "device": "r1"});
    let resolved = json!({"status": "resolved", "alert": "LinkDown", "device": "r1"});
    let ids = |sys: &str| -> Vec<(String, Kept)> {
        let mut v: Vec<(String, Kept)> = systems
            .tickets
            .lock()
            .unwrap()
            .iter()
            .filter(|((s, _), _)| s == sys)
            .map(|((_, id), k)| (id.clone(), k.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    const SYSTEMS: [&str; 4] = ["github", "gitlab", "jira", "servicenow"];

    // Firing, then firing again: one ticket each, with one comment.
    let e = send(&c, &server, &firing).await;
    settled(&c, &server, &e, 4).await;
    let e = send(&c, &server, &firing).await;
    let d = settled(&c, &server, &e, 4).await;
    for j in d["matches"].as_array().unwrap() {
        assert_eq!(j["attempts"][0]["result"]["commented"], true, "{j}");
    }
    for sys in SYSTEMS {
        let t = ids(sys);
        assert_eq!(t.len(), 1, "{sys}: {t:?}");
        assert_eq!(t[0].1.comments, 1, "{sys}: {t:?}");
    }

    // Resolved: a comment, then each system's own transition.
    let e = send(&c, &server, &resolved).await;
    let d = settled(&c, &server, &e, 4).await;
    for j in d["matches"].as_array().unwrap() {
        assert_eq!(j["attempts"][0]["result"]["state"], "resolved", "{j}");
    }
    let want = [
        ("github", "closed"),
        ("gitlab", "closed"),
        ("jira", "Resolved"),
        ("servicenow", "6"),
    ];
    for (sys, state) in want {
        let t = ids(sys);
        assert_eq!(
            (t[0].1.state.as_str(), t[0].1.comments),
            (state, 2),
            "{sys}: {t:?}"
        );
    }

    // A second resolved event finds no open ticket: nothing to do, and no failure.
    let e = send(&c, &server, &resolved).await;
    let d = settled(&c, &server, &e, 4).await;
    for j in d["matches"].as_array().unwrap() {
        assert!(j["attempts"][0]["result"]["skipped"].is_string(), "{j}");
    }

    // It fires again: a new ticket in every system.
    let e = send(&c, &server, &firing).await;
    settled(&c, &server, &e, 4).await;
    for sys in SYSTEMS {
        assert_eq!(ids(sys).len(), 2, "{sys}");
    }
}

#[test]
fn a_lifecycle_step_needs_a_dedup_key_and_a_known_name() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "rules:\n  - name: r\n    actions:\n      - open_ticket: { system: github, token: x, project: o/r, title: t, do: resolve }\n      - open_ticket: { system: github, token: x, project: o/r, title: t, dedup_key: k, do: reslove }\n      - open_ticket: { system: github, token: x, project: o/r, title: t, dedup_key: k, close_code: x }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "t.yml:4:",
        "act on the ticket opened under a `dedup_key`",
        "t.yml:5:",
        "do `reslove`: use open, comment, resolve or close",
        "t.yml:6:",
        "`close_code` applies to `system: servicenow` only",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}
