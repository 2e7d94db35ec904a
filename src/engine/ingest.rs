//! The accept path: an event is matched (throttle windows opened, correlation partial matches
//! moved), appended with its matches, and — once it is durable — counted and shown live. Every
//! path on which it is not stored takes back what matching changed.

use std::sync::Arc;

use super::{Accepted, Engine, Ingested, correlate};
use crate::domain::{CorrelationState, Envelope, Event, Job, Match, StoreError};
use crate::rules::{Rule, RuleSet};
use crate::store::{Appended, EventRow, EventStatus};
use crate::verify::VerifiedEvent;

/// What matching changed for one event: its matches, and what to take back if it is not
/// stored after all (throttle windows opened, partial matches moved).
#[derive(Default)]
struct Decided {
    matches: Vec<Match>,
    opened: Vec<(String, u64)>,
    undo: Vec<correlate::Undo>,
}

/// What the counters and the live view need of an event's matches, read before the append
/// takes them.
struct Tally {
    /// (rule, throttled, made a job) per match.
    counted: Vec<(Option<usize>, bool, bool)>,
    /// The rules the event matched as the list shows them: held is not matched.
    listed: Vec<String>,
    /// Correlations this event completes, counted once it is stored.
    fired: Vec<usize>,
    /// Absence jobs that will only wait for their deadline: (rule key, deadline).
    waits: Vec<(String, i64)>,
}

impl Tally {
    fn of(rules: &RuleSet, matches: &[Match]) -> Tally {
        Tally {
            counted: matches
                .iter()
                .map(|m| {
                    (
                        rules.rule_by_key(&m.key),
                        m.throttled.is_some(),
                        m.creates_job(),
                    )
                })
                .collect(),
            listed: matches
                .iter()
                .filter(|m| !m.is_partial())
                .map(|m| m.rule.clone())
                .collect(),
            fired: matches
                .iter()
                .filter(|m| {
                    m.correlation
                        .as_ref()
                        .is_some_and(|c| c.state == CorrelationState::Fired)
                })
                .filter_map(|m| rules.rule_by_key(&m.key))
                .collect(),
            waits: matches
                .iter()
                .filter_map(|m| {
                    let c = m.correlation.as_ref()?;
                    let waiting = c.state == CorrelationState::Waiting;
                    c.deadline.filter(|_| waiting).map(|d| (m.key.clone(), d))
                })
                .collect(),
        }
    }
}

fn match_of(r: &Rule) -> Match {
    Match {
        rulebook: r.rulebook.clone(),
        rule: r.name.clone(),
        key: r.key.clone(),
        fingerprint: r.fingerprint.clone(),
        throttled: None,
        correlation: None,
    }
}

impl Engine {
    /// Matches and appends an event (returning once it is durable) with the jobs it creates.
    pub async fn ingest(&self, event: VerifiedEvent) -> Result<Ingested, StoreError> {
        self.ingest_kept(event, true).await
    }

    /// [`Engine::ingest`], except that with `keep_unmatched` false an event that matches no
    /// rule and moves no correlation is not stored (`stored: false`).
    pub async fn ingest_kept(
        &self,
        event: VerifiedEvent,
        keep_unmatched: bool,
    ) -> Result<Ingested, StoreError> {
        let dedup_window = event.delivery().and_then(|d| d.window);
        let rules = self.rules();
        let matched = rules.matching(event.source(), event.doc());
        // Nothing can match and nothing is kept: no id, no stored text (the syslog fast path).
        if matched.is_empty() && !keep_unmatched {
            return Ok(Ingested {
                id: String::new(),
                duplicate: false,
                matched: 0,
                stored: false,
            });
        }
        let event = Arc::new(event.accept());
        // Correlation state moves only for stored events: copies of a delivery sent at once take
        // turns here (until stored), and a copy of a stored one moves nothing.
        let correlates = matched.iter().any(|&i| rules.rules[i].correlate.is_some());
        let delivery = match (&event.delivery, dedup_window) {
            (Some(d), Some(_)) if correlates => Some(d.as_str()),
            _ => None,
        };
        let _turn = match delivery {
            Some(d) => Some(self.deliveries.hold(&event.source, d).await),
            None => None,
        };
        let redelivered = match delivery {
            Some(d) => self.stored_delivery(&event.source, d).await?,
            None => false,
        };
        // A throttle window this event opens (or a partial match it moves) is its own until
        // the append is over (stored, failed or cancelled); then it counts only if the event is
        // in the log.
        let throttles = matched.iter().any(|&i| rules.rules[i].throttle.is_some());
        let _flying = (throttles || correlates).then(|| self.openers.enter(&event.id));
        let decided = self
            .decide_matches(&rules, &matched, &event, redelivered)
            .await?;
        let opened = !decided.opened.is_empty() || !decided.undo.is_empty();
        if decided.matches.is_empty() && !keep_unmatched {
            return Ok(Ingested {
                id: event.id.clone(),
                duplicate: false,
                matched: 0,
                stored: false,
            });
        }
        let tally = Tally::of(&rules, &decided.matches);
        let envelope = Envelope {
            event: event.clone(),
            matches: decided.matches,
            dedup_window,
        };
        let appended = self.store.log.append(envelope).await;
        if !matches!(&appended, Ok(Appended::New { .. })) {
            self.take_back(decided.opened, decided.undo).await;
        }
        match appended? {
            Appended::Duplicate { id } => Ok(Ingested {
                id,
                duplicate: true,
                matched: 0,
                stored: true,
            }),
            Appended::New { jobs } => {
                if opened {
                    self.openers.stored(&event.id);
                }
                self.stored(&rules, &event, tally, &jobs);
                Ok(Ingested {
                    id: event.id.clone(),
                    duplicate: false,
                    stored: true,
                    matched: jobs.len(),
                })
            }
        }
    }

