//! The job state machine as one pure function: where a job is and what just happened go in,
//! what to do next comes out. `engine/job.rs` drives it (storage, actions, the clock); every
//! decision is made here and tested transition by transition below.
//!
//! ```text
//! leased at the gate (Main(0), nothing run, not decided)
//!   ├ window hold{until} ─▶ nak until the window ends (the hold recorded in the step: shown as
//!   │                       held on every node), then the gate again, which clears it
//!   ├ window skip ───────▶ ack Done "skipped: window …" (a re-run: held like `hold` instead)
//!   ├ window approve ────▶ ask (reason "window …") ─▶ awaiting_approval (a shadow rule: Main(0))
//!   ├ rule approval ─────▶ ask (reason "rule approval") ─▶ awaiting_approval
//!   └ otherwise ─────────▶ Main(0)
//! awaiting_approval ─ approved ─▶ Main(0) (decision kept) │ rejected ─▶ ack Done, `rejected`
//!                   ─ nobody yet, before the deadline ─▶ nak until the deadline or the next check
//!                   ─ past the deadline ─▶ decide `on_timeout` (by `timeout`), then as above
//!                   ─ its window ended or was removed (no rule approval) ─▶ approved by
//!                     `window end`, then as above
//! Main(i) ─ok─▶ Main(i+1) … ─ok, last─▶ ack Done (shadow: noted)
//!    ├ failed, retries left ─▶ nak(delay) at Main(i), attempts+1
//!    └ failed for good ─▶ OnFailure(0){failure} ─▶ … ─▶ ack Failed │ (no on_failure) ack Failed
//! re-run (dead letter): resume at the failed action, or Main(0) of a new generation (the gate
//! again: a changed rule asks for approval again)
//! ```

use std::time::Duration;

use serde_json::Value;

use crate::domain::{Awaiting, Decision, HeldBy, JobState, Outcome, Phase, Step};

/// How long a job a maintenance window turned into an approval waits for a decision when its
/// rule has no `approval:` of its own (then it is rejected).
pub const WINDOW_APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// A maintenance window's decision for a job about to start its first action. The rule set's
/// `windows:` decide it for a rule and a time; this machine acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowDecision {
    /// No window applies.
    Open,
    /// Keep the job pending until `until` (milliseconds since the epoch: the window's end, or
    /// an earlier look so a reload can release it), then decide again; `by` is recorded in its
    /// step meanwhile (shown as `held_by`).
    Hold { until: i64, by: HeldBy },
    /// Record the job as done without running it, with this note (`skipped: …`). A re-run
    /// (its earlier generation's actions already ran) is never dropped: it is held until
    /// `until` (the window's end, or an earlier look) instead, recorded as held `by`.
    Skip {
        note: String,
        until: i64,
        by: HeldBy,
    },
    /// Ask for approval, exactly as if the rule had `approval:`.
    Approve { window: String },
}

/// What the machine needs to know about the job's rule and the moment.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Main actions, and `on_failure` actions.
    pub actions: usize,
    pub on_failure: usize,
    pub shadow: bool,
    /// The rule's `approval.timeout`, when it has `approval:`.
    pub approval: Option<Duration>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

/// Where a job is when it is leased: the driver gathers the input that place needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Before its first action, not decided about: windows and approval come first.
    Gate,
    /// Waiting for a decision.
    Awaiting,
    /// At an action (to run it).
    Action,
}

/// Where `step` is.
pub fn place(step: &Step) -> Place {
    if step.awaiting.is_some() {
        Place::Awaiting
    } else if step.phase == Phase::Main
        && step.index == 0
        && step.attempts == 0
        && step.decision.is_none()
    {
        Place::Gate
    } else {
        Place::Action
    }
}

/// How one action ended.
#[derive(Debug, Clone)]
pub enum Ran {
    Done(Outcome),
    /// Failed; try again after this long.
    Retry(Outcome, Duration),
    /// Failed for good; with what `on_failure` actions see as `failure`.
    Failed(Outcome, Value),
    /// Shutting down before it started: the job stays pending.
    Stopped,
}

/// What just happened to the job.
#[derive(Debug, Clone)]
pub enum Input {
    /// At the gate: the window decision now.
    Gate(WindowDecision),
    /// Awaiting: the decision recorded so far (`None`: nobody decided yet).
    Check {
        decision: Option<Decision>,
        approve_on_timeout: bool,
        /// Longest wait before looking again (a person may decide any time).
        check: Duration,
        /// The approval was asked for by a maintenance window (`window …`) that is no longer
        /// in force for the rule (it ended, or a reload removed it).
        window_over: bool,
    },
    /// The action at the step ran.
    Ran(Ran),
}

