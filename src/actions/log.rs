//! `log`: writes a rendered message to the service log. Useful on its own (an audit trail of
//! matched events) and as the cheapest action for measuring the engine.

use serde::{Deserialize, Serialize};

use super::{Outcome, RunContext};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::LogSpec;
use crate::templates::{Templates, Text};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct LogAction {
    pub message: Text,
    pub level: Level,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub message: String,
    pub level: Level,
}

/// `log:` compiled.
pub(crate) fn compile(
    cx: &mut Compile,
    l: &LogSpec,
    prefix: &str,
    t: &mut Templates,
) -> Option<LogAction> {
    let level = match &l.level {
        None => Level::Info,
        Some(lv) => match Level::parse(&lv.value) {
            Some(x) => x,
            None => {
                cx.err(&lv.referenced, "level must be error, warn, info or debug");
                return None;
            }
        },
    };
    let message = cx.template(t, format!("{prefix}/message"), &l.message, "message")?;
    Some(LogAction { message, level })
}

impl LogAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<LogLine, String> {
        Ok(LogLine {
            message: t.render(&self.message, ctx)?,
            level: self.level,
        })
    }
}

/// The message as one line of the service log: CR and LF written as `\r` and `\n`, so a
/// line break in a value a sender chose cannot start a line that passes for rulehook's own.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.contains(['\r', '\n']) {
        return message.into();
    }
    message.replace('\r', "\\r").replace('\n', "\\n").into()
}

impl LogLine {
    pub fn execute(&self, run: &RunContext) -> Outcome {
        let msg = one_line(&self.message);
        let (rule, event) = (&run.rule, &run.event_id);
        match self.level {
            Level::Error => tracing::error!(target: "rulehook::rule", rule, event, "{msg}"),
            Level::Warn => tracing::warn!(target: "rulehook::rule", rule, event, "{msg}"),
            Level::Info => tracing::info!(target: "rulehook::rule", rule, event, "{msg}"),
            Level::Debug => tracing::debug!(target: "rulehook::rule", rule, event, "{msg}"),
        }
        Outcome {
            ok: true,
            ..Outcome::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_line() {
        assert_eq!(one_line("up"), "up");
        assert_eq!(one_line("a\r\nb\nc"), r"a\r\nb\nc");
    }
}
