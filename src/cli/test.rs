//! `rulehook test`: one event through every rule (what would match, render and run), or a
//! sequence of events through the simulator, showing what each correlation holds and waits for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::{TestArgs, load, read_body};
use crate::actions::for_people;
use crate::domain::{CorrelationState, Participant, human_duration};
use crate::rules::correlate::Observed;
use crate::rules::{DryRun, RuleSet};
use crate::whatif::{Decision, Simulator, Would};

pub fn test(t: &TestArgs) -> anyhow::Result<ExitCode> {
    let set = match load(&t.dirs) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if let Some(s) = &t.source
        && set.source(s).is_none()
    {
        let names: Vec<&str> = set.sources.iter().map(|s| s.name.as_str()).collect();
        let hint = match crate::rulebook::yaml_error::closest(s, &names) {
            Some(best) => format!("; did you mean `{best}`?"),
            None if names.is_empty() => "; they declare none".to_string(),
            None => format!("; they declare: {}", names.join(", ")),
        };
        anyhow::bail!(
            "no source named `{s}` in {}{hint}",
            t.dirs.rulebooks.display()
        );
    }
    let headers = parse_headers(t)?;
    let source = t.source.as_deref().and_then(|s| set.source(s));
    // Messages as a syslog listener receives them: each line an event.
    let raw = if t.event.is_dir() {
        None
    } else {
        Some(read_body(Some(&t.event))?)
    };
    let sampled = match (source, &raw) {
        (Some(s), Some(raw)) => crate::transport::sample_events(s.kind, raw),
        _ => None,
    };
    let several = match &sampled {
        Some(events) if events.len() > 1 => Some(
            events
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{}#{}", t.event.display(), i + 1), e.clone()))
                .collect(),
        ),
        Some(_) => None,
        None if t.event.is_dir() => Some(read_events(&t.event)?),
        None if t.event.as_os_str() != "-" => read_events(&t.event).ok().filter(|b| b.len() > 1),
        None => None,
    };
    if let Some(bodies) = several {
        let mut seq = Sequence::new(&set, t.every, envelope_pairs(&headers));
        seq.start_ms = t.at.unwrap_or_else(crate::domain::now_ms);
        let run = seq.run(t.source.as_deref(), &bodies);
        if t.json {
            println!("{}", serde_json::to_string_pretty(&run.report)?);
        } else {
            run.lines.iter().for_each(|l| println!("{l}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let body = match sampled.and_then(|mut e| e.pop()) {
        Some(body) => body,
        None => {
            let format = source.map_or(crate::body::BodyFormat::Json, |s| s.format);
            let content_type = headers.get("content-type").and_then(Value::as_str);
            format
                .decode(content_type, raw.as_deref().unwrap_or_default())
                .with_context(|| format!("{} (format {})", t.event.display(), format.name()))?
                .0
        }
    };
    let report = crate::rules::dry_run(&set, t.source.as_deref(), &body, &headers);
    // Maintenance windows at `--at` (default now): what they would do to each match's job.
    let at = t.at.unwrap_or_else(crate::domain::now_ms);
    if t.json {
        let mut json = serde_json::to_value(&report)?;
        for r in json.as_array_mut().into_iter().flatten() {
            let (book, rule) = (r["rulebook"].clone(), r["rule"].clone());
            let (book, rule) = (book.as_str().unwrap_or(""), rule.as_str().unwrap_or(""));
            if r["matched"] == true
                && let Some((_, v)) = super::windows::verdict(&set, book, rule, at)
            {
                r["window"] = v;
            }
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_dry_run(&set, &report, at);
    }
    Ok(ExitCode::SUCCESS)
}

/// The headers as `(name, value)` pairs, as an event stores them.
fn envelope_pairs(headers: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// `--header 'Name: value'` flags as the lower-case map templates see as `meta.headers`, with
/// `--peer`, `--topic` and `--subject` as the `x-rulehook-…` headers a listener records.
fn parse_headers(t: &TestArgs) -> anyhow::Result<serde_json::Map<String, Value>> {
    let flags = &t.headers;
    let mut headers = serde_json::Map::new();
    for h in flags {
        let (n, v) = h
            .split_once(':')
            .with_context(|| format!("header `{h}` must be `Name: value`"))?;
        headers.insert(
            n.trim().to_ascii_lowercase(),
            Value::String(v.trim().to_string()),
        );
    }
    let envelope = [
        (crate::domain::PEER_HEADER, &t.peer),
        (crate::domain::TOPIC_HEADER, &t.topic),
        (crate::domain::SUBJECT_HEADER, &t.subject),
    ];
    for (name, value) in envelope {
        if let Some(v) = value {
            headers.insert(name.to_string(), Value::String(v.clone()));
        }
    }
    Ok(headers)
}

/// One event's verdicts as text: matches with what they would run, misses with why, and the
/// rules of other sources folded into one line.
fn print_dry_run(set: &RuleSet, report: &[DryRun], at: i64) {
    let mut others = Vec::new();
    for r in report {
        let name = format!("{}/{}", r.rulebook, r.rule);
        if r.other_source {
            others.push(name);
            continue;
        }
        if !r.matched {
            println!("no match {name}");
            r.why_not.iter().for_each(|w| println!("         {w}"));
            continue;
        }
        println!("MATCH    {name}");
        if let Some(note) = &r.correlation {
            println!("         {note}");
        }
        // In the order the engine decides: the throttle at intake (a throttled match makes no
        // job), then, as the job starts, the windows, then the rule's own approval (a held job
        // is asked only once its window ends).
        if let Some(t) = r.throttle.as_object() {
            println!(
                "         throttle: once within {} per group {} (a repeat in the window runs nothing)",
                t["once_within"].as_u64().map_or_else(String::new, |ms| {
                    crate::units::format_duration(std::time::Duration::from_millis(ms))
                }),
                t["group"].as_str().unwrap_or("")
            );
        }
        let window = super::windows::verdict(set, &r.rulebook, &r.rule, at)
            .map(|(line, _)| line)
            .or_else(|| super::windows::upcoming(set, &r.rulebook, &r.rule, at));
        if let Some(line) = window {
            println!("         {line}");
        }
        if let Some(line) = mode_line(r) {
            println!("         {line}");
        }
        for a in &r.actions {
            println!("         would run: {}", for_people(a));
        }
        for a in &r.on_failure {
            println!("         on failure: {}", for_people(a));
        }
    }
    if let Some(line) = crate::rules::other_sources_line(&others) {
        println!("{line}");
    }
}

/// What stands between a match and its actions that is the rule's own: shadow mode (nothing
/// would run) or an approval to wait for. Without it the actions below read as what would run.
fn mode_line(r: &DryRun) -> Option<String> {
    if r.shadow {
        return Some(
            "shadow mode: nothing would run; the job records these actions as what would have run"
                .to_string(),
        );
    }
    let a = r.approval.as_object()?;
    let who = match a["approvers"].as_array() {
        Some(names) if !names.is_empty() => names
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "any approver".to_string(),
    };
    Some(format!(
        "waits for approval first ({who}; within {}, then {})",
        a["timeout"].as_u64().map_or_else(String::new, |ms| {
            crate::units::format_duration(std::time::Duration::from_millis(ms))
        }),
        a["on_timeout"].as_str().unwrap_or("")
    ))
}

/// The events of `--event`: one file with one or more JSON values, or a folder of `.json`
/// files. Each with where it came from (`file` or `file#n`).
fn read_events(path: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let values: Vec<Value> = serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not valid JSON", f.display()))?;
        let several = values.len() > 1;
        for (i, v) in values.into_iter().enumerate() {
            let name = if several {
                format!("{}#{}", f.display(), i + 1)
            } else {
                f.display().to_string()
            };
            out.push((name, v));
        }
    }
    Ok(out)
}

/// An absence window still open in a sequence: it fires at `deadline` unless `missing` comes.
struct OpenAbsence {
    deadline: i64,
    rule: usize,
    /// The event that opened it.
    opened: String,
    missing: String,
}

/// What a sequence printed (`lines`) and its JSON form (`report`, for `--json`).
struct SequenceRun {
    lines: Vec<String>,
    report: Vec<Value>,
}

/// `rulehook test` on a sequence: event by event, what each rule does, and for correlation
/// rules what they hold and wait for (windows measured with `--every` between events).
struct Sequence<'a> {
    set: &'a RuleSet,
    sim: Simulator<'a>,
    step_ms: i64,
    bodies: HashMap<String, Value>,
    open: Vec<OpenAbsence>,
    out: SequenceRun,
    /// When the first event arrives (`--at`, default now): maintenance windows are decided
    /// at it plus each event's offset.
    start_ms: i64,
    /// The offset of the event being shown.
    at: i64,
    /// The headers and envelope every event of the sequence arrives with.
    headers: Vec<(String, String)>,
}

impl<'a> Sequence<'a> {
    fn new(set: &'a RuleSet, every: Duration, headers: Vec<(String, String)>) -> Sequence<'a> {
        Sequence {
            set,
            headers,
            sim: Simulator::new(set),
            step_ms: every.as_millis() as i64,
            bodies: HashMap::new(),
            open: Vec::new(),
            out: SequenceRun {
                lines: Vec::new(),
                report: Vec::new(),
            },
            start_ms: 0,
            at: 0,
        }
    }

    fn run(mut self, source: Option<&str>, events: &[(String, Value)]) -> SequenceRun {
        for (n, (name, body)) in events.iter().enumerate() {
            let at = n as i64 * self.step_ms;
            self.at = at;
            let id = format!("e{}", n + 1);
            self.bodies.insert(id.clone(), body.clone());
            self.fire_absences_due(at);
            self.out
                .lines
                .push(format!("event {id} at +{} ({name})", human_duration(at)));
            let doc = crate::rules::EventDoc::with_headers(body.clone(), &self.headers);
            let decisions = self.sim.feed(source, &id, &doc, at);
            let items: Vec<Value> = decisions
                .iter()
                .map(|d| self.decision(d, body, &id))
                .collect();
            if decisions.is_empty() {
                self.out.lines.push("         (no rule)".to_string());
                self.why_not(source, body);
            }
            self.out
                .report
                .push(json!({"event": id, "from": name, "at_ms": at, "rules": items}));
        }
        for o in std::mem::take(&mut self.open) {
            let r = &self.set.rules[o.rule];
            self.out.lines.push(format!(
                "PENDING  {}/{}: fires at +{} unless `{}` comes (window opened by {})",
                r.rulebook,
                r.name,
                human_duration(o.deadline),
                o.missing,
                o.opened
            ));
        }
        self.out
    }

    /// Absences whose window ended before `at` fire first.
    /// Why no rule took an event of the sequence: each rule of its source with the clause
    /// that was false, as for a single event (a file of syslog lines is such a sequence).
    fn why_not(&mut self, source: Option<&str>, body: &Value) {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        for r in crate::rules::dry_run(self.set, source, body, &headers) {
            if r.other_source || r.matched {
                continue;
            }
            self.out
                .lines
                .push(format!("no match {}/{}", r.rulebook, r.rule));
            for w in &r.why_not {
                self.out.lines.push(format!("         {w}"));
            }
        }
    }

    fn fire_absences_due(&mut self, at: i64) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| o.deadline < at);
        self.open = rest;
        for o in due {
            let r = &self.set.rules[o.rule];
            self.out.lines.push(format!(
                "FIRE     {}/{}: the window opened by {} ended at +{} without `{}`",
                r.rulebook,
                r.name,
                o.opened,
                human_duration(o.deadline),
                o.missing
            ));
            let first = Participant {
                name: r
                    .correlate
                    .as_ref()
                    .map(|c| c.steps[0].name.clone())
                    .unwrap_or_default(),
                id: o.opened.clone(),
                at: 0,
            };
            let opened_body = self.bodies.get(&o.opened).cloned().unwrap_or(Value::Null);
            let shown = self.would_run(o.rule, &[first], Some(o.deadline), &opened_body, &o.opened);
            self.out.lines.extend(shown);
            self.out.report.push(json!({
                "at_ms": o.deadline, "rule": r.name, "fired": true,
                "absence_of": o.missing, "events": [o.opened],
            }));
        }
    }

    /// One rule's decision on event `id`: its line(s), and its item in the JSON report.
    fn decision(&mut self, d: &Decision, body: &Value, id: &str) -> Value {
        let r = &self.set.rules[d.rule];
        let rname = format!("{}/{}", r.rulebook, r.name);
        let mut item = json!({"rule": r.name, "rulebook": r.rulebook});
        match (&d.would, &d.observed) {
            (Would::Throttled, _) => {
                self.out.lines.push(format!("THROTTLED {rname}"));
                item["throttled"] = json!(true);
            }
            (_, None) => {
                self.out.lines.push(format!("MATCH    {rname}"));
                item["matched"] = json!(true);
                let start = self.start_ms + self.at;
                if let Some((line, v)) =
                    super::windows::verdict(self.set, &r.rulebook, &r.name, start)
                {
                    self.out.lines.push(format!("         {line}"));
                    item["window"] = v;
                }
            }
            (_, Some(o)) => {
                if self.correlation(d.rule, &rname, o, body, id) {
                    item["fired"] = json!(true);
                }
                item["correlation"] = json!({
                    "state": o.state, "events": o.events, "deadline_ms": o.deadline,
                    "waiting_for": o.waiting_for, "closed": o.cancelled,
                });
            }
        }
        item
    }

    /// A correlation's view of an event, as lines; true when it fired.
    fn correlation(
        &mut self,
        rule: usize,
        rname: &str,
        o: &Observed,
        body: &Value,
        id: &str,
    ) -> bool {
        let held: Vec<String> = o
            .events
            .iter()
            .map(|p| format!("{}={}", p.name, p.id))
            .collect();
        let until = o
            .deadline
            .map(|d| format!(" until +{}", human_duration(d)))
            .unwrap_or_default();
        match o.state {
            CorrelationState::Fired => {
                self.out
                    .lines
                    .push(format!("FIRE     {rname} with {}", held.join(", ")));
                let shown = self.would_run(rule, &o.events, o.deadline, body, id);
                self.out.lines.extend(shown);
                return true;
            }
            CorrelationState::Waiting => {
                let missing = o.waiting_for.join(", ");
                self.out.lines.push(format!(
                    "WAIT     {rname}: absence window opened by {id}; fires at{} unless `{missing}` comes",
                    until.trim_start_matches(" until")
                ));
                if let Some(deadline) = o.deadline {
                    self.open.push(OpenAbsence {
                        deadline,
                        rule,
                        opened: id.to_string(),
                        missing,
                    });
                }
            }
            CorrelationState::Partial if !o.cancelled.is_empty() => {
                self.open
                    .retain(|w| !(w.rule == rule && o.cancelled.contains(&w.opened)));
                self.out.lines.push(format!(
                    "CLOSE    {rname}: `{}` came in time for {}",
                    o.events.first().map(|p| p.name.as_str()).unwrap_or(""),
                    o.cancelled.join(", ")
                ));
            }
            CorrelationState::Partial => {
                self.out.lines.push(format!(
                    "HOLD     {rname}: holds {}; waits for {}{until}",
                    held.join(", "),
                    o.waiting_for.join(", ")
                ));
            }
        }
        false
    }

    /// The actions a correlation that fired would run, rendered with `events` and
    /// `correlation` as a job sees them.
    fn would_run(
        &self,
        rule: usize,
        took_part: &[Participant],
        deadline: Option<i64>,
        event: &Value,
        id: &str,
    ) -> Vec<String> {
        let r = &self.set.rules[rule];
        let (evs, correlation) = match &r.correlate {
            Some(c) => {
                let with_bodies: Vec<_> = took_part
                    .iter()
                    .map(|p| (p, self.bodies.get(&p.id).cloned().unwrap_or(Value::Null)))
                    .collect();
                c.template_context(&c.group(event), &with_bodies, deadline)
            }
            None => (Value::Null, Value::Null),
        };
        let mut meta = crate::domain::envelope(&self.headers);
        if let Value::Object(m) = &mut meta {
            m.insert("id".into(), json!(id));
            m.insert("rulebook".into(), json!(r.rulebook));
            m.insert("rule".into(), json!(r.name));
        }
        let ctx = crate::templates::context(json!({
            "event": event, "events": evs, "correlation": correlation, "meta": meta,
        }));
        r.actions
            .iter()
            .map(|a| {
                let shown = match a.render(&self.set.templates, &ctx) {
                    Ok(x) => for_people(&x.for_history()),
                    Err(e) => json!({"render_error": e}),
                };
                format!("         would run: {shown}")
            })
            .collect()
    }
}
