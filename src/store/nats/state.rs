//! The state store on a stream that keeps one message per key: a key's revision is the
//! sequence number of its last message, and every write is a publish that must come right
//! after it (`Nats-Expected-Last-Subject-Sequence`): compare-and-set without the key-value API.
//! Expiry is part of the value (read as absent once past); a delete is a tombstone.

use std::time::Duration;

use async_trait::async_trait;

use super::wire::StateValue;
use super::{Jet, Shared, last, publish_cas};
use crate::domain::{StoreError, now_ms};
use crate::store::{Revision, StateStore};

/// The entry at `key` as stored, live or not, with its revision.
async fn raw(s: &Shared, key: &str) -> Result<Option<(StateValue, u64)>, StoreError> {
    let Some((payload, seq)) = last(&s.state, &s.names.state(key)).await? else {
        return Ok(None);
    };
    let v: StateValue = serde_json::from_slice(&payload)
        .map_err(|e| StoreError::Permanent(format!("state entry `{key}`: {e}")))?;
    Ok(Some((v, seq)))
}

fn live(v: &StateValue, now: i64) -> bool {
    !v.deleted && v.expires_at.is_none_or(|t| t >= now)
}

fn encode(value: &str, ttl: Option<Duration>, deleted: bool) -> Vec<u8> {
    serde_json::to_vec(&StateValue {
        value: value.to_string(),
        expires_at: ttl
            .map(|t| now_ms().saturating_add(t.as_millis().min(i64::MAX as u128) as i64)),
        deleted,
    })
    .unwrap_or_default()
}

pub(crate) async fn get(s: &Shared, key: &str) -> Result<Option<(String, Revision)>, StoreError> {
    Ok(raw(s, key)
        .await?
        .filter(|(v, _)| live(v, now_ms()))
        .map(|(v, seq)| (v.value, seq)))
}

pub(crate) async fn create(
    s: &Shared,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
) -> Result<Revision, StoreError> {
    let expected = match raw(s, key).await? {
        None => 0,
        Some((v, _)) if live(&v, now_ms()) => {
            return Err(StoreError::Conflict(format!("`{key}` exists")));
        }
        Some((_, seq)) => seq,
    };
    publish_cas(
        &s.js,
        &s.state,
        s.names.state(key),
        encode(value, ttl, false),
        expected,
    )
    .await
    .map_err(|e| match e {
        StoreError::Conflict(_) => StoreError::Conflict(format!("`{key}` exists")),
        e => e,
    })
}

pub(crate) async fn update(
    s: &Shared,
    key: &str,
    value: &str,
    expected: Revision,
    ttl: Option<Duration>,
) -> Result<Revision, StoreError> {
    let conflict = || StoreError::Conflict(format!("`{key}` changed since revision {expected}"));
    match raw(s, key).await? {
        Some((v, seq)) if seq == expected && live(&v, now_ms()) => {}
        _ => return Err(conflict()),
    }
    publish_cas(
        &s.js,
        &s.state,
        s.names.state(key),
        encode(value, ttl, false),
        expected,
    )
    .await
    .map_err(|e| match e {
        StoreError::Conflict(_) => conflict(),
        e => e,
    })
}

pub(crate) async fn delete(
    s: &Shared,
    key: &str,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    let current = raw(s, key).await?;
    let expected_seq = match (expected, current) {
        (None, None) => return Ok(()),
        (None, Some((v, _))) if v.deleted => return Ok(()),
        (None, Some((_, seq))) => seq,
        (Some(r), Some((v, seq))) if seq == r && !v.deleted => r,
        (Some(r), _) => {
            return Err(StoreError::Conflict(format!(
                "`{key}` changed since revision {r}"
            )));
        }
    };
    publish_cas(
        &s.js,
        &s.state,
        s.names.state(key),
        encode("", None, true),
        expected_seq,
    )
    .await
    .map(drop)
}

#[async_trait]
impl StateStore for Jet {
    async fn get(&self, key: &str) -> Result<Option<(String, Revision)>, StoreError> {
        get(&self.shared, key).await
    }

    async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        create(&self.shared, key, value, ttl).await
    }

    async fn update(
        &self,
        key: &str,
        value: &str,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        update(&self.shared, key, value, expected, ttl).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), StoreError> {
        delete(&self.shared, key, expected).await
    }
}
