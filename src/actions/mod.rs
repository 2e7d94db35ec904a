//! Actions: what a matched rule does. Each kind is a compiled config struct that its own
//! `compile` builds at load from its rulebook spec (`crate::rulebook`), and that renders against
//! an event and then executes. Nothing here imports `rules`.
//!
//! Rendering is separate from executing so `rulehook test` can show exactly what would run
//! without running it, and so the history keeps what was actually run.

pub mod ansible;
pub mod awx;
pub mod event;
pub mod groups;
pub mod http;
pub mod log;
pub mod notify;
pub mod outbound;
pub mod script;
pub mod ticket;
pub mod ticket_lifecycle;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::templates::Templates;

/// A compiled action of a rule. The larger actions are boxed: a rule's actions are held for
/// as long as its rule set serves (10,000 one-action rules: 400 bytes each unboxed, 64 now).
#[derive(Debug)]
pub enum Action {
    RunScript(Box<script::ScriptAction>),
    Log(log::LogAction),
    /// `post_webhook`, `github_dispatch`, `github_workflow`, `gitlab_pipeline`, `notify`.
    Http(Box<outbound::HttpAction>),
    OpenTicket(Box<ticket::TicketAction>),
    PostEvent(event::PostEventAction),
    RunPlaybook(Box<ansible::PlaybookAction>),
    /// `run_job_template`, `run_workflow_template`.
    Awx(Box<awx::AwxAction>),
}

/// An action with every template rendered: the exact thing that runs (and is recorded).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Rendered {
    RunScript(script::ScriptRun),
    Log(log::LogLine),
    Http(http::HttpCall),
    OpenTicket(ticket::TicketCall),
    PostEvent(event::PostEvent),
    RunPlaybook(ansible::PlaybookRun),
    Awx(awx::AwxLaunch),
}

pub use crate::domain::Outcome;

/// Backoff with jitter before retry `attempt` (1-based), at least what the server asked for.
pub fn retry_delay(attempt: u32, asked: Option<Duration>) -> Duration {
    let base = backoff(attempt);
    let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
    let ours = base + jitter;
    match asked {
        Some(a) => a
            .min(Duration::from_secs(3600))
            .max(ours.min(Duration::from_millis(100))),
        None => ours,
    }
}

/// Values a run needs besides the rendered action: identity for the environment and input.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    pub event_id: String,
    pub source: String,
    pub rule: String,
    /// `{"event": ..., "meta": ...}` as scripts receive it on stdin.
    pub input: Value,
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RunScript(_) => "run_script",
            Action::Log(_) => "log",
            Action::Http(h) => h.kind,
            Action::OpenTicket(_) => "open_ticket",
            Action::PostEvent(_) => "post_event",
            Action::RunPlaybook(_) => "run_playbook",
            Action::Awx(a) => a.kind(),
        }
    }

    /// How many times a failed attempt is tried again.
    pub fn retries(&self) -> u32 {
        match self {
            Action::RunScript(s) => s.retries,
            Action::Http(h) => h.retries,
            Action::OpenTicket(t) => t.retries,
            Action::RunPlaybook(p) => p.retries,
            Action::Awx(a) => a.retries,
            Action::Log(_) | Action::PostEvent(_) => 0,
        }
    }

    /// Whether its effects stay inside rulehook (its attempt is recorded after the fact).
    pub fn in_process(&self) -> bool {
        matches!(self, Action::Log(_) | Action::PostEvent(_))
    }

    /// Whether it reads the event as a document (`RunContext::input`): scripts on stdin, the
    /// Ansible actions as `ansible_eda`.
    pub fn reads_input(&self) -> bool {
        matches!(
            self,
            Action::RunScript(_) | Action::RunPlaybook(_) | Action::Awx(_)
        )
    }

    pub fn render(
        &self,
        templates: &Templates,
        ctx: &minijinja::Value,
    ) -> Result<Rendered, String> {
        match self {
            Action::RunScript(a) => a.render(templates, ctx).map(Rendered::RunScript),
            Action::Log(a) => a.render(templates, ctx).map(Rendered::Log),
            Action::Http(a) => a.render(templates, ctx).map(Rendered::Http),
            Action::OpenTicket(a) => a.render(templates, ctx).map(Rendered::OpenTicket),
            Action::PostEvent(a) => a.render(templates, ctx).map(Rendered::PostEvent),
            Action::RunPlaybook(a) => a.render(templates, ctx).map(Rendered::RunPlaybook),
            Action::Awx(a) => a.render(templates, ctx).map(Rendered::Awx),
        }
    }
}

