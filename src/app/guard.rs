//! The server's defences that are not about one source: who is admin, how much work may wait,
//! and how many failed verifications one client address may make.
//!
//! They exist because the edge must stay usable under abuse: a forger must not spend the real
//! sender's rate limit, a flood must not fill the disk, and a local reverse proxy must not make
//! everyone behind it admin.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings and state shared by the request handlers.
#[derive(Debug)]
pub struct Guard {
    /// Whether loopback clients may use the admin API without the token. Off behind a local
    /// reverse proxy: every client would look like loopback.
    pub admin_loopback: bool,
    /// The `Host` names the admin API and the console answer to (DNS rebinding).
    pub admin_hosts: super::admin_plane::AdminHosts,
    /// Pending jobs past which new events are refused with 503 (0: no bound).
    pub max_pending: usize,
    /// Failed webhook verifications per client address.
    pub failures: FailureLimit,
    /// Failed console sign-ins per client address: the same limit as `failures`, with a budget
    /// of its own, so that forged webhooks sent through the same address (a reverse proxy)
    /// cannot lock out the people who sign in to approve changes, nor wrong sign-ins the
    /// webhooks.
    pub login_failures: FailureLimit,
    /// Wrong bearer tokens per client address (the admin API, `/metrics`): the same limit as
    /// `failures`, with a budget of its own, so that forged webhooks sent through the same
    /// address (a reverse proxy) cannot lock the admin API out.
    pub token_failures: FailureLimit,
    /// The last write probe of `/healthz`.
    pub health: HealthProbe,
    /// Live streams open at once (`/console/live`).
    pub live: LiveLimit,
    /// The users file (`users.json` in the data directory); `None`: no users, only the admin
    /// token and loopback.
    pub users: Option<crate::access::Users>,
    /// `--trust-user-header`: people named by a trusted reverse proxy.
    pub sso: Option<crate::access::sso::TrustedHeader>,
}

impl Guard {
    /// Whether new events are refused (503): `pending` jobs reach `--max-pending`, not counting
    /// `waiting` jobs (absence deadlines, held by a window, awaiting approval: they do no work)
    /// up to `WAITING_PER_PENDING` times `--max-pending` of them. So a long freeze or a slow
    /// approver does not stop intake, and what waits still has a bound (past it, waiting jobs
    /// count again: at most `(WAITING_PER_PENDING + 1) × --max-pending` jobs pending).
    pub fn busy(&self, pending: usize, waiting: usize) -> bool {
        let max = self.max_pending;
        max > 0
            && pending.saturating_sub(waiting.min(max.saturating_mul(WAITING_PER_PENDING))) >= max
    }
}

/// How many waiting jobs per `--max-pending` are not counted as back pressure.
pub const WAITING_PER_PENDING: usize = 10;

/// Default of `--max-pending`.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

impl Default for Guard {
    fn default() -> Self {
        Guard {
            admin_loopback: true,
            admin_hosts: Default::default(),
            max_pending: DEFAULT_MAX_PENDING,
            failures: FailureLimit::new(10.0, 50),
            login_failures: FailureLimit::new(10.0, 50),
            token_failures: FailureLimit::new(10.0, 50),
            health: HealthProbe::default(),
            live: LiveLimit::for_connections(1024, 0),
            users: None,
            sso: None,
        }
    }
}

/// Live streams (`/console/live`) open at once, in all and per client address. A stream holds
/// its connection for as long as its page is open, so without a cap of their own they could take
/// every connection of `--max-connections` and starve the webhook paths and `/healthz`.
#[derive(Debug)]
pub struct LiveLimit {
    total: usize,
    per_client: usize,
    open: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

impl LiveLimit {
    /// A quarter of `max_connections` in all, and of that the share of one client address:
    /// `per_client_connections` (0: an eighth), at most all of it.
    pub fn for_connections(max_connections: usize, per_client_connections: usize) -> LiveLimit {
        let total = (max_connections / 4).max(1);
        let per_client = match per_client_connections {
            0 => (total / 8).max(1),
            n => n.min(total),
        };
        LiveLimit {
            total,
            per_client,
            open: Arc::default(),
        }
    }

