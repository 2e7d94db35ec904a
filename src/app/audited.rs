//! Replay and re-run, an operator's writes, for the admin API and the console alike: each is
//! written to the audit trail *before* it acts, so a write the trail cannot take never happens
//! (the caller gets the store's error and nothing ran). What the request itself gets wrong (no
//! such event, a job that is no dead letter) is answered before anything is audited, so a typo
//! leaves no record. A write audited and then refused by the engine (the rule went away in
//! between, the store failed) is logged as not done.

use super::{ApiError, AppState, audit};
use crate::access::Principal;
use crate::domain::JobState;
use crate::engine::{Ingested, ModeChange, Rerun};

/// A re-run that was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// On the rule version it matched, from the action that failed; `changed`: the rule
    /// changed since the match.
    AsMatched { changed: bool },
    /// On the current version of its rule, from its first action; `mode`: the change
    /// switched it between shadow and live.
    OnCurrentRule { mode: Option<ModeChange> },
}

/// A replay that was ingested, with the source of the event it replayed.
#[derive(Debug)]
pub struct Replayed {
    pub done: Ingested,
    /// The replayed event's source (it may have left the rulebooks since).
    pub source: String,
}

/// Replays event `id` as `who`, audited first.
pub async fn replay(state: &AppState, who: &Principal, id: &str) -> Result<Replayed, ApiError> {
    let Some(old) = state.engine.store().log.event(id).await? else {
        return Err(ApiError::NoSuchEvent);
    };
    audit(state, who, "replay", id, None).await?;
    match state.engine.replay(id).await {
        Ok(Some(done)) => Ok(Replayed {
            done,
            source: old.source.clone(),
        }),
        Ok(None) => Err(not_done(who, "replay", id, ApiError::NoSuchEvent)),
        Err(e) => Err(not_done(who, "replay", id, e.into())),
    }
}

/// Re-runs dead letter `id` as `who` (`as_matched`: on the version it matched), audited first.
pub async fn rerun(
    state: &AppState,
    who: &Principal,
    id: &str,
    as_matched: bool,
) -> Result<Queued, ApiError> {
    match state.engine.store().history.job(id).await? {
        None => return Err(ApiError::NoSuchJob),
        Some((job, JobState::Done)) if job.step.decision.as_ref().is_some_and(|d| !d.approved) => {
            return Err(ApiError::NotFailed("rejected"));
        }
        Some((_, JobState::Failed)) => {}
        Some((_, other)) => return Err(ApiError::NotFailed(other.as_str())),
    }
    audit(state, who, "rerun", id, None).await?;
    let refused = match state.engine.rerun(id, as_matched).await {
        Ok(Rerun::AsMatched { changed }) => return Ok(Queued::AsMatched { changed }),
        Ok(Rerun::OnCurrentRule { mode }) => return Ok(Queued::OnCurrentRule { mode }),
        Ok(Rerun::NotFound) => ApiError::NoSuchJob,
        Ok(Rerun::NotFailed(s)) => ApiError::NotFailed(s.as_str()),
        Ok(Rerun::Rejected) => ApiError::NotFailed("rejected"),
        Ok(Rerun::RuleGone) => ApiError::RuleGone,
        Ok(Rerun::VersionGone) => ApiError::VersionGone,
        Err(e) => e.into(),
    };
    Err(not_done(who, "rerun", id, refused))
}

/// Logs that an audited write did not happen after all (the trail has its record), and
/// passes the error on.
fn not_done(who: &Principal, what: &str, target: &str, e: ApiError) -> ApiError {
    tracing::warn!(who = %who.name, what, target, "audited, but not done: {e}");
    e
}
