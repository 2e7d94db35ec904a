//! `run_playbook`: runs `ansible-playbook` on a playbook from the scripts directory (or a
//! collection's), with the event as `ansible_eda` the way ansible-rulebook passes it.
//!
//! Nothing of the event reaches a command line: the extra variables and the `--limit` go
//! through files in a private directory (mode 0700, files 0600) removed after the run, and a
//! vault password only through `--vault-password-file`. Per-host results come from a
//! notification callback of ours (`ansible_results.py`, written beside those files) that
//! records Ansible's own result objects as JSON lines; Ansible's stdout stays as configured.
//! The run gets a process group of its own; at a timeout (or when its job is cancelled) that
//! group and every descendant of ansible-playbook are killed: its workers start sessions of
//! their own, and their modules and ssh run under them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::Command;

use super::script::{Captured, read_capped, resolve_in};
use super::{Outcome, RunContext};
use crate::rulebook::ansible::{InventorySpec, RunPlaybookSpec};
use crate::rulebook::compile::Compile;
use crate::rulebook::model::S;
use crate::secrets::Secret;
use crate::store::{StateStore, StoreError};
use crate::templates::{TValue, Templates, Text};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The callback plugin that reports per-host results (see the module comment).
const CALLBACK: &str = include_str!("ansible_results.py");
/// How often a run waiting for a `lock` asks again.
const LOCK_POLL: Duration = Duration::from_millis(250);

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The `ansible-playbook` to run (`--ansible-playbook`); without it, PATH is searched.
pub fn set_binary(path: PathBuf) {
    let _ = BINARY.set(path);
}