/// Why a job is given back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Retry,
    /// A maintenance window holds it.
    Held,
    /// Awaiting a decision.
    Approval,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Run the action at `step`; record the step first when `record` (a move to another action,
    /// so a crash resumes there).
    Run { step: Step, record: bool },
    /// Give the job back, to be leased again after `delay`, at `step`.
    Nak {
        step: Step,
        delay: Duration,
        why: Wait,
    },
    /// Ask for approval: record `step` (awaiting), store the request, run `notify`, then check.
    Ask { step: Step },
    /// Nobody decided in time: record `on_timeout`'s decision (by `timeout`) unless a person's
    /// came first, then check again.
    TimeOut { approve: bool },
    /// The window that asked for approval is over and the rule has no `approval:` of its own:
    /// record an approval by `window end` unless a person's came first, then check again (as a
    /// `hold` job is released at its window's end).
    WindowEnded,
    /// Finish the job.
    Ack {
        step: Step,
        state: JobState,
        note: Option<String>,
    },
    /// Shutting down: leave the lease to lapse (the job runs at the next start).
    Leave,
}

/// The one transition function.
pub fn next(step: &Step, facts: Facts, input: Input) -> Transition {
    match input {
        Input::Gate(window) => gate(step, facts, window),
        Input::Check {
            decision,
            approve_on_timeout,
            check,
            window_over,
        } => match decision {
            None if window_over && facts.approval.is_none() && step.awaiting.is_some() => {
                Transition::WindowEnded
            }
            _ => check_decision(step, facts, decision, approve_on_timeout, check),
        },
        Input::Ran(ran) => ran_action(step, facts, ran),
    }
}

fn gate(step: &Step, facts: Facts, window: WindowDecision) -> Transition {
    // A hold the job was given back with ends here unless it is held again: the step that
    // goes on without it is recorded, so no node shows the job as held any more.
    let was_held = step.held.is_some();
    let released = Step {
        held: None,
        ..step.clone()
    };
    let ask = |reason: String, timeout: Duration| Transition::Ask {
        step: Step {
            awaiting: Some(Awaiting {
                reason,
                requested_at: facts.now,
                deadline: facts.now + timeout.as_millis() as i64,
            }),
            ..released.clone()
        },
    };
    let hold = |until: i64, by: HeldBy| Transition::Nak {
        step: Step {
            held: Some(by),
            ..step.clone()
        },
        delay: Duration::from_millis((until - facts.now).max(0) as u64),
        why: Wait::Held,
    };
    match window {
        WindowDecision::Hold { until, by } => hold(until, by),
        // A re-run is a person's explicit request after earlier actions ran: never dropped,
        // it waits for the window's end as a held job does.
        WindowDecision::Skip { until, by, .. } if step.asked_again() => hold(until, by),
        WindowDecision::Skip { note, .. } => Transition::Ack {
            step: released,
            state: JobState::Done,
            note: Some(note),
        },
        // A shadow rule asks nobody, a window's approval no more than its own: nothing runs.
        WindowDecision::Approve { .. } if facts.shadow => first_action(&released, facts, was_held),
        WindowDecision::Approve { window } => ask(
            format!("window {window}"),
            facts.approval.unwrap_or(WINDOW_APPROVAL_TIMEOUT),
        ),
        // A shadow rule runs nothing, so nobody is asked to approve it.
        WindowDecision::Open => match facts.approval {
            Some(timeout) if !facts.shadow => ask("rule approval".into(), timeout),
            _ => first_action(&released, facts, was_held),
        },
    }
}

/// Main(0), or done at once for a rule without actions.
fn first_action(step: &Step, facts: Facts, record: bool) -> Transition {
    if facts.actions == 0 {
        return Transition::Ack {
            step: step.clone(),
            state: JobState::Done,
            note: closing_note(facts),
        };
    }
    Transition::Run {
        step: step.clone(),
        record,
    }
}

fn check_decision(
    step: &Step,
    facts: Facts,
    decision: Option<Decision>,
    approve_on_timeout: bool,
    check: Duration,
) -> Transition {
    let Some(awaiting) = &step.awaiting else {
        // Not waiting (a decision already consumed): go on from where it is.
        return first_action(step, facts, false);
    };
    match decision {
        Some(d) if d.approved => {
            let decided = Step {
                awaiting: None,
                decision: Some(d),
                ..step.clone()
            };
            first_action(&decided, facts, true)
        }
        Some(d) => Transition::Ack {
            note: Some(d.summary()),
            step: Step {
                awaiting: None,
                decision: Some(d),
                ..step.clone()
            },
            state: JobState::Done,
        },
        None if facts.now >= awaiting.deadline => Transition::TimeOut {
            approve: approve_on_timeout,
        },
        None => Transition::Nak {
            step: step.clone(),
            delay: Duration::from_millis((awaiting.deadline - facts.now) as u64).min(check),
            why: Wait::Approval,
        },
    }
}

