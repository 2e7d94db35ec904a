//! `rulehook whatif`: replays the stored events of a period through candidate rulebooks and
//! reports what would change (see `crate::whatif`). Reads the data directory read-only, so
//! it runs beside a serving `rulehook serve`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;

use super::{WhatifArgs, load};
use crate::store::{History, ReadOnly, Remote};
use crate::whatif::Report;

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
        let history: Box<dyn History> = match &w.url {
            Some(url) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let token = std::env::var("RULEHOOK_ADMIN_TOKEN").ok();
                Box::new(Remote::new(url, token, w.insecure)?)
            }
            None => Box::new(
                ReadOnly::open(&w.data)
                    .with_context(|| format!("cannot read the history in {}", w.data.display()))?,
            ),
        };
        crate::whatif::replay(
            &rules,
            history.as_ref(),
            w.since,
            std::io::stderr().is_terminal(),
        )
        .await
        .context("cannot replay the history")
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            if format!("{e:#}").contains("locked") {
                eprintln!(
                    "hint: a running `rulehook serve` holds {} exclusively; read it with --url http://ADDRESS instead, or stop the service",
                    w.data.display()
                );
            }
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

/// The report for people.
pub fn text(report: &Report, rulebooks: &str) -> String {
    let mut out = format!(
        "what if: {} stored event(s) since {} through {rulebooks}\n",
        report.events, report.since
    );
    for (key, r) in &report.rules {
        let name = format!("{}/{}", r.rulebook, r.rule);
        // Maintenance windows in force when those events came (not a change of matching).
        let windows: String = r
            .windows
            .iter()
            .map(|(w, n)| {
                format!("    window {w}: {n} of its job(s) would meet it at their event's time\n")
            })
            .collect();
        if !r.changed() {
            out.push_str(&format!(
                "  {name} ({}): no change ({} job(s))\n{windows}",
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
        out.push_str(&windows);
        for (sign, list) in [
            ("+", &r.now_match),
            ("-", &r.no_longer_match),
            ("~", &r.run_differently),
        ] {
            changes(&mut out, sign, list);
        }
    }
    let skipped = &report.unreadable;
    if skipped.count > 0 {
        out.push_str(&format!(
            "  {} stored event(s) could not be read back and were skipped:\n",
            skipped.count
        ));
        changes(&mut out, "!", skipped);
    }
    out.push_str(&format!("{} change(s)\n", report.changes()));
    out
}

/// One line per example event of `list`, marked `sign`, and how many more there are.
fn changes(out: &mut String, sign: &str, list: &crate::whatif::Changes) {
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