impl Rendered {
    /// Runs it. `post_event` is the engine's to carry out; here it only reports that.
    pub async fn execute(&self, run: &RunContext, state: &dyn crate::store::StateStore) -> Outcome {
        match self {
            Rendered::RunScript(s) => s.execute(run).await,
            Rendered::Log(l) => l.execute(run),
            Rendered::Http(h) => h.execute(run).await,
            Rendered::OpenTicket(t) => t.execute(run, state).await,
            Rendered::PostEvent(_) => Outcome::failed("post_event runs in the engine"),
            Rendered::RunPlaybook(p) => p.execute(run, state).await,
            Rendered::Awx(a) => a.execute(run).await,
        }
    }

    /// What the history keeps: credentials masked, and every value from a secret
    /// (`crate::secrets::mask`).
    pub fn for_history(&self) -> Value {
        let shown = match self {
            Rendered::Http(h) => Rendered::Http(h.masked()),
            other => other.clone(),
        };
        let mut v = serde_json::to_value(shown).unwrap_or(Value::Null);
        crate::secrets::mask_json(&mut v);
        v
    }

    /// [`Rendered::for_history`] as JSON text, without building a `Value` (only HTTP calls,
    /// which carry credentials, are copied to be masked).
    pub fn for_history_json(&self) -> String {
        let text = match self {
            Rendered::Http(h) => serde_json::to_string(&Rendered::Http(h.masked())),
            other => serde_json::to_string(other),
        };
        crate::secrets::mask_json_text(text.unwrap_or_else(|_| "null".into()))
    }
}

/// A rendered action as the history keeps it (`{"<kind>": {…, "timeout": ms}}`) made for
/// people: the action's own `timeout` as a duration (`5m`), as rulebooks write it. JSON answers
/// keep milliseconds (docs/api.md); text and the console show this. Only the action's own
/// field is touched: a `timeout` inside its data (`extra_vars`, a `post_event` body) is the
/// event's and stays as it is.
pub fn for_people(rendered: &Value) -> Value {
    let mut v = rendered.clone();
    if let Value::Object(kinds) = &mut v {
        for fields in kinds.values_mut() {
            if let Some(t) = fields.get_mut("timeout")
                && let Some(ms) = t.as_u64()
            {
                *t = Value::String(crate::units::format_duration(Duration::from_millis(ms)));
            }
        }
    }
    v
}

/// Backoff before retry `attempt` (1-based): 1s, 2s, 4s … capped at 60s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn people_read_an_actions_timeout_as_a_duration_and_its_data_untouched() {
        let script = json!({"run_script": {"script": "a.sh", "timeout": 300_000}});
        assert_eq!(for_people(&script)["run_script"]["timeout"], "5m");
        let odd = json!({"post_webhook": {"url": "http://h/", "timeout": 1_500}});
        assert_eq!(for_people(&odd)["post_webhook"]["timeout"], "1500ms");
        let playbook = json!({"run_playbook": {"timeout": 600_000, "extra_vars": {"timeout": 30}}});
        let shown = for_people(&playbook);
        assert_eq!(shown["run_playbook"]["timeout"], "10m");
        assert_eq!(
            shown["run_playbook"]["extra_vars"]["timeout"], 30,
            "the event's data"
        );
        let posted = json!({"post_event": {"source": "s", "body": {"timeout": 5}}});
        assert_eq!(for_people(&posted), posted);
    }
}
