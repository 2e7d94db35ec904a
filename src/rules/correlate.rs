//! Correlation rules: patterns over several events of one group within a window (`all_of`,
//! `sequence`, `absence`, `count`). This module holds the compiled rule and the pure state
//! machine that moves one group's partial match forward by one event; where the partial match
//! is kept (the state store, or memory for `whatif` and `rulehook test`) is the caller's
//! business. Time is a parameter: windows are decided by event times, never by storage expiry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::condition::{Condition, Query};
use crate::domain::{CorrelationState, EventDoc, Participant};

/// Open partial matches a rule keeps unless it says otherwise (`max_open`).
pub const DEFAULT_MAX_OPEN: usize = 10_000;
/// The most a rule may ask for: every open group is memory and a state entry on each node.
pub const MAX_MAX_OPEN: u64 = 1_000_000;

/// Longest group key (the `group_by` values as JSON text) kept as it is, in bytes.
pub const MAX_GROUP_KEY: usize = 256;
/// How much of a longer key is kept readable, in bytes, before its hash.
const GROUP_PREFIX: usize = 96;

/// A group key of bounded size: a key up to [`MAX_GROUP_KEY`] bytes as it is; a longer one as
/// its first bytes (for people reading the log and the history), `…#` and the SHA-256 of the
/// whole (128 bits in hex), so different values stay different groups. It exists because
/// `group_by` values come from senders: kept whole they made every partial match, its state key,
/// the LRU of open groups, the history and the eviction log line as large as the sender liked.
pub fn bounded_key(text: String) -> String {
    if text.len() <= MAX_GROUP_KEY {
        return text;
    }
    let mut end = GROUP_PREFIX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!("{}…#{}", &text[..end], hex::encode(&digest[..16]))
}

/// The four kinds of correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every named condition seen within the window, in any order.
    AllOf,
    /// The named conditions seen in order, the last within the window of the first.
    Sequence,
    /// The first condition, and no event of the second within the window: fires when the
    /// window ends.
    Absence,
    /// At least `n` events within the window; fires at most once per window.
    Count(usize),
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AllOf => "all_of",
            Kind::Sequence => "sequence",
            Kind::Absence => "absence",
            Kind::Count(_) => "count",
        }
    }
}

/// A condition with the name its event is known by in templates (`events.<name>`).
#[derive(Debug)]
pub struct Named {
    pub name: String,
    pub condition: Condition,
}

/// A compiled `correlate:` block.
#[derive(Debug)]
pub struct Correlation {
    pub kind: Kind,
    /// `all_of`: the names; `sequence`: in order; `absence`: `[after, missing]`; `count`: one.
    pub steps: Vec<Named>,
    pub within: Duration,
    pub group_by: Vec<Query>,
    /// Open partial matches (groups) kept per rule; the oldest is evicted past it.
    pub max_open: usize,
    /// Absence: at most one open window per group (`windows: per_group`): an `after` event
    /// while one is open is held by it instead of opening another (one incident for a link
    /// that flaps and stays down).
    pub one_window_per_group: bool,
}

/// What the state store keeps for one (rule, group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    /// The rule version that built it: a changed rule starts afresh.
    pub fingerprint: String,
    /// Events held, in arrival order (`absence`: the open windows, one per `after` event).
    pub seen: Vec<Participant>,
    /// `count`: when it last fired (it fires at most once per window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<i64>,
}

impl Partial {
    /// Nothing worth keeping: the key can go.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.fired_at.is_none()
    }
}

/// What one event did to a group's partial match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: CorrelationState,
    /// Fired: every event that took part. Partial/Waiting: what is held.
    pub events: Vec<Participant>,
    pub deadline: Option<i64>,
    pub waiting_for: Vec<String>,
    /// Absence: windows this event closed (the missing event came in time).
    pub cancelled: Vec<String>,
}

