//! The embedded store's event log: appends in one transaction with their jobs (group commit
//! by the writer thread), reads, retention.

#[allow(clippy::wildcard_imports)]
use super::*;

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
        let dedup = match (&event.delivery, dedup_window) {
            (Some(d), Some(w)) => Some((
                format!("dedup/{}/{d}", event.source),
                now_ms() + w.as_millis() as i64,
            )),
            _ => None,
        };
        let (next_event, next_job, next_rev) = (
            self.next_event.clone(),
            self.next_job.clone(),
            self.next_rev.clone(),
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
                if let Some((key, expires)) = &dedup {
                    let rev = next_rev.fetch_add(1, Ordering::Relaxed) as i64;
                    let n = c.run(
                        schema::CLAIM_STATE,
                        params![key, event.id, rev, expires, now],
                    )?;
                    if n == 0 {
                        count(0);
                        let id: String = c
                            .prepare_cached("SELECT value FROM state WHERE key = ?1")?
                            .query_row(params![key], |r| r.get(0))?;
                        c.prepare_cached(
                            "UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1",
                        )?
                        .execute(params![id])?;
                        return Ok(Appended::Duplicate { id });
                    }
                }
                let n_live = matches.iter().filter(|m| m.creates_job()).count();
                let seq = next_event.fetch_add(1, Ordering::Relaxed);
                let first_job = next_job.fetch_add(n_live as i64, Ordering::Relaxed);
                let jobs =
                    insert_event(c, seq, first_job, &event, &matches, &headers, &matches_json)?;
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
