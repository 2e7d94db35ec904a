//! The rest of a ticket's life: `open_ticket` with `do: comment`, `resolve` or `close` acts on
//! the ticket opened under the same `dedup_key` (recorded in the state store by `ticket`), each
//! system by its own transitions: GitHub and GitLab close the issue, Jira moves it along a
//! workflow transition into its "done" category, ServiceNow sets the incident's state
//! (6 Resolved, 7 Closed) with a close code and notes. A resolved or closed ticket is forgotten,
//! so the next firing opens a new one.

use serde_json::{Value, json};

use super::outbound::urlencode;
use super::ticket::{CLAIM_WAIT, Step, System, Ticket, TicketCall, TicketState};
use super::{Outcome, RunContext};
use crate::store::{StateStore, StoreError};

/// ServiceNow's close code unless `close_code` is given.
const DEFAULT_CLOSE_CODE: &str = "Solution provided";

fn skipped(why: &str) -> Outcome {
    Outcome {
        ok: true,
        result: Some(json!({"skipped": why})),
        ..Outcome::default()
    }
}

impl TicketCall {
    /// `comment`, `resolve` or `close` on the open ticket of `key`; nothing (a success saying
    /// why) when no ticket is open for it.
    pub(super) async fn follow_up(
        &self,
        key: &str,
        run: &RunContext,
        state: &dyn StateStore,
    ) -> Outcome {
        let key = format!("ticket/{key}");
        let transient = |e: StoreError| Outcome {
            retryable: true,
            ..Outcome::failed(e.to_string())
        };
        let waited = std::time::Instant::now();
        loop {
            let (text, rev) = match state.get(&key).await {
                Ok(Some(c)) => c,
                Ok(None) => return skipped("no ticket is open for this dedup key"),
                Err(e) => return transient(e),
            };
            match serde_json::from_str::<TicketState>(&text) {
                Ok(TicketState::Open(t)) if t.system == self.system.name() => {
                    match self.still_open(&t, run).await {
                        Err(o) => return o,
                        Ok(false) => {
                            let _ = state.delete(&key, Some(rev)).await;
                            return skipped("the ticket of this dedup key is closed already");
                        }
                        Ok(true) => {}
                    }
                    let out = self.comment(&t, run).await;
                    if !out.ok || self.step == Step::Comment {
                        return out;
                    }
                    let mut out = self.transition(&t, run).await;
                    if out.ok {
                        // Forgotten: the next firing opens a new ticket.
                        if let Err(e) = state.delete(&key, Some(rev)).await {
                            tracing::warn!(error = %e, "ticket moved but its dedup key is still recorded; the next firing checks the ticket and opens a new one");
                        }
                        out.result = Some(json!({
                            "ticket_id": t.id, "url": t.url, "system": t.system,
                            "commented": true,
                            "state": if self.step == Step::Resolve { "resolved" } else { "closed" },
                        }));
                    }
                    return out;
                }
                Ok(TicketState::Claim { run: other }) => {
                    if waited.elapsed() > CLAIM_WAIT {
                        return Outcome {
                            retryable: true,
                            ..Outcome::failed(format!(
                                "run {other} is still opening the ticket for this dedup key"
                            ))
                        };
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                _ => return skipped("no ticket of this system is open for this dedup key"),
            }
        }
    }

    /// Moves the ticket to resolved or closed, the system's way.
    async fn transition(&self, t: &Ticket, run: &RunContext) -> Outcome {
        let p = self.project();
        let note = format!("{}\n\n{}", self.title, self.body);
        let call = match self.system {
            System::Github => self.call(
                "PATCH",
                &format!("/repos/{p}/issues/{}", t.id),
                Some(json!({"state": "closed", "state_reason": "completed"})),
                &[200],
            ),
            System::Gitlab => self.call(
                "PUT",
                &format!("/api/v4/projects/{}/issues/{}", urlencode(p), t.id),
                Some(json!({"state_event": "close"})),
                &[200],
            ),
            System::Jira => return self.jira_transition(t, run).await,
            System::Servicenow => self.call(
                "PATCH",
                &format!("/api/now/table/incident/{}", t.id),
                Some(json!({
                    "state": if self.step == Step::Resolve { "6" } else { "7" },
                    "close_code": self.close_code.as_deref().unwrap_or(DEFAULT_CLOSE_CODE),
                    "close_notes": note,
                })),
                &[200],
            ),
        };
        call.execute(run).await
    }

    /// Jira: the available transitions, the one into the "done" category whose name
    /// says what was asked (`Resolve…`, `Close…`) or else the first into that category.
    async fn jira_transition(&self, t: &Ticket, run: &RunContext) -> Outcome {
        let path = format!("/rest/api/3/issue/{}/transitions", t.id);
        let listed = self.call("GET", &path, None, &[200]).execute(run).await;
        if !listed.ok {
            return listed;
        }
        let v: Value = serde_json::from_str(&listed.stdout).unwrap_or(Value::Null);
        let want = if self.step == Step::Resolve {
            "resolve"
        } else {
            "close"
        };
        let done: Vec<&Value> = v["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|tr| tr["to"]["statusCategory"]["key"] == "done")
            .collect();
        let named = |tr: &&&Value| {
            [&tr["name"], &tr["to"]["name"]]
                .iter()
                .any(|n| n.as_str().unwrap_or("").to_lowercase().contains(want))
        };
        let Some(chosen) = done.iter().find(named).or(done.first()) else {
            return Outcome::failed(format!(
                "Jira issue {} has no transition into a done status from where it is",
                t.id
            ));
        };
        let id = chosen["id"].as_str().unwrap_or_default();
        self.call(
            "POST",
            &path,
            Some(json!({"transition": {"id": id}})),
            &[204],
        )
        .execute(run)
        .await
    }
}
