//! The window decision at fixed instants (a test clock), across daylight-saving changes in
//! Europe/Berlin and America/New_York, and the rulebook errors.

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

use super::*;

fn ms(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn weekly(days: &[usize], from: (i8, i8), to: (i8, i8), zone: &str) -> Window {
    let mut d = [false; 7];
    for &i in days {
        d[i] = true;
    }
    Window {
        name: "w".into(),
        rulebook: "b".into(),
        schedule: Schedule::Weekly(Weekly {
            days: d,
            from: Time::new(from.0, from.1, 0, 0).unwrap(),
            to: Time::new(to.0, to.1, 0, 0).unwrap(),
            zone: TimeZone::get(zone).unwrap(),
            zone_name: zone.into(),
        }),
        applies: Applies::All,
        during: During::Hold,
    }
}

const SAT: usize = 5;
const SUN: usize = 6;

fn hold_until(w: &Window, at: &str) -> Option<i64> {
    match Windows(vec![w.clone()]).decide("b", "r", ms(at)) {
        Decision::Hold { until, .. } => Some(until),
        Decision::Run => None,
        other => panic!("{other:?}"),
    }
}

#[test]
fn berlin_night_window_across_spring_forward() {
    // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST. Sat 22:00 CET is 21:00Z; Sun 06:00
    // CEST is 04:00Z: the window is 7 hours of real time, 22:00 to 06:00 on the wall.
    let w = weekly(&[SAT, SUN], (22, 0), (6, 0), "Europe/Berlin");
    assert_eq!(hold_until(&w, "2026-03-28T20:59:59Z"), None);
    assert_eq!(
        hold_until(&w, "2026-03-28T21:00:00Z"),
        Some(ms("2026-03-29T04:00:00Z"))
    );
    assert_eq!(
        hold_until(&w, "2026-03-29T01:30:00Z"),
        Some(ms("2026-03-29T04:00:00Z")),
        "in the hour that does not exist on the wall"
    );
    assert_eq!(
        hold_until(&w, "2026-03-29T03:59:59.999Z"),
        Some(ms("2026-03-29T04:00:00Z"))
    );
    assert_eq!(hold_until(&w, "2026-03-29T04:00:00Z"), None);
    // Sunday night, now in summer time: 22:00 CEST is 20:00Z, until Mon 06:00 CEST (04:00Z).
    assert_eq!(hold_until(&w, "2026-03-29T19:59:00Z"), None);
    assert_eq!(
        hold_until(&w, "2026-03-29T20:00:00Z"),
        Some(ms("2026-03-30T04:00:00Z"))
    );
    // Not on weeknights.
    assert_eq!(hold_until(&w, "2026-03-30T21:00:00Z"), None);
}

#[test]
fn berlin_night_window_across_fall_back() {
    // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET. Sat 22:00 CEST is 20:00Z; Sun
    // 06:00 CET is 05:00Z: 9 hours.
    let w = weekly(&[SAT, SUN], (22, 0), (6, 0), "Europe/Berlin");
    assert_eq!(hold_until(&w, "2026-10-24T19:59:59Z"), None);
    let end = Some(ms("2026-10-25T05:00:00Z"));
    assert_eq!(hold_until(&w, "2026-10-24T20:00:00Z"), end);
    assert_eq!(
        hold_until(&w, "2026-10-25T00:30:00Z"),
        end,
        "02:30 CEST, first pass"
    );
    assert_eq!(
        hold_until(&w, "2026-10-25T01:30:00Z"),
        end,
        "02:30 CET, second pass"
    );
    assert_eq!(hold_until(&w, "2026-10-25T04:59:59Z"), end);
    assert_eq!(hold_until(&w, "2026-10-25T05:00:00Z"), None);
    // Sunday night in winter time: 22:00 CET is 21:00Z.
    assert_eq!(hold_until(&w, "2026-10-25T20:59:59Z"), None);
    assert_eq!(
        hold_until(&w, "2026-10-25T21:00:00Z"),
        Some(ms("2026-10-26T05:00:00Z"))
    );
}

#[test]
fn new_york_times_in_the_gap_and_the_fold() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT. A window from 02:15 (does not exist: it
    // starts at 03:15 EDT, 07:15Z) to 04:00 EDT (08:00Z).
    let w = weekly(&[SUN], (2, 15), (4, 0), "America/New_York");
    assert_eq!(hold_until(&w, "2026-03-08T07:14:59Z"), None);
    assert_eq!(
        hold_until(&w, "2026-03-08T07:15:00Z"),
        Some(ms("2026-03-08T08:00:00Z"))
    );
    assert_eq!(hold_until(&w, "2026-03-08T08:00:00Z"), None);
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST. 01:30 happens twice; the window starts
    // at the first (EDT, 05:30Z) and ends at 02:30 EST (07:30Z): two hours.
    let w = weekly(&[SUN], (1, 30), (2, 30), "America/New_York");
    assert_eq!(hold_until(&w, "2026-11-01T05:29:59Z"), None);
    let end = Some(ms("2026-11-01T07:30:00Z"));
    assert_eq!(hold_until(&w, "2026-11-01T05:30:00Z"), end);
    assert_eq!(hold_until(&w, "2026-11-01T06:45:00Z"), end, "01:45 EST");
    assert_eq!(hold_until(&w, "2026-11-01T07:30:00Z"), None);
}

#[test]
fn next_change_steps_through_starts_and_ends_across_dst() {
    let w = weekly(&[SAT, SUN], (22, 0), (6, 0), "Europe/Berlin");
    let ws = Windows(vec![w]);
    // From a Friday before the spring change: Sat 22:00 CET, Sun 06:00 CEST, Sun 22:00 CEST,
    // Mon 06:00 CEST, then the next Saturday 22:00 CEST.
    let mut at = ms("2026-03-27T12:00:00Z");
    let mut seen = Vec::new();
    for _ in 0..5 {
        at = ws.next_change(at).unwrap();
        seen.push(Timestamp::from_millisecond(at).unwrap().to_string());
    }
    assert_eq!(
        seen,
        [
            "2026-03-28T21:00:00Z",
            "2026-03-29T04:00:00Z",
            "2026-03-29T20:00:00Z",
            "2026-03-30T04:00:00Z",
            "2026-04-04T20:00:00Z",
        ]
    );
    // New York, fall back: a Sunday window 01:30 to 02:30 starts at the first 01:30.
    let ny = Windows(vec![weekly(&[SUN], (1, 30), (2, 30), "America/New_York")]);
    let start = ny.next_change(ms("2026-10-31T12:00:00Z")).unwrap();
    assert_eq!(start, ms("2026-11-01T05:30:00Z"));
    assert_eq!(ny.next_change(start).unwrap(), ms("2026-11-01T07:30:00Z"));
    // An absolute window: its start, then its end, then nothing.
    let abs = Windows(vec![Window {
        schedule: Schedule::Absolute {
            start: "2026-12-20T00:00:00Z".parse().unwrap(),
            end: "2027-01-04T00:00:00Z".parse().unwrap(),
        },
        ..weekly(&[SUN], (1, 0), (2, 0), "UTC")
    }]);
    let s = abs.next_change(ms("2026-12-01T00:00:00Z")).unwrap();
    assert_eq!(s, ms("2026-12-20T00:00:00Z"));
    let e = abs.next_change(s).unwrap();
    assert_eq!(e, ms("2027-01-04T00:00:00Z"));
    assert_eq!(abs.next_change(e), None);
}

#[test]
fn whole_days_in_a_row_make_one_span() {
    // 00:00 to 00:00 on sat and sun: one hold from Saturday's midnight to Monday's.
    let w = weekly(&[SAT, SUN], (0, 0), (0, 0), "Europe/Berlin");
    assert_eq!(
        hold_until(&w, "2026-06-06T10:00:00Z"),
        Some(ms("2026-06-07T22:00:00Z"))
    );
    let ws = Windows(vec![w]);
    let start = ms("2026-06-05T22:00:00Z");
    assert_eq!(ws.next_change(ms("2026-06-05T12:00:00Z")), Some(start));
    assert_eq!(ws.next_change(start), Some(ms("2026-06-07T22:00:00Z")));
}

const ALL_DAYS: [usize; 7] = [0, 1, 2, 3, 4, 5, SUN];

#[test]
fn a_whole_day_window_ends_at_its_real_end() {
    // One whole day (Tuesday 2026-06-09, Berlin): until Wednesday's midnight, not days later.
    let tue = weekly(&[1], (0, 0), (0, 0), "Europe/Berlin");
    let end = Some(ms("2026-06-09T22:00:00Z"));
    assert_eq!(
        hold_until(&tue, "2026-06-08T22:00:00Z"),
        end,
        "its first instant"
    );
    assert_eq!(hold_until(&tue, "2026-06-09T21:59:59.999Z"), end);
    assert_eq!(hold_until(&tue, "2026-06-09T22:00:00Z"), None, "ending now");
    // On every day of the week it never ends: no made-up end some days ahead.
    let always = weekly(&ALL_DAYS, (0, 0), (0, 0), "Europe/Berlin");
    assert_eq!(hold_until(&always, "2026-06-09T10:00:00Z"), Some(ENDLESS));
    let ws = Windows(vec![always]);
    assert_eq!(ws.next_change(ms("2026-06-09T10:00:00Z")), None);
    let view = &ws.view(ms("2026-06-09T10:00:00Z"))[0];
    assert!(view.in_force);
    assert_eq!(view.current.as_ref().and_then(|c| c.end.clone()), None);
    assert!(view.next.is_none(), "{view:?}");
    // The same hours on six days end where the gap is: Sunday's midnight.
    let six = weekly(&ALL_DAYS[..6], (0, 0), (0, 0), "UTC");
    assert_eq!(
        hold_until(&six, "2026-06-09T10:00:00Z"),
        Some(ms("2026-06-14T00:00:00Z"))
    );
}

#[test]
fn a_span_at_a_join_starts_where_its_first_day_starts() {
    // 00:00 to 00:00 on sat and sun, seen on Sunday: in force since Saturday's midnight.
    let ws = Windows(vec![weekly(&[SAT, SUN], (0, 0), (0, 0), "UTC")]);
    for at in ["2026-06-07T00:00:00Z", "2026-06-07T10:00:00Z"] {
        let current = ws.view(ms(at))[0].current.clone().unwrap();
        assert_eq!(
            current.start,
            crate::domain::rfc3339(ms("2026-06-06T00:00:00Z"))
        );
        assert_eq!(
            current.end.as_deref(),
            Some(crate::domain::rfc3339(ms("2026-06-08T00:00:00Z")).as_str())
        );
    }
}

#[test]
fn a_window_across_midnight_every_night_ends_each_morning() {
    let w = weekly(&ALL_DAYS, (22, 0), (6, 0), "UTC");
    let morning = Some(ms("2026-06-10T06:00:00Z"));
    assert_eq!(hold_until(&w, "2026-06-09T22:00:00Z"), morning);
    assert_eq!(
        hold_until(&w, "2026-06-10T03:00:00Z"),
        morning,
        "after midnight"
    );
    assert_eq!(hold_until(&w, "2026-06-10T05:59:59.999Z"), morning);
    assert_eq!(hold_until(&w, "2026-06-10T06:00:00Z"), None, "ending now");
    assert_eq!(
        Windows(vec![w]).next_change(ms("2026-06-10T06:00:00Z")),
        Some(ms("2026-06-10T22:00:00Z"))
    );
}

#[test]
fn skip_beats_hold_beats_approve_and_only_covered_rules_are_touched() {
    let at = ms("2026-12-24T12:00:00Z");
    let abs = |name: &str, during, applies| Window {
        name: name.into(),
        rulebook: "b".into(),
        schedule: Schedule::Absolute {
            start: "2026-12-20T00:00:00Z".parse().unwrap(),
            end: "2027-01-04T00:00:00Z".parse().unwrap(),
        },
        applies,
        during,
    };
    let only = |r: &str| Applies::Rules(vec![("b".into(), r.into())]);
    let ws = Windows(vec![
        abs("a", During::Approve, Applies::All),
        abs("h", During::Hold, only("x")),
        abs("s", During::Skip, only("y")),
    ]);
    let until = ms("2027-01-04T00:00:00Z");
    assert_eq!(
        ws.decide("b", "z", at),
        Decision::Approve {
            window: "a".into(),
            until
        }
    );
    assert_eq!(
        ws.decide("b", "x", at),
        Decision::Hold {
            window: "h".into(),
            until
        }
    );
    assert!(matches!(
        ws.decide("b", "y", at),
        Decision::Skip { ref window, until: end } if window == "s" && end > at
    ));
    assert_eq!(
        ws.decide("b", "x", until),
        Decision::Run,
        "the end is not in it"
    );
    assert_eq!(
        ws.decide("other", "x", ms("2026-12-19T23:59:59Z")),
        Decision::Run
    );
}

#[test]
fn an_hour_the_clocks_skip_is_no_window_that_night_and_the_next_week_still_comes() {
    // Sundays 02:00 to 03:00 in Berlin. On 2026-03-29 that hour does not exist (02:00 CET
    // is 03:00 CEST): no window that night, and the next one is the Sunday after (00:00Z).
    let w = weekly(&[SUN], (2, 0), (3, 0), "Europe/Berlin");
    assert_eq!(hold_until(&w, "2026-03-29T01:00:00Z"), None);
    let ws = Windows(vec![w]);
    let next = ms("2026-04-05T00:00:00Z");
    assert_eq!(ws.next_change(ms("2026-03-28T12:00:00Z")), Some(next));
    assert_eq!(
        ws.view(ms("2026-03-28T12:00:00Z"))[0]
            .next
            .as_ref()
            .map(|n| n.start.clone()),
        Some(crate::domain::rfc3339(next))
    );
}

/// An absolute window `name` over every rule, from `start` to `end`.
fn between(name: &str, during: During, start: &str, end: &str) -> Window {
    Window {
        name: name.into(),
        rulebook: "b".into(),
        schedule: Schedule::Absolute {
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        },
        applies: Applies::All,
        during,
    }
}

#[test]
fn skip_beats_hold_beats_approve_whatever_order_they_are_written_in() {
    let at = ms("2026-12-24T12:00:00Z");
    let until = ms("2027-01-04T00:00:00Z");
    let w =
        |name: &str, during| between(name, during, "2026-12-20T00:00:00Z", "2027-01-04T00:00:00Z");
    // The strongest first: the weaker ones after it change nothing.
    let ws = Windows(vec![
        w("s", During::Skip),
        w("h", During::Hold),
        w("a", During::Approve),
    ]);
    assert_eq!(
        ws.decide("b", "r", at),
        Decision::Skip {
            window: "s".into(),
            until
        }
    );
    let ws = Windows(vec![w("h", During::Hold), w("a", During::Approve)]);
    assert_eq!(
        ws.decide("b", "r", at),
        Decision::Hold {
            window: "h".into(),
            until
        }
    );
}

#[test]
fn a_hold_lasts_until_the_last_of_its_holding_windows_ends() {
    let at = ms("2026-12-24T12:00:00Z");
    let short = between(
        "short",
        During::Hold,
        "2026-12-20T00:00:00Z",
        "2026-12-27T00:00:00Z",
    );
    let long = between(
        "long",
        During::Hold,
        "2026-12-22T00:00:00Z",
        "2027-01-04T00:00:00Z",
    );
    let want = Decision::Hold {
        window: "long".into(),
        until: ms("2027-01-04T00:00:00Z"),
    };
    for ws in [
        Windows(vec![short.clone(), long.clone()]),
        Windows(vec![long, short]),
    ] {
        assert_eq!(ws.decide("b", "r", at), want);
    }
}

/// Loads one rulebook; its errors as text.
fn load_errors(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("rulebooks/w.yml"), text).unwrap();
    match crate::rules::load(&crate::rules::Dirs {
        rulebooks: dir.path().join("rulebooks"),
        scripts: dir.path().join("scripts"),
        templates: dir.path().join("templates"),
    }) {
        Ok(set) => format!("loaded {} window(s)", set.windows.0.len()),
        Err(e) => e.to_string(),
    }
}

