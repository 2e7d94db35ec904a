//! Actions: what a matched rule does. Each kind is a compiled config struct (built at load from
//! its rulebook spec) that renders against an event and then executes.
//!
//! Rendering is separate from executing so `rulehook test` can show exactly what would run
//! without running it, and so the history keeps what was actually run.

pub mod log;
pub mod script;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::templates::Templates;

/// A compiled action of a rule.
#[derive(Debug)]
pub enum Action {
    RunScript(script::ScriptAction),
    Log(log::LogAction),
}

/// An action with every template rendered: the exact thing that runs (and is recorded).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Rendered {
    RunScript(script::ScriptRun),
    Log(log::LogLine),
}

/// What one attempt of an action produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub error: Option<String>,
}

impl Outcome {
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            error: Some(error.into()),
            ..Outcome::default()
        }
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
        }
    }

    /// How many times a failed attempt is tried again.
    pub fn retries(&self) -> u32 {
        match self {
            Action::RunScript(s) => s.retries,
            Action::Log(_) => 0,
        }
    }

    pub fn render(
        &self,
        templates: &Templates,
        ctx: &minijinja::Value,
    ) -> Result<Rendered, String> {
        match self {
            Action::RunScript(a) => a.render(templates, ctx).map(Rendered::RunScript),
            Action::Log(a) => a.render(templates, ctx).map(Rendered::Log),
        }
    }
}

impl Rendered {
    pub async fn execute(&self, run: &RunContext) -> Outcome {
        match self {
            Rendered::RunScript(s) => s.execute(run).await,
            Rendered::Log(l) => l.execute(run),
        }
    }
}

/// Backoff before retry `attempt` (1-based): 1s, 2s, 4s … capped at 60s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}
