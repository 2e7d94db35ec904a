//! `rulehook check` and `rulehook test` as a user runs them.

mod common;

use common::{Env, repo_path};
use std::process::Command;

fn shipped(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(args)
        .arg("--rulebooks")
        .arg(repo_path("rulebooks"))
        .arg("--scripts")
        .arg(repo_path("scripts"))
        .arg("--templates")
        .arg(repo_path("templates"))
        .output()
        .expect("run rulehook")
}

#[test]
fn check_names_file_line_and_column_and_fails() {
    let env = Env::new();
    env.rulebook(
        "broken.yml",
        "sources:\n  - { name: ipf, kind: ipfabric, secret: x }\nrules:\n  - name: r\n    condition: '$.status == \"completed\" && $.x =! 1'\n    actions:\n      - log: { message: hi }\n",
    );
    env.rulebook(
        "typo.yml",
        "rules:\n  - name: r\n    condtion: '$.a'\n    actions: []\n",
    );
    env.rulebook(
        "script.yml",
        "rules:\n  - name: s\n    actions:\n      - run_script: { script: ../../etc/passwd }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let broken = env.path("rulebooks").join("broken.yml");
    assert!(err.contains(&format!("{}:5:", broken.display())), "{err}");
    let typo = env.path("rulebooks").join("typo.yml");
    assert!(
        err.contains(&format!("{}:3:", typo.display())) && err.contains("condtion"),
        "{err}"
    );
    assert!(
        err.contains("script.yml:4:") && err.contains("../../etc/passwd"),
        "{err}"
    );
}

#[test]
fn check_reports_a_missing_secret_by_name() {
    let env = Env::new();
    env.rulebook(
        "s.yml",
        "sources:\n  - { name: a, kind: github, secret: '${env:RULEHOOK_SURELY_UNSET_VAR}' }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.yml:2:") && err.contains("RULEHOOK_SURELY_UNSET_VAR"),
        "{err}"
    );
}

