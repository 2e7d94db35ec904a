//! `notify` against local servers that answer as Slack, Microsoft Teams and Webex incoming
//! webhooks and the PagerDuty Events API v2 do: each checks the payload its service requires
//! and answers with that service's status and body.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Env, Server, client, post_signed};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Services {
    /// (path, body) of every request, in order.
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// PagerDuty alerts by dedup key: their status.
    alerts: Arc<Mutex<HashMap<String, String>>>,
}

const PD_KEY: &str = "R0UTINGKEY0123456789abcdef012345";

async fn answer(State(s): State<Services>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.seen.lock().unwrap().push((path.clone(), v.clone()));
    if path.starts_with("/slack/") {
        // Slack: 200 `ok`, or 400 `invalid_payload` / `no_text`.
        if !json_type || !v.is_object() {
            return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
        }
        if v["text"].as_str().is_none_or(str::is_empty) {
            return (StatusCode::BAD_REQUEST, "no_text").into_response();
        }
        return (StatusCode::OK, "ok").into_response();
    }
    if path.starts_with("/teams/") {
        // A Teams workflow webhook: 202 for a message with an Adaptive Card.
        let card = &v["attachments"][0];
        let valid = v["type"] == "message"
            && card["contentType"] == "application/vnd.microsoft.card.adaptive"
            && card["content"]["type"] == "AdaptiveCard"
            && card["content"]["body"][0]["text"].is_string();
        return if valid {
            StatusCode::ACCEPTED.into_response()
        } else {
            (StatusCode::BAD_REQUEST, "Bad payload").into_response()
        };
    }
    if path.starts_with("/webex/v1/webhooks/incoming/") {
        // Webex: 204, or 400 with a message when neither text nor markdown is given.
        if v["text"].is_string() || v["markdown"].is_string() {
            return StatusCode::NO_CONTENT.into_response();
        }
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "Either text or markdown is required."})),
        )
            .into_response();
    }
    if path == "/pagerduty/v2/enqueue" {
        let invalid = |e: &str| {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"status": "invalid event", "message": "Event object is invalid", "errors": [e]})),
            )
                .into_response()
        };
        if v["routing_key"] != PD_KEY {
            return invalid("'routing_key' is invalid");
        }
        let action = v["event_action"].as_str().unwrap_or("");
        let key = v["dedup_key"].as_str().map(str::to_string);
        let mut alerts = s.alerts.lock().unwrap();
        let key = match action {
            "trigger" => {
                let p = &v["payload"];
                for f in ["summary", "source", "severity"] {
                    if p[f].as_str().is_none_or(str::is_empty) {
                        return invalid(&format!("'payload.{f}' is missing or blank"));
                    }
                }
                let key = key.unwrap_or_else(|| format!("pd-{}", alerts.len()));
                alerts.insert(key.clone(), "triggered".into());
                key
            }
            "acknowledge" | "resolve" => {
                let Some(key) = key else {
                    return invalid("'dedup_key' is missing");
                };
                let status = if action == "resolve" {
                    "resolved"
                } else {
                    "acknowledged"
                };
                alerts.insert(key.clone(), status.into());
                key
            }
            _ => return invalid("'event_action' is invalid"),
        };
        return (
            StatusCode::ACCEPTED,
            axum::Json(
                json!({"status": "success", "message": "Event processed", "dedup_key": key}),
            ),
        )
            .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn start() -> (Services, String) {
    let s = Services::default();
    let app = axum::Router::new().fallback(answer).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (s, format!("http://{addr}"))
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

/// Waits until every job of the event has finished; returns the event detail.
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
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_speaks_slack_teams_webex_and_pagerduty() {
    let (services, base) = start().await;
    let env = Env::new();
    env.rulebook(
        "n.yml",
        &format!(
            r#"sources:
  - {{ name: am, kind: bearer, secret: am-token }}
rules:
  - name: chat
    condition: '$.status == "firing"'
    actions:
      - notify: {{ to: slack, url: '{base}/slack/T0/B0/s3cr3tpart', text: '{{{{ event.alert }}}} on {{{{ event.device }}}}' }}
      - notify: {{ to: teams, url: '{base}/teams/hook', text: '{{{{ event.alert }}}} on {{{{ event.device }}}}' }}
      - notify: {{ to: webex, url: '{base}/webex/v1/webhooks/incoming/abc', text: '**{{{{ event.alert }}}}** on {{{{ event.device }}}}' }}
  - name: page
    actions:
      - notify:
          to: pagerduty
          url: '{base}/pagerduty/v2/enqueue'
          routing_key: '${{env:PD_KEY}}'
          event_action: '{{% if event.status == "resolved" %}}resolve{{% elif event.status == "acknowledged" %}}acknowledge{{% else %}}trigger{{% endif %}}'
          dedup_key: '{{{{ event.device }}}}/{{{{ event.alert }}}}'
          text: '{{{{ event.alert }}}} on {{{{ event.device }}}}'
          severity: critical
          source: '{{{{ event.device }}}}'
"#
        ),
    );
    let server = Server::start(&env, &[], &[("PD_KEY", PD_KEY.to_string())]);
    let c = client();
    let fire = send(
        &c,
        &server,
        &json!({"status": "firing", "alert": "LinkDown", "device": "r1"}),
    )
    .await;
    let d = settled(&c, &server, &fire, 2).await;
    for j in d["matches"].as_array().unwrap() {
        assert_eq!(j["status"], "done", "{d}");
    }
    let seen = services.seen.lock().unwrap().clone();
    let body = |prefix: &str| {
        seen.iter()
            .find(|(p, _)| p.starts_with(prefix))
            .unwrap_or_else(|| panic!("nothing sent to {prefix}: {seen:?}"))
            .1
            .clone()
    };
    assert_eq!(body("/slack/"), json!({"text": "LinkDown on r1"}));
    assert_eq!(
        body("/teams/")["attachments"][0]["content"]["body"][0]["text"],
        "LinkDown on r1"
    );
    assert_eq!(body("/webex/"), json!({"markdown": "**LinkDown** on r1"}));
    let pd = body("/pagerduty/");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"], "r1/LinkDown");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(services.alerts.lock().unwrap()["r1/LinkDown"], "triggered");
    // The webhook URL and the routing key are credentials: masked in the history.
    let shown = d.to_string();
    assert!(
        !shown.contains("s3cr3tpart") && !shown.contains(PD_KEY),
        "{shown}"
    );

    // Acknowledged, then resolved: the same alert, by its key, with no payload.
    for (status, want) in [("acknowledged", "acknowledged"), ("resolved", "resolved")] {
        let id = send(
            &c,
            &server,
            &json!({"status": status, "alert": "LinkDown", "device": "r1"}),
        )
        .await;
        let d = settled(&c, &server, &id, 1).await;
        assert_eq!(d["matches"][0]["status"], "done", "{d}");
        assert_eq!(services.alerts.lock().unwrap()["r1/LinkDown"], want);
    }
    let seen = services.seen.lock().unwrap().clone();
    let last = &seen.last().unwrap().1;
    assert_eq!(last["event_action"], "resolve");
    assert!(last.get("payload").is_none(), "{last}");
    assert_eq!(
        services.alerts.lock().unwrap().len(),
        1,
        "one alert, not three"
    );
}

/// A service that refuses the message fails the action with its answer in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_fails_with_the_services_answer() {
    let (_services, base) = start().await;
    let env = Env::new();
    env.rulebook(
        "n.yml",
        &format!(
            r#"sources:
  - {{ name: am, kind: bearer, secret: am-token }}
rules:
  - name: chat
    actions:
      - notify: {{ to: slack, url: '{base}/slack/T0/B0/x', text: '{{{{ event.note | default("") }}}}', retries: 0 }}
"#
        ),
    );
    let server = Server::start(&env, &[], &[]);
    let c = client();
    let id = send(&c, &server, &json!({"status": "firing"})).await;
    let d = settled(&c, &server, &id, 1).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    assert_eq!(job["attempts"][0]["http_status"], 400, "{d}");
    assert_eq!(job["attempts"][0]["stdout"], "no_text", "{d}");
}

#[test]
fn notify_mistakes_are_load_errors_at_their_place() {
    let env = Env::new();
    env.rulebook(
        "n.yml",
        "rules:\n  - name: r\n    actions:\n      - notify: { to: slak, url: 'http://x', text: hi }\n      - notify: { to: pagerduty, text: hi }\n      - notify: { to: slack, text: hi }\n      - notify: { to: pagerduty, routing_key: k, event_action: fire, text: hi }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "n.yml:4:",
        "notify to `slak`: use one of slack, teams, webex, pagerduty",
        "n.yml:5:",
        "needs `routing_key`",
        "n.yml:6:",
        "notify to slack needs `url`",
        "n.yml:7:",
        "event_action `fire`: use trigger, acknowledge or resolve",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}
