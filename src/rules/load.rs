//! Reading a rule set from disk: parse every rulebook, then check and compile all of it,
//! collecting every error with its file, line and column.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::condition::{Condition, Expr, Interner, Query};
use super::correlate::{Correlation, DEFAULT_MAX_OPEN, Kind, MAX_MAX_OPEN, Named};
use super::index::SourceIndex;
use super::snapshot::Snapshot;
use super::{Dirs, LoadError, LoadErrors, Rule, RuleSet, Throttle};
use crate::actions::{Action, ansible, awx, event, log, notify, outbound, script, ticket};
use crate::body::BodyFormat;
use crate::rulebook::compile::{Compile, Scope};
use crate::rulebook::model::{
    self, ActionSpec, ConditionSpec, CorrelateSpec, RuleSpec, SizeSpec, SourceSpec,
};
use crate::sources::{DEFAULT_MAX_BODY, RateLimit, Source, SourceKind, SourceMeter};
use crate::templates::Templates;
use crate::units::parse_size;
use crate::verify::webhook::WebhookKind;
use crate::verify::{KINDS, Verifier};

/// The most YAML nodes (values, keys, list items) one rulebook file may hold: a guard against
/// hostile files (a file past it is one error, asking to split it; docs/rulebooks.md).
pub const MAX_YAML_NODES: usize = 250_000;

/// Loads and compiles every rulebook in `dirs`.
pub fn load(dirs: &Dirs) -> Result<RuleSet, LoadErrors> {
    load_with_snapshot(dirs).map(|(set, _)| set)
}

/// [`load`], with the files it compiled, as read (for the rule archive: `engine::versions`).
pub fn load_with_snapshot(dirs: &Dirs) -> Result<(RuleSet, Snapshot), LoadErrors> {
    let to_error = |(file, message)| LoadError {
        file,
        line: 1,
        column: 1,
        message,
    };
    let (template_files, read_errors) = Templates::read_dir(&dirs.templates);
    let mut errors: Vec<LoadError> = read_errors.into_iter().map(to_error).collect();
    let compiled = Templates::from_sources(
        &dirs.templates,
        template_files.iter().map(|(n, t)| (n.as_str(), t.as_str())),
    );
    let templates = match compiled {
        Ok(t) if errors.is_empty() => t,
        Ok(_) => Templates::default(),
        Err(errs) => {
            errors.extend(errs.into_iter().map(to_error));
            Templates::default()
        }
    };

    let files = rulebook_files(&dirs.rulebooks).map_err(|e| {
        LoadErrors(vec![LoadError {
            file: dirs.rulebooks.display().to_string(),
            line: 1,
            column: 1,
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "no such directory: create it, or point --rulebooks (RULEHOOK_RULEBOOKS) at your rulebooks".to_string()
            } else {
                format!("cannot read the rulebooks directory: {e}")
            },
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
    let compiled = compile(&texts, templates, errors, &dirs.scripts);
    // The texts move into the snapshot once compiled: a copy made before would hold every
    // rulebook twice while the rules are parsed (2 MB more at the peak for 10,000 rules).
    let snapshot = Snapshot {
        rulebooks: texts
            .into_iter()
            .map(|(path, text)| (file_name(&path), text))
            .collect(),
        templates: template_files.into_iter().collect(),
    };
    compiled.map(|set| (set, snapshot))
}

/// A rulebook's file name, as the snapshot keys it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Compiles rulebooks already read (`(path, text)`, the path as errors name it) with their
/// templates; `errors` are the reading's. Scripts are looked up in `scripts`.
pub(super) fn compile(
    texts: &[(PathBuf, String)],
    mut templates: Templates,
    mut errors: Vec<LoadError>,
    scripts: &Path,
) -> Result<RuleSet, LoadErrors> {
    let mut warnings = Vec::new();
    // Sources declared but not compiled (their own error is reported).
    let mut failed_sources: HashSet<String> = HashSet::new();
    // The files with structural problems, each with those parts set aside (see `parse_all`).
    let mut rests = Vec::new();
    let mut parsed = parse_all(texts, &mut errors, &mut rests, MAX_YAML_NODES);
    let mut aside = SetAside::default();
    parsed.extend(parse_rests(&rests, MAX_YAML_NODES, &mut aside));
    failed_sources.extend(aside.sources);
    // In the order the files were read: duplicates are reported at the later file.
    parsed.sort_by_key(|(path, _, _)| texts.iter().position(|(p, _)| p == *path));
    // Sources first: rules anywhere may name a source declared in any rulebook.
    let (sources, summaries) =
        compile_sources(&parsed, &mut errors, &mut warnings, &mut failed_sources);
    let source_names: HashSet<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let internal: HashSet<&str> = sources
        .iter()
        .filter(|s| matches!(s.verifier, Verifier::Internal))
        .map(|s| s.name.as_str())
        .collect();
    let kinds: HashMap<&str, SourceKind> =
        sources.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    let known = Known {
        kinds: &kinds,
        sources: &source_names,
        failed_sources: &failed_sources,
        internal: &internal,
        scripts,
    };
    let windows = compile_windows(&parsed, &aside.rules, &mut errors, &mut warnings);
    let rules = compile_rules(parsed, &known, &mut templates, &mut errors, &mut warnings);
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(assemble(
        rules, sources, templates, warnings, summaries, windows, scripts,
    ))
}

/// A rulebook as parsed, beside its path and text.
type Parsed<'t> = (&'t PathBuf, &'t String, model::RulebookFile);

/// A file with structural problems, with the parts holding them set aside (emptied lines):
/// its original text (what it declared) and what was left, if that parses.
struct Rest<'t> {
    path: &'t PathBuf,
    text: &'t str,
    rest: Option<String>,
}

/// What the parts of files set aside for their structural problems declared, so that what
/// names them gets no second, misleading error (their own problems are reported).
#[derive(Default)]
struct SetAside {
    sources: HashSet<String>,
    /// (rulebook, rule name)
    rules: Vec<(String, String)>,
}

/// The sources and rules of files with structural problems that were not set aside, parsed
/// again so the later checks look at them too (their problems are reported with the
/// structural ones; nothing loads either way).
fn parse_rests<'t>(
    rests: &'t [Rest<'_>],
    max_nodes: usize,
    aside: &mut SetAside,
) -> Vec<Parsed<'t>> {
    let mut parsed = Vec::new();
    for r in rests {
        let book = r.rest.as_ref().and_then(|rest| {
            serde_saphyr::from_str_with_options::<model::RulebookFile>(
                rest,
                yaml_options(max_nodes),
            )
            .ok()
            .map(|book| (rest, book))
        });
        let (sources, rules): (HashSet<&str>, HashSet<&str>) = match &book {
            Some((_, b)) => (
                b.sources.iter().map(|s| s.name.value.as_str()).collect(),
                b.rules.iter().map(|r| r.name.value.as_str()).collect(),
            ),
            None => Default::default(),
        };
        let declared = declared_names(r.text);
        aside.sources.extend(
            declared
                .sources
                .into_iter()
                .filter(|n| !sources.contains(n.as_str())),
        );
        aside.rules.extend(
            declared
                .rules
                .into_iter()
                .filter(|n| !rules.contains(n.as_str()))
                .map(|n| (stem(r.path), n)),
        );
        if let Some((rest, book)) = book {
            parsed.push((r.path, rest, book));
        }
    }
    parsed
}