#[test]
fn shipped_rulebooks_check_clean() {
    let out = shipped(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 source(s)"));
}

#[test]
fn test_explains_matches_and_non_matches() {
    let ev = repo_path("rulebooks/events/ipfabric-discover-completed.json");
    let out = shipped(&[
        "test",
        "--event",
        ev.to_str().unwrap(),
        "--source",
        "ipfabric",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = report
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "remediate-after-discovery")
        .unwrap();
    assert_eq!(rule["matched"], true);
    assert_eq!(
        rule["actions"][0]["run_script"]["args"],
        serde_json::json!(["--snapshot", "a6b1d1a4-6a7c-4ba8-9b4c-1c3f0c8f9e21"])
    );

    // The test event: why not, with the actual value.
    let ev = repo_path("rulebooks/events/ipfabric-test.json");
    let out = shipped(&[
        "test",
        "--event",
        ev.to_str().unwrap(),
        "--source",
        "ipfabric",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no match ipfabric/remediate-after-discovery"),
        "{text}"
    );
    assert!(
        text.contains("`$.test != true` is false ($.test is true)"),
        "{text}"
    );
}

/// `rulehook check` on one rulebook: its stderr.
fn check_one(yaml: &str) -> String {
    check_files(&[("t.yml", yaml)])
}

/// `rulehook check` on rulebooks (file name, text), which must fail: its stderr.
fn check_files(files: &[(&str, &str)]) -> String {
    let env = Env::new();
    for (name, yaml) in files {
        env.rulebook(name, yaml);
    }
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A playbook run and an AWX job template read `extra_vars` alike, and `check` says the same
/// for each mistake: not a mapping, or `ansible_eda` (which rulehook sets).
#[test]
fn extra_vars_mistakes_read_the_same_for_playbooks_and_job_templates() {
    let awx =
        "run_job_template: { url: 'https://aap.example.com', token: t0k3n-t0k3n-t0k3n, name: fix";
    let err = check_one(&format!(
        "rules:\n  - name: a\n    actions:\n      - {awx}, extra_vars: [1] }}\n      - {awx}, extra_vars: {{ ansible_eda: 1 }} }}\n  - name: b\n    actions:\n      - run_playbook: {{ playbook: site.yml, extra_vars: [1] }}\n      - run_playbook: {{ playbook: site.yml, extra_vars: {{ ansible_eda: 1 }} }}\n"
    ));
    for (line, want) in [
        (4, "extra_vars must be a mapping"),
        (5, "extra_vars: `ansible_eda` is set by rulehook"),
        (8, "extra_vars must be a mapping"),
        (9, "extra_vars: `ansible_eda` is set by rulehook"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("t.yml:{line}:")) && l.contains(want)),
            "missing line {line} {want:?} in\n{err}"
        );
    }
}

fn with_condition(c: &str) -> String {
    format!(
        "rules:\n  - name: r\n    condition: '{c}'\n    actions:\n      - log: {{ message: hi }}\n"
    )
}

#[test]
fn jsonpath_errors_point_at_the_mistake_with_a_fix() {
    // Column 17 is the condition's first character.
    for (cond, col, want) in [
        (r#"$.a = "x""#, 21, "`=` is not an operator: write `==`"),
        (r#"$.a =! "x""#, 21, "`=!` is not an operator: write `!=`"),
        ("$.a == ", 21, "`==` needs a value on its right"),
        (
            r#"$.details.Assurance Issue Status == "x""#,
            26,
            r#"keys with spaces need brackets: `$.details['Assurance Issue Status'] == "x"`"#,
        ),
        (
            r#"$.tags[*] == "core""#,
            17,
            r#"use a filter: `$.tags[?@ == "core"]`"#,
        ),
        (
            r#"$.alerts[*].labels.severity == "critical""#,
            17,
            r#"use a filter: `$.alerts[?@.labels.severity == "critical"]`"#,
        ),
    ] {
        let err = check_one(&with_condition(cond));
        assert!(
            err.contains(&format!("t.yml:3:{col}: condition `{cond}`: ")),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("not a valid JSONPath query"), "{err}");
    }
}

#[test]
fn yaml_errors_say_what_to_do_once() {
    let err = check_one(
        "rules:\n  - name: r\n    condtion: '$.a'\n    actions:\n      - log: { message: hi }\n",
    );
    assert!(
        err.contains("t.yml:3:5: unknown key `condtion`; did you mean `condition`?"),
        "{err}"
    );
    assert!(
        !err.contains("at line"),
        "the position is printed once: {err}"
    );

    let err = check_one(
        "rules:\n  - name: r\n    condition: '$.a'\n   actions:\n      - log: { message: hi }\n",
    );
    assert!(
        err.contains("line 4 has `actions:` indented 3 spaces"),
        "{err}"
    );

    let err = check_one("rules:\n  - name: r\n    actions:\n    - log:\n      message: hi\n");
    assert!(
        err.contains(
            "`log:` has no value; if its fields are on the next lines, indent them further"
        ),
        "{err}"
    );

    let err = check_one("sources:\n  - { name: eem, kind: bearer, token: abc }\n");
    assert!(err.contains("a source's credential is `secret`"), "{err}");
}

#[test]
fn one_bad_source_does_not_cascade() {
    let env = Env::new();
    env.rulebook(
        "a.yml",
        "sources:\n  - { name: eem, kind: bearr, secret: x }\n  - { name: am, kind: bearer, secret: x }\nrules:\n  - name: r1\n    sources: [eem, am]\n    actions:\n      - log: { message: hi }\n",
    );
    env.rulebook(
        "b.yml",
        "sources:\n  - { name: gh, kind: github, token: x }\n",
    );
    env.rulebook(
        "c.yml",
        "rules:\n  - name: r2\n    sources: [eem]\n    actions:\n      - log: { message: hi }\n  - name: r3\n    sources: [gh]\n    actions:\n      - log: { message: hi }\n  - name: r4\n    sources: [amm]\n    actions:\n      - log: { message: hi }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown source kind `bearr`; did you mean `bearer`?"),
        "{err}"
    );
    assert!(err.contains("b.yml:2:31: unknown key `token`"), "{err}");
    assert!(
        err.contains(
            "rule `r4` names source `amm`, which no rulebook declares; did you mean `am`?"
        ),
        "{err}"
    );
    assert!(err.contains("3 error(s)"), "only the three causes: {err}");
}

#[test]
fn template_names_that_cannot_exist_fail_check_at_their_column() {
    let env = Env::new();
    std::fs::write(
        env.path("templates").join("note.md.j2"),
        "Snapshot {{ snapshot_id }} failed: {{ failure.error }}\n",
    )
    .unwrap();
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: s, kind: none }
rules:
  - name: r
    actions:
      - log: { message: "x {{ evnt.x }}" }
      - log: { message: "{{ previous.stdout }} {{ failure.error }}" }
  - name: r2
    actions:
      - log: { message: "{{ previous }}" }
    on_failure:
      - log: { message: "{{ failure.error }} after {{ previous }}" }
      - post_webhook: { url: "http://127.0.0.1:9/", body_template: note.md.j2, content_type: text/plain }
"#,
    );
    let out = env.cmd(&["check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "t.yml:6:31: message: `evnt` is not defined; did you mean `event`?",
        "t.yml:7:51: message: `failure` exists only in `on_failure` actions",
        "t.yml:10:29: message: `previous` is the previous action's result, and the first action of a rule has none",
        "t.yml:13:68: body_template `note.md.j2`: `snapshot_id` is not defined: the event's fields are under `event`",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("4 error(s)"), "{err}");
}

#[test]
fn a_render_error_names_the_variable_rule_and_where_the_template_is() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: s, kind: none }\nrules:\n  - name: r\n    actions:\n      - log: { message: \"x {{ event.snapshot.idd }}\" }\n",
    );
    std::fs::write(env.path("ev.json"), r#"{"snapshot": {"id": 1}}"#).unwrap();
    let out = env
        .cmd(&["test", "--event", env.path("ev.json").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("`event.snapshot.idd` is undefined (in the template at ")
            && text.contains("t.yml:6:31)"),
        "{text}"
    );
    assert!(
        !text.contains("t/r/0"),
        "internal names stay internal: {text}"
    );
}

/// Two rulebooks with the same template text share one compiled template; a render error
/// still names the rulebook and line of the rule that failed.
#[test]
fn a_render_error_names_its_own_rulebook_when_the_text_is_shared() {
    let env = Env::new();
    let book = |src: &str, rule: &str| {
        format!(
            "sources:\n  - {{ name: {src}, kind: none }}\nrules:\n  - name: {rule}\n    sources: [{src}]\n    actions:\n      - log: {{ message: \"{{{{ event.host }}}}\" }}\n"
        )
    };
    env.rulebook("a.yml", &book("rtr", "a-down"));
    env.rulebook("b.yml", &format!("\n\n{}", book("sw", "b-other")));
    std::fs::write(env.path("ev.json"), r#"{"x": 1}"#).unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "sw",
            "--event",
            env.path("ev.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("b.yml:9:29)"), "{text}");
    assert!(!text.contains("a.yml"), "{text}");
}

#[test]
fn test_shows_throttles_on_failure_and_durations() {
    let ev = repo_path("rulebooks/events/ipfabric-discover-completed.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args([
            "test",
            "--event",
            ev.to_str().unwrap(),
            "--source",
            "ipfabric",
        ])
        .arg("--rulebooks")
        .arg(repo_path("rulebooks"))
        .arg("--scripts")
        .arg(repo_path("scripts"))
        .arg("--templates")
        .arg(repo_path("templates"))
        .env("GITHUB_TOKEN", "test-token")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"timeout\":\"5m\""), "{text}");
    assert!(!text.contains("300000"), "{text}");
    assert!(
        text.contains("on failure: {\"open_ticket\"")
            && text.contains("Remediation failed for snapshot a6b1d1a4"),
        "{text}"
    );
    let ev = repo_path("rulebooks/events/alertmanager-firing.json");
    let out = shipped(&[
        "test",
        "--event",
        ev.to_str().unwrap(),
        "--source",
        "alertmanager",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("throttle: once within 10m per group"),
        "{text}"
    );
    let out = shipped(&[
        "test",
        "--json",
        "--event",
        ev.to_str().unwrap(),
        "--source",
        "alertmanager",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let throttled = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["throttle"].is_object())
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(throttled["throttle"]["once_within"], 600_000, "{v}");
}

#[test]
fn requires_env_skips_a_rule_or_an_action_with_one_warning() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: s, kind: none }\nrules:\n  - name: r\n    requires_env: [RULEHOOK_SURELY_UNSET_A]\n    actions:\n      - log: { message: hi }\n  - name: r2\n    actions:\n      - log: { message: hi }\n      - post_webhook: { requires_env: [RULEHOOK_SURELY_UNSET_B], url: 'http://127.0.0.1:9/', body: '{}' }\n",
    );
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("t.yml:4: rule `r` is skipped because RULEHOOK_SURELY_UNSET_A is not set"),
        "{err}"
    );
    assert!(
        err.contains("t.yml:11: rule `r2`: `post_webhook` is skipped because RULEHOOK_SURELY_UNSET_B is not set"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 rule(s)"));
}

#[test]
fn every_serve_flag_has_help_text() {
    let out = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("--") || l.trim_start().starts_with("-h,") {
            flags += 1;
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            assert!(
                !next.is_empty() && !next.starts_with('[') && !next.starts_with("--"),
                "`{}` has no help text:\n{help}",
                l.trim()
            );
        }
    }
    assert!(flags > 10, "{help}");
    assert!(
        help.contains("how many jobs (matched rules) run at once"),
        "{help}"
    );
}