fn ran_action(step: &Step, facts: Facts, ran: Ran) -> Transition {
    let len = match step.phase {
        Phase::Main => facts.actions,
        Phase::OnFailure => facts.on_failure,
    };
    let is_last = step.index as usize + 1 >= len;
    match ran {
        Ran::Stopped => Transition::Leave,
        Ran::Done(out) => {
            let past = noted(step, step.attempts + 1);
            let next = Step {
                index: step.index + 1,
                // The next `on_failure` action counts on from its earlier runs' attempts.
                attempts: match step.phase {
                    Phase::Main => 0,
                    Phase::OnFailure => earlier(&past, step.index + 1),
                },
                tries: 0,
                previous: (!is_last).then(|| out.previous()),
                on_failure_attempts: past,
                ..step.clone()
            };
            if is_last {
                let (state, note) = closing(facts, &next);
                return Transition::Ack {
                    step: next,
                    state,
                    note,
                };
            }
            Transition::Run {
                step: next,
                record: true,
            }
        }
        Ran::Retry(_, delay) => Transition::Nak {
            step: Step {
                attempts: step.attempts + 1,
                tries: step.tries + 1,
                ..step.clone()
            },
            delay,
            why: Wait::Retry,
        },
        Ran::Failed(out, failure) => failed(step, facts, out, failure),
    }
}

fn failed(step: &Step, facts: Facts, out: Outcome, failure: Value) -> Transition {
    let attempts = step.attempts + 1;
    match step.phase {
        Phase::Main if facts.on_failure == 0 => Transition::Ack {
            step: Step {
                attempts,
                tries: 0,
                failed_at: Some((step.index, attempts)),
                ..step.clone()
            },
            state: JobState::Failed,
            note: out.error,
        },
        Phase::Main => Transition::Run {
            step: Step {
                phase: Phase::OnFailure,
                index: 0,
                // A re-run's `on_failure` goes on from the first run's attempts.
                attempts: earlier(&step.on_failure_attempts, 0),
                tries: 0,
                previous: None,
                failure: Some(failure),
                // A re-run resumes the main action, with what it had before.
                failed_at: Some((step.index, attempts)),
                failed_previous: step.previous.clone(),
                ..step.clone()
            },
            record: true,
        },
        Phase::OnFailure => Transition::Ack {
            note: failure_error(step),
            step: Step {
                attempts,
                on_failure_attempts: noted(step, attempts),
                ..step.clone()
            },
            state: JobState::Failed,
        },
    }
}

/// The attempts of each `on_failure` action so far, with those of the one `step` is at
/// (`attempts`, this one included) when it is in `on_failure`.
fn noted(step: &Step, attempts: u32) -> Vec<u32> {
    let mut past = step.on_failure_attempts.clone();
    if step.phase == Phase::OnFailure {
        let i = step.index as usize;
        if past.len() <= i {
            past.resize(i + 1, 0);
        }
        past[i] = attempts;
    }
    past
}

/// The attempts `on_failure` action `index` had in earlier runs of the job.
fn earlier(past: &[u32], index: u32) -> u32 {
    past.get(index as usize).copied().unwrap_or(0)
}

/// How a job past the last action of its part closes: done after the main actions (noted as
/// shadow for a shadow rule); failed, with the main action's error, after `on_failure`.
fn closing(facts: Facts, step: &Step) -> (JobState, Option<String>) {
    match step.phase {
        Phase::Main => (JobState::Done, closing_note(facts)),
        Phase::OnFailure => (JobState::Failed, failure_error(step)),
    }
}

fn closing_note(facts: Facts) -> Option<String> {
    facts.shadow.then(|| crate::domain::SHADOW_NOTE.to_string())
}

/// The error a job that failed for good closes with.
fn failure_error(step: &Step) -> Option<String> {
    step.failure
        .as_ref()
        .and_then(|f| f["error"].as_str().map(str::to_string))
}

