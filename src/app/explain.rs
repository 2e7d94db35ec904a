//! Why a stored event did not match the rules serving now: the admin API's event detail and
//! the console's event page both show it.

use crate::rules::RuleSet;
use crate::store::EventDetail;

/// A rule an event did not match, with the clauses that were false and the values seen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NotMatched {
    pub rulebook: String,
    pub rule: String,
    pub why: Vec<String>,
    /// The rule matches the event now but has no record of it: added (or changed) after the
    /// event arrived. A replay runs it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub matches_now: bool,
    /// Not considered: the rule takes other sources (views fold these into one line).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other_source: bool,
}

/// The rules of `rules` that a stored event did not match (neither matched nor throttled in
/// its record), explained against that rule set.
pub fn not_matched(rules: &RuleSet, detail: &EventDetail) -> Vec<NotMatched> {
    let headers: Vec<(String, String)> = detail
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let doc = crate::domain::EventDoc::with_headers(detail.body.clone(), &headers);
    let recorded = |b: &str, n: &str| {
        detail
            .matches
            .iter()
            .any(|m| m.rulebook == b && m.rule == n)
            || detail
                .throttled
                .iter()
                .any(|m| m.rulebook == b && m.rule == n)
            || detail
                .correlations
                .iter()
                .any(|m| m.rulebook == b && m.rule == n)
    };
    rules
        .explain(Some(&detail.source), &doc)
        .into_iter()
        .filter_map(|v| {
            let r = &rules.rules[v.rule];
            if recorded(&r.rulebook, &r.name) {
                return None;
            }
            // Matching now with no record: the rule was not there (as it is) when the event
            // came. A correlation rule is not judged on one event.
            let matches_now = v.matched && r.correlate.is_none();
            if v.matched && !matches_now {
                return None;
            }
            Some(NotMatched {
                rulebook: r.rulebook.clone(),
                rule: r.name.clone(),
                why: if matches_now {
                    vec![
                        "added after this event (or changed since): it matches now — replay the event to run it"
                            .to_string(),
                    ]
                } else {
                    v.why
                },
                matches_now,
                other_source: v.other_source,
            })
        })
        .collect()
}
