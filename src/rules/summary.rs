//! One line per event saying what it was — the alert and where, the device, the push or pull
//! request — for the console's event list, where a 64-hex delivery id said nothing.
//!
//! A source may set `summary:` (a minijinja template over `event`, the body, and `headers`, the
//! request's headers by lower-case name); otherwise the line comes from the source's kind
//! (GitHub, GitLab, NetBox, IP Fabric, syslog) or, for generic kinds, from the body's shape
//! (Alertmanager's `alerts`), else from the body's first few plain fields. Missing values are
//! empty here, never an error (a summary must not fail a page); a line that renders empty falls
//! back to the default.

use std::collections::HashMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

/// Characters a summary keeps at most (the list cuts it further with CSS).
pub const MAX_CHARS: usize = 160;

/// CPU budget of one summary's render.
const FUEL: u64 = 20_000;

/// The summary templates of one rule set: each source's own (`summary:`) and the defaults.
#[derive(Debug)]
pub struct Summaries {
    env: Environment<'static>,
    /// Source name → the template it uses (its own, or a kind's default).
    by_source: HashMap<String, String>,
}

/// The default templates, by name.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "github",
        "{{ headers['x-github-event'] }}{% if event.action %} {{ event.action }}{% endif %} · {{ event.repository.full_name }}\
         {% if event.pull_request %} #{{ event.pull_request.number }} {{ event.pull_request.title }}\
         {% elif event.issue %} #{{ event.issue.number }} {{ event.issue.title }}\
         {% elif event.ref %} {{ event.ref }}{% if event.head_commit.message %}: {{ event.head_commit.message | split('\\n') | first }}{% endif %}\
         {% elif event.workflow_run %} {{ event.workflow_run.name }} {{ event.workflow_run.conclusion or event.workflow_run.status }}{% endif %}\
         {% if event.sender.login %} by {{ event.sender.login }}{% endif %}",
    ),
    (
        "gitlab",
        "{{ event.object_kind }}{% if event.object_attributes.action %} {{ event.object_attributes.action }}{% endif %} · {{ event.project.path_with_namespace }}\
         {% if event.object_attributes.iid %} !{{ event.object_attributes.iid }}{% endif %}\
         {% if event.object_attributes.title %} {{ event.object_attributes.title }}\
         {% elif event.ref %} {{ event.ref }}{% endif %}\
         {% if event.user_username %} by {{ event.user_username }}{% elif event.user.username %} by {{ event.user.username }}{% endif %}",
    ),
    (
        "alertmanager",
        "{{ event.status }} {{ event.commonLabels.alertname or event.alerts[0].labels.alertname }}\
         {% set l = event.alerts[0].labels %}{% if l.instance or l.device or l.host %} on {{ l.instance or l.device or l.host }}{% endif %}\
         {% if event.commonLabels.severity %} ({{ event.commonLabels.severity }}){% endif %}\
         {% if event.alerts | length > 1 %} · {{ event.alerts | length }} alerts{% endif %}",
    ),
    (
        "netbox",
        "{{ event.event }} {{ event.model }} {{ event.data.display or event.data.name }}\
         {% if event.data.site.name %} at {{ event.data.site.name }}{% endif %}{% if event.username %} by {{ event.username }}{% endif %}",
    ),
    (
        "ipfabric",
        "{{ event.type }} {{ event.action }} {{ event.status }}\
         {% if event.snapshotId %} snapshot {{ event.snapshotId }}{% endif %}{% if event.requester %} by {{ event.requester }}{% endif %}",
    ),
    (
        "syslog",
        "{{ event.hostname or event.host }}{% if event.severity_name %} {{ event.severity_name }}{% endif %}: {{ event.message }}",
    ),
];

impl Default for Summaries {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(FUEL));
        for (name, text) in DEFAULTS {
            if let Err(e) = env.add_template(name, text) {
                // Compiled into the binary: the unit tests render each.
                tracing::error!("summary template {name}: {e}");
            }
        }
        Summaries {
            env,
            by_source: HashMap::new(),
        }
    }
}

impl Summaries {
    /// Adds source `name`'s own template; `Err` with minijinja's message when it does not
    /// compile.
    pub fn add(&mut self, name: &str, template: &str) -> Result<(), String> {
        let key = format!("source/{name}");
        self.env
            .add_template_owned(key.clone(), template.to_string())
            .map_err(|e| e.to_string())?;
        self.by_source.insert(name.to_string(), key);
        Ok(())
    }

    /// The line for an event of `source` (of verifier kind `kind`), from its body and headers.
    pub fn summarize(
        &self,
        source: &str,
        kind: &str,
        headers: &Map<String, Value>,
        body: &Value,
    ) -> String {
        let own = self.by_source.get(source).map(String::as_str);
        let default = default_for(kind, body);
        for name in own.into_iter().chain(default) {
            if let Some(line) = self.render(name, headers, body) {
                return line;
            }
        }
        fields(body)
    }

    fn render(&self, name: &str, headers: &Map<String, Value>, body: &Value) -> Option<String> {
        let t = self.env.get_template(name).ok()?;
        let text = t
            .render(crate::templates::context(
                json!({"event": body, "headers": headers}),
            ))
            .map_err(|e| tracing::debug!("summary {name}: {e}"))
            .ok()?;
        let line = one_line(&text);
        // Only separators left: nothing the template looked for was there.
        let said = line.chars().any(|c| c.is_alphanumeric());
        said.then_some(line)
    }
}

