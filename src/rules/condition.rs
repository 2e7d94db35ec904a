//! Conditions: RFC 9535 JSONPath logical expressions over an event, compiled once at load.
//!
//! This module is the seam between rulehook and its JSONPath engine (`jsonpath-rfc9535`, chosen
//! because it passes the whole Compliance Test Suite and compiles `match()`/`search()` regexes
//! once, at parse time). No other module names the engine.
//!
//! An engine evaluates *queries*, not bare logical expressions, so a condition `E` is compiled as
//! the query `$[?E']` and run over `[[event, envelope]]`, where `E'` is `E` with each root
//! identifier `$` (and a `@` outside brackets) rewritten to `$[0][0]`, the event itself, and each
//! call of the function extension `meta("name")` rewritten to the query of that envelope field
//! under `$[0][1]` (`meta("headers.x-github-event")` → `$[0][1]["headers"]["x-github-event"]`):
//! RFC 9535 §2.4 lets an implementation add functions, and a singular query is exactly what a
//! function of `ValueType` may stand for. The filter visits exactly one node, so the query
//! selects something exactly when `E` is true.
//!
//! The top-level `&&` operands of the form `singular query == string/true/false/null` are not
//! given to the engine: they are checked by reading the event at the path and comparing, which
//! is RFC 9535 equality for those literals (and what the rule index files rules by). Only the
//! other operands, if any, become a `$[?…]` filter. The whole expression is still compiled once
//! at load, so what is valid and where errors point is the engine's word.

use std::collections::HashSet;
use std::sync::Arc;

use super::index::{Fields, Probe};
use crate::domain::EventDoc;
use jsonpath_rfc9535::{JsonPath, SingularSegment};
use serde_json::Value;

/// Why a condition failed to compile: a message and the byte offset inside the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub offset: usize,
    pub message: String,
}

/// A literal an equality conjunct compares against, usable as a hash key by the rule index.
/// Strings are shared (see [`Interner`]): `"completed"` in 10,000 rules is one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKey {
    Str(Arc<str>),
    Bool(bool),
    Null,
}

impl IndexKey {
    /// Whether `value` equals this literal. For string, boolean and null literals this is
    /// exactly RFC 9535 `==` between a node and the literal: same kind, same content.
    pub fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (IndexKey::Str(s), Value::String(v)) => **s == **v,
            (IndexKey::Bool(b), Value::Bool(v)) => b == v,
            (IndexKey::Null, Value::Null) => true,
            _ => false,
        }
    }

    /// The key a JSON literal compares as, if it is of an indexable kind.
    fn of(value: Value, interner: &mut Interner) -> Option<IndexKey> {
        match value {
            Value::String(s) => Some(IndexKey::Str(interner.string(s))),
            Value::Bool(b) => Some(IndexKey::Bool(b)),
            Value::Null => Some(IndexKey::Null),
            _ => None,
        }
    }
}

/// A path made only of member names and indexes: read straight off an event, no engine needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingularPath(Vec<SingularSegment>);

impl std::hash::Hash for SingularPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for step in &self.0 {
            match step {
                SingularSegment::Name(n) => (0u8, n.as_str()).hash(state),
                SingularSegment::Index(i) => (1u8, i.get()).hash(state),
            }
        }
    }
}

impl SingularPath {
    /// What a message read through [`Fields`] holds at this path: a member of a string or of
    /// a number is absent, as [`SingularPath::get`] finds it on the built event.
    pub fn probe<'a>(&self, fields: &'a dyn Fields) -> Probe<'a> {
        match self.0.split_first() {
            Some((SingularSegment::Name(name), rest)) => match fields.field(name.as_str()) {
                Probe::Str(_) if !rest.is_empty() => Probe::Absent,
                p => p,
            },
            // The event is an object: an index into it finds nothing; `$` itself is not a string.
            Some((SingularSegment::Index(_), _)) => Probe::Absent,
            None => Probe::Unknown,
        }
    }

    /// The node at this path, if the event has one.
    pub fn get<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        let mut node = body;
        for step in &self.0 {
            node = match (step, node) {
                (SingularSegment::Name(name), Value::Object(map)) => map.get(name)?,
                (SingularSegment::Index(i), Value::Array(items)) => {
                    let i = i.get();
                    let idx = if i < 0 {
                        items
                            .len()
                            .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                    } else {
                        usize::try_from(i).ok()?
                    };
                    items.get(idx)?
                }
                _ => return None,
            };
        }
        Some(node)
    }
}

/// Shares what many rules repeat — the paths they compare and the literal strings they compare
/// with — across one load. Rules are usually written from one template (`$.snapshot.id ==
/// "…"` for 10,000 snapshots): each distinct path and string is then held once.
#[derive(Debug, Default)]
pub struct Interner {
    paths: HashSet<Arc<SingularPath>>,
    strings: HashSet<Arc<str>>,
}

impl Interner {
    fn path(&mut self, path: SingularPath) -> Arc<SingularPath> {
        if let Some(p) = self.paths.get(&path) {
            return p.clone();
        }
        let p = Arc::new(path);
        self.paths.insert(p.clone());
        p
    }

