//! Maintenance windows: the compiled `windows:` of every rulebook and the pure decision a job
//! meets when it would start its first action (`decide`), with when that decision can next
//! change (`next_change`). Time is a parameter (milliseconds since the epoch), so tests use
//! any instant; recurring windows are computed in their IANA time zone by `jiff`, so a window
//! from 22:00 to 06:00 stays 22:00 to 06:00 on the wall clock across a daylight-saving change.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

use crate::rulebook::compile::Compile;
use crate::rulebook::windows::{WeeklySpec, WindowRulesSpec, WindowSpec};

/// What a window does to the jobs of its rules that would start while it is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum During {
    /// Kept in the queue until the window ends (re-checked, so a reload releases them).
    Hold,
    /// Closed as done without running, noted as skipped.
    Skip,
    /// Turned into approvals: the job runs only once someone approves it.
    Approve,
}

impl During {
    pub fn as_str(self) -> &'static str {
        match self {
            During::Hold => "hold",
            During::Skip => "skip",
            During::Approve => "approve",
        }
    }
    /// Which decision wins when several windows are in force: nothing runs (skip) over later
    /// (hold) over with a person's consent (approve).
    fn weight(self) -> u8 {
        match self {
            During::Skip => 3,
            During::Hold => 2,
            During::Approve => 1,
        }
    }
}

/// When a window is in force.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// From `start` (inclusive) to `end` (exclusive).
    Absolute {
        start: Timestamp,
        end: Timestamp,
    },
    Weekly(Weekly),
}

/// A recurring window: on each of `days` from `from` to `to` local time in `zone`; a `to` at or
/// before `from` ends the next day (22:00 to 06:00 crosses midnight; 00:00 to 00:00 is a day).
#[derive(Debug, Clone)]
pub struct Weekly {
    /// Monday first.
    pub days: [bool; 7],
    pub from: Time,
    pub to: Time,
    pub zone: TimeZone,
    pub zone_name: String,
}

/// Which rules a window covers.
#[derive(Debug, Clone)]
pub enum Applies {
    All,
    /// `(rulebook, rule name)` pairs, resolved when loaded.
    Rules(Vec<(String, String)>),
}

/// One compiled window.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    /// The rulebook (file stem) that declares it.
    pub rulebook: String,
    pub schedule: Schedule,
    pub applies: Applies,
    pub during: During,
}

/// What a job that would start now meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No window in force for its rule.
    Run,
    /// Wait until `until` (ms), or a reload that changes the windows.
    Hold { window: String, until: i64 },
    /// Skip the job (a re-run is held until `until` instead).
    Skip { window: String, until: i64 },
    /// An approval is needed (the window ends at `until`).
    Approve { window: String, until: i64 },
}

/// One stretch of time a window is in force: `[start, end)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

/// Every window of a rule set.
#[derive(Debug, Clone, Default)]
pub struct Windows(pub Vec<Window>);

/// How far ahead a recurring window's next occurrence is looked for (a week and a bit).
const LOOKAHEAD_DAYS: i32 = 9;

/// The end of a span that never ends: a weekly window whose occurrences touch each other on
/// every day of the week (00:00 to 00:00 on all seven days). Shown as no end (`null`, "no end"),
/// never as a date; a job it holds is looked at again as any held job is.
pub const ENDLESS: i64 = i64::MAX;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

impl Weekly {
    /// The occurrence that starts on local `date`, if that day is one of `days`.
    fn occurrence(&self, date: Date) -> Option<Span> {
        let day = date.weekday().to_monday_zero_offset() as usize;
        if !self.days[day] {
            return None;
        }
        let end_date = if self.to <= self.from {
            date.tomorrow().ok()?
        } else {
            date
        };
        // `compatible`: a time in a spring-forward gap moves forward by the gap (02:30 becomes
        // 03:30); one in a fall-back fold is its first (earlier) instance.
        let start = self.zone.to_timestamp(date.to_datetime(self.from)).ok()?;
        let end = self.zone.to_timestamp(end_date.to_datetime(self.to)).ok()?;
        (end > start).then(|| Span {
            start: start.as_millisecond(),
            end: end.as_millisecond(),
        })
    }