/// How rulebooks are parsed: YAML 1.2 booleans only, `0123` kept as text, at most
/// `max_nodes` nodes.
fn yaml_options(max_nodes: usize) -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        with_snippet: false,
        budget: serde_saphyr::budget! { max_nodes: max_nodes },
    }
}

/// Every file parsed as a rulebook; for a file that does not parse, every structural problem
/// (not only the first) and the names of the sources it declares (so rules elsewhere that use
/// them do not each report a missing source as well).
///
/// A file of more than `max_nodes` YAML nodes is one error, where the count passed the limit:
/// its parts set aside one by one and parsed again would each be found too large again.
fn parse_all<'t>(
    texts: &'t [(PathBuf, String)],
    errors: &mut Vec<LoadError>,
    rests: &mut Vec<Rest<'t>>,
    max_nodes: usize,
) -> Vec<Parsed<'t>> {
    let mut parsed = Vec::new();
    for (path, text) in texts {
        let opts = yaml_options(max_nodes);
        let parse = |text: &str| -> Result<model::RulebookFile, crate::rulebook::recover::Found> {
            serde_saphyr::from_str_with_options::<model::RulebookFile>(text, opts.clone()).map_err(
                |e| {
                    let (line, column) = e
                        .location()
                        .map(|l| (l.line().max(1), l.column().max(1)))
                        .unwrap_or((1, 1));
                    let said = e.to_string();
                    if let Some(tab) =
                        crate::rulebook::yaml_error::indented_with_a_tab(&said, text, line)
                    {
                        return tab;
                    }
                    let message = crate::rulebook::yaml_error::explain(&said, text, line, column);
                    (line, column, message)
                },
            )
        };
        match parse(text) {
            Ok(book) => parsed.push((path, text, book)),
            Err((line, column, message)) if crate::rulebook::yaml_error::is_too_large(&message) => {
                errors.push(LoadError {
                    file: path.display().to_string(),
                    line,
                    column,
                    message,
                });
            }
            Err(_) => {
                let every = crate::rulebook::recover::every_problem(text, |t| parse(t).err());
                for (line, column, message) in every.problems {
                    errors.push(LoadError {
                        file: path.display().to_string(),
                        line,
                        column,
                        message,
                    });
                }
                rests.push(Rest {
                    path,
                    text,
                    rest: every.rest,
                });
            }
        }
    }
    parsed
}

/// The compile context of one rulebook file.
fn context<'a>(
    path: &Path,
    text: &'a str,
    errors: &'a mut Vec<LoadError>,
    warnings: &'a mut Vec<String>,
) -> Compile<'a> {
    Compile {
        file: path.display().to_string(),
        text,
        errors,
        warnings,
        referenced: Vec::new(),
        scope: Default::default(),
        correlation: None,
        envelope: None,
    }
}

