//! What `rulehook check`, `test` and `whatif` say about maintenance windows: the windows a rule
//! set declares, and what a window would do to a rule's job at a given time.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::rules::RuleSet;
use crate::rules::windows::{Decision, SpanView, end_of};

/// What is said of a window in force that never ends (00:00 to 00:00 on all seven days).
const NO_END: &str = "with no end (in force all day on every day of the week)";

/// `--at`: an RFC 3339 time with its offset (`2026-12-24T12:00:00Z`).
pub fn parse_at(s: &str) -> Result<i64, String> {
    s.parse::<Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            format!(
                "`{s}`: expected an RFC 3339 time with its offset, like 2026-12-24T12:00:00Z ({e})"
            )
        })
}

/// One line per window for `rulehook check`: what it covers and when it is next in force.
pub fn check_lines(set: &RuleSet, now: i64) -> Vec<String> {
    set.windows
        .view(now)
        .into_iter()
        .map(|w| {
            let rules = match &w.rules {
                Value::Array(l) => l
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "all rules".to_string(),
            };
            let when = match (&w.current, &w.next) {
                (Some(SpanView { end: Some(end), .. }), _) => format!("in force now, until {end}"),
                (Some(_), _) => format!("in force now, {NO_END}"),
                (None, Some(n)) => format!(
                    "next from {} to {}",
                    n.start,
                    n.end.as_deref().unwrap_or("no end")
                ),
                (None, None) => "over (never in force again)".to_string(),
            };
            format!(
                "window {} ({}): {} {rules}; {}; {when}",
                w.name, w.rulebook, w.during, w.schedule
            )
        })
        .collect()
}

/// What a window does to a job of `rulebook/rule` that would start at `at`: `None` when no
/// window covering the rule is in force then.
pub fn verdict(set: &RuleSet, rulebook: &str, rule: &str, at: i64) -> Option<(String, Value)> {
    let time = crate::domain::rfc3339(at);
    match set.windows.decide(rulebook, rule, at) {
        Decision::Run => None,
        Decision::Hold { window, until } => {
            let until = end_of(until);
            let how_long = match &until {
                Some(u) => format!("until {u}"),
                None => format!("while it is in force, {NO_END}"),
            };
            Some((
                format!(
                    "window `{window}` is in force at {time}: its job would be held {how_long}"
                ),
                json!({"window": window, "during": "hold", "until": until, "at": time}),
            ))
        }
        Decision::Skip { window, .. } => Some((
            format!(
                "window `{window}` is in force at {time}: its job would be skipped (no action runs)"
            ),
            json!({"window": window, "during": "skip", "at": time}),
        )),
        Decision::Approve { window, until } => {
            let until = end_of(until);
            let ends = match &until {
                Some(u) => format!("window ends {u}"),
                None => format!("window {NO_END}"),
            };
            Some((
                format!(
                    "window `{window}` is in force at {time}: its job would wait for an approval ({ends})"
                ),
                json!({"window": window, "during": "approve", "until": until, "at": time}),
            ))
        }
    }
}

/// The next stretch of a window that covers the rule, after `at` (for "runs now, but …").
pub fn upcoming(set: &RuleSet, rulebook: &str, rule: &str, at: i64) -> Option<String> {
    set.windows
        .0
        .iter()
        .filter(|w| w.covers(rulebook, rule))
        .filter_map(|w| w.next_after(at).map(|s| (s, w)))
        .min_by_key(|(s, _)| s.start)
        .map(|(s, w)| {
            format!(
                "window `{}` ({}) is next in force from {} to {}",
                w.name,
                w.during.as_str(),
                crate::domain::rfc3339(s.start),
                end_of(s.end).as_deref().unwrap_or("no end")
            )
        })
}