    fn local_date(&self, at: i64) -> Date {
        self.zone.to_datetime(ts(at)).date()
    }

    /// The occurrence containing `at`, joined with the ones that touch it on either side
    /// (00:00 to 00:00 on sat and sun is one span from Saturday's midnight to Monday's). When
    /// every day's occurrence touches the next (00:00 to 00:00 on all seven days) the window
    /// never ends: the span ends at [`ENDLESS`], not at the last day looked at.
    fn span_at(&self, at: i64) -> Option<Span> {
        let today = self.local_date(at);
        // An occurrence lasts at most a day (plus an hour of DST), so one containing `at`
        // started on its local date or the day before.
        let (mut span, first) = [today.yesterday().ok()?, today].into_iter().find_map(|d| {
            self.occurrence(d)
                .filter(|s| s.start <= at && at < s.end)
                .map(|s| (s, d))
        })?;
        // A week of days, each touching the next: every day is on and each joins the next.
        let mut date = first;
        let mut joined = 0;
        while joined < DAYS.len() {
            date = date.tomorrow().ok()?;
            match self.occurrence(date) {
                Some(next) if next.start <= span.end => span.end = span.end.max(next.end),
                _ => break,
            }
            joined += 1;
        }
        if joined == DAYS.len() {
            span.end = ENDLESS;
            return Some(span);
        }
        let mut date = first;
        for _ in 0..DAYS.len() {
            date = date.yesterday().ok()?;
            match self.occurrence(date) {
                Some(prev) if prev.end >= span.start => span.start = span.start.min(prev.start),
                _ => break,
            }
        }
        Some(span)
    }

