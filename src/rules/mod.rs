//! Rulebooks: loading, validating and compiling them into a [`RuleSet`], and matching events
//! against it. This module does no I/O after load and knows nothing of HTTP or storage.

pub mod approval;
pub mod condition;
pub mod correlate;
mod dry_run;
mod hint;
mod index;
mod listen;
mod load;
mod patterns;
pub mod snapshot;
pub mod summary;
pub mod windows;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::actions::Action;
pub use crate::domain::EventDoc;
pub use crate::rulebook::{LoadError, model};
use crate::sources::Source;
use crate::templates::Templates;
pub use condition::Condition;
pub use dry_run::{DryRun, dry_run};
pub use index::{Fields, Probe, SourceIndex};
pub use load::{load, load_with_snapshot};

/// Where a rule set is read from.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub rulebooks: PathBuf,
    pub scripts: PathBuf,
    pub templates: PathBuf,
}

/// Every problem found in a rule set (loading does not stop at the first).
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A compiled rule. Held for as long as its rule set serves, so what most rules leave out
/// (`throttle`, `correlate`, `approval`) is boxed: 10,000 rules in 4.7 MB inline, 2.9 MB now.
#[derive(Debug)]
pub struct Rule {
    /// File stem of the rulebook that declares it.
    pub rulebook: String,
    pub name: String,
    /// The rule's name in run ids: the name, or `rulebook/name` when two rulebooks share it.
    pub key: String,
    /// `None`: every source.
    pub sources: Option<Vec<String>>,
    pub condition: Condition,
    pub actions: Vec<Action>,
    /// Run, in order, when an action has failed for good.
    pub on_failure: Vec<Action>,
    pub throttle: Option<Box<Throttle>>,
    /// `correlate:` — the rule fires on a pattern over several events. Its `condition` is
    /// then the rule's own condition and any of the correlation's (the index's prefilter).
    pub correlate: Option<Box<correlate::Correlation>>,
    /// `mode: shadow`: its jobs render every action and record what would have run, and run
    /// nothing (docs/change-control.md).
    pub shadow: bool,
    /// `approval:`: its jobs wait for a decision before their first action.
    pub approval: Option<Box<approval::Approval>>,
    /// A hash of the compiled rule (condition, actions with their template sources,
    /// `on_failure`, throttle): a job runs only the version it matched.
    pub fingerprint: String,
    /// Its match and throttle counters, registered on first use.
    pub counters: std::sync::OnceLock<[metrics::Counter; 2]>,
}

impl Rule {
    fn counters(&self) -> &[metrics::Counter; 2] {
        use crate::telemetry::names;
        self.counters.get_or_init(|| {
            let (b, r) = (self.rulebook.clone(), self.name.clone());
            [
                metrics::counter!(names::MATCHES, "rulebook" => b.clone(), "rule" => r.clone()),
                metrics::counter!(names::THROTTLED, "rulebook" => b, "rule" => r),
            ]
        })
    }

    pub fn count_match(&self) {
        self.counters()[0].increment(1);
    }

    pub fn count_throttled(&self) {
        self.counters()[1].increment(1);
    }
}

/// `throttle:` — the first match of a group fires; the rest within the window are recorded as
/// throttled. Windows live in the journal, so they survive restarts and reloads.
#[derive(Debug)]
pub struct Throttle {
    pub window: std::time::Duration,
    pub group_by: Vec<condition::Query>,
}

impl Throttle {
    /// The group an event falls in: the `group_by` values as a JSON array text, bounded like a
    /// correlation's (`correlate::bounded_key`).
    pub fn group(&self, body: &serde_json::Value) -> String {
        correlate::bounded_key(
            serde_json::Value::Array(self.group_by.iter().map(|q| q.select(body)).collect())
                .to_string(),
        )
    }
}

/// Everything loaded from the rulebooks, scripts and templates directories, compiled and
/// immutable: a reload builds a new one and swaps it in whole.
#[derive(Debug)]
pub struct RuleSet {
    pub sources: Vec<Source>,
    pub rules: Vec<Rule>,
    pub templates: Templates,
    /// Non-fatal findings (fallback secrets in use, unauthenticated sources).
    pub warnings: Vec<String>,
    /// Each source's one-line summary of its events (the console's event list).
    pub summaries: summary::Summaries,
    by_path: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// Rule positions sorted by key, for [`RuleSet::rule_by_key`]: a map would hold a second
    /// copy of every key.
    by_key: Box<[u32]>,
    index: Vec<SourceIndex>,
    /// Maintenance windows (`windows:` of every rulebook), decided when a job would start.
    pub windows: windows::Windows,
}

