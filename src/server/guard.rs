//! The server's defences that are not about one source: who is admin, how much work may wait,
//! and how many failed verifications one client address may make.
//!
//! They exist because the edge must stay usable under abuse: a forger must not spend the real
//! sender's rate limit, a flood must not fill the disk, and a local reverse proxy must not make
//! everyone behind it admin.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Settings and state shared by the request handlers.
#[derive(Debug)]
pub struct Guard {
    /// Whether loopback clients may use the admin API without the token. Off behind a local
    /// reverse proxy: every client would look like loopback.
    pub admin_loopback: bool,
    /// Pending jobs past which new events are refused with 503 (0: no bound).
    pub max_pending: usize,
    /// Failed verifications per client address.
    pub failures: FailureLimit,
    /// The last write probe of `/healthz`.
    pub health: HealthProbe,
}

/// Default of `--max-pending`.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

impl Default for Guard {
    fn default() -> Self {
        Guard {
            admin_loopback: true,
            max_pending: DEFAULT_MAX_PENDING,
            failures: FailureLimit::new(10.0, 50),
            health: HealthProbe::default(),
        }
    }
}

/// `/healthz`'s write probe, run at most once per [`HealthProbe::EVERY`]: polling it often
/// costs no more than polling it once a second.
#[derive(Debug, Default)]
pub struct HealthProbe {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), crate::domain::StoreError>)>>,
}

impl HealthProbe {
    pub const EVERY: Duration = Duration::from_secs(1);

    /// The result of `probe`, run now unless it ran within [`HealthProbe::EVERY`].
    pub async fn probe<F, Fut>(&self, probe: F) -> Result<(), crate::domain::StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), crate::domain::StoreError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < Self::EVERY
        {
            return result.clone();
        }
        let result = probe().await;
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// A token bucket per client address, spent only by requests that failed verification. A client
/// with an empty bucket is refused (429) before its request is verified; clients that verify are
/// never counted, so a forger cannot lock a real sender out.
#[derive(Debug)]
pub struct FailureLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Addresses tracked at most; past it, full buckets (idle clients) are forgotten first.
const MAX_TRACKED: usize = 65_536;

impl FailureLimit {
    /// `per_second` failures refill; `burst` may come at once. `per_second` ≤ 0: no limit.
    pub fn new(per_second: f64, burst: u32) -> FailureLimit {
        FailureLimit {
            per_second: if per_second.is_finite() {
                per_second.max(0.0)
            } else {
                0.0
            },
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn tokens(&self, entry: &(f64, Instant), now: Instant) -> f64 {
        let refill = now.saturating_duration_since(entry.1).as_secs_f64() * self.per_second;
        (entry.0 + refill).min(self.burst)
    }

    /// `Err(wait)` when `ip` used up its failures: refuse it without verifying.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(&ip) {
            Some(entry) => {
                let tokens = self.tokens(entry, Instant::now());
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Duration::from_secs_f64(
                        ((1.0 - tokens) / self.per_second).min(3600.0),
                    ))
                }
            }
            None => Ok(()),
        }
    }

    /// Counts one failed verification from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.per_second <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            let burst = self.burst;
            buckets.retain(|_, e| {
                let refill = now.saturating_duration_since(e.1).as_secs_f64() * self.per_second;
                e.0 + refill < burst
            });
            if buckets.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = buckets.entry(ip).or_insert((self.burst, now));
        let tokens = self.tokens(entry, now);
        *entry = ((tokens - 1.0).max(0.0), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_address() {
        let limit = FailureLimit::new(0.001, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
            limit.failed(a);
        }
        assert!(limit.check(a).is_err(), "a used its burst");
        assert!(limit.check(b).is_ok(), "b is not affected");
        let off = FailureLimit::new(0.0, 1);
        off.failed(a);
        off.failed(a);
        assert!(off.check(a).is_ok());
    }
}