/// The step a re-run of a dead letter starts at: the action that failed (`resume`: the rule is
/// unchanged, or the version matched was asked for), with a fresh retry budget and what it had
/// before; or the first action of a new generation (the rule changed: run ids never repeat,
/// and the gate applies again).
pub fn rerun(step: &Step, resume: bool) -> Step {
    let reruns = step.reruns + 1;
    if !resume {
        return Step {
            generation: step.generation + 1,
            reruns,
            ..Step::default()
        };
    }
    let (index, attempts) = step.failed_at.unwrap_or((step.index, step.attempts));
    Step {
        index,
        attempts,
        previous: match step.phase {
            Phase::Main => step.previous.clone(),
            Phase::OnFailure => step.failed_previous.clone(),
        },
        generation: step.generation,
        reruns,
        decision: step.decision.clone(),
        // Same run ids: `on_failure`, if it runs again, counts its attempts on.
        on_failure_attempts: step.on_failure_attempts.clone(),
        ..Step::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_000_000;

    fn facts() -> Facts {
        Facts {
            actions: 2,
            on_failure: 1,
            shadow: false,
            approval: None,
            now: NOW,
        }
    }

    fn at(phase: Phase, index: u32) -> Step {
        Step {
            phase,
            index,
            ..Step::default()
        }
    }

    fn ok(v: Value) -> Ran {
        Ran::Done(Outcome {
            ok: true,
            result: Some(v),
            ..Outcome::default()
        })
    }

    fn decision(approved: bool, by: &str) -> Decision {
        Decision {
            approved,
            by: by.into(),
            at: NOW,
            comment: Some("ok by change board".into()),
            reason: "rule approval".into(),
        }
    }

    fn awaiting(deadline: i64) -> Step {
        Step {
            awaiting: Some(Awaiting {
                reason: "rule approval".into(),
                requested_at: NOW - 10,
                deadline,
            }),
            ..Step::default()
        }
    }

    fn check(d: Option<Decision>, approve_on_timeout: bool) -> Input {
        Input::Check {
            decision: d,
            approve_on_timeout,
            check: Duration::from_secs(2),
            window_over: false,
        }
    }

    #[test]
    fn places() {
        let table = [
            (Step::default(), Place::Gate),
            (at(Phase::Main, 1), Place::Action),
            (at(Phase::OnFailure, 0), Place::Action),
            (
                Step {
                    attempts: 1,
                    ..Step::default()
                },
                Place::Action,
            ),
            (awaiting(NOW), Place::Awaiting),
            (
                Step {
                    decision: Some(decision(true, "ann")),
                    ..Step::default()
                },
                Place::Action,
            ),
        ];
        for (step, want) in table {
            assert_eq!(place(&step), want, "{step:?}");
        }
    }

    #[test]
    fn the_gate_decides_windows_first_then_approval() {
        let with_approval = Facts {
            approval: Some(Duration::from_secs(60)),
            ..facts()
        };
        let pending = Step::default();
        let run0 = Transition::Run {
            step: pending.clone(),
            record: false,
        };
        let asked = |reason: &str, ms: i64| Transition::Ask {
            step: Step {
                awaiting: Some(Awaiting {
                    reason: reason.into(),
                    requested_at: NOW,
                    deadline: NOW + ms,
                }),
                ..Step::default()
            },
        };
        let hold = WindowDecision::Hold {
            until: NOW + 5000,
            by: freeze(),
        };
        let skip = WindowDecision::Skip {
            note: "skipped: freeze".into(),
            until: NOW + 5000,
            by: freeze(),
        };
        let approve = WindowDecision::Approve {
            window: "freeze".into(),
        };
        let held = Transition::Nak {
            step: Step {
                held: Some(freeze()),
                ..pending.clone()
            },
            delay: Duration::from_secs(5),
            why: Wait::Held,
        };
        let skipped = Transition::Ack {
            step: pending.clone(),
            state: JobState::Done,
            note: Some("skipped: freeze".into()),
        };
        let table = [
            (facts(), WindowDecision::Open, run0.clone()),
            (
                with_approval,
                WindowDecision::Open,
                asked("rule approval", 60_000),
            ),
            (facts(), hold.clone(), held.clone()),
            (with_approval, hold, held),
            (facts(), skip.clone(), skipped.clone()),
            (with_approval, skip, skipped),
            (facts(), approve.clone(), asked("window freeze", 3_600_000)),
            (with_approval, approve, asked("window freeze", 60_000)),
            // Shadow: nothing would run, nobody is asked.
            (
                Facts {
                    shadow: true,
                    ..with_approval
                },
                WindowDecision::Open,
                run0,
            ),
            // No actions: done at once.
            (
                Facts {
                    actions: 0,
                    ..facts()
                },
                WindowDecision::Open,
                Transition::Ack {
                    step: pending.clone(),
                    state: JobState::Done,
                    note: None,
                },
            ),
        ];
        for (f, w, want) in table {
            assert_eq!(
                next(&pending, f, Input::Gate(w.clone())),
                want,
                "{w:?} {f:?}"
            );
        }
        // A hold whose end has passed: looked at again at once.
        let past = WindowDecision::Hold {
            until: NOW - 1,
            by: freeze(),
        };
        assert!(matches!(
            next(&pending, facts(), Input::Gate(past)),
            Transition::Nak { delay, why: Wait::Held, .. } if delay.is_zero()
        ));
    }

    /// The `freeze` window (during: hold), ending a minute from now.
    fn freeze() -> HeldBy {
        HeldBy {
            window: "freeze".into(),
            during: "hold".into(),
            until: NOW + 60_000,
        }
    }

    /// A held job's step records the hold it is given back with (so every node shows it as
    /// held, not only the one whose gate held it), and the gate that lets it go clears it in a
    /// step that is recorded before its first action runs (so no node shows it held while it
    /// runs, nor once it is done or awaiting approval).
    #[test]
    fn the_hold_is_recorded_in_the_step_and_cleared_when_the_gate_lets_go() {
        let hold = WindowDecision::Hold {
            until: NOW + 5000,
            by: freeze(),
        };
        let held = match next(&Step::default(), facts(), Input::Gate(hold.clone())) {
            Transition::Nak {
                step,
                why: Wait::Held,
                ..
            } => step,
            other => panic!("{other:?}"),
        };
        assert_eq!(held.held, Some(freeze()));
        assert_eq!(place(&held), Place::Gate, "still at the gate");
        // Held again at the next look: still recorded.
        assert!(matches!(
            next(&held, facts(), Input::Gate(hold)),
            Transition::Nak { step, .. } if step.held == Some(freeze())
        ));
        // The window is over: it runs, the cleared step recorded first.
        assert_eq!(
            next(&held, facts(), Input::Gate(WindowDecision::Open)),
            Transition::Run {
                step: Step::default(),
                record: true,
            }
        );
        // Never held: nothing to record.
        assert_eq!(
            next(&Step::default(), facts(), Input::Gate(WindowDecision::Open)),
            Transition::Run {
                step: Step::default(),
                record: false,
            }
        );
        // Turned into an approval, skipped, or a rule's approval: no longer held.
        let with_approval = Facts {
            approval: Some(Duration::from_secs(60)),
            ..facts()
        };
        let approve = WindowDecision::Approve {
            window: "freeze".into(),
        };
        let skip = WindowDecision::Skip {
            note: "skipped: freeze".into(),
            until: NOW + 5000,
            by: freeze(),
        };
        for (f, w) in [
            (facts(), approve),
            (facts(), skip),
            (with_approval, WindowDecision::Open),
        ] {
            match next(&held, f, Input::Gate(w.clone())) {
                Transition::Ask { step } | Transition::Ack { step, .. } => {
                    assert_eq!(step.held, None, "{w:?}")
                }
                other => panic!("{w:?}: {other:?}"),
            }
        }
        // An old record without the field reads as not held.
        let old: Step = serde_json::from_str(r#"{"phase":"main","index":0}"#).unwrap();
        assert_eq!(old.held, None);
    }

    #[test]
    fn a_rerun_meeting_a_skip_window_is_held_not_dropped() {
        // A re-run on a changed rule starts a new generation at the gate.
        let rerun_step = rerun(&Step::default(), false);
        let skip = WindowDecision::Skip {
            note: "skipped: freeze".into(),
            until: NOW + 7000,
            by: freeze(),
        };
        assert_eq!(
            next(&rerun_step, facts(), Input::Gate(skip.clone())),
            Transition::Nak {
                step: Step {
                    held: Some(freeze()),
                    ..rerun_step.clone()
                },
                delay: Duration::from_secs(7),
                why: Wait::Held,
            }
        );
        // Once the window is over, it runs.
        assert_eq!(
            next(&rerun_step, facts(), Input::Gate(WindowDecision::Open)),
            Transition::Run {
                step: rerun_step.clone(),
                record: false,
            }
        );
        // A first run is still skipped.
        assert!(matches!(
            next(&Step::default(), facts(), Input::Gate(skip)),
            Transition::Ack { state: JobState::Done, note: Some(ref n), .. } if n.starts_with("skipped")
        ));
    }

    #[test]
    fn a_resumed_rerun_of_a_job_that_never_started_is_held_by_a_skip_window() {
        // Dead before its first action ran (its leases lost, or its event gone): Main(0), no
        // attempt. Re-run on the same rule, it resumes there and meets the gate again.
        let dead = Step::default();
        let resumed = rerun(&dead, true);
        assert_eq!(place(&resumed), Place::Gate);
        assert_eq!(resumed.generation, 0);
        let skip = WindowDecision::Skip {
            note: "skipped: freeze".into(),
            until: NOW + 3000,
            by: freeze(),
        };
        assert_eq!(
            next(&resumed, facts(), Input::Gate(skip)),
            Transition::Nak {
                step: Step {
                    held: Some(freeze()),
                    ..resumed.clone()
                },
                delay: Duration::from_secs(3),
                why: Wait::Held,
            },
            "a person asked for it: held, not dropped as skipped"
        );
        // Each re-run counts, of either kind.
        assert_eq!(rerun(&resumed, false).reruns, 2);
    }

    #[test]
    fn a_shadow_rule_under_an_approve_window_asks_nobody() {
        let shadow = Facts {
            shadow: true,
            ..facts()
        };
        let approve = WindowDecision::Approve {
            window: "m-ask".into(),
        };
        assert_eq!(
            next(&Step::default(), shadow, Input::Gate(approve.clone())),
            Transition::Run {
                step: Step::default(),
                record: false,
            }
        );
        assert!(matches!(
            next(&Step::default(), facts(), Input::Gate(approve)),
            Transition::Ask { .. }
        ));
    }

    #[test]
    fn a_window_approval_whose_window_is_over_goes_on() {
        let waiting = Step {
            awaiting: Some(Awaiting {
                reason: "window m-ask".into(),
                requested_at: NOW - 10,
                deadline: NOW + 60_000,
            }),
            ..Step::default()
        };
        let over = |d: Option<Decision>| Input::Check {
            decision: d,
            approve_on_timeout: false,
            check: Duration::from_secs(2),
            window_over: true,
        };
        assert_eq!(next(&waiting, facts(), over(None)), Transition::WindowEnded);
        // A person's decision stands.
        let rejected = decision(false, "bob");
        assert!(matches!(
            next(&waiting, facts(), over(Some(rejected))),
            Transition::Ack {
                state: JobState::Done,
                ..
            }
        ));
        // The rule's own approval still applies: it keeps waiting.
        let own = Facts {
            approval: Some(Duration::from_secs(60)),
            ..facts()
        };
        assert!(matches!(
            next(&waiting, own, over(None)),
            Transition::Nak {
                why: Wait::Approval,
                ..
            }
        ));
        // Still in force: waits.
        assert!(matches!(
            next(&waiting, facts(), check(None, false)),
            Transition::Nak {
                why: Wait::Approval,
                ..
            }
        ));
    }

    #[test]
    fn awaiting_moves_on_a_decision_the_deadline_or_waits() {
        let waiting = awaiting(NOW + 10_000);
        let approved = decision(true, "ann");
        let rejected = decision(false, "bob");
        let go = Transition::Run {
            step: Step {
                decision: Some(approved.clone()),
                ..Step::default()
            },
            record: true,
        };
        let refused = Transition::Ack {
            step: Step {
                decision: Some(rejected.clone()),
                ..Step::default()
            },
            state: JobState::Done,
            note: Some(rejected.summary()),
        };
        let table = [
            (waiting.clone(), check(Some(approved.clone()), false), go),
            (
                waiting.clone(),
                check(Some(rejected.clone()), true),
                refused,
            ),
            (
                waiting.clone(),
                check(None, false),
                Transition::Nak {
                    step: waiting.clone(),
                    delay: Duration::from_secs(2),
                    why: Wait::Approval,
                },
            ),
            (
                awaiting(NOW + 500),
                check(None, false),
                Transition::Nak {
                    step: awaiting(NOW + 500),
                    delay: Duration::from_millis(500),
                    why: Wait::Approval,
                },
            ),
            (
                awaiting(NOW),
                check(None, false),
                Transition::TimeOut { approve: false },
            ),
            (
                awaiting(NOW - 1),
                check(None, true),
                Transition::TimeOut { approve: true },
            ),
        ];
        for (step, input, want) in table {
            assert_eq!(next(&step, facts(), input.clone()), want, "{input:?}");
        }
        assert!(rejected.summary().starts_with("rejected by bob at "));
        let timed = Decision {
            by: "timeout".into(),
            comment: None,
            ..decision(false, "")
        };
        assert!(timed.summary().starts_with("rejected on timeout at "));
    }

    #[test]
    fn actions_advance_retry_fail_over_and_close() {
        let out = |e: &str| Outcome::failed(e);
        let failure = json!({"error": "boom"});
        // Main(0) ok: Main(1), recorded, with `previous`.
        let t = next(
            &at(Phase::Main, 0),
            facts(),
            Input::Ran(ok(json!({"n": 1}))),
        );
        assert_eq!(
            t,
            Transition::Run {
                step: Step {
                    index: 1,
                    previous: Some(json!({"n": 1})),
                    ..Step::default()
                },
                record: true
            }
        );
        // Last ok: done (noted in shadow).
        let last = at(Phase::Main, 1);
        let done = |note: Option<String>| Transition::Ack {
            step: at(Phase::Main, 2),
            state: JobState::Done,
            note,
        };
        assert_eq!(next(&last, facts(), Input::Ran(ok(json!(1)))), done(None));
        let shadow = Facts {
            shadow: true,
            ..facts()
        };
        assert_eq!(
            next(&last, shadow, Input::Ran(ok(json!(1)))),
            done(Some(crate::domain::SHADOW_NOTE.into()))
        );
        // Retry: attempts and tries up, same action.
        let t = next(
            &last,
            facts(),
            Input::Ran(Ran::Retry(out("503"), Duration::from_secs(3))),
        );
        assert_eq!(
            t,
            Transition::Nak {
                step: Step {
                    attempts: 1,
                    tries: 1,
                    ..last.clone()
                },
                delay: Duration::from_secs(3),
                why: Wait::Retry
            }
        );
        // Failed for good with on_failure: OnFailure(0) with `failure`, recorded.
        let t = next(
            &last,
            facts(),
            Input::Ran(Ran::Failed(out("boom"), failure.clone())),
        );
        assert_eq!(
            t,
            Transition::Run {
                step: Step {
                    phase: Phase::OnFailure,
                    failure: Some(failure.clone()),
                    failed_at: Some((1, 1)),
                    ..Step::default()
                },
                record: true
            }
        );
        // Without on_failure: a dead letter with the action's error.
        let none = Facts {
            on_failure: 0,
            ..facts()
        };
        let t = next(
            &last,
            none,
            Input::Ran(Ran::Failed(out("boom"), failure.clone())),
        );
        assert_eq!(
            t,
            Transition::Ack {
                step: Step {
                    attempts: 1,
                    failed_at: Some((1, 1)),
                    ..last.clone()
                },
                state: JobState::Failed,
                note: Some("boom".into())
            }
        );
        // on_failure done, or failed too: a dead letter with the main action's error.
        let in_failure = Step {
            phase: Phase::OnFailure,
            failure: Some(failure.clone()),
            ..Step::default()
        };
        let t = next(&in_failure, facts(), Input::Ran(ok(json!(1))));
        assert!(
            matches!(t, Transition::Ack { state: JobState::Failed, note: Some(ref n), .. } if n == "boom")
        );
        let t = next(
            &in_failure,
            facts(),
            Input::Ran(Ran::Failed(out("again"), json!({}))),
        );
        assert!(
            matches!(t, Transition::Ack { state: JobState::Failed, note: Some(ref n), .. } if n == "boom")
        );
        // Shutting down: the lease lapses.
        assert_eq!(
            next(&last, facts(), Input::Ran(Ran::Stopped)),
            Transition::Leave
        );
    }

    #[test]
    fn an_approved_job_keeps_its_decision_through_its_actions() {
        let approved = decision(true, "ann");
        let step = Step {
            decision: Some(approved.clone()),
            ..Step::default()
        };
        let Transition::Run { step, .. } = next(&step, facts(), Input::Ran(ok(json!(1)))) else {
            panic!("runs on");
        };
        assert_eq!(step.decision, Some(approved));
        assert_eq!(place(&step), Place::Action);
    }

    /// An action that succeeded after retries hands the next one a fresh count: its
    /// attempts and its retry budget start at nothing.
    #[test]
    fn the_next_action_starts_with_fresh_attempts_after_a_retried_one() {
        let retried = Step {
            attempts: 2,
            tries: 2,
            ..at(Phase::Main, 0)
        };
        let Transition::Run { step, .. } = next(&retried, facts(), Input::Ran(ok(json!(1)))) else {
            panic!("runs on");
        };
        assert_eq!((step.index, step.attempts, step.tries), (1, 0, 0));
    }

    /// `on_failure` starts with a fresh retry budget and nothing as `previous` (the main
    /// actions' `previous` is kept for a re-run of the failed one); when it fails too, the dead
    /// letter counts that attempt.
    #[test]
    fn on_failure_starts_afresh_and_its_last_attempt_is_counted() {
        let out = |e: &str| Outcome::failed(e);
        let failing = Step {
            attempts: 3,
            tries: 3,
            previous: Some(json!("action 0's result")),
            ..at(Phase::Main, 1)
        };
        let t = next(
            &failing,
            facts(),
            Input::Ran(Ran::Failed(out("boom"), json!({"error": "boom"}))),
        );
        let Transition::Run { step, record: true } = t else {
            panic!("on_failure: {t:?}");
        };
        assert_eq!(
            (step.phase, step.index, step.attempts, step.tries),
            (Phase::OnFailure, 0, 0, 0)
        );
        assert_eq!(step.previous, None, "on_failure(0) has no `previous`");
        assert_eq!(step.failed_previous, Some(json!("action 0's result")));
        assert_eq!(step.failed_at, Some((1, 4)));
        // on_failure(0) fails for good at its second attempt: the dead letter says 2.
        let retried = Step {
            attempts: 1,
            tries: 1,
            ..step
        };
        let t = next(
            &retried,
            facts(),
            Input::Ran(Ran::Failed(out("again"), json!({}))),
        );
        let Transition::Ack {
            step,
            state: JobState::Failed,
            ..
        } = t
        else {
            panic!("dead letter: {t:?}");
        };
        assert_eq!((step.phase, step.attempts), (Phase::OnFailure, 2));
    }

    /// A dead letter re-run that fails again runs `on_failure` under the same run ids, its
    /// attempts counting on from the first run's: `attempt 2`, not `attempt 1` again (the
    /// history could not tell the two apart). A new generation starts afresh (new run ids).
    #[test]
    fn a_reruns_on_failure_counts_its_attempts_on() {
        let out = |e: &str| Outcome::failed(e);
        let two = Facts {
            on_failure: 2,
            ..facts()
        };
        let failing = |step: &Step| {
            let t = next(step, two, Input::Ran(Ran::Failed(out("boom"), json!({}))));
            let Transition::Run { step, .. } = t else {
                panic!("on_failure: {t:?}")
            };
            step
        };
        let done = |step: &Step| match next(step, two, Input::Ran(ok(json!(1)))) {
            Transition::Run { step, .. } | Transition::Ack { step, .. } => step,
            t => panic!("{t:?}"),
        };
        // First run: action 1 fails for good; on_failure 0 ok, on_failure 1 ok after a retry.
        let first = failing(&at(Phase::Main, 1));
        assert_eq!(
            (first.phase, first.index, first.attempts),
            (Phase::OnFailure, 0, 0)
        );
        let second = done(&first);
        assert_eq!((second.index, second.attempts), (1, 0));
        let retried = Step {
            attempts: 1,
            ..second
        };
        let dead = done(&retried);
        assert_eq!(dead.on_failure_attempts, vec![1, 2]);
        // The re-run fails again: on_failure 0 is at its second attempt, 1 at its third.
        let again = failing(&rerun(&dead, true));
        assert_eq!(
            (again.phase, again.index, again.attempts),
            (Phase::OnFailure, 0, 1)
        );
        let after = done(&again);
        assert_eq!((after.index, after.attempts), (1, 2));
        assert_eq!(done(&after).on_failure_attempts, vec![2, 3]);
        // on_failure failing for good is noted too.
        let failed = match next(&after, two, Input::Ran(Ran::Failed(out("x"), json!({})))) {
            Transition::Ack { step, .. } => step,
            t => panic!("{t:?}"),
        };
        assert_eq!(failed.on_failure_attempts, vec![2, 3]);
        // A re-run on a changed rule: new run ids, counted from 1.
        let fresh = failing(&Step {
            index: 1,
            ..rerun(&dead, false)
        });
        assert_eq!(fresh.attempts, 0);
    }

    #[test]
    fn reruns_resume_or_start_a_new_generation() {
        let dead = Step {
            phase: Phase::OnFailure,
            index: 0,
            attempts: 1,
            previous: Some(json!("on_failure's")),
            failed_previous: Some(json!("main's")),
            failed_at: Some((1, 3)),
            decision: Some(decision(true, "ann")),
            generation: 2,
            ..Step::default()
        };
        let resumed = rerun(&dead, true);
        assert_eq!(
            (
                resumed.phase,
                resumed.index,
                resumed.attempts,
                resumed.tries
            ),
            (Phase::Main, 1, 3, 0)
        );
        assert_eq!(resumed.previous, Some(json!("main's")));
        assert_eq!(resumed.generation, 2);
        assert_eq!(
            resumed.decision, dead.decision,
            "an approval given stays given"
        );
        assert_eq!(place(&resumed), Place::Action, "no second approval");
        let fresh = rerun(&dead, false);
        assert_eq!(
            fresh,
            Step {
                generation: 3,
                reruns: 1,
                ..Step::default()
            }
        );
        assert_eq!(place(&fresh), Place::Gate, "a changed rule asks again");
    }
}
