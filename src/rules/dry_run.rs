//! A dry run: what every rule would do with an event, without running anything. What
//! `rulehook test` prints and the console's Try page shows — one implementation for both.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{EventDoc, Rule, RuleSet};

/// One rule's verdict on a tried event.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub rulebook: String,
    pub rule: String,
    pub matched: bool,
    /// When not matched: the clauses that were false with the values seen, or why the rule
    /// was not considered.
    pub why_not: Vec<String>,
    /// When matched: each action as it would be rendered (credentials masked), or
    /// `{"render_error": …}`.
    pub actions: Vec<Value>,
    /// When matched: the `on_failure` actions as they would be rendered after a placeholder
    /// failure.
    pub on_failure: Vec<Value>,
    /// When matched and throttled: `{"once_within" (milliseconds), "group"}` (null otherwise).
    pub throttle: Value,
    /// Not considered: the rule takes other sources (views fold these into one line).
    pub other_source: bool,
    /// When matched: the rule is in shadow mode, so its job would run none of `actions`
    /// (it records them as what would have run).
    pub shadow: bool,
    /// When matched and the rule has `approval:` (and is live): `{"timeout" (milliseconds, as
    /// an action's), "on_timeout", "approvers"}`, what its job would wait for before the first
    /// action (null otherwise). Text and the console show the timeout as a duration.
    pub approval: Value,
    /// When matched and the rule is a correlation: what one event does to its pattern (which
    /// step it is, what else must come and within what), since its actions run only when the
    /// pattern completes. The actions below are rendered as if this event completed it alone.
    pub correlation: Option<String>,
}

/// What the tried event alone does to correlation `c`: the steps it is, and what a job still
/// waits for. A pattern of several events is tried with a sequence of events (`--event` with
/// a file of several).
fn correlation_note(c: &super::correlate::Correlation, doc: &EventDoc) -> String {
    use super::correlate::Kind;
    let took = c.steps_matched(doc);
    let name = |i: usize| format!("`{}`", c.steps[i].name);
    let is: Vec<String> = took.iter().map(|&i| name(i)).collect();
    let rest: Vec<String> = (0..c.steps.len())
        .filter(|i| !took.contains(i))
        .map(name)
        .collect();
    let within = crate::units::format_duration(c.within);
    let waits = match c.kind {
        Kind::AllOf | Kind::Sequence if rest.is_empty() => {
            "alone it completes the pattern".to_string()
        }
        Kind::AllOf => format!(
            "its job runs once {} also came within {within}",
            rest.join(", ")
        ),
        Kind::Sequence => format!(
            "its job runs once the steps after it ({}) came in order within {within}",
            rest.join(", ")
        ),
        Kind::Absence if took.first() == Some(&0) => format!(
            "it opens a window: its job runs when {within} pass without {}",
            name(1)
        ),
        Kind::Absence => "it closes the open windows of its group: no job".to_string(),
        Kind::Count(n) if n <= 1 => "alone it completes the pattern".to_string(),
        Kind::Count(n) => format!("its job runs once {n} such events came within {within}"),
    };
    format!(
        "correlation ({}): this event is {}; {waits}. The actions below are rendered as if it completed the pattern alone; try a sequence of events (a file of several) to see it hold and fire",
        c.kind.as_str(),
        is.join(", ")
    )
}

/// What `rule`'s `on_failure` actions would run as if an action failed for good (a placeholder
/// failure), rendered for a dry run.
fn on_failure_rendered(set: &RuleSet, rule: &Rule, body: &Value, meta: &Value) -> Vec<Value> {
    let failure = json!({
        "action": rule.actions.first().map(|a| a.kind()).unwrap_or(""),
        "error": "<the error>", "attempts": 1, "exit_code": 1,
        "stdout": "<stdout>", "stderr": "<stderr>", "status": 500, "body": "<body>",
    });
    rule.on_failure
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let previous = if i == 0 {
                Value::Null
            } else {
                json!({"exit_code": 0, "stdout": format!("<stdout of on_failure action {}>", i - 1)})
            };
            let ctx = crate::templates::context(
                json!({"event": body, "meta": meta, "previous": previous, "failure": failure}),
            );
            match a.render(&set.templates, &ctx) {
                Ok(r) => r.for_history(),
                Err(e) => json!({"render_error": e}),
            }
        })
        .collect()
}

