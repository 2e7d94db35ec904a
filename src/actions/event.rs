//! `post_event`: emits a new event into an `internal` source, to chain rules. The engine
//! journals and matches it like any other; chains deeper than [`MAX_DEPTH`] stop with an error.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rulebook::compile::Compile;
use crate::rulebook::model::PostEventSpec;
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

/// `post_event:` compiled; its source must be one of kind `internal`.
pub(crate) fn compile(
    cx: &mut Compile,
    p: &PostEventSpec,
    prefix: &str,
    internal: &HashSet<&str>,
    t: &mut Templates,
) -> Option<PostEventAction> {
    if !internal.contains(p.source.value.as_str()) {
        cx.err(
            &p.source.referenced,
            format!(
                "post_event: `{}` is not a source of kind `internal`",
                p.source.value
            ),
        );
        return None;
    }
    let body = cx.body_text(
        t,
        prefix,
        p.body.as_ref(),
        p.body_template.as_ref(),
        &p.source,
        true,
    )?;
    Some(PostEventAction {
        source: p.source.value.clone(),
        body,
    })
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