/// The default template for a verifier kind, or by the body's shape for generic kinds.
fn default_for(kind: &str, body: &Value) -> Option<&'static str> {
    match kind {
        "github" | "gitlab" | "netbox" | "ipfabric" | "syslog" => {
            DEFAULTS.iter().find(|(n, _)| *n == kind).map(|(n, _)| *n)
        }
        _ if body["alerts"].is_array() && body.get("status").is_some() => Some("alertmanager"),
        _ if body.get("message").is_some_and(Value::is_string)
            && (body.get("hostname").is_some() || body.get("facility").is_some()) =>
        {
            Some("syslog")
        }
        _ => None,
    }
}

/// Whitespace collapsed to single spaces, at most [`MAX_CHARS`] characters (`…` when cut).
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    let line = line.trim_matches(|c: char| c == '·' || c.is_whitespace());
    if line.chars().count() > MAX_CHARS {
        let mut cut: String = line.chars().take(MAX_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        line.to_string()
    }
}

/// The fallback: the body's first plain top-level fields as `key=value`, or its text.
fn fields(body: &Value) -> String {
    match body {
        Value::Object(m) => one_line(
            &m.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some(format!("{k}={s}")),
                    Value::Number(_) | Value::Bool(_) => Some(format!("{k}={v}")),
                    _ => None,
                })
                .take(4)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Value::String(s) => one_line(s),
        Value::Null => String::new(),
        other => one_line(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    }

    #[test]
    fn defaults_say_what_each_kind_of_event_was() {
        let s = Summaries::default();
        let none = Map::new();
        let push = json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/net"},
            "head_commit": {"message": "Fix ACL\n\nlong text"}, "sender": {"login": "dee"}});
        assert_eq!(
            s.summarize(
                "gh",
                "github",
                &headers(&[("x-github-event", "push")]),
                &push
            ),
            "push · acme/net refs/heads/main: Fix ACL by dee"
        );
        let pr = json!({"action": "opened", "repository": {"full_name": "acme/net"},
            "pull_request": {"number": 7, "title": "Add VLAN 20"}});
        assert_eq!(
            s.summarize(
                "gh",
                "github",
                &headers(&[("x-github-event", "pull_request")]),
                &pr
            ),
            "pull_request opened · acme/net #7 Add VLAN 20"
        );
        let mr = json!({"object_kind": "merge_request", "project": {"path_with_namespace": "net/cfg"},
            "object_attributes": {"iid": 3, "title": "BGP timers", "action": "open"},
            "user": {"username": "ann"}});
        assert_eq!(
            s.summarize("gl", "gitlab", &none, &mr),
            "merge_request open · net/cfg !3 BGP timers by ann"
        );
        let alert = json!({"status": "firing", "commonLabels": {"alertname": "LinkDown", "severity": "critical"},
            "alerts": [{"labels": {"alertname": "LinkDown", "instance": "sw1:9100"}}, {"labels": {}}]});
        assert_eq!(
            s.summarize("am", "bearer", &none, &alert),
            "firing LinkDown on sw1:9100 (critical) · 2 alerts"
        );
        let nb = json!({"event": "updated", "model": "device", "username": "ops",
            "data": {"name": "core-sw1", "site": {"name": "FRA1"}}});
        assert_eq!(
            s.summarize("nb", "netbox", &none, &nb),
            "updated device core-sw1 at FRA1 by ops"
        );
        let ipf = json!({"type": "snapshot", "action": "discover", "status": "completed", "snapshotId": "abc"});
        assert_eq!(
            s.summarize("ipf", "ipfabric", &none, &ipf),
            "snapshot discover completed snapshot abc"
        );
        let log = json!({"hostname": "edge1", "severity_name": "err", "message": "%LINK-3-UPDOWN: Gi0/1 down"});
        assert_eq!(
            s.summarize("sl", "syslog", &none, &log),
            "edge1 err: %LINK-3-UPDOWN: Gi0/1 down"
        );
        let generic = json!({"kind": "deploy", "service": "web", "nested": {"x": 1}, "n": 3});
        assert_eq!(
            s.summarize("in", "bearer", &none, &generic),
            "kind=deploy service=web n=3"
        );
    }

    #[test]
    fn a_source_template_wins_and_falls_back_when_empty() {
        let mut s = Summaries::default();
        s.add(
            "am",
            "{{ event.alerts[0].labels.alertname }}{% if event.alerts[0].labels.device %} on {{ event.alerts[0].labels.device }}{% endif %}",
        )
        .unwrap();
        let alert = json!({"status": "firing", "alerts": [{"labels": {"alertname": "BGPDown", "device": "r1"}}]});
        assert_eq!(
            s.summarize("am", "bearer", &Map::new(), &alert),
            "BGPDown on r1"
        );
        // Nothing it looks for is there: the default for the body's shape, then its fields.
        let other = json!({"status": "resolved", "alerts": [{"labels": {}}]});
        assert_eq!(s.summarize("am", "bearer", &Map::new(), &other), "resolved");
        assert_eq!(
            s.summarize("am", "bearer", &Map::new(), &json!({"a": "b"})),
            "a=b"
        );
        assert!(s.add("bad", "{{ event.x").is_err());
    }

    #[test]
    fn a_line_is_one_line_and_bounded() {
        let s = Summaries::default();
        let long = json!({"message": "x".repeat(500), "hostname": "h"});
        let line = s.summarize("sl", "syslog", &Map::new(), &long);
        assert_eq!(line.chars().count(), MAX_CHARS);
        assert!(line.ends_with('…'));
        assert_eq!(one_line(" a\n\n b\t c "), "a b c");
    }
}
