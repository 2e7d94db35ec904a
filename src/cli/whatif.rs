//! `rulehook whatif`: replays the stored events of a period through candidate rulebooks and
//! reports what would change (see `crate::whatif`). Reads the data directory read-only, so
//! it runs beside a serving `rulehook serve`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{WhatifArgs, load};
use crate::domain::{human_duration, now_ms};
use crate::store::{History, ReadOnly};
use crate::whatif::{Report, WhatIf};

/// Events read per page.
const PAGE: usize = 2_000;

pub fn main(w: &WhatifArgs) -> ExitCode {
    let rules = match load(&w.dirs) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = rt.block_on(async {
        let history = ReadOnly::open(&w.data)
            .with_context(|| format!("cannot read the history in {}", w.data.display()))?;
        replay(&rules, &history, w.since).await
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if w.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", text(&report, &w.dirs.rulebooks.display().to_string()));
    }
    if w.fail_on_change && report.changes() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads every stored event since `since` ago, page by page, into the report. On a terminal,
/// stderr shows progress (events/s and the time left, estimated from event times).
pub async fn replay(
    rules: &crate::rules::RuleSet,
    history: &dyn History,
    since: Duration,
) -> anyhow::Result<Report> {
    let now = now_ms();
    let from = now - since.as_millis() as i64;
    let mut w = WhatIf::new(rules, from);
    let tty = std::io::stderr().is_terminal();
    let began = Instant::now();
    let mut shown = Instant::now();
    let mut after = None;
    loop {
        let page = history
            .stored(from, after.clone(), PAGE)
            .await
            .context("cannot read stored events")?;
        let Some(last) = page.last() else { break };
        after = Some(last.event.id.clone());
        let reached = last.event.received_at;
        for s in &page {
            w.feed(s, history)
                .await
                .context("cannot read a job's attempts")?;
        }
        if tty && shown.elapsed() > Duration::from_millis(200) {
            shown = Instant::now();
            let done = ((reached - from) as f64 / (now - from).max(1) as f64).clamp(0.0, 1.0);
            let secs = began.elapsed().as_secs_f64();
            let rate = w.report.events as f64 / secs.max(0.001);
            let left = if done > 0.0 { secs / done - secs } else { 0.0 };
            let width = 30;
            let filled = (done * width as f64) as usize;
            eprint!(
                "\r[{}{}] {:>3}% {} events, {:.0} events/s, {} left   ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                (done * 100.0) as u32,
                w.report.events,
                rate,
                human_duration((left * 1000.0) as i64)
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprint!("\r{}\r", " ".repeat(90));
    }
    let took = began.elapsed();
    let report = w.finish();
    eprintln!(
        "replayed {} event(s) in {} ({:.0} events/s)",
        report.events,
        human_duration(took.as_millis() as i64),
        report.events as f64 / took.as_secs_f64().max(0.001)
    );
    Ok(report)
}

/// The report for people.
pub fn text(report: &Report, rulebooks: &str) -> String {
    let mut out = format!(
        "what if: {} stored event(s) since {} through {rulebooks}\n",
        report.events, report.since
    );
    for (key, r) in &report.rules {
        let name = format!("{}/{}", r.rulebook, r.rule);
        if !r.changed() {
            out.push_str(&format!(
                "  {name} ({}): no change ({} job(s))\n",
                r.status, r.ran
            ));
            continue;
        }
        out.push_str(&format!(
            "  {name} ({}): {} would now match, {} no longer match, {} would run differently ({} job(s) before, {} now)\n",
            r.status,
            r.now_match.count,
            r.no_longer_match.count,
            r.run_differently.count,
            r.ran,
            r.would_run
        ));
        let _ = key;
        for (sign, list) in [
            ("+", &r.now_match),
            ("-", &r.no_longer_match),
            ("~", &r.run_differently),
        ] {
            for c in &list.examples {
                out.push_str(&format!(
                    "    {sign} {} ({}): {}\n",
                    c.event, c.received_at, c.why
                ));
            }
            if list.count > list.examples.len() as u64 {
                out.push_str(&format!(
                    "    {sign} … and {} more\n",
                    list.count - list.examples.len() as u64
                ));
            }
        }
    }
    out.push_str(&format!("{} change(s)\n", report.changes()));
    out
}