    /// A slot for one stream from `ip`, held until dropped; `None` past either cap.
    pub fn open(&self, ip: IpAddr) -> Option<LiveSlot> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, clients) = &mut *open;
        let mine = clients.get(&ip).copied().unwrap_or(0);
        if *all >= self.total || mine >= self.per_client {
            return None;
        }
        *all += 1;
        clients.insert(ip, mine + 1);
        Some(LiveSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

/// One open live stream, counted until dropped.
pub struct LiveSlot {
    ip: IpAddr,
    open: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, clients) = &mut *open;
        *all = all.saturating_sub(1);
        if let Some(n) = clients.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.ip);
            }
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

/// A token bucket per client address, spent only by requests that failed verification: past it,
/// a failed verification is answered 429 (back off) instead of 401. Verified requests are never
/// counted nor refused, so a forger cannot lock out a real sender, not even one behind the same
/// address (a proxy).
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

    /// Counts one failed verification from `ip`; `Err(wait)` when it had none left.
    pub fn failed(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
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
                return Ok(());
            }
        }
        let entry = buckets.entry(ip).or_insert((self.burst, now));
        let tokens = self.tokens(entry, now);
        *entry = ((tokens - 1.0).max(0.0), now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - tokens) / self.per_second).min(3600.0),
            ))
        }
    }

    /// Gives back the try [`FailureLimit::failed`] took for a request that then succeeded (a
    /// sign-in spends a try before its credentials are checked, so that past the budget none
    /// are checked at all).
    pub fn refund(&self, ip: IpAddr) {
        if self.per_second <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = buckets.get_mut(&ip) {
            let tokens = self.tokens(entry, now);
            *entry = ((tokens + 1.0).min(self.burst), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_jobs_are_not_back_pressure() {
        let g = Guard {
            max_pending: 10,
            ..Guard::default()
        };
        assert!(!g.busy(9, 0));
        assert!(g.busy(10, 0));
        assert!(!g.busy(15, 6), "six of them only wait");
        assert!(
            !g.busy(20, 15),
            "waiting jobs past max_pending do not count"
        );
        assert!(!g.busy(100, 100), "only waiting jobs: never busy");
        assert!(!g.busy(109, 100), "nine that work");
        assert!(g.busy(110, 100), "ten that work");
        assert!(
            g.busy(120, 120),
            "at most ten times max_pending waiting jobs are set aside"
        );
        let tight = Guard {
            max_pending: 2,
            ..Guard::default()
        };
        assert!(!tight.busy(5, 5), "five awaiting approval, none runnable");
        let off = Guard {
            max_pending: 0,
            ..Guard::default()
        };
        assert!(!off.busy(1_000_000, 0));
    }

    #[test]
    fn live_streams_have_their_own_caps() {
        let live = LiveLimit::for_connections(32, 0);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = live.open(a).expect("room");
        assert!(live.open(a).is_none(), "one per address (8 / 8)");
        let others: Vec<_> = (4..11)
            .map(|i| live.open(IpAddr::from([127, 0, 0, i])).expect("room"))
            .collect();
        assert!(live.open(b).is_none(), "8 in all");
        drop(first);
        assert!(live.open(b).is_some(), "a closed stream frees its slot");
        drop(others);
    }

    #[test]
    fn failures_are_counted_per_address() {
        let limit = FailureLimit::new(0.001, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.failed(a).is_ok());
        }
        assert!(limit.failed(a).is_err(), "a used its burst");
        assert!(limit.failed(b).is_ok(), "b is not affected");
        let off = FailureLimit::new(0.0, 1);
        for _ in 0..3 {
            assert!(off.failed(a).is_ok());
        }
        // A try taken up front and given back (a sign-in that succeeded) costs nothing.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..10 {
            assert!(limit.failed(c).is_ok());
            limit.refund(c);
        }
        assert!(limit.failed(c).is_ok(), "refunds are not spent");
    }
}
