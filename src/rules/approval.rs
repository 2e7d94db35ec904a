//! A rule's `approval:` as compiled: its jobs wait for a person's decision before their first
//! action (docs/change-control.md). The waiting itself is the engine's (`engine::approval`).

use std::time::Duration;

use crate::actions::Action;

/// What a rule's `approval:` asks for: how long to wait, what happens then, who may decide and
/// whom to tell.
#[derive(Debug)]
pub struct Approval {
    pub timeout: Duration,
    /// `on_timeout: approve` (else the job is rejected when nobody decided in time).
    pub approve_on_timeout: bool,
    /// Names of the users who may decide; empty: every approver and admin.
    pub approvers: Vec<String>,
    /// Run when approval is requested (`approval` in their templates).
    pub notify: Vec<Action>,
}

impl Approval {
    /// What goes into the rule's fingerprint (a change of any of it is a new rule version).
    pub fn describe(&self) -> String {
        format!(
            "approval {:?} approve_on_timeout={} approvers={:?} notify={:?}",
            self.timeout, self.approve_on_timeout, self.approvers, self.notify
        )
    }

    /// `on_timeout` as written.
    pub fn on_timeout(&self) -> &'static str {
        if self.approve_on_timeout {
            "approve"
        } else {
            "reject"
        }
    }
}