const RULE: &str = "rules:\n  - name: frozen\n    actions: [{ log: { message: m } }]\n";

#[test]
fn a_valid_rulebook_loads_its_windows() {
    let text = format!(
        "windows:\n  - name: freeze\n    start: \"2026-12-20T00:00:00Z\"\n    end: \"2027-01-04T00:00:00Z\"\n    rules: [frozen]\n    during: hold\n  - name: nights\n    weekly: {{days: [sat, sun], from: \"22:00\", to: \"06:00\", timezone: Europe/Berlin}}\n    rules: all\n    during: skip\n{RULE}"
    );
    assert_eq!(load_errors(&text), "loaded 2 window(s)");
}

#[test]
fn window_errors_name_file_line_and_column() {
    let cases = [
        // (the window's lines, the error's line:column, words it must contain)
        (
            "    weekly: {days: [sat, sun, funday], from: \"22:00\", to: \"06:00\", timezone: UTC}\n    rules: all\n    during: hold\n",
            "w.yml:3:31:",
            "day `funday`",
        ),
        (
            "    weekly: {days: [sat], from: \"25:00\", to: \"06:00\", timezone: UTC}\n    rules: all\n    during: hold\n",
            "w.yml:3:33:",
            "from `25:00`",
        ),
        (
            "    weekly: {days: [sat], from: \"22:00\", to: \"06:00\", timezone: Europe/Berln}\n    rules: all\n    during: hold\n",
            "w.yml:3:65:",
            "did you mean `Europe/Berlin`",
        ),
        (
            "    start: \"2027-01-04T00:00:00Z\"\n    end: \"2026-12-20T00:00:00Z\"\n    rules: all\n    during: hold\n",
            "w.yml:4:10:",
            "is not after start",
        ),
        (
            "    start: \"2026-12-20T00:00:00\"\n    end: \"2027-01-04T00:00:00Z\"\n    rules: all\n    during: hold\n",
            "w.yml:3:12:",
            "with its offset",
        ),
        (
            "    start: \"2026-12-20T00:00:00Z\"\n    end: \"2027-01-04T00:00:00Z\"\n    rules: [frozen, frozn]\n    during: hold\n",
            "w.yml:5:21:",
            "no rule named `frozn` in any rulebook; did you mean `frozen`?",
        ),
        (
            "    start: \"2026-12-20T00:00:00Z\"\n    end: \"2027-01-04T00:00:00Z\"\n    rules: all\n    during: pause\n",
            "w.yml:6:13:",
            "during `pause`",
        ),
    ];
    for (lines, at, words) in cases {
        let text = format!("windows:\n  - name: w\n{lines}{RULE}");
        let err = load_errors(&text);
        assert!(
            err.contains(at) && err.contains(words),
            "{at} {words}: {err}"
        );
    }
}
