//! The embedded store's state store: the `state` table, one global revision counter,
//! expired rows read as absent.

#[allow(clippy::wildcard_imports)]
use super::*;

#[async_trait]
impl StateStore for Embedded {
    async fn get(&self, key: &str) -> Result<Option<(String, Revision)>, StoreError> {
        let key = key.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT value, revision FROM state WHERE key = ?1
                   AND (expires_at IS NULL OR expires_at >= ?2)",
                params![key, now_ms()],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
        })
        .await
    }

    async fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        let (key, value, revs) = (key.to_string(), value.to_string(), self.next_rev.clone());
        let k = key.clone();
        let created = self
            .write(move |c, _| {
                let now = now_ms();
                let rev = revs.fetch_add(1, Ordering::Relaxed);
                let n = c.prepare_cached(schema::CLAIM_STATE)?.execute(params![
                    key,
                    value,
                    rev as i64,
                    ttl.map(|t| now + t.as_millis() as i64),
                    now
                ])?;
                Ok((n > 0).then_some(rev))
            })
            .await?;
        created.ok_or_else(|| StoreError::Conflict(format!("`{k}` exists")))
    }

    async fn update(
        &self,
        key: &str,
        value: &str,
        expected: Revision,
        ttl: Option<Duration>,
    ) -> Result<Revision, StoreError> {
        let (key, value, revs) = (key.to_string(), value.to_string(), self.next_rev.clone());
        let k = key.clone();
        let updated = self
            .write(move |c, _| {
                let now = now_ms();
                let rev = revs.fetch_add(1, Ordering::Relaxed);
                let n = c.execute(
                    "UPDATE state SET value = ?2, revision = ?3, expires_at = ?4
                     WHERE key = ?1 AND revision = ?5 AND (expires_at IS NULL OR expires_at >= ?6)",
                    params![
                        key,
                        value,
                        rev as i64,
                        ttl.map(|t| now + t.as_millis() as i64),
                        expected as i64,
                        now
                    ],
                )?;
                Ok((n > 0).then_some(rev))
            })
            .await?;
        updated
            .ok_or_else(|| StoreError::Conflict(format!("`{k}` changed since revision {expected}")))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(), StoreError> {
        let key = key.to_string();
        let k = key.clone();
        let n = self
            .write(move |c, _| {
                c.execute(
                    "DELETE FROM state WHERE key = ?1 AND (?2 IS NULL OR revision = ?2)",
                    params![key, expected.map(|r| r as i64)],
                )
            })
            .await?;
        if n == 0 && expected.is_some() {
            return Err(StoreError::Conflict(format!(
                "`{k}` changed since revision {}",
                expected.unwrap_or_default()
            )));
        }
        Ok(())
    }
}