    /// The first occurrence that starts after `at`.
    fn next_after(&self, at: i64) -> Option<Span> {
        let mut date = self.local_date(at).yesterday().ok()?;
        for _ in 0..=LOOKAHEAD_DAYS {
            // An occurrence that continues the one before it (no gap) starts nothing.
            if let Some(s) = self.occurrence(date).filter(|s| s.start > at)
                && self.span_at(s.start - 1).is_none()
            {
                return self.span_at(s.start);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

impl Window {
    /// The stretch in force at `at`, if any.
    pub fn span_at(&self, at: i64) -> Option<Span> {
        match &self.schedule {
            Schedule::Absolute { start, end } => {
                let (start, end) = (start.as_millisecond(), end.as_millisecond());
                (start <= at && at < end).then_some(Span { start, end })
            }
            Schedule::Weekly(w) => w.span_at(at),
        }
    }

    /// The next stretch that starts after `at`.
    pub fn next_after(&self, at: i64) -> Option<Span> {
        match &self.schedule {
            Schedule::Absolute { start, end } => {
                let (start, end) = (start.as_millisecond(), end.as_millisecond());
                (start > at).then_some(Span { start, end })
            }
            Schedule::Weekly(w) => w.next_after(at),
        }
    }

    /// The window covers the rule `name` of `rulebook`.
    pub fn covers(&self, rulebook: &str, name: &str) -> bool {
        match &self.applies {
            Applies::All => true,
            Applies::Rules(list) => list.iter().any(|(b, n)| b == rulebook && n == name),
        }
    }

    /// The schedule in words (`2026-12-20T00:00:00.000Z to 2027-01-04T00:00:00.000Z`,
    /// `weekly sat, sun 22:00 to 06:00 Europe/Berlin`).
    pub fn describe(&self) -> String {
        match &self.schedule {
            Schedule::Absolute { start, end } => format!(
                "{} to {}",
                crate::domain::rfc3339(start.as_millisecond()),
                crate::domain::rfc3339(end.as_millisecond())
            ),
            Schedule::Weekly(w) => {
                let days: Vec<&str> = DAYS
                    .iter()
                    .zip(w.days)
                    .filter(|(_, on)| *on)
                    .map(|(d, _)| *d)
                    .collect();
                format!(
                    "weekly {} {} to {} {}",
                    days.join(", "),
                    w.from.strftime("%H:%M"),
                    w.to.strftime("%H:%M"),
                    w.zone_name
                )
            }
        }
    }
}

impl Windows {
    /// What a job of rule `name` (of `rulebook`) meets if it would start at `at`: of the
    /// windows in force that cover it, skip wins over hold over approve; a hold lasts until the
    /// last of its holding windows ends.
    pub fn decide(&self, rulebook: &str, name: &str, at: i64) -> Decision {
        let mut best: Option<(&Window, Span)> = None;
        for w in self.0.iter().filter(|w| w.covers(rulebook, name)) {
            let Some(span) = w.span_at(at) else { continue };
            best = match best {
                Some((b, bs)) if b.during.weight() > w.during.weight() => Some((b, bs)),
                Some((b, bs)) if b.during == w.during && bs.end >= span.end => Some((b, bs)),
                _ => Some((w, span)),
            };
        }
        match best {
            None => Decision::Run,
            Some((w, span)) => {
                let window = w.name.clone();
                match w.during {
                    During::Hold => Decision::Hold {
                        window,
                        until: span.end,
                    },
                    During::Skip => Decision::Skip {
                        window,
                        until: span.end,
                    },
                    During::Approve => Decision::Approve {
                        window,
                        until: span.end,
                    },
                }
            }
        }
    }

    /// The first instant after `at` at which any window starts or ends.
    pub fn next_change(&self, at: i64) -> Option<i64> {
        self.0
            .iter()
            .flat_map(|w| {
                let ends = w.span_at(at).map(|s| s.end).filter(|&e| e != ENDLESS);
                let starts = w.next_after(at).map(|s| s.start);
                [ends, starts]
            })
            .flatten()
            .min()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A window as the console and `/api/windows` show it at one instant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowView {
    pub name: String,
    pub rulebook: String,
    pub during: &'static str,
    /// `"all"`, or the rules covered as `rulebook/name`.
    pub rules: serde_json::Value,
    /// The schedule in words ([`Window::describe`]).
    pub schedule: String,
    pub in_force: bool,
    /// The stretch in force now.
    pub current: Option<SpanView>,
    /// The next stretch after now (or after the current one).
    pub next: Option<SpanView>,
}

/// `[start, end)` as RFC 3339; `end` is `None` for a window that never ends ([`ENDLESS`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpanView {
    pub start: String,
    pub end: Option<String>,
}

impl From<Span> for SpanView {
    fn from(s: Span) -> SpanView {
        SpanView {
            start: crate::domain::rfc3339(s.start),
            end: end_of(s.end),
        }
    }
}

/// A span's end as RFC 3339, `None` for [`ENDLESS`].
pub fn end_of(end: i64) -> Option<String> {
    (end != ENDLESS).then(|| crate::domain::rfc3339(end))
}

impl Windows {
    /// Every window at `at`: those in force first (in rulebook order), then by next start.
    pub fn view(&self, at: i64) -> Vec<WindowView> {
        let mut list: Vec<(i64, WindowView)> = self
            .0
            .iter()
            .map(|w| {
                let current = w.span_at(at);
                let next = match current {
                    Some(c) if c.end == ENDLESS => None,
                    Some(c) => w.next_after(c.end - 1),
                    None => w.next_after(at),
                };
                let rules = match &w.applies {
                    Applies::All => serde_json::json!("all"),
                    Applies::Rules(l) => l.iter().map(|(b, n)| format!("{b}/{n}")).collect(),
                };
                let order = match (current, next) {
                    (Some(_), _) => i64::MIN,
                    (None, Some(n)) => n.start,
                    (None, None) => i64::MAX,
                };
                let view = WindowView {
                    name: w.name.clone(),
                    rulebook: w.rulebook.clone(),
                    during: w.during.as_str(),
                    rules,
                    schedule: w.describe(),
                    in_force: current.is_some(),
                    current: current.map(SpanView::from),
                    next: next.map(SpanView::from),
                };
                (order, view)
            })
            .collect();
        list.sort_by_key(|(order, _)| *order);
        list.into_iter().map(|(_, v)| v).collect()
    }
}

/// Day names as written in `days:` (Monday first, like [`Weekly::days`]).
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// The rules every rulebook declares, as `(rulebook, name)` (disabled ones too: a window may
/// name a rule that is switched off for now).
pub type Declared = HashSet<(String, String)>;

/// Compiles one rulebook's `windows:`; errors go to `cx`. `taken`: window names seen so far,
/// with where each is written (names are unique across rulebooks: the console and the history
/// name windows alone).
pub fn compile(
    cx: &mut Compile,
    specs: &[WindowSpec],
    rulebook: &str,
    declared: &Declared,
    taken: &mut HashMap<String, String>,
) -> Vec<Window> {
    let mut out = Vec::new();
    for spec in specs {
        let name = &spec.name;
        // A wrong name is reported and the window's settings still checked: one mistake does
        // not hide the entry's others.
        let misnamed = !super::load::valid_name(&name.value);
        if misnamed {
            cx.err(
                &name.referenced,
                format!("window name `{}` must match [a-z0-9_-]+", name.value),
            );
        }
        let place = format!(
            "{}:{}:{}",
            cx.file,
            name.referenced.line(),
            name.referenced.column()
        );
        // A second window of a name is reported with where the first is, and its own
        // settings are still checked (a mistake in them is not hidden behind the name).
        let twice = match taken.get(&name.value) {
            _ if misnamed => false,
            Some(first) => {
                cx.err(
                    &name.referenced,
                    format!(
                        "window `{}` is declared twice (first at {first}): a window's name is unique across all rulebooks",
                        name.value
                    ),
                );
                true
            }
            None => {
                taken.insert(name.value.clone(), place);
                false
            }
        };
        let schedule = schedule(cx, spec);
        let applies = applies(cx, spec, rulebook, declared);
        let during = during(cx, spec);
        if let (false, Some(schedule), Some(applies), Some(during)) =
            (misnamed || twice, schedule, applies, during)
        {
            out.push(Window {
                name: name.value.clone(),
                rulebook: rulebook.to_string(),
                schedule,
                applies,
                during,
            });
        }
    }
    out
}

fn during(cx: &mut Compile, spec: &WindowSpec) -> Option<During> {
    let Some(d) = &spec.during else {
        cx.err(
            &spec.name.referenced,
            format!(
                "window `{}` needs `during:` (hold, skip or approve)",
                spec.name.value
            ),
        );
        return None;
    };
    match d.value.as_str() {
        "hold" => Some(During::Hold),
        "skip" => Some(During::Skip),
        "approve" => Some(During::Approve),
        other => {
            cx.err(
                &d.referenced,
                format!("during `{other}`: expected hold, skip or approve"),
            );
            None
        }
    }
}

/// `rules:`: `all`, or names resolved to `(rulebook, name)`: `rulebook/name`, or a bare name
/// (the rule of that name in this rulebook if it has one, else every rulebook's of that name).
fn applies(
    cx: &mut Compile,
    spec: &WindowSpec,
    rulebook: &str,
    declared: &Declared,
) -> Option<Applies> {
    let Some(rules) = &spec.rules else {
        cx.err(
            &spec.name.referenced,
            format!(
                "window `{}` needs `rules:` (a list of rule names, or `all`)",
                spec.name.value
            ),
        );
        return None;
    };
    let names = match &rules.value {
        WindowRulesSpec::All => return Some(Applies::All),
        WindowRulesSpec::Names(n) => n,
    };
    if names.is_empty() {
        cx.err(
            &rules.referenced,
            "`rules: []` covers no rule: name rules, or write `rules: all`",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for n in names {
        let found: Vec<(String, String)> = match n.value.split_once('/') {
            Some((b, r)) => declared
                .get(&(b.to_string(), r.to_string()))
                .cloned()
                .into_iter()
                .collect(),
            None => match declared.get(&(rulebook.to_string(), n.value.clone())) {
                Some(own) => vec![own.clone()],
                None => declared
                    .iter()
                    .filter(|(_, r)| *r == n.value)
                    .cloned()
                    .collect(),
            },
        };
        if found.is_empty() {
            let known: Vec<&str> = declared.iter().map(|(_, r)| r.as_str()).collect();
            let hint = crate::rulebook::yaml_error::closest(&n.value, &known)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            cx.err(
                &n.referenced,
                format!(
                    "window `{}`: no rule named `{}` in any rulebook{hint}",
                    spec.name.value, n.value
                ),
            );
            ok = false;
        }
        out.extend(found);
    }
    ok.then_some(Applies::Rules(out))
}

fn schedule(cx: &mut Compile, spec: &WindowSpec) -> Option<Schedule> {
    let name = &spec.name.value;
    match (&spec.start, &spec.end, &spec.weekly) {
        (Some(start), Some(end), None) => {
            // Both read before either is given up on: a wrong `start` does not hide `end`'s.
            let (s, e) = (timestamp(cx, start, "start"), timestamp(cx, end, "end"));
            let (s, e) = (s?, e?);
            if e <= s {
                cx.err(
                    &end.referenced,
                    format!("window `{name}`: end {e} is not after start {s}"),
                );
                return None;
            }
            Some(Schedule::Absolute { start: s, end: e })
        }
        (None, None, Some(w)) => weekly(cx, &w.value).map(Schedule::Weekly),
        (_, _, Some(w)) => {
            cx.err(
                &w.referenced,
                format!("window `{name}`: either `start`/`end` or `weekly`, not both"),
            );
            None
        }
        (Some(s), None, None) => {
            cx.err(
                &s.referenced,
                format!("window `{name}`: `start` needs an `end`"),
            );
            None
        }
        (None, Some(e), None) => {
            cx.err(
                &e.referenced,
                format!("window `{name}`: `end` needs a `start`"),
            );
            None
        }
        (None, None, None) => {
            cx.err(
                &spec.name.referenced,
                format!("window `{name}` needs `start` and `end`, or `weekly`"),
            );
            None
        }
    }
}

fn timestamp(
    cx: &mut Compile,
    s: &crate::rulebook::model::S<String>,
    what: &str,
) -> Option<Timestamp> {
    match s.value.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            cx.err(
                &s.referenced,
                format!(
                    "{what} `{}`: expected an RFC 3339 time with its offset, like 2026-12-20T00:00:00Z or 2026-12-20T00:00:00+01:00 ({e})",
                    s.value
                ),
            );
            None
        }
    }
}

fn weekly(cx: &mut Compile, w: &WeeklySpec) -> Option<Weekly> {
    let mut days = [false; 7];
    let mut ok = true;
    for d in &w.days {
        let lower = d.value.to_ascii_lowercase();
        match DAYS
            .iter()
            .position(|x| *x == lower)
            .or_else(|| DAY_NAMES.iter().position(|x| *x == lower))
        {
            Some(i) => days[i] = true,
            None => {
                cx.err(
                    &d.referenced,
                    format!(
                        "day `{}`: expected one of {} (or the full name)",
                        d.value,
                        DAYS.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    if w.days.is_empty() {
        cx.err(
            &w.from.referenced,
            "`days: []`: name at least one day (mon … sun)",
        );
        ok = false;
    }
    let from = time_of_day(cx, &w.from, "from");
    let to = time_of_day(cx, &w.to, "to");
    let zone = match TimeZone::get(&w.timezone.value) {
        Ok(z) => Some(z),
        Err(_) => {
            let names: Vec<String> = jiff::tz::db()
                .available()
                .map(|n| n.as_str().to_string())
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = crate::rulebook::yaml_error::closest(&w.timezone.value, &names)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            cx.err(
                &w.timezone.referenced,
                format!(
                    "unknown time zone `{}`: expected an IANA name like Europe/Berlin, America/New_York or UTC{hint}",
                    w.timezone.value
                ),
            );
            None
        }
    };
    let (from, to, zone) = (from?, to?, zone?);
    ok.then(|| Weekly {
        days,
        from,
        to,
        zone,
        zone_name: w.timezone.value.clone(),
    })
}

/// `HH:MM`, 00:00 to 23:59.
fn time_of_day(
    cx: &mut Compile,
    s: &crate::rulebook::model::S<String>,
    what: &str,
) -> Option<Time> {
    let parsed = s.value.split_once(':').and_then(|(h, m)| {
        let two = |x: &str| -> Option<i8> {
            (x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit())).then(|| x.parse().ok())?
        };
        let (h, m) = (two(h)?, two(m)?);
        Time::new(h, m, 0, 0).ok()
    });
    if parsed.is_none() {
        cx.err(
            &s.referenced,
            format!(
                "{what} `{}`: expected a time of day as HH:MM (00:00 to 23:59)",
                s.value
            ),
        );
    }
    parsed
}

#[cfg(test)]
mod tests;
