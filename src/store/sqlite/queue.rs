//! The embedded store's work queue: leases from the in-memory lanes, every state change a
//! write of the job's row (the durable truth), dead letters and re-runs.

#[allow(clippy::wildcard_imports)]
use super::*;

#[async_trait]
impl WorkQueue for Embedded {
    async fn fetch(
        &self,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let _ = owner; // one process owns the embedded store
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (next, want_refill) = {
                let mut lanes = self.lanes();
                let next = lanes.next(ttl);
                let want = lanes.spilled && !lanes.refilling && lanes.ready() < CAP / 2;
                (next, want)
            };
            if want_refill {
                self.request_refill();
            }
            match next {
                Next::Job(q, token) => {
                    let q = *q;
                    let q_lost = q.lost;
                    let lease = Lease {
                        job: q.job,
                        event: q.event,
                        token,
                        seq: q.seq,
                        deliveries: q.deliveries,
                    };
                    if q_lost >= self.max_deliveries {
                        let error = format!(
                            "{q_lost} leases of it were lost (its worker crashed, panicked or stalled each time): given up"
                        );
                        tracing::error!(job = %lease.job.id, "{error}; it is now a dead letter");
                        let step = lease.job.step.clone();
                        self.ack(lease, step, JobState::Failed, Some(error)).await?;
                        continue;
                    }
                    return Ok(Some(lease));
                }
                Next::WaitUntil(at) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    let until = at.map_or(deadline, |a| a.min(deadline));
                    let _ =
                        tokio::time::timeout(until.saturating_duration_since(now), notified).await;
                }
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        if self.lanes().extend(lease.token, ttl) {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "the lease on job {} has expired",
                lease.job.id
            )))
        }
    }

    async fn progress(&self, lease: &mut Lease, step: Step) -> Result<(), StoreError> {
        let f = self.job_write(lease, JobUpdate::new(JobState::Pending, &step))?;
        self.submit(f, false)?.await.map_err(|_| shut_down())??;
        lease.job.step = step;
        self.lanes().update(lease.token, &lease.job);
        Ok(())
    }

    async fn nak(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError> {
        self.give_back(&lease, step, delay, false)
    }

    async fn abandon(&self, lease: Lease, step: Step, delay: Duration) -> Result<(), StoreError> {
        self.give_back(&lease, step, delay, true)
    }

    async fn ack(
        &self,
        lease: Lease,
        step: Step,
        state: JobState,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let f = self.job_write(
            &lease,
            JobUpdate {
                error,
                release: Some(None),
                ..JobUpdate::new(state, &step)
            },
        )?;
        self.write_later(f)
    }

    async fn rerun(&self, job: Job) -> Result<bool, StoreError> {
        let awaiting = schema::awaiting(&job.step);
        let step = serde_json::to_string(&job.step).map_err(storage)?;
        let event = self.event(&job.event_id).await?;
        self.write(move |c, pushes| {
            let Some(seq) = reads::job_seq(c, &job.id)? else {
                return Ok(false);
            };
            let n = c.execute(
                "UPDATE jobs SET state = 'pending', step = ?2, fingerprint = ?3, error = NULL,
                   not_before = NULL, updated_at = ?4, awaiting = ?5
                 WHERE seq = ?1 AND state = 'failed'",
                params![seq, step, job.fingerprint, now_ms(), awaiting],
            )?;
            if n == 0 {
                return Ok(false);
            }
            pushes.push(Push::Rerun(Queued {
                seq,
                job: job.clone(),
                event: event.clone(),
                deliveries: 0,
                lost: 0,
            }));
            Ok(true)
        })
        .await
        .inspect(|queued| {
            if *queued {
                self.pending.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn wake(&self, id: &str) {
        if self.lanes().wake(id) {
            self.shared.ready.notify_waiters();
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Writes commit in the order they were queued: this one commits after all before it.
        self.write(|_, _| Ok(())).await
    }

    fn depth(&self) -> QueueDepth {
        let l = self.lanes();
        QueueDepth {
            ready: l.ready(),
            delayed: l.delayed(),
            leased: l.leased(),
            spilled: l.spilled,
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}