/// The `ansible-playbook` executable: the one given, else the first on PATH.
pub fn binary() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = BINARY.get() {
        return if executable(p) {
            Ok(p.clone())
        } else {
            Err(format!(
                "--ansible-playbook `{}` is not an executable file",
                p.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("ansible-playbook"))
        .find(|p| executable(p))
        .ok_or_else(|| {
            "ansible-playbook is not on PATH: install ansible-core (`python3 -m pip install ansible-core`) or give --ansible-playbook PATH".to_string()
        })
}

/// Where the inventory comes from.
#[derive(Debug, Clone)]
enum Inventory {
    File(PathBuf),
    Hosts(Vec<String>),
}

/// A compiled `run_playbook`.
#[derive(Debug)]
pub struct PlaybookAction {
    /// The playbook as written.
    pub name: String,
    /// Its absolute path, or a collection playbook's name (`ns.coll.playbook`).
    playbook: String,
    inventory: Option<Inventory>,
    limit: Option<Text>,
    extra_vars: Option<TValue>,
    check: bool,
    vault_password: Option<Secret>,
    lock: Option<Text>,
    pub timeout: Duration,
    pub retries: u32,
    binary: PathBuf,
    /// The scripts directory: the working directory of the run.
    dir: PathBuf,
}

/// A rendered `run_playbook`: exactly what is run (the vault password is not kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlaybookRun {
    pub playbook: String,
    pub path: String,
    /// An inventory file's path, or the hosts as `ansible-playbook -i` takes them (`a,b,`).
    pub inventory: Option<String>,
    pub limit: Option<String>,
    pub extra_vars: Value,
    pub check: bool,
    pub lock: Option<String>,
    pub binary: PathBuf,
    pub cwd: PathBuf,
    #[serde(with = "super::script::millis")]
    pub timeout: Duration,
    #[serde(skip)]
    pub vault_password: Option<String>,
}

/// A collection playbook's name: `namespace.collection.playbook`.
/// The `extra_vars` of a playbook run or an AWX job template: a mapping of templates, without
/// `ansible_eda` (rulehook sets it). `None` after an error (reported); `Some(None)` when none
/// are given.
pub(super) fn compile_extra_vars(
    cx: &mut Compile,
    spec: Option<&S<Value>>,
    prefix: &str,
    t: &mut Templates,
) -> Option<Option<TValue>> {
    let Some(v) = spec else {
        return Some(None);
    };
    if !v.value.is_object() {
        cx.err(&v.referenced, "extra_vars must be a mapping");
        return None;
    }
    if v.value.get("ansible_eda").is_some() {
        cx.err(
            &v.referenced,
            "extra_vars: `ansible_eda` is set by rulehook",
        );
        return None;
    }
    let vars = cx.expand_value(&v.value, &v.referenced, "extra_vars")?;
    TValue::compile(t, &format!("{prefix}/extra_vars"), &vars)
        .map_err(|m| cx.err(&v.referenced, format!("extra_vars: template error: {m}")))
        .ok()
        .map(Some)
}

fn is_collection_playbook(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 3
        && !matches!(parts[2], "yml" | "yaml")
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// `run_playbook:` compiled: ansible-playbook, the playbook and the inventory must exist.
pub(crate) fn compile(
    cx: &mut Compile,
    s: &RunPlaybookSpec,
    prefix: &str,
    scripts: &Path,
    t: &mut Templates,
) -> Option<PlaybookAction> {
    let binary = binary()
        .map_err(|m| cx.err(&s.playbook.referenced, format!("run_playbook: {m}")))
        .ok();
    let playbook = if is_collection_playbook(&s.playbook.value) {
        Some(s.playbook.value.clone())
    } else {
        resolve_in(scripts, &s.playbook.value, "playbook")
            .map(|p| p.display().to_string())
            .map_err(|m| cx.err(&s.playbook.referenced, m))
            .ok()
    };
    let inventory = match &s.inventory {
        None => Some(None),
        Some(i) => match &i.value {
            InventorySpec::File(f) => resolve_in(scripts, f, "inventory")
                .map(|p| Some(Inventory::File(p)))
                .map_err(|m| cx.err(&i.referenced, m))
                .ok(),
            InventorySpec::Hosts(h) if h.is_empty() || h.iter().any(|x| x.contains(',')) => {
                cx.err(
                    &i.referenced,
                    "inventory: give a file, or a non-empty list of host names (without commas)",
                );
                None
            }
            InventorySpec::Hosts(h) => Some(Some(Inventory::Hosts(h.clone()))),
        },
    };
    let limit = match &s.limit {
        Some(l) => Some(cx.template(t, format!("{prefix}/limit"), l, "limit")?),
        None => None,
    };
    let lock = match &s.lock {
        Some(l) => Some(cx.template(t, format!("{prefix}/lock"), l, "lock")?),
        None => None,
    };
    let extra_vars = compile_extra_vars(cx, s.extra_vars.as_ref(), prefix, t)?;
    let vault_password = match &s.vault_password {
        Some(v) => Some(cx.secret(v, "vault_password")?),
        None => None,
    };
    let timeout = cx.timeout_or(s.timeout.as_ref(), DEFAULT_TIMEOUT)?;
    Some(PlaybookAction {
        name: s.playbook.value.clone(),
        playbook: playbook?,
        inventory: inventory?,
        limit,
        extra_vars,
        check: s.check,
        vault_password,
        lock,
        timeout,
        retries: s.retries,
        binary: binary?,
        dir: scripts
            .canonicalize()
            .unwrap_or_else(|_| scripts.to_path_buf()),
    })
}

impl PlaybookAction {
    pub fn render(&self, t: &Templates, ctx: &minijinja::Value) -> Result<PlaybookRun, String> {
        let render = |x: &Option<Text>| x.as_ref().map(|x| t.render(x, ctx)).transpose();
        Ok(PlaybookRun {
            playbook: self.name.clone(),
            path: self.playbook.clone(),
            inventory: self.inventory.as_ref().map(|i| match i {
                Inventory::File(p) => p.display().to_string(),
                Inventory::Hosts(h) => format!("{},", h.join(",")),
            }),
            limit: render(&self.limit)?.filter(|l| !l.trim().is_empty()),
            extra_vars: match &self.extra_vars {
                Some(v) => v.render(t, ctx)?,
                None => json!({}),
            },
            check: self.check,
            lock: render(&self.lock)?,
            binary: self.binary.clone(),
            cwd: self.dir.clone(),
            timeout: self.timeout,
            vault_password: self.vault_password.as_ref().map(|s| s.expose().to_string()),
        })
    }
}

/// `ansible_eda` as ansible-rulebook passes it: `event` (the event's fields, plus `payload`
/// — the whole body, as EDA's webhook source nests it — and `meta`), `rule`, `ruleset`.
pub fn ansible_eda(run: &RunContext) -> Value {
    let (body, meta) = (&run.input["event"], &run.input["meta"]);
    let mut event = match body {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    event.entry("payload").or_insert_with(|| body.clone());
    event.entry("meta").or_insert_with(|| meta.clone());
    let mut eda = json!({
        "event": event,
        "rule": meta["rule"],
        "ruleset": meta["rulebook"],
        "run_id": run.run_id,
    });
    if let Some(events) = run.input.get("events") {
        eda["events"] = events.clone();
    }
    eda
}

/// A private directory for one run's files; removed when dropped.
struct RunDir(PathBuf);

const RUN_DIR_PREFIX: &str = "rulehook-ansible-";

impl RunDir {
    /// `rulehook-ansible-<our pid>-<uuid>` in `under` (the temporary directory).
    fn create_in(under: &Path) -> std::io::Result<RunDir> {
        use std::os::unix::fs::DirBuilderExt;
        remove_orphans(under);
        let path = under.join(format!(
            "{RUN_DIR_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(RunDir(path))
    }

    fn create() -> std::io::Result<RunDir> {
        RunDir::create_in(&std::env::temp_dir())
    }

    /// Writes a file only its owner can read.
    fn write(&self, name: &str, content: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(content)?;
        Ok(path)
    }
}

/// Removes the run directories of rulehook processes that no longer exist (a crash leaves its
/// event files behind otherwise).
fn remove_orphans(under: &Path) {
    let Ok(entries) = std::fs::read_dir(under) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A held `lock`: deleted when the run ends (only if still ours), or ended by its expiry if the run dies.
struct Lock {
    key: String,
    rev: u64,
}

impl PlaybookRun {
    pub async fn execute(&self, run: &RunContext, state: &dyn StateStore) -> Outcome {
        let lock = match &self.lock {
            Some(name) => match self.acquire(name, run, state).await {
                Ok(l) => Some(l),
                Err(o) => return o,
            },
            None => None,
        };
        let out = self.run_playbook(run).await;
        if let Some(l) = lock {
            // Only ours: a lock that expired and was taken by another run is left alone.
            let _ = state.delete(&l.key, Some(l.rev)).await;
        }
        out
    }

    /// Waits (up to the timeout) until no other run holds the same lock, then holds it.
    async fn acquire(
        &self,
        name: &str,
        run: &RunContext,
        state: &dyn StateStore,
    ) -> Result<Lock, Outcome> {
        let key = format!("ansible/lock/{name}");
        // Held at most as long as a run may take, so a crashed node's lock ends by itself.
        let ttl = self.timeout + Duration::from_secs(60);
        let transient = |e: StoreError| Outcome {
            retryable: true,
            ..Outcome::failed(format!("lock `{name}`: {e}"))
        };
        let until = tokio::time::Instant::now() + self.timeout;
        loop {
            match state.create(&key, &run.run_id, Some(ttl)).await {
                Ok(rev) => return Ok(Lock { key, rev }),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(transient(e)),
            }
            let holder = match state.get(&key).await {
                Ok(h) => h,
                Err(e) => return Err(transient(e)),
            };
            match holder {
                // This very run held it when it was interrupted: it is ours again.
                Some((who, rev)) if who == run.run_id => {
                    match state.update(&key, &run.run_id, rev, Some(ttl)).await {
                        Ok(rev) => return Ok(Lock { key, rev }),
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(transient(e)),
                    }
                }
                Some((who, _)) if tokio::time::Instant::now() >= until => {
                    return Err(Outcome {
                        retryable: true,
                        ..Outcome::failed(format!(
                            "lock `{name}` is still held by run {who} after {}",
                            humantime::format_duration(self.timeout)
                        ))
                    });
                }
                _ => tokio::time::sleep(LOCK_POLL).await,
            }
        }
    }

    /// The files of the run, and the command that reads them.
    fn prepare(&self, run: &RunContext, dir: &RunDir) -> std::io::Result<Command> {
        let mut vars = match &self.extra_vars {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        vars.insert("ansible_eda".into(), ansible_eda(run));
        let vars_file = dir.write("vars.json", &serde_json::to_vec(&Value::Object(vars))?)?;
        std::fs::create_dir(dir.0.join("callbacks"))?;
        dir.write("callbacks/rulehook_results.py", CALLBACK.as_bytes())?;
        let mut plugins = dir.0.join("callbacks").into_os_string();
        if let Some(more) = std::env::var_os("ANSIBLE_CALLBACK_PLUGINS") {
            plugins.push(":");
            plugins.push(more);
        }
        let mut cmd = Command::new(&self.binary);
        if let Some(i) = &self.inventory {
            cmd.arg("-i").arg(i);
        }
        if let Some(l) = &self.limit {
            // `@file`: the hosts, one per line, read from a file.
            let hosts = l.split(',').map(str::trim).collect::<Vec<_>>().join("\n");
            let f = dir.write("limit", hosts.as_bytes())?;
            cmd.arg("--limit").arg(format!("@{}", f.display()));
        }
        if self.check {
            cmd.args(["--check", "--diff"]);
        }
        if let Some(p) = &self.vault_password {
            let f = dir.write("vault-password", p.as_bytes())?;
            cmd.arg("--vault-password-file").arg(f);
        }
        cmd.arg("-e")
            .arg(format!("@{}", vars_file.display()))
            .arg(&self.path)
            .current_dir(&self.cwd)
            .env("ANSIBLE_CALLBACK_PLUGINS", plugins)
            .env("RULEHOOK_ANSIBLE_RESULTS", dir.0.join("results.jsonl"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("RULEHOOK_EVENT_ID", &run.event_id)
            .env("RULEHOOK_RULE", &run.rule)
            .env("RULEHOOK_RUN_ID", &run.run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
    }

    async fn run_playbook(&self, run: &RunContext) -> Outcome {
        let prepared = RunDir::create().and_then(|d| Ok((self.prepare(run, &d)?, d)));
        let (mut cmd, dir) = match prepared {
            Ok(p) => p,
            Err(e) => {
                return Outcome {
                    retryable: true,
                    ..Outcome::failed(format!(
                        "cannot prepare the files of {}: {e}",
                        self.playbook
                    ))
                };
            }
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::failed(format!("cannot start {}: {e}", self.binary.display()));
            }
        };
        let group = super::groups::Group::started_tree(child.id(), &run.run_id);
        let (out_buf, err_buf) = (Captured::default(), Captured::default());
        let mut out = tokio::spawn(read_capped(child.stdout.take(), out_buf.clone()));
        let mut err = tokio::spawn(read_capped(child.stderr.take(), err_buf.clone()));
        let status = tokio::time::timeout(self.timeout, child.wait()).await;
        if status.is_err() {
            // Still running: it and everything it started end now.
            group.kill();
            let _ = child.kill().await;
            drop(group);
        } else {
            group.finish();
        }
        let grace = Duration::from_secs(2);
        let _ = tokio::time::timeout(grace, async {
            let _ = (&mut out).await;
            let _ = (&mut err).await;
        })
        .await;
        out.abort();
        err.abort();
        let report = Report::read(&dir.0.join("results.jsonl"));
        drop(dir);
        let (stdout, stderr) = (out_buf.text(), err_buf.text());
        let mut outcome = Outcome {
            stdout,
            stderr,
            retryable: true,
            result: Some(report.to_json()),
            ..Outcome::default()
        };
        match status {
            Err(_) => {
                outcome.error = Some(format!(
                    "{} timed out after {}; its process group was killed",
                    self.playbook,
                    humantime::format_duration(self.timeout)
                ));
            }
            Ok(Err(e)) => outcome.error = Some(format!("waiting for ansible-playbook: {e}")),
            Ok(Ok(st)) => {
                outcome.exit_code = st.code();
                outcome.ok = st.success() && report.problems.is_empty();
                if !outcome.ok {
                    outcome.error = Some(report.summary().unwrap_or_else(|| match st.code() {
                        Some(c) => format!("ansible-playbook exited with status {c}"),
                        None => "ansible-playbook was killed by a signal".into(),
                    }));
                }
            }
        }
        if let Some(r) = outcome.result.as_mut() {
            r["rc"] = json!(outcome.exit_code);
        }
        outcome
    }
}

/// What the callback recorded: per-host counts and each failed or unreachable task.
#[derive(Debug, Default)]
struct Report {
    hosts: serde_json::Map<String, Value>,
    problems: Vec<Value>,
}

impl Report {
    fn read(path: &Path) -> Report {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut r = Report::default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match v["kind"].as_str() {
                Some("stats") => {
                    if let Value::Object(h) = &v["hosts"] {
                        r.hosts = h.clone();
                    }
                }
                Some("failed" | "unreachable") => r.problems.push(v),
                _ => {}
            }
        }
        r
    }

    fn to_json(&self) -> Value {
        json!({"hosts": self.hosts, "failed_tasks": self.problems})
    }

    /// One sentence per failed or unreachable host.
    fn summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .problems
            .iter()
            .map(|p| {
                let (host, task, msg) = (
                    p["host"].as_str().unwrap_or(""),
                    p["task"].as_str().unwrap_or(""),
                    p["message"].as_str().unwrap_or(""),
                );
                if p["kind"] == "unreachable" {
                    format!("host {host} unreachable at task `{task}`: {msg}")
                } else {
                    format!("host {host} failed at task `{task}`: {msg}")
                }
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_playbooks_are_told_from_files() {
        assert!(is_collection_playbook("my_ns.net.fix_interface"));
        assert!(!is_collection_playbook("site/fix.yml"));
        assert!(!is_collection_playbook("fix.yml"));
        assert!(!is_collection_playbook("a.fix.yml"));
        assert!(!is_collection_playbook("Ns.coll.pb"));
    }

    #[test]
    fn ansible_eda_carries_the_event_as_eda_does() {
        let run = RunContext {
            run_id: "e:r:0".into(),
            event_id: "e".into(),
            source: "s".into(),
            rule: "r".into(),
            input: json!({"event": {"device": "sw1"}, "meta": {"rule": "r", "rulebook": "net"}}),
        };
        let eda = ansible_eda(&run);
        assert_eq!(eda["event"]["device"], "sw1");
        assert_eq!(eda["event"]["payload"]["device"], "sw1");
        assert_eq!(eda["event"]["meta"]["rulebook"], "net");
        assert_eq!(eda["rule"], "r");
        assert_eq!(eda["ruleset"], "net");
    }

    #[test]
    fn run_dirs_are_private_removed_after_and_a_dead_process_s_are_cleared() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        // Left by a process that is gone (pid beyond pid_max), and one of a live process.
        let dead = tmp.path().join(format!("{RUN_DIR_PREFIX}4194999-x"));
        let live = tmp.path().join(format!("{RUN_DIR_PREFIX}1-x"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::create_dir(&live).unwrap();
        let d = RunDir::create_in(tmp.path()).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.0), 0o700);
        let f = d.write("vars.json", b"{}").unwrap();
        assert_eq!(mode(&f), 0o600);
        let path = d.0.clone();
        drop(d);
        assert!(!path.exists());
    }

    #[test]
    fn the_report_names_each_failed_host() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(
            &p,
            concat!(
                "{\"kind\":\"failed\",\"host\":\"r2\",\"task\":\"fix\",\"message\":\"boom\"}\n",
                "{\"kind\":\"unreachable\",\"host\":\"r3\",\"task\":\"fix\",\"message\":\"refused\"}\n",
                "{\"kind\":\"stats\",\"hosts\":{\"r1\":{\"ok\":2}}}\n",
                "not json\n"
            ),
        )
        .unwrap();
        let r = Report::read(&p);
        assert_eq!(r.hosts["r1"]["ok"], 2);
        assert_eq!(
            r.summary().unwrap(),
            "host r2 failed at task `fix`: boom; host r3 unreachable at task `fix`: refused"
        );
    }
}
