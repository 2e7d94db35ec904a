//! `run_playbook` against the real binary and a real ansible-playbook (ansible-core from PyPI;
//! `.ci/run` installs it in a cached virtualenv and points RULEHOOK_TEST_ANSIBLE at it).
//! Without it these tests skip, loudly — unless RULEHOOK_ANSIBLE_TESTS=required.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, Server, client, post_signed};
use serde_json::{Value, json};

const SRC: &str = "sources:\n  - { name: in, kind: bearer, secret: in-token }\n";

/// ansible-playbook for the tests, or None (after saying so) when it is not installed.
fn ansible() -> Option<PathBuf> {
    let given = std::env::var_os("RULEHOOK_TEST_ANSIBLE").map(PathBuf::from);
    let found = given.or_else(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("ansible-playbook"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("RULEHOOK_ANSIBLE_TESTS").as_deref() == Ok("required") {
            panic!(
                "ansible-playbook is required (RULEHOOK_ANSIBLE_TESTS=required) but neither RULEHOOK_TEST_ANSIBLE nor PATH has it"
            );
        }
        eprintln!(
            "SKIPPED: ansible-playbook not found (set RULEHOOK_TEST_ANSIBLE, or run .ci/run which installs ansible-core)"
        );
    }
    found
}

/// Two hosts that run on this machine, with the interpreter ansible-playbook itself uses, and
/// one that cannot be reached (ssh to a closed port on loopback).
const HOSTS: &str = "[routers]\nr1\nr2\n\n[routers:vars]\nansible_connection=local\nansible_python_interpreter=\"{{ ansible_playbook_python }}\"\n\n[gone]\nr3 ansible_host=127.0.0.1 ansible_port=1 ansible_ssh_common_args='-o StrictHostKeyChecking=no -o ConnectTimeout=5'\n";

fn setup(env: &Env, playbook: &str, rule: &str) {
    std::fs::create_dir_all(env.path("scripts/site")).unwrap();
    std::fs::write(env.path("scripts/site/hosts.ini"), HOSTS).unwrap();
    std::fs::write(env.path("scripts/site/play.yml"), playbook).unwrap();
    env.rulebook("net.yml", &format!("{SRC}rules:\n{rule}"));
}

fn start(env: &Env, binary: &std::path::Path) -> Server {
    Server::start(env, &["--ansible-playbook", binary.to_str().unwrap()], &[])
}

async fn send(c: &reqwest::Client, server: &Server, body: &Value) -> String {
    let (st, resp) = post_signed(
        c,
        &server.url("/hooks/in"),
        "bearer",
        "in-token",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(st, 202, "{resp}");
    resp["id"].as_str().unwrap().to_string()
}

/// Polls the event until its first job is done or failed; calls `each` on every poll.
async fn wait_done(
    c: &reqwest::Client,
    server: &Server,
    id: &str,
    timeout: Duration,
    mut each: impl FnMut(),
) -> Value {
    let start = Instant::now();
    loop {
        each();
        let d: Value = c
            .get(server.url(&format!("/api/events/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let st = d["matches"][0]["status"].as_str().unwrap_or("");
        if st == "done" || st == "failed" {
            return d;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out; last answer: {d}\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Every process's command line that holds `needle`.
fn cmdlines_with(needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            if text.contains(needle) {
                hits.push(text);
            }
        }
    }
    hits
}

const SEE_EDA: &str = r#"- hosts: all
  gather_facts: false
  vars_files: [secret.yml]
  tasks:
    - name: record what the play sees
      copy:
        dest: "{{ out_dir }}/seen-{{ inventory_hostname }}.json"
        content: "{{ {'eda': ansible_eda, 'why': why, 'secret': vaulted} | to_json }}"
    - name: take a moment
      pause: { seconds: 2 }
"#;

#[tokio::test]
async fn a_playbook_gets_the_event_as_ansible_eda_and_the_history_has_each_host() {
    let Some(binary) = ansible() else { return };
    let env = Env::new();
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    // `${file:…}` in extra_vars is read at load, as in every other string of a rulebook.
    let out_file = env.path("out-dir.txt");
    std::fs::write(&out_file, out.display().to_string()).unwrap();
    setup(
        &env,
        SEE_EDA,
        &format!(
            r#"  - name: fix
    condition: '$.device'
    actions:
      - run_playbook:
          playbook: site/play.yml
          inventory: site/hosts.ini
          limit: "{{{{ event.device }}}}"
          extra_vars: {{why: "{{{{ event.reason }}}}", out_dir: "${{file:{}}}"}}
          vault_password: vault-pass-1234
          timeout: 2m
"#,
            out_file.display()
        ),
    );
    // A vaulted variable file: the password reaches ansible-playbook only as a file.
    let vault = binary.with_file_name("ansible-vault");
    let pw = env.path("pw");
    std::fs::write(&pw, "vault-pass-1234").unwrap();
    std::fs::write(
        env.path("scripts/site/secret.yml"),
        "vaulted: from-the-vault\n",
    )
    .unwrap();
    let st = std::process::Command::new(&vault)
        .args(["encrypt", "--vault-password-file"])
        .arg(&pw)
        .arg(env.path("scripts/site/secret.yml"))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::remove_file(&pw).unwrap();

    let server = start(&env, &binary);
    let c = client();
    let marker = format!("marker-{}", uuid_like());
    let id = send(&c, &server, &json!({"device": "r1", "reason": marker})).await;
    let mut seen = Vec::new();
    let mut private = Vec::new();
    let d = wait_done(&c, &server, &id, Duration::from_secs(120), || {
        seen.extend(cmdlines_with(&marker));
        seen.extend(cmdlines_with("vault-pass-1234"));
        private.extend(vars_files_with(&marker));
    })
    .await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "done", "{d}\n{}", server.log_text());
    assert!(seen.is_empty(), "event data on a command line: {seen:?}");
    assert!(
        !private.is_empty(),
        "the variables file was never seen while the playbook ran"
    );
    for (path, mode) in &private {
        assert_eq!(mode & 0o777, 0o600, "{path}");
        assert!(
            !std::path::Path::new(path).exists(),
            "{path} was left behind"
        );
    }

    let seen: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("seen-r1.json")).unwrap()).unwrap();
    assert_eq!(seen["why"], marker.as_str());
    assert_eq!(seen["secret"], "from-the-vault");
    assert_eq!(seen["eda"]["event"]["device"], "r1");
    assert_eq!(seen["eda"]["event"]["payload"]["reason"], marker.as_str());
    assert_eq!(seen["eda"]["rule"], "fix");
    assert_eq!(seen["eda"]["ruleset"], "net");
    assert!(
        !out.join("seen-r2.json").exists(),
        "the limit was not applied"
    );

    let attempt = &job["attempts"][0];
    assert_eq!(attempt["status"], "ok", "{attempt}");
    let hosts = &attempt["result"]["hosts"];
    assert_eq!(hosts["r1"]["changed"], 1, "{attempt}");
    assert_eq!(hosts["r1"]["failed"], 0, "{attempt}");
    assert!(hosts.get("r2").is_none(), "{attempt}");
    assert!(
        attempt["stdout"].as_str().unwrap().contains("PLAY RECAP"),
        "{attempt}"
    );

    // The command line tool shows the per-host results.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rulehook"))
        .args(["event", &id, "--url", &server.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("host r1") && text.contains("changed=1"),
        "{text}"
    );
}

/// `(path, mode)` of every rulehook variables file holding `needle` right now.
fn vars_files_with(needle: &str) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("rulehook-ansible-")
        {
            continue;
        }
        let f = e.path().join("vars.json");
        if std::fs::read_to_string(&f).is_ok_and(|t| t.contains(needle))
            && let Ok(m) = std::fs::metadata(&f)
        {
            found.push((f.display().to_string(), m.permissions().mode()));
        }
    }
    found
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

const FAILS_ON_R2: &str = r#"- hosts: all
  gather_facts: false
  tasks:
    - name: check the interface
      command: /bin/true
    - name: bounce the interface
      fail:
        msg: "interface stuck on {{ inventory_hostname }}"
      when: inventory_hostname == 'r2'
"#;

#[tokio::test]
async fn a_failed_or_unreachable_host_fails_the_action_and_names_the_task() {
    let Some(binary) = ansible() else { return };
    let env = Env::new();
    setup(
        &env,
        FAILS_ON_R2,
        r#"  - name: fix
    actions:
      - run_playbook:
          playbook: site/play.yml
          inventory: site/hosts.ini
    on_failure:
      - log: { message: "failed: {{ failure.error }}" }
"#,
    );
    let server = start(&env, &binary);
    let c = client();
    let id = send(&c, &server, &json!({"device": "r2"})).await;
    let d = wait_done(&c, &server, &id, Duration::from_secs(120), || {}).await;
    let job = &d["matches"][0];
    assert_eq!(job["status"], "failed", "{d}");
    let attempt = &job["attempts"][0];
    let error = attempt["error"].as_str().unwrap();
    assert!(
        error.contains("host r2 failed at task `bounce the interface`: interface stuck on r2"),
        "{error}"
    );
    assert!(
        error.contains("host r3 unreachable at task `check the interface`"),
        "{error}"
    );
    let r = &attempt["result"];
    assert_eq!(r["hosts"]["r3"]["unreachable"], 1, "{r}");
    assert_eq!(r["hosts"]["r1"]["failed"], 0, "{r}");
    assert_eq!(r["hosts"]["r2"]["failed"], 1, "{r}");
    let hosts: Vec<&str> = r["failed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    assert!(hosts.contains(&"r2") && hosts.contains(&"r3"), "{r}");
    // on_failure ran with the error.
    let on_failure = job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["phase"] == "on_failure")
        .unwrap_or_else(|| panic!("{job}"));
    assert_eq!(on_failure["status"], "ok");
}

/// A task that outlives the timeout: its worker, the module and `sleep` run in a session of
/// their own, outside ansible-playbook's process group.
/// (The timeout is long enough for ansible-playbook to reach the command on a busy machine.)
const HANGS: &str = r#"- hosts: r1
  gather_facts: false
  tasks:
    - name: a short pause first
      pause: { seconds: 1 }
    - name: a command that never ends in time
      command: sleep 171.2501
"#;

#[tokio::test]
async fn a_timeout_kills_ansible_and_what_it_started() {
    let Some(binary) = ansible() else { return };
    let env = Env::new();
    setup(
        &env,
        HANGS,
        r#"  - name: fix
    actions:
      - run_playbook:
          playbook: site/play.yml
          inventory: site/hosts.ini
          timeout: 30s
"#,
    );
    let server = start(&env, &binary);
    let c = client();
    let id = send(&c, &server, &json!({"device": "r1"})).await;
    let playbook = env.path("scripts/site/play.yml").display().to_string();
    let mut saw_it_run = false;
    let d = wait_done(&c, &server, &id, Duration::from_secs(120), || {
        saw_it_run |= !cmdlines_with("sleep 171.2501").is_empty();
    })
    .await;
    assert!(saw_it_run, "the command never ran");
    let attempt = &d["matches"][0]["attempts"][0];
    assert_eq!(d["matches"][0]["status"], "failed", "{d}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 30s"),
        "{attempt}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = cmdlines_with("ansible-playbook")
            .into_iter()
            .chain(cmdlines_with("sleep 171.2501"))
            .filter(|l| l.contains(playbook.as_str()) || l.contains("171.2501"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stand-in for ansible-playbook that records when each run starts and ends.
const FAKE: &str = "#!/bin/sh\necho \"start $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\nsleep 1\necho \"end $RULEHOOK_RUN_ID\" >> \"$OUT_DIR/runs.txt\"\n";

fn fake_ansible(env: &Env) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path("bin/ansible-playbook");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, FAKE).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test]
async fn runs_holding_the_same_lock_never_overlap() {
    let env = Env::new();
    let binary = fake_ansible(&env);
    setup(
        &env,
        "- hosts: all\n  tasks: []\n",
        r#"  - name: fix
    actions:
      - run_playbook:
          playbook: site/play.yml
          inventory: [r1, r2]
          lock: "{{ event.device }}"
"#,
    );
    let server = Server::start(
        &env,
        &[
            "--ansible-playbook",
            binary.to_str().unwrap(),
            "--concurrency",
            "4",
        ],
        &[],
    );
    let c = client();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(send(&c, &server, &json!({"device": "sw1", "n": n})).await);
    }
    for id in &ids {
        let d = wait_done(&c, &server, id, Duration::from_secs(60), || {}).await;
        assert_eq!(d["matches"][0]["status"], "done", "{d}");
    }
    let lines = env.lines("runs.txt");
    assert_eq!(lines.len(), 6, "{lines:?}");
    for pair in lines.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.starts_with("start ") && b == &a.replacen("start", "end", 1),
            "two runs holding lock sw1 overlapped: {lines:?}"
        );
    }
}

#[test]
fn check_says_what_is_missing() {
    let env = Env::new();
    setup(
        &env,
        "- hosts: all\n  tasks: []\n",
        r#"  - name: fix
    actions:
      - run_playbook:
          playbook: site/nope.yml
          inventory: site/none.ini
"#,
    );
    // No ansible-playbook anywhere.
    let o = env
        .cmd(&["check"])
        .env("PATH", env.path("bin"))
        .env_remove("RULEHOOK_ANSIBLE_PLAYBOOK")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("ansible-playbook is not on PATH"), "{text}");
    assert!(text.contains("net.yml:7:"), "{text}");
    assert!(
        text.contains("playbook `site/nope.yml` does not exist"),
        "{text}"
    );
    assert!(
        text.contains("inventory `site/none.ini` does not exist"),
        "{text}"
    );
    // Given one, and the files present: accepted.
    let binary = fake_ansible(&env);
    env.rulebook(
        "net.yml",
        &format!(
            "{SRC}rules:\n  - name: fix\n    actions:\n      - run_playbook:\n          playbook: site/play.yml\n          inventory: site/hosts.ini\n"
        ),
    );
    let o = env
        .cmd(&["check", "--ansible-playbook", binary.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn a_lock_holds_across_nodes_on_jetstream() {
    let env = Env::new();
    let p = env.path("bin/ansible-playbook");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    // As FAKE, also naming the node (its parent, the rulehook process) that ran it.
    std::fs::write(
        &p,
        "#!/bin/sh\necho \"start $RULEHOOK_RUN_ID $PPID\" >> \"$OUT_DIR/runs.txt\"\nsleep 1\necho \"end $RULEHOOK_RUN_ID $PPID\" >> \"$OUT_DIR/runs.txt\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    setup(
        &env,
        "- hosts: all\n  tasks: []\n",
        r#"  - name: fix
    actions:
      - run_playbook:
          playbook: site/play.yml
          inventory: [r1]
          lock: "{{ event.device }}"
"#,
    );
    let nats = common::NatsPrefix::new();
    // One worker per node: while one node's worker waits for the lock, the other node takes
    // the next job.
    let node = |data: &str| {
        let mut args = nats.args("all");
        args.extend(
            [
                "--concurrency",
                "1",
                "--ansible-playbook",
                p.to_str().unwrap(),
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        std::fs::create_dir_all(env.path(data)).unwrap();
        Server::start_on(&env, &env.path(data), &args, &[])
    };
    let (a, b) = (node("data-a"), node("data-b"));
    let c = client();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(send(&c, &a, &json!({"device": "sw1", "n": n})).await);
    }
    let start = Instant::now();
    while env.lines("runs.txt").len() < 8 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}\n{}\n{}",
            env.lines("runs.txt"),
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = env.lines("runs.txt");
    for pair in lines.chunks(2) {
        assert!(
            pair[0].starts_with("start ") && pair[1] == pair[0].replacen("start", "end", 1),
            "two runs holding lock sw1 overlapped: {lines:?}"
        );
    }
    let nodes: std::collections::HashSet<&str> =
        lines.iter().filter_map(|l| l.split(' ').nth(2)).collect();
    assert_eq!(nodes.len(), 2, "both nodes ran some: {lines:?}");
}
