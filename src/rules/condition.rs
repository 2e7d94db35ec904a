//! Conditions: RFC 9535 JSONPath logical expressions over an event, compiled once at load.
//!
//! This module is the seam between rulehook and its JSONPath engine (`jsonpath-rfc9535`, chosen
//! because it passes the whole Compliance Test Suite and compiles `match()`/`search()` regexes
//! once, at parse time). No other module names the engine.
//!
//! An engine evaluates *queries*, not bare logical expressions, so a condition `E` is compiled as
//! the query `$[?E']` and run over the one-element array `[event]`, where `E'` is `E` with each
//! root identifier `$` rewritten to `$[0]`: inside the filter, `$[0]` is the event itself. The
//! filter visits exactly one node, so the query selects something exactly when `E` is true.

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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKey {
    Str(String),
    Bool(bool),
    Null,
}

impl IndexKey {
    /// The key a JSON value would match, if it is of an indexable kind.
    pub fn of(value: &Value) -> Option<IndexKey> {
        match value {
            Value::String(s) => Some(IndexKey::Str(s.clone())),
            Value::Bool(b) => Some(IndexKey::Bool(*b)),
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

/// One top-level `&&` operand of an expression, kept for explanations and indexing.
#[derive(Debug)]
struct Conjunct {
    text: String,
    /// The singular query this conjunct compares, to show its actual value when it fails.
    subject: Option<(String, SingularPath)>,
    /// `subject == literal`, when the literal is indexable.
    equality: Option<IndexKey>,
}

/// A compiled JSONPath logical expression.
#[derive(Debug)]
pub struct Expr {
    text: String,
    query: JsonPath,
    conjuncts: Vec<Conjunct>,
}

impl Expr {
    /// Compiles `text`; errors carry the byte offset inside `text`.
    pub fn compile(text: &str) -> Result<Expr, ConditionError> {
        if text.trim().is_empty() {
            return Err(ConditionError {
                offset: 0,
                message: "empty condition".into(),
            });
        }
        let parts = if split_top(text, "||").len() > 1 {
            vec![(0, text)]
        } else {
            split_top(text, "&&")
        };
        let query = match compile_filter(text, 0) {
            Ok(q) => q,
            Err(whole) => {
                // Point at least at the operand that holds the error, when the engine could not.
                for (start, part) in &parts {
                    let lead = part.len() - part.trim_start().len();
                    compile_filter(part.trim(), start + lead)?;
                }
                return Err(whole);
            }
        };
        // Operands are kept as text (for explanations, compiled on demand) and, when they
        // compare a singular query with a literal, as an index key.
        let conjuncts = parts
            .into_iter()
            .map(|(_, part)| {
                let trimmed = part.trim();
                let (subject, equality) = describe(trimmed);
                Conjunct {
                    text: trimmed.to_string(),
                    subject,
                    equality,
                }
            })
            .collect();
        Ok(Expr {
            text: text.to_string(),
            query,
            conjuncts,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn eval(&self, doc: &EventDoc) -> bool {
        !self.query.query_values(doc.wrapped()).is_empty()
    }

    /// The conjuncts that are false, each with the actual value it looked at.
    fn failures(&self, doc: &EventDoc, out: &mut Vec<String>) {
        for c in &self.conjuncts {
            let holds =
                compile_filter(&c.text, 0).is_ok_and(|q| !q.query_values(doc.wrapped()).is_empty());
            if !holds {
                let actual = match &c.subject {
                    Some((name, path)) => match path.get(doc.body()) {
                        Some(v) => format!(" ({name} is {v})"),
                        None => format!(" ({name} does not exist)"),
                    },
                    None => String::new(),
                };
                out.push(format!("`{}` is false{actual}", c.text));
            }
        }
    }

    /// Equalities on a literal that must all hold for the expression to be true.
    pub fn required_equalities(&self) -> impl Iterator<Item = (&SingularPath, &IndexKey)> {
        self.conjuncts
            .iter()
            .filter_map(|c| match (&c.subject, &c.equality) {
                (Some((_, path)), Some(key)) => Some((path, key)),
                _ => None,
            })
    }
}

/// A JSONPath query (not a logical expression), e.g. a throttle's `group_by` entry.
#[derive(Debug)]
pub struct Query(JsonPath);

impl Query {
    pub fn compile(text: &str) -> Result<Query, ConditionError> {
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
        }
    }

    pub fn eval(&self, doc: &EventDoc) -> bool {
        match self {
            Condition::Always => true,
            Condition::Expr(e) => e.eval(doc),
            Condition::All(cs) => cs.iter().all(|c| c.eval(doc)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(doc)),
            Condition::Not(c) => !c.eval(doc),
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
        }
    }

    fn summary(&self) -> String {
        match self {
            Condition::Always => "(always)".into(),
            Condition::Expr(e) => format!("`{}`", e.text),
            Condition::All(cs) => format!("all of [{}]", join(cs)),
            Condition::Any(cs) => format!("any of [{}]", join(cs)),
            Condition::Not(c) => format!("not {}", c.summary()),
        }
    }

    /// Equalities that must hold for the whole condition to be true (for the rule index).
    pub fn required_equalities(&self) -> Vec<(&SingularPath, &IndexKey)> {
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
fn compile_filter(expr: &str, base: usize) -> Result<JsonPath, ConditionError> {
    let (rewritten, map) = rewrite_roots(expr);
    let query = format!("$[?{rewritten}]");
    JsonPath::parse(&query).map_err(|e| {
        let (position, message) = match &e {
            jsonpath_rfc9535::Error::Syntax { position, message } => (*position, message.clone()),
            jsonpath_rfc9535::Error::NestingTooDeep { position } => (*position, e.to_string()),
            other => (3, other.to_string()),
        };
        let inner = position.saturating_sub(3).min(map.len() - 1);
        let message = message.replace("$[0]", "$");
        ConditionError {
            offset: base + map[inner],
            message,
        }
    })
}

/// Rewrites each root identifier `$` (outside string literals) to `$[0]`; returns the new text
/// and, for each of its byte offsets (and one past the end), the offset in `expr`.
fn rewrite_roots(expr: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(expr.len() + 8);
    let mut map = Vec::with_capacity(expr.len() + 9);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, ch) in expr.char_indices() {
        let mut push = |s: &str| {
            for _ in 0..s.len() {
                map.push(i);
            }
            out.push_str(s);
        };
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
                push(ch.encode_utf8(&mut [0; 4]));
            }
            None if ch == '$' => push("$[0]"),
            None => {
                if ch == '"' || ch == '\'' {
                    quote = Some(ch);
                }
                push(ch.encode_utf8(&mut [0; 4]));
            }
        }
    }
    map.push(expr.len());
    (out, map)
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
/// the query (text and path), and the literal when OP is `==` and the literal is indexable.
fn describe(conjunct: &str) -> (Option<(String, SingularPath)>, Option<IndexKey>) {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        let sides = split_top(conjunct, op);
        if sides.len() != 2 {
            continue;
        }
        let (a, b) = (sides[0].1.trim(), sides[1].1.trim());
        for (q, lit) in [(a, b), (b, a)] {
            let Some(path) = singular(q) else { continue };
            let key = if op == "==" {
                literal(lit).as_ref().and_then(IndexKey::of)
            } else {
                None
            };
            return (Some((q.to_string(), path)), key);
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
fn literal(text: &str) -> Option<Value> {
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        let json = format!("\"{}\"", inner.replace("\\'", "'").replace('"', "\\\""));
        return serde_json::from_str(&json).ok();
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn singular_path_reads_negative_indexes() {
        let p = singular("$.a[-1]").unwrap();
        assert_eq!(p.get(&json!({"a": [1, 2]})), Some(&json!(2)));
        assert_eq!(p.get(&json!({"a": []})), None);
    }
}