/// Every rulebook's sources (names and paths unique across rulebooks), with their summary
/// templates.
fn compile_sources(
    parsed: &[Parsed<'_>],
    errors: &mut Vec<LoadError>,
    warnings: &mut Vec<String>,
    failed_sources: &mut HashSet<String>,
) -> (Vec<Source>, super::summary::Summaries) {
    let mut sources: Vec<Source> = Vec::new();
    let mut summaries = super::summary::Summaries::default();
    // Where each source's `listen:` (or `url:`) is written, for a clash found later.
    let mut places: HashMap<String, String> = HashMap::new();
    // Where each source's name is written, for a second declaration of it or of its path.
    let mut declared: HashMap<String, String> = HashMap::new();
    for (path, text, book) in parsed {
        let mut cx = context(path, text, errors, warnings);
        for spec in &book.sources {
            let Some(src) = compile_source(&mut cx, spec, &stem(path)) else {
                failed_sources.insert(spec.name.value.clone());
                continue;
            };
            let at = spec
                .listen
                .as_ref()
                .map(|l| l.referenced)
                .or(spec.url.as_ref().map(|u| u.referenced))
                .unwrap_or(spec.name.referenced);
            if let Some(clash) = super::listen::clash(&src, &sources, &places) {
                cx.err(&at, clash);
                continue;
            }
            // The other declaration is named: the one reported may be in the file not edited.
            let first = |name: &str| declared.get(name).cloned().unwrap_or_default();
            if sources.iter().any(|s| s.name == src.name) {
                cx.err(
                    &spec.name.referenced,
                    format!(
                        "source `{}` is declared twice (first at {}): a source's name is unique across all rulebooks",
                        src.name,
                        first(&src.name)
                    ),
                );
            } else if let Some(p) = &src.path
                && let Some(other) = sources.iter().find(|s| s.path.as_ref() == Some(p))
            {
                cx.err(
                    &spec.name.referenced,
                    format!(
                        "path `{p}` is already served by source `{}` ({}): give this one another `path:`",
                        other.name,
                        first(&other.name)
                    ),
                );
            } else {
                if let Some(t) = &spec.summary
                    && let Err(e) = summaries.add(&src.name, &t.value)
                {
                    cx.err(&t.referenced, format!("summary: template error: {e}"));
                }
                places.insert(
                    src.name.clone(),
                    format!("{}:{}:{}", cx.file, at.line(), at.column()),
                );
                let named = &spec.name.referenced;
                declared.insert(
                    src.name.clone(),
                    format!("{}:{}:{}", cx.file, named.line(), named.column()),
                );
                sources.push(src);
            }
        }
    }
    (sources, summaries)
}

/// Maintenance windows (rules/windows.rs): they may name the rules of any rulebook.
fn compile_windows(
    parsed: &[Parsed<'_>],
    set_aside: &[(String, String)],
    errors: &mut Vec<LoadError>,
    warnings: &mut Vec<String>,
) -> Vec<super::windows::Window> {
    // Rules set aside for a structural problem count as declared: a window naming one is not
    // wrong (the rule's own problem is reported).
    let declared: super::windows::Declared = parsed
        .iter()
        .flat_map(|(path, _, book)| {
            let b = stem(path);
            book.rules
                .iter()
                .map(move |r| (b.clone(), r.name.value.clone()))
        })
        .chain(set_aside.iter().cloned())
        .collect();
    let mut windows = Vec::new();
    let mut window_names = HashMap::new();
    for (path, text, book) in parsed {
        let mut cx = context(path, text, errors, warnings);
        let specs = &book.windows;
        let found =
            super::windows::compile(&mut cx, specs, &stem(path), &declared, &mut window_names);
        windows.extend(found);
    }
    windows
}

/// Every enabled rule of every rulebook (a rule whose `requires_env` is unset is left out
/// with a warning).
fn compile_rules(
    parsed: Vec<Parsed<'_>>,
    known: &Known<'_>,
    templates: &mut Templates,
    errors: &mut Vec<LoadError>,
    warnings: &mut Vec<String>,
) -> Vec<Rule> {
    // Paths and literals shared by the conditions of every rulebook.
    let mut interner = Interner::default();
    // Sized once: grown by doubling, the vector would end with up to half of it unused (room
    // for 16,384 rules of a few hundred bytes for 10,000) and its smaller copies freed behind.
    let mut rules = Vec::with_capacity(parsed.iter().map(|(_, _, b)| b.rules.len()).sum());
    // Each rule's parsed form is dropped as soon as it is compiled, so the next rule's
    // compiled form reuses its memory. Compiling all before freeing any would leave the parsed
    // forms (larger than the compiled ones) as holes below them, resident for good.
    for (path, text, book) in parsed {
        let rulebook = stem(path);
        let mut cx = context(path, text, errors, warnings);
        let mut seen = HashSet::new();
        let book_shadow = parse_mode(&mut cx, book.mode.as_ref(), false);
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
            let missing = model::missing_env(&spec.requires_env);
            if spec.enabled && !missing.is_empty() {
                cx.warnings.push(format!(
                    "{}:{}: rule `{}` is skipped because {} {} not set",
                    cx.file,
                    spec.name.referenced.line(),
                    spec.name.value,
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                ));
            } else if spec.enabled {
                // Before the rest of the rule, so a wrong `mode` is reported with its other
                // mistakes, not only once they are fixed.
                let shadow = parse_mode(&mut cx, spec.mode.as_ref(), book_shadow);
                if let Some(rule) =
                    compile_rule(&mut cx, &mut interner, &spec, &rulebook, known, templates)
                {
                    rules.push(Rule { shadow, ..rule });
                }
            }
            seen.insert(std::mem::take(&mut spec.name.value));
        }
    }
    rules
}

/// The rule set from what compiled without an error: rule keys (the bare name unless two
/// rulebooks share it), fingerprints, and the indexes by key, path, name and source.
fn assemble(
    mut rules: Vec<Rule>,
    sources: Vec<Source>,
    templates: Templates,
    warnings: Vec<String>,
    summaries: super::summary::Summaries,
    windows: Vec<super::windows::Window>,
    scripts: &Path,
) -> RuleSet {
    rules.shrink_to_fit();
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
        r.fingerprint = super::fingerprint(r, &templates, scripts);
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
    RuleSet {
        sources,
        rules,
        templates,
        warnings,
        summaries,
        by_path,
        by_name,
        by_key,
        index,
        windows: super::windows::Windows(windows),
    }
}

/// The `sources[*].name` of a rulebook that does not parse as a rulebook (read as plain YAML).
/// The names of the sources and rules a rulebook's text declares, read leniently (any YAML).
struct Names {
    sources: Vec<String>,
    rules: Vec<String>,
}

fn declared_names(text: &str) -> Names {
    let Ok(v) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Names {
            sources: Vec::new(),
            rules: Vec::new(),
        };
    };
    let names = |section: &str| -> Vec<String> {
        v[section]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect()
    };
    Names {
        sources: names("sources"),
        rules: names("rules"),
    }
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

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn compile_source(cx: &mut Compile, spec: &SourceSpec, rulebook: &str) -> Option<Source> {
    let name = spec.name.value.clone();
    if !valid_name(&name) {
        cx.err(
            &spec.name.referenced,
            format!("source name `{name}` must match [a-z0-9_-]+"),
        );
        return None;
    }
    let kind = spec.kind.value.as_str();
    if SourceKind::of(kind).is_transport() {
        return super::listen::source(cx, spec, rulebook);
    }
    let Some(webhook) = WebhookKind::parse(kind) else {
        // Every kind there is: the webhook kinds, then the listening ones.
        let all: Vec<&str> = KINDS
            .iter()
            .chain(&["syslog", "snmp_trap", "mqtt", "nats"])
            .copied()
            .collect();
        cx.err(
            &spec.kind.referenced,
            format!(
                "unknown source kind `{kind}`; {}expected one of: {}",
                crate::rulebook::yaml_error::closest(kind, &all)
                    .map(|c| format!("did you mean `{c}`? "))
                    .unwrap_or_default(),
                all.join(", ")
            ),
        );
        return None;
    };
    let keys_ok = listening_keys_refused(cx, spec);
    let mut secrets = Vec::new();
    if let Some(s) = &spec.secret {
        secrets.extend(cx.secret(s, "secret"));
    }
    for s in spec.secrets.iter().flatten() {
        secrets.extend(cx.secret(s, "secrets"));
    }
    if webhook.needs_secret()
        && secrets.is_empty()
        && spec.secret.is_none()
        && spec.secrets.is_none()
    {
        cx.err(
            &spec.kind.referenced,
            format!("source `{name}` of kind `{kind}` needs `secret` or `secrets`"),
        );
        return None;
    }
    let format = body_format(cx, spec)?;
    let verifier = webhook.compile(cx, spec, secrets)?;
    let path = if kind == "internal" {
        None
    } else {
        Some(webhook_path(cx, spec)?)
    };
    let max_body = max_body(cx, spec)?;
    let allow_from = allow_from(cx, spec);
    let given = dedup_window(cx, spec)?;
    let dedup_window = replay_safe(cx, spec, &verifier, given);
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
    if !keys_ok {
        return None;
    }
    Some(Source {
        name,
        kind: crate::sources::SourceKind::of(kind),
        path,
        verifier,
        format,
        max_body,
        rate_limit,
        meter: SourceMeter::new(&spec.name.value),
        allow_from,
        dedup_window,
        rulebook: rulebook.to_string(),
        listening: None,
    })
}

/// A source's `dedup_window:`: `None` when absent (the kind's default), zero for `off`; the
/// outer `None` after reporting a bad duration.
pub(super) fn dedup_window(cx: &mut Compile, spec: &SourceSpec) -> Option<Option<Duration>> {
    Some(match &spec.dedup_window {
        Some(w) if w.value == "off" || w.value == "0" => Some(Duration::ZERO),
        Some(w) => Some(cx.duration(w, "dedup_window")?),
        None => None,
    })
}

/// A source that checks a signed timestamp (`standard-webhooks`, `infrahub`) keeps its delivery
/// ids at least as long as a replay of a message could still pass its `tolerance`
/// ([`crate::verify::standard::StandardWebhooks::replay_window`], twice the tolerance): a
/// shorter `dedup_window` (or a default shorter than that) is raised to it, with a warning; with
/// `dedup_window: off` nothing is kept, and the warning says what that lets through.
fn replay_safe(
    cx: &mut Compile,
    spec: &SourceSpec,
    verifier: &Verifier,
    window: Option<Duration>,
) -> Option<Duration> {
    let Verifier::StandardWebhooks(s) = verifier else {
        return window;
    };
    let least = s.replay_window();
    let fmt = crate::units::format_duration;
    let (name, line) = (&spec.name.value, spec.name.referenced.line());
    match window {
        Some(w) if w.is_zero() => {
            cx.warnings.push(format!(
                "{}:{line}: source `{name}` has `dedup_window: off`: a signed message captured on its way is taken again each time it is sent within its `tolerance` ({}) of its timestamp",
                cx.file,
                fmt(s.tolerance)
            ));
            window
        }
        Some(w) if w < least => {
            cx.warnings.push(format!(
                "{}:{line}: source `{name}`: `dedup_window` {} is shorter than twice its `tolerance` ({}), so a replay could pass after its delivery id was forgotten: its delivery ids are kept {} instead",
                cx.file,
                fmt(w),
                fmt(s.tolerance),
                fmt(least)
            ));
            Some(least)
        }
        None if crate::verify::SENDER_ID_WINDOW < least => Some(least),
        _ => window,
    }
}

/// The settings of listening sources given to a webhook (or internal) source are refused, each
/// at its own place; `true` when there is none.
fn listening_keys_refused(cx: &mut Compile, spec: &SourceSpec) -> bool {
    const LISTENING: &[&str] = &[
        "listen",
        "keep",
        "max_message",
        "max_connections",
        "max_connections_per_client",
        "idle_timeout",
        "url",
        "topics",
        "client_id",
        "subjects",
        "stream",
        "durable",
        "tls",
        "share_group",
        "communities",
        "users",
        "engine_id",
    ];
    let mut ok = true;
    for (key, at) in super::listen::given_keys(spec) {
        if LISTENING.contains(&key) {
            cx.err(
                &at,
                format!(
                    "source `{}` of kind `{}` does not take `{key}` (a setting of the listening kinds: syslog, snmp_trap, mqtt, nats)",
                    spec.name.value, spec.kind.value
                ),
            );
            ok = false;
        }
    }
    ok
}

/// A source's body `format:` (JSON when absent).
fn body_format(cx: &mut Compile, spec: &SourceSpec) -> Option<BodyFormat> {
    let Some(f) = &spec.format else {
        return Some(BodyFormat::Json);
    };
    let parsed = BodyFormat::parse(&f.value);
    if parsed.is_none() {
        cx.err(
            &f.referenced,
            format!(
                "format `{}`: expected one of: {}",
                f.value,
                crate::body::FORMATS.join(", ")
            ),
        );
    }
    parsed
}

/// A webhook source's path (`/hooks/<name>` when absent), outside the service's own routes.
fn webhook_path(cx: &mut Compile, spec: &SourceSpec) -> Option<String> {
    let p = spec
        .path
        .as_ref()
        .map(|p| p.value.clone())
        .unwrap_or_else(|| format!("/hooks/{}", spec.name.value));
    if !p.starts_with('/')
        || p == "/"
        || p.starts_with("/api/")
        || p.starts_with("/console/")
        || p == "/healthz"
        || p == "/metrics"
    {
        let loc = spec
            .path
            .as_ref()
            .map(|p| &p.referenced)
            .unwrap_or(&spec.name.referenced);
        cx.err(
            loc,
            format!(
                "path `{p}` must start with `/` and not be /, /api/…, /console/…, /healthz or /metrics"
            ),
        );
        return None;
    }
    Some(p)
}

/// A source's `max_body:` in bytes (a number, or text such as `2MiB`).
fn max_body(cx: &mut Compile, spec: &SourceSpec) -> Option<usize> {
    let Some(m) = &spec.max_body else {
        return Some(DEFAULT_MAX_BODY);
    };
    let n = match &m.value {
        SizeSpec::Bytes(n) => Ok(*n),
        SizeSpec::Text(t) => parse_size(t),
    };
    match n {
        Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Err(msg) => {
            cx.err(&m.referenced, format!("max_body: {msg}"));
            None
        }
    }
}

/// A source's `allow_from:` addresses and networks (an error for each that is neither).
pub(super) fn allow_from(cx: &mut Compile, spec: &SourceSpec) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for a in spec.allow_from.iter().flatten() {
        let text = a.value.trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => cx.err(
                &a.referenced,
                format!("allow_from: `{text}` is not an address or CIDR"),
            ),
        }
    }
    out
}

