//! The embedded work queue's memory: ready jobs in one lane per rule (rules take turns, each
//! lane in acceptance order), delayed retries, and leases with deadlines.
//!
//! SQLite holds every pending job; memory holds at most [`CAP`] ready ones. When more arrive,
//! the rest stay only in SQLite ("spilled") and the writer thread refills from a cursor on the
//! job sequence. Pushes and refills both happen on the writer thread, after commits, in
//! sequence order, so no job is missed or loaded twice.

use std::collections::{BTreeMap, VecDeque};

/// The lanes' maps are keyed by rule keys (from the rulebooks) and numbers this process hands
/// out, never by what a sender chose: a fast hasher instead of SipHash (~1.5k instructions per
/// event across the look-ups of a fetch and a release).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{Event, Job};

/// Ready jobs held in memory at most.
pub const CAP: usize = 1024;

/// A job the queue holds.
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: i64,
    pub job: Job,
    pub event: Option<Arc<Event>>,
    pub deliveries: u32,
    /// Leases that ended without an ack or a nak (expired), or were abandoned (a panic).
    pub lost: u32,
}

#[derive(Debug)]
struct Leased {
    q: Queued,
    deadline: Instant,
    /// Woken while leased: a delay it is given back with is cut to nothing.
    woken: bool,
}

#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<String, VecDeque<Queued>>,
    /// Lanes with ready jobs, in turn order.
    ring: VecDeque<String>,
    ready: usize,
    delayed: BTreeMap<(Instant, i64), Queued>,
    leased: HashMap<u64, Leased>,
    /// Sequence numbers leased or delayed, so a refill never loads them twice.
    held: HashMap<i64, u64>,
    next_token: u64,
    /// Pending jobs with a sequence above `cursor` are only in SQLite.
    pub spilled: bool,
    pub cursor: i64,
    pub refilling: bool,
}

/// What a fetch found.
pub enum Next {
    Job(Box<Queued>, u64),
    /// Nothing ready; something may be by then.
    WaitUntil(Option<Instant>),
}

impl Lanes {
    pub fn new() -> Lanes {
        Lanes {
            spilled: true,
            ..Lanes::default()
        }
    }

    pub fn ready(&self) -> usize {
        self.ready
    }
    pub fn delayed(&self) -> usize {
        self.delayed.len()
    }
    pub fn leased(&self) -> usize {
        self.leased.len()
    }

    /// A newly committed job (writer thread, in sequence order).
    pub fn push_new(&mut self, q: Queued) {
        if self.spilled || self.ready >= CAP {
            self.spilled = true;
            return;
        }
        self.cursor = self.cursor.max(q.seq);
        self.push_ready(q);
    }

    /// A job loaded by a refill (writer thread).
    pub fn push_loaded(&mut self, q: Queued, due: Option<Instant>) {
        self.cursor = self.cursor.max(q.seq);
        if self.held.contains_key(&q.seq) {
            return;
        }
        match due {
            Some(at) if at > Instant::now() => {
                self.held.insert(q.seq, 0);
                self.delayed.insert((at, q.seq), q);
            }
            _ => self.push_ready(q),
        }
    }

    /// A job made pending again by a re-run.
    pub fn push_rerun(&mut self, q: Queued) {
        if q.seq > self.cursor && self.spilled {
            return; // a refill will load it
        }
        self.push_ready(q);
    }

    fn push_ready(&mut self, q: Queued) {
        let lane = self.lanes.entry(q.job.key.clone()).or_default();
        if lane.is_empty() {
            self.ring.push_back(q.job.key.clone());
        }
        // Keep each lane in sequence order (retries and re-runs come back in their place).
        if lane.back().is_some_and(|b| b.seq > q.seq) {
            let at = lane.partition_point(|x| x.seq < q.seq);
            lane.insert(at, q);
        } else {
            lane.push_back(q);
        }
        self.ready += 1;
    }

