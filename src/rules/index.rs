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
    /// Adds rule `id`, whose condition requires all of `eqs`.
    pub fn add(&mut self, id: usize, eqs: &[(&SingularPath, &IndexKey)]) {
        // Prefer a path already indexed, so the number of lookups per event stays small.
        let pick = eqs
            .iter()
            .find(|(p, _)| self.by_eq.iter().any(|(q, _)| q == *p))
            .or_else(|| eqs.first());
        let Some((path, key)) = pick else {
            self.always.push(id);
            return;
        };
        let slot = match self.by_eq.iter().position(|(q, _)| q == *path) {
            Some(i) => i,
            None => {
                self.by_eq.push(((*path).clone(), HashMap::new()));
                self.by_eq.len() - 1
            }
        };
        self.by_eq[slot]
            .1
            .entry((*key).clone())
            .or_default()
            .push(id);
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
