//! Queries of the embedded store: rows to domain types and history rows, refills, retention.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::lanes::Queued;
use super::writer::Loaded;
use crate::domain::{Event, EventDoc, Job, JobState, Match, Step, human_duration, rfc3339};
use crate::store::history::{
    AttemptRow, AwaitingRow, CorrelationRow, DecisionRow, EventDetail, EventFilter, EventRow,
    EventStatus, HeldByRow, JobFilter, JobRow, JobStatus, MatchRow, ThrottledRow,
};
use crate::store::{PRUNE_BATCH, Pruned, Stored, StoredEvent, Unreadable};

/// A list's limit: 0 means the default (100).
fn limit(n: usize) -> i64 {
    if n == 0 { 100 } else { n as i64 }
}

const EVENT_COLUMNS: &str =
    "e.id, e.source, e.kind, e.delivery, e.parent, e.received_at, e.headers, e.body, e.depth";

pub fn row_event(r: &Row) -> rusqlite::Result<Event> {
    let headers: String = r.get("headers")?;
    let headers: Vec<(String, String)> = serde_json::from_str(&headers).unwrap_or_default();
    let body_text: String = r.get("body")?;
    let body = serde_json::from_str::<Value>(&body_text)
        .unwrap_or_else(|_| Value::String(body_text.clone()));
    Ok(Event {
        id: r.get("id")?,
        source: r.get("source")?,
        kind: r.get("kind")?,
        received_at: r.get("received_at")?,
        doc: EventDoc::with_headers(body, &headers),
        headers,
        body_text,
        depth: r.get("depth")?,
        delivery: r.get("delivery")?,
        parent: r.get("parent")?,
    })
}

fn step_of(text: &str) -> Step {
    serde_json::from_str(text).unwrap_or_default()
}

fn row_job(r: &Row) -> rusqlite::Result<(Job, JobState, Option<String>, i64)> {
    let id: String = r.get("j_id")?;
    let step: String = r.get("j_step")?;
    let state: String = r.get("j_state")?;
    Ok((
        Job {
            event_id: id.split(':').next().unwrap_or_default().to_string(),
            id,
            rulebook: r.get("j_rulebook")?,
            rule: r.get("j_rule")?,
            key: r.get("j_key")?,
            fingerprint: r.get("j_fingerprint")?,
            step: step_of(&step),
        },
        JobState::parse(&state).unwrap_or(JobState::Pending),
        r.get("j_error")?,
        r.get("j_updated_at")?,
    ))
}

const JOB_COLUMNS: &str =
    "j.seq AS j_seq, j.id AS j_id, j.rulebook AS j_rulebook, j.rule AS j_rule,
    j.key AS j_key, j.fingerprint AS j_fingerprint, j.step AS j_step, j.state AS j_state,
    j.error AS j_error, j.updated_at AS j_updated_at, j.not_before AS j_not_before";

/// Pending jobs above `cursor`, in sequence order, with their events (the writer's refill).
pub fn pending_after(c: &Connection, cursor: i64, limit: usize) -> rusqlite::Result<Vec<Loaded>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, {EVENT_COLUMNS} FROM jobs j JOIN events e ON e.seq = j.event_seq
         WHERE j.seq > ?1 AND j.state = 'pending' ORDER BY j.seq LIMIT ?2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![cursor, limit as i64])?;
    let mut out: Vec<Loaded> = Vec::new();
    let mut last: Option<Arc<Event>> = None;
    while let Some(r) = rows.next()? {
        let (job, _, _, _) = row_job(r)?;
        let seq: i64 = r.get("j_seq")?;
        let not_before: Option<i64> = r.get("j_not_before")?;
        // Jobs of one event share one copy of it.
        let event = match &last {
            Some(e) if e.id == job.event_id => e.clone(),
            _ => {
                let e = Arc::new(row_event(r)?);
                last = Some(e.clone());
                e
            }
        };
        out.push(super::loaded(
            Queued {
                seq,
                job,
                event: Some(event),
                deliveries: 0,
                lost: 0,
            },
            not_before,
        ));
    }
    Ok(out)
}

