//! Reading a rule set from disk: parse every rulebook, then check and compile all of it,
//! collecting every error with its file, line and column.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::condition::{Condition, Expr, Interner, Query};
use super::index::SourceIndex;
use super::model::{
    self, ActionSpec, ConditionSpec, OpenTicketSpec, PostWebhookSpec, RuleSpec, SizeSpec,
    SourceSpec,
};
use super::{Dirs, LoadError, LoadErrors, Rule, RuleSet, Throttle};
use crate::actions::event::PostEventAction;
use crate::actions::outbound::{self, Body, HttpAction};
use crate::actions::ticket::{System, TicketAction, basic};
use crate::actions::{Action, log, script};
use crate::secrets::{Secret, expand};
use crate::sources::{DEFAULT_MAX_BODY, RateLimit, Source, SourceMeter};
use crate::templates::{TValue, Templates, Text};
use crate::units::{parse_duration, parse_size};
use crate::verify::{Algorithm, Encoding, KINDS, Verifier};

/// One rulebook file being compiled: its name, text, and the errors found so far.
struct Ctx<'a> {
    file: String,
    text: &'a str,
    errors: &'a mut Vec<LoadError>,
    warnings: &'a mut Vec<String>,
    /// Every value that came from a `${…}` reference, in order: credentials to mask.
    referenced: Vec<String>,
    /// Paths and literals shared by the conditions of every rulebook.
    interner: &'a mut Interner,
}

impl Ctx<'_> {
    fn err(&mut self, loc: &Location, message: impl Into<String>) {
        self.errors.push(LoadError {
            file: self.file.clone(),
            line: loc.line().max(1),
            column: loc.column().max(1),
            message: message.into(),
        });
    }

    /// Expands `${env:…}`/`${file:…}` in a spanned string.
    fn expand(&mut self, s: &Spanned<String>, what: &str) -> Option<String> {
        match expand(&s.value) {
            Ok(e) => {
                for name in e.fallbacks {
                    self.warnings.push(format!(
                        "{}:{}: {what} uses the fallback of `${{env:{name}}}` because {name} is not set",
                        self.file,
                        s.referenced.line()
                    ));
                }
                if e.referenced {
                    self.referenced.push(e.value.clone());
                }
                Some(e.value)
            }
            Err(msg) => {
                self.err(&s.referenced, format!("{what}: {msg}"));
                None
            }
        }
    }

    fn secret(&mut self, s: &Spanned<String>, what: &str) -> Option<Secret> {
        let v = self.expand(s, what)?;
        if v.is_empty() {
            self.err(&s.referenced, format!("{what} is empty"));
            return None;
        }
        Some(Secret::new(v))
    }

    /// An optional `timeout`, defaulting to 10s.
    fn duration_or(&mut self, s: Option<&Spanned<String>>) -> Option<Duration> {
        match s {
            Some(s) => self.duration(s, "timeout"),
            None => Some(crate::actions::outbound::DEFAULT_TIMEOUT),
        }
    }

    fn duration(&mut self, s: &Spanned<String>, what: &str) -> Option<Duration> {
        parse_duration(&s.value)
            .map_err(|m| self.err(&s.referenced, format!("{what}: {m}")))
            .ok()
    }

    /// Location of the first character of a (possibly quoted) scalar.
    fn content_start(&self, loc: &Location) -> (u64, u64) {
        let (line, col) = (loc.line().max(1), loc.column().max(1));
        let quoted = self
            .text
            .lines()
            .nth((line - 1) as usize)
            .and_then(|l| l.chars().nth((col - 1) as usize))
            .is_some_and(|c| c == '\'' || c == '"');
        (line, col + u64::from(quoted))
    }
}

