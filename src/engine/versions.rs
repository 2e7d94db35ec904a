//! Rule versions kept in the state store, for jobs that outlive the process that matched them.
//!
//! A job runs the rule version it matched (its fingerprint). This process keeps the last few
//! rule sets in memory; for a job still pending after a restart whose rulebook was edited
//! meanwhile (or queued by another node running another version), the engine looks here:
//! every set loaded is archived as the files it came from ([`Snapshot`]) with the fingerprints
//! of its rules; the newest [`KEEP`] snapshots are listed in one index entry. A version found
//! is compiled again (in memory, scripts from the scripts directory), used only if it compiles to the same fingerprint,
//! and kept in memory like any earlier set.
//!
//! State keys: `rules/index` (JSON list of snapshot ids, newest last) and
//! `rules/snapshot/<id>` (an [`Archived`], expiring with the history's retention), stored
//! deflated (`deflate:` and the base64 of its deflated JSON; plain JSON from earlier releases
//! is read too). 10,000 rules are ~2.4 MB of JSON and ~0.35 MB stored: serialized straight
//! into the compressor, the JSON is never held whole, and the store's copies of the value
//! (its own, SQLite's bind, record and page cache) are of the small one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::domain::StoreError;
use crate::rules::RuleSet;
use crate::rules::snapshot::Snapshot;

/// Snapshots listed in the index: rule sets a pending job may still need.
pub const KEEP: usize = 64;
/// How a deflated snapshot entry starts (JSON, as earlier releases wrote, starts with `{`).
const DEFLATED: &str = "deflate:";
const INDEX: &str = "rules/index";
const PREFIX: &str = "rules/snapshot/";
/// A version looked for and not found is not looked for again this long.
const MISS_FOR: Duration = Duration::from_secs(60);

/// One archived rule set.
#[derive(Debug, Serialize, Deserialize)]
struct Archived {
    snapshot: Snapshot,
    /// The fingerprints of its rules, to find the snapshot of a version without loading it.
    fingerprints: Vec<String>,
}

/// An [`Archived`] as it is written: the snapshot and the rules' fingerprints are borrowed,
/// not copied (10,000 fingerprints cloned were ~0.4 MB more at the moment start-up peaks).
#[derive(Serialize)]
struct ToArchive<'a> {
    snapshot: &'a Snapshot,
    #[serde(serialize_with = "fingerprints")]
    fingerprints: &'a RuleSet,
}

fn fingerprints<S: serde::Serializer>(set: &&RuleSet, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(set.rules.iter().map(|r| r.fingerprint.as_str()))
}

/// What the engine needs to load an archived version: the scripts directory (scripts are not
/// archived), the versions looked for in vain, and one restore at a time.
#[derive(Debug)]
pub struct Archive {
    scripts: PathBuf,
    misses: std::sync::Mutex<HashMap<String, Instant>>,
    restoring: tokio::sync::Mutex<()>,
}

impl Archive {
    pub fn new(scripts: PathBuf) -> Archive {
        Archive {
            scripts,
            misses: Default::default(),
            restoring: Default::default(),
        }
    }
}

impl Engine {
    /// Archives the files the set now serving was loaded from (at start and after each
    /// reload). A failure is logged: jobs then fall back to the versions kept in memory.
    pub async fn archive_rules(&self, snapshot: Snapshot, rules: Arc<RuleSet>) {
        if let Err(e) = self.try_archive(snapshot, &rules).await {
            tracing::warn!(error = %e, "cannot archive the rule set; jobs pending across a restart after a rulebook edit fail as \"changed since the match\"");
        }
    }

