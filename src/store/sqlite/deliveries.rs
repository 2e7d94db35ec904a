//! The delivery ids the embedded store has seen within their windows, kept in memory.
//!
//! Why memory and not a table: a delivery id's claim was a row in `state` under a key such as
//! `dedup/<source>/<sha-256 of the body>`, a random key, so every event inserted into a random
//! leaf of that B-tree (page splits, one more 4 KB page in the WAL per event): 13.8k of the
//! 177k instructions an event with one matching rule cost (benches/callgrind.sh, `DEDUP=off`).
//! Now the event's row carries the end of its window (`events.dedup_until`, indexed only where
//! set, an ever-growing key appended at the index's right edge), and this map answers
//! "seen?" in a few hundred instructions. The map is rebuilt from that index when the store
//! opens, so a redelivery after a restart is still a duplicate.
//!
//! Keys are a keyed BLAKE3 hash (128 bits, a key per process) of the source and the delivery
//! id: ~56 bytes per live entry whatever the sender's ids look like, and a sender cannot aim
//! two ids at one entry. Expired entries read as absent and are swept once the map has doubled.

use std::collections::HashMap;

use rusqlite::{Connection, params};

/// A delivery's entry: the event that claimed it, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub id: EventId,
    pub until: i64,
}

/// An event id, held in 16 bytes when it is a UUID as rulehook writes it (every id it gives),
/// as text otherwise (ids from elsewhere, in tests and imports).
#[derive(Debug, Clone, PartialEq)]
pub enum EventId {
    Uuid(u128),
    Text(Box<str>),
}

impl EventId {
    pub fn new(id: &str) -> EventId {
        match uuid::Uuid::try_parse(id) {
            Ok(u) if u.hyphenated().to_string() == id => EventId::Uuid(u.as_u128()),
            _ => EventId::Text(id.into()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            EventId::Uuid(u) => uuid::Uuid::from_u128(*u).hyphenated().to_string(),
            EventId::Text(t) => t.to_string(),
        }
    }
}

/// The live claims of a journal at `?1` (ms): through the partial index `events_dedup`, so an
/// open reads only them, however many events the journal keeps.
pub const LOAD: &str = "SELECT id, source, delivery, dedup_until FROM events
     WHERE dedup_until IS NOT NULL AND dedup_until >= ?1 AND delivery IS NOT NULL";

/// The hash a delivery is kept under.
pub type Key = u128;

/// The live delivery ids (see the module's doc).
pub struct Deliveries {
    hasher: blake3::Hasher,
    map: HashMap<Key, Claim, foldhash::fast::RandomState>,
    /// The map's size at which expired entries are swept next.
    sweep_at: usize,
}

/// The smallest size at which a sweep runs.
const SWEEP_FLOOR: usize = 1024;

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            hasher: blake3::Hasher::new_keyed(&rand::random()),
            map: HashMap::default(),
            sweep_at: SWEEP_FLOOR,
        }
    }
}

impl Deliveries {
    /// The key of `delivery` from `source` (names cannot hold `/`, so the pair is unambiguous
    /// with a separator that a name cannot hold either).
    pub fn key(&self, source: &str, delivery: &str) -> Key {
        let mut h = self.hasher.clone();
        h.update(source.as_bytes());
        h.update(b"/");
        h.update(delivery.as_bytes());
        let bytes = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&bytes.as_bytes()[..16]);
        u128::from_le_bytes(first)
    }

    /// The claim on `key` that has not expired by `now` (ms).
    pub fn live(&self, key: Key, now: i64) -> Option<&Claim> {
        self.map.get(&key).filter(|c| c.until >= now)
    }

    /// Records a committed claim (replacing an expired one), sweeping expired entries when the
    /// map has doubled since the last sweep.
    pub fn insert(&mut self, key: Key, claim: Claim, now: i64) {
        self.map.insert(key, claim);
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, c| c.until >= now);
            self.sweep_at = (self.map.len() * 2).max(SWEEP_FLOOR);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    /// Every claim of the journal still live at `now`: events whose `dedup_until` is later,
    /// read through the partial index `events_dedup`.
    pub fn load(&mut self, c: &Connection, now: i64) -> rusqlite::Result<()> {
        let mut st = c.prepare(LOAD)?;
        let mut rows = st.query(params![now])?;
        while let Some(r) = rows.next()? {
            let (id, source, delivery, until): (String, String, String, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let key = self.key(&source, &delivery);
            // Two events of one delivery (the first's window passed before the second came):
            // the later window is the one in force.
            if self.map.get(&key).is_none_or(|c| c.until < until) {
                let claim = Claim {
                    id: EventId::new(&id),
                    until,
                };
                self.map.insert(key, claim);
            }
        }
        self.sweep_at = (self.map.len() * 2).max(SWEEP_FLOOR);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_both_forms() {
        for id in [
            "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
            "{0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
            "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b",
            "e1",
            "",
        ] {
            assert_eq!(EventId::new(id).text(), id);
        }
        assert!(matches!(
            EventId::new("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            EventId::Uuid(_)
        ));
    }

    #[test]
    fn keys_separate_sources_and_ids() {
        let d = Deliveries::default();
        assert_eq!(d.key("a", "x"), d.key("a", "x"));
        assert_ne!(d.key("a", "x"), d.key("b", "x"));
        assert_ne!(d.key("a", "bx"), d.key("ab", "x"));
        // Another process keys differently: a sender cannot learn where an id lands.
        assert_ne!(d.key("a", "x"), Deliveries::default().key("a", "x"));
    }

    #[test]
    fn expired_claims_read_as_absent_and_are_swept() {
        let mut d = Deliveries::default();
        let claim = |until| Claim {
            id: EventId::new("e"),
            until,
        };
        d.insert(d.key("s", "old"), claim(10), 0);
        assert!(d.live(d.key("s", "old"), 10).is_some());
        assert!(d.live(d.key("s", "old"), 11).is_none());
        for n in 0..SWEEP_FLOOR {
            let k = d.key("s", &n.to_string());
            d.insert(k, claim(1000), 500);
        }
        // The sweep at the floor (the old entry and 1,023 live ones) dropped the expired
        // entry and kept the live ones; the next sweep waits for twice those.
        assert_eq!(d.len(), SWEEP_FLOOR);
        assert!(!d.map.contains_key(&d.key("s", "old")));
        assert_eq!(d.sweep_at, (SWEEP_FLOOR - 1) * 2);
    }
}
