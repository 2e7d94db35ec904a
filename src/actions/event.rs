//! `post_event`: emits a new event into an `internal` source, to chain rules. The engine
//! journals and matches it like any other; chains deeper than [`MAX_DEPTH`] stop with an error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::templates::{Templates, Text};

pub const MAX_DEPTH: u32 = 8;

#[derive(Debug)]
pub struct PostEventAction {
    pub source: String,
    pub body: Text,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostEvent {
    pub source: String,
    pub body: Value,
}

impl PostEventAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<PostEvent, String> {
        let text = t.render(&self.body, ctx)?;
        let body = serde_json::from_str(&text)
            .map_err(|e| format!("the event body is not valid JSON ({e}): {text}"))?;
        Ok(PostEvent {
            source: self.source.clone(),
            body,
        })
    }
}
