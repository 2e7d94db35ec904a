//! Rulebook loading: arbitrary text as a rulebook file, compiled with the real loader (YAML,
//! sources, conditions, actions, templates, `${…}` references) from memory, as a rule set is
//! compiled again from the rule archive. Must never panic or hang.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rulehook::rules::snapshot::Snapshot;

/// A scripts directory with one executable script, and the templates rulebooks may name.
fn fixture() -> &'static (PathBuf, Snapshot) {
    static FIXTURE: OnceLock<(PathBuf, Snapshot)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let scripts =
            std::env::temp_dir().join(format!("rulehook-fuzz-{}/scripts", std::process::id()));
        std::fs::create_dir_all(&scripts).expect("mkdir");
        let script = scripts.join("ok.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut snap = Snapshot::default();
        snap.templates.insert("t.j2".into(), "{{ event }}".into());
        snap.templates
            .insert("b.json".into(), "{\"v\": {{ event.x }}}".into());
        (scripts, snap)
    })
}

fuzz_target!(|data: &[u8]| {
    // A rulebook that is not UTF-8 is refused when read, before the loader sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (scripts, base) = fixture();
    let mut snap = base.clone();
    snap.rulebooks.insert("fuzz.yml".into(), text.to_string());
    if let Ok(set) = snap.load(scripts) {
        // Exercise what a load builds: matching an event against every rule.
        let doc = rulehook::domain::EventDoc::new(serde_json::json!({"x": 1}));
        for s in &set.sources {
            let _ = set.matching(&s.name, &doc);
        }
    }
});