/// The result of matching one rule against an event.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub rule: usize,
    pub matched: bool,
    /// When not matched: which parts of the condition were false, or why it was not considered.
    pub why: Vec<String>,
    /// Not considered: the rule takes other sources (shown folded, not one card each).
    pub other_source: bool,
}

impl RuleSet {
    /// The source served at `path`; a trailing `/` is ignored (`/hooks/eem/` is `/hooks/eem`).
    pub fn source_by_path(&self, path: &str) -> Option<&Source> {
        self.by_path
            .get(path)
            .or_else(|| {
                let trimmed = path.trim_end_matches('/');
                (trimmed.len() < path.len() && !trimmed.is_empty())
                    .then(|| self.by_path.get(trimmed))
                    .flatten()
            })
            .map(|&i| &self.sources[i])
    }

    pub fn source(&self, name: &str) -> Option<&Source> {
        self.by_name.get(name).map(|&i| &self.sources[i])
    }

    /// The rule with this job key (its name, or `rulebook/name` when names are shared).
    pub fn rule_by_key(&self, key: &str) -> Option<usize> {
        self.by_key
            .binary_search_by(|&i| self.rules[i as usize].key.as_str().cmp(key))
            .ok()
            .map(|at| self.by_key[at] as usize)
    }

    pub fn rule(&self, rulebook: &str, name: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.rulebook == rulebook && r.name == name)
    }

    /// The rules an event from `source` matches, in rulebook order (fast path: indexed).
    pub fn matching(&self, source: &str, doc: &EventDoc) -> Vec<usize> {
        let Some(&s) = self.by_name.get(source) else {
            return Vec::new();
        };
        let mut candidates = self.index[s].candidates(doc.body());
        candidates.retain(|&r| self.rules[r].condition.eval(doc));
        candidates
    }

    /// Whether any rule of `source` could match an event with this body: false when the
    /// rule index alone rules every one out (no envelope or event needs building to know).
    /// [`RuleSet::matching`] is empty whenever this is false.
    pub fn may_match(&self, source: &str, body: &serde_json::Value) -> bool {
        self.by_name
            .get(source)
            .is_some_and(|&s| self.index[s].any_candidate(body))
    }

    /// The source `name` with its rule index, found with one look-up (a transport asks both
    /// for every message: [`SourceIndex::any_candidate_in`]).
    pub fn source_with_index(&self, name: &str) -> Option<(&Source, &SourceIndex)> {
        self.by_name
            .get(name)
            .map(|&i| (&self.sources[i], &self.index[i]))
    }

    /// Every rule's verdict for an event, with explanations (slow path: `rulehook test`).
    pub fn explain(&self, source: Option<&str>, doc: &EventDoc) -> Vec<Verdict> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                if let (Some(src), Some(list)) = (source, &rule.sources)
                    && !list.iter().any(|s| s == src)
                {
                    {
                        return Verdict {
                            rule: i,
                            matched: false,
                            why: vec![format!(
                                "source `{src}` is not one of [{}]",
                                list.join(", ")
                            )],
                            other_source: true,
                        };
                    }
                }
                let (matched, why) = rule.condition.explain(doc);
                Verdict {
                    rule: i,
                    matched,
                    why,
                    other_source: false,
                }
            })
            .collect()
    }
}

/// One line for the rules of other sources a view folds: `4 rule(s) take other sources: a/x, …`.
pub fn other_sources_line(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "{} rule(s) take other sources: {}",
            names.len(),
            names.join(", ")
        )
    })
}

