//! The maintenance-window gate: what a job meets when it would start its first action
//! (`rules::windows::Windows::decide` on the *current* rule set, so a reload that ends or
//! removes a window releases the jobs it held), and the jobs this node holds, for the console
//! and `/api/windows`.
//!
//! ```text
//! Main(0), first attempt ─ no window ─▶ runs (then the rule's own approval, when it has one)
//!    ├ hold ─▶ nak(min(window end, 15 s)) at Main(0): looked at again, so a reload releases it
//!    ├ skip ─▶ ack Done "skipped: …" (no action runs; the history shows it skipped); a re-run
//!    │         (a person asked for it: either kind of re-run) is held as for hold
//!    ├ approve, a shadow rule ─▶ runs in shadow (nobody is asked: nothing would run)
//!    └ approve ─▶ an approval (`engine::state`: awaiting_approval, reason `window <name>`)
//! ```
//! A held job is only a pending job with a later `not_before`: it survives restarts as any
//! pending job does, and the next look decides again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::Engine;
use crate::domain::{HeldBy, Job, Phase, Step};
use crate::rules::windows::Decision;

/// The longest a held job waits before the window decision is taken again: a reload that ends
/// or removes its window releases it within this long.
pub const HOLD_RECHECK: Duration = Duration::from_secs(15);

/// The note a job skipped by a window closes with (status done, nothing ran).
pub const SKIPPED_NOTE: &str = "skipped";

/// What the gate decided for a job about to start.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// Start it.
    Go,
    /// Give it back for this long, then decide again; held by the window named.
    Hold(Duration, HeldBy),
    /// Close it as done with this note, running nothing; a re-run (`Step::asked_again`) is
    /// given back for `wait` instead (`engine::state` decides), listed as held `by`.
    Skip {
        note: String,
        wait: Duration,
        by: HeldBy,
    },
    /// The window turns the job into an approval (`engine::state`: the job then awaits a
    /// decision, reason `window <name>`, exactly as for a rule's `approval:`).
    Approve { window: String, wait: Duration },
}

/// A job a window holds, as the console and `/api/windows` list it.
#[derive(Debug, Clone, Serialize)]
pub struct HeldJob {
    pub job: String,
    pub event_id: String,
    pub rulebook: String,
    pub rule: String,
    pub window: String,
    /// `hold` (an `approve` window's job is listed as awaiting approval instead).
    pub during: &'static str,
    /// When the window ends (ms); the job is looked at again by then at the latest.
    #[serde(skip)]
    pub until: i64,
    /// When this node first held it (ms).
    #[serde(skip)]
    pub since: i64,
    #[serde(skip)]
    seen: i64,
}

/// The jobs this node holds, by job id. Refreshed each time a held job is looked at again;
/// entries not refreshed for a while (the job was taken by another node, or pruned) drop out.
#[derive(Debug, Default)]
pub(super) struct Held(Mutex<HashMap<String, HeldJob>>, AtomicI64);

/// A held entry not refreshed for this long is no longer listed.
const HELD_STALE: Duration = Duration::from_secs(60);

impl Held {
    fn hold(&self, job: &Job, window: &str, during: &'static str, until: i64, now: i64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since = map.get(&job.id).map_or(now, |h| h.since);
        map.insert(
            job.id.clone(),
            HeldJob {
                job: job.id.clone(),
                event_id: job.event_id.clone(),
                rulebook: job.rulebook.clone(),
                rule: job.rule.clone(),
                window: window.to_string(),
                during,
                until,
                since,
                seen: now,
            },
        );
    }

    pub(super) fn release(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Held entries (for back pressure: held jobs do no work). Asked on every request, so
    /// stale entries are dropped at most once a second, not counted one by one.
    pub(super) fn count(&self, now: i64) -> usize {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if now - self.1.load(Ordering::Relaxed) >= 1000 {
            self.1.store(now, Ordering::Relaxed);
            let stale = now - HELD_STALE.as_millis() as i64;
            map.retain(|_, h| h.seen >= stale);
        }
        map.len()
    }

    fn list(&self, now: i64) -> Vec<HeldJob> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let stale = now - HELD_STALE.as_millis() as i64;
        map.retain(|_, h| h.seen >= stale);
        let mut list: Vec<HeldJob> = map.values().cloned().collect();
        list.sort_by(|a, b| (a.since, &a.job).cmp(&(b.since, &b.job)));
        list
    }
}