    async fn try_archive(&self, snapshot: Snapshot, rules: &RuleSet) -> Result<(), StoreError> {
        let state = &self.store.state;
        let id = snapshot.id();
        let value = encode(&ToArchive {
            snapshot: &snapshot,
            fingerprints: rules,
        })
        .map_err(|e| StoreError::Permanent(format!("rule snapshot: {e}")))?;
        // The rulebooks' text is not needed past this point: freed before the store copies.
        drop(snapshot);
        let key = format!("{PREFIX}{id}");
        let ttl = Some(self.settings.retain);
        // Written again when present: its retention starts afresh.
        let mut written = false;
        for _ in 0..5 {
            let put = match state.get(&key).await? {
                Some((_, rev)) => state.update(&key, &value, rev, ttl).await,
                None => state.create(&key, &value, ttl).await,
            };
            match put {
                Ok(_) => {
                    written = true;
                    break;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        if !written {
            // Listing a snapshot that may not be there would send jobs looking for it.
            return Err(StoreError::Transient(format!(
                "rule snapshot `{id}` kept changing under this node; not listed in the index"
            )));
        }
        for _ in 0..5 {
            let current = state.get(INDEX).await?;
            let mut ids: Vec<String> = match &current {
                None => Vec::new(),
                // An index that cannot be read is not replaced by an empty one (that would
                // drop every archived version from it): the archive stops here, loudly.
                Some((v, _)) => serde_json::from_str(v).map_err(|e| {
                    StoreError::Permanent(format!(
                        "the rule index `{INDEX}` cannot be read ({e}); not overwritten"
                    ))
                })?,
            };
            if ids.last() == Some(&id) {
                return Ok(());
            }
            ids.retain(|i| *i != id);
            ids.push(id.clone());
            let excess = ids.len().saturating_sub(KEEP);
            ids.drain(..excess);
            let value = serde_json::to_string(&ids)
                .map_err(|e| StoreError::Permanent(format!("rule index: {e}")))?;
            let put = match current {
                Some((_, rev)) => state.update(INDEX, &value, rev, None).await,
                None => state.create(INDEX, &value, None).await,
            };
            match put {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "the rule index kept changing (5 tries)".to_string(),
        ))
    }

    /// The rule of `key` at version `fingerprint`, loaded again from the archive; kept in
    /// memory afterwards. `None` when the archive does not have it.
    pub(super) async fn restore_version(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Option<(Arc<RuleSet>, usize)> {
        let archive = self.archive.as_ref()?;
        let missed = |a: &Archive| {
            let mut misses = a.misses.lock().unwrap_or_else(|e| e.into_inner());
            misses.retain(|_, at| at.elapsed() < MISS_FOR);
            misses.contains_key(fingerprint)
        };
        if missed(archive) {
            return None;
        }
        // Jobs of one version wait for the first to load it, then find it in memory.
        let _one = archive.restoring.lock().await;
        if let Some(found) = self.rule_version(key, fingerprint) {
            return Some(found);
        }
        if missed(archive) {
            return None;
        }
        match self.load_archived(archive, key, fingerprint).await {
            Ok(Some(set)) => {
                let i = set.rule_by_key(key)?;
                tracing::info!(rule = %key, "loaded the rule version a job matched from the archive");
                self.keep_version(set.clone());
                Some((set, i))
            }
            Ok(None) => {
                archive
                    .misses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fingerprint.to_string(), Instant::now());
                None
            }
            Err(e) => {
                tracing::warn!(rule = %key, error = %e, "cannot read the rule archive");
                None
            }
        }
    }

    async fn load_archived(
        &self,
        archive: &Archive,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<Arc<RuleSet>>, StoreError> {
        let state = &self.store.state;
        let Some((index, _)) = state.get(INDEX).await? else {
            return Ok(None);
        };
        let ids: Vec<String> = serde_json::from_str(&index)
            .map_err(|e| StoreError::Permanent(format!("rule index: {e}")))?;
        for id in ids.iter().rev() {
            let Some((value, _)) = state.get(&format!("{PREFIX}{id}")).await? else {
                continue;
            };
            let Ok(archived) = decode(&value) else {
                tracing::warn!(snapshot = %id, "an archived rule set does not parse; skipped");
                continue;
            };
            if !archived.fingerprints.iter().any(|f| f == fingerprint) {
                continue;
            }
            let scripts = archive.scripts.clone();
            let loaded = tokio::task::spawn_blocking(move || archived.snapshot.load(&scripts))
                .await
                .map_err(|e| StoreError::Permanent(format!("loading a rule snapshot: {e}")))?;
            match loaded {
                Ok(set) => {
                    let same = set
                        .rule_by_key(key)
                        .is_some_and(|i| set.rules[i].fingerprint == fingerprint);
                    if same {
                        return Ok(Some(Arc::new(set)));
                    }
                    // Loaded now, it differs (a `${env:…}` or a script changed): not that version.
                    tracing::info!(rule = %key, snapshot = %id, "the archived rule set no longer compiles to the version the job matched");
                }
                Err(e) => {
                    tracing::info!(rule = %key, snapshot = %id, error = %e, "the archived rule set no longer loads");
                }
            }
        }
        Ok(None)
    }
}

/// `archived` as stored: `deflate:` and the base64 of its deflated JSON.
fn encode(archived: &impl Serialize) -> std::io::Result<String> {
    use base64::Engine as _;
    use std::io::Write as _;
    let deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // serde_json writes a token at a time; the compressor takes them in 8 KiB pieces.
    let mut out = std::io::BufWriter::with_capacity(8 << 10, deflate);
    serde_json::to_writer(&mut out, archived)?;
    out.flush()?;
    let deflated = out.into_inner().map_err(|e| e.into_error())?.finish()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut value = String::with_capacity(DEFLATED.len() + deflated.len().div_ceil(3) * 4);
    value.push_str(DEFLATED);
    b64.encode_string(&deflated, &mut value);
    Ok(value)
}

/// A stored snapshot entry: deflated ([`encode`]) or plain JSON (earlier releases).
fn decode(value: &str) -> Result<Archived, String> {
    use base64::Engine as _;
    let Some(b64) = value.strip_prefix(DEFLATED) else {
        return serde_json::from_str(value).map_err(|e| e.to_string());
    };
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    let json = std::io::BufReader::new(flate2::read::DeflateDecoder::new(&deflated[..]));
    serde_json::from_reader(json).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Settings;
    use crate::rules::Dirs;
    use crate::rules::load_with_snapshot;
    use crate::store::Store;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            for d in ["rulebooks", "scripts", "templates"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            let store = Store::embedded(&dir.path().join("data")).unwrap();
            Fixture { dir, store }
        }
        fn dirs(&self) -> Dirs {
            Dirs {
                rulebooks: self.dir.path().join("rulebooks"),
                scripts: self.dir.path().join("scripts"),
                templates: self.dir.path().join("templates"),
            }
        }
        /// Writes rule `r` logging `message`, loads it and archives it in a new engine (a
        /// process start); returns the engine and the rule's fingerprint.
        async fn start(&self, message: &str) -> (Arc<Engine>, String) {
            std::fs::write(
                self.dirs().rulebooks.join("r.yml"),
                format!(
                    "sources:\n  - {{ name: s, kind: internal }}\nrules:\n  - name: r\n    actions: [{{ log: {{ message: '{message} {{{{ event.n }}}}' }} }}]\n"
                ),
            )
            .unwrap();
            let (set, snap) = load_with_snapshot(&self.dirs()).unwrap();
            let set = Arc::new(set);
            let fp = set.rules[0].fingerprint.clone();
            let settings = Settings {
                rule_archive: Some(self.dirs().scripts),
                ..Settings::default()
            };
            let engine = Engine::new(self.store.clone(), set.clone(), settings);
            engine.archive_rules(snap, set).await;
            (engine, fp)
        }
        async fn index(&self) -> Vec<String> {
            let (v, _) = self.store.state.get(INDEX).await.unwrap().unwrap();
            serde_json::from_str(&v).unwrap()
        }
    }

    #[tokio::test]
    async fn a_later_process_loads_an_earlier_version_from_the_archive() {
        let f = Fixture::new();
        let (_first, v1) = f.start("v1").await;
        let (later, v2) = f.start("v2").await;
        assert_ne!(v1, v2);
        assert!(later.rule_version("r", &v1).is_none(), "not in memory");
        let (set, i) = later.restore_version("r", &v1).await.unwrap();
        assert_eq!(set.rules[i].fingerprint, v1);
        // Kept in memory from now on, next to the current version.
        assert!(later.rule_version("r", &v1).is_some());
        assert_eq!(later.rule_version("r", &v2).unwrap().1, 0);
        // Starting on v2 again archives nothing new.
        let before = f.index().await;
        f.start("v2").await;
        assert_eq!(f.index().await, before);
        assert_eq!(before.len(), 2);
    }

    #[test]
    fn what_is_written_borrowed_reads_back_as_an_archived_set() {
        let f = Fixture::new();
        std::fs::write(
            f.dirs().rulebooks.join("r.yml"),
            "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: a\n    actions: [{ log: { message: a } }]\n  - name: b\n    actions: [{ log: { message: b } }]\n",
        )
        .unwrap();
        let (set, snapshot) = load_with_snapshot(&f.dirs()).unwrap();
        let written = ToArchive {
            snapshot: &snapshot,
            fingerprints: &set,
        };
        let owned = Archived {
            snapshot: snapshot.clone(),
            fingerprints: set.rules.iter().map(|r| r.fingerprint.clone()).collect(),
        };
        assert_eq!(
            serde_json::to_string(&written).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
        let read = decode(&encode(&written).unwrap()).unwrap();
        assert_eq!(read.snapshot, snapshot);
        assert_eq!(read.fingerprints, owned.fingerprints);
    }

    #[tokio::test]
    async fn snapshots_are_stored_deflated_and_plain_json_of_earlier_releases_still_loads() {
        let f = Fixture::new();
        let (_, v1) = f.start("v1").await;
        let id = f.index().await.last().unwrap().clone();
        let key = format!("{PREFIX}{id}");
        let (stored, rev) = f.store.state.get(&key).await.unwrap().unwrap();
        assert!(stored.starts_with(DEFLATED), "{stored}");
        let archived = decode(&stored).unwrap();
        assert_eq!(archived.snapshot.id(), id);
        assert_eq!(archived.fingerprints, std::slice::from_ref(&v1));
        let json = serde_json::to_string(&archived).unwrap();
        // Many rules: the stored form is a fraction of the JSON.
        let mut big = Archived {
            snapshot: archived.snapshot.clone(),
            fingerprints: Vec::new(),
        };
        let book = big.snapshot.rulebooks.values().next().unwrap().clone();
        big.snapshot
            .rulebooks
            .insert("big.yml".into(), book.repeat(2_000));
        let big_json = serde_json::to_string(&big).unwrap();
        let big_stored = encode(&big).unwrap();
        assert!(
            big_stored.len() * 10 < big_json.len(),
            "{} of {}",
            big_stored.len(),
            big_json.len()
        );
        assert_eq!(decode(&big_stored).unwrap().snapshot, big.snapshot);
        // An entry an earlier release wrote (plain JSON) is found by a later process.
        f.store.state.update(&key, &json, rev, None).await.unwrap();
        let (later, v2) = f.start("v2").await;
        assert_ne!(v1, v2);
        let (set, i) = later.restore_version("r", &v1).await.unwrap();
        assert_eq!(set.rules[i].fingerprint, v1);
    }

    #[tokio::test]
    async fn a_version_unknown_to_the_archive_is_not_found_and_not_looked_for_again_soon() {
        let f = Fixture::new();
        let (engine, _) = f.start("v1").await;
        assert!(engine.restore_version("r", "no-such").await.is_none());
        assert!(engine.restore_version("other", "no-such").await.is_none());
        // The miss is remembered: archived afterwards, it is found only after MISS_FOR.
        let (_, v3) = f.start("v3").await;
        assert!(engine.restore_version("r", &v3).await.is_some());
        engine
            .archive
            .as_ref()
            .unwrap()
            .misses
            .lock()
            .unwrap()
            .insert("late".into(), Instant::now());
        assert!(engine.restore_version("r", "late").await.is_none());
    }

    #[tokio::test]
    async fn an_index_that_cannot_be_read_is_not_replaced_by_an_empty_one() {
        let f = Fixture::new();
        let (_, v1) = f.start("v1").await;
        let (_, rev) = f.store.state.get(INDEX).await.unwrap().unwrap();
        f.store
            .state
            .update(INDEX, "{garbled", rev, None)
            .await
            .unwrap();
        f.start("v2").await;
        let (kept, _) = f.store.state.get(INDEX).await.unwrap().unwrap();
        assert_eq!(kept, "{garbled", "the unreadable index was overwritten");
        assert!(!v1.is_empty());
    }

    #[tokio::test]
    async fn the_index_keeps_the_newest_snapshots_only() {
        let f = Fixture::new();
        let (_, oldest) = f.start("v0").await;
        let mut last = None;
        for n in 1..=KEEP {
            last = Some(f.start(&format!("v{n}")).await);
        }
        assert_eq!(f.index().await.len(), KEEP);
        let (engine, _) = last.unwrap();
        assert!(
            engine.restore_version("r", &oldest).await.is_none(),
            "the oldest left the index"
        );
    }

    #[tokio::test]
    async fn an_archived_set_that_no_longer_loads_or_parses_is_skipped() {
        let f = Fixture::new();
        // v1 runs a script; the script is removed after the archive.
        use std::os::unix::fs::PermissionsExt;
        let script = f.dirs().scripts.join("x.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            f.dirs().rulebooks.join("r.yml"),
            "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: r\n    actions: [{ run_script: { script: x.sh } }]\n",
        )
        .unwrap();
        let (set, snap) = load_with_snapshot(&f.dirs()).unwrap();
        let set = Arc::new(set);
        let v1 = set.rules[0].fingerprint.clone();
        let settings = Settings {
            rule_archive: Some(f.dirs().scripts),
            ..Settings::default()
        };
        let first = Engine::new(f.store.clone(), set.clone(), settings);
        first.archive_rules(snap, set).await;
        std::fs::remove_file(f.dirs().scripts.join("x.sh")).unwrap();
        let (later, _) = f.start("v2").await;
        assert!(later.restore_version("r", &v1).await.is_none());

        // A snapshot entry that is not JSON is skipped, not a panic.
        let (_, v3) = f.start("v3").await;
        let id = f.index().await.last().unwrap().clone();
        let key = format!("{PREFIX}{id}");
        let (_, rev) = f.store.state.get(&key).await.unwrap().unwrap();
        f.store
            .state
            .update(&key, "{not json", rev, None)
            .await
            .unwrap();
        let (fresh, _) = f.start("v4").await;
        assert!(fresh.restore_version("r", &v3).await.is_none());
    }
}