/// One event as `observe` sees it: the steps it satisfied, its id and when it came (ms).
struct Seen<'a> {
    matched: &'a [usize],
    id: &'a str,
    at: i64,
}

impl Seen<'_> {
    fn has(&self, step: usize) -> bool {
        self.matched.contains(&step)
    }
}

impl Correlation {
    /// What a correlation job's templates see: `events` (each name's body; for `count`, a list
    /// of bodies) and `correlation` (`kind`, `group`, `events` with id and time, `deadline`).
    /// One shape for live jobs, `rulehook test` and the console's Try.
    pub fn template_context(
        &self,
        group: &str,
        took_part: &[(&Participant, serde_json::Value)],
        deadline: Option<i64>,
    ) -> (serde_json::Value, serde_json::Value) {
        use serde_json::{Value, json};
        let mut events = serde_json::Map::new();
        for (p, body) in took_part {
            if matches!(self.kind, Kind::Count(_)) {
                let list = events
                    .entry(p.name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = list {
                    items.push(body.clone());
                }
            } else {
                events.insert(p.name.clone(), body.clone());
            }
        }
        let meta = json!({
            "kind": self.kind.as_str(),
            // A bounded key (prefix and hash) is not JSON: shown as it is.
            "group": serde_json::from_str::<Value>(group)
                .unwrap_or_else(|_| Value::String(group.to_string())),
            "events": took_part.iter().map(|(p, _)| json!({
                "name": p.name, "id": p.id, "at": crate::domain::rfc3339(p.at),
            })).collect::<Vec<_>>(),
            "deadline": deadline.map(crate::domain::rfc3339),
            "evicted": false,
        });
        (Value::Object(events), meta)
    }

    /// The group an event falls in: the `group_by` values as a JSON array text, bounded
    /// ([`bounded_key`]). A query that selects one value stands for it; one that selects none,
    /// `null`; more, the list.
    pub fn group(&self, body: &serde_json::Value) -> String {
        let one = |q: &Query| match q.select(body) {
            serde_json::Value::Array(mut v) if v.len() <= 1 => {
                v.pop().unwrap_or(serde_json::Value::Null)
            }
            other => other,
        };
        bounded_key(serde_json::Value::Array(self.group_by.iter().map(one).collect()).to_string())
    }

    /// Which steps an event satisfies (indexes into `steps`).
    pub fn steps_matched(&self, doc: &EventDoc) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.steps[i].condition.eval(doc))
            .collect()
    }

    fn window_ms(&self) -> i64 {
        self.within.as_millis() as i64
    }

    /// Moves `partial` forward by event `id` seen at `at` (ms) that satisfied `matched`
    /// steps. `None`: the event changed nothing (it did not advance a sequence).
    pub fn observe(
        &self,
        partial: &mut Partial,
        matched: &[usize],
        id: &str,
        at: i64,
    ) -> Option<Observed> {
        let ev = Seen { matched, id, at };
        match self.kind {
            Kind::AllOf => Some(self.observe_all_of(partial, &ev)),
            Kind::Sequence => self.observe_sequence(partial, &ev),
            Kind::Absence => self.observe_absence(partial, &ev),
            Kind::Count(n) => Some(self.observe_count(partial, &ev, n)),
        }
    }

    /// Event `ev` as the participant of step `i`.
    fn participant(&self, i: usize, ev: &Seen) -> Participant {
        Participant {
            name: self.steps[i].name.clone(),
            id: ev.id.to_string(),
            at: ev.at,
        }
    }

    /// `all_of`: each step's newest event within the window; fires when every step has one.
    fn observe_all_of(&self, partial: &mut Partial, ev: &Seen) -> Observed {
        let w = self.window_ms();
        partial.seen.retain(|p| p.at >= ev.at - w);
        for &i in ev.matched {
            partial.seen.retain(|p| p.name != self.steps[i].name);
            partial.seen.push(self.participant(i, ev));
        }
        let missing: Vec<String> = self
            .steps
            .iter()
            .filter(|s| !partial.seen.iter().any(|p| p.name == s.name))
            .map(|s| s.name.clone())
            .collect();
        if missing.is_empty() {
            self.fired(std::mem::take(&mut partial.seen))
        } else {
            self.partial(partial, missing)
        }
    }

    /// `sequence`: the steps in order within the window from the first.
    fn observe_sequence(&self, partial: &mut Partial, ev: &Seen) -> Option<Observed> {
        let w = self.window_ms();
        if partial.seen.first().is_some_and(|p| p.at < ev.at - w) {
            partial.seen.clear();
        }
        let n = partial.seen.len();
        if ev.has(n) {
            partial.seen.push(self.participant(n, ev));
        } else if ev.has(0) && n <= 1 {
            // A newer first event restarts the window (the best chance to complete).
            partial.seen = vec![self.participant(0, ev)];
        } else {
            return None;
        }
        if partial.seen.len() == self.steps.len() {
            return Some(self.fired(std::mem::take(&mut partial.seen)));
        }
        let next = vec![self.steps[partial.seen.len()].name.clone()];
        Some(self.partial(partial, next))
    }

    /// `absence`: the first step opens a window (one per group when asked); the second closes
    /// every open one. Firing happens at the deadline, by the job (`expire`).
    fn observe_absence(&self, partial: &mut Partial, ev: &Seen) -> Option<Observed> {
        let w = self.window_ms();
        let mut cancelled = Vec::new();
        if ev.has(1) {
            // The missing event came: every window still open ends without firing.
            partial.seen.retain(|p| {
                let open = p.at + w >= ev.at;
                if open {
                    cancelled.push(p.id.clone());
                }
                !open
            });
        }
        let open = partial.seen.iter().find(|p| p.at + w >= ev.at);
        if ev.has(0)
            && self.one_window_per_group
            && cancelled.is_empty()
            && let Some(first) = open
        {
            // The group's window is open already: held by it, no second one.
            return Some(Observed {
                state: CorrelationState::Partial,
                events: vec![first.clone()],
                deadline: Some(first.at + w),
                waiting_for: vec![self.steps[1].name.clone()],
                cancelled,
            });
        }
        if ev.has(0) {
            partial.seen.push(self.participant(0, ev));
            return Some(Observed {
                state: CorrelationState::Waiting,
                events: vec![self.participant(0, ev)],
                deadline: Some(ev.at + w),
                waiting_for: vec![self.steps[1].name.clone()],
                cancelled,
            });
        }
        (!cancelled.is_empty()).then(|| Observed {
            state: CorrelationState::Partial,
            events: vec![self.participant(1, ev)],
            deadline: None,
            waiting_for: Vec::new(),
            cancelled,
        })
    }

    /// `count`: `n` events within the window fire once; then quiet until the window after the
    /// firing ends.
    fn observe_count(&self, partial: &mut Partial, ev: &Seen, n: usize) -> Observed {
        let w = self.window_ms();
        partial.seen.retain(|p| p.at >= ev.at - w);
        partial.seen.push(self.participant(0, ev));
        // Only the newest `n` can ever decide.
        if partial.seen.len() > n {
            let extra = partial.seen.len() - n;
            partial.seen.drain(..extra);
        }
        let quiet = partial.fired_at.is_some_and(|f| ev.at <= f + w);
        if partial.seen.len() >= n && !quiet {
            partial.fired_at = Some(ev.at);
            return self.fired(std::mem::take(&mut partial.seen));
        }
        let more = n.saturating_sub(partial.seen.len()).max(1);
        let what = if quiet {
            format!(
                "the window after its last firing to end (at {})",
                crate::domain::rfc3339(partial.fired_at.unwrap_or(ev.at) + w)
            )
        } else {
            format!("{more} more `{}`", self.steps[0].name)
        };
        self.partial(partial, vec![what])
    }

    /// Absence, when its job runs after the deadline: whether the window opened by `id` is
    /// still open (then it is closed, and fires). `false`: the missing event came in time (or
    /// the partial match was evicted or the rule changed).
    pub fn expire(&self, partial: &mut Partial, id: &str) -> bool {
        let before = partial.seen.len();
        partial.seen.retain(|p| p.id != id);
        partial.seen.len() != before
    }

    fn fired(&self, events: Vec<Participant>) -> Observed {
        Observed {
            state: CorrelationState::Fired,
            events,
            deadline: None,
            waiting_for: Vec::new(),
            cancelled: Vec::new(),
        }
    }

    fn partial(&self, partial: &Partial, waiting_for: Vec<String>) -> Observed {
        Observed {
            state: CorrelationState::Partial,
            events: partial.seen.clone(),
            deadline: partial.seen.first().map(|p| p.at + self.window_ms()),
            waiting_for,
            cancelled: Vec::new(),
        }
    }

    /// What the rule's fingerprint covers.
    pub fn describe(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{}={}", s.name, s.condition.describe()))
            .collect();
        format!(
            "{:?} within {:?} group_by {:?} steps [{}] max_open {}{}",
            self.kind,
            self.within,
            self.group_by,
            steps.join(", "),
            self.max_open,
            if self.one_window_per_group {
                " windows per_group"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::condition::Expr;

    const MIN: i64 = 60_000;

    fn named(name: &str, cond: &str) -> Named {
        Named {
            name: name.into(),
            condition: Condition::Expr(Expr::compile(cond).unwrap()),
        }
    }

    fn rule(kind: Kind, steps: Vec<Named>) -> Correlation {
        Correlation {
            kind,
            steps,
            within: Duration::from_secs(120),
            group_by: vec![Query::compile("$.device").unwrap()],
            max_open: 10,
            one_window_per_group: false,
        }
    }

    fn down_up(kind: Kind) -> Correlation {
        rule(
            kind,
            vec![
                named("down", "$.state == 'down'"),
                named("up", "$.state == 'up'"),
            ],
        )
    }

    /// Feeds `(state, at)` events; returns each observation's state (None: no change).
    fn feed(c: &Correlation, events: &[(&str, i64)]) -> Vec<Option<CorrelationState>> {
        let mut p = Partial::default();
        events
            .iter()
            .enumerate()
            .map(|(i, (state, at))| {
                let doc = EventDoc::new(serde_json::json!({"state": state, "device": "r1"}));
                let m = c.steps_matched(&doc);
                if m.is_empty() {
                    return None;
                }
                c.observe(&mut p, &m, &format!("e{i}"), *at)
                    .map(|o| o.state)
            })
            .collect()
    }

    use CorrelationState::{Fired, Partial as Held, Waiting};

    #[test]
    fn all_of_fires_in_any_order_at_the_window_edge_and_not_past_it() {
        let c = down_up(Kind::AllOf);
        assert_eq!(
            feed(&c, &[("up", 0), ("down", 2 * MIN)]),
            [Some(Held), Some(Fired)],
            "exactly at the window's end still counts"
        );
        assert_eq!(
            feed(&c, &[("up", 0), ("down", 2 * MIN + 1)]),
            [Some(Held), Some(Held)],
            "one millisecond later the first has left the window"
        );
    }

    #[test]
    fn sequence_needs_the_order_and_the_window() {
        let c = down_up(Kind::Sequence);
        assert_eq!(
            feed(&c, &[("down", 0), ("up", 2 * MIN)]),
            [Some(Held), Some(Fired)]
        );
        assert_eq!(
            feed(&c, &[("down", 0), ("up", 2 * MIN + 1)]),
            [Some(Held), None]
        );
        assert_eq!(
            feed(&c, &[("up", 0), ("down", MIN)]),
            [None, Some(Held)],
            "B before A does not start it"
        );
        // A newer A restarts the window: A at 0, A at 1m, B at 3m (within 2m of the second).
        assert_eq!(
            feed(&c, &[("down", 0), ("down", MIN), ("up", 3 * MIN)]),
            [Some(Held), Some(Held), Some(Fired)]
        );
    }

    #[test]
    fn absence_is_cancelled_by_the_missing_event_up_to_the_edge() {
        let c = down_up(Kind::Absence);
        let mut p = Partial::default();
        let o = c.observe(&mut p, &[0], "a", 0).unwrap();
        assert_eq!((o.state, o.deadline), (Waiting, Some(2 * MIN)));
        // `up` exactly at the deadline is within the window: no firing.
        let o = c.observe(&mut p, &[1], "b", 2 * MIN).unwrap();
        assert_eq!(o.cancelled, ["a"]);
        assert!(!c.expire(&mut p, "a"), "cancelled windows do not fire");

        let mut p = Partial::default();
        c.observe(&mut p, &[0], "a", 0).unwrap();
        assert_eq!(c.observe(&mut p, &[1], "b", 2 * MIN + 1), None, "too late");
        assert!(c.expire(&mut p, "a"), "the window ended empty: it fires");
        assert!(p.is_empty());
    }

    #[test]
    fn absence_with_one_window_per_group_holds_repeats_while_its_window_is_open() {
        let c = Correlation {
            one_window_per_group: true,
            ..down_up(Kind::Absence)
        };
        let mut p = Partial::default();
        let o = c.observe(&mut p, &[0], "a", 0).unwrap();
        assert_eq!((o.state, o.deadline), (Waiting, Some(2 * MIN)));
        // The link flaps and stays down: the repeats are held by the open window.
        for (id, at) in [("b", MIN), ("c", 2 * MIN)] {
            let o = c.observe(&mut p, &[0], id, at).unwrap();
            assert_eq!((o.state, o.deadline), (Held, Some(2 * MIN)), "{id}");
            assert_eq!(o.events[0].id, "a");
        }
        assert!(c.expire(&mut p, "a"), "one window, one firing");
        assert!(p.is_empty());
        // After the window, a new `down` opens the next one.
        let o = c.observe(&mut p, &[0], "d", 2 * MIN + 1).unwrap();
        assert_eq!(o.state, Waiting);
        // Without the option, every `down` opens its own window.
        let c = down_up(Kind::Absence);
        let mut p = Partial::default();
        c.observe(&mut p, &[0], "a", 0).unwrap();
        let o = c.observe(&mut p, &[0], "b", MIN).unwrap();
        assert_eq!(o.state, Waiting);
    }

    #[test]
    fn count_fires_once_per_window_at_the_edge() {
        let c = rule(Kind::Count(3), vec![named("flap", "$.state == 'down'")]);
        assert_eq!(
            feed(&c, &[("down", 0), ("down", MIN), ("down", 2 * MIN)]),
            [Some(Held), Some(Held), Some(Fired)]
        );
        assert_eq!(
            feed(&c, &[("down", 0), ("down", MIN), ("down", 2 * MIN + 1)]),
            [Some(Held), Some(Held), Some(Held)],
            "the first left the window"
        );
        // Six in a row within the window fire once; after the window, three more fire again.
        let mut events: Vec<(&str, i64)> = (0..6).map(|i| ("down", i * 1000)).collect();
        events.extend([
            ("down", 5000 + 2 * MIN + 1),
            ("down", 5001 + 2 * MIN + 1),
            ("down", 5002 + 2 * MIN + 1),
        ]);
        let fired = feed(&c, &events)
            .into_iter()
            .filter(|s| *s == Some(Fired))
            .count();
        assert_eq!(fired, 2);
    }

    /// Feeds `down` events at `ats` (ms) to a `count` rule; returns each observation.
    fn count_feed(c: &Correlation, p: &mut Partial, ats: &[(&str, i64)]) -> Vec<Observed> {
        ats.iter()
            .map(|(id, at)| c.observe(p, &[0], id, *at).unwrap())
            .collect()
    }

    #[test]
    fn count_stays_quiet_up_to_the_end_of_the_window_after_its_firing() {
        let c = rule(Kind::Count(1), vec![named("flap", "$.state == 'down'")]);
        let mut p = Partial::default();
        let seen = count_feed(&c, &mut p, &[("a", 0), ("b", 2 * MIN), ("c", 2 * MIN + 1)]);
        let states: Vec<_> = seen.iter().map(|o| o.state).collect();
        assert_eq!(
            states,
            [Fired, Held, Fired],
            "exactly at the window's end it is still quiet; one millisecond later it fires"
        );
    }

    #[test]
    fn count_fires_with_the_newest_events_after_its_quiet_window() {
        let c = rule(Kind::Count(3), vec![named("flap", "$.state == 'down'")]);
        let mut p = Partial::default();
        let s = 1000;
        // Fires at the third, and holds nothing then; what is kept is when it fired.
        let seen = count_feed(&c, &mut p, &[("a", 0), ("b", s), ("c", 2 * s)]);
        assert_eq!(seen[2].state, Fired);
        assert!(p.seen.is_empty());
        assert!(
            !p.is_empty(),
            "a firing is remembered through its quiet window"
        );
        // Four more come while it is quiet.
        let seen = count_feed(
            &c,
            &mut p,
            &[("d", 3 * s), ("e", 4 * s), ("f", 5 * s), ("g", 6 * s)],
        );
        assert!(seen.iter().all(|o| o.state == Held));
        // The first after the quiet window fires with the newest three, not every one held.
        let o = c.observe(&mut p, &[0], "h", 2 * s + 2 * MIN + 1).unwrap();
        assert_eq!(o.state, Fired);
        let ids: Vec<&str> = o.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["f", "g", "h"]);
    }

    #[test]
    fn a_partial_match_shows_its_deadline_and_what_it_waits_for() {
        let c = down_up(Kind::AllOf);
        let mut p = Partial::default();
        let o = c.observe(&mut p, &[1], "a", MIN).unwrap();
        assert_eq!(o.state, Held);
        assert_eq!(
            o.deadline,
            Some(3 * MIN),
            "the first held event's time plus `within`"
        );
        assert_eq!(o.waiting_for, ["down"]);
        let c = down_up(Kind::Sequence);
        let mut p = Partial::default();
        let o = c.observe(&mut p, &[0], "a", MIN).unwrap();
        assert_eq!(
            (o.deadline, o.waiting_for),
            (Some(3 * MIN), vec!["up".to_string()])
        );
    }

    #[test]
    fn groups_come_from_group_by() {
        let c = down_up(Kind::AllOf);
        assert_eq!(c.group(&serde_json::json!({"device": "r1"})), r#"["r1"]"#);
    }

    #[test]
    fn long_group_values_make_bounded_keys_that_stay_distinct() {
        let c = down_up(Kind::AllOf);
        let big = |tail: &str| {
            let v = format!("{}{tail}", "é".repeat(32 * 1024));
            c.group(&serde_json::json!({"device": v}))
        };
        let (a, b) = (big("a"), big("b"));
        assert!(a.len() <= 200, "{} bytes", a.len());
        assert!(a.starts_with("[\"éé"), "a readable prefix: {a}");
        assert_ne!(a, b, "different values, different groups");
        assert_eq!(a, big("a"), "the same values, the same group");
        let edge = "x".repeat(MAX_GROUP_KEY - 4);
        let g = c.group(&serde_json::json!({"device": edge}));
        assert_eq!(g.len(), MAX_GROUP_KEY, "kept whole up to the bound: {g}");
    }
}
