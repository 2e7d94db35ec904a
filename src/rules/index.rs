//! The rule index: which rules an event could match, without evaluating the ones it cannot.
//!
//! Rules are grouped by source, then (when their condition requires `query == literal`) by the
//! literal, so a rule set of 10,000 rules keyed on `$.snapshot.id` costs one lookup per event.

use std::collections::HashMap;

use serde_json::Value;

use super::condition::{IndexKey, SingularPath};

/// Candidate rules of one source.
#[derive(Debug, Default)]
pub struct SourceIndex {
    /// Rules with no indexable equality: always evaluated.
    always: Vec<usize>,
    /// For each indexed path, the rules keyed by the literal they require there.
    by_eq: Vec<(SingularPath, HashMap<IndexKey, Vec<usize>>)>,
}

impl SourceIndex {
    /// Builds the index of one source from its rules (in rule order) and the equalities each
    /// rule's condition requires. Each rule is filed under its most selective equality: the
    /// `(path, literal)` pair the fewest rules share, so `$.type == "snapshot"`, common to all,
    /// does not hide `$.snapshot.id == "…"`, unique to each.
    pub fn build(rules: &[(usize, Vec<(&SingularPath, &IndexKey)>)]) -> SourceIndex {
        let mut shared: HashMap<(&SingularPath, &IndexKey), usize> = HashMap::new();
        for (_, eqs) in rules {
            for &(p, k) in eqs {
                *shared.entry((p, k)).or_default() += 1;
            }
        }
        let mut index = SourceIndex::default();
        for (id, eqs) in rules {
            let best = eqs.iter().min_by_key(|&&(p, k)| shared[&(p, k)]);
            let Some(&(path, key)) = best else {
                index.always.push(*id);
                continue;
            };
            let slot = match index.by_eq.iter().position(|(q, _)| q == path) {
                Some(i) => i,
                None => {
                    index.by_eq.push((path.clone(), HashMap::new()));
                    index.by_eq.len() - 1
                }
            };
            index.by_eq[slot]
                .1
                .entry(key.clone())
                .or_default()
                .push(*id);
        }
        index
    }

    /// The rules that may match `body`, in rule order.
    pub fn candidates(&self, body: &Value) -> Vec<usize> {
        let mut out = self.always.clone();
        for (path, map) in &self.by_eq {
            if let Some(ids) = path
                .get(body)
                .and_then(IndexKey::of)
                .and_then(|k| map.get(&k))
            {
                out.extend_from_slice(ids);
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
    use crate::rules::condition::{Condition, Expr};
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
        let rules: Vec<_> = conds
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.required_equalities()))
            .collect();
        let index = SourceIndex::build(&rules);
        assert_eq!(
            index.candidates(&json!({"type": "snapshot", "snapshot": {"id": "s7"}})),
            vec![7, 100]
        );
        assert_eq!(index.candidates(&json!({"type": "snapshot"})), vec![100]);
    }
}