/// Every rule's verdict on `body` arriving on `source` (`None`: every rule is considered)
/// with `headers` (lower-case names; visible to templates as `meta.headers`).
pub fn dry_run(
    set: &RuleSet,
    source: Option<&str>,
    body: &Value,
    headers: &Map<String, Value>,
) -> Vec<DryRun> {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_string())))
        .collect();
    let doc = EventDoc::with_headers(body.clone(), &pairs);
    let kind = source
        .and_then(|s| set.source(s))
        .map(|s| s.kind_name())
        .unwrap_or("");
    set.explain(source, &doc)
        .into_iter()
        .map(|v| {
            let rule = &set.rules[v.rule];
            let mut actions = Vec::new();
            let mut on_failure = Vec::new();
            let mut throttle = Value::Null;
            if v.matched {
                // As a job sees it: these fields, then the envelope (`headers`, and `peer`,
                // `topic`, `subject` when given as their `x-rulehook-…` headers).
                let mut meta = json!({
                    "id": "test", "source": source.unwrap_or_default(), "kind": kind,
                    "received_at": crate::domain::rfc3339(0),
                    "rulebook": rule.rulebook, "rule": rule.name,
                });
                if let (Value::Object(m), Value::Object(envelope)) = (&mut meta, doc.meta()) {
                    m.extend(envelope.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                // A correlation rule's templates see the event as every step it satisfies, as if
                // it completed the pattern on its own (received at the epoch, like `meta`).
                let (events, correlation) = match &rule.correlate {
                    Some(c) => {
                        let took: Vec<crate::domain::Participant> = c
                            .steps_matched(&doc)
                            .into_iter()
                            .map(|i| crate::domain::Participant {
                                name: c.steps[i].name.clone(),
                                id: "test".into(),
                                at: 0,
                            })
                            .collect();
                        let with_bodies: Vec<_> = took.iter().map(|p| (p, body.clone())).collect();
                        let deadline = Some(c.within.as_millis() as i64);
                        c.template_context(&c.group(body), &with_bodies, deadline)
                    }
                    None => (Value::Null, Value::Null),
                };
                // A dry run has no real previous result: later actions see a placeholder one.
                for (i, a) in rule.actions.iter().enumerate() {
                    let previous = if i == 0 {
                        Value::Null
                    } else {
                        json!({"exit_code": 0, "stdout": format!("<stdout of action {}>", i - 1)})
                    };
                    let ctx = crate::templates::context(json!({
                        "event": body, "meta": meta, "previous": previous,
                        "events": events, "correlation": correlation,
                    }));
                    actions.push(match a.render(&set.templates, &ctx) {
                        Ok(r) => r.for_history(),
                        Err(e) => json!({"render_error": e}),
                    });
                }
                on_failure = on_failure_rendered(set, rule, body, &meta);
                if let Some(t) = &rule.throttle {
                    throttle = json!({
                        "once_within": u64::try_from(t.window.as_millis()).unwrap_or(u64::MAX),
                        "group": t.group(body),
                    });
                }
            }
            let correlation = match &rule.correlate {
                Some(c) if v.matched => Some(correlation_note(c, &doc)),
                _ => None,
            };
            let approval = match &rule.approval {
                Some(a) if v.matched && !rule.shadow => json!({
                    "timeout": u64::try_from(a.timeout.as_millis()).unwrap_or(u64::MAX),
                    "on_timeout": a.on_timeout(),
                    "approvers": a.approvers,
                }),
                _ => Value::Null,
            };
            DryRun {
                rulebook: rule.rulebook.clone(),
                rule: rule.name.clone(),
                matched: v.matched,
                why_not: v.why,
                other_source: v.other_source,
                actions,
                on_failure,
                throttle,
                shadow: v.matched && rule.shadow,
                approval,
                correlation,
            }
        })
        .collect()
}
