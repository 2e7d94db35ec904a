//! `rulehook import ansible-rulebook`: a rulebook written like ansible-rulebook's documented
//! examples is translated; `check` accepts the output; the events that match a rule under
//! ansible-rulebook's semantics match the same rule after; what cannot be translated is listed
//! with file:line and left as a comment.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Env;
use serde_json::{Value, json};

const EDA: &str = r#"---
- name: Network remediation
  hosts: all
  sources:
    - name: netops
      ansible.eda.webhook:
        host: 0.0.0.0
        port: 5000
        token: "{{ webhook_token }}"
    - ansible.eda.range:
        limit: 5
  rules:
    - name: Interface down
      condition: event.payload.state == "down" and event.payload.device is defined
      action:
        run_playbook:
          name: playbooks/fix.yml
          extra_vars:
            device: "{{ event.payload.device }}"
    - name: Core or edge
      condition: event.payload.role in ["core", "edge"] and not (event.payload.maintenance == true)
      actions:
        - debug:
            msg: "core/edge event from {{ event.payload.device }}"
        - run_job_template:
            name: Fix interface
            organization: Default
            job_args:
              extra_vars:
                device: "{{ event.payload.device }}"
              limit: "{{ event.payload.device }}"
    - name: Tagged critical
      condition: event.payload.tags contains "critical"
      action:
        print_event:
          pretty: true
    - name: Syslog says changed state
      condition: event.payload.message is search("changed state to (up|down)", ignorecase=true)
      action:
        post_event:
          event:
            device: "{{ event.payload.device }}"
            kind: flap
    - name: Flap seen
      condition: event.kind == "flap"
      action:
        debug:
          msg: "flap on {{ event.device }}"
    - name: High CPU
      condition: event.payload.cpu is select('>=', 90)
      action:
        run_workflow_template:
          name: Drain node
          organization: Default
    - name: Old servers
      condition: event.payload.servers is selectattr('age', '>', 5)
      throttle:
        once_within: 5 minutes
        group_by_attributes:
          - event.payload.site
      action:
        debug:
    - name: Over the limit
      condition: event.payload.threshold > vars.limit
      action:
        debug:
    - name: Sets a fact
      condition: event.payload.x == 1
      action:
        set_fact:
          fact:
            x: 1
    - name: Both halves
      condition:
        all:
          - event.payload.half == 1
          - event.payload.half == 2
      action:
        debug:
          msg: "{{ events.m_0.payload.half }} and {{ events.m_1.payload.half }}"
"#;

/// (event, source, the rules ansible-rulebook matches for it).
fn cases() -> Vec<(Value, &'static str, Vec<&'static str>)> {
    vec![
        (
            json!({"state": "down", "device": "sw1", "role": "access"}),
            "netops",
            vec!["Interface down"],
        ),
        (json!({"state": "down", "role": "access"}), "netops", vec![]),
        (
            json!({"role": "core", "device": "sw1", "maintenance": false}),
            "netops",
            vec!["Core or edge"],
        ),
        (
            json!({"role": "edge", "device": "sw1", "maintenance": true}),
            "netops",
            vec![],
        ),
        (
            json!({"role": "access", "tags": ["a", "critical"]}),
            "netops",
            vec!["Tagged critical"],
        ),
        (json!({"role": "access", "tags": ["a"]}), "netops", vec![]),
        (
            json!({"message": "Interface Gi0/1, Changed State to DOWN", "device": "sw1"}),
            "netops",
            vec!["Syslog says changed state"],
        ),
        (
            json!({"message": "Interface Gi0/1 is up", "device": "sw1"}),
            "netops",
            vec![],
        ),
        (
            json!({"kind": "flap", "device": "sw1"}),
            "network-remediation-posted",
            vec!["Flap seen"],
        ),
        (json!({"cpu": [10, 95]}), "netops", vec!["High CPU"]),
        (json!({"cpu": [10, 50]}), "netops", vec![]),
        (
            json!({"servers": [{"age": 3}, {"age": 7}], "site": "x"}),
            "netops",
            vec!["Old servers"],
        ),
        (
            json!({"servers": [{"age": 3}], "site": "x"}),
            "netops",
            vec![],
        ),
    ]
}