    /// Each matching rule's decision: correlations move their partial match, throttled rules
    /// open their window or report the match throttled. On an error, what was already changed
    /// is taken back.
    async fn decide_matches(
        &self,
        rules: &RuleSet,
        matched: &[usize],
        event: &Event,
        redelivered: bool,
    ) -> Result<Decided, StoreError> {
        let mut d = Decided {
            matches: Vec::with_capacity(matched.len()),
            ..Decided::default()
        };
        for &i in matched {
            let r = &rules.rules[i];
            if let Some(c) = &r.correlate {
                let steps = c.steps_matched(&event.doc);
                if steps.is_empty() || redelivered {
                    continue;
                }
                match self.correlate(r, c, event, &steps).await {
                    Ok(Some((correlation, u))) => {
                        d.undo.push(u);
                        d.matches.push(Match {
                            correlation: Some(correlation),
                            ..match_of(r)
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.take_back(d.opened, d.undo).await;
                        return Err(e);
                    }
                }
                continue;
            }
            let mut m = match_of(r);
            if let Some(t) = &r.throttle {
                let key = throttle_key(&r.key, r.shadow, &t.group(event.body()));
                match self.throttle(&key, &event.id, t.window).await {
                    Ok(Ok(rev)) => d.opened.push((key, rev)),
                    Ok(Err(mut th)) => {
                        th.group = t.group(event.body());
                        m.throttled = Some(th);
                    }
                    Err(e) => {
                        self.take_back(d.opened, d.undo).await;
                        return Err(e);
                    }
                }
            }
            d.matches.push(m);
        }
        Ok(d)
    }

    /// The one undo list of `ingest`: every path on which the event is not stored (an error
    /// while matching, an append that failed or found a duplicate) closes the throttle windows
    /// it opened and takes back the partial matches it moved, newest first.
    async fn take_back(&self, opened: Vec<(String, u64)>, undo: Vec<correlate::Undo>) {
        for (key, rev) in opened {
            let _ = self.store.state.delete(&key, Some(rev)).await;
        }
        for u in undo.into_iter().rev() {
            self.undo(u).await;
        }
    }

    /// Once the event is durable: correlation and match counters, absence deadlines to wait
    /// for, and the row for the live view.
    fn stored(&self, rules: &RuleSet, event: &Event, tally: Tally, jobs: &[Job]) {
        for &i in &tally.fired {
            let r = &rules.rules[i];
            metrics::counter!(crate::telemetry::names::CORRELATION_FIRED, "rulebook" => r.rulebook.clone(), "rule" => r.name.clone()).increment(1);
        }
        for (key, deadline) in &tally.waits {
            if let Some(job) = jobs.iter().find(|j| &j.key == key) {
                self.waiting.add(*deadline, &job.id);
            }
        }
        if !tally.counted.is_empty() {
            self.count(rules, event, &tally.counted);
        }
        if self.live.receiver_count() > 0 {
            self.show_live(rules, event, tally.listed, jobs.len());
        }
    }

    /// Matches and throttled matches per rule (the rules page's counters).
    fn count(&self, rules: &RuleSet, event: &Event, counted: &[(Option<usize>, bool, bool)]) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for &(i, throttled, live) in counted {
            let Some(r) = i.map(|i| &rules.rules[i]) else {
                continue;
            };
            if !throttled && !live {
                continue;
            }
            if live {
                r.count_match();
            } else {
                r.count_throttled();
                tracing::debug!(event = %event.id, rule = %r.name, "match throttled");
            }
            // Looked up before inserting: the key is copied once per rule, not per event.
            if let Some(c) = counts.get_mut(&r.key) {
                c[usize::from(!live)] += 1;
            } else {
                let mut c = [0, 0];
                c[usize::from(!live)] += 1;
                counts.insert(r.key.clone(), c);
            }
        }
    }

    /// The accepted event's row, for the console's live list.
    fn show_live(&self, rules: &RuleSet, event: &Event, listed: Vec<String>, jobs: usize) {
        let listed_n = listed.len();
        let headers = event
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let summary =
            rules
                .summaries
                .summarize(&event.source, &event.kind, &headers, event.doc.body());
        let row = EventRow {
            id: event.id.clone(),
            source: event.source.clone(),
            kind: event.kind.clone(),
            received_at: crate::domain::rfc3339(event.received_at),
            delivery_id: event.delivery.clone(),
            duplicates: 0,
            matched_rules: jobs,
            rules: listed,
            throttled: listed_n.saturating_sub(jobs),
            status: EventStatus::of(listed_n, jobs, jobs, 0),
            // Nobody has been asked yet: a job asks when it first runs.
            awaiting_approval: 0,
            parent: event.parent.clone(),
            summary: Some(crate::secrets::mask_owned(summary)),
        };
        let json = serde_json::to_string(&row).unwrap_or_default();
        // No receiver left in between is not an error.
        let _ = self.live.send(Arc::new(Accepted { row, json }));
    }
}

/// The state-store key of a rule's throttle window for a group. A shadow rule's windows are
/// kept apart from its live ones, so the first live match after switching to `mode: live`
/// runs even if a shadow match opened a window moments before.
pub fn throttle_key(rule_key: &str, shadow: bool, group: &str) -> String {
    match shadow {
        false => format!("throttle/{rule_key}/{group}"),
        true => format!("throttle-shadow/{rule_key}/{group}"),
    }
}