fn compile_condition(
    cx: &mut Compile,
    interner: &mut Interner,
    spec: &Spanned<ConditionSpec>,
) -> Option<Condition> {
    match &spec.value {
        ConditionSpec::Expr(text) => match Expr::compile_in(text, interner) {
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
            let compiled: Vec<_> = items
                .iter()
                .map(|c| compile_condition(cx, interner, c))
                .collect();
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
            compile_condition(cx, interner, inner).map(|c| Condition::Not(Box::new(c)))
        }
    }
}

/// What every rule is compiled against: the declared sources, the `internal` ones among
/// them, and the directories.
struct Known<'a> {
    /// Each declared source's kind: what `meta("…")` may read on its events.
    kinds: &'a HashMap<&'a str, SourceKind>,
    sources: &'a HashSet<&'a str>,
    /// Declared, but with errors of their own: naming them is not another error.
    failed_sources: &'a HashSet<String>,
    internal: &'a HashSet<&'a str>,
    scripts: &'a Path,
}

/// The sources a rule's events may come from (its `sources:`, or every declared one), with
/// what each offers to `meta`.
fn rule_envelope(
    sources: Option<&[String]>,
    known: &Known,
) -> crate::rulebook::compile::RuleSources {
    let mut all: Vec<(String, &'static str, &'static [&'static str])> = match sources {
        Some(list) => list
            .iter()
            .filter_map(|s| known.kinds.get(s.as_str()).map(|k| (s.clone(), *k)))
            .map(|(s, k)| (s, k.name(), k.meta_names()))
            .collect(),
        None => known
            .kinds
            .iter()
            .map(|(s, k)| (s.to_string(), k.name(), k.meta_names()))
            .collect(),
    };
    all.sort();
    crate::rulebook::compile::RuleSources {
        listed: sources.is_some(),
        sources: all,
        incomplete: !known.failed_sources.is_empty(),
    }
}

/// Whether every `meta("…")` name of `condition` is offered by the rule's sources (each listed
/// one; with no `sources:`, at least one declared source): an error for each that is not.
fn meta_names_offered(
    cx: &mut Compile,
    condition: &Condition,
    sources: Option<&[String]>,
    known: &Known,
    at: &serde_saphyr::Location,
) -> bool {
    let mut ok = true;
    for name in condition.meta_names() {
        let lacking: Vec<(&str, SourceKind)> = match sources {
            Some(list) => list
                .iter()
                .filter_map(|s| known.kinds.get_key_value(s.as_str()))
                .filter(|(_, k)| !k.offers(&name))
                .map(|(s, k)| (*s, *k))
                .collect(),
            // A source that did not compile might offer it: its own error says enough.
            None if !known.failed_sources.is_empty()
                && !known.kinds.values().any(|k| k.offers(&name)) =>
            {
                Vec::new()
            }
            None if known.kinds.values().any(|k| k.offers(&name)) => {
                let mut lacking: Vec<String> = known
                    .kinds
                    .iter()
                    .filter(|(_, k)| !k.offers(&name))
                    .map(|(s, k)| format!("`{s}` ({})", k.name()))
                    .collect();
                lacking.sort();
                if !lacking.is_empty() {
                    cx.warnings.push(format!(
                        "{}:{}: meta(\"{name}\") is absent on events of {} (the rule has no `sources:`, so it sees every source; there it is nothing and a comparison with it is false); name the rule's sources in `sources:`",
                        cx.file,
                        at.line(),
                        lacking.join(", ")
                    ));
                }
                Vec::new()
            }
            None => {
                cx.err(
                    at,
                    format!(
                        "meta(\"{name}\"): no declared source offers it (webhooks offer `headers.<name>` and `peer`, syslog and snmp_trap `peer`, mqtt `topic`, nats `subject`)"
                    ),
                );
                ok = false;
                continue;
            }
        };
        for (source, kind) in lacking {
            let offered = kind.meta_names();
            cx.err(
                at,
                format!(
                    "meta(\"{name}\"): source `{source}` ({}) does not offer it; {}",
                    kind.name(),
                    if offered.is_empty() {
                        "its events have no envelope fields".to_string()
                    } else {
                        format!("it offers: {}", offered.join(", "))
                    }
                ),
            );
            ok = false;
        }
    }
    ok
}

fn compile_rule(
    cx: &mut Compile,
    interner: &mut Interner,
    spec: &RuleSpec,
    rulebook: &str,
    known: &Known,
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
    let rule_sources = compile_rule_sources(cx, spec, known);
    let condition = match &spec.condition {
        None => Some(Condition::Always),
        Some(c) => compile_condition(cx, interner, c),
    };
    if let (Some(c), Some(at)) = (&condition, &spec.condition)
        && !meta_names_offered(cx, c, rule_sources.as_deref(), known, &at.referenced)
    {
        ok = false;
    }
    if spec.actions.is_empty() {
        cx.err(
            &spec.name.referenced,
            format!("rule `{name}` has no actions"),
        );
        ok = false;
    }
    cx.envelope = Some(rule_envelope(rule_sources.as_deref(), known));
    // Templates of a correlation rule may read `events.<name>` of its names only.
    cx.correlation = spec.correlate.as_ref().map(|c| {
        named_specs(&c.value)
            .iter()
            .map(|(n, _)| n.value.clone())
            .collect()
    });
    let kinds = (known.internal, known.scripts);
    let main = format!("{rulebook}/{name}");
    let failure = format!("{rulebook}/{name}/on_failure");
    let (actions, main_ok) =
        compile_actions(cx, &spec.actions, &name, &main, false, kinds, templates);
    let (on_failure, failure_ok) = compile_actions(
        cx,
        &spec.on_failure,
        &name,
        &failure,
        true,
        kinds,
        templates,
    );
    ok &= main_ok && failure_ok;
    let approval = match &spec.approval {
        None => None,
        Some(a) => match compile_approval(cx, a, rulebook, &name, known, templates) {
            Some(a) => Some(a),
            None => {
                ok = false;
                None
            }
        },
    };
    cx.scope = Scope::default();
    cx.correlation = None;
    cx.envelope = None;
    let throttle = match &spec.throttle {
        None => None,
        Some(t) => {
            let (throttle, throttle_ok) = compile_throttle(cx, &t.value);
            ok &= throttle_ok;
            Some(throttle?)
        }
    };
    let (correlate, correlate_ok) = rule_correlation(cx, interner, spec);
    ok &= correlate_ok;
    // A correlation rule is considered for an event its own condition and any of the
    // correlation's conditions accept.
    let condition = match (&correlate, condition?) {
        (Some(_), own) => {
            let steps = correlation_conditions(cx, interner, spec)?;
            match own {
                Condition::Always => Condition::Steps(steps),
                own => Condition::All(vec![own, Condition::Steps(steps)]),
            }
        }
        (None, own) => own,
    };
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
        throttle: throttle.map(Box::new),
        correlate: correlate.map(Box::new),
        shadow: false,
        approval: approval.map(Box::new),
        fingerprint: String::new(),
        counters: Default::default(),
    })
}

