//! `rulehook import ansible-rulebook FILE --out DIR`: writes an equivalent rulehook rulebook for
//! an ansible-rulebook (Event-Driven Ansible) file. Sources, conditions (`eda_condition`),
//! throttles and actions are translated; what has no equivalent is listed with its file and
//! line, and left in the output as a comment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::eda_condition::{Base, translate};

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub from: ImportFrom,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ImportFrom {
    /// An ansible-rulebook (Event-Driven Ansible) rulebook.
    AnsibleRulebook(EdaArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EdaArgs {
    /// The ansible-rulebook file.
    pub file: PathBuf,
    /// Where the rulehook rulebook is written (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the output file when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Deserialize)]
struct Ruleset {
    name: Option<String>,
    #[serde(default)]
    sources: Vec<Spanned<Value>>,
    #[serde(default)]
    rules: Vec<Spanned<Rule>>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    name: Spanned<String>,
    condition: Option<Spanned<Value>>,
    action: Option<Spanned<Value>>,
    actions: Option<Vec<Spanned<Value>>>,
    enabled: Option<bool>,
    throttle: Option<Spanned<Value>>,
}

/// The translation of one file: the rulebook text and what was not carried over.
struct Import {
    file: String,
    notes: Vec<String>,
    sources: String,
    rules: String,
}

pub fn run(a: &ImportArgs) -> std::process::ExitCode {
    let ImportFrom::AnsibleRulebook(e) = &a.from;
    match eda(e) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn eda(a: &EdaArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let rulesets: Vec<Ruleset> = serde_saphyr::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an ansible-rulebook file (a list of rulesets): {e}",
            a.file.display()
        )
    })?;
    let shown = a.file.display().to_string();
    let (name, yaml, notes) = convert(&shown, &rulesets);
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let out = a.out.join(format!("{name}.yml"));
    if out.exists() && !a.force {
        anyhow::bail!("{} exists: remove it, or pass --force", out.display());
    }
    std::fs::write(&out, yaml).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    if notes.is_empty() {
        println!("everything was carried over");
    } else {
        println!("not carried over as written (dropped parts are left in the output as comments):");
        for n in &notes {
            println!("  {n}");
        }
    }
    Ok(())
}

/// A name rulehook accepts (`[a-z0-9_-]+`).
fn slug(s: &str) -> String {
    let mut out: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "eda".into() } else { out }
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A YAML single-quoted scalar (conditions keep their double quotes).
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every line of `text` as a YAML comment, indented.
fn commented(text: &str, indent: &str) -> String {
    text.lines().map(|l| format!("{indent}# {l}\n")).collect()
}

/// The rulebook's name (its file stem), its text, and the notes.
fn convert(file: &str, rulesets: &[Ruleset]) -> (String, String, Vec<String>) {
    let name = match rulesets {
        [one] => one.name.as_deref().map(slug),
        _ => None,
    }
    .unwrap_or_else(|| {
        slug(
            Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("eda"),
        )
    });
    let mut imp = Import {
        file: file.to_string(),
        notes: Vec::new(),
        sources: String::new(),
        rules: String::new(),
    };
    for rs in rulesets {
        imp.ruleset(rs, rulesets.len() > 1);
    }
    // In the order of the file.
    imp.notes.sort_by_key(|n| {
        n[file.len() + 1..]
            .split(':')
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let mut yaml = format!(
        "# Translated by `rulehook import ansible-rulebook` from {file}.\n# ansible-rulebook took the inventory from its -i argument: give run_playbook an `inventory:`.\n"
    );
    if !imp.notes.is_empty() {
        yaml.push_str(
            "# Not carried over as written (dropped parts are left below as comments):\n",
        );
        for n in &imp.notes {
            let _ = writeln!(yaml, "#   {n}");
        }
    }
    let _ = write!(yaml, "sources:\n{}rules:\n{}", imp.sources, imp.rules);
    (name, yaml, imp.notes)
}

impl Import {
    fn note(&mut self, line: u64, what: impl Into<String>) {
        self.notes
            .push(format!("{}:{line}: {}", self.file, what.into()));
    }

    fn ruleset(&mut self, rs: &Ruleset, prefix_names: bool) {
        let rs_name = slug(rs.name.as_deref().unwrap_or("eda"));
        let mut names = Vec::new();
        let mut bases = Vec::new();
        for (i, s) in rs.sources.iter().enumerate() {
            if let Some((n, base)) = self.source(s, &rs_name, i) {
                names.push(n);
                bases.push(base);
            }
        }
        // One kind of source: every rule reads its events. Webhook and Alertmanager sources
        // together: each rule is given the sources whose events it reads (below).
        let uniform = match bases.first() {
            Some(b) if bases.iter().all(|x| x == b) => Some(*b),
            _ => None,
        };
        let posts = rs.rules.iter().any(|r| {
            let r = &r.value;
            r.action
                .iter()
                .chain(r.actions.iter().flatten())
                .any(|a| a.value.get("post_event").is_some())
        });
        let internal = format!("{rs_name}-posted");
        if posts {
            let _ = writeln!(self.sources, "  - name: {internal}\n    kind: internal");
            names.push(internal.clone());
        }
        let of_base = |want: Base| -> Vec<String> {
            let mut v: Vec<String> = names
                .iter()
                .zip(&bases)
                .filter(|(_, b)| **b == want)
                .map(|(n, _)| n.clone())
                .collect();
            if posts {
                v.push(internal.clone());
            }
            v
        };
        for r in &rs.rules {
            let rule_name = if prefix_names {
                format!("{rs_name}-{}", r.value.name.value)
            } else {
                r.value.name.value.clone()
            };
            let (base, sources) = match uniform {
                Some(b) => (b, names.clone()),
                None => match reads(&r.value) {
                    (true, false) => (Base::Payload, of_base(Base::Payload)),
                    (false, true) => (Base::Alert, of_base(Base::Alert)),
                    (true, true) => {
                        self.note(
                            r.value.name.referenced.line(),
                            format!("rule `{rule_name}` reads both `event.payload` (webhook events) and `event.alert` (Alertmanager events), which no one event has: write one rule for each"),
                        );
                        (Base::Plain, names.clone())
                    }
                    (false, false) => (Base::Plain, names.clone()),
                },
            };
            let ctx = RuleCtx {
                base,
                sources: &sources,
                internal: &internal,
            };
            match self.rule(&r.value, &rule_name, &ctx) {
                Some(text) => self.rules.push_str(&text),
                None => {
                    // Left whole as a comment: its condition has no translation.
                    let original =
                        serde_json::to_string_pretty(&rule_as_json(&r.value)).unwrap_or_default();
                    let _ = write!(
                        self.rules,
                        "  # rule {} (not carried over, see the list at the top):\n{}",
                        q(&rule_name),
                        commented(&original, "  ")
                    );
                }
            }
        }
    }

    /// One source: its rulehook entry, or a note.
    fn source(&mut self, s: &Spanned<Value>, rs: &str, i: usize) -> Option<(String, Base)> {
        let line = s.referenced.line();
        let Some(map) = s.value.as_object() else {
            self.note(line, "a source that is not a mapping");
            return None;
        };
        let plugin = map
            .keys()
            .find(|k| *k != "name" && *k != "filters")
            .cloned()
            .unwrap_or_default();
        let args = map.get(&plugin).cloned().unwrap_or(Value::Null);
        let short = plugin.rsplit('.').next().unwrap_or_default().to_string();
        let name = slug(map.get("name").and_then(Value::as_str).unwrap_or(&format!(
            "{rs}-{short}{}",
            if i > 0 {
                format!("-{i}")
            } else {
                String::new()
            }
        )));
        if map.contains_key("filters") {
            self.note(line, format!("source `{plugin}`: its event filters"));
        }
        let env = name.to_uppercase().replace('-', "_");
        let entry = match short.as_str() {
            "webhook" => {
                if let Some(tok) = args.get("token") {
                    let _ = tok;
                    format!(
                        "  - name: {name}\n    kind: bearer\n    secret: ${{env:{env}_TOKEN}}\n"
                    )
                } else if args.get("hmac_secret").is_some() {
                    let algo = args
                        .get("hmac_algo")
                        .and_then(Value::as_str)
                        .unwrap_or("sha256");
                    let header = args
                        .get("hmac_header")
                        .and_then(Value::as_str)
                        .unwrap_or("x-hub-signature-256");
                    let format = args
                        .get("hmac_format")
                        .and_then(Value::as_str)
                        .unwrap_or("hex");
                    format!(
                        "  - name: {name}\n    kind: hmac\n    secret: ${{env:{env}_HMAC_SECRET}}\n    header: {header}\n    algorithm: {algo}\n    encoding: {format}\n"
                    )
                } else {
                    format!("  - name: {name}\n    kind: none\n")
                }
            }
            "alertmanager" => format!(
                "  # Alertmanager can send a bearer token (http_config.authorization): prefer kind: bearer.\n  - name: {name}\n    kind: none\n"
            ),
            _ => {
                self.note(line, format!("source `{plugin}` (rulehook receives webhooks; post its events to a source instead)"));
                let original = serde_json::to_string(&s.value).unwrap_or_default();
                let _ = write!(self.sources, "{}", commented(&original, "  "));
                return None;
            }
        };
        self.sources.push_str(&entry);
        let base = if short == "alertmanager" {
            Base::Alert
        } else {
            Base::Payload
        };
        Some((name, base))
    }
}

/// Whether a rule reads `event.payload` (a webhook's event) and `event.alert` (an
/// Alertmanager's), in its condition, throttle or actions.
fn reads(r: &Rule) -> (bool, bool) {
    let mut text = rule_as_json(r).to_string();
    if let Some(t) = &r.throttle {
        text.push_str(&t.value.to_string());
    }
    (text.contains("event.payload"), text.contains("event.alert"))
}

struct RuleCtx<'a> {
    base: Base,
    sources: &'a [String],
    internal: &'a str,
}

fn rule_as_json(r: &Rule) -> Value {
    let mut v = serde_json::json!({"name": r.name.value});
    if let Some(c) = &r.condition {
        v["condition"] = c.value.clone();
    }
    if let Some(a) = &r.action {
        v["action"] = a.value.clone();
    }
    if let Some(a) = &r.actions {
        v["actions"] = Value::Array(a.iter().map(|x| x.value.clone()).collect());
    }
    v
}

/// `5 minutes` → `5m`.
fn duration(s: &str) -> Option<String> {
    let mut it = s.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    let unit = match it.next()?.trim_end_matches('s') {
        "second" | "sec" => "s",
        "minute" | "min" => "m",
        "hour" => "h",
        "day" => "d",
        _ => return None,
    };
    Some(format!("{n}{unit}"))
}

/// A Jinja string from EDA with `event.payload` read as rulehook's `event` (and a
/// correlation's `events.m_0.payload` as `events.m_0`).
fn template(s: &str, base: Base) -> String {
    match base {
        Base::Payload => events_payload(s)
            .replace("event.payload.", "event.")
            .replace("event.payload", "event"),
        // One event per notification: its first alert (noted where it happens).
        Base::Alert => s
            .replace("event.alert", "event.alerts[0]")
            .replace("event.alerts[0]s", "event.alerts"),
        Base::Plain => s.to_string(),
    }
}

/// `events.<name>.payload…` (EDA's events of a multi-condition rule nest the webhook's body
/// under `payload`) as `events.<name>…`: rulehook's `events.<name>` is the body itself.
fn events_payload(s: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("events.") {
        let after = at + "events.".len();
        let preceded = rest[..at].chars().next_back().is_some_and(word);
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let name = rest.find(|c: char| !word(c)).unwrap_or(rest.len());
        out.push_str(&rest[..name]);
        rest = &rest[name..];
        if let Some(tail) = rest.strip_prefix(".payload")
            && !preceded
            && !tail.starts_with(word)
        {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// A JSON value whose strings are templates, made fit for rulehook.
fn templates_in(v: &Value, base: Base) -> Value {
    match v {
        Value::String(s) => Value::String(template(s, base)),
        Value::Array(a) => Value::Array(a.iter().map(|x| templates_in(x, base)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), templates_in(x, base)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Import {
    /// One rule's text, or None when its condition cannot be translated.
    fn rule(&mut self, r: &Rule, name: &str, cx: &RuleCtx) -> Option<String> {
        let line = r.name.referenced.line();
        let mut out = format!("  - name: {}\n", q(&name.replace(['/', ':'], "-")));
        if r.enabled == Some(false) {
            out.push_str("    enabled: false\n");
        }
        if !cx.sources.is_empty() {
            let _ = writeln!(out, "    sources: [{}]", cx.sources.join(", "));
        }
        match &r.condition {
            None => {}
            Some(c) => out.push_str(&self.condition(c, cx.base)?),
        }
        if let Some(t) = &r.throttle {
            out.push_str(&self.throttle(t, cx.base));
        }
        out.push_str("    actions:\n");
        let actions: Vec<&Spanned<Value>> =
            r.action.iter().chain(r.actions.iter().flatten()).collect();
        let mut any = false;
        for a in actions {
            match self.action(a, cx) {
                Ok(text) => {
                    out.push_str(&text);
                    any = true;
                }
                Err(why) => {
                    self.note(a.referenced.line(), why);
                    out.push_str(&commented(
                        &serde_json::to_string(&a.value).unwrap_or_default(),
                        "      ",
                    ));
                }
            }
        }
        if !any {
            self.note(
                line,
                format!("rule `{name}`: none of its actions is carried over"),
            );
            return None;
        }
        Some(out)
    }

    fn condition(&mut self, c: &Spanned<Value>, base: Base) -> Option<String> {
        let line = c.referenced.line();
        let one = |this: &mut Self, s: &Value| -> Option<String> {
            let Some(text) = s.as_str() else {
                this.note(line, format!("condition `{s}` is not a string"));
                return None;
            };
            translate(text, base)
                .map_err(|why| this.note(line, format!("condition `{text}`: {why}")))
                .ok()
        };
        match &c.value {
            Value::Object(m) => {
                let timeout = m.get("timeout").and_then(Value::as_str).and_then(duration);
                if let Some(Value::Array(items)) = m.get("any") {
                    let parts: Option<Vec<String>> = items.iter().map(|i| one(self, i)).collect();
                    let parts = parts?;
                    let joined = parts
                        .iter()
                        .map(|p| format!("({p})"))
                        .collect::<Vec<_>>()
                        .join(" || ");
                    return Some(format!("    condition: {}\n", sq(&joined)));
                }
                if let Some(Value::Array(items)) = m.get("all") {
                    let parts: Option<Vec<String>> = items.iter().map(|i| one(self, i)).collect();
                    let parts = parts?;
                    if let [single] = parts.as_slice() {
                        return Some(format!("    condition: {}\n", sq(single)));
                    }
                    // Several events, one per condition: a correlation (EDA names them m_0, m_1…).
                    let mut out = format!(
                        "    correlate:\n      within: {}\n      all_of:\n",
                        timeout.unwrap_or_else(|| "2h".into())
                    );
                    for (i, p) in parts.iter().enumerate() {
                        let _ = writeln!(out, "        - {{ name: m_{i}, condition: {} }}", sq(p));
                    }
                    return Some(out);
                }
                self.note(
                    line,
                    format!(
                        "condition `{}` (only all: and any: are carried over)",
                        c.value
                    ),
                );
                None
            }
            v => one(self, v).map(|t| format!("    condition: {}\n", sq(&t))),
        }
    }

    fn throttle(&mut self, t: &Spanned<Value>, base: Base) -> String {
        let line = t.referenced.line();
        let Some(within) = t
            .value
            .get("once_within")
            .and_then(Value::as_str)
            .and_then(duration)
        else {
            self.note(
                line,
                format!("throttle {} (only once_within is carried over)", t.value),
            );
            return commented(&format!("throttle: {}", t.value), "    ");
        };
        let mut groups = Vec::new();
        for g in t
            .value
            .get("group_by_attributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = g.as_str().unwrap_or_default();
            // A path alone is an existence test: its translation is the query itself.
            match translate(&format!("{path} is defined"), base) {
                Ok(p) if base != Base::Alert => groups.push(sq(&p)),
                _ => {
                    self.note(line, format!("throttle group `{path}`"));
                }
            }
        }
        format!(
            "    throttle: {{ once_within: {within}, group_by: [{}] }}\n",
            groups.join(", ")
        )
    }

    /// One action's text (a list item), or why it has no translation.
    fn action(&mut self, a: &Spanned<Value>, cx: &RuleCtx) -> Result<String, String> {
        let line = a.referenced.line();
        let Some((kind, args)) = a.value.as_object().and_then(|m| m.iter().next()) else {
            return Err(format!("action {}", a.value));
        };
        let empty = serde_json::Map::new();
        let m = args.as_object().unwrap_or(&empty);
        let known: &[&str] = match kind.as_str() {
            "run_playbook" => &["name", "extra_vars", "retries", "retry", "lock"],
            "run_job_template" | "run_workflow_template" => {
                &["name", "organization", "job_args", "retries", "retry"]
            }
            "post_event" => &["event"],
            "debug" => &["msg", "var"],
            "print_event" => &["pretty", "var_root"],
            "none" => &[],
            other => return Err(format!("action `{other}` has no rulehook equivalent")),
        };
        for k in m.keys().filter(|k| !known.contains(&k.as_str())) {
            self.note(line, format!("`{kind}`: `{k}`"));
        }
        let retries = m
            .get("retries")
            .and_then(Value::as_u64)
            .or_else(|| (m.get("retry") == Some(&Value::Bool(true))).then_some(1));
        if cx.base == Base::Alert && a.value.to_string().contains("event.alert") {
            self.note(
                line,
                format!("`{kind}` reads `event.alert`: rulehook's event is the whole notification, so `event.alerts[0]` (its first alert) is used"),
            );
        }
        let tv = |v: &Value| serde_json::to_string(&templates_in(v, cx.base)).unwrap_or_default();
        let mut out = String::new();
        match kind.as_str() {
            "run_playbook" => {
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("run_playbook without `name`")?;
                let _ = writeln!(
                    out,
                    "      - run_playbook:\n          playbook: {}",
                    q(name)
                );
                if let Some(v) = m.get("extra_vars") {
                    let _ = writeln!(out, "          extra_vars: {}", tv(v));
                }
                if let Some(l) = m.get("lock").and_then(Value::as_str) {
                    let _ = writeln!(out, "          lock: {}", q(&template(l, cx.base)));
                }
                if let Some(r) = retries {
                    let _ = writeln!(out, "          retries: {r}");
                }
            }
            "run_job_template" | "run_workflow_template" => {
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a template without `name`")?;
                let _ = writeln!(
                    out,
                    "      - {kind}:\n          requires_env: [EDA_CONTROLLER_URL, EDA_CONTROLLER_TOKEN]\n          url: ${{env:EDA_CONTROLLER_URL}}\n          token: ${{env:EDA_CONTROLLER_TOKEN}}\n          name: {}",
                    q(name)
                );
                if let Some(o) = m.get("organization").and_then(Value::as_str) {
                    let _ = writeln!(out, "          organization: {}", q(o));
                }
                let job_args = m.get("job_args").cloned().unwrap_or(Value::Null);
                if let Some(v) = job_args.get("extra_vars") {
                    let _ = writeln!(out, "          extra_vars: {}", tv(v));
                }
                if let Some(l) = job_args.get("limit").and_then(Value::as_str) {
                    let _ = writeln!(out, "          limit: {}", q(&template(l, cx.base)));
                }
                for k in job_args.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if k != "extra_vars" && k != "limit" {
                        self.note(line, format!("`{kind}`: job_args `{k}`"));
                    }
                }
                if let Some(r) = retries {
                    let _ = writeln!(out, "          retries: {r}");
                }
            }
            "post_event" => {
                let event = m.get("event").ok_or("post_event without `event`")?;
                let body = json_body(&templates_in(event, cx.base))
                    .map_err(|w| format!("post_event: {w}"))?;
                let _ = writeln!(
                    out,
                    "      - post_event:\n          source: {}\n          body: {}",
                    cx.internal,
                    q(&body)
                );
            }
            "debug" => {
                let message = match (m.get("msg"), m.get("var")) {
                    (Some(Value::String(s)), _) => template(s, cx.base),
                    (Some(other), _) => other.to_string(),
                    (None, Some(Value::String(v))) => format!("{{{{ {} }}}}", template(v, cx.base)),
                    _ => "{{ event | tojson }}".into(),
                };
                let _ = writeln!(out, "      - log: {{ message: {} }}", q(&message));
            }
            "print_event" => {
                out.push_str("      - log: { message: \"{{ event | tojson }}\" }\n");
            }
            _ => {
                // `none`: the rule matches and does nothing; the log line shows it matched.
                out.push_str("      - log: { level: debug, message: \"matched\" }\n");
            }
        }
        Ok(out)
    }
}

/// A JSON body template for `post_event`: strings stay JSON strings, their `{{ … }}` inside
/// the quotes (rulehook escapes each rendered value for JSON).
fn json_body(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) if s.contains("{{") => {
            let mut out = String::from("\"");
            let mut rest = s.as_str();
            let inner = |t: &str| {
                let quoted = q(t);
                quoted[1..quoted.len() - 1].to_string()
            };
            while let Some(start) = rest.find("{{") {
                out.push_str(&inner(&rest[..start]));
                let end = rest[start..].find("}}").ok_or("an unclosed `{{`")? + start;
                out.push_str(&rest[start..end + 2]);
                rest = &rest[end + 2..];
            }
            out.push_str(&inner(rest));
            out.push('"');
            out
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter()
                .map(json_body)
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, x)| Ok(format!("{}: {}", q(k), json_body(x)?)))
                .collect::<Result<Vec<_>, String>>()?
                .join(", ")
        ),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_correlation_s_events_lose_their_payload() {
        assert_eq!(
            template(
                "{{ events.m_0.payload.type }}, {{ events.m_1.payload }}, {{ myevents.m_0.payload.x }}, {{ events.m_0.payloads }}",
                Base::Payload
            ),
            "{{ events.m_0.type }}, {{ events.m_1 }}, {{ myevents.m_0.payload.x }}, {{ events.m_0.payloads }}"
        );
    }

    #[test]
    fn durations_and_bodies() {
        assert_eq!(duration("5 minutes").as_deref(), Some("5m"));
        assert_eq!(duration("1 hour").as_deref(), Some("1h"));
        assert_eq!(duration("soon"), None);
        assert_eq!(
            json_body(&serde_json::json!({"host": "{{ event.host }}", "msg": "down: {{ event.i }}!", "n": 1})).unwrap(),
            r#"{"host": "{{ event.host }}", "msg": "down: {{ event.i }}!", "n": 1}"#
        );
    }
}
