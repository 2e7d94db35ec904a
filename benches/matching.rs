//! Matching cost per event as the rule count grows (1, 1,000, 10,000 rules), on an IP Fabric
//! snapshot event. Rules are keyed on the snapshot id, as users write per-snapshot or per-device
//! rules; the index should keep the cost flat.
//!
//! `cargo bench --bench matching`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rulehook::rules::{Dirs, EventDoc, load};

fn rule_set(n: usize) -> (tempfile::TempDir, rulehook::rules::RuleSet) {
    let dir = tempfile::tempdir().expect("tempdir");
    for d in ["rulebooks", "scripts", "templates"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let mut yaml = String::from("sources:\n  - { name: ipf, kind: ipfabric, secret: s }\nrules:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - name: r{i}\n    condition: '$.type == \"snapshot\" && $.snapshot.id == \"snap-{i}\" && $.status == \"completed\"'\n    actions: [{{ log: {{ message: \"{{{{ event.snapshot.id }}}}\" }} }}]\n"
        ));
    }
    std::fs::write(dir.path().join("rulebooks/r.yml"), yaml).expect("write");
    let set = load(&Dirs {
        rulebooks: dir.path().join("rulebooks"),
        scripts: dir.path().join("scripts"),
        templates: dir.path().join("templates"),
    })
    .expect("rulebook loads");
    (dir, set)
}

fn matching(c: &mut Criterion) {
    let event: serde_json::Value = serde_json::from_str(
        r#"{"type":"snapshot","action":"discover","status":"completed","requester":"cron",
            "snapshot":{"id":"snap-0","name":"nightly"},"timestamp":1732345200000}"#,
    )
    .expect("json");
    let doc = EventDoc::new(event);
    let mut group = c.benchmark_group("match");
    for n in [1usize, 1_000, 10_000] {
        let (_dir, set) = rule_set(n);
        assert_eq!(set.matching("ipf", &doc), vec![0]);
        group.bench_function(format!("{n}_rules"), |b| {
            b.iter(|| black_box(set.matching("ipf", black_box(&doc))))
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
