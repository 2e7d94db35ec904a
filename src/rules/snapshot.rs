//! The files a rule set was loaded from, so it can be loaded again later.
//!
//! Why: a queued job runs the rule version it matched. After a restart, the rulebooks on disk
//! may have changed while the job waited; the engine keeps each loaded set's files in its
//! store (`engine::versions`) and compiles them again, in memory, for such a job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LoadError, LoadErrors, RuleSet};
use crate::templates::Templates;

/// Rulebook files (by file name) and template files (by path under the templates directory)
/// with their text. Scripts are not in it: they run from the scripts directory as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub rulebooks: BTreeMap<String, String>,
    pub templates: BTreeMap<String, String>,
}

impl Snapshot {
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

    /// Compiles these files as [`super::load()`] would have compiled them from disk, with scripts
    /// from `scripts` (nothing is written). Errors name the files by their snapshot names.
    pub fn load(&self, scripts: &Path) -> Result<RuleSet, LoadErrors> {
        let mut errors = Vec::new();
        let templates = match Templates::from_sources(
            Path::new(""),
            self.templates.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        ) {
            Ok(t) => t,
            Err(errs) => {
                errors.extend(errs.into_iter().map(|(file, message)| LoadError {
                    file,
                    line: 1,
                    column: 1,
                    message,
                }));
                Templates::default()
            }
        };
        let texts: Vec<(PathBuf, String)> = self
            .rulebooks
            .iter()
            .map(|(name, text)| (PathBuf::from(name), text.clone()))
            .collect();
        super::load::compile(&texts, templates, errors, scripts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Dirs, load, load_with_snapshot};

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
        assert_eq!(snap.rulebooks.keys().collect::<Vec<_>>(), ["r.yml"]);
        assert_eq!(
            snap.templates.keys().collect::<Vec<_>>(),
            ["body.j2", "sub/other.j2"]
        );
        // The files change on disk; the snapshot still loads the version first loaded.
        std::fs::write(d.templates.join("body.j2"), "{\"y\": 1}").unwrap();
        let again = snap.load(&d.scripts).unwrap();
        assert_eq!(again.rules[0].key, set.rules[0].key);
        assert_eq!(again.rules[0].fingerprint, set.rules[0].fingerprint);
        let changed = load(&d).unwrap();
        assert_ne!(changed.rules[0].fingerprint, set.rules[0].fingerprint);
        // Same contents, same id; other contents, another.
        assert_eq!(snap.id(), snap.clone().id());
        assert_ne!(snap.id(), load_with_snapshot(&d).unwrap().1.id());
    }

    #[test]
    fn errors_of_a_snapshot_name_its_files() {
        let mut snap = Snapshot::default();
        snap.rulebooks
            .insert("r.yml".into(), "rules: [ { name: a".into());
        snap.templates.insert("t.j2".into(), "{{ unclosed".into());
        let errs = snap.load(Path::new("/nonexistent")).err().unwrap();
        let files: Vec<&str> = errs.0.iter().map(|e| e.file.as_str()).collect();
        assert!(
            files.contains(&"r.yml") && files.contains(&"t.j2"),
            "{errs}"
        );
    }
}