/// A rule's `correlate:` block, which does not go with `throttle:`; `false` on an error.
fn rule_correlation(
    cx: &mut Compile,
    interner: &mut Interner,
    spec: &RuleSpec,
) -> (Option<Correlation>, bool) {
    let Some(c) = &spec.correlate else {
        return (None, true);
    };
    let mut ok = true;
    if spec.throttle.is_some() {
        cx.err(
            &c.referenced,
            "`correlate` and `throttle` do not go together (a correlation fires once per match already; `count` once per window)",
        );
        ok = false;
    }
    let compiled = compile_correlate(cx, interner, c);
    ok &= compiled.is_some();
    (compiled, ok)
}

/// A rule's `sources:` that some rulebook declares (an error for each other one, with the
/// closest name; a source whose own declaration failed is left out silently).
fn compile_rule_sources(cx: &mut Compile, spec: &RuleSpec, known: &Known) -> Option<Vec<String>> {
    let name = &spec.name.value;
    spec.sources.as_ref().map(|list| {
        list.iter()
            .filter_map(|s| {
                if known.sources.contains(s.value.as_str()) {
                    return Some(s.value.clone());
                }
                if !known.failed_sources.contains(&s.value) {
                    let names: Vec<&str> = known.sources.iter().copied().collect();
                    let hint = crate::rulebook::yaml_error::closest(&s.value, &names)
                        .map(|c| format!("; did you mean `{c}`?"))
                        .unwrap_or_default();
                    cx.err(
                        &s.referenced,
                        format!(
                            "rule `{name}` names source `{}`, which no rulebook declares{hint}",
                            s.value
                        ),
                    );
                }
                None
            })
            .collect::<Vec<_>>()
    })
}

/// A rule's `actions:` (or, with `failure`, its `on_failure:`), each compiled by its kind with
/// the template variables it will have; `false` when one did not compile. `kinds`: the
/// internal sources (for `post_event`) and the scripts folder.
fn compile_actions(
    cx: &mut Compile,
    specs: &[model::S<model::ActionSpec>],
    rule: &str,
    prefix: &str,
    failure: bool,
    kinds: (&HashSet<&str>, &Path),
    templates: &mut Templates,
) -> (Vec<Action>, bool) {
    // Exact capacity: an `Action` is a few hundred bytes, and a vector grown from empty holds
    // room for four.
    let mut out = Vec::with_capacity(specs.len());
    let mut ok = true;
    let mut kept = 0;
    for (i, a) in specs.iter().enumerate() {
        if skipped(cx, rule, a) {
            continue;
        }
        cx.scope = Scope {
            previous: failure || kept > 0,
            failure,
            approval: false,
        };
        kept += 1;
        match compile_action(cx, a, &format!("{prefix}/{i}"), kinds.0, kinds.1, templates) {
            Some(act) => out.push(act),
            None => ok = false,
        }
    }
    (out, ok)
}

/// `throttle:` — its window (`None` when it does not parse) and its `group_by` queries;
/// `false` when a query did not compile.
fn compile_throttle(cx: &mut Compile, t: &model::ThrottleSpec) -> (Option<Throttle>, bool) {
    let window = cx.duration(&t.once_within, "throttle.once_within");
    let (group_by, ok) = group_by_queries(cx, &t.group_by, "throttle.group_by");
    (window.map(|window| Throttle { window, group_by }), ok)
}

/// A rule's `approval:` (its `notify` actions see `approval`, not `previous` or `failure`).
fn compile_approval(
    cx: &mut Compile,
    spec: &Spanned<model::ApprovalSpec>,
    rulebook: &str,
    rule: &str,
    known: &Known,
    templates: &mut Templates,
) -> Option<super::approval::Approval> {
    let a = &spec.value;
    let timeout = cx.duration(&a.timeout, "approval.timeout");
    let approve_on_timeout = match a.on_timeout.as_ref().map(|o| (o, o.value.as_str())) {
        None | Some((_, "reject")) => Some(false),
        Some((_, "approve")) => Some(true),
        Some((o, other)) => {
            cx.err(
                &o.referenced,
                format!("approval.on_timeout `{other}` is not known: write `reject` or `approve`"),
            );
            None
        }
    };
    let mut approvers = Vec::new();
    for n in &a.approvers {
        if n.value.trim().is_empty() {
            cx.err(&n.referenced, "approval.approvers: a name is empty");
        }
        approvers.push(n.value.clone());
    }
    let mut notify = Vec::with_capacity(a.notify.len());
    let mut ok = true;
    for (i, n) in a.notify.iter().enumerate() {
        if skipped(cx, rule, n) {
            continue;
        }
        cx.scope = Scope {
            previous: false,
            failure: false,
            approval: true,
        };
        let prefix = format!("{rulebook}/{rule}/approval/notify/{i}");
        match compile_action(cx, n, &prefix, known.internal, known.scripts, templates) {
            Some(act) => notify.push(act),
            None => ok = false,
        }
    }
    cx.scope = Scope::default();
    if timeout.is_some_and(|t| t.is_zero()) {
        cx.err(
            &a.timeout.referenced,
            "approval.timeout must be longer than 0",
        );
        return None;
    }
    Some(super::approval::Approval {
        timeout: timeout?,
        approve_on_timeout: approve_on_timeout?,
        approvers,
        notify,
    })
    .filter(|_| ok)
}

