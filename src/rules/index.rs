//! The rule index: which rules an event could match, without evaluating the ones it cannot.
//!
//! Rules are grouped by source, then (when their condition requires `query == literal`) by the
//! literal, so a rule set of 10,000 rules keyed on `$.snapshot.id` costs one lookup per event.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use super::condition::{Condition, IndexKey, SingularPath};

/// What a message holds at a top-level field, as far as the index asks: read off a message a
/// transport has not built an event of yet ([`Fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe<'a> {
    /// A string.
    Str(&'a str),
    /// No field, or one no indexed literal can equal (a number).
    Absent,
    /// Not known without building the event (an object, a boolean, …).
    Unknown,
}

/// A message whose fields the index can read before (or instead of) its event being built:
/// a syslog line of the common shape, most of which no rule wants.
pub trait Fields {
    /// The top-level field `name` of the event the message would be.
    fn field(&self, name: &str) -> Probe<'_>;
}

/// Candidate rules of one source.
///
/// Kept compact because it grows with the rule count: rule ids are `u32`, and the rules filed
/// under a literal are a range of one shared `ids` array rather than a vector each.
#[derive(Debug, Default)]
pub struct SourceIndex {
    /// Rules with no indexable equality: always evaluated.
    always: Box<[u32]>,
    /// For each indexed path, the rules keyed by the literal they require there.
    by_eq: Vec<PathIndex>,
    /// Rule ids, grouped by path and literal; each group in rule order.
    ids: Box<[u32]>,
}

/// The rules filed under one path, by the literal they require there.
#[derive(Debug)]
struct PathIndex {
    path: Arc<SingularPath>,
    /// String literals: looked up with the event's `&str`, no key built per event.
    strings: HashMap<Arc<str>, Span>,
    /// `true`, `false` and `null` (at most three).
    others: Vec<(IndexKey, Span)>,
}

/// A range of [`SourceIndex::ids`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl PathIndex {
    fn lookup(&self, value: &Value) -> Option<Span> {
        match value {
            Value::String(s) => self.strings.get(s.as_str()).copied(),
            Value::Bool(_) | Value::Null => self
                .others
                .iter()
                .find(|(k, _)| k.matches(value))
                .map(|&(_, span)| span),
            _ => None,
        }
    }
}

/// A rule id as stored in the index.
fn id32(id: usize) -> u32 {
    u32::try_from(id).expect("fewer than 2^32 rules")
}

