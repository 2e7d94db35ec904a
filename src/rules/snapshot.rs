//! The files a rule set was loaded from, so it can be loaded again later.
//!
//! Why: a queued job runs the rule version it matched. After a restart, the rulebooks on disk
//! may have changed while the job waited; the engine keeps each loaded set's files in its
//! store (`engine::versions`) and loads them again, in a scratch directory, for such a job.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use super::{Dirs, LoadErrors, RuleSet, load};

/// Rulebook files (by file name) and template files (by path under the templates directory)
/// with their text. Scripts are not in it: they run from the scripts directory as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub rulebooks: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
}

impl Snapshot {
    /// Reads what [`load`] reads: the rulebooks directory's `.yml`/`.yaml` files and every file
    /// under the templates directory. `None` when one cannot be read as text.
    pub fn read(dirs: &Dirs) -> Option<Snapshot> {
        let mut snap = Snapshot::default();
        for path in super::load::rulebook_files(&dirs.rulebooks).ok()? {
            let name = path.file_name()?.to_str()?.to_string();
            snap.rulebooks
                .insert(name, std::fs::read_to_string(&path).ok()?);
        }
        let walk = crate::walk::walk(&dirs.templates);
        if !walk.loops.is_empty() {
            return None;
        }
        for path in walk.files {
            let name = path
                .strip_prefix(&dirs.templates)
                .ok()?
                .to_str()?
                .replace('\\', "/");
            snap.templates
                .insert(name, std::fs::read_to_string(&path).ok()?);
        }
        Some(snap)
    }

    /// A short, stable name for these contents.
    pub fn id(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (kind, files) in [("r", &self.rulebooks), ("t", &self.templates)] {
            for (name, text) in files {
                for part in [kind, name.as_str(), text.as_str()] {
                    h.update((part.len() as u64).to_le_bytes());
                    h.update(part.as_bytes());
                }
            }
        }
        hex::encode(&h.finalize()[..16])
    }

    /// Writes the files under `root` and loads them, with scripts from `scripts`.
    pub fn load_in(&self, root: &Path, scripts: &Path) -> Result<RuleSet, String> {
        let dirs = Dirs {
            rulebooks: root.join("rulebooks"),
            scripts: scripts.to_path_buf(),
            templates: root.join("templates"),
        };
        let write = |dir: &Path, name: &str, text: &str| -> Result<(), String> {
            // Names come from the store: only plain relative paths are written.
            let rel = Path::new(name);
            if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                return Err(format!(
                    "the snapshot names a file `{name}` outside its directory"
                ));
            }
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, text).map_err(|e| e.to_string())
        };
        std::fs::create_dir_all(&dirs.rulebooks).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&dirs.templates).map_err(|e| e.to_string())?;
        for (name, text) in &self.rulebooks {
            if name.contains('/') {
                return Err(format!(
                    "the snapshot names a rulebook `{name}` in a subdirectory"
                ));
            }
            write(&dirs.rulebooks, name, text)?;
        }
        for (name, text) in &self.templates {
            write(&dirs.templates, name, text)?;
        }
        load(&dirs).map_err(|e| e.to_string())
    }
}

/// Loads `dirs` as [`load`] does, with the snapshot of what was loaded: `None` when the files
/// changed while they were read (the watcher then loads them again) or cannot be read.
pub fn load_with_snapshot(dirs: &Dirs) -> Result<(RuleSet, Option<Snapshot>), LoadErrors> {
    let before = Snapshot::read(dirs);
    let set = load(dirs)?;
    let after = Snapshot::read(dirs);
    let snap = match (before, after) {
        (Some(b), Some(a)) if a == b => Some(a),
        _ => None,
    };
    Ok((set, snap))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: &str = "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: a\n    condition: '$.x == 1'\n    actions:\n      - log: { message: 'x={{ event.x }}' }\n      - post_webhook: { url: 'http://127.0.0.1:9/x', body_template: body.j2 }\n";

    fn dirs(root: &Path) -> Dirs {
        for d in ["rulebooks", "scripts", "templates/sub"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        Dirs {
            rulebooks: root.join("rulebooks"),
            scripts: root.join("scripts"),
            templates: root.join("templates"),
        }
    }

    #[test]
    fn a_snapshot_loads_again_into_the_same_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let d = dirs(dir.path());
        std::fs::write(d.rulebooks.join("r.yml"), BOOK).unwrap();
        std::fs::write(d.rulebooks.join("notes.txt"), "not a rulebook").unwrap();
        std::fs::write(d.templates.join("body.j2"), "{\"x\": {{ event.x }}}").unwrap();
        std::fs::write(d.templates.join("sub/other.j2"), "unused").unwrap();
        let (set, snap) = load_with_snapshot(&d).unwrap();
        let snap = snap.unwrap();
        assert_eq!(snap.rulebooks.keys().collect::<Vec<_>>(), ["r.yml"]);
        assert_eq!(
            snap.templates.keys().collect::<Vec<_>>(),
            ["body.j2", "sub/other.j2"]
        );
        // The files change on disk; the snapshot still loads the version first loaded.
        std::fs::write(d.templates.join("body.j2"), "{\"y\": 1}").unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let again = snap.load_in(scratch.path(), &d.scripts).unwrap();
        assert_eq!(again.rules[0].key, set.rules[0].key);
        assert_eq!(again.rules[0].fingerprint, set.rules[0].fingerprint);
        let changed = load(&d).unwrap();
        assert_ne!(changed.rules[0].fingerprint, set.rules[0].fingerprint);
        // Same contents, same id; other contents, another.
        assert_eq!(snap.id(), snap.clone().id());
        assert_ne!(snap.id(), Snapshot::read(&d).unwrap().id());
    }

    #[test]
    fn names_outside_the_scratch_directory_are_refused() {
        let scratch = tempfile::tempdir().unwrap();
        for (rulebooks, templates) in [
            (vec![("../evil.yml", "x")], vec![]),
            (vec![("a/b.yml", "x")], vec![]),
            (vec![], vec![("/etc/passwd", "x")]),
            (vec![], vec![("sub/../../x.j2", "x")]),
        ] {
            let snap = Snapshot {
                rulebooks: rulebooks
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                templates: templates
                    .into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            };
            let err = snap.load_in(scratch.path(), scratch.path()).err().unwrap();
            assert!(err.contains("the snapshot names"), "{err}");
        }
        assert!(!scratch.path().parent().unwrap().join("evil.yml").exists());
    }
}