/// The sequence number of a job, found through its event.
pub fn job_seq(c: &Connection, job_id: &str) -> rusqlite::Result<Option<i64>> {
    let event_id = job_id.split(':').next().unwrap_or_default();
    let Some((first, n)): Option<(Option<i64>, i64)> = c
        .prepare_cached("SELECT first_job, n_jobs FROM events WHERE id = ?1")?
        .query_row(params![event_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
    else {
        return Ok(None);
    };
    let Some(first) = first else { return Ok(None) };
    c.prepare_cached("SELECT seq FROM jobs WHERE seq >= ?1 AND seq < ?2 AND id = ?3")?
        .query_row(params![first, first + n, job_id], |r| r.get(0))
        .optional()
}

pub fn job(c: &Connection, id: &str) -> rusqlite::Result<Option<(Job, JobState)>> {
    let Some(seq) = job_seq(c, id)? else {
        return Ok(None);
    };
    c.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.seq = ?1"),
        params![seq],
        |r| row_job(r).map(|(j, s, _, _)| (j, s)),
    )
    .optional()
}

/// The headers and body of events `ids` whose body is at most `max_body` bytes.
pub fn contents(
    c: &Connection,
    ids: &[String],
    max_body: usize,
) -> rusqlite::Result<Vec<crate::store::EventContent>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, headers, body FROM events WHERE id = ?1 AND length(body) <= ?2",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = stmt
            .query_row(params![id, max_body as i64], |r| {
                Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .optional()?;
        if let Some((headers, body)) = row {
            out.push(crate::store::EventContent {
                id: id.clone(),
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
            });
        }
    }
    Ok(out)
}

/// An event's list status. `n_matches` leaves out the matches a correlation only holds (no job,
/// not throttled: `insert_event`), so an event only held is `unmatched`, never `throttled`.
const STATUS_SQL: &str = "CASE WHEN n_matches = 0 THEN 'unmatched' WHEN n_jobs = 0 THEN 'throttled'
    WHEN pending > 0 THEN 'pending' WHEN failed > 0 THEN 'failed' ELSE 'done' END";

pub fn events(c: &Connection, f: &EventFilter) -> rusqlite::Result<Vec<EventRow>> {
    let status = f.status.map(|s| match s {
        EventStatus::Unmatched => "unmatched",
        EventStatus::Throttled => "throttled",
        EventStatus::Pending => "pending",
        EventStatus::Failed => "failed",
        EventStatus::Done => "done",
    });
    let sql = format!(
        "SELECT * FROM (
           SELECT e.seq, e.id, e.source, e.kind, e.received_at, e.duplicates, e.n_matches, e.n_jobs,
                  e.parent, e.delivery, e.matches,
                  (SELECT COUNT(*) FROM jobs j WHERE j.seq >= e.first_job AND j.seq < e.first_job + e.n_jobs
                     AND j.state = 'pending') AS pending,
                  (SELECT COUNT(*) FROM jobs j WHERE j.seq >= e.first_job AND j.seq < e.first_job + e.n_jobs
                     AND j.state = 'failed') AS failed,
                  (SELECT COUNT(*) FROM jobs j WHERE j.seq >= e.first_job AND j.seq < e.first_job + e.n_jobs
                     AND j.state = 'pending' AND j.awaiting IS NOT NULL) AS awaiting
           FROM events e
           WHERE (?1 IS NULL OR e.source = ?1) AND (?2 IS NULL OR e.received_at >= ?2)
             -- Cheap tests first, so the per-event counts run only for candidates (`done` and
             -- `pending` still count per event: no index says which events are done).
             AND (?4 IS NOT 'failed' OR e.seq IN (SELECT event_seq FROM jobs WHERE state = 'failed'))
             AND (?4 IS NOT 'unmatched' OR e.n_jobs = 0)
             AND (?4 IS NOT 'throttled' OR e.n_jobs < e.n_matches)
             AND (?5 IS NULL OR (instr(e.matches, '\"rule\":' || json_quote(?5)) > 0
                                 AND EXISTS (SELECT 1 FROM json_each(e.matches)
                                             WHERE json_extract(value, '$.rule') = ?5)))
           ORDER BY e.seq DESC)
         WHERE ?4 IS NULL OR ({STATUS_SQL}) = ?4
            OR (?4 = 'throttled' AND n_jobs < n_matches)
         LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![f.source, f.since, limit(f.limit), status, f.rule],
        |r| {
            let (n_matches, n_jobs, pending, failed): (i64, i64, i64, i64) = (
                r.get("n_matches")?,
                r.get("n_jobs")?,
                r.get("pending")?,
                r.get("failed")?,
            );
            let rules = rule_names(&r.get::<_, String>("matches")?);
            Ok(EventRow {
                id: r.get("id")?,
                source: r.get("source")?,
                kind: r.get("kind")?,
                received_at: rfc3339(r.get("received_at")?),
                delivery_id: r.get("delivery")?,
                duplicates: r.get("duplicates")?,
                matched_rules: n_jobs as usize,
                rules,
                throttled: (n_matches - n_jobs).max(0) as usize,
                status: EventStatus::of(
                    n_matches as usize,
                    n_jobs as usize,
                    pending as usize,
                    failed as usize,
                ),
                awaiting_approval: r.get::<_, i64>("awaiting")?.max(0) as usize,
                parent: r.get("parent")?,
                summary: None,
            })
        },
    )?;
    rows.collect()
}