/// `mode: shadow | live`: whether it is shadow (`default` when unset or wrong, with an error).
fn parse_mode(cx: &mut Compile, mode: Option<&Spanned<String>>, default: bool) -> bool {
    match mode.map(|m| (m, m.value.as_str())) {
        None => default,
        Some((_, "shadow")) => true,
        Some((_, "live")) => false,
        Some((m, other)) => {
            cx.err(
                &m.referenced,
                format!("mode `{other}` is not known: write `shadow` (match and render, run nothing) or `live`"),
            );
            default
        }
    }
}

/// The named conditions of a `correlate:` block, in order.
fn named_specs(spec: &CorrelateSpec) -> Vec<(&Spanned<String>, &Spanned<ConditionSpec>)> {
    if let Some(list) = &spec.all_of {
        return list
            .iter()
            .map(|n| (&n.value.name, &n.value.condition))
            .collect();
    }
    if let Some(list) = &spec.sequence {
        return list
            .iter()
            .map(|n| (&n.value.name, &n.value.condition))
            .collect();
    }
    if let Some(a) = &spec.absence {
        let (after, missing) = (&a.value.after.value, &a.value.missing.value);
        return vec![
            (&after.name, &after.condition),
            (&missing.name, &missing.condition),
        ];
    }
    if let Some(c) = &spec.count {
        return vec![(&c.value.name, &c.value.condition)];
    }
    Vec::new()
}

/// The correlation's conditions compiled again, for the rule's prefilter.
fn correlation_conditions(
    cx: &mut Compile,
    interner: &mut Interner,
    spec: &RuleSpec,
) -> Option<Vec<(String, Condition)>> {
    let c = spec.correlate.as_ref()?;
    named_specs(&c.value)
        .into_iter()
        .map(|(name, cond)| Some((name.value.clone(), compile_condition(cx, interner, cond)?)))
        .collect()
}

fn compile_correlate(
    cx: &mut Compile,
    interner: &mut Interner,
    spec: &Spanned<CorrelateSpec>,
) -> Option<Correlation> {
    let c = &spec.value;
    let given: Vec<&str> = [
        ("all_of", c.all_of.is_some()),
        ("sequence", c.sequence.is_some()),
        ("absence", c.absence.is_some()),
        ("count", c.count.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| k)
    .collect();
    if given.len() != 1 {
        cx.err(
            &spec.referenced,
            format!(
                "`correlate` takes exactly one of all_of, sequence, absence, count (found {})",
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given.join(", ")
                }
            ),
        );
        return None;
    }
    let mut ok = true;
    let within = cx.duration(&c.within, "correlate.within");
    if within.is_some_and(|w| w.is_zero()) {
        cx.err(
            &c.within.referenced,
            "correlate.within must be longer than 0",
        );
        ok = false;
    }
    let (group_by, group_ok) = group_by_queries(cx, &c.group_by, "correlate.group_by");
    ok &= group_ok;
    let kind = match given[0] {
        "all_of" => Kind::AllOf,
        "sequence" => Kind::Sequence,
        "absence" => Kind::Absence,
        _ => {
            let n = c.count.as_ref().map(|n| &n.value.at_least);
            match n {
                Some(n) if n.value >= 1 && n.value <= 10_000 => Kind::Count(n.value as usize),
                Some(n) => {
                    cx.err(&n.referenced, "count.at_least must be between 1 and 10000");
                    return None;
                }
                None => return None,
            }
        }
    };
    let named = named_specs(c);
    if matches!(kind, Kind::AllOf | Kind::Sequence) && named.len() < 2 {
        cx.err(
            &spec.referenced,
            format!(
                "correlate.{} needs at least two named conditions",
                kind.as_str()
            ),
        );
        ok = false;
    }
    let (steps, steps_ok) = correlation_steps(cx, interner, named);
    ok &= steps_ok;
    let max_open = match &c.max_open {
        None => DEFAULT_MAX_OPEN,
        Some(m) if (1..=MAX_MAX_OPEN).contains(&m.value) => m.value as usize,
        Some(m) => {
            cx.err(
                &m.referenced,
                format!("correlate.max_open must be between 1 and {MAX_MAX_OPEN}"),
            );
            ok = false;
            0
        }
    };
    let within = within?;
    let one_window_per_group = match c.absence.as_ref().and_then(|a| a.value.windows.as_ref()) {
        None => false,
        Some(w) if w.value == "per_event" => false,
        Some(w) if w.value == "per_group" => true,
        Some(w) => {
            cx.err(
                &w.referenced,
                format!("absence.windows `{}`: use per_event or per_group", w.value),
            );
            return None;
        }
    };
    ok.then_some(Correlation {
        kind,
        steps,
        within,
        group_by,
        max_open,
        one_window_per_group,
    })
}

/// `group_by:` queries (of `throttle` or `correlate`, named by `what` in errors); `false`
/// when one did not compile (its error points into the query).
fn group_by_queries(cx: &mut Compile, list: &[Spanned<String>], what: &str) -> (Vec<Query>, bool) {
    let mut out = Vec::new();
    let mut ok = true;
    for q in list {
        match Query::compile(&q.value) {
            Ok(compiled) => out.push(compiled),
            Err(e) => {
                let (line, col) = cx.content_start(&q.referenced);
                cx.errors.push(LoadError {
                    file: cx.file.clone(),
                    line,
                    column: col + e.offset as u64,
                    message: format!("{what} `{}`: {}", q.value, e.message),
                });
                ok = false;
            }
        }
    }
    (out, ok)
}

/// A correlation's named conditions (names unique, usable as `events.<name>`); `false` on an
/// error.
fn correlation_steps(
    cx: &mut Compile,
    interner: &mut Interner,
    named: Vec<(&Spanned<String>, &Spanned<ConditionSpec>)>,
) -> (Vec<Named>, bool) {
    let mut ok = true;
    let mut steps = Vec::with_capacity(named.len());
    let mut names = HashSet::new();
    for (name, cond) in named {
        if !valid_name(&name.value) {
            cx.err(
                &name.referenced,
                format!(
                    "correlation name `{}` must match [a-z0-9_-]+ (templates read it as events.<name>)",
                    name.value
                ),
            );
            ok = false;
        } else if !names.insert(name.value.clone()) {
            cx.err(
                &name.referenced,
                format!("correlation name `{}` is used twice", name.value),
            );
            ok = false;
        }
        match compile_condition(cx, interner, cond) {
            Some(condition) => steps.push(Named {
                name: name.value.clone(),
                condition,
            }),
            None => ok = false,
        }
    }
    (steps, ok)
}

/// Whether action `a` is left out because an environment variable it requires is not set
/// (with a warning naming them).
fn skipped(cx: &mut Compile, rule: &str, a: &Spanned<ActionSpec>) -> bool {
    let missing = model::missing_env(a.value.requires_env());
    if missing.is_empty() {
        return false;
    }
    cx.warnings.push(format!(
        "{}:{}: rule `{rule}`: `{}` is skipped because {} {} not set",
        cx.file,
        a.referenced.line(),
        a.value.key(),
        missing.join(", "),
        if missing.len() == 1 { "is" } else { "are" }
    ));
    true
}

