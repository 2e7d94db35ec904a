//! The embedded store's event log: appends in one transaction with their jobs (group commit
//! by the writer thread), reads, retention.

#[allow(clippy::wildcard_imports)]
use super::*;
use deliveries::{Claim, EventId, Key};

#[async_trait]
impl EventLog for Embedded {
    async fn append(&self, envelope: Envelope) -> Result<Appended, StoreError> {
        let Envelope {
            event,
            matches,
            dedup_window,
        } = envelope;
        // Serialized here, in the caller's task, not on the writer thread.
        let headers = serde_json::to_string(&event.headers).map_err(storage)?;
        let matches_json = serde_json::to_string(&matches).map_err(storage)?;
        // The delivery's key is hashed here, in the caller's task, not on the writer thread.
        let dedup = match (&event.delivery, dedup_window) {
            (Some(d), Some(w)) => Some((
                self.shared.deliveries().key(&event.source, d),
                now_ms() + w.as_millis() as i64,
            )),
            _ => None,
        };
        let (next_event, next_job, shared) = (
            self.next_event.clone(),
            self.next_job.clone(),
            self.shared.clone(),
        );
        // Counted before the commit makes the jobs fetchable (so no ack can come first), and
        // taken back if the commit fails.
        let (pending, counted) = (self.pending.clone(), Arc::new(AtomicUsize::new(0)));
        let (pending_then, counted_then) = (self.pending.clone(), counted.clone());
        // This run's jobs, in place of an earlier run's (a write may run twice: see `writer`).
        let count = move |n: usize| {
            let before = counted.swap(n, Ordering::Relaxed);
            pending.fetch_add(n, Ordering::Relaxed);
            pending.fetch_sub(before, Ordering::Relaxed);
        };
        let result = self
            .write(move |c, pushes| {
                let now = now_ms();
                if let Some((key, _)) = &dedup
                    && let Some(id) = claimed(&shared, pushes, *key, now)
                {
                    count(0);
                    c.run(
                        "UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1",
                        params![id],
                    )?;
                    return Ok(Appended::Duplicate { id });
                }
                let n_live = matches.iter().filter(|m| m.creates_job()).count();
                let seq = next_event.fetch_add(1, Ordering::Relaxed);
                let first_job = next_job.fetch_add(n_live as i64, Ordering::Relaxed);
                let until = dedup.map(|(_, until)| until);
                let jobs = insert_event(
                    c,
                    seq,
                    first_job,
                    &event,
                    &matches,
                    &headers,
                    &matches_json,
                    until,
                )?;
                if let Some((key, until)) = dedup {
                    let id = EventId::new(&event.id);
                    pushes.push(Push::Claim {
                        key,
                        claim: Claim { id, until },
                    });
                }
                for (i, job) in jobs.iter().enumerate() {
                    pushes.push(Push::New(Queued {
                        seq: first_job + i as i64,
                        job: job.clone(),
                        event: Some(event.clone()),
                        deliveries: 0,
                        lost: 0,
                    }));
                }
                count(jobs.len());
                Ok(Appended::New { jobs })
            })
            .await;
        if result.is_err() {
            let n = counted_then.swap(0, Ordering::Relaxed);
            let _ = pending_then.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
        }
        result
    }

    async fn delivered(&self, source: &str, delivery: &str) -> Result<Option<String>, StoreError> {
        let deliveries = self.shared.deliveries();
        let claim = deliveries.live(deliveries.key(source, delivery), now_ms());
        Ok(claim.map(|c| c.id.text()))
    }

    async fn event(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT * FROM events WHERE id = ?1",
                params![id],
                reads::row_event,
            )
            .optional()
            .map(|e| e.map(Arc::new))
        })
        .await
    }

    async fn prune(&self, before_ms: i64) -> Result<Pruned, StoreError> {
        self.write(move |c, _| reads::prune(c, before_ms, now_ms()))
            .await
    }
}

/// The event that holds the delivery `key` at `now`: one of this batch's appends (claims not
/// yet committed, so not in memory yet), else a committed claim.
fn claimed(shared: &Shared, pushes: &[Push], key: Key, now: i64) -> Option<String> {
    let this_batch = pushes.iter().rev().find_map(|p| match p {
        Push::Claim { key: k, claim } if *k == key && claim.until >= now => Some(claim.id.text()),
        _ => None,
    });
    this_batch.or_else(|| shared.deliveries().live(key, now).map(|c| c.id.text()))
}
