//! `notify:` — a message where operators look, compiled to one templated HTTP request in the
//! format each service takes: Slack and Webex incoming webhooks (`text` / `markdown`),
//! Microsoft Teams incoming webhooks (a message with an Adaptive Card), and PagerDuty Events
//! API v2 (`trigger`, `acknowledge`, `resolve` one alert by its `dedup_key`).

use serde_json::{Value, json};
use serde_saphyr::Spanned;

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
    let mut secrets = Vec::new();
    let (url, body, ok) = if to == "pagerduty" {
        pagerduty(cx, n, &mut secrets)?
    } else {
        chat(cx, n, to)?
    };
    let mark = cx.referenced.len();
    let url_text = cx.url(t, format!("{prefix}/url"), &url, "url")?;
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

/// The message, which every service but a PagerDuty `acknowledge`/`resolve` needs.
fn need_text(cx: &mut Compile, n: &NotifySpec, to: &str) -> Option<Spanned<String>> {
    match &n.text {
        Some(s) => Some(s.clone()),
        None => {
            cx.err(
                &n.to.referenced,
                format!("notify to {to} needs `text`, the message"),
            );
            None
        }
    }
}

/// A PagerDuty Events API v2 event (URL, body, the statuses that mean accepted); its routing
/// key joins `secrets`.
fn pagerduty(
    cx: &mut Compile,
    n: &NotifySpec,
    secrets: &mut Vec<String>,
) -> Option<(Spanned<String>, Value, Vec<u16>)> {
    let Some(key) = &n.routing_key else {
        cx.err(
            &n.to.referenced,
            "notify to pagerduty needs `routing_key` (the integration key of an Events API v2 integration)",
        );
        return None;
    };
    let key = cx.secret(key, "routing_key")?;
    secrets.push(key.expose().to_string());
    let action = one_of(
        cx,
        n,
        n.event_action.as_ref(),
        "trigger",
        EVENT_ACTIONS,
        "event_action",
    )?;
    let severity = one_of(cx, n, n.severity.as_ref(), "error", SEVERITIES, "severity")?;
    if action == "trigger" && n.text.is_none() {
        need_text(cx, n, "pagerduty")?;
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
    Some((url, body, vec![202]))
}

/// A field's value (or `default`), which must be one of `allowed` unless it is a template.
fn one_of(
    cx: &mut Compile,
    n: &NotifySpec,
    field: Option<&Spanned<String>>,
    default: &str,
    allowed: &[&str],
    name: &str,
) -> Option<String> {
    let value = field.map_or_else(|| default.to_string(), |v| v.value.clone());
    let templated = value.contains("{{") || value.contains("{%");
    if !templated && !allowed.contains(&value.as_str()) {
        let at = field.unwrap_or(&n.to);
        let choices = match allowed {
            [a, b, c] => format!("{a}, {b} or {c}"),
            _ => format!("one of {}", allowed.join(", ")),
        };
        cx.err(&at.referenced, format!("{name} `{value}`: use {choices}"));
        return None;
    }
    Some(value)
}

/// A Slack, Webex or Teams incoming-webhook message (URL, body, any 2xx accepted).
fn chat(cx: &mut Compile, n: &NotifySpec, to: &str) -> Option<(Spanned<String>, Value, Vec<u16>)> {
    let Some(url) = &n.url else {
        cx.err(
            &n.to.referenced,
            format!("notify to {to} needs `url`, the incoming webhook's URL"),
        );
        return None;
    };
    let text = need_text(cx, n, to)?.value;
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
    Some((url.clone(), body, Vec::new()))
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
