//! Rulebook loading: arbitrary text as a rulebook file, loaded with the real loader (YAML,
//! sources, conditions, actions, templates, `${…}` references). Must never panic or hang.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rulehook::rules::{Dirs, load};

fn dirs() -> &'static (Dirs, PathBuf) {
    static DIRS: OnceLock<(Dirs, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("rulehook-fuzz-{}", std::process::id()));
        for d in ["rulebooks", "scripts", "templates"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let script = root.join("scripts/ok.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(root.join("templates/t.j2"), "{{ event }}").expect("template");
        std::fs::write(root.join("templates/b.json"), "{\"v\": {{ event.x }}}").expect("template");
        let file = root.join("rulebooks/fuzz.yml");
        (
            Dirs {
                rulebooks: root.join("rulebooks"),
                scripts: root.join("scripts"),
                templates: root.join("templates"),
            },
            file,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (dirs, file) = dirs();
    if std::fs::write(file, data).is_err() {
        return;
    }
    if let Ok(set) = load(dirs) {
        // Exercise what a load builds: matching an empty event against every rule.
        let doc = rulehook::domain::EventDoc::new(serde_json::json!({"x": 1}));
        for s in &set.sources {
            let _ = set.matching(&s.name, &doc);
        }
    }
});
