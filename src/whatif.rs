//! "What if": stored events replayed through a candidate rule set without running anything,
//! compared with what the stored matches say happened. Also the in-memory [`Simulator`]
//! `rulehook test` uses to show correlation rules event by event.
//!
//! The simulator decides as the engine does (the same matching, throttle windows and
//! correlation state machine), with event times from the log and partial matches in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::{CorrelationState, Event, EventDoc, Match, human_duration, now_ms};
use crate::rules::correlate::{Observed, Partial};
use crate::rules::{Rule, RuleSet};
use crate::store::{History, StoreError, Stored, StoredEvent};

/// What a rule would do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Would {
    /// Make a job (a plain match, a correlation that fires, or an absence that opens).
    Run,
    Throttled,
    /// A correlation holds the event and waits for more.
    Hold,
}

/// One rule's decision on one event, with the correlation's view when it has one.
#[derive(Debug, Clone)]
pub struct Decision {
    pub rule: usize,
    pub would: Would,
    pub observed: Option<Observed>,
}

/// Rules applied to a stream of events, state in memory.
pub struct Simulator<'a> {
    pub rules: &'a RuleSet,
    partials: HashMap<String, Partial>,
    throttles: HashMap<String, i64>,
}

impl<'a> Simulator<'a> {
    pub fn new(rules: &'a RuleSet) -> Simulator<'a> {
        Simulator {
            rules,
            partials: HashMap::new(),
            throttles: HashMap::new(),
        }
    }

    /// The decisions of every rule the event concerns, in rule order. `source: None`
    /// considers every rule (`rulehook test` without `--source`).
    pub fn feed(
        &mut self,
        source: Option<&str>,
        id: &str,
        doc: &EventDoc,
        at: i64,
    ) -> Vec<Decision> {
        let matched: Vec<usize> = match source {
            Some(s) => self.rules.matching(s, doc),
            None => (0..self.rules.rules.len())
                .filter(|&i| self.rules.rules[i].condition.eval(doc))
                .collect(),
        };
        let mut out = Vec::new();
        for i in matched {
            let r = &self.rules.rules[i];
            if let Some(c) = &r.correlate {
                let steps = c.steps_matched(doc);
                if steps.is_empty() {
                    continue;
                }
                let key = format!("{}/{}", r.key, c.group(doc.body()));
                let partial = self.partials.entry(key.clone()).or_default();
                let Some(o) = c.observe(partial, &steps, id, at) else {
                    continue;
                };
                if partial.is_empty() {
                    self.partials.remove(&key);
                }
                let would = match o.state {
                    CorrelationState::Partial => Would::Hold,
                    _ => Would::Run,
                };
                out.push(Decision {
                    rule: i,
                    would,
                    observed: Some(o),
                });
                continue;
            }
            let would = match &r.throttle {
                None => Would::Run,
                Some(t) => {
                    let key = format!("{}/{}", r.key, t.group(doc.body()));
                    match self.throttles.get(&key) {
                        Some(&until) if until > at => Would::Throttled,
                        _ => {
                            self.throttles.insert(key, at + t.window.as_millis() as i64);
                            Would::Run
                        }
                    }
                }
            };
            out.push(Decision {
                rule: i,
                would,
                observed: None,
            });
        }
        out
    }

    /// What each correlation rule holds now: (rule, group key, partial).
    pub fn holding(&self) -> Vec<(&str, &Partial)> {
        let mut v: Vec<_> = self.partials.iter().map(|(k, p)| (k.as_str(), p)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// Events read per page.
const PAGE: usize = 2_000;

/// A stored row as both ways of reading the history take it: an event whose body nests deeper
/// than [`crate::body::MAX_DEPTH`] levels (stored by an earlier release; refused at intake as
/// `too_deep` since) is unreadable. `GET /api/stored-events` (what `whatif --url` reads) cannot
/// carry it, so the data directory (`whatif --data`) skips it too, and both replay the same
/// events (serde_json alone would read up to 128 levels).
pub fn within_depth(row: Stored) -> Stored {
    match row {
        Stored::Event(s) if crate::body::too_deep(s.event.body_text.as_bytes()) => {
            Stored::Unreadable(crate::store::Unreadable {
                id: s.event.id.clone(),
                received_at: s.event.received_at,
                reason: format!(
                    "its body nests deeper than {} levels of arrays and objects (refused at intake as too_deep since), too deep to send",
                    crate::body::MAX_DEPTH
                ),
            })
        }
        other => other,
    }
}

/// Reads every stored event since `since` ago, page by page, into the report. On a terminal,
/// stderr shows progress (events/s and the time left, estimated from event times).
pub async fn replay(
    rules: &RuleSet,
    history: &dyn History,
    since: Duration,
    progress: bool,
) -> Result<Report, StoreError> {
    let now = now_ms();
    let from = now - since.as_millis() as i64;
    let mut w = WhatIf::new(rules, from);
    let tty = progress;
    let began = Instant::now();
    let mut shown = Instant::now();
    let mut after = None;
    loop {
        let page = history.stored(from, after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id().to_string());
        let reached = last.received_at();
        for row in page {
            match within_depth(row) {
                Stored::Event(s) => w.feed(&s, history).await?,
                Stored::Unreadable(u) => w.unreadable(&u),
            }
        }
        if tty && shown.elapsed() > Duration::from_millis(200) {
            shown = Instant::now();
            let done = ((reached - from) as f64 / (now - from).max(1) as f64).clamp(0.0, 1.0);
            let secs = began.elapsed().as_secs_f64();
            let rate = w.report.events as f64 / secs.max(0.001);
            let left = if done > 0.0 { secs / done - secs } else { 0.0 };
            let width = 30;
            let filled = (done * width as f64) as usize;
            eprint!(
                "\r[{}{}] {:>3}% {} events, {:.0} events/s, {} left   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                (done * 100.0) as u32,
                w.report.events,
                rate,
                human_duration((left * 1000.0) as i64)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprint!("\r{}\r", " ".repeat(90));
    }
    let took = began.elapsed();
    let report = w.finish();
    eprintln!(
        "replayed {} event(s) in {} ({:.0} events/s)",
        report.events,
        human_duration(took.as_millis() as i64),
        report.events as f64 / took.as_secs_f64().max(0.001)
    );
    if report.unreadable.count > 0 {
        eprintln!(
            "skipped {} stored event(s) that could not be read back (listed in the report)",
            report.unreadable.count
        );
    }
    Ok(report)
}

/// One event whose outcome differs, with the clause that decided it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub event: String,
    pub received_at: String,
    pub why: String,
}

/// Examples kept per list (the counts are always complete).
pub const EXAMPLES: usize = 20;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Changes {
    pub count: u64,
    pub examples: Vec<Change>,
}

impl Changes {
    fn add(&mut self, c: Change) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(c);
        }
    }
}

/// One rule's differences over the replayed period.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RuleReport {
    pub rulebook: String,
    pub rule: String,
    /// `added` (not in the history's matches), `removed`, `changed` (another version
    /// matched before), `unchanged`.
    pub status: &'static str,
    /// Jobs it would make now.
    pub would_run: u64,
    /// Jobs the stored matches made.
    pub ran: u64,
    pub now_match: Changes,
    pub no_longer_match: Changes,
    /// Jobs in both, whose actions would render differently from what was run.
    pub run_differently: Changes,
    /// Jobs it would make that a maintenance window in force at their event's time would
    /// hold, skip or turn into approvals: per `window (during)`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, u64>,
}

impl RuleReport {
    pub fn changed(&self) -> bool {
        self.now_match.count + self.no_longer_match.count + self.run_differently.count > 0
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub since: String,
    pub events: u64,
    /// Stored events of the period that could not be read back, skipped (`why`: the reason;
    /// the first [`EXAMPLES`] named).
    pub unreadable: Changes,
    /// Per rule key.
    pub rules: BTreeMap<String, RuleReport>,
}

impl Report {
    pub fn changes(&self) -> u64 {
        self.rules
            .values()
            .map(|r| r.now_match.count + r.no_longer_match.count + r.run_differently.count)
            .sum()
    }
}

/// Replays stored events through a candidate rule set, building a [`Report`].
pub struct WhatIf<'a> {
    sim: Simulator<'a>,
    pub report: Report,
    /// Fingerprints seen in the stored matches, per key.
    seen: HashMap<String, (String, String, String)>,
}

fn made_job(m: &Match) -> bool {
    m.creates_job()
}

impl<'a> WhatIf<'a> {
    pub fn new(rules: &'a RuleSet, since_ms: i64) -> WhatIf<'a> {
        let mut report = Report {
            since: crate::domain::rfc3339(since_ms),
            ..Report::default()
        };
        for r in &rules.rules {
            report.rules.insert(
                r.key.clone(),
                RuleReport {
                    rulebook: r.rulebook.clone(),
                    rule: r.name.clone(),
                    status: "added",
                    ..RuleReport::default()
                },
            );
        }
        WhatIf {
            sim: Simulator::new(rules),
            report,
            seen: HashMap::new(),
        }
    }

    /// A stored event that could not be read back: skipped, counted and named.
    pub fn unreadable(&mut self, u: &crate::store::Unreadable) {
        self.report.unreadable.add(Change {
            event: u.id.clone(),
            received_at: crate::domain::rfc3339(u.received_at),
            why: u.reason.clone(),
        });
    }

    /// One stored event. `history` gives the attempts of jobs whose rule changed, to compare
    /// what ran with what would run.
    pub async fn feed(&mut self, s: &StoredEvent, history: &dyn History) -> Result<(), StoreError> {
        let e = &s.event;
        self.report.events += 1;
        let decisions = self.sim.feed(Some(&e.source), &e.id, &e.doc, e.received_at);
        let rules = self.sim.rules;
        let at = crate::domain::rfc3339(e.received_at);
        let change = |why: String| Change {
            event: e.id.clone(),
            received_at: at.clone(),
            why,
        };
        let mut detail = None;
        for m in &s.matches {
            self.seen
                .entry(m.key.clone())
                .or_insert_with(|| (m.rulebook.clone(), m.rule.clone(), m.fingerprint.clone()));
        }
        // Keys either side made a job for.
        let mut keys: Vec<&str> = s
            .matches
            .iter()
            .filter(|m| made_job(m))
            .map(|m| m.key.as_str())
            .collect();
        for d in decisions.iter().filter(|d| d.would == Would::Run) {
            keys.push(&rules.rules[d.rule].key);
        }
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            let old = s.matches.iter().find(|m| m.key == key && made_job(m));
            let new = decisions
                .iter()
                .find(|d| rules.rules[d.rule].key == key && d.would == Would::Run);
            let entry = self.report.rules.entry(key.to_string()).or_insert_with(|| {
                let m = old.expect("a key from the stored matches");
                RuleReport {
                    rulebook: m.rulebook.clone(),
                    rule: m.rule.clone(),
                    status: "removed",
                    ..RuleReport::default()
                }
            });
            if old.is_some() {
                entry.ran += 1;
            }
            if let Some(d) = new {
                entry.would_run += 1;
                let r = &rules.rules[d.rule];
                let decided = rules.windows.decide(&r.rulebook, &r.name, e.received_at);
                if let Some(label) = window_label(decided) {
                    *entry.windows.entry(label).or_default() += 1;
                }
            }
            match (old, new) {
                (None, Some(d)) => entry
                    .now_match
                    .add(change(why_now(&rules.rules[d.rule], d))),
                (Some(_), None) => {
                    let why = match rules.rule_by_key(key) {
                        None => "the rule is not in the candidate rulebooks".to_string(),
                        Some(i) => why_not(rules, i, e, &decisions),
                    };
                    entry.no_longer_match.add(change(why));
                }
                (Some(m), Some(d)) if m.fingerprint != rules.rules[d.rule].fingerprint => {
                    if detail.is_none() {
                        detail = history.event_detail(&e.id).await?;
                    }
                    if let Some(why) = differs(rules, d, e, detail.as_ref(), &m.job_id(&e.id)) {
                        entry.run_differently.add(change(why));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The report, with each rule's status from the fingerprints the history showed.
    pub fn finish(mut self) -> Report {
        let rules = self.sim.rules;
        for (key, r) in self.report.rules.iter_mut() {
            if r.status == "removed" {
                continue;
            }
            r.status = match (self.seen.get(key), rules.rule_by_key(key)) {
                (None, _) => "added",
                (Some(_), None) => "removed",
                (Some((_, _, fp)), Some(i)) if *fp != rules.rules[i].fingerprint => "changed",
                _ => "unchanged",
            };
        }
        for (key, (rulebook, rule, _)) in &self.seen {
            if rules.rule_by_key(key).is_none() {
                self.report
                    .rules
                    .entry(key.clone())
                    .or_insert_with(|| RuleReport {
                        rulebook: rulebook.clone(),
                        rule: rule.clone(),
                        status: "removed",
                        ..RuleReport::default()
                    });
            }
        }
        self.report
    }
}

/// `freeze (hold)` for a job a window would stop; `None` when none would.
fn window_label(d: crate::rules::windows::Decision) -> Option<String> {
    use crate::rules::windows::Decision;
    match d {
        Decision::Run => None,
        Decision::Hold { window, .. } => Some(format!("{window} (hold)")),
        Decision::Skip { window, .. } => Some(format!("{window} (skip)")),
        Decision::Approve { window, .. } => Some(format!("{window} (approve)")),
    }
}

/// Why a rule now makes a job for an event.
fn why_now(rule: &Rule, d: &Decision) -> String {
    match &d.observed {
        Some(o) => {
            let names: Vec<String> = o
                .events
                .iter()
                .map(|p| format!("{}={}", p.name, p.id))
                .collect();
            match o.state {
                CorrelationState::Waiting => format!(
                    "an absence window opens (fires unless `{}` comes)",
                    o.waiting_for.join(", ")
                ),
                _ => format!("the correlation completes with {}", names.join(", ")),
            }
        }
        None => format!("condition {} holds", rule.condition.describe()),
    }
}

/// Why a rule no longer makes a job for an event: the clauses that are false now, or what
/// the correlation or throttle did instead.
fn why_not(rules: &RuleSet, i: usize, e: &Event, decisions: &[Decision]) -> String {
    if let Some(d) = decisions.iter().find(|d| d.rule == i) {
        return match (&d.would, &d.observed) {
            (Would::Throttled, _) => "throttled by an earlier event of its group".to_string(),
            (_, Some(o)) => format!(
                "the correlation holds it and waits for {}",
                o.waiting_for.join(", ")
            ),
            _ => "held".to_string(),
        };
    }
    let verdicts = rules.explain(Some(&e.source), &e.doc);
    let why = &verdicts[i].why;
    if why.is_empty() {
        "the correlation does not advance on it".to_string()
    } else {
        why.join("; ")
    }
}

/// For a job both sides make on a changed rule: the first action that would render
/// differently from its stored attempt.
fn differs(
    rules: &RuleSet,
    d: &Decision,
    e: &Event,
    detail: Option<&crate::store::EventDetail>,
    job: &str,
) -> Option<String> {
    let rule = &rules.rules[d.rule];
    let stored = detail?.matches.iter().find(|m| m.id == job)?;
    let meta = json!({
        "id": e.id, "source": e.source, "kind": e.kind,
        "received_at": crate::domain::rfc3339(e.received_at),
        "headers": e.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "rulebook": rule.rulebook, "rule": rule.name,
    });
    for (i, action) in rule.actions.iter().enumerate() {
        let ran = stored
            .attempts
            .iter()
            .find(|a| a.phase == "main" && a.action_index == i as u32);
        let Some(ran) = ran else {
            return (i == 0 || stored.attempts.is_empty()).then(|| {
                format!(
                    "the rule changed; action {i} ({}) has no stored run to compare",
                    action.kind()
                )
            });
        };
        let previous = if i == 0 {
            Value::Null
        } else {
            stored
                .attempts
                .iter()
                .rev()
                .find(|a| a.phase == "main" && a.action_index == i as u32 - 1)
                .map(|a| {
                    crate::domain::Outcome {
                        ok: true,
                        exit_code: a.exit_code.map(|c| c as i32),
                        stdout: a.stdout.clone().unwrap_or_default(),
                        status: a.http_status.map(|s| s as u16),
                        result: a.result.clone(),
                        ..Default::default()
                    }
                    .previous()
                })
                .unwrap_or(Value::Null)
        };
        let ctx = crate::templates::context(
            json!({"event": e.body(), "meta": meta, "previous": previous}),
        );
        let now = match action.render(&rules.templates, &ctx) {
            Ok(r) => r.for_history(),
            Err(err) => {
                return Some(format!(
                    "action {i} ({}) would not render: {err}",
                    action.kind()
                ));
            }
        };
        if ran.rendered.is_null() {
            // The stored run never got that far: its template failed.
            return Some(format!(
                "action {i} would run {}; when it ran, it could not be rendered{}",
                compact(&crate::actions::for_people(&now)),
                ran.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        if now != ran.rendered {
            return Some(format!(
                "action {i} would run with {}",
                what_differs(
                    &crate::actions::for_people(&now),
                    &crate::actions::for_people(&ran.rendered)
                )
            ));
        }
    }
    let beyond = stored
        .attempts
        .iter()
        .any(|a| a.phase == "main" && a.action_index as usize >= rule.actions.len());
    if beyond {
        return Some(format!("the rule now has {} action(s)", rule.actions.len()));
    }
    None
}

/// How an action as it would run differs from the one that ran: each field that changed, by
/// its path, new value first (`run_script.timeout` `"4m"` instead of `"5m"`: timeouts as durations, [`crate::actions::for_people`]), at most three
/// and how many more. Two whole actions on one line, each cut for length, would often cut off
/// the very field that changed.
fn what_differs(now: &Value, was: &Value) -> String {
    let mut found = Vec::new();
    differences(now, was, "", &mut found);
    if found.is_empty() {
        // Not expected (the values differ), but say something true.
        return format!("{} instead of {}", compact(now), compact(was));
    }
    let shown: Vec<String> = found
        .iter()
        .take(3)
        .map(|(path, now, was)| match (now, was) {
            (Some(n), Some(w)) => format!("`{path}` {} instead of {}", compact(n), compact(w)),
            (Some(n), None) => format!("`{path}` {} (new)", compact(n)),
            (None, Some(w)) => format!("no `{path}` (was {})", compact(w)),
            (None, None) => format!("`{path}`"),
        })
        .collect();
    let more = found.len().saturating_sub(3);
    let tail = if more > 0 {
        format!(" (and {more} more difference(s))")
    } else {
        String::new()
    };
    format!("{}{tail}", shown.join(", "))
}

/// The leaves where `now` and `was` differ, by dotted path (`[n]` for list items), in order; a
/// side that lacks a field is `None`.
fn differences(
    now: &Value,
    was: &Value,
    path: &str,
    out: &mut Vec<(String, Option<Value>, Option<Value>)>,
) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (now, was) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => differences(va, vb, &join(k), out),
                    None => out.push((join(k), Some(va.clone()), None)),
                }
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out.push((join(k), None, Some(vb.clone())));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (n, (va, vb)) in a.iter().zip(b).enumerate() {
                differences(va, vb, &format!("{path}[{n}]"), out);
            }
        }
        _ if now != was => out.push((path.to_string(), Some(now.clone()), Some(was.clone()))),
        _ => {}
    }
}

/// JSON on one line, cut for people.
fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}