    /// Moves due retries and expired leases back to the lanes.
    fn tick(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let q = entry.remove();
            self.held.remove(&q.seq);
            self.push_ready(q);
        }
        let expired: Vec<u64> = self
            .leased
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(mut l) = self.leased.remove(&t) {
                self.held.remove(&l.q.seq);
                l.q.lost += 1;
                self.push_ready(l.q);
            }
        }
    }

    /// Leases the next job, rules taking turns.
    pub fn next(&mut self, ttl: Duration) -> Next {
        let now = Instant::now();
        self.tick(now);
        while let Some(key) = self.ring.pop_front() {
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            let Some(mut q) = lane.pop_front() else {
                self.lanes.remove(&key);
                continue;
            };
            if lane.is_empty() {
                self.lanes.remove(&key);
            } else {
                self.ring.push_back(key);
            }
            self.ready -= 1;
            q.deliveries += 1;
            self.next_token += 1;
            let token = self.next_token;
            self.held.insert(q.seq, token);
            // The leased copy, for a lease that lapses or a job given back, keeps no event:
            // the lease carries it, and the last reference is dropped where the job ran, not
            // on the writer thread when the ack commits (a job given back reads it again).
            let kept = Queued {
                seq: q.seq,
                job: q.job.clone(),
                event: None,
                deliveries: q.deliveries,
                lost: q.lost,
            };
            self.leased.insert(
                token,
                Leased {
                    q: kept,
                    deadline: now + ttl,
                    woken: false,
                },
            );
            return Next::Job(Box::new(q), token);
        }
        let soonest = self
            .delayed
            .keys()
            .next()
            .map(|k| k.0)
            .into_iter()
            .chain(self.leased.values().map(|l| l.deadline))
            .min();
        Next::WaitUntil(soonest)
    }

    /// Whether `token` still holds its lease (known and not past its deadline).
    pub fn holds(&self, token: u64) -> bool {
        self.leased
            .get(&token)
            .is_some_and(|l| l.deadline > Instant::now())
    }

    pub fn extend(&mut self, token: u64, ttl: Duration) -> bool {
        match self.leased.get_mut(&token) {
            Some(l) => {
                l.deadline = Instant::now() + ttl;
                true
            }
            None => false,
        }
    }

    /// Updates the leased copy (progress), so an expiry re-delivers the new step.
    pub fn update(&mut self, token: u64, job: &Job) -> bool {
        match self.leased.get_mut(&token) {
            Some(l) => {
                l.q.job = job.clone();
                true
            }
            None => false,
        }
    }

    /// Makes the job `id` ready now if it waits out a delay, or, if it is leased, makes the delay
    /// it will be given back with nothing (something it waits for happened: a decision).
    /// Only memory changes: after a restart the job's stored delay applies. `true` if found.
    pub fn wake(&mut self, id: &str) -> bool {
        if let Some(l) = self.leased.values_mut().find(|l| l.q.job.id == id) {
            l.woken = true;
            return true;
        }
        let Some(key) = self
            .delayed
            .iter()
            .find(|(_, q)| q.job.id == id)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        if let Some(q) = self.delayed.remove(&key) {
            self.held.remove(&q.seq);
            self.push_ready(q);
        }
        true
    }

    /// Ends a lease: the job is done, or comes back after `delay` as `job`.
    /// `lost`: the lease was abandoned (it counts against the delivery budget).
    pub fn release(
        &mut self,
        token: u64,
        again: Option<(Job, Duration)>,
        lost: bool,
    ) -> Option<i64> {
        let l = self.leased.remove(&token)?;
        let seq = l.q.seq;
        self.held.remove(&seq);
        if let Some((job, delay)) = again {
            let delay = if l.woken { Duration::ZERO } else { delay };
            let mut q = l.q;
            q.lost += u32::from(lost);
            q.job = job;
            if delay.is_zero() {
                self.push_ready(q);
            } else {
                self.held.insert(seq, 0);
                self.delayed.insert((Instant::now() + delay, seq), q);
            }
        }
        Some(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Step;

    fn q(seq: i64, key: &str) -> Queued {
        Queued {
            seq,
            job: Job {
                id: format!("e{seq}:{key}"),
                event_id: format!("e{seq}"),
                rulebook: "b".into(),
                rule: key.into(),
                key: key.into(),
                fingerprint: "f".into(),
                step: Step::default(),
            },
            event: None,
            deliveries: 0,
            lost: 0,
        }
    }

    fn take(l: &mut Lanes) -> (i64, u64) {
        match l.next(Duration::from_secs(30)) {
            Next::Job(q, t) => (q.seq, t),
            Next::WaitUntil(_) => panic!("nothing ready"),
        }
    }

    #[test]
    fn rules_take_turns_and_each_keeps_its_order() {
        let mut l = Lanes::new();
        l.spilled = false;
        for s in 1..=5 {
            l.push_new(q(s, "slow"));
        }
        l.push_new(q(6, "fast"));
        l.push_new(q(7, "fast"));
        let order: Vec<i64> = (0..7).map(|_| take(&mut l).0).collect();
        assert_eq!(order, vec![1, 6, 2, 7, 3, 4, 5]);
    }

    /// The event travels with the lease only: once the lease and its job are dropped, the
    /// queue's memory holds no reference to it (its last one is not dropped on the writer
    /// thread by the ack); a job that comes back after a lapsed lease reads it again.
    #[test]
    fn the_leased_copy_holds_no_event() {
        let mut l = Lanes::new();
        l.spilled = false;
        let event = Arc::new(
            crate::verify::VerifiedEvent::replay("in", "bearer", serde_json::json!({}), &[], "x")
                .accept(),
        );
        l.push_new(Queued {
            event: Some(event.clone()),
            ..q(1, "r")
        });
        let Next::Job(leased, _) = l.next(Duration::from_millis(0)) else {
            panic!("nothing ready")
        };
        assert!(leased.event.is_some(), "the lease carries the event");
        drop(leased);
        assert_eq!(Arc::strong_count(&event), 1, "the lanes kept the event");
        std::thread::sleep(Duration::from_millis(2));
        let Next::Job(again, _) = l.next(Duration::from_secs(30)) else {
            panic!("the lapsed lease did not come back")
        };
        assert!(again.event.is_none());
    }

    #[test]
    fn an_expired_lease_comes_back_and_a_stale_token_is_refused() {
        let mut l = Lanes::new();
        l.spilled = false;
        l.push_new(q(1, "r"));
        let Next::Job(_, t) = l.next(Duration::from_millis(0)) else {
            panic!()
        };
        std::thread::sleep(Duration::from_millis(2));
        let (seq, t2) = take(&mut l);
        assert_eq!(seq, 1);
        assert!(!l.holds(t) && l.holds(t2));
        assert!(l.release(t, None, false).is_none());
    }

    #[test]
    fn past_the_cap_jobs_stay_spilled_until_refilled() {
        let mut l = Lanes::new();
        l.spilled = false;
        for s in 1..=(CAP as i64 + 3) {
            l.push_new(q(s, "r"));
        }
        assert!(l.spilled);
        assert_eq!(l.ready(), CAP);
        assert_eq!(l.cursor, CAP as i64);
        // A refill loads what is above the cursor, once.
        l.push_loaded(q(CAP as i64 + 1, "r"), None);
        assert_eq!(l.ready(), CAP + 1);
    }

    #[test]
    fn a_nak_delays_and_then_returns() {
        let mut l = Lanes::new();
        l.spilled = false;
        l.push_new(q(1, "r"));
        let (_, t) = take(&mut l);
        let job = q(1, "r").job;
        l.release(t, Some((job, Duration::from_millis(30))), false);
        assert!(matches!(
            l.next(Duration::from_secs(1)),
            Next::WaitUntil(Some(_))
        ));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(take(&mut l).0, 1);
    }

    fn lanes(seqs: std::ops::RangeInclusive<i64>) -> Lanes {
        let mut l = Lanes::new();
        l.spilled = false;
        for s in seqs {
            l.push_new(q(s, "r"));
        }
        l
    }

    #[test]
    fn a_job_given_back_at_once_comes_back_in_its_place_in_the_lane() {
        let mut l = lanes(1..=3);
        let (_, t1) = take(&mut l);
        let (_, t2) = take(&mut l);
        assert_ne!(t1, t2, "each lease has its own token");
        assert!(l.holds(t1) && l.holds(t2));
        assert_eq!(l.ready(), 1, "leased jobs are not ready");
        l.release(t2, Some((q(2, "r").job, Duration::ZERO)), false);
        l.release(t1, Some((q(1, "r").job, Duration::ZERO)), false);
        assert_eq!(l.ready(), 3);
        let order: Vec<i64> = (0..3).map(|_| take(&mut l).0).collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_release_names_the_job_and_counts_deliveries_and_lost_leases() {
        let mut l = lanes(7..=7);
        let lease = |l: &mut Lanes, ttl| match l.next(ttl) {
            Next::Job(q, t) => (*q, t),
            Next::WaitUntil(_) => panic!("nothing ready"),
        };
        let (first, t) = lease(&mut l, Duration::ZERO);
        assert_eq!((first.deliveries, first.lost), (1, 0));
        // The lease lapsed: the job comes back, once more delivered and once lost.
        assert!(!l.holds(t));
        let (again, t) = lease(&mut l, Duration::from_secs(30));
        assert_eq!((again.deliveries, again.lost), (2, 1));
        // Given back as abandoned (a panic): lost again.
        assert_eq!(
            l.release(t, Some((again.job, Duration::ZERO)), true),
            Some(7)
        );
        let (third, t) = lease(&mut l, Duration::from_secs(30));
        assert_eq!((third.deliveries, third.lost), (3, 2));
        assert_eq!(l.release(t, None, false), Some(7), "the job's sequence");
        assert_eq!((l.ready(), l.leased(), l.delayed()), (0, 0, 0));
    }

    #[test]
    fn an_extended_or_updated_lease_keeps_the_job_and_its_new_step() {
        let mut l = lanes(1..=1);
        let Next::Job(_, t) = l.next(Duration::ZERO) else {
            panic!("nothing ready")
        };
        assert!(l.extend(t, Duration::from_secs(30)));
        assert!(l.holds(t), "extended past now");
        let mut job = q(1, "r").job;
        job.step.index = 2;
        assert!(l.update(t, &job));
        assert!(!l.extend(t + 1, Duration::from_secs(30)), "no such lease");
        assert!(!l.update(t + 1, &job), "no such lease");
        // The lease lapses: the job comes back at its recorded step.
        assert!(l.extend(t, Duration::ZERO));
        let Next::Job(back, _) = l.next(Duration::from_secs(30)) else {
            panic!("the lapsed lease did not come back")
        };
        assert_eq!(back.job.step.index, 2);
    }

    #[test]
    fn a_refill_delays_what_is_not_due_and_a_rerun_above_the_cursor_waits_for_it() {
        let mut l = Lanes::new();
        let hour = Instant::now() + Duration::from_secs(3600);
        let past = Instant::now().checked_sub(Duration::from_secs(1));
        l.push_loaded(q(1, "r"), Some(hour));
        l.push_loaded(q(2, "r"), past);
        l.push_loaded(q(3, "r"), None);
        assert_eq!((l.ready(), l.delayed(), l.cursor), (2, 1, 3));
        // Loaded twice (delayed already): kept once.
        l.push_loaded(q(1, "r"), None);
        assert_eq!((l.ready(), l.delayed()), (2, 1));
        // Spilled: a re-run above the cursor is left to the refill, one below it is ready.
        l.push_rerun(q(9, "r"));
        assert_eq!(l.ready(), 2);
        l.push_rerun(q(0, "r"));
        assert_eq!(l.ready(), 3);
        // Not spilled: every re-run is ready.
        l.spilled = false;
        l.push_rerun(q(10, "r"));
        assert_eq!(l.ready(), 4);
    }

    #[test]
    fn a_woken_job_comes_back_at_once_delayed_or_leased() {
        let mut l = Lanes::new();
        l.spilled = false;
        l.push_new(q(1, "r"));
        let (_, t) = take(&mut l);
        let job = q(1, "r").job;
        // Waiting out an hour: woken, it is ready now.
        l.release(t, Some((job.clone(), Duration::from_secs(3600))), false);
        assert!(l.wake(&job.id));
        let (seq, t) = take(&mut l);
        assert_eq!(seq, 1);
        // Woken while leased: given back with an hour's delay, it is ready at once.
        assert!(l.wake(&job.id));
        l.release(t, Some((job.clone(), Duration::from_secs(3600))), false);
        assert_eq!(take(&mut l).0, 1);
        assert!(!l.wake("no-such-job"));
    }
}