impl SourceIndex {
    /// Builds the index of one source from its rules (in rule order) and their conditions.
    /// Each rule is filed under its most selective equality: the `(path, literal)` pair the
    /// fewest rules share, so `$.type == "snapshot"`, common to all, does not hide
    /// `$.snapshot.id == "…"`, unique to each.
    pub fn build(rules: &[(usize, &Condition)]) -> SourceIndex {
        let mut shared: HashMap<(&SingularPath, &IndexKey), usize> = HashMap::new();
        for (_, c) in rules {
            for (p, k) in c.required_equalities() {
                *shared.entry((&**p, k)).or_default() += 1;
            }
        }
        let mut always = Vec::new();
        let mut paths: Vec<&Arc<SingularPath>> = Vec::new();
        // (path slot, literal, rule id) for every indexed rule, then sorted into groups.
        let mut filed: Vec<(usize, &IndexKey, u32)> = Vec::with_capacity(rules.len());
        for &(id, c) in rules {
            let eqs = c.required_equalities();
            let best = eqs.iter().min_by_key(|&&(p, k)| shared[&(&**p, k)]);
            let Some(&(path, key)) = best else {
                always.push(id32(id));
                continue;
            };
            let slot = match paths.iter().position(|q| q == &path) {
                Some(i) => i,
                None => {
                    paths.push(path);
                    paths.len() - 1
                }
            };
            filed.push((slot, key, id32(id)));
        }
        // Load-time scratch is freed before the index proper is allocated, which can then
        // reuse its memory instead of leaving it behind as a hole.
        drop(shared);
        filed.sort_unstable();
        let groups = || filed.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1));
        let mut by_eq: Vec<PathIndex> = paths
            .into_iter()
            .enumerate()
            .map(|(slot, path)| PathIndex {
                path: path.clone(),
                // Sized once rather than grown by rehashing, for the same reason.
                strings: HashMap::with_capacity(
                    groups()
                        .filter(|g| g[0].0 == slot && matches!(g[0].1, IndexKey::Str(_)))
                        .count(),
                ),
                others: Vec::new(),
            })
            .collect();
        let mut ids = Vec::with_capacity(filed.len());
        for group in groups() {
            let (slot, key, _) = group[0];
            let start = id32(ids.len());
            ids.extend(group.iter().map(|&(_, _, id)| id));
            let span = Span {
                start,
                end: id32(ids.len()),
            };
            let at = &mut by_eq[slot];
            match key {
                IndexKey::Str(s) => {
                    at.strings.insert(s.clone(), span);
                }
                other => at.others.push((other.clone(), span)),
            }
        }
        SourceIndex {
            always: always.into_boxed_slice(),
            by_eq,
            ids: ids.into_boxed_slice(),
        }
    }

    /// Whether any rule may match `body` ([`SourceIndex::candidates`] is not empty).
    pub fn any_candidate(&self, body: &Value) -> bool {
        !self.always.is_empty()
            || self.by_eq.iter().any(|p| {
                p.path
                    .get(body)
                    .and_then(|v| p.lookup(v))
                    .is_some_and(|span| span.start < span.end)
            })
    }

    /// [`SourceIndex::any_candidate`] for a message read through [`Fields`]: `true` also when
    /// a field the index looks at is not known without the event.
    pub fn any_candidate_in(&self, fields: &dyn Fields) -> bool {
        !self.always.is_empty()
            || self.by_eq.iter().any(|p| match p.path.probe(fields) {
                Probe::Str(s) => p.strings.get(s).is_some_and(|span| span.start < span.end),
                Probe::Absent => false,
                Probe::Unknown => true,
            })
    }

    /// The rules that may match `body`, in rule order.
    pub fn candidates(&self, body: &Value) -> Vec<usize> {
        let mut out: Vec<usize> = self.always.iter().map(|&i| i as usize).collect();
        for p in &self.by_eq {
            if let Some(span) = p.path.get(body).and_then(|v| p.lookup(v)) {
                out.extend(self.ids[span.range()].iter().map(|&i| i as usize));
            }
        }
        if !self.by_eq.is_empty() {
            out.sort_unstable();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::condition::Expr;
    use serde_json::json;

    use super::*;

    #[test]
    fn files_each_rule_under_its_most_selective_equality() {
        let conds: Vec<Condition> = (0..100)
            .map(|i| {
                Condition::Expr(
                    Expr::compile(&format!(
                        r#"$.type == "snapshot" && $.snapshot.id == "s{i}""#
                    ))
                    .unwrap(),
                )
            })
            .chain([Condition::Expr(Expr::compile("$.status").unwrap())])
            .collect();
        let rules: Vec<_> = conds.iter().enumerate().collect();
        let index = SourceIndex::build(&rules);
        assert_eq!(
            index.candidates(&json!({"type": "snapshot", "snapshot": {"id": "s7"}})),
            vec![7, 100]
        );
        assert_eq!(index.candidates(&json!({"type": "snapshot"})), vec![100]);
    }

    #[test]
    fn files_booleans_and_nulls_too() {
        let conds: Vec<Condition> = [
            "$.test == true",
            "$.test == false",
            "$.test == null",
            r#"$.test == "true""#,
        ]
        .iter()
        .map(|t| Condition::Expr(Expr::compile(t).unwrap()))
        .collect();
        let rules: Vec<_> = conds.iter().enumerate().collect();
        let index = SourceIndex::build(&rules);
        assert_eq!(index.candidates(&json!({"test": true})), vec![0]);
        assert_eq!(index.candidates(&json!({"test": false})), vec![1]);
        assert_eq!(index.candidates(&json!({"test": null})), vec![2]);
        assert_eq!(index.candidates(&json!({"test": "true"})), vec![3]);
        assert!(index.candidates(&json!({"test": 1})).is_empty());
        assert!(index.candidates(&json!({})).is_empty());
    }

    /// A message as its fields: strings, numbers (absent to the index) and objects (unknown).
    struct Message(Value);

    impl Fields for Message {
        fn field(&self, name: &str) -> Probe<'_> {
            match self.0.get(name) {
                Some(Value::String(s)) => Probe::Str(s),
                None | Some(Value::Number(_)) => Probe::Absent,
                Some(_) => Probe::Unknown,
            }
        }
    }

    #[test]
    fn fields_rule_out_what_the_built_event_would() {
        let conds: Vec<Condition> = [
            r#"$.app_name == "sshd" && $.severity_name == "info""#,
            r#"$.cisco.mnemonic == "UPDOWN""#,
            r#"$.hostname.name == "x""#,
        ]
        .iter()
        .map(|t| Condition::Expr(Expr::compile(t).unwrap()))
        .collect();
        let rules: Vec<_> = conds.iter().enumerate().collect();
        let index = SourceIndex::build(&rules);
        for (body, may) in [
            (json!({"app_name": "sshd", "severity_name": "info"}), true),
            (json!({"app_name": "cron", "severity_name": "info"}), false),
            (json!({"app_name": "cron", "severity": 6}), false),
            (
                json!({"app_name": "cron", "cisco": {"mnemonic": "UPDOWN"}}),
                true,
            ),
            (
                json!({"app_name": "cron", "cisco": {"mnemonic": "OTHER"}}),
                false,
            ),
            (json!({"hostname": "x"}), false),
            (json!({"hostname": {"name": "x"}}), true),
        ] {
            assert_eq!(index.any_candidate(&body), may, "{body}");
            assert_eq!(!index.candidates(&body).is_empty(), may, "{body}");
            // Through fields: the same, except that an object is not looked into.
            let unknown = body.as_object().unwrap().values().any(Value::is_object);
            assert_eq!(
                index.any_candidate_in(&Message(body.clone())),
                may || unknown,
                "{body}"
            );
        }
        let always = [Condition::Expr(Expr::compile("$.x > 1").unwrap())];
        let index = SourceIndex::build(&[(0, &always[0])]);
        assert!(index.any_candidate_in(&Message(json!({}))));
        assert!(index.any_candidate(&json!({})));
    }
}