/// The job has not started yet: its first action, first attempt (a held job is given back at
/// exactly this step, so it meets the gate again).
fn about_to_start(step: &Step) -> bool {
    step.phase == Phase::Main && step.index == 0 && step.attempts == 0
}

impl Engine {
    /// The window decision for a job that would start now; anything past its start goes on.
    pub(super) fn window_gate(&self, job: &Job, step: &Step) -> Gate {
        if !about_to_start(step) {
            return Gate::Go;
        }
        let rules = self.rules();
        if rules.windows.is_empty() {
            self.held.release(&job.id);
            return Gate::Go;
        }
        let now = self.settings.clock.now();
        let recheck = self.settings.recheck.min(HOLD_RECHECK);
        let wait = |until: i64| Duration::from_millis((until - now).max(1) as u64).min(recheck);
        let by = |window: &str, until: i64| HeldBy {
            window: window.to_string(),
            during: "hold".into(),
            until,
        };
        match rules.windows.decide(&job.rulebook, &job.rule, now) {
            Decision::Run => {
                self.held.release(&job.id);
                Gate::Go
            }
            Decision::Hold { window, until } => {
                self.held.hold(job, &window, "hold", until, now);
                tracing::debug!(job = %job.id, window = %window, until = %crate::domain::rfc3339(until), "held by a maintenance window");
                Gate::Hold(wait(until), by(&window, until))
            }
            Decision::Skip { window, until } if step.asked_again() => {
                // A re-run is never dropped: held until the window ends (`engine::state`).
                self.held.hold(job, &window, "hold", until, now);
                tracing::info!(job = %job.id, window = %window, until = %crate::domain::rfc3339(until), "re-run held by a skip window until it ends");
                Gate::Skip {
                    note: String::new(),
                    wait: wait(until),
                    by: by(&window, until),
                }
            }
            Decision::Skip { window, until } => {
                self.held.release(&job.id);
                tracing::info!(job = %job.id, window = %window, "skipped: a maintenance window was in force when it would have started");
                Gate::Skip {
                    note: format!(
                        "{SKIPPED_NOTE}: maintenance window `{window}` (during: skip) was in force when it would have started; no action ran"
                    ),
                    wait: wait(until),
                    by: by(&window, until),
                }
            }
            Decision::Approve { window, until } => {
                self.held.hold(job, &window, "approve", until, now);
                Gate::Approve {
                    window,
                    wait: wait(until),
                }
            }
        }
    }

    /// The jobs this node holds for a maintenance window, oldest first.
    pub fn held_jobs(&self) -> Vec<HeldJob> {
        self.held.list(self.settings.clock.now())
    }

    /// The windows of the current rule set at this moment, with the jobs this node holds:
    /// what `/api/windows` answers and the console's windows page shows.
    pub fn windows_report(&self) -> WindowsReport {
        let now = self.settings.clock.now();
        let windows = self.rules().windows.clone();
        let held = self.held_jobs();
        let views = windows.view(now);
        WindowsReport {
            now: crate::domain::rfc3339(now),
            next_change: windows.next_change(now).map(crate::domain::rfc3339),
            windows: views,
            held: held
                .into_iter()
                .map(|h| HeldView {
                    until: crate::rules::windows::end_of(h.until),
                    since: crate::domain::rfc3339(h.since),
                    job: h,
                })
                .collect(),
        }
    }
}

/// The windows at one moment and the jobs held (`/api/windows`, the console's windows page).
#[derive(Debug, Serialize)]
pub struct WindowsReport {
    pub now: String,
    /// When a window next starts or ends.
    pub next_change: Option<String>,
    /// Those in force first, then by their next start.
    pub windows: Vec<crate::rules::windows::WindowView>,
    /// The jobs this node holds, oldest first.
    pub held: Vec<HeldView>,
}

/// A held job with its times as RFC 3339.
#[derive(Debug, Serialize)]
pub struct HeldView {
    #[serde(flatten)]
    pub job: HeldJob,
    /// `None` (JSON `null`) under a window that never ends (all day on every day).
    pub until: Option<String>,
    pub since: String,
}

#[cfg(test)]
mod tests;
