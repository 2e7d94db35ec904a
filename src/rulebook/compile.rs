//! The context one rulebook file is compiled in: its name and text, the errors and warnings
//! found so far (each located by file, line and column), and the values that came from
//! `${…}` references. `rules::load` and every action kind's `compile` report through it.

use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::LoadError;
use crate::secrets::{Secret, expand};
use crate::templates::{Templates, Text};
use crate::units::parse_duration;

/// One rulebook file being compiled: its name, text, and the errors found so far.
pub struct Compile<'a> {
    pub file: String,
    pub text: &'a str,
    pub errors: &'a mut Vec<LoadError>,
    pub warnings: &'a mut Vec<String>,
    /// Every value that came from a `${…}` reference, in order: credentials to mask.
    pub referenced: Vec<String>,
    /// The template variables the action being compiled will have.
    pub scope: Scope,
    /// In a correlation rule's actions: the names templates may read as `events.<name>`.
    pub correlation: Option<Vec<String>>,
    /// In a rule's actions: the sources its events come from, for the `meta.<name>` its
    /// templates read.
    pub envelope: Option<RuleSources>,
}

/// The sources a rule's events may come from, so `check` sees a template read a `meta` field
/// those events lack (`meta.topic` in a syslog rule) instead of it failing every run.
#[derive(Debug, Default, Clone)]
pub struct RuleSources {
    /// `true`: the rule's own `sources:`; `false`: it names none, so these are every source.
    pub listed: bool,
    /// Each source's name, kind and the envelope names its kind offers.
    pub sources: Vec<(String, &'static str, &'static [&'static str])>,
    /// Some declared source did not compile (its own error is reported): "no source sets it"
    /// is then not said, since that one might.
    pub incomplete: bool,
}

/// `meta` fields every event has in templates.
const META_FIXED: &[&str] = &[
    "id",
    "source",
    "kind",
    "received_at",
    "rulebook",
    "rule",
    "headers",
];
/// `meta` fields only some transports set (the envelope).
const META_ENVELOPE: &[&str] = &["peer", "topic", "subject"];

/// Which template variables exist where: `previous` from a rule's second action on, `failure`
/// in `on_failure` actions; `event` and `meta` everywhere.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub previous: bool,
    pub failure: bool,
    /// `approval` (an `approval.notify` action).
    pub approval: bool,
}

impl Default for Scope {
    /// Everything (where no action is being compiled).
    fn default() -> Self {
        Scope {
            previous: true,
            failure: true,
            approval: true,
        }
    }
}

/// What `approval` holds in a `notify` action (`engine::approval::Request::view`).
const APPROVAL_FIELDS: &[&str] = &[
    "url",
    "job",
    "rule",
    "rulebook",
    "event_id",
    "reason",
    "requested_at",
    "deadline",
    "on_timeout",
    "approvers",
    "actions",
];

/// Also in the request, for completeness (not offered in messages).
const APPROVAL_MORE: &[&str] = &["generation", "notify_done", "notified", "decision"];

const VARIABLES: &[&str] = &[
    "event",
    "meta",
    "previous",
    "failure",
    "events",
    "correlation",
    "approval",
];

impl Compile<'_> {
    pub fn err(&mut self, loc: &Location, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.file.clone(),
            line: loc.line().max(1),
            column: loc.column().max(1),
            message: message.into(),
        });
    }

    /// Expands `${env:…}`/`${file:…}` in a spanned string.
    pub fn expand(&mut self, s: &Spanned<String>, what: &str) -> Option<String> {
        self.expand_at(&s.value, &s.referenced, what)
    }

    /// Expands `${env:…}`/`${file:…}` in `text`, written at `at`.
    fn expand_at(&mut self, text: &str, at: &Location, what: &str) -> Option<String> {
        match expand(text) {
            Ok(e) => {
                for name in e.fallbacks {
                    self.warnings.push(format!(
                        "{}:{}: {what} uses the fallback of `${{env:{name}}}` because {name} is not set",
                        self.file,
                        at.line()
                    ));
                }
                for secret in &e.secrets {
                    if !crate::secrets::remember(secret) {
                        self.warnings.push(format!(
                            "{}:{}: {what}: a value from `${{…}}` shorter than {} characters cannot be masked in logs and the history",
                            self.file,
                            at.line(),
                            crate::secrets::MIN_MASKED
                        ));
                    }
                }
                if e.referenced {
                    self.referenced.push(e.value.clone());
                }
                Some(e.value)
            }
            Err(msg) => {
                self.err(at, format!("{what}: {msg}"));
                None
            }
        }
    }

    /// Expands `${env:…}`/`${file:…}` in every string (and map key) of a structured value
    /// written at `at` — a JSON body, `extra_vars` — as in a plain string.
    pub fn expand_value(
        &mut self,
        v: &serde_json::Value,
        at: &Location,
        what: &str,
    ) -> Option<serde_json::Value> {
        use serde_json::Value;
        Some(match v {
            Value::String(s) if s.contains("${") => Value::String(self.expand_at(s, at, what)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|x| self.expand_value(x, at, what))
                    .collect::<Option<_>>()?,
            ),
            Value::Object(m) => {
                let mut out = serde_json::Map::with_capacity(m.len());
                for (k, x) in m {
                    out.insert(k.clone(), self.expand_value(x, at, what)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    pub fn secret(&mut self, s: &Spanned<String>, what: &str) -> Option<Secret> {
        let v = self.expand(s, what)?;
        if v.is_empty() {
            self.err(&s.referenced, format!("{what} is empty"));
            return None;
        }
        // A credential written in the rulebook itself is masked like one from `${…}` (a user
        // name is not a secret: masking `admin` everywhere would hide more than it protects).
        if what != "username" {
            crate::secrets::remember(&v);
        }
        Some(Secret::new(v))
    }

    /// An optional `timeout`, defaulting to `default`.
    pub fn timeout_or(
        &mut self,
        s: Option<&Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        match s {
            Some(s) => self.duration(s, "timeout"),
            None => Some(default),
        }
    }

    pub fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        parse_duration(&s.value)
            .map_err(|m| self.err(&s.referenced, format!("{what}: {m}")))
            .ok()
    }

    /// Location of the first character of a (possibly quoted) scalar.
    pub fn content_start(&self, loc: &Location) -> (u64, u64) {
        let (line, col) = (loc.line().max(1), loc.column().max(1));
        let quoted = self
            .text
            .lines()
            .nth((line - 1) as usize)
            .and_then(|l| l.chars().nth((col - 1) as usize))
            .is_some_and(|c| c == '\'' || c == '"');
        (line, col + u64::from(quoted))
    }

    /// Expands a spanned string and compiles it as an inline template named `name`.
    pub fn template(
        &mut self,
        t: &mut Templates,
        name: String,
        s: &Spanned<String>,
        what: &str,
    ) -> Option<Text> {
        self.template_as(t, name, s, what, false)
    }

    /// [`Compile::template`]; `url`: compiled as a request URL (`Templates::inline_url`).
    fn template_as(
        &mut self,
        t: &mut Templates,
        name: String,
        s: &Spanned<String>,
        what: &str,
        url: bool,
    ) -> Option<Text> {
        let value = self.expand(s, what)?;
        let compiled = if url {
            t.inline_url(name, &value)
        } else {
            t.inline(name, &value)
        };
        match compiled {
            Ok(text) => {
                if let Text::Template(n) = &text {
                    self.check_names(t, n, s, &value, what)?;
                    let (line, col) = self.content_start(&s.referenced);
                    return Some(t.place(text, &self.file, line, col));
                }
                Some(text)
            }
            Err(msg) => {
                self.err(&s.referenced, format!("{what}: template error: {msg}"));
                None
            }
        }
    }

    /// `body` (inline) or `body_template` (a file under templates/), exactly one. A body sent
    /// as JSON (`json`) escapes every value as JSON, wherever it comes from.
    pub fn body_text(
        &mut self,
        t: &mut Templates,
        prefix: &str,
        body: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        at: &Spanned<String>,
        json: bool,
    ) -> Option<Text> {
        match (body, file) {
            (Some(b), None) if json => {
                let value = self.expand(b, "body")?;
                match t.inline_json(format!("{prefix}/body"), &value) {
                    Ok(text) => {
                        if let Text::Template(n) = &text {
                            self.check_names(t, n, b, &value, "body")?;
                            let (line, col) = self.content_start(&b.referenced);
                            return Some(t.place(text, &self.file, line, col));
                        }
                        Some(text)
                    }
                    Err(msg) => {
                        self.err(&b.referenced, format!("body: template error: {msg}"));
                        None
                    }
                }
            }
            (Some(b), None) => self.template(t, format!("{prefix}/body"), b, "body"),
            (None, Some(f)) => {
                if t.has(&f.value) && json {
                    self.check_names(t, &f.value, f, "", "body_template")?;
                    t.file_json(&f.value)
                        .map_err(|m| self.err(&f.referenced, format!("body_template: {m}")))
                        .ok()
                } else if t.has(&f.value) {
                    self.check_names(t, &f.value, f, "", "body_template")?;
                    Some(Text::Template(f.value.clone()))
                } else {
                    self.err(
                        &f.referenced,
                        format!(
                            "body_template `{}` is not a file in the templates directory",
                            f.value
                        ),
                    );
                    None
                }
            }
            (Some(b), Some(_)) => {
                self.err(&b.referenced, "give `body` or `body_template`, not both");
                None
            }
            (None, None) => {
                self.err(
                    &at.referenced,
                    "a body is required: `body` or `body_template`",
                );
                None
            }
        }
    }

    /// Checks that template `name` (written at `s`, its text `value`; empty for a file) reads
    /// only variables that exist where it runs; each other name is an error at its column.
    fn check_names(
        &mut self,
        t: &Templates,
        name: &str,
        s: &Spanned<String>,
        value: &str,
        what: &str,
    ) -> Option<()> {
        let here = TemplateAt {
            name,
            s,
            value,
            what,
        };
        let mut ok = true;
        for var in t.free_names(name) {
            let problem = match var.as_str() {
                "event" | "meta" | "events" | "correlation" => continue,
                "previous" if self.scope.previous => continue,
                "failure" if self.scope.failure => continue,
                "approval" if self.scope.approval => continue,
                "approval" => {
                    "`approval` exists only in the `notify` actions of a rule's `approval`".to_string()
                }
                "previous" => {
                    "`previous` is the previous action's result, and the first action of a rule has none".to_string()
                }
                "failure" => "`failure` exists only in `on_failure` actions".to_string(),
                other => match crate::rulebook::yaml_error::closest(other, VARIABLES) {
                    Some(best) => format!("`{other}` is not defined; did you mean `{best}`?"),
                    None => format!(
                        "`{other}` is not defined: the event's fields are under `event` (e.g. `event.{other}`); templates see event, meta, previous (from the second action) and failure (in on_failure)"
                    ),
                },
            };
            let at = word_offset(value, &var);
            self.template_error(here, at, problem);
            ok = false;
        }
        for (word, problem) in t.unknown_uses(name) {
            let at = value.find(word.as_str());
            self.template_error(here, at, problem);
            ok = false;
        }
        ok &= self.check_meta(t, name, s, value, what);
        ok &= self.check_approval(t, name, s, value, what);
        if let Some(names) = self.correlation.clone() {
            for step in t.attributes_of(name, "events") {
                if names.contains(&step) {
                    continue;
                }
                let problem = format!(
                    "`events.{step}` names no event of this correlation (its names: {})",
                    names.join(", ")
                );
                let at = word_offset(value, "events");
                self.template_error(here, at, problem);
                ok = false;
            }
        }
        ok.then_some(())
    }

    /// The `approval.<field>`s template `name` reads (in a `notify` action): a field the request
    /// does not have is an error at load, as a misspelt `meta.` field is; it failed each notify
    /// when approval was asked, with nobody told. `false` after an error.
    fn check_approval(
        &mut self,
        t: &Templates,
        name: &str,
        s: &Spanned<String>,
        value: &str,
        what: &str,
    ) -> bool {
        if !self.scope.approval {
            return true;
        }
        let mut ok = true;
        let here = TemplateAt {
            name,
            s,
            value,
            what,
        };
        for field in t.attributes_of(name, "approval") {
            if APPROVAL_FIELDS.contains(&field.as_str()) || APPROVAL_MORE.contains(&field.as_str())
            {
                continue;
            }
            let hint = match crate::text::closest(&field, APPROVAL_FIELDS) {
                Some(best) => format!("; did you mean `approval.{best}`?"),
                None => String::new(),
            };
            let problem = format!(
                "`approval.{field}` is not a field of the approval request{hint} (its fields: {})",
                APPROVAL_FIELDS.join(", ")
            );
            let at = value.find(&format!("approval.{field}"));
            self.template_error(here, at, problem);
            ok = false;
        }
        ok
    }

    /// The `meta.<field>`s template `name` reads that its rule's events may lack: an unknown
    /// field, or an envelope field a source of the rule does not offer, is an error (for a rule
    /// without `sources:`, an error only when no source offers it, else a warning); `false`
    /// after an error.
    fn check_meta(
        &mut self,
        t: &Templates,
        name: &str,
        s: &Spanned<String>,
        value: &str,
        what: &str,
    ) -> bool {
        let Some(env) = self.envelope.clone() else {
            return true;
        };
        let here = TemplateAt {
            name,
            s,
            value,
            what,
        };
        let mut ok = true;
        for field in t.attributes_of(name, "meta") {
            if META_FIXED.contains(&field.as_str()) {
                continue;
            }
            let lacking: Vec<String> = env
                .sources
                .iter()
                .filter(|(_, _, offers)| !offers.contains(&field.as_str()))
                .map(|(s, kind, offers)| {
                    let offered = offers
                        .iter()
                        .filter(|o| !o.starts_with("headers"))
                        .copied()
                        .collect::<Vec<_>>();
                    match offered.as_slice() {
                        [] => format!("`{s}` ({kind}, which offers none)"),
                        some => format!("`{s}` ({kind}, which offers {})", some.join(", ")),
                    }
                })
                .collect();
            let problem = if !META_ENVELOPE.contains(&field.as_str()) {
                // Proposed only among what the rule's events carry: `meta.subject` for
                // `meta.subjct` on a GitHub source would be the next error.
                let offered = |f: &str| {
                    !env.listed || env.sources.iter().any(|(_, _, offers)| offers.contains(&f))
                };
                let all: Vec<&str> = META_FIXED
                    .iter()
                    .chain(META_ENVELOPE.iter().filter(|f| offered(f)))
                    .copied()
                    .collect();
                match crate::rulebook::yaml_error::closest(&field, &all) {
                    Some(best) => {
                        format!("`meta.{field}` is not defined; did you mean `meta.{best}`?")
                    }
                    None => format!("`meta.{field}` is not defined; meta has {}", all.join(", ")),
                }
            } else if lacking.is_empty() {
                continue;
            } else if env.listed {
                format!(
                    "`meta.{field}`: the rule's source {} does not set it",
                    lacking.join(", ")
                )
            } else if lacking.len() == env.sources.len() && env.incomplete {
                continue;
            } else if lacking.len() == env.sources.len() {
                format!("`meta.{field}`: no declared source sets it")
            } else {
                let (line, _) = self.content_start(&s.referenced);
                self.warnings.push(format!(
                    "{}:{line}: {what}: `meta.{field}` is undefined on events of {} (the rule has no `sources:`, so it sees every source); name its sources, or use `| default(…)`",
                    self.file,
                    lacking.join(", ")
                ));
                continue;
            };
            let at = value.find(&format!("meta.{field}"));
            self.template_error(here, at, problem);
            ok = false;
        }
        ok
    }

    /// An error in template `name` (the text `value` of `s`, a `what`): at `at` in the text when
    /// the text is one line as written (no `${…}` expanded into it), else where the text starts.
    fn template_error(&mut self, t: TemplateAt<'_>, at: Option<usize>, problem: String) {
        let TemplateAt {
            name,
            s,
            value,
            what,
        } = t;
        let message = if value.is_empty() {
            format!("{what} `{name}`: {problem}")
        } else {
            format!("{what}: {problem}")
        };
        let (line, col) = self.content_start(&s.referenced);
        let column = match at {
            Some(off) if !value.contains('\n') && !s.value.contains("${") => col + off as u64,
            _ => col,
        };
        self.errors.push(LoadError {
            file: self.file.clone(),
            line,
            column,
            message,
        });
    }

    /// An optional `api_url` (http or https, without a trailing `/`), or `default`.
    pub fn api_url(&mut self, given: Option<&Spanned<String>>, default: &str) -> Option<String> {
        match given {
            None => Some(default.to_string()),
            Some(s) => {
                let v = self.expand(s, "api_url")?;
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    self.err(
                        &s.referenced,
                        format!("api_url `{v}` must start with http:// or https://"),
                    );
                    return None;
                }
                Some(v.trim_end_matches('/').to_string())
            }
        }
    }

    /// A request's `url` (a template). Written out, it must be an absolute http:// or https://
    /// URL; templated, the text it starts with must begin one (`{{ event.hook }}` alone is
    /// fine). A URL the HTTP client cannot send fails every event's action, so `check` says so.
    pub fn url(
        &mut self,
        t: &mut Templates,
        name: String,
        s: &Spanned<String>,
        what: &str,
    ) -> Option<Text> {
        let text = self.template_as(t, name, s, what, true)?;
        let problem = match &text {
            Text::Literal(u) => match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => None,
                Ok(url) => Some(format!(
                    "must start with http:// or https://, not {}:",
                    url.scheme()
                )),
                Err(e) => Some(format!(
                    "is not an absolute URL ({e}): write it whole, as https://host/path"
                )),
            },
            Text::Template(n) | Text::Inline(n, _) => {
                let src = t.source(n).unwrap_or_default();
                let cut = ["{{", "{%", "{#"]
                    .iter()
                    .filter_map(|m| src.find(m))
                    .min()
                    .unwrap_or(src.len());
                let lead = src[..cut].to_ascii_lowercase();
                let fits = |scheme: &str| lead.starts_with(scheme) || scheme.starts_with(&lead);
                (!fits("http://") && !fits("https://"))
                    .then(|| "must start with http:// or https://".to_string())
            }
        };
        if let Some(problem) = problem {
            // A URL from `${env:…}` may be a credential (a chat webhook's): not repeated.
            let shown = if s.value.contains("${") {
                String::new()
            } else {
                format!(" `{}`", s.value)
            };
            self.err(&s.referenced, format!("{what}{shown} {problem}"));
            return None;
        }
        Some(text)
    }
}

/// A spanned string with another value at the same location (for composed templates).
pub fn spanned_like(at: &Spanned<String>, value: String) -> Spanned<String> {
    Spanned {
        value,
        referenced: at.referenced,
        defined: at.defined,
    }
}

/// Which template an error is in, and where its text is written (see `template_error`).
#[derive(Clone, Copy)]
struct TemplateAt<'a> {
    name: &'a str,
    s: &'a Spanned<String>,
    value: &'a str,
    what: &'a str,
}

/// Byte offset of `word` in `text` as a whole identifier.
fn word_offset(text: &str, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(p) = text[from..].find(word) {
        let at = from + p;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(|c| ident(c) || c == '.') && !after.is_some_and(ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}