/// The rules an event matched (or was throttled on), from its stored matches (a JSON array of
/// objects with `rule`): not those of correlations that only hold it (a partial match is not a
/// match).
fn rule_names(matches: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        rule: String,
        #[serde(default)]
        correlation: Option<crate::domain::Correlated>,
    }
    serde_json::from_str::<Vec<Named>>(matches)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.correlation
                .as_ref()
                .is_none_or(|c| c.state != crate::domain::CorrelationState::Partial)
        })
        .map(|m| m.rule)
        .collect()
}

fn attempts_of(c: &Connection, job_id: &str) -> rusqlite::Result<Vec<AttemptRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT run_id, attempt, phase, idx, action, rendered, state, started_at, finished_at,
                exit_code, stdout, stderr, error, status, result
         FROM attempts WHERE job_id = ?1 ORDER BY started_at, phase, idx, attempt",
    )?;
    let rows = stmt.query_map(params![job_id], |r| {
        let rendered: String = r.get(5)?;
        let state: String = r.get(6)?;
        let started: i64 = r.get(7)?;
        let finished: Option<i64> = r.get(8)?;
        Ok(AttemptRow {
            run_id: r.get(0)?,
            attempt: r.get(1)?,
            phase: if r.get::<_, i64>(2)? == 1 {
                "on_failure"
            } else {
                "main"
            },
            action_index: r.get(3)?,
            action: r.get(4)?,
            rendered: serde_json::from_str(&rendered).unwrap_or(Value::Null),
            status: match state.as_str() {
                "ok" => "ok",
                "failed" => "failed",
                _ => "running",
            },
            started_at: rfc3339(started),
            finished_at: finished.map(rfc3339),
            duration: finished.map(|f| human_duration(f - started)),
            duration_ms: finished.map(|f| f - started),
            exit_code: r.get(9)?,
            stdout: r.get(10)?,
            stderr: r.get(11)?,
            error: r.get(12)?,
            http_status: r.get(13)?,
            result: r
                .get::<_, Option<String>>(14)?
                .and_then(|t| serde_json::from_str(&t).ok()),
        })
    })?;
    rows.collect()
}