const ALERTS: &str = r#"- name: Alerts
  hosts: all
  sources:
    - ansible.eda.alertmanager:
        host: 0.0.0.0
        port: 8000
  rules:
    - name: Node down
      condition: event.alert.labels.job == "node" and event.alert.status == "firing"
      action:
        run_job_template:
          name: Reboot
          organization: Default
          job_args:
            limit: "{{ event.alert.labels.instance }}"
    - name: Not maintenance
      condition: event.alert.labels.maintenance is not defined and event.alert.labels.severity not in ["info", "none"]
      action:
        print_event:
    - name: Prod hosts
      condition: event.alert.labels.instance is match("prod-") and not (event.alert.annotations.tags contains "ignore")
      action:
        debug:
"#;

#[test]
fn an_alertmanager_rulebook_filters_the_alerts() {
    let env = Env::new();
    let src = env.path("alerts.yml");
    std::fs::write(&src, ALERTS).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["import", "ansible-rulebook"])
        .arg(&src)
        .arg("--out")
        .arg(env.path("rulebooks"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "{}:11: `run_job_template` reads `event.alert`",
            src.display()
        )),
        "{report}"
    );
    // A second import does not replace the rulebook silently.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["import", "ansible-rulebook"])
        .arg(&src)
        .arg("--out")
        .arg(env.path("rulebooks"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists: remove it, or pass --force"));
    let run = |args: &[&str]| {
        env.cmd(args)
            .env("EDA_CONTROLLER_URL", "https://aap.example.com")
            .env("EDA_CONTROLLER_TOKEN", "controller-token-123")
            .output()
            .unwrap()
    };
    let o = run(&["check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let alert = |job: &str, instance: &str, severity: &str, tags: Value| json!({"status": "firing", "alerts": [{"status": "firing", "labels": {"job": job, "instance": instance, "severity": severity}, "annotations": {"tags": tags}}]});
    for (event, expected) in [
        (
            alert("node", "prod-1", "critical", json!([])),
            vec!["Node down", "Not maintenance", "Prod hosts"],
        ),
        (alert("db", "dev-1", "info", json!(["ignore"])), vec![]),
        (
            alert("db", "prod-2", "warning", json!(["ignore"])),
            vec!["Not maintenance"],
        ),
    ] {
        let f = env.path("event.json");
        std::fs::write(&f, event.to_string()).unwrap();
        let o = run(&[
            "test",
            "--event",
            f.to_str().unwrap(),
            "--source",
            "alerts-alertmanager",
            "--json",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let matched: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["matched"] == true)
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(matched, expected, "{event}: {v}");
    }
}

#[test]
fn an_eda_rulebook_is_translated_checked_and_matches_the_same_events() {
    let env = Env::new();
    let src = env.path("eda.yml");
    std::fs::write(&src, EDA).unwrap();
    let out = env.path("rulebooks");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["import", "ansible-rulebook"])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let file = src.display().to_string();
    for (line, what) in [
        (10, "source `ansible.eda.range`"),
        (
            64,
            "condition `event.payload.threshold > vars.limit`: `vars.…`",
        ),
        (70, "action `set_fact` has no rulehook equivalent"),
    ] {
        assert!(
            report.contains(&format!("{file}:{line}: {what}")),
            "{line} {what}:\n{report}"
        );
    }
    let written = std::fs::read_to_string(out.join("network-remediation.yml")).unwrap();
    // Left in the output as comments, not dropped.
    assert!(
        written.contains("#   \"condition\": \"event.payload.threshold > vars.limit\""),
        "{written}"
    );
    assert!(written.contains("\"set_fact\""), "{written}");
    assert!(
        written.contains("all_of:") && written.contains("name: m_1"),
        "{written}"
    );
    // EDA nests each event's body under `payload`; rulehook's `events.m_0` is the body.
    assert!(
        written.contains("{{ events.m_0.half }} and {{ events.m_1.half }}"),
        "{written}"
    );

    // What run_playbook needs to pass `check`: the playbook, and an ansible-playbook.
    std::fs::create_dir_all(env.path("scripts/playbooks")).unwrap();
    std::fs::write(
        env.path("scripts/playbooks/fix.yml"),
        "- hosts: all\n  tasks: []\n",
    )
    .unwrap();
    let fake = env.path("ansible-playbook");
    std::fs::write(&fake, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        env.cmd(args)
            .arg("--ansible-playbook")
            .arg(&fake)
            .env("NETOPS_TOKEN", "netops-token-123")
            .env("EDA_CONTROLLER_URL", "https://aap.example.com")
            .env("EDA_CONTROLLER_TOKEN", "controller-token-123")
            .output()
            .unwrap()
    };
    let o = run(&["check"]);
    assert!(
        o.status.success(),
        "check refused the translation:\n{}{}\n{written}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    for (i, (event, source, expected)) in cases().into_iter().enumerate() {
        let f = env.path(&format!("event-{i}.json"));
        std::fs::write(&f, event.to_string()).unwrap();
        let o = run(&[
            "test",
            "--event",
            f.to_str().unwrap(),
            "--source",
            source,
            "--json",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        let matched: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["matched"] == true)
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(matched, expected, "event {event} on {source}: {v}");
    }
}

/// A webhook and an Alertmanager source in one ruleset (EDA runs every rule on both): a rule
/// reading `event.payload` is given the webhook's events with the body as `$`, one reading
/// `event.alert` the Alertmanager's alerts. Both kept `$.payload…`/`$.alert…` over every
/// source, which `check` passed and no event ever matched.
#[test]
fn webhook_and_alertmanager_sources_in_one_ruleset() {
    const MIXED: &str = r#"- name: Mixed
  hosts: all
  sources:
    - name: nms
      ansible.eda.webhook:
        port: 5000
    - ansible.eda.alertmanager:
        port: 9000
  rules:
    - name: Port down
      condition: event.payload.status == "down"
      throttle:
        once_within: 5 minutes
        group_by_attributes:
          - event.payload.site
      action:
        debug:
          msg: "{{ event.payload.device }} down"
    - name: Critical alert
      condition: event.alert.labels.severity == "critical"
      action:
        debug:
          msg: "critical"
    - name: Both kinds
      condition: event.payload.x == 1 or event.alert.y == 2
      action:
        debug:
          msg: "both"
"#;
    let env = Env::new();
    let src = env.path("mixed.yml");
    std::fs::write(&src, MIXED).unwrap();
    let bin = std::env::var("RULEHOOK_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rulehook").to_string());
    let o = std::process::Command::new(&bin)
        .args(["import", "ansible-rulebook"])
        .arg(&src)
        .arg("--out")
        .arg(env.path("rulebooks"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{report}");
    assert!(
        report.contains("rule `Both kinds` reads both `event.payload`"),
        "{report}"
    );
    let o = env.cmd(&["check"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (source, event, expected) in [
        (
            "nms",
            json!({"status": "down", "device": "sw1", "site": "a"}),
            vec!["Port down"],
        ),
        (
            "mixed-alertmanager-1",
            json!({"status": "firing", "alerts": [{"status": "firing", "labels": {"severity": "critical"}}]}),
            vec!["Critical alert"],
        ),
    ] {
        let f = env.path("event.json");
        std::fs::write(&f, event.to_string()).unwrap();
        let o = env
            .cmd(&[
                "test",
                "--event",
                f.to_str().unwrap(),
                "--source",
                source,
                "--json",
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let matched: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["matched"] == true)
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert_eq!(matched, expected, "{event}: {v}");
    }
    let yaml = std::fs::read_to_string(env.path("rulebooks/mixed.yml")).unwrap();
    assert!(
        yaml.contains("group_by: ['$.site']") && yaml.contains("{{ event.device }} down"),
        "{yaml}"
    );
}
