//! The embedded store's history: attempts written by the writer thread, reads through the
//! shared read model ([`super::reads`]).

#[allow(clippy::wildcard_imports)]
use super::*;

#[async_trait]
impl History for Embedded {
    async fn record(&self, a: Attempt) -> Result<(), StoreError> {
        self.write(move |c, _| insert_attempt(c, &a)).await
    }

    fn record_later(&self, a: Attempt) {
        let f: writer::WriteFn = Box::new(move |c, _| {
            insert_attempt(c, &a)
                .map(|()| Box::new(()) as writer::Value)
                .inspect_err(
                    |e| tracing::error!(run = %a.run_id, error = %e, "cannot record an attempt in the history"),
                )
        });
        if self.write_later(f).is_err() {
            tracing::error!("cannot record an attempt: the store has shut down");
        }
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.read(move |c| reads::events(c, &filter)).await
    }

    async fn contents(
        &self,
        ids: Vec<String>,
        max_body: usize,
    ) -> Result<Vec<crate::store::EventContent>, StoreError> {
        self.read(move |c| reads::contents(c, &ids, max_body)).await
    }

    async fn event_detail(&self, id: &str) -> Result<Option<EventDetail>, StoreError> {
        let id = id.to_string();
        self.read(move |c| reads::event_detail(c, &id)).await
    }

    async fn jobs(&self, filter: JobFilter) -> Result<Vec<JobRow>, StoreError> {
        self.read(move |c| reads::jobs(c, &filter)).await
    }

    async fn job(&self, id: &str) -> Result<Option<(Job, JobState)>, StoreError> {
        let id = id.to_string();
        self.read(move |c| reads::job(c, &id)).await
    }

    async fn stored(
        &self,
        since_ms: i64,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<crate::store::Stored>, StoreError> {
        self.read(move |c| reads::stored(c, since_ms, after.as_deref(), limit))
            .await
    }
}