pub fn event_detail(c: &Connection, id: &str) -> rusqlite::Result<Option<EventDetail>> {
    let Some((event, duplicates, matches, first, n_jobs)) = c
        .query_row(
            &format!(
                "SELECT {EVENT_COLUMNS}, e.duplicates, e.matches, e.first_job, e.n_jobs
                 FROM events e WHERE e.id = ?1"
            ),
            params![id],
            |r| {
                Ok((
                    row_event(r)?,
                    r.get::<_, i64>("duplicates")?,
                    r.get::<_, String>("matches")?,
                    r.get::<_, Option<i64>>("first_job")?,
                    r.get::<_, i64>("n_jobs")?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let all: Vec<Match> = serde_json::from_str(&matches).unwrap_or_default();
    let mut jobs = Vec::new();
    if let Some(first) = first {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j WHERE j.seq >= ?1 AND j.seq < ?2 ORDER BY j.seq"
        ))?;
        let rows: Vec<_> = stmt
            .query_map(params![first, first + n_jobs], row_job)?
            .collect::<rusqlite::Result<_>>()?;
        for (job, state, error, _) in rows {
            let status = JobStatus::of(state, &job.step);
            jobs.push(MatchRow {
                attempts: attempts_of(c, &job.id)?,
                status,
                held_by: HeldByRow::of(status, &job.step, crate::domain::now_ms()),
                awaiting: AwaitingRow::of(&job.step),
                decision: job.step.decision.as_ref().map(DecisionRow::of),
                id: job.id,
                rulebook: job.rulebook,
                rule: job.rule,
                fingerprint: job.fingerprint,
                error,
            });
        }
    }
    let throttled: Vec<ThrottledRow> = all
        .iter()
        .filter_map(|m| {
            m.throttled.as_ref().map(|t| ThrottledRow {
                rulebook: m.rulebook.clone(),
                rule: m.rule.clone(),
                group: t.group.clone(),
                fired_by: t.fired_by.clone(),
                until: rfc3339(t.until),
            })
        })
        .collect();
    let children: Vec<String> = c
        .prepare_cached("SELECT id FROM events WHERE parent = ?1 ORDER BY seq")?
        .query_map(params![id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let pending = jobs
        .iter()
        .filter(|j| j.status.state() == JobState::Pending)
        .count();
    let failed = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Failed)
        .count();
    Ok(Some(EventDetail {
        status: EventStatus::of(
            all.iter().filter(|m| !m.is_partial()).count(),
            jobs.len(),
            pending,
            failed,
        ),
        correlations: CorrelationRow::of(&event.id, &all),
        id: event.id,
        source: event.source,
        kind: event.kind,
        received_at: rfc3339(event.received_at),
        headers: event
            .headers
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        depth: event.depth,
        duplicates,
        delivery_id: event.delivery,
        parent: event.parent,
        children,
        body: event.doc.body().clone(),
        matches: jobs,
        throttled,
    }))
}

pub fn jobs(c: &Connection, f: &JobFilter) -> rusqlite::Result<Vec<JobRow>> {
    let status = f.status.map_or("1", JobStatus::sql);
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs j WHERE (?1 IS NULL OR j.state = ?1)
           AND (?2 IS NULL OR j.rule = ?2) AND ({status}) ORDER BY j.seq DESC LIMIT ?3"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![f.state.map(JobState::as_str), f.rule, limit(f.limit)],
        |r| {
            let (job, state, error, updated) = row_job(r)?;
            Ok(JobRow::new(&job, state, error, rfc3339(updated)))
        },
    )?;
    rows.collect()
}

/// Retention: events received before `before` whose jobs all finished well and none of whose
/// jobs changed since `before` (a re-run, an approval: activity keeps the event) go, with their
/// jobs and attempts; expired state entries go. At most [`PRUNE_BATCH`] events per call (the
/// caller calls again while that many went). Events that must stay (a pending job, a dead
/// letter) are stepped over with a cursor, so any number of them never stops the pruning.
pub fn prune(c: &Connection, before: i64, now: i64) -> rusqlite::Result<Pruned> {
    const PAGE: i64 = 1000;
    let mut out = Pruned {
        state: c.execute(
            "DELETE FROM state WHERE expires_at IS NOT NULL AND expires_at < ?1",
            params![now],
        )? as u64,
        ..Pruned::default()
    };
    let mut cursor = 0i64;
    while out.events < PRUNE_BATCH {
        let page: Vec<(i64, String, Option<i64>, i64)> = c
            .prepare_cached(
                "SELECT seq, id, first_job, n_jobs FROM events WHERE received_at < ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![before, cursor, PAGE], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let last_page = (page.len() as i64) < PAGE;
        for (seq, id, first, n) in page {
            cursor = seq;
            if let Some(first) = first {
                let unfinished: i64 = c
                    .prepare_cached(
                        "SELECT COUNT(*) FROM jobs WHERE seq >= ?1 AND seq < ?2
                           AND (state != 'done' OR updated_at >= ?3)",
                    )?
                    .query_row(params![first, first + n, before], |r| r.get(0))?;
                if unfinished > 0 {
                    continue;
                }
                out.attempts += c
                    .prepare_cached(
                        "DELETE FROM attempts WHERE job_id >= ?1 || ':' AND job_id < ?1 || ';'",
                    )?
                    .execute(params![id])? as u64;
                out.jobs += c
                    .prepare_cached("DELETE FROM jobs WHERE seq >= ?1 AND seq < ?2")?
                    .execute(params![first, first + n])? as u64;
            }
            out.events += c
                .prepare_cached("DELETE FROM events WHERE seq = ?1")?
                .execute(params![seq])? as u64;
        }
        if last_page {
            break;
        }
    }
    Ok(out)
}

/// Events received at or after `since`, after event `after`, in acceptance order: at most `n`
/// rows, each read into a [`StoredEvent`] or, when its JSON body or its matches cannot be
/// parsed back, an [`Unreadable`] saying why.
pub fn stored(
    c: &Connection,
    since: i64,
    after: Option<&str>,
    n: usize,
) -> rusqlite::Result<Vec<Stored>> {
    let after_seq: i64 = match after {
        None => -1,
        Some(id) => c
            .prepare_cached("SELECT seq FROM events WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?
            .unwrap_or(i64::MAX),
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS}, e.matches FROM events e
         WHERE e.seq > ?1 AND e.received_at >= ?2 ORDER BY e.seq LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![after_seq, since, limit(n)], |r| {
        let matches: String = r.get("matches")?;
        let event = row_event(r)?;
        let unreadable = |reason: String| Unreadable {
            id: event.id.clone(),
            received_at: event.received_at,
            reason,
        };
        // `row_event` takes a body that is not JSON as text; one that starts as JSON and does
        // not parse is JSON no reader can follow (nested past serde_json's 128 levels).
        if let Some(e) = event
            .body()
            .is_string()
            .then(|| unparsable_json(&event.body_text))
            .flatten()
        {
            return Ok(Stored::Unreadable(unreadable(format!(
                "its body cannot be read back as JSON: {e}"
            ))));
        }
        match serde_json::from_str(&matches) {
            Ok(matches) => Ok(Stored::Event(StoredEvent {
                event: Arc::new(event),
                matches,
            })),
            Err(e) => Ok(Stored::Unreadable(unreadable(format!(
                "its matches cannot be read back: {e}"
            )))),
        }
    })?;
    rows.collect()
}

/// Why `text`, which starts as a JSON array or object, does not parse; `None` for one that
/// parses or is not JSON-shaped (a text body).
fn unparsable_json(text: &str) -> Option<serde_json::Error> {
    let first = text.trim_start().as_bytes().first()?;
    if !matches!(first, b'{' | b'[') {
        return None;
    }
    serde_json::from_str::<Value>(text).err()
}