    fn string(&mut self, s: String) -> Arc<str> {
        if let Some(x) = self.strings.get(s.as_str()) {
            return x.clone();
        }
        let x: Arc<str> = Arc::from(s);
        self.strings.insert(x.clone());
        x
    }
}

/// A top-level `query == literal` operand: the path it reads and the literal it requires.
#[derive(Debug)]
struct Equality {
    path: Arc<SingularPath>,
    key: IndexKey,
}

/// A compiled JSONPath logical expression.
///
/// Most conditions are conjunctions of `query == "literal"`. Those operands are kept as a path
/// and a literal, checked by reading the event directly (the same comparison the rule index
/// already files rules by), and only the remaining operands, if any, are compiled into one
/// engine filter: a compiled filter costs about 2 KB per rule, an equality 32 bytes.
/// Operand texts are not kept: explanations re-split `text` on demand (a slow path).
#[derive(Debug)]
pub struct Expr {
    text: Box<str>,
    /// Operands that must all hold, in the order written.
    equalities: Box<[Equality]>,
    /// The other operands as one filter (`None`: there are none).
    rest: Option<Box<JsonPath>>,
}

impl Expr {
    /// Compiles `text`; errors carry the byte offset inside `text`.
    pub fn compile(text: &str) -> Result<Expr, ConditionError> {
        Expr::compile_in(text, &mut Interner::default())
    }