/// The fingerprint of a compiled rule: a hash of everything that decides what it does, with
/// template names replaced by their sources (names depend on load order; sources do not).
pub(crate) fn fingerprint(rule: &Rule, templates: &Templates, scripts: &Path) -> String {
    use sha2::Digest;
    let described = format!(
        "{}\n{}\n{:?}\n{:?}\n{:?}\n{:?}",
        rule.name,
        rule.condition.describe(),
        rule.sources,
        rule.actions,
        rule.on_failure,
        rule.throttle
            .as_ref()
            .map(|t| (t.window, format!("{:?}", t.group_by))),
    );
    let described = match &rule.correlate {
        Some(c) => format!("{described}\ncorrelate {}", c.describe()),
        None => described,
    };
    // Where the scripts folder is is not part of what a rule does (`whatif --scripts`
    // elsewhere, a moved install): scripts count by their path inside it.
    let root = scripts
        .canonicalize()
        .unwrap_or_else(|_| scripts.to_path_buf());
    let root = root.to_string_lossy();
    let described = if root.len() > 1 {
        described.replace(&format!("{root}/"), "<scripts>/")
    } else {
        described
    };
    // Live rules keep the fingerprints they had before modes existed.
    let described = match rule.shadow {
        true => format!("{described}\nmode shadow"),
        false => described,
    };
    let described = match &rule.approval {
        Some(a) => format!("{described}\n{}", a.describe()),
        None => described,
    };
    let mut h = sha2::Sha256::new();
    let mut rest = described.as_str();
    while let Some(at) = rest.find("Template(\"") {
        let (head, tail) = rest.split_at(at + "Template(\"".len());
        h.update(head.as_bytes());
        let end = tail.find("\")").unwrap_or(tail.len());
        let name = &tail[..end];
        h.update(templates.source(name).as_deref().unwrap_or(name).as_bytes());
        rest = &tail[end..];
    }
    h.update(rest.as_bytes());
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod fingerprint_tests {
    use super::{Dirs, load};

    fn fingerprints(files: &[(&str, &str)]) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for (name, text) in files {
            std::fs::write(dir.path().join("rulebooks").join(name), text).unwrap();
        }
        let set = load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        })
        .unwrap();
        set.rules
            .iter()
            .map(|r| (r.key.clone(), r.fingerprint.clone()))
            .collect()
    }

    const A: &str = "sources:\n  - { name: s, kind: internal }\nrules:\n  - name: a\n    condition: '$.x == 1'\n    actions: [{ log: { message: 'x={{ event.x }}' } }]\n";

    #[test]
    fn a_rule_keeps_its_fingerprint_until_what_it_does_changes() {
        let first = fingerprints(&[("a.yml", A)]);
        // Reloading the same text, or adding another rule with the same message before it
        // (which changes inline template names), keeps it.
        let other = "rules:\n  - name: b\n    actions: [{ log: { message: 'x={{ event.x }}' } }]\n";
        let again = fingerprints(&[("0.yml", other), ("a.yml", A)]);
        assert_eq!(first[0], again.into_iter().find(|(k, _)| k == "a").unwrap());
        let message = fingerprints(&[("a.yml", &A.replace("x={{", "now x={{"))]);
        assert_ne!(
            first[0].1, message[0].1,
            "a changed template is a new version"
        );
        let condition = fingerprints(&[("a.yml", &A.replace("== 1", "== 2"))]);
        assert_ne!(first[0].1, condition[0].1, "a changed condition too");
    }

    #[test]
    fn the_scripts_folder_path_is_not_part_of_a_version() {
        use std::os::unix::fs::PermissionsExt;
        let with_scripts_in = |folder: &str| {
            let dir = tempfile::tempdir().unwrap();
            let scripts = dir.path().join(folder);
            for d in [
                dir.path().join("rulebooks"),
                scripts.clone(),
                dir.path().join("templates"),
            ] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(scripts.join("x.sh"), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(scripts.join("x.sh"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            std::fs::write(
                dir.path().join("rulebooks/a.yml"),
                "rules:\n  - name: a\n    actions: [{ run_script: { script: x.sh, args: [a] } }]\n",
            )
            .unwrap();
            let set = load(&Dirs {
                rulebooks: dir.path().join("rulebooks"),
                scripts,
                templates: dir.path().join("templates"),
            })
            .unwrap();
            set.rules[0].fingerprint.clone()
        };
        assert_eq!(
            with_scripts_in("scripts"),
            with_scripts_in("candidate-scripts")
        );
    }

    #[test]
    fn rule_names_that_could_make_keys_collide_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path().join("rulebooks/a.yml"),
            "rules:\n  - name: a/b\n    actions: [{ log: { message: m } }]\n",
        )
        .unwrap();
        let err = load(&Dirs {
            rulebooks: dir.path().join("rulebooks"),
            scripts: dir.path().join("scripts"),
            templates: dir.path().join("templates"),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("a.yml:2:") && err.contains("`/`"), "{err}");
    }
}
