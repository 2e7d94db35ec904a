//! The embedded store's history, opened read-only (`rulehook whatif --data`). It takes no
//! `DATA/lock` and opens SQLite read-only, so it can neither write nor change the directory.
//! A running `serve` opens its journal with an exclusive lock (`unix-excl`): this view then
//! answers "database is locked", and a running service is read with `--url` instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use super::reads;
use super::writer::storage;
use crate::domain::{Attempt, Job, JobState, StoreError};
use crate::store::{EventDetail, EventFilter, EventRow, History, JobFilter, JobRow};

/// A read-only view of the history in a data directory.
pub struct ReadOnly {
    conn: Arc<Mutex<Connection>>,
}

impl ReadOnly {
    /// Opens `dir/journal.db` for reading. An error when it does not exist (a read-only view
    /// never creates a data directory).
    pub fn open(dir: &Path) -> Result<ReadOnly, StoreError> {
        let path: PathBuf = dir.join("journal.db");
        if !path.is_file() {
            return Err(StoreError::Permanent(format!(
                "no event log in {} (expected {})",
                dir.display(),
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Permanent(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(storage)?;
        Ok(ReadOnly {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&c).map_err(storage)
        })
        .await
        .map_err(|e| StoreError::Transient(format!("reader task: {e}")))?
    }
}

fn read_only() -> StoreError {
    StoreError::Permanent("this view of the history is read-only".into())
}

#[async_trait]
impl History for ReadOnly {
    async fn record(&self, _: Attempt) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn record_later(&self, a: Attempt) {
        tracing::error!(run = %a.run_id, "{}", read_only());
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.read(move |c| reads::events(c, &filter)).await
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