/// Loads and compiles every rulebook in `dirs`.
pub fn load(dirs: &Dirs) -> Result<RuleSet, LoadErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut templates = match Templates::load_dir(&dirs.templates) {
        Ok(t) => t,
        Err(errs) => {
            for (file, message) in errs {
                errors.push(LoadError {
                    file,
                    line: 1,
                    column: 1,
                    message,
                });
            }
            Templates::default()
        }
    };

    let files = rulebook_files(&dirs.rulebooks).map_err(|e| {
        LoadErrors(vec![LoadError {
            file: dirs.rulebooks.display().to_string(),
            line: 1,
            column: 1,
            message: format!("cannot read the rulebooks directory: {e}"),
        }])
    })?;

    let mut texts = Vec::new();
    for path in &files {
        match std::fs::read_to_string(path) {
            Ok(t) => texts.push((path.clone(), t)),
            Err(e) => errors.push(LoadError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    let mut parsed = Vec::new();
    for (path, text) in &texts {
        let opts = serde_saphyr::options! {
            strict_booleans: true,
            leading_zero_numbers_as_strings: true,
            with_snippet: false,
        };
        match serde_saphyr::from_str_with_options::<model::RulebookFile>(text, opts) {
            Ok(book) => parsed.push((path, text, book)),
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line().max(1), l.column().max(1)))
                    .unwrap_or((1, 1));
                let message = e.to_string();
                let message = message
                    .lines()
                    .next()
                    .unwrap_or("invalid rulebook")
                    .to_string();
                errors.push(LoadError {
                    file: path.display().to_string(),
                    line,
                    column,
                    message,
                });
            }
        }
    }

    // Sources first: rules anywhere may name a source declared in any rulebook.
    let mut sources: Vec<Source> = Vec::new();
    let mut interner = Interner::default();
    for (path, text, book) in &parsed {
        let mut cx = Ctx {
            file: path.display().to_string(),
            text,
            errors: &mut errors,
            warnings: &mut warnings,
            referenced: Vec::new(),
            interner: &mut interner,
        };
        for spec in &book.sources {
            if let Some(src) = compile_source(&mut cx, spec, &stem(path)) {
                if sources.iter().any(|s| s.name == src.name) {
                    cx.err(
                        &spec.name.referenced,
                        format!("source `{}` is declared twice", src.name),
                    );
                } else if let Some(p) = &src.path
                    && sources.iter().any(|s| s.path.as_ref() == Some(p))
                {
                    cx.err(
                        &spec.name.referenced,
                        format!("path `{p}` is already served by another source"),
                    );
                } else {
                    sources.push(src);
                }
            }
        }
    }
    let source_names: HashSet<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let internal: HashSet<&str> = sources
        .iter()
        .filter(|s| matches!(s.verifier, Verifier::Internal))
        .map(|s| s.name.as_str())
        .collect();

    // Sized once: grown by doubling, the vector would end with up to half of it unused (room
    // for 16,384 rules of a few hundred bytes for 10,000) and its smaller copies freed behind.
    let mut rules = Vec::with_capacity(parsed.iter().map(|(_, _, b)| b.rules.len()).sum());
    // Each rule's parsed form is dropped as soon as it is compiled, so the next rule's
    // compiled form reuses its memory. Compiling all before freeing any would leave the parsed
    // forms (larger than the compiled ones) as holes below them, resident for good.
    for (path, text, book) in parsed {
        let rulebook = stem(path);
        let mut cx = Ctx {
            file: path.display().to_string(),
            text,
            errors: &mut errors,
            warnings: &mut warnings,
            referenced: Vec::new(),
            interner: &mut interner,
        };
        let mut seen = HashSet::new();
        for mut spec in book.rules {
            if seen.contains(&spec.name.value) {
                cx.err(
                    &spec.name.referenced,
                    format!(
                        "rule `{}` is declared twice in this rulebook",
                        spec.name.value
                    ),
                );
                continue;
            }
            if spec.enabled
                && let Some(rule) = compile_rule(
                    &mut cx,
                    &spec,
                    &rulebook,
                    &source_names,
                    &internal,
                    dirs,
                    &mut templates,
                )
            {
                rules.push(rule);
            }
            seen.insert(std::mem::take(&mut spec.name.value));
        }
    }
    drop(interner);
    drop(texts);

    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    rules.shrink_to_fit();

    // Run ids use the bare rule name unless two rulebooks share it.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &rules {
        *counts.entry(r.name.clone()).or_default() += 1;
    }
    for r in &mut rules {
        if counts[&r.name] > 1 {
            r.key = format!("{}/{}", r.rulebook, r.name);
        }
    }
    for r in &mut rules {
        r.fingerprint = super::fingerprint(r, &templates);
    }
    let mut by_key: Box<[u32]> = (0..rules.len())
        .map(|i| u32::try_from(i).expect("fewer than 2^32 rules"))
        .collect();
    by_key.sort_unstable_by(|&a, &b| rules[a as usize].key.cmp(&rules[b as usize].key));

    let index: Vec<SourceIndex> = sources
        .iter()
        .map(|src| {
            let applicable: Vec<_> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.sources.as_ref().is_none_or(|l| l.contains(&src.name)))
                .map(|(i, r)| (i, &r.condition))
                .collect();
            SourceIndex::build(&applicable)
        })
        .collect();
    let by_path = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.path.clone()?, i)))
        .collect();
    let by_name = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    Ok(RuleSet {
        sources,
        rules,
        templates,
        warnings,
        by_path,
        by_name,
        by_key,
        index,
    })
}