#[test]
fn kind_none_warns_with_file_and_line() {
    let env = Env::new();
    env.rulebook("t.yml", "sources:\n  - name: open\n    kind: none\n");
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.yml:3: source `open` has kind `none`"),
        "{err}"
    );
}

/// `check` reports every structural problem of a rulebook at once, each at its place: one does
/// not hide the next (in the same rule, or in other rules and sources).
#[test]
fn check_reports_every_structural_problem_at_once() {
    let err = check_one(
        r#"sources:
  - { name: s, kind: none, colour: red }
  - { name: t, kind: none }
rules:
  - name: a
    sevrity: high
    condtion: '$.a == 1'
    actions:
      - log: { message: hi }
  - name: b
    actions:
      - log:
        message: hi
  - name: c
    actions:
      - run_scrpt: { script: x.sh }
  - name: d
    actions:
      - log: { message: fine }
"#,
    );
    for want in [
        "t.yml:2:",
        "unknown key `colour`",
        "t.yml:6:5: unknown key `sevrity`",
        "t.yml:7:5: unknown key `condtion`; did you mean `condition`?",
        "t.yml:12:",
        "`log:` has no value",
        "t.yml:16:",
        "unknown action `run_scrpt`; did you mean `run_script`?",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("5 error(s)"), "{err}");
}

/// Rules of other sources are folded into one line, not one card each burying the match.
#[test]
fn rulehook_test_folds_the_rules_of_other_sources() {
    let env = Env::new();
    let mut yaml = String::from(
        "sources:\n  - { name: gh, kind: none }\n  - { name: am, kind: none }\nrules:\n  - name: mine\n    sources: [am]\n    actions: [{ log: { message: hi } }]\n",
    );
    for n in 0..4 {
        yaml.push_str(&format!(
            "  - name: gh{n}\n    sources: [gh]\n    actions: [{{ log: {{ message: hi }} }}]\n"
        ));
    }
    env.rulebook("t.yml", &yaml);
    std::fs::write(env.path("ev.json"), "{}").unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "am",
            "--event",
            env.path("ev.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MATCH    t/mine"), "{text}");
    assert_eq!(text.matches("is not one of").count(), 0, "{text}");
    assert!(
        text.contains("4 rule(s) take other sources: t/gh0, t/gh1, t/gh2, t/gh3"),
        "{text}"
    );
}

