//! The audit trail: who changed what, when, and why — every write through the admin API and
//! the console (re-run, replay, approve, reject, user change, sign-in).
//!
//! It is one entry in the store's state (`rulehook/audit`), replaced by compare-and-set, so it
//! is kept with the history in both backends and every node of a JetStream deployment sees the
//! same trail. The newest [`KEEP`] records are kept.

use serde::{Deserialize, Serialize};

use super::Principal;
use crate::domain::StoreError;
use crate::store::StateStore;

const KEY: &str = "rulehook/audit";

/// Records kept (the oldest go first); a few hundred kilobytes at most.
pub const KEEP: usize = 2000;

/// One write by one person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// RFC 3339, UTC.
    pub at: String,
    pub who: String,
    pub role: String,
    /// `rerun`, `replay`, `approve`, `reject`, `user.add`, `login`…
    pub what: String,
    /// The job, event or user it was about.
    pub target: String,
    pub comment: Option<String>,
}

impl Record {
    pub fn new(who: &Principal, what: &str, target: &str, comment: Option<String>) -> Record {
        Record {
            at: crate::domain::rfc3339(crate::domain::now_ms()),
            who: who.name.clone(),
            role: who.role.as_str().to_string(),
            what: what.to_string(),
            target: target.to_string(),
            comment: comment.filter(|c| !c.trim().is_empty()),
        }
    }
}

/// Appends `record` (trying again when another writer came first).
pub async fn append(state: &dyn StateStore, record: Record) -> Result<(), StoreError> {
    for _ in 0..20 {
        let (mut list, rev) = match state.get(KEY).await? {
            Some((text, rev)) => (parse(&text)?, Some(rev)),
            None => (Vec::new(), None),
        };
        list.push(record.clone());
        if list.len() > KEEP {
            list.drain(..list.len() - KEEP);
        }
        let text = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
        let done = match rev {
            Some(rev) => state.update(KEY, &text, rev, None).await,
            None => state.create(KEY, &text, None).await,
        };
        match done {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict(
        "the audit trail is being written by too many at once; try again".into(),
    ))
}

/// The newest `limit` records, newest first.
pub async fn recent(state: &dyn StateStore, limit: usize) -> Result<Vec<Record>, StoreError> {
    let list = match state.get(KEY).await? {
        Some((text, _)) => parse(&text)?,
        None => Vec::new(),
    };
    Ok(list.into_iter().rev().take(limit).collect())
}

/// The stored trail; one that cannot be read is an error, never overwritten.
fn parse(text: &str) -> Result<Vec<Record>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Permanent(format!("the audit trail cannot be read: {e}")))
}