fn rulebook_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    Ok(files)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn compile_source(cx: &mut Ctx, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    if !valid_name(&name) {
        cx.err(
            &spec.name.referenced,
            format!("source name `{name}` must match [a-z0-9_-]+"),
        );
        return None;
    }
    let kind = spec.kind.value.as_str();
    if !KINDS.contains(&kind) {
        cx.err(
            &spec.kind.referenced,
            format!(
                "unknown source kind `{kind}`; expected one of: {}",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let mut secrets = Vec::new();
    if let Some(s) = &spec.secret {
        secrets.extend(cx.secret(s, "secret"));
    }
    for s in spec.secrets.iter().flatten() {
        secrets.extend(cx.secret(s, "secrets"));
    }
    let needs_secret = !matches!(kind, "none" | "internal" | "basic");
    if needs_secret && secrets.is_empty() && spec.secret.is_none() && spec.secrets.is_none() {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `{kind}` needs `secret` or `secrets`"),
        );
        return None;
    }
    let tolerance = match &spec.tolerance {
        Some(t) => cx.duration(t, "tolerance")?,
        None => Duration::from_secs(300),
    };
    let verifier = match kind {
        "ipfabric" => Verifier::IpFabric { secrets },
        "netbox" => Verifier::NetBox { secrets },
        "standard-webhooks" | "infrahub" => Verifier::StandardWebhooks {
            keys: secrets,
            tolerance,
            infrahub: kind == "infrahub",
        },
        "github" => Verifier::GitHub { secrets },
        "gitlab" => Verifier::GitLab { secrets },
        "bearer" => Verifier::Bearer { secrets },
        "basic" => {
            let (Some(u), Some(p)) = (&spec.username, &spec.password) else {
                cx.err(
                    &spec.kind.referenced,
                    format!("source `{name}` of kind `basic` needs `username` and `password`"),
                );
                return None;
            };
            let username = cx.secret(u, "username")?;
            let mut passwords = vec![cx.secret(p, "password")?];
            passwords.extend(secrets);
            Verifier::Basic {
                username,
                passwords,
            }
        }
        "hmac" => {
            let Some(header) = &spec.header else {
                cx.err(
                    &spec.kind.referenced,
                    format!("source `{name}` of kind `hmac` needs `header`"),
                );
                return None;
            };
            let algorithm = match &spec.algorithm {
                None => Algorithm::Sha256,
                Some(a) => match Algorithm::parse(&a.value) {
                    Some(x) => x,
                    None => {
                        cx.err(&a.referenced, "algorithm must be sha1, sha256 or sha512");
                        return None;
                    }
                },
            };
            let encoding = match spec
                .encoding
                .as_ref()
                .map(|e| (e.value.as_str(), &e.referenced))
            {
                None | Some(("hex", _)) => Encoding::Hex,
                Some(("base64", _)) => Encoding::Base64,
                Some((_, loc)) => {
                    cx.err(loc, "encoding must be hex or base64");
                    return None;
                }
            };
            Verifier::Hmac {
                header: header.value.to_ascii_lowercase(),
                algorithm,
                encoding,
                prefix: spec
                    .prefix
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
                id_header: spec
                    .id_header
                    .as_ref()
                    .map(|h| h.value.to_ascii_lowercase()),
                secrets,
            }
        }
        "none" => {
            cx.warnings.push(format!(
                "{}: source `{name}` has kind `none`: its requests are not authenticated",
                cx.file
            ));
            Verifier::None
        }
        _ => Verifier::Internal,
    };
    let path = if kind == "internal" {
        None
    } else {
        let p = spec
            .path
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_else(|| format!("/hooks/{name}"));
        if !p.starts_with('/') || p.starts_with("/api/") || p == "/healthz" || p == "/metrics" {
            let loc = spec
                .path
                .as_ref()
                .map(|p| &p.referenced)
                .unwrap_or(&spec.name.referenced);
            cx.err(
                loc,
                format!("path `{p}` must start with `/` and not be /api/…, /healthz or /metrics"),
            );
            return None;
        }
        Some(p)
    };
    let max_body = match &spec.max_body {
        None => DEFAULT_MAX_BODY,
        Some(m) => {
            let n = match &m.value {
                SizeSpec::Bytes(n) => Ok(*n),
                SizeSpec::Text(t) => parse_size(t),
            };
            match n {
                Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Err(msg) => {
                    cx.err(&m.referenced, format!("max_body: {msg}"));
                    return None;
                }
            }
        }
    };
    let mut allow_from = Vec::new();
    for a in spec.allow_from.iter().flatten() {
        let text = a.value.trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => allow_from.push(n),
            Err(_) => cx.err(
                &a.referenced,
                format!("allow_from: `{text}` is not an address or CIDR"),
            ),
        }
    }
    let dedup_window = match &spec.dedup_window {
        Some(w) if w.value == "off" || w.value == "0" => Some(Duration::ZERO),
        Some(w) => Some(cx.duration(w, "dedup_window")?),
        None => None,
    };
    let rate_limit = match &spec.rate_limit {
        None => None,
        Some(r) => match RateLimit::new(r.value.per_second, r.value.burst) {
            Ok(l) => Some(std::sync::Arc::new(l)),
            Err(m) => {
                cx.err(&r.referenced, format!("rate_limit: {m}"));
                return None;
            }
        },
    };
    Some(Source {
        name,
        path,
        verifier,
        max_body,
        rate_limit,
        meter: SourceMeter::new(&spec.name.value),
        allow_from,
        dedup_window,
        rulebook: rulebook.to_string(),
    })
}

fn compile_condition(cx: &mut Ctx, spec: &Spanned<ConditionSpec>) -> Option<Condition> {
    match &spec.value {
        ConditionSpec::Expr(text) => match Expr::compile_in(text, cx.interner) {
            Ok(e) => Some(Condition::Expr(e)),
            Err(e) => {
                let (line, col) = cx.content_start(&spec.referenced);
                let single_line = !text.contains('\n');
                let column = if single_line {
                    col + e.offset as u64
                } else {
                    col
                };
                cx.errors.push(LoadError {
                    file: cx.file.clone(),
                    line,
                    column,
                    message: format!("condition `{text}`: {}", e.message),
                });
                None
            }
        },
        ConditionSpec::All(items) | ConditionSpec::Any(items) => {
            let compiled: Vec<_> = items.iter().map(|c| compile_condition(cx, c)).collect();
            if items.is_empty() {
                cx.err(
                    &spec.referenced,
                    "an `all`/`any` list needs at least one condition",
                );
                return None;
            }
            let compiled: Option<Vec<_>> = compiled.into_iter().collect();
            let compiled = compiled?;
            Some(if matches!(spec.value, ConditionSpec::All(_)) {
                Condition::All(compiled)
            } else {
                Condition::Any(compiled)
            })
        }
        ConditionSpec::Not(inner) => {
            compile_condition(cx, inner).map(|c| Condition::Not(Box::new(c)))
        }
    }
}

fn compile_rule(
    cx: &mut Ctx,
    spec: &RuleSpec,
    rulebook: &str,
    sources: &HashSet<&str>,
    internal: &HashSet<&str>,
    dirs: &Dirs,
    templates: &mut Templates,
) -> Option<Rule> {
    let name = spec.name.value.clone();
    let mut ok = true;
    if name.is_empty() || name.contains(':') || name.contains('/') {
        cx.err(
            &spec.name.referenced,
            "a rule name must be non-empty and must not contain `:` or `/` (job and run ids are built from it)",
        );
        ok = false;
    }
    let rule_sources = spec.sources.as_ref().map(|list| {
        list.iter()
            .filter_map(|s| {
                if sources.contains(s.value.as_str()) {
                    Some(s.value.clone())
                } else {
                    cx.err(
                        &s.referenced,
                        format!(
                            "rule `{name}` names source `{}`, which no rulebook declares",
                            s.value
                        ),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let condition = match &spec.condition {
        None => Some(Condition::Always),
        Some(c) => compile_condition(cx, c),
    };
    if spec.actions.is_empty() {
        cx.err(
            &spec.name.referenced,
            format!("rule `{name}` has no actions"),
        );
        ok = false;
    }
    // Exact capacities: an `Action` is a few hundred bytes, and a vector grown from empty
    // holds room for four.
    let mut actions = Vec::with_capacity(spec.actions.len());
    for (i, a) in spec.actions.iter().enumerate() {
        let prefix = format!("{rulebook}/{name}/{i}");
        match compile_action(cx, a, &prefix, internal, dirs, templates) {
            Some(act) => actions.push(act),
            None => ok = false,
        }
    }
    let mut on_failure = Vec::with_capacity(spec.on_failure.len());
    for (i, a) in spec.on_failure.iter().enumerate() {
        let prefix = format!("{rulebook}/{name}/on_failure/{i}");
        match compile_action(cx, a, &prefix, internal, dirs, templates) {
            Some(act) => on_failure.push(act),
            None => ok = false,
        }
    }
    let throttle = match &spec.throttle {
        None => None,
        Some(t) => {
            let window = cx.duration(&t.value.once_within, "throttle.once_within");
            let mut group_by = Vec::new();
            for q in &t.value.group_by {
                match Query::compile(&q.value) {
                    Ok(c) => group_by.push(c),
                    Err(e) => {
                        let (line, col) = cx.content_start(&q.referenced);
                        cx.errors.push(LoadError {
                            file: cx.file.clone(),
                            line,
                            column: col + e.offset as u64,
                            message: format!("throttle.group_by `{}`: {}", q.value, e.message),
                        });
                        ok = false;
                    }
                }
            }
            Some(Throttle {
                window: window?,
                group_by,
            })
        }
    };
    let condition = condition?;
    if !ok
        || rule_sources
            .as_ref()
            .zip(spec.sources.as_ref())
            .is_some_and(|(a, b)| a.len() != b.len())
    {
        return None;
    }
    Some(Rule {
        rulebook: rulebook.to_string(),
        key: name.clone(),
        name,
        sources: rule_sources,
        condition,
        actions,
        on_failure,
        throttle,
        fingerprint: String::new(),
        counters: Default::default(),
    })
}

/// A spanned string with another value at the same location (for composed templates).
fn spanned_like(at: &Spanned<String>, value: String) -> Spanned<String> {
    Spanned {
        value,
        referenced: at.referenced,
        defined: at.defined,
    }
}

fn api_url(cx: &mut Ctx, given: Option<&Spanned<String>>, default: &str) -> Option<String> {
    match given {
        None => Some(default.to_string()),
        Some(s) => {
            let v = cx.expand(s, "api_url")?;
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                cx.err(
                    &s.referenced,
                    format!("api_url `{v}` must start with http:// or https://"),
                );
                return None;
            }
            Some(v.trim_end_matches('/').to_string())
        }
    }
}

fn github_call(
    kind: &'static str,
    url: Text,
    body: Body,
    token: &Secret,
    ok: Vec<u16>,
    timeout: Duration,
    retries: Option<u32>,
) -> HttpAction {
    HttpAction {
        kind,
        method: "POST".into(),
        url,
        headers: vec![
            (
                "Authorization".into(),
                Text::Literal(format!("Bearer {}", token.expose())),
            ),
            (
                "Accept".into(),
                Text::Literal("application/vnd.github+json".into()),
            ),
            (
                "X-GitHub-Api-Version".into(),
                Text::Literal("2022-11-28".into()),
            ),
        ],
        body,
        content_type: Some("application/json".into()),
        timeout,
        retries: retries.unwrap_or(outbound::DEFAULT_RETRIES),
        ok_statuses: ok,
        secrets: vec![token.expose().to_string()],
    }
}

/// `body` (inline) or `body_template` (a file under templates/), exactly one.
fn body_text(
    cx: &mut Ctx,
    t: &mut Templates,
    prefix: &str,
    body: Option<&Spanned<String>>,
    file: Option<&Spanned<String>>,
    at: &Spanned<String>,
) -> Option<Text> {
    match (body, file) {
        (Some(b), None) => template(cx, t, format!("{prefix}/body"), b, "body"),
        (None, Some(f)) => {
            if t.has(&f.value) {
                Some(Text::Template(f.value.clone()))
            } else {
                cx.err(
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
            cx.err(&b.referenced, "give `body` or `body_template`, not both");
            None
        }
        (None, None) => {
            cx.err(
                &at.referenced,
                "a body is required: `body` or `body_template`",
            );
            None
        }
    }
}

fn compile_webhook(
    cx: &mut Ctx,
    w: &PostWebhookSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<Action> {
    let url = template(cx, t, format!("{prefix}/url"), &w.url, "url")?;
    let method = w
        .method
        .as_ref()
        .map(|m| m.value.to_ascii_uppercase())
        .unwrap_or_else(|| "POST".into());
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
        cx.err(
            &w.url.referenced,
            format!("method `{method}` is not an HTTP method"),
        );
        return None;
    }
    let mark = cx.referenced.len();
    let mut headers = Vec::new();
    for (k, v) in &w.headers {
        headers.push((
            k.clone(),
            template(cx, t, format!("{prefix}/headers/{k}"), v, "headers")?,
        ));
    }
    // Header values that came from `${env:…}`/`${file:…}` are masked wherever shown.
    let secrets: Vec<String> = cx.referenced.drain(mark..).collect();
    let content_type = w
        .content_type
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| "application/json".into());
    let body = match (&w.body, &w.body_template) {
        (None, None) => Body::None,
        _ => Body::Text {
            text: body_text(
                cx,
                t,
                prefix,
                w.body.as_ref(),
                w.body_template.as_ref(),
                &w.url,
            )?,
            json: content_type.contains("json"),
        },
    };
    Some(Action::Http(HttpAction {
        kind: "post_webhook",
        method,
        url,
        headers,
        body,
        content_type: Some(content_type),
        timeout: cx.duration_or(w.timeout.as_ref())?,
        retries: w.retries.unwrap_or(outbound::DEFAULT_RETRIES),
        ok_statuses: Vec::new(),
        secrets,
    }))
}

fn compile_ticket(
    cx: &mut Ctx,
    o: &OpenTicketSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<Action> {
    let Some(system) = System::parse(&o.system.value) else {
        cx.err(
            &o.system.referenced,
            "system must be github, gitlab, jira or servicenow",
        );
        return None;
    };
    let need = |cx: &mut Ctx, f: Option<&Spanned<String>>, name: &str| -> Option<Secret> {
        match f {
            Some(s) => cx.secret(s, name),
            None => {
                cx.err(
                    &o.system.referenced,
                    format!("open_ticket for {} needs `{name}`", o.system.value),
                );
                None
            }
        }
    };
    // The credential header each system expects, and the secret to mask.
    let (header, value, secret) = match system {
        System::Github => {
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("Authorization", format!("Bearer {}", tok.expose()), tok)
        }
        System::Gitlab => {
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("PRIVATE-TOKEN", tok.expose().to_string(), tok)
        }
        System::Jira => {
            let email = need(cx, o.email.as_ref(), "email")?;
            let tok = need(cx, o.token.as_ref(), "token")?;
            ("Authorization", basic(email.expose(), tok.expose()), tok)
        }
        System::Servicenow => {
            let user = need(cx, o.username.as_ref(), "username")?;
            let pw = need(cx, o.password.as_ref(), "password")?;
            ("Authorization", basic(user.expose(), pw.expose()), pw)
        }
    };
    let (auth, secrets) = (
        (header.to_string(), value),
        vec![secret.expose().to_string()],
    );
    let default_api = match system {
        System::Github => Some("https://api.github.com"),
        System::Gitlab => Some("https://gitlab.com"),
        _ => None,
    };
    let api = match (o.api_url.as_ref(), default_api) {
        (None, None) => {
            cx.err(
                &o.system.referenced,
                format!("open_ticket for {} needs `api_url`", o.system.value),
            );
            return None;
        }
        (given, d) => api_url(cx, given, d.unwrap_or_default())?,
    };
    let project = match (&o.project, system) {
        (Some(p), _) => Some(template(cx, t, format!("{prefix}/project"), p, "project")?),
        (None, System::Servicenow) => None,
        (None, _) => {
            cx.err(
                &o.system.referenced,
                format!("open_ticket for {} needs `project`", o.system.value),
            );
            return None;
        }
    };
    let body = match (&o.body, &o.body_template) {
        (None, None) => None,
        _ => Some(body_text(
            cx,
            t,
            prefix,
            o.body.as_ref(),
            o.body_template.as_ref(),
            &o.title,
        )?),
    };
    let mut labels = Vec::new();
    for (i, l) in o.labels.iter().enumerate() {
        labels.push(template(
            cx,
            t,
            format!("{prefix}/labels/{i}"),
            l,
            "labels",
        )?);
    }
    let dedup_key = match &o.dedup_key {
        Some(k) => Some(template(
            cx,
            t,
            format!("{prefix}/dedup_key"),
            k,
            "dedup_key",
        )?),
        None => None,
    };
    Some(Action::OpenTicket(TicketAction {
        system,
        api_url: api,
        project,
        title: template(cx, t, format!("{prefix}/title"), &o.title, "title")?,
        body,
        labels,
        dedup_key,
        auth,
        timeout: cx.duration_or(o.timeout.as_ref())?,
        retries: o.retries.unwrap_or(outbound::DEFAULT_RETRIES),
        secrets,
    }))
}

fn template(
    cx: &mut Ctx,
    t: &mut Templates,
    name: String,
    s: &Spanned<String>,
    what: &str,
) -> Option<Text> {
    let value = cx.expand(s, what)?;
    match t.inline(name, &value) {
        Ok(text) => Some(text),
        Err(msg) => {
            cx.err(&s.referenced, format!("{what}: template error: {msg}"));
            None
        }
    }
}

fn compile_action(
    cx: &mut Ctx,
    spec: &Spanned<ActionSpec>,
    prefix: &str,
    internal: &HashSet<&str>,
    dirs: &Dirs,
    t: &mut Templates,
) -> Option<Action> {
    match &spec.value {
        ActionSpec::PostWebhook(w) => compile_webhook(cx, w, prefix, t),
        ActionSpec::GithubDispatch(g) => {
            let api = api_url(cx, g.api_url.as_ref(), "https://api.github.com")?;
            let token = cx.secret(&g.token, "token")?;
            let payload = g
                .client_payload
                .clone()
                .unwrap_or_else(|| serde_json::json!({}));
            let body =
                serde_json::json!({"event_type": g.event_type.value, "client_payload": payload});
            let body = TValue::compile(t, &format!("{prefix}/body"), &body)
                .map_err(|m| cx.err(&g.event_type.referenced, format!("template error: {m}")))
                .ok()?;
            let url = template(
                cx,
                t,
                format!("{prefix}/url"),
                &spanned_like(&g.repo, format!("{api}/repos/{}/dispatches", g.repo.value)),
                "repo",
            )?;
            Some(Action::Http(github_call(
                "github_dispatch",
                url,
                Body::Json(body),
                &token,
                vec![204],
                cx.duration_or(g.timeout.as_ref())?,
                g.retries,
            )))
        }
        ActionSpec::GithubWorkflow(g) => {
            let api = api_url(cx, g.api_url.as_ref(), "https://api.github.com")?;
            let token = cx.secret(&g.token, "token")?;
            let inputs: serde_json::Map<String, serde_json::Value> = g
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.value.clone())))
                .collect();
            let body = serde_json::json!({"ref": g.git_ref.value, "inputs": inputs});
            let body = TValue::compile(t, &format!("{prefix}/body"), &body)
                .map_err(|m| cx.err(&g.git_ref.referenced, format!("template error: {m}")))
                .ok()?;
            let src = format!(
                "{api}/repos/{}/actions/workflows/{}/dispatches",
                g.repo.value, g.workflow.value
            );
            let url = template(
                cx,
                t,
                format!("{prefix}/url"),
                &spanned_like(&g.repo, src),
                "repo",
            )?;
            Some(Action::Http(github_call(
                "github_workflow",
                url,
                Body::Json(body),
                &token,
                vec![204, 200],
                cx.duration_or(g.timeout.as_ref())?,
                g.retries,
            )))
        }
        ActionSpec::GitlabPipeline(g) => {
            let api = api_url(cx, g.api_url.as_ref(), "https://gitlab.com")?;
            let token = cx.secret(&g.token, "token")?;
            let project = cx.expand(&g.project, "project")?;
            let project = if project.contains("{{") {
                project
            } else {
                crate::actions::outbound::urlencode(&project)
            };
            let src = format!("{api}/api/v4/projects/{project}/trigger/pipeline");
            let url = template(
                cx,
                t,
                format!("{prefix}/url"),
                &spanned_like(&g.project, src),
                "project",
            )?;
            let mut fields = vec![
                (
                    "token".to_string(),
                    Text::Literal(token.expose().to_string()),
                ),
                (
                    "ref".to_string(),
                    template(cx, t, format!("{prefix}/ref"), &g.git_ref, "ref")?,
                ),
            ];
            for (k, v) in &g.variables {
                fields.push((
                    format!("variables[{k}]"),
                    template(cx, t, format!("{prefix}/variables/{k}"), v, "variables")?,
                ));
            }
            Some(Action::Http(HttpAction {
                kind: "gitlab_pipeline",
                method: "POST".into(),
                url,
                headers: Vec::new(),
                body: Body::Form(fields),
                content_type: Some("application/x-www-form-urlencoded".into()),
                timeout: cx.duration_or(g.timeout.as_ref())?,
                retries: g.retries.unwrap_or(outbound::DEFAULT_RETRIES),
                ok_statuses: vec![201],
                secrets: vec![token.expose().to_string()],
            }))
        }
        ActionSpec::OpenTicket(o) => compile_ticket(cx, o, prefix, t),
        ActionSpec::PostEvent(p) => {
            if !internal.contains(p.source.value.as_str()) {
                cx.err(
                    &p.source.referenced,
                    format!(
                        "post_event: `{}` is not a source of kind `internal`",
                        p.source.value
                    ),
                );
                return None;
            }
            let body = body_text(
                cx,
                t,
                prefix,
                p.body.as_ref(),
                p.body_template.as_ref(),
                &p.source,
            )?;
            Some(Action::PostEvent(PostEventAction {
                source: p.source.value.clone(),
                body,
            }))
        }
        ActionSpec::RunScript(s) => {
            let path = resolve_script(&dirs.scripts, &s.script.value)
                .map_err(|m| cx.err(&s.script.referenced, m))
                .ok();
            let mut args = Vec::new();
            for (i, a) in s.args.iter().enumerate() {
                args.extend(template(cx, t, format!("{prefix}/args/{i}"), a, "args"));
            }
            let mut env = Vec::new();
            for (k, v) in &s.env {
                if k.starts_with("RULEHOOK_") {
                    cx.err(
                        &v.referenced,
                        format!("env `{k}`: RULEHOOK_* variables are set by rulehook"),
                    );
                }
                env.extend(
                    template(cx, t, format!("{prefix}/env/{k}"), v, "env").map(|v| (k.clone(), v)),
                );
            }
            let timeout = match &s.timeout {
                Some(d) => cx.duration(d, "timeout")?,
                None => script::DEFAULT_TIMEOUT,
            };
            if args.len() != s.args.len() || env.len() != s.env.len() {
                return None;
            }
            Some(Action::RunScript(script::ScriptAction {
                path: path?,
                name: s.script.value.clone(),
                args,
                env,
                timeout,
                retries: s.retries,
            }))
        }
        ActionSpec::Log(l) => {
            let level = match &l.level {
                None => log::Level::Info,
                Some(lv) => match log::Level::parse(&lv.value) {
                    Some(x) => x,
                    None => {
                        cx.err(&lv.referenced, "level must be error, warn, info or debug");
                        return None;
                    }
                },
            };
            let message = template(cx, t, format!("{prefix}/message"), &l.message, "message")?;
            Some(Action::Log(log::LogAction { message, level }))
        }
    }
}

/// The script's absolute path; it must be an executable file inside the scripts directory.
fn resolve_script(dir: &Path, name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("scripts directory `{}` cannot be read: {e}", dir.display()))?;
    if Path::new(name).is_absolute() {
        return Err(format!(
            "script `{name}` must be a path relative to the scripts directory"
        ));
    }
    let path = root
        .join(name)
        .canonicalize()
        .map_err(|_| format!("script `{name}` does not exist in {}", dir.display()))?;
    if !path.starts_with(&root) {
        return Err(format!("script `{name}` is outside the scripts directory"));
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("script `{name}`: {e}"))?;
    if !meta.is_file() {
        return Err(format!("script `{name}` is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("script `{name}` is not executable (chmod +x it)"));
    }
    Ok(path)
}