/// `rulehook test … | head -1`: output to a pipe that closed ends the command quietly (as other
/// command-line tools do), never with a panic and its backtrace.
#[test]
fn a_closed_pipe_ends_quietly() {
    let ev = repo_path("rulebooks/events/ipfabric-discover-completed.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["test", "--source", "ipfabric", "--event"])
        .arg(ev)
        .arg("--rulebooks")
        .arg(repo_path("rulebooks"))
        .arg("--scripts")
        .arg(repo_path("scripts"))
        .arg("--templates")
        .arg(repo_path("templates"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the command has written anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

/// `rulehook test` takes syslog messages as sent (one per line) for a syslog source, and the
/// envelope a listener records (`--peer`, `--topic`, `--subject`) for conditions and templates
/// alike; a condition on `meta(…)` that is false says what it read.
#[test]
fn test_takes_raw_syslog_lines_and_the_envelope() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        r#"sources:
  - { name: routers, kind: syslog, listen: udp://127.0.0.1:0 }
  - { name: telemetry, kind: mqtt, url: "mqtt://127.0.0.1:1883", topics: ["netops/#"] }
rules:
  - name: link-down
    sources: [routers]
    condition: '$.cisco.mnemonic == "UPDOWN" && meta("peer") == "10.0.0.7"'
    actions:
      - log: { message: "{{ event.hostname | default(meta.peer) }} {{ event.cisco.mnemonic }}" }
  - name: switch-telemetry
    sources: [telemetry]
    condition: 'search(meta("topic"), "/sw[0-9]+$")'
    actions:
      - log: { message: "{{ meta.topic }}" }
"#,
    );
    std::fs::write(
        env.path("line.txt"),
        "<187>1234: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: Interface Gi0/13, changed state to down\n",
    )
    .unwrap();
    let line = env.path("line.txt");
    let line = line.to_str().unwrap();
    let out = env
        .cmd(&[
            "test", "--source", "routers", "--peer", "10.0.0.7", "--event", line,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("MATCH    r/link-down"), "{text}");
    assert!(text.contains("10.0.0.7 UPDOWN"), "{text}");
    // Two lines: a sequence of two events.
    std::fs::write(
        env.path("two.txt"),
        "<187>1: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down\n<190>2: *Dec  7 05:54:06.000: %SYS-6-LOGGINGHOST_STARTSTOP: Logging to host 10.1.1.1 started\n",
    )
    .unwrap();
    let two = env.path("two.txt");
    let out = env
        .cmd(&[
            "test",
            "--source",
            "routers",
            "--peer",
            "10.0.0.7",
            "--event",
            two.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("event e1") && text.contains("event e2"),
        "{text}"
    );
    // MQTT: the topic decides.
    std::fs::write(env.path("m.json"), r#"{"if": "Gi0/1"}"#).unwrap();
    let m = env.path("m.json");
    let m = m.to_str().unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "telemetry",
            "--topic",
            "netops/sw12",
            "--event",
            m,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MATCH    r/switch-telemetry"), "{text}");
    assert!(text.contains("netops/sw12"), "{text}");
    let out = env
        .cmd(&[
            "test",
            "--source",
            "telemetry",
            "--topic",
            "netops/rt1",
            "--event",
            m,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"(meta("topic") is "netops/rt1")"#),
        "{text}"
    );
}

/// Filters, tests and included files are looked up only when a template renders: `check`
/// names a misspelt one (with the closest that exists) and a missing include at its place,
/// instead of passing a rulebook whose every event would then fail its action.
#[test]
fn check_names_an_unknown_filter_test_or_include() {
    let err = check_one(
        r#"rules:
  - name: r
    actions:
      - log: { message: "{{ event.a | defualt('-') | upper }}" }
      - log: { message: "{% if event.b is defind %}b{% endif %}" }
      - log: { message: "{% include 'nowhere.j2' %}" }
      - log: { message: "{{ event.c | default('-') | trim }} {{ event.d is not defined }}" }
"#,
    );
    for want in [
        "t.yml:4:39: message: `defualt` is not a filter; did you mean `default`?",
        "t.yml:5:43: message: `defind` is not a test; did you mean `defined`?",
        "t.yml:6:38: message: `nowhere.j2` is not a file in the templates directory",
        "3 error(s)",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}

/// A `url` the HTTP client cannot send (no scheme, a misspelt one) is a load error at its
/// place; `check` passed it and every event's action failed with "builder error". A templated
/// URL is held to the text it starts with; `${env:…}` values are not repeated in the message.
#[test]
fn check_refuses_a_url_that_cannot_be_sent() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"rules:
  - name: r
    actions:
      - post_webhook: { url: "127.0.0.1:9/hook" }
      - post_webhook: { url: "htp://127.0.0.1:9/hook" }
      - post_webhook: { url: "hooks.example.net/{{ event.path }}" }
      - post_webhook: { url: "${env:BAD_HOOK_URL}" }
      - notify: { to: slack, url: "slack.example.net/x", text: hi }
      - post_webhook: { url: "{{ event.url }}" }
      - post_webhook: { url: "https://{{ event.host }}/x" }
      - post_webhook: { url: "http://127.0.0.1:9/hook" }
"#,
    );
    let out = env
        .cmd(&["check"])
        .env("BAD_HOOK_URL", "mailto:ops@example.net")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "t.yml:4:30: url `127.0.0.1:9/hook` is not an absolute URL",
        "t.yml:5:30: url `htp://127.0.0.1:9/hook` must start with http:// or https://, not htp:",
        "t.yml:6:30: url `hooks.example.net/{{ event.path }}` must start with http:// or https://",
        "t.yml:7:30: url must start with http:// or https://, not mailto:",
        "t.yml:8:35: url `slack.example.net/x` is not an absolute URL",
        "5 error(s)",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(!err.contains("ops@example.net"), "{err}");
}

/// docs/sources.md's MQTT example, as a reader copies it: its rule, tried with the message its
/// "Test by hand" line publishes, on the topic it names, renders its action (the message
/// lacked the `interface` the rule's log line reads, so the action failed).
#[test]
fn the_mqtt_example_of_the_docs_runs_with_its_test_message() {
    let doc = std::fs::read_to_string(repo_path("docs/sources.md")).unwrap();
    let section = &doc[doc.find("## `kind: mqtt`").unwrap()..];
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    // The second source needs a CA file at /etc/rulehook: the first one is the one tried.
    let (head, rest) = yaml.split_once("  - name: secure-telemetry").unwrap();
    let rules = &rest[rest.find("rules:").unwrap()..];
    let env = Env::new();
    env.rulebook("mqtt.yml", &format!("{head}{rules}"));
    let line = section
        .lines()
        .find(|l| l.contains("mosquitto_pub"))
        .unwrap();
    let topic = line.split("-t ").nth(1).unwrap().split(' ').next().unwrap();
    let payload = line
        .split("-m '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    std::fs::write(env.path("payload.json"), payload).unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "telemetry",
            "--topic",
            topic,
            "--event",
            env.path("payload.json").to_str().unwrap(),
        ])
        .env("MQTT_PASSWORD", "pw")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("MATCH    mqtt/access-switch-down"), "{text}");
    assert!(!text.contains("render_error"), "{text}");
    assert!(text.contains(&format!("{topic}: ")), "{text}");
}

/// `rulehook test` prints a maintenance window's line before the rule's approval line: the
/// windows are decided first (a held job is asked only once the window ends). It printed the
/// approval first.
#[test]
fn rulehook_test_prints_the_window_before_the_approval() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: s, kind: bearer, secret: token-1234 }
windows:
  - { name: freeze, start: "2026-12-20T00:00:00Z", end: "2027-01-04T00:00:00Z", rules: [asked], during: hold }
rules:
  - name: asked
    approval: { timeout: 30m }
    actions: [{ log: { message: hi } }]
"#,
    );
    std::fs::write(env.path("ev.json"), "{}").unwrap();
    let ev = env.path("ev.json");
    let out = env
        .cmd(&[
            "test",
            "--source",
            "s",
            "--at",
            "2026-12-24T12:00:00Z",
            "--event",
            ev.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let window = text.find("window `freeze` is in force at ");
    let approval = text.find("waits for approval first (any approver; within 30m");
    assert!(
        window.is_some() && approval.is_some() && window < approval,
        "the window line, then the approval line:\n{text}"
    );
}

/// `rulehook test` prints its lines in the order the engine decides: the throttle at intake
/// (a throttled repeat makes no job at all), then the maintenance window at the job's start,
/// then the rule's approval. It printed the throttle after the window.
#[test]
fn rulehook_test_prints_the_throttle_before_the_window() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: s, kind: bearer, secret: token-1234 }
windows:
  - { name: freeze, start: "2026-12-20T00:00:00Z", end: "2027-01-04T00:00:00Z", rules: [asked], during: hold }
rules:
  - name: asked
    throttle: { once_within: 10m }
    approval: { timeout: 30m }
    actions: [{ log: { message: hi } }]
"#,
    );
    std::fs::write(env.path("ev.json"), "{}").unwrap();
    let ev = env.path("ev.json");
    // In force at `--at`, and the next window when it is not yet.
    for at in ["2026-12-24T12:00:00Z", "2026-12-01T12:00:00Z"] {
        let out = env
            .cmd(&[
                "test",
                "--source",
                "s",
                "--at",
                at,
                "--event",
                ev.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let throttle = text.find("throttle: once within 10m");
        let window = text.find("window `freeze`");
        let approval = text.find("waits for approval first");
        assert!(
            throttle.is_some() && window.is_some() && approval.is_some(),
            "{text}"
        );
        assert!(
            throttle < window && window < approval,
            "the throttle, the window, then the approval:\n{text}"
        );
    }
}

/// `rulehook test` says when a matching rule would run nothing (shadow mode) or would first wait
/// for an approval; its "would run" lines read as what happens next otherwise.
#[test]
fn rulehook_test_says_shadow_and_approval() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        r#"sources:
  - { name: s, kind: bearer, secret: token-1234 }
rules:
  - name: watched
    mode: shadow
    actions: [{ log: { message: hi } }]
  - name: asked
    approval: { timeout: 30m, approvers: [anna, lars] }
    actions: [{ log: { message: hi } }]
  - name: free
    actions: [{ log: { message: hi } }]
"#,
    );
    std::fs::write(env.path("ev.json"), "{}").unwrap();
    let ev = env.path("ev.json");
    let out = env
        .cmd(&["test", "--source", "s", "--event", ev.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MATCH    t/watched\n         shadow mode: nothing would run"),
        "{text}"
    );
    assert!(
        text.contains(
            "MATCH    t/asked\n         waits for approval first (anna, lars; within 30m, then reject)"
        ),
        "{text}"
    );
    assert!(
        text.contains("MATCH    t/free\n         would run:"),
        "{text}"
    );
    let out = env
        .cmd(&[
            "test",
            "--source",
            "s",
            "--json",
            "--event",
            ev.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["shadow"], true, "{v}");
    assert_eq!(
        v[1]["approval"]["approvers"],
        serde_json::json!(["anna", "lars"]),
        "{v}"
    );
    assert_eq!(v[2]["approval"], serde_json::Value::Null, "{v}");
    // Durations in the JSON are milliseconds, as an action's `timeout` is.
    assert_eq!(v[1]["approval"]["timeout"], 1_800_000, "{v}");
    assert_eq!(v[1]["approval"]["on_timeout"], "reject", "{v}");
}

/// `test --source` with a name the rulebooks do not declare says which they do (or the one
/// meant, for a typo), so the next try can succeed.
#[test]
fn rulehook_test_with_an_unknown_source_names_the_declared_ones() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: ipfabric, kind: bearer, secret: token-1234 }\n  - { name: netbox, kind: bearer, secret: token-1234 }\nrules: []\n",
    );
    std::fs::write(env.path("ev.json"), "{}").unwrap();
    let ev = env.path("ev.json");
    let run = |source: &str| {
        let out = env
            .cmd(&["test", "--source", source, "--event", ev.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("ipfabirc");
    assert!(err.contains("no source named `ipfabirc`"), "{err}");
    assert!(err.contains("did you mean `ipfabric`?"), "{err}");
    let err = run("github");
    assert!(err.contains("they declare: ipfabric, netbox"), "{err}");
}

/// A Cisco line sent with `logging origin-id hostname` (`57: r7: *Dec  7 …: %SYS-…`, read
/// whole when the device sends it directly) behind rsyslog as docs/sources.md sets it up: the
/// relay makes the `57` its TAG (APP-NAME), and the rest, `r7: *Dec  7 …`, was not read as a
/// Cisco header (a hostname was taken only after a sequence number in the message), so
/// `cisco` was missing and rules on `$.cisco.mnemonic` never matched.
#[test]
fn a_relayed_cisco_line_with_its_origin_hostname_is_read() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        "sources:\n  - { name: routers, kind: syslog, listen: 'udp://127.0.0.1:0' }\nrules:\n  - name: cfg\n    sources: [routers]\n    condition: '$.cisco.mnemonic == \"CONFIG_I\" && $.hostname == \"r7\" && $.cisco.sequence == 57 && $.cisco.clock == \"unset\" && $.message == \"%SYS-5-CONFIG_I: Configured from console by bob on vty0\"'\n    actions:\n      - log: { message: \"{{ event.hostname }}\" }\n",
    );
    let cisco = "r7: *Dec  7 06:00:01.000: %SYS-5-CONFIG_I: Configured from console by bob on vty0";
    for (i, line) in [
        // As the device sends it.
        format!("<189>57: {cisco}"),
        // rsyslog's forwarding format (omrelp's and omfwd's default), RFC 3339 time.
        format!("<189>2026-12-07T17:34:21.251798+00:00 localhost 57: {cisco}"),
        // rsyslog's RFC 5424 output (RSYSLOG_SyslogProtocol23Format), its MSG with a space.
        format!("<189>1 2026-12-07T17:34:21.251798+00:00 localhost 57 - - -  {cisco}"),
        // A BSD relay header.
        format!("<189>Dec  7 17:34:21 localhost 57: {cisco}"),
    ]
    .iter()
    .enumerate()
    {
        let f = env.path(&format!("line{i}.txt"));
        std::fs::write(&f, format!("{line}\n")).unwrap();
        let out = env
            .cmd(&[
                "test",
                "--source",
                "routers",
                "--event",
                f.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("MATCH    r/cfg"), "{line}\n{text}");
    }
}

/// `rulehook test` on a file of several syslog lines (a sequence, one event per line, as
/// docs/sources.md suggests for trying a source): a line no rule takes says why for each rule
/// of its source, as a single line does; it printed `(no rule)` and nothing else.
#[test]
fn a_file_of_lines_says_why_a_line_matched_nothing() {
    let env = Env::new();
    env.rulebook(
        "r.yml",
        "sources:\n  - { name: routers, kind: syslog, listen: 'udp://127.0.0.1:0' }\nrules:\n  - name: bgp\n    sources: [routers]\n    condition: '$.cisco.mnemonic == \"ADJCHANGE\"'\n    actions:\n      - log: { message: \"{{ event.message }}\" }\n",
    );
    let f = env.path("lines.txt");
    std::fs::write(
        &f,
        "<189>12: *Dec  7 06:00:01.000: %BGP-5-ADJCHANGE: neighbor 10.0.0.2 Up\n<187>13: *Dec  7 06:00:02.000: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down\n",
    )
    .unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "routers",
            "--event",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let second = &text[text.find("event e2").unwrap_or_else(|| panic!("{text}"))..];
    assert!(second.contains("(no rule)"), "{text}");
    assert!(second.contains("no match r/bgp"), "{text}");
    assert!(
        second.contains(
            r#"`$.cisco.mnemonic == "ADJCHANGE"` is false ($.cisco.mnemonic is "UPDOWN")"#
        ),
        "{text}"
    );
}

/// A correlation rule (here the docs' `sequence` example, which has no `sources:`) that an event
/// does not concern is explained with the names of its correlation's conditions; it said
/// "none of `any` held", an `any:` the user never wrote.
#[test]
fn a_correlation_that_an_event_misses_names_its_own_conditions() {
    let env = Env::new();
    env.rulebook(
        "c.yml",
        r#"sources:
  - { name: lnk, kind: none }
rules:
  - name: flap-then-recover
    correlate:
      within: 5m
      group_by: ['$.device']
      sequence:
        - { name: down, condition: '$.state == "down"' }
        - { name: up,   condition: '$.state == "up"' }
    actions:
      - log: { message: '{{ events.up.device }} back' }
"#,
    );
    std::fs::write(env.path("ev.json"), r#"{"type": "snapshot"}"#).unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "lnk",
            "--event",
            env.path("ev.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no match c/flap-then-recover"), "{text}");
    assert!(!text.contains("`any`"), "{text}");
    assert!(
        text.contains(
            "no condition of its correlation holds: `down`: `$.state == \"down\"` is false ($.state does not exist); `up`: `$.state == \"up\"` is false ($.state does not exist)"
        ),
        "{text}"
    );
}

/// `whatif --help` says what `--data` can read: a running `serve` holds its journal exclusively
/// (`whatif --data` then fails with "database is locked"), so the help points at `--url`. It
/// said "`serve` may be running on it", which sent people into that error.
#[test]
fn whatif_help_says_a_running_service_is_read_with_url() {
    let env = Env::new();
    let out = env.cmd(&["whatif", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("may be running on it"), "{text}");
    assert!(
        text.contains("A running `serve` holds its journal exclusively: read a running service with --url instead"),
        "{text}"
    );
}

/// A problem in one action does not hide the problems of the rule's other actions: each action
/// is looked at. Only the first was reported, so a rule with two misspelt actions took two
/// rounds of `check`.
#[test]
fn check_reports_a_problem_in_each_action_of_a_rule() {
    let err = check_one(
        r#"sources:
  - { name: s, kind: none }
rules:
  - name: a
    actions:
      - log: { mesage: hi }
      - run_scrpt: { script: x.sh }
      - log: { message: fine }
    on_failure:
      - log: { messag: hi }
"#,
    );
    for want in [
        "t.yml:6:16: unknown key `mesage`; did you mean `message`?",
        "t.yml:7:9: unknown action `run_scrpt`; did you mean `run_script`?",
        "t.yml:10:16: unknown key `messag`; did you mean `message`?",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");
}

/// A tab in the indentation is named at its own line and column with the fix. The parser's
/// words were "while scanning a plain scalar, found a tab", at the end of the line above.
#[test]
fn a_tab_in_the_indentation_is_named_where_it_is() {
    let err = check_one("sources:\n  - name: a\n\tkind: bearer\n    secret: x\n");
    assert!(
        err.contains(
            "t.yml:3:1: a tab in the indentation: YAML indents with spaces only (replace the tab with spaces)"
        ),
        "{err}"
    );
    let err = check_one(
        "sources:\n  - { name: a, kind: none }\nrules:\n  - name: r\n    actions:\n  \t- log: { message: hi }\n",
    );
    assert!(err.contains("t.yml:6:3: a tab in the indentation"), "{err}");
}

/// `rulehook test` with one event that a correlation rule takes says what that event does to
/// the pattern: which step it is and what the job still waits for. It printed `MATCH` and the
/// actions alone (with the docs' examples, a render error for the step not yet seen), as if one
/// `down` were enough for `flap-then-recover`, or one flap for five.
#[test]
fn one_event_of_a_correlation_says_what_the_pattern_still_needs() {
    let env = Env::new();
    env.rulebook(
        "c.yml",
        r#"sources:
  - { name: lnk, kind: none }
rules:
  - name: flap-then-recover
    correlate:
      within: 5m
      group_by: ['$.device']
      sequence:
        - { name: down, condition: '$.state == "down"' }
        - { name: up,   condition: '$.state == "up"' }
    actions:
      - log: { message: '{{ events.up.device }} back' }
  - name: flapping
    correlate:
      within: 10m
      count: { at_least: 5, name: flap, condition: '$.state == "down"' }
    actions:
      - log: { message: '{{ events.flap | length }} flaps' }
"#,
    );
    std::fs::write(env.path("ev.json"), r#"{"device": "r1", "state": "down"}"#).unwrap();
    let out = env
        .cmd(&[
            "test",
            "--source",
            "lnk",
            "--event",
            env.path("ev.json").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "correlation (sequence): this event is `down`; its job runs once the steps after it (`up`) came in order within 5m.",
        "correlation (count): this event is `flap`; its job runs once 5 such events came within 10m.",
        "try a sequence of events (a file of several) to see it hold and fire",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

/// A source declared a second time (or a second source on one path) names where the first
/// is: the error lands on whichever file is read later, which may be the one not edited.
/// It said only "source `ops` is declared twice" / "… already served by another source".
#[test]
fn a_second_source_of_one_name_or_path_names_the_first() {
    let err = check_files(&[
        (
            "a.yml",
            "sources:\n  - { name: ops, kind: bearer, secret: tok }\nrules:\n  - name: r\n    actions: [{ log: { message: hi } }]\n",
        ),
        (
            "b.yml",
            "sources:\n  - { name: ops, kind: bearer, secret: other }\n  - { name: ops2, kind: bearer, secret: other, path: /hooks/ops }\n",
        ),
    ]);
    for want in [
        "b.yml:2:13: source `ops` is declared twice (first at ",
        "a.yml:2:13): a source's name is unique across all rulebooks",
        "b.yml:3:13: path `/hooks/ops` is already served by source `ops` (",
        "a.yml:2:13): give this one another `path:`",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}

/// Every problem of a `windows:` entry and of an `approval:` block is reported, each at its
/// place: a wrong window name no longer hides the entry's other settings, a wrong `start` its
/// `end`, and a value of the wrong type (`rules: r`, `approvers: anna`) the block's next
/// problem. Each stopped at the first.
#[test]
fn check_reports_every_problem_of_a_window_and_an_approval() {
    let err = check_files(&[(
        "a.yml",
        r#"sources:
  - { name: ops, kind: none }
rules:
  - name: r
    actions: [{ log: { message: hi } }]
  - name: asked
    approval:
      timeout: 30m
      approvers: anna
      notify: { log: { message: hi } }
    actions: [{ log: { message: hi } }]
windows:
  - name: Freeze!
    start: "yesterday"
    end: "tomorrow"
    rules: [nosuch]
    during: hodl
  - name: typed
    rules: r
    during: [hold]
    start: "2026-12-20T00:00:00Z"
    end: "2027-01-04T00:00:00Z"
"#,
    )]);
    for want in [
        "a.yml:9:18: `approvers` must be a list",
        "a.yml:10:15: ",
        "a.yml:13:11: window name `Freeze!` must match",
        "a.yml:14:12: start `yesterday`: expected an RFC 3339 time",
        "a.yml:15:10: end `tomorrow`: expected an RFC 3339 time",
        "a.yml:16:13: window `Freeze!`: no rule named `nosuch`",
        "a.yml:17:13: during `hodl`: expected hold, skip or approve",
        "a.yml:19:12: `rules: r`: expected `all` or a list of rule names",
        "a.yml:20:13: ",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("9 error(s)"), "nothing else (no echo): {err}");
}

/// A window declared a second time names where the first is, and its own settings are still
/// checked: it said only "window `freeze` is declared twice", hiding a misspelt `during`.
#[test]
fn a_second_window_of_one_name_names_the_first_and_is_still_checked() {
    let err = check_files(&[
        (
            "a.yml",
            "sources:\n  - { name: ops, kind: none }\nrules:\n  - name: r\n    actions: [{ log: { message: hi } }]\nwindows:\n  - { name: freeze, start: \"2026-12-20T00:00:00Z\", end: \"2027-01-04T00:00:00Z\", rules: [r], during: hold }\n",
        ),
        (
            "b.yml",
            "windows:\n  - { name: freeze, start: \"2026-12-20T00:00:00Z\", end: \"2027-01-04T00:00:00Z\", rules: [r], during: hld }\n",
        ),
    ]);
    assert!(
        err.contains("b.yml:2:13: window `freeze` is declared twice (first at ")
            && err.contains("a.yml:7:13): a window's name is unique across all rulebooks"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

/// A wrong `mode:` is reported together with the rule's other mistakes; it was checked only
/// once the rest of the rule compiled, so it came to light one `check` later.
#[test]
fn a_wrong_mode_is_reported_with_the_rule_s_other_mistakes() {
    let err = check_one(
        r#"sources:
  - { name: s, kind: none }
rules:
  - name: r
    mode: dry
    actions:
      - post_webhook: { url: "ftp://example.net/x" }
"#,
    );
    for want in [
        "t.yml:5:11: mode `dry` is not known: write `shadow`",
        "t.yml:7:30: url `ftp://example.net/x` must start with http:// or https://",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("2 error(s)"), "{err}");
}

/// An editor's swap file beside a template (vim's `.x.j2.swp`, binary) or a backup (`x.j2~`)
/// is not read as a template: it made every reload fail ("stream did not contain valid
/// UTF-8") while the template was open, and `serve` refuse to start.
#[test]
fn an_editor_s_swap_file_in_templates_is_not_a_template() {
    let env = Env::new();
    env.rulebook(
        "t.yml",
        "sources:\n  - { name: s, kind: none }\nrules:\n  - name: r\n    actions:\n      - post_webhook: { url: \"http://127.0.0.1:9/x\", body_template: x.j2 }\n",
    );
    let templates = env.path("templates");
    std::fs::create_dir_all(templates.join(".git")).unwrap();
    std::fs::write(templates.join("x.j2"), "{\"a\": \"{{ event.a }}\"}").unwrap();
    std::fs::write(templates.join(".x.j2.swp"), [0xb0u8, 0x00, 0xff, 0xfe]).unwrap();
    std::fs::write(templates.join("x.j2~"), [0xff, 0xfe]).unwrap();
    std::fs::write(templates.join(".git/index"), [0xff, 0xfe]).unwrap();
    let out = env.cmd(&["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}
