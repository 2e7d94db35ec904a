//! The SNMP engine rulehook is for one `snmp_trap` source (RFC 3411 §3.1.1): its engine id
//! (`engine_id:`, else made once and kept in `DATA/snmp/<source>.json`), `snmpEngineBoots`
//! (kept there, one more at every start) and `snmpEngineTime` (seconds since this start). Also
//! what it has heard of other engines' clocks, for the time window of v3 traps.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Remote engines remembered for the time window; past this the table starts again.
const MAX_REMOTE: usize = 10_000;
const TIME_WINDOW: u64 = 150;

/// One authoritative SNMP engine.
#[derive(Debug)]
pub struct LocalEngine {
    id: Vec<u8>,
    boots: u32,
    started: Instant,
    unknown_engine: AtomicU32,
    not_in_time: AtomicU32,
    /// engine id → (boots, time, when heard): the latest authenticated values.
    remote: Mutex<HashMap<Vec<u8>, (u32, u32, Instant)>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    engine_id: String,
    boots: u32,
}

impl LocalEngine {
    /// Reads and advances the source's engine file (or makes it). `configured` is
    /// `engine_id:`; a new id starts its boots at 1.
    pub fn open(
        data: &Path,
        source: &str,
        configured: Option<&[u8]>,
    ) -> std::io::Result<LocalEngine> {
        let dir = data.join("snmp");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{source}.json"));
        let stored: Option<Stored> = match std::fs::read(&path) {
            Ok(b) => Some(
                serde_json::from_slice(&b)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let stored_id = stored.as_ref().and_then(|s| hex::decode(&s.engine_id).ok());
        let id = match (configured, &stored_id) {
            (Some(c), _) => c.to_vec(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                // RFC 3411 format 5 (octets), enterprise bit set, 8 random bytes.
                let mut id = vec![0x80, 0, 0, 0, 5];
                id.extend(rand::random::<[u8; 8]>());
                id
            }
        };
        let boots = match stored {
            Some(s) if stored_id.as_deref() == Some(&id[..]) => {
                s.boots.saturating_add(1).min(i32::MAX as u32 - 1)
            }
            _ => 1,
        };
        let text = serde_json::to_vec(&Stored {
            engine_id: hex::encode(&id),
            boots,
        })
        .map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(LocalEngine::new(id, boots))
    }

    /// An engine kept nowhere (tests, the fuzz target).
    pub fn new(id: Vec<u8>, boots: u32) -> LocalEngine {
        LocalEngine {
            id,
            boots,
            started: Instant::now(),
            unknown_engine: AtomicU32::new(0),
            not_in_time: AtomicU32::new(0),
            remote: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    pub fn for_tests(id: Vec<u8>) -> LocalEngine {
        LocalEngine::new(id, 1)
    }

    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// (snmpEngineBoots, snmpEngineTime) now.
    pub fn boots_time(&self) -> (u32, u32) {
        let t = self.started.elapsed().as_secs().min(i32::MAX as u64) as u32;
        (self.boots, t)
    }

    /// usmStatsUnknownEngineIDs, counted.
    pub fn count_unknown_engine(&self) -> u32 {
        self.unknown_engine.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// usmStatsNotInTimeWindows, counted.
    pub fn count_not_in_time(&self) -> u32 {
        self.not_in_time.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// RFC 3414 §3.2 step 7b for an authenticated message from another authoritative engine
    /// (a v3 trap): refused when its boots went back, or its time is more than 150 s behind
    /// what was last heard (advanced by the time since). Otherwise remembered.
    pub fn remote_timely(&self, engine: &[u8], boots: u32, time: u32) -> bool {
        let Ok(mut remote) = self.remote.lock() else {
            return false;
        };
        let now = Instant::now();
        if boots >= i32::MAX as u32 {
            return false;
        }
        if let Some(&(b, t, at)) = remote.get(engine) {
            let expected = u64::from(t) + now.duration_since(at).as_secs();
            if boots < b || (boots == b && u64::from(time) + TIME_WINDOW < expected) {
                return false;
            }
            if boots == b && u64::from(time) < expected {
                return true;
            }
        }
        if remote.len() >= MAX_REMOTE {
            remote.clear();
        }
        remote.insert(engine.to_vec(), (boots, time, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_file_keeps_the_id_and_counts_boots() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalEngine::open(dir.path(), "traps", None).unwrap();
        assert_eq!(a.boots_time().0, 1);
        assert_eq!(a.id().len(), 13);
        let b = LocalEngine::open(dir.path(), "traps", None).unwrap();
        assert_eq!(b.id(), a.id());
        assert_eq!(b.boots_time().0, 2);
        let c = LocalEngine::open(dir.path(), "traps", Some(b"\x80\0\0\0\x05abcd")).unwrap();
        assert_eq!(
            c.boots_time().0,
            1,
            "a new engine id starts its boots again"
        );
        let d = LocalEngine::open(dir.path(), "traps", Some(b"\x80\0\0\0\x05abcd")).unwrap();
        assert_eq!(d.boots_time().0, 2);
    }

    #[test]
    fn remote_clocks_may_not_go_back() {
        let e = LocalEngine::for_tests(vec![0x80, 0, 0, 0, 5, 1]);
        assert!(e.remote_timely(b"r1", 5, 1000));
        assert!(e.remote_timely(b"r1", 5, 1001));
        assert!(e.remote_timely(b"r1", 5, 900), "within 150 s");
        assert!(!e.remote_timely(b"r1", 5, 800), "more than 150 s behind");
        assert!(!e.remote_timely(b"r1", 4, 5000), "boots went back");
        assert!(e.remote_timely(b"r1", 6, 0), "a reboot");
        assert!(!e.remote_timely(b"r1", 5, 1000));
        assert!(e.remote_timely(b"r2", 1, 1), "another engine");
    }
}