/// Compiles one action: each kind compiles its own spec.
fn compile_action(
    cx: &mut Compile,
    spec: &Spanned<ActionSpec>,
    prefix: &str,
    internal: &HashSet<&str>,
    scripts: &Path,
    t: &mut Templates,
) -> Option<Action> {
    match &spec.value {
        ActionSpec::PostWebhook(w) => {
            outbound::compile_post_webhook(cx, w, prefix, t).map(|a| Action::Http(Box::new(a)))
        }
        ActionSpec::GithubDispatch(g) => {
            outbound::compile_github_dispatch(cx, g, prefix, t).map(|a| Action::Http(Box::new(a)))
        }
        ActionSpec::GithubWorkflow(g) => {
            outbound::compile_github_workflow(cx, g, prefix, t).map(|a| Action::Http(Box::new(a)))
        }
        ActionSpec::GitlabPipeline(g) => {
            outbound::compile_gitlab_pipeline(cx, g, prefix, t).map(|a| Action::Http(Box::new(a)))
        }
        ActionSpec::OpenTicket(o) => {
            ticket::compile(cx, o, prefix, t).map(|a| Action::OpenTicket(Box::new(a)))
        }
        ActionSpec::Notify(n) => {
            notify::compile(cx, n, prefix, t).map(|a| Action::Http(Box::new(a)))
        }
        ActionSpec::PostEvent(p) => {
            event::compile(cx, p, prefix, internal, t).map(Action::PostEvent)
        }
        ActionSpec::RunScript(s) => {
            script::compile(cx, s, prefix, scripts, t).map(|a| Action::RunScript(Box::new(a)))
        }
        ActionSpec::Log(l) => log::compile(cx, l, prefix, t).map(Action::Log),
        ActionSpec::RunPlaybook(p) => {
            ansible::compile(cx, p, prefix, scripts, t).map(|a| Action::RunPlaybook(Box::new(a)))
        }
        ActionSpec::RunJobTemplate(a) => {
            awx::compile(cx, a, false, prefix, t).map(|a| Action::Awx(Box::new(a)))
        }
        ActionSpec::RunWorkflowTemplate(a) => {
            awx::compile(cx, a, true, prefix, t).map(|a| Action::Awx(Box::new(a)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads one rulebook from a temporary directory.
    fn load_one(text: &str) -> RuleSet {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("rulebooks/s.yml"), text).unwrap();
        crate::rules::load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        })
        .unwrap()
    }

    /// Every error of one rulebook, as `line:column: message`.
    fn load_errors(files: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for (name, text) in files {
            std::fs::write(dir.path().join("rulebooks").join(name), text).unwrap();
        }
        let loaded = crate::rules::load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        });
        match loaded {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| {
                        format!(
                            "{}:{}:{}: {}",
                            stem(Path::new(&e.file)),
                            e.line,
                            e.column,
                            e.message
                        )
                    })
                    .collect()
            }
        }
    }

    /// A structural problem in one rule does not hide the later checks of the file's other
    /// rules (a bad condition, a source nobody declares), and what was set aside brings no
    /// second error along: a rule naming a source set aside, a window naming a rule set aside.
    #[test]
    fn a_structural_problem_hides_no_other_rules_checks() {
        let text = "sources:
  - { name: ok, kind: none }
  - { name: broken, kind: none, colour: red }
rules:
  - name: typo
    condtion: '$.a == 1'
    actions: [{ log: { message: hi } }]
  - name: bad_condition
    condition: '$.a = 1'
    actions: [{ log: { message: hi } }]
  - name: unknown_source
    sources: [nowhere]
    actions: [{ log: { message: hi } }]
  - name: on_broken
    sources: [broken]
    actions: [{ log: { message: hi } }]
windows:
  - { name: w, start: '2026-01-01T00:00:00Z', end: '2026-01-02T00:00:00Z', rules: [typo], during: hold }
";
        let found = load_errors(&[("s.yml", text)]);
        let at = |line: &str, words: &str| {
            found
                .iter()
                .any(|f| f.starts_with(&format!("s:{line}")) && f.contains(words))
        };
        assert!(at("3:", "unknown key `colour`"), "{found:?}");
        assert!(at("6:5:", "unknown key `condtion`"), "{found:?}");
        assert!(at("9:", "`=` is not an operator"), "{found:?}");
        assert!(at("12:", "`nowhere`"), "{found:?}");
        assert_eq!(found.len(), 4, "{found:?}");
        // Another file's rules are checked as before, and name the broken file's kept source.
        let other = "rules:\n  - name: elsewhere\n    sources: [ok]\n    condition: '$.b = 2'\n    actions: [{ log: { message: hi } }]\n";
        let found = load_errors(&[("s.yml", text), ("t.yml", other)]);
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("t:4:") && f.contains("`=` is not an operator")),
            "{found:?}"
        );
        assert_eq!(found.len(), 5, "{found:?}");
    }

    /// A signed-timestamp source keeps its delivery ids for at least twice its `tolerance`
    /// (a message is taken within `tolerance` either side of its timestamp): a shorter
    /// `dedup_window` let a replay through once its id was forgotten. It is raised, with a
    /// warning; `off` is kept, with a warning; a longer one is untouched, without one.
    #[test]
    fn a_signed_timestamp_source_remembers_ids_past_its_tolerance() {
        let cases = [
            (
                "standard-webhooks",
                "tolerance: 10m, dedup_window: 1m",
                Some(1200),
                true,
            ),
            (
                "infrahub",
                "tolerance: 10m, dedup_window: 1m",
                Some(1200),
                true,
            ),
            ("standard-webhooks", "dedup_window: 2m", Some(600), true),
            (
                "standard-webhooks",
                "tolerance: 10m, dedup_window: 20m",
                Some(1200),
                false,
            ),
            (
                "standard-webhooks",
                "tolerance: 5m, dedup_window: 1h",
                Some(3600),
                false,
            ),
            ("standard-webhooks", "tolerance: 5d", Some(864_000), false),
            ("standard-webhooks", "", None, false),
            ("standard-webhooks", "dedup_window: off", Some(0), true),
            ("github", "dedup_window: 1m", Some(60), false),
        ];
        for (kind, extra, window, warned) in cases {
            let secret = if kind == "github" {
                "s3cret-s3cret"
            } else {
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            };
            let sep = if extra.is_empty() { "" } else { ", " };
            let set = load_one(&format!(
                "sources:\n  - {{ name: sw, kind: {kind}, secret: \"{secret}\"{sep}{extra} }}\n"
            ));
            let source = set.sources.iter().find(|s| s.name == "sw").unwrap();
            assert_eq!(
                source.dedup_window.map(|d| d.as_secs()),
                window,
                "{kind} {extra}"
            );
            let said = set
                .warnings
                .iter()
                .any(|w| w.contains("source `sw`") && w.contains("dedup_window"));
            assert_eq!(said, warned, "{kind} {extra}: {:?}", set.warnings);
        }
    }

    /// A rulebook of `n` rules (about 15 YAML nodes each).
    fn rulebook(n: usize) -> String {
        let mut text = String::from("sources:\n  - { name: s, kind: internal }\nrules:\n");
        for i in 0..n {
            text.push_str(&format!(
                "  - name: r{i}\n    condition: '$.a == {i}'\n    actions:\n      - log: {{ message: 'x', level: info }}\n"
            ));
        }
        text
    }

    /// The size guard at a small limit: past it, the file is one error, located, that asks to
    /// split it (not the same error again for every rule set aside); under it, the file parses.
    #[test]
    fn a_file_past_the_node_limit_is_one_located_error() {
        let texts = vec![(PathBuf::from("r.yml"), rulebook(40))];
        let (mut errors, mut failed) = (Vec::new(), Vec::new());
        assert!(parse_all(&texts, &mut errors, &mut failed, 200).is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert!(
            e.file == "r.yml"
                && e.line > 3
                && e.message.contains("201 YAML nodes")
                && e.message.contains("split its rules into several files"),
            "{e:?}"
        );
        let mut errors = Vec::new();
        assert_eq!(parse_all(&texts, &mut errors, &mut failed, 2_000).len(), 1);
        assert!(errors.is_empty(), "{errors:?}");
    }

    /// The structural errors of one file, as `line:column: message`.
    fn problems(text: &str) -> Vec<String> {
        let texts = vec![(PathBuf::from("r.yml"), text.to_string())];
        let (mut errors, mut failed) = (Vec::new(), Vec::new());
        assert!(parse_all(&texts, &mut errors, &mut failed, 250_000).is_empty());
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect()
    }

    /// A misspelt key deep in a rule is reported once, and setting it aside to look for more
    /// invents nothing: not a `missing field `actions`` for a rule that has `actions:` (the key
    /// sat in a flow mapping on the `actions:` line), nor "`log:` has no value" for a `log:`
    /// whose only field was the misspelt one, nor the missing key the misspelling stood for.
    #[test]
    fn a_misspelt_key_brings_no_invented_errors_along() {
        let head = "sources: [{name: a, kind: none}]\nrules:\n";
        let flow = format!("{head}  - name: r\n    actions: [{{log: {{mesage: hi}}}}]\n");
        let found = problems(&flow);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("4:22: unknown key `mesage`"),
            "{found:?}"
        );
        let block =
            format!("{head}  - name: r\n    actions:\n      - log:\n          mesage: hi\n");
        let found = problems(&block);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("6:11: unknown key `mesage`"),
            "{found:?}"
        );
        let rule = format!(
            "{head}  - name: r\n    condtion: '$.a'\n    actoins: [{{log: {{message: hi}}}}]\n  - name: ok\n    actions: [{{log: {{mesage: hi}}}}]\n"
        );
        let found = problems(&rule);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("4:5: unknown key `condtion`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("5:5: unknown key `actoins`"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("7:22: unknown key `mesage`"),
            "{found:?}"
        );
        // Two misspelt keys of one action, each on its own line, are both reported.
        let two = format!(
            "{head}  - name: r\n    actions:\n      - log:\n          mesage: hi\n          levl: info\n"
        );
        let found = problems(&two);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[1].starts_with("7:11: unknown key `levl`"),
            "{found:?}"
        );
    }

    /// A key written with nothing after it is an error, not a key left out: `approval:` alone
    /// loaded a rule that ran without asking anyone, `condition:` one that matched every event,
    /// `correlate:` one that fired on every event, `throttle:` one never throttled. A list key
    /// with no value proposes a list, not `[:]`.
    #[test]
    fn a_key_written_without_a_value_is_an_error_not_left_out() {
        let head = "sources:\n  - name: a\n    kind: none\n";
        let rule = "    actions: [{log: {message: hi}}]\n";
        let cases = [
            ("approval:", "`approval:` has no value"),
            ("condition:", "`condition:` has no value"),
            ("correlate:", "`correlate:` has no value"),
            ("throttle:", "`throttle:` has no value"),
            ("mode:", "`mode` has no value"),
            ("sources:", "`sources` must be a list: `sources: [a, b]`"),
        ];
        for (key, want) in cases {
            let text = format!("{head}rules:\n  - name: r\n    {key}\n{rule}");
            let found = problems(&text);
            assert!(
                found.len() == 1 && found[0].starts_with("6:") && found[0].contains(want),
                "want {want:?}, got {found:?} for\n{text}"
            );
        }
        let found = problems(&format!("mode:\n{head}"));
        assert!(
            found.len() == 1 && found[0].starts_with("1:5: `mode` has no value"),
            "{found:?}"
        );
        let found = problems(&format!("windows:\n{head}"));
        assert!(
            found.len() == 1
                && found[0].starts_with("1:8: `windows` must be a list: `windows: [a, b]`"),
            "{found:?}"
        );
    }

    /// A required key left out is named as such, not in serde's words (`missing field
    /// `timeout``), at the mapping that lacks it.
    #[test]
    fn a_required_key_left_out_is_named_in_plain_words() {
        let head = "sources:\n  - name: a\n    kind: none\n";
        let cases = [
            (
                format!(
                    "{head}rules:\n  - name: r\n    approval: {{on_timeout: approve}}\n    actions: [{{log: {{message: hi}}}}]\n"
                ),
                "6:16: `timeout` is required and missing here: add `timeout:` to this mapping",
            ),
            (
                format!("{head}rules:\n  - name: r\n    condition: '$.a == 1'\n"),
                "`actions` is required and missing here: add `actions:` to this mapping",
            ),
        ];
        for (text, want) in cases {
            let found = problems(&text);
            assert!(
                found.len() == 1 && found[0].contains(want),
                "want {want:?}, got {found:?} for\n{text}"
            );
        }
    }

    /// A value of the wrong type is said with the key, the value and what goes there, not in
    /// the YAML library's words (`strict mode`, `Option<String>`, `DuplicateKeyPolicy`).
    #[test]
    fn a_value_of_the_wrong_type_is_named_in_plain_words() {
        let head = "sources:\n  - name: a\n    kind: none\n";
        let rule = "    actions: [{log: {message: hi}}]\n";
        let cases = [
            (
                format!("{head}rules:\n  - name: r\n    enabled: yes\n{rule}"),
                "6:14: `enabled` must be `true` or `false`, not `yes`",
            ),
            (
                format!("{head}    rate_limit: {{per_second: many}}\n"),
                "4:30: `per_second` must be a number, not `many`",
            ),
            (
                format!("{head}rules:\n  - name:\n{rule}"),
                "5:9: `name` has no value: write it after `name:`",
            ),
            (
                format!("{head}    kind: bearer\n"),
                "4:5: `kind` is written twice in one mapping (first at line 3): keep one",
            ),
            (
                format!("{head}rules:\n  - name: r\n    sources: a\n{rule}"),
                "6:14: `sources` must be a list: `sources: [a]`",
            ),
            (
                format!("{head}rules:\n  - name: [r]\n{rule}"),
                "5:11: `name` must be a single value (text), not a list or mapping",
            ),
            (
                "# a comment\n- name: a\n  kind: none\n".to_string(),
                "2:1: a rulebook is a mapping of `sources:`, `rules:`",
            ),
        ];
        for (text, want) in cases {
            let found = problems(&text);
            assert!(
                found.len() == 1 && found[0].starts_with(want),
                "want {want:?}, got {found:?} for\n{text}"
            );
            for jargon in [
                "strict mode",
                "Option<",
                "DuplicateKeyPolicy",
                "floating point",
            ] {
                assert!(!found[0].contains(jargon), "{found:?}");
            }
        }
    }
}
