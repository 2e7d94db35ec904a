//! `notify:` — a message where operators look, compiled to one templated HTTP request in the
//! format each service takes: Slack and Webex incoming webhooks (`text` / `markdown`),
//! Microsoft Teams incoming webhooks (a message with an Adaptive Card), and PagerDuty Events
//! API v2 (`trigger`, `acknowledge`, `resolve` one alert by its `dedup_key`).

use serde_json::{Value, json};

use super::outbound::{Body, DEFAULT_RETRIES, DEFAULT_TIMEOUT, HttpAction};
use crate::rulebook::compile::{Compile, spanned_like};
use crate::rulebook::model::NotifySpec;
use crate::templates::{TValue, Templates};

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

const SERVICES: &[&str] = &["slack", "teams", "webex", "pagerduty"];
const EVENT_ACTIONS: &[&str] = &["trigger", "acknowledge", "resolve"];
const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// `notify:` compiled to its HTTP request.
pub(crate) fn compile(
    cx: &mut Compile,
    n: &NotifySpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<HttpAction> {
    let to = n.to.value.as_str();
    if !SERVICES.contains(&to) {
        cx.err(
            &n.to.referenced,
            format!("notify to `{to}`: use one of {}", SERVICES.join(", ")),
        );
        return None;
    }
    let text = |cx: &mut Compile| match &n.text {
        Some(s) => Some(s.clone()),
        None => {
            cx.err(
                &n.to.referenced,
                format!("notify to {to} needs `text`, the message"),
            );
            None
        }
    };
    let mut secrets = Vec::new();
    let (url, body, ok) = if to == "pagerduty" {
        let Some(key) = &n.routing_key else {
            cx.err(
                &n.to.referenced,
                "notify to pagerduty needs `routing_key` (the integration key of an Events API v2 integration)",
            );
            return None;
        };
        let key = cx.secret(key, "routing_key")?;
        secrets.push(key.expose().to_string());
        let action = n
            .event_action
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_else(|| "trigger".into());
        let templated = |v: &str| v.contains("{{") || v.contains("{%");
        if !templated(&action) && !EVENT_ACTIONS.contains(&action.as_str()) {
            let at = n.event_action.as_ref().unwrap_or(&n.to);
            cx.err(
                &at.referenced,
                format!("event_action `{action}`: use trigger, acknowledge or resolve"),
            );
            return None;
        }
        let severity = n
            .severity
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_else(|| "error".into());
        if !templated(&severity) && !SEVERITIES.contains(&severity.as_str()) {
            let at = n.severity.as_ref().unwrap_or(&n.to);
            cx.err(
                &at.referenced,
                format!(
                    "severity `{severity}`: use one of {}",
                    SEVERITIES.join(", ")
                ),
            );
            return None;
        }
        if action == "trigger" && n.text.is_none() {
            text(cx)?;
        }
        let body = json!({
            "routing_key": key.expose(),
            "event_action": action,
            "dedup_key": n.dedup_key.as_ref().map(|d| d.value.clone()).unwrap_or_default(),
            "payload": {
                "summary": n.text.as_ref().map(|d| d.value.clone()).unwrap_or_default(),
                "source": n.source.as_ref().map(|d| d.value.clone()).unwrap_or_else(|| "rulehook".into()),
                "severity": severity,
            },
        });
        let url = match &n.url {
            Some(u) => u.clone(),
            None => spanned_like(&n.to, PAGERDUTY_EVENTS.to_string()),
        };
        (url, body, vec![202])
    } else {
        let Some(url) = &n.url else {
            cx.err(
                &n.to.referenced,
                format!("notify to {to} needs `url`, the incoming webhook's URL"),
            );
            return None;
        };
        let text = text(cx)?.value;
        let body = match to {
            "slack" => json!({"text": text}),
            "webex" => json!({"markdown": text}),
            _ => json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [{"type": "TextBlock", "text": text, "wrap": true}],
                    },
                }],
            }),
        };
        (url.clone(), body, Vec::new())
    };
    let mark = cx.referenced.len();
    let url_text = cx.template(t, format!("{prefix}/url"), &url, "url")?;
    // The webhook URL is the credential of an incoming webhook: masked wherever shown.
    secrets.extend(cx.referenced.drain(mark..));
    if to != "pagerduty" && !url.value.contains("${") && !url.value.contains("{{") {
        secrets.push(url.value.clone());
    }
    let body = TValue::compile(t, &format!("{prefix}/body"), &body)
        .map_err(|m| cx.err(&n.to.referenced, format!("template error: {m}")))
        .ok()?;
    Some(HttpAction {
        kind: "notify",
        method: "POST".into(),
        url: url_text,
        headers: Vec::new(),
        body: if to == "pagerduty" {
            Body::PagerDuty(body)
        } else {
            Body::Json(body)
        },
        content_type: Some("application/json".into()),
        timeout: cx.timeout_or(n.timeout.as_ref(), DEFAULT_TIMEOUT)?,
        retries: n.retries.unwrap_or(DEFAULT_RETRIES),
        ok_statuses: ok,
        secrets,
    })
}

/// A rendered PagerDuty event made valid for its action: `acknowledge` and `resolve` carry
/// no payload and need the `dedup_key` of the alert; a `trigger` without a key lets PagerDuty
/// make one.
pub fn finish_pagerduty(body: &mut Value) -> Result<(), String> {
    let action = body["event_action"]
        .as_str()
        .unwrap_or("")
        .trim()
        .to_string();
    if !EVENT_ACTIONS.contains(&action.as_str()) {
        return Err(format!(
            "PagerDuty event_action `{action}`: use trigger, acknowledge or resolve"
        ));
    }
    body["event_action"] = Value::String(action.clone());
    let key_empty = body["dedup_key"]
        .as_str()
        .is_none_or(|k| k.trim().is_empty());
    let Some(obj) = body.as_object_mut() else {
        return Err("the PagerDuty event is not an object".into());
    };
    if action == "trigger" {
        if key_empty {
            obj.remove("dedup_key");
        }
        let summary = obj["payload"]["summary"].as_str().unwrap_or("").trim();
        if summary.is_empty() {
            return Err("a PagerDuty trigger needs a summary: `text` rendered empty".into());
        }
        let severity = obj["payload"]["severity"].as_str().unwrap_or("");
        if !SEVERITIES.contains(&severity) {
            return Err(format!(
                "PagerDuty severity `{severity}`: use one of {}",
                SEVERITIES.join(", ")
            ));
        }
    } else {
        if key_empty {
            return Err(format!(
                "a PagerDuty {action} needs the `dedup_key` of the alert it {action}s"
            ));
        }
        obj.remove("payload");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pagerduty_event_fits_its_action() {
        let mut e = json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "r1",
            "payload": {"summary": "x", "source": "s", "severity": "error"}});
        finish_pagerduty(&mut e).unwrap();
        assert!(e.get("payload").is_none(), "{e}");
        let mut e = json!({"routing_key": "k", "event_action": "acknowledge", "dedup_key": "",
            "payload": {"summary": "x", "source": "s", "severity": "error"}});
        assert!(finish_pagerduty(&mut e).unwrap_err().contains("dedup_key"));
        let mut e = json!({"routing_key": "k", "event_action": "trigger", "dedup_key": "",
            "payload": {"summary": "down", "source": "s", "severity": "critical"}});
        finish_pagerduty(&mut e).unwrap();
        assert!(e.get("dedup_key").is_none(), "PagerDuty makes one: {e}");
        let mut e = json!({"event_action": "fire", "payload": {}});
        assert!(finish_pagerduty(&mut e).is_err());
    }
}