    /// Compiles `text`, sharing paths and literals with earlier expressions of `interner`.
    pub fn compile_in(text: &str, interner: &mut Interner) -> Result<Expr, ConditionError> {
        if text.trim().is_empty() {
            return Err(ConditionError {
                offset: 0,
                message: "empty condition".into(),
            });
        }
        nesting_within_limit(text)?;
        let parts = operands(text);
        // The whole expression is compiled first: it is what decides validity and where an
        // error points.
        let whole = match compile_filter(text, 0) {
            Ok(q) => q,
            Err(whole) => {
                // A familiar mistake gets its name and a fix (`super::hint`).
                if let Some(h) = super::hint::hint(text) {
                    return Err(h);
                }
                // Point at least at the operand that holds the error, when the engine could not.
                for (start, part) in &parts {
                    let lead = part.len() - part.trim_start().len();
                    compile_filter(part.trim(), start + lead)?;
                }
                return Err(whole);
            }
        };
        if let Some(e) = super::patterns::invalid_pattern(text) {
            return Err(e);
        }
        let mut equalities = Vec::new();
        let mut others = Vec::new();
        for (_, part) in &parts {
            let part = part.trim();
            let (subject, literal) = describe(part);
            match (subject, literal.and_then(|v| IndexKey::of(v, interner))) {
                (Some((_, path)), Some(key)) => equalities.push(Equality {
                    path: interner.path(path),
                    key,
                }),
                _ => others.push(part),
            }
        }
        let rest = if equalities.is_empty() {
            Some(whole)
        } else if others.is_empty() {
            None
        } else {
            // Each operand is a basic expression, so joining them with `&&` is a valid
            // expression; should the engine still refuse it, keep the whole filter.
            match compile_filter(&others.join(" && "), 0) {
                Ok(q) => Some(q),
                Err(_) => {
                    equalities.clear();
                    Some(whole)
                }
            }
        };
        Ok(Expr {
            text: text.into(),
            equalities: equalities.into_boxed_slice(),
            rest: rest.map(Box::new),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn eval(&self, doc: &EventDoc) -> bool {
        let body = doc.body();
        self.equalities
            .iter()
            .all(|e| e.path.get(body).is_some_and(|v| e.key.matches(v)))
            && self
                .rest
                .as_ref()
                .is_none_or(|q| !q.query_values(doc.wrapped()).is_empty())
    }

    /// The operands that are false, each with the actual value it looked at.
    fn failures(&self, doc: &EventDoc, out: &mut Vec<String>) {
        for (_, part) in operands(&self.text) {
            let part = part.trim();
            let holds =
                compile_filter(part, 0).is_ok_and(|q| !q.query_values(doc.wrapped()).is_empty());
            if !holds {
                let actual = match describe(part).0 {
                    Some((name, path)) => match path.get(doc.body()) {
                        Some(v) => format!(" ({name} is {v})"),
                        None => format!(" ({name} does not exist)"),
                    },
                    None => read_values(part, doc),
                };
                out.push(format!("`{part}` is false{actual}"));
            }
        }
    }

    /// Equalities on a literal that must all hold for the expression to be true.
    pub fn required_equalities(&self) -> impl Iterator<Item = (&Arc<SingularPath>, &IndexKey)> {
        self.equalities.iter().map(|e| (&e.path, &e.key))
    }
}

/// The top-level `&&` operands of an expression, each with its byte offset; the whole
/// expression when it has a top-level `||`.
fn operands(text: &str) -> Vec<(usize, &str)> {
    if split_top(text, "||").len() > 1 {
        vec![(0, text)]
    } else {
        split_top(text, "&&")
    }
}

/// Parentheses and brackets nested deeper than this are refused before parsing: the JSONPath
/// parser backtracks exponentially on deeply nested unclosed groups (found by fuzzing: 222
/// bytes of `(a(a(t…` took minutes), and no real condition nests this deep.
const MAX_NESTING: usize = 12;

fn nesting_within_limit(text: &str) -> Result<(), ConditionError> {
    let mut depth = 0usize;
    for (offset, c) in crate::text::outside_quotes(text) {
        match c {
            '(' | '[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(ConditionError {
                        offset,
                        message: format!(
                            "nested more than {MAX_NESTING} levels deep: simplify the condition"
                        ),
                    });
                }
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A JSONPath query (not a logical expression), e.g. a throttle's `group_by` entry.
#[derive(Debug)]
pub struct Query(JsonPath);

impl Query {
    pub fn compile(text: &str) -> Result<Query, ConditionError> {
        nesting_within_limit(text)?;
        JsonPath::parse(text)
            .map(Query)
            .map_err(|e| ConditionError {
                offset: match &e {
                    jsonpath_rfc9535::Error::Syntax { position, .. } => *position,
                    _ => 0,
                },
                message: e.to_string(),
            })
    }

    /// The selected values, as one JSON array.
    pub fn select(&self, body: &Value) -> Value {
        Value::Array(self.0.query_values(body).into_iter().cloned().collect())
    }
}

/// A rule's condition: an expression, or `all:` / `any:` / `not:` over conditions.
#[derive(Debug)]
pub enum Condition {
    Always,
    Expr(Expr),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// A correlation rule's conditions, each under its name: the rule looks at an event any of
    /// them accepts. Kept apart from `Any` so that a miss is explained with the names the user
    /// wrote (`down`, `up`), not as an `any:` they never wrote.
    Steps(Vec<(String, Condition)>),
}

impl Condition {
    /// The condition as text (for fingerprints and messages).
    pub fn describe(&self) -> String {
        match self {
            Condition::Always => "always".into(),
            Condition::Expr(e) => e.text().to_string(),
            Condition::All(v) => format!(
                "all({})",
                v.iter()
                    .map(Condition::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Condition::Any(v) => format!(
                "any({})",
                v.iter()
                    .map(Condition::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Condition::Not(c) => format!("not({})", c.describe()),
            // As `any(…)`: a rule's fingerprint does not change with how it is held.
            Condition::Steps(v) => format!(
                "any({})",
                v.iter()
                    .map(|(_, c)| c.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    pub fn eval(&self, doc: &EventDoc) -> bool {
        match self {
            Condition::Always => true,
            Condition::Expr(e) => e.eval(doc),
            Condition::All(cs) => cs.iter().all(|c| c.eval(doc)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(doc)),
            Condition::Not(c) => !c.eval(doc),
            Condition::Steps(cs) => cs.iter().any(|(_, c)| c.eval(doc)),
        }
    }

    /// Whether it holds, and when it does not, which parts were false and why.
    pub fn explain(&self, doc: &EventDoc) -> (bool, Vec<String>) {
        let mut why = Vec::new();
        let ok = self.explain_into(doc, &mut why);
        if ok {
            why.clear();
        }
        (ok, why)
    }

    fn explain_into(&self, doc: &EventDoc, why: &mut Vec<String>) -> bool {
        match self {
            Condition::Always => true,
            Condition::Expr(e) => {
                let ok = e.eval(doc);
                if !ok {
                    e.failures(doc, why);
                }
                ok
            }
            Condition::All(cs) => {
                let mut ok = true;
                for c in cs {
                    ok &= c.explain_into(doc, why);
                }
                ok
            }
            Condition::Any(cs) => {
                let mut inner = Vec::new();
                let ok = cs
                    .iter()
                    .map(|c| c.explain_into(doc, &mut inner))
                    .collect::<Vec<_>>() // every branch explained, no short-circuit
                    .contains(&true);
                if !ok {
                    why.push(format!("none of `any` held: {}", inner.join("; ")));
                }
                ok
            }
            Condition::Not(c) => {
                let ok = !c.eval(doc);
                if !ok {
                    why.push(format!(
                        "`not` failed: its condition {} is true",
                        c.summary()
                    ));
                }
                ok
            }
            Condition::Steps(cs) => {
                let mut inner = Vec::new();
                let mut ok = false;
                for (name, c) in cs {
                    let mut own = Vec::new();
                    ok |= c.explain_into(doc, &mut own);
                    inner.push(format!("`{name}`: {}", own.join("; ")));
                }
                if !ok {
                    why.push(format!(
                        "no condition of its correlation holds: {}",
                        inner.join("; ")
                    ));
                }
                ok
            }
        }
    }

    fn summary(&self) -> String {
        match self {
            Condition::Always => "(always)".into(),
            Condition::Expr(e) => format!("`{}`", e.text()),
            Condition::All(cs) => format!("all of [{}]", join(cs)),
            Condition::Any(cs) => format!("any of [{}]", join(cs)),
            Condition::Not(c) => format!("not {}", c.summary()),
            Condition::Steps(cs) => format!(
                "any of [{}]",
                cs.iter()
                    .map(|(name, c)| format!("{name}: {}", c.summary()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The envelope names its expressions read with `meta("…")`.
    pub fn meta_names(&self) -> Vec<String> {
        match self {
            Condition::Always => Vec::new(),
            Condition::Expr(e) => meta_names(e.text()).into_iter().map(|(_, n)| n).collect(),
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter().flat_map(Condition::meta_names).collect()
            }
            Condition::Not(c) => c.meta_names(),
            Condition::Steps(cs) => cs.iter().flat_map(|(_, c)| c.meta_names()).collect(),
        }
    }

    /// Equalities that must hold for the whole condition to be true (for the rule index).
    pub fn required_equalities(&self) -> Vec<(&Arc<SingularPath>, &IndexKey)> {
        match self {
            Condition::Expr(e) => e.required_equalities().collect(),
            Condition::All(cs) => cs.iter().flat_map(|c| c.required_equalities()).collect(),
            _ => Vec::new(),
        }
    }
}

fn join(cs: &[Condition]) -> String {
    cs.iter()
        .map(Condition::summary)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compiles `expr` as `$[?expr']`; `base` is `expr`'s offset in the user's text.
pub(super) fn compile_filter(expr: &str, base: usize) -> Result<JsonPath, ConditionError> {
    let (rewritten, map) = rewrite_roots(expr);
    let query = format!("$[?{rewritten}]");
    JsonPath::parse(&query).map_err(|e| {
        let (position, message) = match &e {
            jsonpath_rfc9535::Error::Syntax { position, message } => (*position, message.clone()),
            jsonpath_rfc9535::Error::NestingTooDeep { position } => (*position, e.to_string()),
            other => (3, other.to_string()),
        };
        let inner = position.saturating_sub(3).min(map.len() - 1);
        let message = message.replace("$[0][0]", "$").replace("$[0][1]", "meta");
        let message = match message.strip_prefix("unknown function extension ") {
            Some(name) => unknown_function(name.trim_matches('`')),
            None => message,
        };
        ConditionError {
            offset: base + map[inner],
            message,
        }
    })
}

/// The functions a condition may call: RFC 9535's five and `meta()`.
const FUNCTIONS: &[&str] = &["length", "count", "match", "search", "value", "meta"];

/// What to say about a call of a function the engine does not have: the ones it has, and for
/// the string tests other languages call `contains`, `startswith` or `regex`, `search()`.
fn unknown_function(name: &str) -> String {
    let known = "the functions are length(), count(), match(), search(), value() and meta()";
    let text_test = matches!(
        name.to_ascii_lowercase().replace('_', "").as_str(),
        "contains" | "includes" | "startswith" | "endswith" | "regex" | "re" | "matches" | "find"
    );
    if text_test {
        return format!(
            "there is no function `{name}()`: test text with `search(query, \"pattern\")` (a regular expression found anywhere in it: `search($.msg, \"^%LINK\")` starts with it, `\"down$\"` ends with it) or `match()` (the whole text); {known}"
        );
    }
    match crate::text::closest(name, FUNCTIONS) {
        Some(f) => format!("there is no function `{name}()`; did you mean `{f}()`? ({known})"),
        None => format!("there is no function `{name}()`: {known}"),
    }
}

/// Rewrites each root identifier `$` (outside string literals) to `$[0][0]`, a `@` outside any
/// bracket (the event itself) to `$[0][0]` too, and each `meta("name")` to the query of that
/// envelope field under `$[0][1]`; returns the new text and, for each of its
/// byte offsets (and one past the end), the offset in `expr`.
fn rewrite_roots(expr: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(expr.len() + 8);
    let mut map = Vec::with_capacity(expr.len() + 9);
    let mut push = |at: usize, s: &str| {
        for _ in 0..s.len() {
            map.push(at);
        }
        out.push_str(s);
    };
    let mut scan = Scan::default();
    let mut i = 0;
    while let Some(ch) = expr[i..].chars().next() {
        if scan.quote.is_none() {
            if let Some((name, used)) = meta_call(expr, i) {
                push(i, &meta_query(&name));
                i += used;
                continue;
            }
            if ch == '$' || (ch == '@' && scan.brackets == 0) {
                push(i, "$[0][0]");
                i += 1;
                continue;
            }
        }
        scan.step(ch);
        push(i, ch.encode_utf8(&mut [0; 4]));
        i += ch.len_utf8();
    }
    map.push(expr.len());
    (out, map)
}

/// Where a left-to-right scan is: inside which quote, how deep in brackets.
#[derive(Default)]
struct Scan {
    quote: Option<char>,
    escaped: bool,
    brackets: usize,
}

impl Scan {
    fn step(&mut self, ch: char) {
        match self.quote {
            Some(q) => {
                if self.escaped {
                    self.escaped = false;
                } else if ch == '\\' {
                    self.escaped = true;
                } else if ch == q {
                    self.quote = None;
                }
            }
            None => match ch {
                '"' | '\'' => self.quote = Some(ch),
                '[' => self.brackets += 1,
                ']' => self.brackets = self.brackets.saturating_sub(1),
                _ => {}
            },
        }
    }
}

/// What an operand that is not a plain comparison read — each `meta("…")` and each singular
/// query among its function arguments (`search($.message, "BGP.*Down")`, `length($.commits)
/// > 0`) — as ` ($.message is "…", meta("topic") is "a/b")`; empty when it read neither.
fn read_values(part: &str, doc: &EventDoc) -> String {
    let mut said = envelope_values(part, doc);
    said.extend(query_values(part, doc));
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({})", said.join(", "))
    }
}

/// The singular queries (`$.a.b`, `$['x y'][0]`) written in `part` outside strings and
/// filters, each with the value it reads, shortened for a line.
fn query_values(part: &str, doc: &EventDoc) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut scan = Scan::default();
    let mut skip_to = 0;
    for (i, ch) in part.char_indices() {
        let outside = scan.quote.is_none() && scan.brackets == 0;
        scan.step(ch);
        if i < skip_to || !outside || ch != '$' {
            continue;
        }
        let before = part[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        // The query: names, dots and bracketed segments, up to what cannot continue it.
        let mut inner = Scan::default();
        let mut end = part.len();
        for (j, c) in part[i..].char_indices() {
            let free = inner.quote.is_none() && inner.brackets == 0;
            if free && j > 0 && !(c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | '-' | '*')) {
                end = i + j;
                break;
            }
            inner.step(c);
        }
        skip_to = end;
        let text = &part[i..end];
        if seen.contains(&text) {
            continue;
        }
        seen.push(text);
        if let Some(path) = singular(text) {
            out.push(match path.get(doc.body()) {
                Some(v) => format!("{text} is {}", shortened(v)),
                None => format!("{text} does not exist"),
            });
        }
    }
    out
}

/// A value as JSON on one line, cut after 160 characters.
fn shortened(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

/// What each `meta("…")` in `part` read (`meta("topic") is "a/b"`).
fn envelope_values(part: &str, doc: &EventDoc) -> Vec<String> {
    let mut seen = Vec::new();
    let mut scan = Scan::default();
    for (i, ch) in part.char_indices() {
        if scan.quote.is_none()
            && let Some((name, _)) = meta_call(part, i)
            && !seen.contains(&name)
        {
            seen.push(name);
        }
        scan.step(ch);
    }
    seen.iter()
        .map(|name| {
            let value = match name.split_once('.') {
                Some(("headers", h)) => doc
                    .meta()
                    .get("headers")
                    .and_then(|hs| hs.get(h.to_ascii_lowercase().as_str())),
                _ => doc.meta().get(name.as_str()),
            };
            match value {
                Some(v) => format!("meta(\"{name}\") is {v}"),
                None => format!("meta(\"{name}\") does not exist"),
            }
        })
        .collect()
}

/// The function extension that reads the envelope: `meta("headers.x-github-event")`,
/// `meta("peer")`, `meta("topic")`, `meta("subject")`. At `at` in `expr` (outside quotes): the
/// name it reads and how many bytes the call takes.
fn meta_call(expr: &str, at: usize) -> Option<(String, usize)> {
    let rest = expr[at..].strip_prefix("meta")?;
    let before = expr[..at].chars().next_back();
    if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '$' || c == '@') {
        return None;
    }
    let args = rest.trim_start().strip_prefix('(')?;
    let args_trimmed = args.trim_start();
    args_trimmed
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'')?;
    let mut scan = Scan::default();
    let mut end = None;
    for (i, ch) in args_trimmed.char_indices() {
        scan.step(ch);
        if i > 0 && scan.quote.is_none() {
            end = Some(i + 1);
            break;
        }
    }
    let end = end?;
    let name = match literal(&args_trimmed[..end])? {
        Value::String(s) => s,
        _ => return None,
    };
    let after = args_trimmed[end..].trim_start().strip_prefix(')')?;
    Some((name, expr.len() - at - after.len()))
}

/// The envelope query `meta(name)` stands for: `headers.<name>` takes the rest as one
/// (lower-case) header name; other names are one member.
fn meta_query(name: &str) -> String {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    match name.split_once('.') {
        Some(("headers", header)) => format!(
            "$[0][1][\"headers\"][{}]",
            quoted(&header.to_ascii_lowercase())
        ),
        _ => format!("$[0][1][{}]", quoted(name)),
    }
}

/// The names `meta("…")` reads in an expression, each with its byte offset.
pub fn meta_names(expr: &str) -> Vec<(usize, String)> {
    let mut names = Vec::new();
    let mut scan = Scan::default();
    let mut i = 0;
    while let Some(ch) = expr[i..].chars().next() {
        if scan.quote.is_none()
            && let Some((name, used)) = meta_call(expr, i)
        {
            names.push((i, name));
            i += used;
            continue;
        }
        scan.step(ch);
        i += ch.len_utf8();
    }
    names
}

/// Splits `expr` at `op` where it appears outside strings, parentheses and brackets.
/// Returns each part with its byte offset.
fn split_top<'a>(expr: &'a str, op: &str) -> Vec<(usize, &'a str)> {
    let bytes = expr.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
        } else {
            match b {
                b'"' | b'\'' => quote = Some(b),
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                _ if depth == 0 && bytes[i..].starts_with(op.as_bytes()) => {
                    parts.push((start, &expr[start..i]));
                    i += op.len();
                    start = i;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    parts.push((start, &expr[start..]));
    parts
}

/// For a conjunct of the form `query OP literal` (either order) with a singular `query`:
/// the query (text and path), and the literal when OP is `==`.
fn describe(conjunct: &str) -> (Option<(String, SingularPath)>, Option<Value>) {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        let sides = split_top(conjunct, op);
        if sides.len() != 2 {
            continue;
        }
        let (a, b) = (sides[0].1.trim(), sides[1].1.trim());
        for (q, lit) in [(a, b), (b, a)] {
            let Some(path) = singular(q) else { continue };
            let value = if op == "==" { literal(lit) } else { None };
            return (Some((q.to_string(), path)), value);
        }
        return (None, None);
    }
    (singular(conjunct).map(|p| (conjunct.to_string(), p)), None)
}

fn singular(text: &str) -> Option<SingularPath> {
    if !text.starts_with('$') {
        return None;
    }
    let path = JsonPath::parse(text).ok()?;
    path.singular_steps().map(|s| SingularPath(s.to_vec()))
}

/// A JSONPath literal (`"x"`, `'x'`, `true`, `false`, `null`, a number) as JSON.
pub(super) fn literal(text: &str) -> Option<Value> {
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        let json = format!("\"{}\"", inner.replace("\\'", "'").replace('"', "\\\""));
        return serde_json::from_str(&json).ok();
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(body: Value, headers: &[(&str, &str)]) -> EventDoc {
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EventDoc::with_headers(body, &h)
    }

    #[test]
    fn an_unknown_function_names_the_ones_there_are() {
        let e = Expr::compile(r#"startswith($.msg, "%LINK")"#).expect_err("no such function");
        assert!(
            e.message
                .starts_with("there is no function `startswith()`: test text with `search(")
                && e.message.ends_with("value() and meta()"),
            "{}",
            e.message
        );
        let e = Expr::compile(r#"$.a == 1 && lenght($.b) > 0"#).expect_err("a typo");
        assert!(
            e.message.contains("did you mean `length()`?"),
            "{}",
            e.message
        );
    }

    #[test]
    fn meta_reads_the_envelope() {
        let d = with_headers(
            json!({"a": "x", "meta": "body"}),
            &[
                ("x-github-event", "push"),
                (crate::domain::PEER_HEADER, "10.0.0.1"),
                (crate::domain::TOPIC_HEADER, "netops/sw12"),
            ],
        );
        let holds = |t: &str| Expr::compile(t).unwrap().eval(&d);
        assert!(holds(r#"meta("headers.x-github-event") == "push""#));
        assert!(holds(r#"meta('headers.X-GitHub-Event') == 'push'"#));
        assert!(holds(r#"meta ( "peer" ) == "10.0.0.1" && $.a == "x""#));
        assert!(holds(r#"search(meta("topic"), "/sw[0-9]+$")"#));
        assert!(!holds(r#"search(meta("topic"), "/rt[0-9]+$")"#));
        assert!(holds(r#"meta("headers.x-github-event")"#));
        assert!(!holds(r#"meta("subject")"#));
        assert!(!holds(
            r#"meta("headers.x-github-event") == "pull_request""#
        ));
        // Not the function: a member called meta, and text inside strings.
        assert!(holds(r#"$.meta == "body""#));
        assert!(holds(r#"$.a != "meta(\"peer\")""#));
        assert_eq!(
            meta_names(r#"meta("peer") == "x" || $.l[?meta("topic") == @]"#),
            vec![(0, "peer".to_string()), (28, "topic".to_string())]
        );
        assert!(meta_names(r#"$.meta == "meta('x')""#).is_empty());
    }

    #[test]
    fn a_false_meta_condition_says_what_it_read() {
        let d = with_headers(
            json!({}),
            &[
                ("x-github-event", "push"),
                (crate::domain::TOPIC_HEADER, "netops/rt1"),
            ],
        );
        let why = |t: &str| {
            let mut out = Vec::new();
            Expr::compile(t).unwrap().failures(&d, &mut out);
            out
        };
        assert_eq!(
            why(r#"search(meta("topic"), "/sw[0-9]+$")"#),
            vec![
                r#"`search(meta("topic"), "/sw[0-9]+$")` is false (meta("topic") is "netops/rt1")"#
            ]
        );
        assert_eq!(
            why(r#"meta("headers.X-GitHub-Event") == "pull_request" && meta("peer") == "x""#),
            vec![
                r#"`meta("headers.X-GitHub-Event") == "pull_request"` is false (meta("headers.X-GitHub-Event") is "push")"#.to_string(),
                r#"`meta("peer") == "x"` is false (meta("peer") does not exist)"#.to_string(),
            ]
        );
    }

    /// A false function call says what the queries among its arguments read, as a false
    /// comparison does (`rulehook test` on a syslog line that did not match a `search`).
    #[test]
    fn a_false_function_call_says_what_its_queries_read() {
        let d = EventDoc::new(json!({
            "message": "%LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
            "commits": [], "details": {"Issue Name": "x"}
        }));
        let why = |t: &str| {
            let mut out = Vec::new();
            Expr::compile(t).unwrap().failures(&d, &mut out);
            out
        };
        assert_eq!(
            why(r#"search($.message, "BGP.*Down")"#),
            vec![
                r#"`search($.message, "BGP.*Down")` is false ($.message is "%LINK-3-UPDOWN: Interface Gi0/13, changed state to down")"#
            ]
        );
        assert_eq!(
            why(r#"length($.commits) > 0 && match($.details['Issue Name'], "y") && search($.nope, "$.x")"#),
            vec![
                "`length($.commits) > 0` is false ($.commits is [])".to_string(),
                r#"`match($.details['Issue Name'], "y")` is false ($.details['Issue Name'] is "x")"#.to_string(),
                r#"`search($.nope, "$.x")` is false ($.nope does not exist)"#.to_string(),
            ]
        );
        let long = EventDoc::new(json!({"message": "m".repeat(500)}));
        let mut out = Vec::new();
        Expr::compile(r#"search($.message, "x")"#)
            .unwrap()
            .failures(&long, &mut out);
        assert!(out[0].ends_with("…)") && out[0].len() < 300, "{out:?}");
    }

    #[test]
    fn a_top_level_current_node_is_the_event() {
        let d = EventDoc::new(json!({"n": 2}));
        let holds = |t: &str| Expr::compile(t).unwrap().eval(&d);
        assert!(holds("@.n == 2"));
        assert!(!holds("!@.n"));
        assert!(holds("length(@) == 1"));
    }

    #[test]
    fn deep_nesting_is_refused_quickly() {
        let start = std::time::Instant::now();
        let text = "(aaaaaaaaaaaaaaaaaaaa(a(a(taaaaaaaaaaaaaaaa(((taaaaaaaaaa(((taaaaa(a(a(taaaaaaaaaaaaaaaa(((taaaaaaaaaaaaaaaaa(a(a(taaaaaaaaaaaaaaaa(((taaaaaaaaaa(((taaaaa(a(a(taaaaaaaaaaaaaaaa(((taaaaaaaaaaaaaa(((.taaaaaaaaaaaa($<=";
        let err = Expr::compile(text).unwrap_err();
        assert!(err.message.contains("nested"), "{}", err.message);
        assert!(Query::compile(text).is_err());
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // Ordinary nesting still compiles.
        assert!(Expr::compile("(($.a == 1) && ($.b[0] == \"(((\"))").is_ok());
    }
    use serde_json::json;

    fn doc(v: Value) -> EventDoc {
        EventDoc::new(v)
    }

    #[test]
    fn evaluates_with_root_as_event() {
        let e =
            Expr::compile(r#"$.type == "snapshot" && $.status == "completed" && $.test != true"#)
                .unwrap();
        assert!(e.eval(&doc(json!({"type":"snapshot","status":"completed"}))));
        assert!(!e.eval(&doc(
            json!({"type":"snapshot","status":"completed","test":true})
        )));
        assert!(!e.eval(&doc(json!({"type":"snapshot","status":"started"}))));
        // Works on an empty object and on non-object bodies too.
        assert!(!e.eval(&doc(json!({}))));
        assert!(Expr::compile("$.a").unwrap().eval(&doc(json!({"a": null}))));
        assert!(!Expr::compile("$.a").unwrap().eval(&doc(json!([]))));
    }

    #[test]
    fn brackets_filters_functions_and_dollars_in_strings() {
        let ev = json!({"details": {"Assurance Issue Priority": "P1"}, "data": {"fields": ["role"]},
                        "repo": "acme/net", "price": "$5"});
        let d = doc(ev);
        for (text, want) in [
            (r#"$.details['Assurance Issue Priority'] == "P1""#, true),
            (r#"$.data.fields[?@ == "role"]"#, true),
            (r#"match($.repo, "acme/.*")"#, true),
            (r#"search($.repo, "^x")"#, false),
            (r#"$.price == "$5""#, true),
            (r#"length($.data.fields) == 1 || $.nope"#, true),
            (r#"!($.repo == "acme/net")"#, false),
            (r#"$.data.fields[?@ == $.repo]"#, false),
        ] {
            assert_eq!(Expr::compile(text).unwrap().eval(&d), want, "{text}");
        }
    }

    #[test]
    fn errors_point_into_the_users_text() {
        let err = Expr::compile(r#"$.a == "x" && $.b =! 3"#).unwrap_err();
        assert!(err.offset >= 14 && err.offset <= 22, "{err:?}");
        let err = Expr::compile("lenght($.a) == 1").unwrap_err();
        assert!(err.message.contains("lenght"), "{err:?}");
        assert!(Expr::compile("").is_err());
        assert!(
            Expr::compile("$.a[*] == 1").is_err(),
            "non-singular comparison must be rejected"
        );
    }

    #[test]
    fn explains_the_false_part_with_the_actual_value() {
        let e = Expr::compile(r#"$.type == "snapshot" && $.status == "completed""#).unwrap();
        let c = Condition::Expr(e);
        let (ok, why) = c.explain(&doc(json!({"type":"snapshot","status":"started"})));
        assert!(!ok);
        assert_eq!(why.len(), 1);
        assert!(
            why[0].contains(r#"$.status == "completed""#) && why[0].contains(r#""started""#),
            "{why:?}"
        );
    }

    #[test]
    fn extracts_required_equalities() {
        let e =
            Expr::compile(r#"$.type == 'snapshot' && "completed" == $.status && $.n > 3"#).unwrap();
        let eqs: Vec<_> = e.required_equalities().map(|(_, k)| k.clone()).collect();
        assert_eq!(
            eqs,
            vec![
                IndexKey::Str("snapshot".into()),
                IndexKey::Str("completed".into())
            ]
        );
        // A disjunction requires nothing.
        let e = Expr::compile(r#"$.a == "x" && $.b == "y" || $.c == "z""#).unwrap();
        assert_eq!(e.required_equalities().count(), 0);
    }

    /// What the engine alone says: the whole expression as one filter, as before equalities
    /// were read off the event directly.
    fn engine(text: &str, d: &EventDoc) -> bool {
        !compile_filter(text, 0)
            .unwrap()
            .query_values(d.wrapped())
            .is_empty()
    }

    #[test]
    fn equalities_read_directly_agree_with_the_engine() {
        let exprs = [
            r#"$.a == "x""#,
            r#""x" == $.a"#,
            r#"$.a == 'x'"#,
            r#"$.a == 'it\'s'"#,
            r#"$.a == "say \"hi\"""#,
            r#"$.a == 'say "hi"'"#,
            r#"$.a == "\u00e9\t\/""#,
            r#"$.a == "é\t/""#,
            r#"$.a == "\\""#,
            r#"$.a == "\ud83d\ude00""#,
            r#"$.a == """#,
            r#"$.a == true"#,
            r#"$.a == false"#,
            r#"$.a == null"#,
            r#"$.a == 1"#,
            r#"$.a.b == "x""#,
            r#"$['a']["b"] == "x""#,
            r#"$.l[0] == "x""#,
            r#"$.l[-1] == "y""#,
            r#"$ == "x""#,
            r#"$['$a'] == "x""#,
            r#"$.a == "x" && $.l[1] == "y""#,
            r#"$.a == "x" && $.n > 1"#,
            r#"$.a == "x" && @.n == 2"#,
            r#"$.a == "x" && ($.n == 2 || $.b)"#,
            r#"$.a == "x" && !$.z && $.l[?@ == "y"]"#,
            r#"$.a == "x" || $.n == 2"#,
        ];
        let docs = [
            json!({"a": "x", "n": 2, "l": ["x", "y"], "$a": "x"}),
            json!({"a": "it's", "l": []}),
            json!({"a": "say \"hi\""}),
            json!({"a": "é\t/"}),
            json!({"a": "\\"}),
            json!({"a": "😀"}),
            json!({"a": ""}),
            json!({"a": true}),
            json!({"a": false}),
            json!({"a": null}),
            json!({"a": 1}),
            json!({"a": 1.0}),
            json!({"a": ["x"]}),
            json!({"a": {"b": "x"}, "n": 1, "z": 0}),
            json!({"b": "x"}),
            json!({}),
            json!("x"),
            json!(["x"]),
            json!(null),
        ];
        for text in exprs {
            let e = Expr::compile(text).unwrap();
            for d in &docs {
                let d = doc(d.clone());
                assert_eq!(e.eval(&d), engine(text, &d), "{text} on {}", d.body());
            }
        }
    }

    #[test]
    fn keeps_an_engine_filter_only_for_what_is_not_an_equality() {
        let e = Expr::compile(r#"$.a == "x" && $.b == true && $.c == null"#).unwrap();
        assert_eq!(e.equalities.len(), 3);
        assert!(e.rest.is_none());
        let e = Expr::compile(r#"$.a == "x" && $.n > 1"#).unwrap();
        assert_eq!(e.equalities.len(), 1);
        assert!(e.rest.is_some());
        let e = Expr::compile(r#"$.n == 1 || $.a == "x""#).unwrap();
        assert!(e.equalities.is_empty() && e.rest.is_some());
        // The text is kept whole, for fingerprints and messages.
        assert_eq!(e.text(), r#"$.n == 1 || $.a == "x""#);
    }

    #[test]
    fn explains_every_false_operand_of_a_mixed_expression() {
        let c = Condition::Expr(
            Expr::compile(r#"$.type == "snapshot" && $.n > 3 && $.status == "completed""#).unwrap(),
        );
        let (ok, why) = c.explain(&doc(json!({"type": "device", "n": 1})));
        assert!(!ok);
        assert_eq!(
            why,
            vec![
                r#"`$.type == "snapshot"` is false ($.type is "device")"#.to_string(),
                "`$.n > 3` is false ($.n is 1)".to_string(),
                r#"`$.status == "completed"` is false ($.status does not exist)"#.to_string(),
            ]
        );
    }

    #[test]
    fn expressions_of_one_load_share_paths_and_literals() {
        let mut interner = Interner::default();
        let a = Expr::compile_in(r#"$.type == "snapshot" && $.id == "a""#, &mut interner).unwrap();
        let b = Expr::compile_in(r#"$.type == "snapshot" && $.id == "b""#, &mut interner).unwrap();
        let (pa, ka) = a.required_equalities().next().unwrap();
        let (pb, kb) = b.required_equalities().next().unwrap();
        assert!(Arc::ptr_eq(pa, pb));
        match (ka, kb) {
            (IndexKey::Str(x), IndexKey::Str(y)) => assert!(Arc::ptr_eq(x, y)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn singular_path_reads_negative_indexes() {
        let p = singular("$.a[-1]").unwrap();
        assert_eq!(p.get(&json!({"a": [1, 2]})), Some(&json!(2)));
        assert_eq!(p.get(&json!({"a": []})), None);
    }
}
